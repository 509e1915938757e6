//! The control plane's TLS port (Istio 15012): a serving certificate issued by its own CA,
//! and an incoming-connection stream for tonic that runs each handshake on its own task so a
//! slow client never holds up the others.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use weft_identity::{CertificateAuthority, TlsServerStream};

use crate::error::ControlError;

/// A rustls server config presenting a certificate for `names` from `ca` (h2 only).
pub fn server_config(
    ca: &CertificateAuthority,
    names: &[String],
    ttl: Duration,
) -> Result<Arc<rustls::ServerConfig>, ControlError> {
    let (chain, key) = weft_identity::serving_cert_for_control_plane(ca, names, ttl)?;
    let certs: Vec<CertificateDer<'static>> = chain
        .iter()
        .map(|pem| CertificateDer::from_pem_slice(pem.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| ControlError::Tls(format!("serving certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| ControlError::Tls(format!("serving key: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ControlError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| ControlError::Tls(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepted, handshaken TLS connections for `tonic::transport::Server::serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<Result<TlsServerStream, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the TLS xDS port");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(TlsServerStream(s))).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "TLS handshake with a proxy failed")
                    }
                    Err(_) => tracing::info!(%peer, "TLS handshake with a proxy timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
