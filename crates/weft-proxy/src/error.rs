//! Errors of the sidecar proxy.

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A resource from the control plane that cannot be applied; becomes a NACK.
    #[error("{0}")]
    Config(String),
    #[error(
        "cannot listen on {addr}: {source}; is another proxy running in this network namespace?"
    )]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot read the credential file {path}: {source}; pass the token `weft control token` issued with --token-file"
    )]
    Credential {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("control plane address {0:?} is not valid; use host:port or http://host:port")]
    ControlPlane(String),
    #[error(
        "cannot use {path} as the control plane's root ({reason}); pass the PEM of the control plane's CA root with --control-plane-root (on Kubernetes: root-cert.pem of ConfigMap istio-ca-root-cert)"
    )]
    ControlPlaneRoot {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("identity: {0}")]
    Identity(#[from] weft_identity::IdentityError),
    #[error("xds: {0}")]
    Xds(#[from] weft_xds::XdsError),
    #[error("cannot open the access log {path}: {reason}")]
    AccessLog { path: String, reason: String },
}
