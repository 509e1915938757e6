//! Errors of the dashboard, each saying what to do.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(
        "cannot serve the dashboard on {addr}: {source}; free the port (weft up's is 20001) or give `weft dashboard` another --listen"
    )]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}
