//! The identity subsystem's error type.

use std::path::PathBuf;

/// Errors of the identity subsystem; messages say what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A string is not a SPIFFE ID in Istio's `spiffe://<td>/ns/<ns>/sa/<sa>` form.
    #[error(
        "invalid SPIFFE ID {id:?}: {reason}; Istio identities have the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    InvalidSpiffeId {
        /// The rejected input.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Reading or writing a file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("read", "write", "create directory"...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A CA file (state dir or plug-in `cacerts` dir) is unusable.
    #[error("CA file {path}: {reason}")]
    CaFile {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// Creating or signing a certificate failed inside the certificate library.
    #[error("certificate generation failed: {0}")]
    CertGen(#[from] rcgen::Error),
    /// A certificate signing request was rejected.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    /// The CSR names an identity other than the caller's.
    #[error(
        "the CSR asks for {requested}, but the caller is {caller}: a workload can only get its own identity"
    )]
    CsrIdentityMismatch { requested: String, caller: String },
    /// A requested certificate lifetime is not allowed.
    #[error("invalid certificate TTL: {0}")]
    InvalidTtl(String),
    /// A certificate or chain could not be used.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// A workload credential is not in the expected format.
    #[error(
        "workload credential is malformed ({0}); expected weft1.<payload>.<signature> as issued by `weft control`"
    )]
    CredentialMalformed(String),
    /// A workload credential's signature does not verify under this control plane's key.
    #[error(
        "credential signature does not match: was it issued by another control plane's state dir?"
    )]
    CredentialSignature,
    /// The CA answered a certificate request with an error.
    #[error("CA rejected the certificate request ({code}): {message}")]
    CaRequest {
        /// The gRPC status code.
        code: tonic::Code,
        /// The CA's message.
        message: String,
    },
    /// A peer presented an identity we do not accept.
    #[error("peer identity not accepted: {0}")]
    PeerIdentity(String),
    /// No workload identity is available yet.
    #[error(
        "no workload certificate yet: the proxy is still waiting for the CA (check the CA address and the workload credential)"
    )]
    NoIdentity,
    /// The SDS server's socket cannot be reached.
    #[error(
        "cannot connect to the SDS server at {}: {source}; is the SPIRE agent running, and its socket mounted there?",
        socket.display()
    )]
    SdsConnect {
        /// The unix socket.
        socket: PathBuf,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The SDS server refused the stream or ended it with an error.
    #[error(
        "the SDS server at {} refused ({code:?}): {message}; a SPIRE agent refuses a workload it has no registration entry for (check the entry's selectors, e.g. unix:uid and unix:supplementary_gid)",
        socket.display()
    )]
    SdsRefused {
        /// The unix socket.
        socket: PathBuf,
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// The SDS server closed the stream.
    #[error("the SDS server at {} ended the stream; reconnecting", socket.display())]
    SdsStreamClosed {
        /// The unix socket.
        socket: PathBuf,
    },
    /// The SDS server sent secrets that cannot be used (NACKed).
    #[error("the SDS server sent secrets that cannot be used: {0}")]
    SdsSecret(String),
    /// A TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The system random generator or a crypto primitive failed.
    #[error("crypto failure: {0}")]
    Crypto(String),
}

impl IdentityError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn ca_file(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::CaFile {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
