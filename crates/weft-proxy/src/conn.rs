//! What the data path knows about one downstream connection.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::snapshot::Direction;

#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub direction: Direction,
    /// The captured connection's original destination (`%DOWNSTREAM_LOCAL_ADDRESS%`).
    pub original_dst: SocketAddr,
    pub remote: SocketAddr,
    /// The peer's SPIFFE ID when the connection is mTLS.
    pub peer_principal: Option<Arc<str>>,
    /// SNI of the downstream TLS handshake.
    pub sni: Option<Arc<str>>,
    /// Negotiated ALPN on the downstream TLS connection.
    pub alpn: Option<Vec<u8>>,
}

impl ConnInfo {
    pub fn mtls(&self) -> bool {
        self.peer_principal.is_some()
    }
}
