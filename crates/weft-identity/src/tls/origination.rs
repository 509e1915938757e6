//! TLS origination to destinations outside the mesh (DestinationRule `tls.mode` SIMPLE and
//! MUTUAL), as Envoy does it: the server's chain is verified against the configured CA
//! bundle or the system's trust store (none configured: not verified), then, when
//! `subjectAltNames` are given, one of them must be in the certificate (DNS or IP SAN); with
//! Envoy's `auto_san_validation` and none given, the name the connection was made for (the
//! SNI) must be. Otherwise the SNI is only sent. MUTUAL presents a client certificate from
//! files.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::error::IdentityError;

/// What a SIMPLE or MUTUAL origination needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct OriginationOptions {
    /// PEM CA bundle file; None (and not `system_roots`): the server's chain is not verified
    /// (Envoy without a validation context).
    pub ca_file: Option<String>,
    /// Verify against the system's trust store (Istio's `caCertificates: system`), the first
    /// of the bundles pilot-agent looks for that exists.
    pub system_roots: bool,
    /// Names one of which the server certificate must carry (empty: any).
    pub subject_alt_names: Vec<String>,
    /// Client certificate chain and key files (MUTUAL).
    pub client_cert: Option<(String, String)>,
    /// Accept an untrusted chain (`insecureSkipVerify`), still checking the SANs.
    pub insecure_skip_verify: bool,
    /// Envoy's `auto_san_validation`: without `subject_alt_names`, the certificate must be
    /// valid for the name the connection is made for.
    pub auto_san_validation: bool,
    pub alpn: Vec<Vec<u8>>,
}

fn io(path: &str, e: impl std::fmt::Display) -> IdentityError {
    IdentityError::CaFile {
        path: Path::new(path).to_path_buf(),
        reason: format!(
            "{e}; a DestinationRule's caCertificates, clientCertificate and privateKey name PEM files on the proxy's host"
        ),
    }
}

/// The system trust stores pilot-agent looks for (`GetOSRootFilePath`), in its order.
pub const SYSTEM_ROOT_FILES: [&str; 7] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/ssl/cert.pem",
];

fn anchors(path: &str) -> Result<Vec<rustls_pki_types::TrustAnchor<'static>>, IdentityError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| io(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io(path, e))?;
    if certs.is_empty() {
        return Err(io(path, "no certificate in the file"));
    }
    let mut anchors = Vec::new();
    for c in &certs {
        match webpki::anchor_from_trusted_cert(c) {
            Ok(a) => anchors.push(a.to_owned()),
            // A system bundle may hold a certificate webpki cannot use; skip it there.
            Err(_) if SYSTEM_ROOT_FILES.contains(&path) => {}
            Err(e) => return Err(io(path, format!("not a CA certificate: {e}"))),
        }
    }
    Ok(anchors)
}

/// A client config for TLS origination.
pub fn origination_client_config(
    opts: &OriginationOptions,
) -> Result<Arc<ClientConfig>, IdentityError> {
    let provider = super::provider();
    let roots = match &opts.ca_file {
        Some(path) => Some(anchors(path)?),
        None if opts.system_roots => {
            let path = SYSTEM_ROOT_FILES
                .iter()
                .find(|p| Path::new(p).exists())
                .ok_or_else(|| IdentityError::CaFile {
                    path: Path::new(SYSTEM_ROOT_FILES[0]).to_path_buf(),
                    reason: format!(
                        "no system trust store (looked for {}); install ca-certificates, or \
                         give the DestinationRule caCertificates",
                        SYSTEM_ROOT_FILES.join(", ")
                    ),
                })?;
            Some(anchors(path)?)
        }
        None => None,
    };
    let verifier = Arc::new(OriginationVerifier {
        roots,
        sans: opts.subject_alt_names.clone(),
        auto_san: opts.auto_san_validation,
        insecure: opts.insecure_skip_verify,
        algs: provider.signature_verification_algorithms,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut cfg = match &opts.client_cert {
        Some((chain, key)) => {
            let certs = CertificateDer::pem_file_iter(chain)
                .map_err(|e| io(chain, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| io(chain, e))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| io(key, e))?;
            builder.with_client_auth_cert(certs, key)?
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = opts.alpn.clone();
    Ok(Arc::new(cfg))
}

#[derive(Debug)]
struct OriginationVerifier {
    roots: Option<Vec<rustls_pki_types::TrustAnchor<'static>>>,
    sans: Vec<String>,
    auto_san: bool,
    insecure: bool,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for OriginationVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if let Some(roots) = self.roots.as_ref().filter(|_| !self.insecure) {
            cert.verify_for_usage(
                self.algs.all,
                roots,
                intermediates,
                now,
                webpki::KeyUsage::server_auth(),
                None,
                None,
            )
            .map_err(super::verifier::pki_error)?;
        }
        if !self.sans.is_empty() {
            let ok = self.sans.iter().any(|san| {
                ServerName::try_from(san.as_str())
                    .is_ok_and(|n| cert.verify_is_valid_for_subject_name(&n).is_ok())
            });
            if !ok {
                return Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName,
                ));
            }
        } else if self.auto_san && cert.verify_is_valid_for_subject_name(server_name).is_err() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A CA and a server certificate for `ext.example.com`, as PEM files in `dir`.
    fn pki(dir: &Path) -> (String, rustls::ServerConfig) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["ext.example.com".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(super::super::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        (ca_file.to_string_lossy().into_owned(), server)
    }

    /// One handshake of `opts` against `server`; then a byte each way.
    async fn handshake(opts: &OriginationOptions, server: Arc<rustls::ServerConfig>) -> bool {
        handshake_as(opts, server, "ext.example.com").await
    }

    /// The same, connecting for `name` (the SNI).
    async fn handshake_as(
        opts: &OriginationOptions,
        server: Arc<rustls::ServerConfig>,
        name: &'static str,
    ) -> bool {
        let cfg = origination_client_config(opts).unwrap();
        let (a, b) = tokio::io::duplex(1 << 16);
        let srv = tokio::spawn(async move {
            let mut s = tokio_rustls::TlsAcceptor::from(server)
                .accept(b)
                .await
                .ok()?;
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await.ok()?;
            s.write_all(&byte).await.ok()
        });
        let name = ServerName::try_from(name).unwrap();
        let ok = match tokio_rustls::TlsConnector::from(cfg).connect(name, a).await {
            Ok(mut c) => {
                let mut byte = [0u8; 1];
                c.write_all(b"x").await.is_ok() && c.read_exact(&mut byte).await.is_ok()
            }
            Err(_) => false,
        };
        let _ = srv.await;
        ok
    }

    #[tokio::test]
    async fn simple_origination_verifies_the_chain_and_the_names() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, server) = pki(dir.path());
        let server = Arc::new(server);
        let good = OriginationOptions {
            ca_file: Some(ca.clone()),
            subject_alt_names: vec!["ext.example.com".into()],
            ..Default::default()
        };
        assert!(handshake(&good, server.clone()).await);
        let wrong_name = OriginationOptions {
            subject_alt_names: vec!["other.example.com".into()],
            ..good.clone()
        };
        assert!(!handshake(&wrong_name, server.clone()).await);
        // Another CA: the chain does not verify, unless insecureSkipVerify.
        let other = tempfile::tempdir().unwrap();
        let (other_ca, _) = pki(other.path());
        let untrusted = OriginationOptions {
            ca_file: Some(other_ca),
            ..good.clone()
        };
        assert!(!handshake(&untrusted, server.clone()).await);
        let skip = OriginationOptions {
            insecure_skip_verify: true,
            ..untrusted
        };
        assert!(handshake(&skip, server).await);
        // A missing CA file is an error naming it.
        let e = origination_client_config(&OriginationOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/nonexistent/ca.pem") && e.contains("caCertificates"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn auto_san_validation_checks_the_name_connected_for() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, server) = pki(dir.path());
        let server = Arc::new(server);
        let auto = OriginationOptions {
            ca_file: Some(ca.clone()),
            auto_san_validation: true,
            ..Default::default()
        };
        assert!(handshake_as(&auto, server.clone(), "ext.example.com").await);
        assert!(!handshake_as(&auto, server.clone(), "other.example.com").await);
        // Without it the name is only sent.
        let sent_only = OriginationOptions {
            auto_san_validation: false,
            ..auto.clone()
        };
        assert!(handshake_as(&sent_only, server.clone(), "other.example.com").await);
        // Given names win over the connection's.
        let given = OriginationOptions {
            subject_alt_names: vec!["ext.example.com".into()],
            ..auto
        };
        assert!(handshake_as(&given, server, "other.example.com").await);
    }

    #[tokio::test]
    async fn the_system_trust_store_does_not_trust_a_private_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (_, server) = pki(dir.path());
        let Some(bundle) = SYSTEM_ROOT_FILES.iter().find(|p| Path::new(p).exists()) else {
            panic!("no system trust store here (install ca-certificates): {SYSTEM_ROOT_FILES:?}");
        };
        let system = OriginationOptions {
            system_roots: true,
            ..Default::default()
        };
        assert!(
            !handshake(&system, Arc::new(server)).await,
            "a test CA's certificate verified against {bundle}"
        );
    }
}
