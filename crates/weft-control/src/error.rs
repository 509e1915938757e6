//! Errors of the control plane.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "cannot read the config directory {dir}: {source}; pass an existing directory with --config-dir"
    )]
    ConfigDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {addr}: {source}; is another weft control (or istiod) running? choose another port"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot watch {path} for changes: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("identity: {0}")]
    Identity(#[from] weft_identity::IdentityError),
    #[error("cannot create the state directory {dir}: {source}")]
    StateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    JwksCa(#[from] crate::jwks::JwksCaError),
    #[error("TLS setup of the xDS port failed: {0}")]
    Tls(String),
    #[error("gRPC server on {addr} failed: {source}")]
    Serve {
        addr: SocketAddr,
        source: tonic::transport::Error,
    },
}
