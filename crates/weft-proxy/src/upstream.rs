//! Upstream connections: connect (bound source, timeout), TLS with Istio's SNI and ALPN, and
//! keep-alive pools per cluster generation, endpoint, TLS form and protocol (HTTP/1.1 idle
//! connections reused one request at a time, HTTP/2 connections multiplexed).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::body::UpstreamBody;
use crate::snapshot::balance::{HostState, Lb};
use crate::snapshot::{Cluster, ClusterState, UpstreamTls};

/// Why an upstream could not be used, with Envoy's response flag.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection failure: {0}")]
    Connect(std::io::Error),
    #[error("TLS error: {0}")]
    Tls(std::io::Error),
    #[error("protocol error: {0}")]
    Handshake(hyper::Error),
    /// A circuit breaker of the cluster is open (Envoy's UO).
    #[error("circuit breaker open: {0}")]
    Overflow(&'static str),
}

impl UpstreamError {
    /// Envoy's `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub fn transport_failure(&self) -> Option<String> {
        match self {
            UpstreamError::Tls(e) => Some(format!("TLS_error:_{e}").replace(' ', "_")),
            _ => None,
        }
    }
}

/// A byte stream to an upstream, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A new upstream connection, its local address (`%UPSTREAM_LOCAL_ADDRESS%`) and, over mTLS,
/// the peer's SPIFFE ID.
pub struct Connected {
    pub io: Box<dyn Io>,
    pub local: Option<SocketAddr>,
    pub peer: Option<Arc<str>>,
}

/// Which ALPN list to offer over Istio mTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlpnForm {
    /// The cluster's own list (TCP proxy).
    Base,
    Http11,
    H2,
}

fn server_name(tls: &UpstreamTls, addr: SocketAddr) -> ServerName<'static> {
    if !tls.sni.is_empty()
        && let Ok(n) = ServerName::try_from(tls.sni.clone())
    {
        return n;
    }
    ServerName::IpAddress(addr.ip().into())
}

/// Opens a connection to `addr` for `cluster`, with TLS when `tls` is set.
pub async fn connect(
    cluster: &Cluster,
    addr: SocketAddr,
    tls: Option<&Arc<UpstreamTls>>,
    alpn: AlpnForm,
) -> Result<Connected, UpstreamError> {
    let tcp: TcpStream = crate::socket::connect(addr, cluster.bind, cluster.connect_timeout)
        .await
        .map_err(UpstreamError::Connect)?;
    let local = tcp.local_addr().ok();
    let Some(tls) = tls else {
        return Ok(Connected {
            io: Box::new(tcp),
            local,
            peer: None,
        });
    };
    let config = match alpn {
        AlpnForm::Base => tls.base.clone(),
        AlpnForm::Http11 => tls.http11.clone(),
        AlpnForm::H2 => tls.h2.clone(),
    };
    let name = server_name(tls, addr);
    let (io, peer) = if alpn == AlpnForm::Base {
        // Bulk TCP: read TLS records in 256 KiB gulps (rustls reads at most 4 KiB per call).
        let buffered = crate::readbuf::GrowingReader::new(tcp, crate::tcp::TLS_READ_BUFFER);
        handshake(config, name, buffered, cluster.connect_timeout).await?
    } else {
        handshake(config, name, tcp, cluster.connect_timeout).await?
    };
    Ok(Connected { io, local, peer })
}

/// The client side of the TLS handshake on `io`; the stream and the server's SPIFFE ID.
async fn handshake<IO>(
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    io: IO,
    timeout: std::time::Duration,
) -> Result<(Box<dyn Io>, Option<Arc<str>>), UpstreamError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = tokio::time::timeout(timeout, connector.connect(name, io))
        .await
        .map_err(|_| {
            UpstreamError::Tls(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            ))
        })?
        .map_err(UpstreamError::Tls)?;
    let peer = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(weft_identity::peer_spiffe_id)
        .map(|id| Arc::from(id.to_string()));
    Ok((Box::new(stream), peer))
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    cluster: Arc<str>,
    generation: u64,
    addr: SocketAddr,
    tls: bool,
    h2: bool,
}

/// A connection ready for one request.
pub enum Sender {
    H1(http1::SendRequest<UpstreamBody>),
    H2(http2::SendRequest<UpstreamBody>),
}

/// A checked-out connection and where it goes back.
pub struct Lease {
    pub sender: Sender,
    pub local: Option<SocketAddr>,
    /// The upstream's SPIFFE ID over mTLS.
    pub peer: Option<Arc<str>>,
    /// Requests this connection has carried, this one included.
    served: u32,
    max_served: u32,
    key: PoolKey,
    pool: Pools,
    _active: Active,
}

/// One request in flight on a cluster (its `max_requests` gauge) and, for least-request
/// balancing, on its host; freed on drop.
struct Active(Arc<ClusterState>, Option<Arc<HostState>>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(h) = &self.1 {
            h.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Lease {
    /// Returns an HTTP/1.1 connection to the idle list (call when its response ended cleanly).
    /// An HTTP/1.1 connection that reached `maxRequestsPerConnection` is closed instead.
    pub fn release(self) {
        if self.max_served != 0 && self.served >= self.max_served {
            return;
        }
        if let Sender::H1(s) = self.sender
            && !s.is_closed()
            && let Ok(mut m) = self.pool.inner.idle.lock()
        {
            m.entry(self.key).or_default().push(Idle {
                sender: s,
                local: self.local,
                peer: self.peer,
                served: self.served,
            });
            drop(m);
            // A request waiting for a connection can take this one.
            self._active.0.freed.notify_one();
        }
    }
}

struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    local: Option<SocketAddr>,
    peer: Option<Arc<str>>,
    served: u32,
}

#[derive(Clone)]
struct Shared {
    sender: http2::SendRequest<UpstreamBody>,
    local: Option<SocketAddr>,
    peer: Option<Arc<str>>,
}

/// One open upstream connection of a cluster (its `max_connections` gauge); freed, and a
/// waiting request woken, when the connection ends.
struct ConnSlot(Arc<ClusterState>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_one();
    }
}

#[derive(Default)]
struct PoolsInner {
    idle: Mutex<HashMap<PoolKey, Vec<Idle>>>,
    h2: Mutex<HashMap<PoolKey, Shared>>,
}

/// All upstream HTTP connection pools of the proxy.
#[derive(Clone, Default)]
pub struct Pools {
    inner: Arc<PoolsInner>,
}

/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 64;

impl Pools {
    /// A connection for one HTTP request to `addr`, under the cluster's circuit breakers:
    /// `max_requests` in flight, `max_connections` open (beyond it the request waits for a
    /// connection, as one of at most `max_pending`); overflow is [`UpstreamError::Overflow`].
    pub async fn lease(
        &self,
        cluster: &Cluster,
        addr: SocketAddr,
        tls: Option<&Arc<UpstreamTls>>,
        h2: bool,
    ) -> Result<Lease, UpstreamError> {
        let state = &cluster.state;
        let limits = cluster.limits;
        if !ClusterState::try_take(&state.active, limits.max_requests) {
            state
                .stats
                .upstream_rq_pending_overflow
                .fetch_add(1, Ordering::Relaxed);
            return Err(UpstreamError::Overflow("max_requests"));
        }
        let host = matches!(cluster.lb, Lb::LeastRequest)
            .then(|| cluster.host(addr).cloned())
            .flatten();
        if let Some(h) = &host {
            h.active.fetch_add(1, Ordering::AcqRel);
        }
        let active = Active(state.clone(), host);
        state
            .stats
            .upstream_rq_total
            .fetch_add(1, Ordering::Relaxed);
        let key = PoolKey {
            cluster: cluster.name.clone(),
            generation: cluster.generation,
            addr,
            tls: tls.is_some(),
            h2,
        };
        let lease = |sender, local, peer, served, active| Lease {
            sender,
            local,
            peer,
            served,
            max_served: limits.max_requests_per_connection,
            key: key.clone(),
            pool: self.clone(),
            _active: active,
        };
        let mut pending = false;
        loop {
            if h2 {
                let existing = self.inner.h2.lock().ok().and_then(|m| m.get(&key).cloned());
                if let Some(sh) = existing
                    && !sh.sender.is_closed()
                {
                    self.unpend(state, pending);
                    return Ok(lease(Sender::H2(sh.sender), sh.local, sh.peer, 1, active));
                }
            } else {
                while let Some(idle) = self
                    .inner
                    .idle
                    .lock()
                    .ok()
                    .and_then(|mut m| m.get_mut(&key).and_then(Vec::pop))
                {
                    if idle.sender.is_ready() {
                        self.unpend(state, pending);
                        return Ok(lease(
                            Sender::H1(idle.sender),
                            idle.local,
                            idle.peer,
                            idle.served + 1,
                            active,
                        ));
                    }
                }
            }
            let freed = state.freed.notified();
            if ClusterState::try_take(&state.connections, limits.max_connections) {
                self.unpend(state, pending);
                break;
            }
            if !pending {
                state
                    .stats
                    .upstream_cx_overflow
                    .fetch_add(1, Ordering::Relaxed);
                if !ClusterState::try_take(&state.pending, limits.max_pending) {
                    state
                        .stats
                        .upstream_rq_pending_overflow
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(UpstreamError::Overflow("max_pending_requests"));
                }
                state
                    .stats
                    .upstream_rq_pending_total
                    .fetch_add(1, Ordering::Relaxed);
                pending = true;
            }
            // Woken when a connection closes or goes idle; re-checked at least every 100 ms.
            let _ = tokio::time::timeout(Duration::from_millis(100), freed).await;
        }
        // A connection slot is ours: give it back if the connection never comes up.
        let slot = ConnSlot(state.clone());
        state
            .stats
            .upstream_cx_total
            .fetch_add(1, Ordering::Relaxed);
        let alpn = if h2 { AlpnForm::H2 } else { AlpnForm::Http11 };
        let conn = connect(cluster, addr, tls, alpn).await?;
        let io = TokioIo::new(conn.io);
        let sender = if h2 {
            let (s, c) = http2::Builder::new(TokioExecutor::new())
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(4 << 20)
                .handshake(io)
                .await
                .map_err(UpstreamError::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = c.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
                drop(slot);
            });
            if let Ok(mut m) = self.inner.h2.lock() {
                m.insert(
                    key.clone(),
                    Shared {
                        sender: s.clone(),
                        local: conn.local,
                        peer: conn.peer.clone(),
                    },
                );
            }
            Sender::H2(s)
        } else {
            let (s, c) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(UpstreamError::Handshake)?;
            tokio::spawn(async move {
                if let Err(e) = c.await {
                    tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended");
                }
                drop(slot);
            });
            Sender::H1(s)
        };
        Ok(lease(sender, conn.local, conn.peer, 1, active))
    }

    fn unpend(&self, state: &ClusterState, pending: bool) {
        if pending {
            state.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Drops pools of clusters (or cluster generations) no longer in the config.
    pub fn retain(&self, live: &dyn Fn(&str, u64) -> bool) {
        if let Ok(mut m) = self.inner.idle.lock() {
            m.retain(|k, v| {
                v.truncate(MAX_IDLE_PER_ENDPOINT);
                live(&k.cluster, k.generation)
            });
        }
        if let Ok(mut m) = self.inner.h2.lock() {
            m.retain(|k, _| live(&k.cluster, k.generation));
        }
    }
}

/// Envoy's local reply text for an upstream failure before headers.
pub fn reset_reason(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Connect(_) | UpstreamError::Tls(_) => {
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
        }
        UpstreamError::Handshake(_) => {
            "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
        }
        UpstreamError::Overflow(_) => {
            "upstream connect error or disconnect/reset before headers. reset reason: overflow"
        }
    }
}
