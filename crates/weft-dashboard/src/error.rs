//! Errors of the dashboard, each saying what to do.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cannot serve the dashboard on {addr}: {source}; pick another address with --listen")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}
