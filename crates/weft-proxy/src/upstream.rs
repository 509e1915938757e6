//! Upstream connections: connect (bound source, timeout), TLS with Istio's SNI and ALPN, and
//! keep-alive pools per cluster generation, endpoint, TLS form and protocol (HTTP/1.1 idle
//! connections reused one request at a time, HTTP/2 connections multiplexed).

use crate::FastMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

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

/// The name a TLS connection is made for: the auto SNI host, else the context's SNI, else the
/// address (no SNI is sent for an IP address).
fn server_name(tls: &UpstreamTls, addr: SocketAddr, auto_sni: Option<&str>) -> ServerName<'static> {
    for name in [auto_sni.unwrap_or_default(), tls.sni.as_str()] {
        if !name.is_empty()
            && let Ok(n) = ServerName::try_from(name.to_string())
        {
            return n;
        }
    }
    ServerName::IpAddress(addr.ip().into())
}

/// Opens a connection to `addr` for `cluster`, with TLS when `tls` is set (for the auto SNI
/// host `sni` when given).
pub async fn connect(
    cluster: &Cluster,
    addr: SocketAddr,
    tls: Option<&Arc<UpstreamTls>>,
    alpn: AlpnForm,
    sni: Option<&str>,
) -> Result<Connected, UpstreamError> {
    let tcp: TcpStream = crate::socket::connect(
        addr,
        cluster.bind,
        cluster.connect_timeout,
        cluster.keepalive.as_ref(),
    )
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
    let name = server_name(tls, addr, sni);
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
    /// The auto SNI host: connections for different hosts are not shared.
    sni: Option<Arc<str>>,
}

/// A connection ready for one request.
pub enum Sender {
    H1(http1::SendRequest<UpstreamBody>),
    H2(http2::SendRequest<UpstreamBody>),
}

/// A lease that found no pooled connection ready: its pool key and its place in the
/// cluster's `max_requests`, for [`Pools::finish_lease`].
pub struct Waiting {
    key: PoolKey,
    active: Active,
}

/// A ready connection, from the pool or just opened.
struct Pooled {
    sender: Sender,
    local: Option<SocketAddr>,
    peer: Option<Arc<str>>,
    /// Requests the connection has carried, this one included.
    served: u32,
    stream: Option<Stream>,
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
    /// Idle HTTP/1.1 connections expire this long after their release (None: never).
    idle_timeout: Option<Duration>,
    /// On a shared HTTP/2 connection: this stream, counted until the lease ends.
    _stream: Option<Stream>,
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
                expires: self
                    .idle_timeout
                    .and_then(|t| Instant::now().checked_add(t)),
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
    /// When the connection has been idle for the cluster's `idle_timeout` (None: never).
    expires: Option<Instant>,
}

#[derive(Clone)]
struct Shared {
    sender: http2::SendRequest<UpstreamBody>,
    local: Option<SocketAddr>,
    peer: Option<Arc<str>>,
    usage: Arc<H2Usage>,
    idle_timeout: Option<Duration>,
}

/// Milliseconds since the first use of the pools (a cheap clock for idle accounting).
fn now_ms() -> u64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    EPOCH.elapsed().as_millis() as u64
}

/// The streams in flight on a shared HTTP/2 connection, and when the last one ended.
#[derive(Default)]
struct H2Usage {
    streams: AtomicUsize,
    idle_since_ms: AtomicU64,
}

impl H2Usage {
    /// Whether the connection has carried no stream for `timeout`.
    fn idle_for(&self, timeout: Duration) -> bool {
        self.streams.load(Ordering::Acquire) == 0
            && now_ms().saturating_sub(self.idle_since_ms.load(Ordering::Acquire))
                >= timeout.as_millis() as u64
    }
}

/// One stream on a shared HTTP/2 connection.
struct Stream(Arc<H2Usage>);

impl Stream {
    fn new(usage: &Arc<H2Usage>) -> Stream {
        usage.streams.fetch_add(1, Ordering::AcqRel);
        Stream(usage.clone())
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // Stamped before the count drops, so a sweep never sees an old stamp with no streams.
        self.0.idle_since_ms.store(now_ms(), Ordering::Release);
        self.0.streams.fetch_sub(1, Ordering::AcqRel);
    }
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
    idle: Mutex<FastMap<PoolKey, Vec<Idle>>>,
    h2: Mutex<FastMap<PoolKey, Shared>>,
    /// Whether the idle sweeper runs.
    sweeping: AtomicBool,
}

/// How often idle upstream connections are looked for (the `idle_timeout` granularity).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

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
    ///
    /// This is the first step, without waiting: the circuit breakers, then a pooled
    /// connection if one is ready (nearly every request), else what [`Pools::finish_lease`]
    /// needs to wait for one or open one. Apart so that the request's own future holds no
    /// waiting or connecting state on the usual path.
    pub fn start_lease(
        &self,
        cluster: &Cluster,
        addr: SocketAddr,
        tls: Option<&Arc<UpstreamTls>>,
        h2: bool,
        sni: Option<Arc<str>>,
    ) -> Result<Result<Lease, Waiting>, UpstreamError> {
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
            sni,
        };
        self.start_sweeper();
        Ok(match self.pooled(&key) {
            Some(conn) => Ok(self.leased(cluster, key, conn, active)),
            None => Err(Waiting { key, active }),
        })
    }

    /// The rest of a lease that found no pooled connection ready: waits for one (up to the
    /// cluster's `max_connections`, as one of at most `max_pending` waiting), or opens one.
    pub async fn finish_lease(
        &self,
        cluster: &Cluster,
        addr: SocketAddr,
        tls: Option<&Arc<UpstreamTls>>,
        waiting: Waiting,
    ) -> Result<Lease, UpstreamError> {
        let Waiting { key, active } = waiting;
        let state = &cluster.state;
        let limits = cluster.limits;
        let mut pending = false;
        loop {
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
            if let Some(conn) = self.pooled(&key) {
                self.unpend(state, pending);
                return Ok(self.leased(cluster, key, conn, active));
            }
        }
        // Boxed: a new connection's future (connect, TLS handshake, HTTP handshake) is
        // kilobytes, and inline it would make every waiting request's future that much larger.
        let h2 = key.h2;
        let (sender, local, peer, stream) =
            Box::pin(self.open(cluster, addr, tls, h2, &key)).await?;
        Ok(self.leased(
            cluster,
            key,
            Pooled {
                sender,
                local,
                peer,
                served: 1,
                stream,
            },
            active,
        ))
    }

    /// A ready connection from the pool: the shared HTTP/2 connection, else an idle
    /// HTTP/1.1 one (closed or expired ones are dropped on the way).
    fn pooled(&self, key: &PoolKey) -> Option<Pooled> {
        if key.h2 {
            let sh = self
                .inner
                .h2
                .lock()
                .ok()
                .and_then(|m| m.get(key).cloned())?;
            if sh.sender.is_closed() {
                return None;
            }
            return Some(Pooled {
                stream: Some(Stream::new(&sh.usage)),
                sender: Sender::H2(sh.sender),
                local: sh.local,
                peer: sh.peer,
                served: 1,
            });
        }
        while let Some(idle) = self
            .inner
            .idle
            .lock()
            .ok()
            .and_then(|mut m| m.get_mut(key).and_then(Vec::pop))
        {
            if idle.sender.is_ready() && idle.expires.is_none_or(|t| t > Instant::now()) {
                return Some(Pooled {
                    sender: Sender::H1(idle.sender),
                    local: idle.local,
                    peer: idle.peer,
                    served: idle.served + 1,
                    stream: None,
                });
            }
        }
        None
    }

    fn leased(&self, cluster: &Cluster, key: PoolKey, conn: Pooled, active: Active) -> Lease {
        Lease {
            sender: conn.sender,
            local: conn.local,
            peer: conn.peer,
            served: conn.served,
            max_served: cluster.limits.max_requests_per_connection,
            key,
            pool: self.clone(),
            idle_timeout: cluster.idle_timeout,
            _stream: conn.stream,
            _active: active,
        }
    }

    /// Opens a new upstream connection for `key` (its connection slot taken): the sender,
    /// the local address, the peer's identity and, for HTTP/2, the first stream's count.
    async fn open(
        &self,
        cluster: &Cluster,
        addr: SocketAddr,
        tls: Option<&Arc<UpstreamTls>>,
        h2: bool,
        key: &PoolKey,
    ) -> Result<(Sender, Option<SocketAddr>, Option<Arc<str>>, Option<Stream>), UpstreamError> {
        let state = &cluster.state;
        // A connection slot is ours: give it back if the connection never comes up.
        let slot = ConnSlot(state.clone());
        state
            .stats
            .upstream_cx_total
            .fetch_add(1, Ordering::Relaxed);
        let alpn = if h2 { AlpnForm::H2 } else { AlpnForm::Http11 };
        let conn = connect(cluster, addr, tls, alpn, key.sni.as_deref()).await?;
        let io = TokioIo::new(conn.io);
        let mut stream = None;
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
            let usage = Arc::new(H2Usage::default());
            stream = Some(Stream::new(&usage));
            if let Ok(mut m) = self.inner.h2.lock() {
                m.insert(
                    key.clone(),
                    Shared {
                        sender: s.clone(),
                        local: conn.local,
                        peer: conn.peer.clone(),
                        usage,
                        idle_timeout: cluster.idle_timeout,
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
        Ok((sender, conn.local, conn.peer, stream))
    }

    /// Starts the task that closes idle connections (once per set of pools; it ends with them).
    fn start_sweeper(&self) {
        // A plain load first: every request comes here, and the sweeper runs after the first.
        if self.inner.sweeping.load(Ordering::Acquire)
            || self.inner.sweeping.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let weak: Weak<PoolsInner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                Pools { inner }.close_idle(Instant::now());
            }
        });
    }

    /// Closes the connections idle past their cluster's `idle_timeout` (dropping the last
    /// sender of a connection ends it). Returns how many were closed.
    fn close_idle(&self, now: Instant) -> usize {
        let mut closed = 0;
        if let Ok(mut m) = self.inner.idle.lock() {
            for v in m.values_mut() {
                let before = v.len();
                v.retain(|i| i.expires.is_none_or(|t| t > now) && !i.sender.is_closed());
                closed += before - v.len();
            }
            m.retain(|_, v| !v.is_empty());
        }
        if let Ok(mut m) = self.inner.h2.lock() {
            let before = m.len();
            m.retain(|_, sh| {
                !sh.sender.is_closed() && !sh.idle_timeout.is_some_and(|t| sh.usage.idle_for(t))
            });
            closed += before - m.len();
        }
        closed
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

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::{Cluster as XCluster, cluster};
    use envoy_types::pb::envoy::config::core::v3 as core;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3 as http_opts;
    use envoy_types::pb::google::protobuf;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::body::{Counted, RequestBody};
    use crate::snapshot::UpstreamProtocol;
    use crate::tls::TlsFactory;

    /// A lease as the router takes one: pooled if ready, else waited for or opened.
    async fn lease(pools: &Pools, cluster: &Cluster, addr: SocketAddr) -> Lease {
        match pools.start_lease(cluster, addr, None, false, None).unwrap() {
            Ok(lease) => lease,
            Err(waiting) => pools
                .finish_lease(cluster, addr, None, waiting)
                .await
                .unwrap(),
        }
    }

    fn options(upstream: http_opts::http_protocol_options::UpstreamProtocolOptions) -> XCluster {
        let opts = http_opts::HttpProtocolOptions {
            upstream_protocol_options: Some(upstream),
            common_http_protocol_options: Some(core::HttpProtocolOptions {
                idle_timeout: Some(protobuf::Duration {
                    seconds: 0,
                    nanos: 200_000_000,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut c = XCluster {
            name: "inbound|8080||".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::OriginalDst as i32,
            )),
            upstream_connection_options: Some(
                envoy_types::pb::envoy::config::cluster::v3::UpstreamConnectionOptions {
                    tcp_keepalive: Some(core::TcpKeepalive {
                        keepalive_probes: Some(protobuf::UInt32Value { value: 4 }),
                        keepalive_time: Some(protobuf::UInt32Value { value: 7 }),
                        keepalive_interval: Some(protobuf::UInt32Value { value: 3 }),
                    }),
                    ..Default::default()
                },
            ),
            ..Default::default()
        };
        c.typed_extension_protocol_options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
            protobuf::Any {
                type_url:
                    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
                        .into(),
                value: prost::Message::encode_to_vec(&opts),
            },
        );
        c
    }

    fn compile(c: &XCluster) -> Cluster {
        let factory = TlsFactory::new(
            Arc::new(weft_identity::LiveIdentity::new()),
            "cluster.local".into(),
        );
        crate::snapshot::compile_cluster(c, None, &factory, None, &Default::default())
            .expect("cluster compiles")
    }

    #[test]
    fn the_upstream_protocol_follows_the_http_protocol_options() {
        use http::Version;
        use http_opts::http_protocol_options::{
            ExplicitHttpConfig, UpstreamProtocolOptions as U, explicit_http_config::ProtocolConfig,
        };
        let explicit = |p| {
            U::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(p),
            })
        };
        let h11 = compile(&options(explicit(ProtocolConfig::HttpProtocolOptions(
            Default::default(),
        ))));
        assert_eq!(h11.protocol, UpstreamProtocol::Http11);
        assert!(!h11.protocol.h2_for(Version::HTTP_2), "h2 downgraded");
        let h2 = compile(&options(explicit(ProtocolConfig::Http2ProtocolOptions(
            Default::default(),
        ))));
        assert!(h2.protocol.h2_for(Version::HTTP_11), "HTTP/1.1 upgraded");
        let downstream = compile(&options(U::UseDownstreamProtocolConfig(Default::default())));
        assert!(downstream.protocol.h2_for(Version::HTTP_2));
        assert!(!downstream.protocol.h2_for(Version::HTTP_11));
        // Without options: Envoy's default, HTTP/1.1, and its 1 h idle timeout.
        let mut bare = options(U::UseDownstreamProtocolConfig(Default::default()));
        bare.typed_extension_protocol_options.clear();
        let bare = compile(&bare);
        assert_eq!(bare.protocol, UpstreamProtocol::Http11);
        assert_eq!(bare.idle_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(h11.idle_timeout, Some(Duration::from_millis(200)));
        let e = compile_err(&options(U::AutoConfig(Default::default())));
        assert!(e.contains("auto_config"), "{e}");
    }

    fn compile_err(c: &XCluster) -> String {
        let factory = TlsFactory::new(
            Arc::new(weft_identity::LiveIdentity::new()),
            "cluster.local".into(),
        );
        crate::snapshot::compile_cluster(c, None, &factory, None, &Default::default())
            .expect_err("refused")
            .to_string()
    }

    /// An HTTP/1.1 server answering every request with 200; sends () when a connection ends.
    async fn server() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {
                                let _ = s
                                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                                    .await;
                            }
                        }
                    }
                    let _ = tx.send(());
                });
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn idle_connections_close_after_the_idle_timeout_with_keepalive_set() {
        use http_opts::http_protocol_options::{
            ExplicitHttpConfig, UpstreamProtocolOptions as U, explicit_http_config::ProtocolConfig,
        };
        let cluster = compile(&options(U::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::HttpProtocolOptions(Default::default())),
        })));
        assert_eq!(
            cluster.keepalive,
            Some(crate::socket::Keepalive {
                time: Some(Duration::from_secs(7)),
                interval: Some(Duration::from_secs(3)),
                probes: Some(4),
            })
        );
        let (addr, mut closed) = server().await;
        let pools = Pools::default();
        let request = || {
            let body = Counted::new(
                RequestBody::Held {
                    data: None,
                    trailers: None,
                },
                Arc::new(AtomicU64::new(0)),
            );
            http::Request::get("/").body(body).unwrap()
        };
        for _ in 0..2 {
            let mut lease = lease(&pools, &cluster, addr).await;
            let Sender::H1(s) = &mut lease.sender else {
                panic!("HTTP/1.1 expected");
            };
            let resp = s.send_request(request()).await.unwrap();
            assert_eq!(resp.status(), 200);
            lease.release();
        }
        // Both requests went over one connection, now idle; not yet expired.
        assert_eq!(
            cluster
                .state
                .stats
                .upstream_cx_total
                .load(Ordering::Relaxed),
            1
        );
        assert_eq!(pools.close_idle(Instant::now()), 0);
        assert!(closed.try_recv().is_err());
        // Past the 200 ms idle timeout the sweep closes it, and the server sees it end.
        assert_eq!(
            pools.close_idle(Instant::now() + Duration::from_millis(300)),
            1
        );
        tokio::time::timeout(Duration::from_secs(5), closed.recv())
            .await
            .expect("the idle connection was closed")
            .unwrap();
        // The background sweeper does the same on its own: a connection idle for 200 ms is
        // gone within about a second and a half.
        let mut lease = lease(&pools, &cluster, addr).await;
        let Sender::H1(s) = &mut lease.sender else {
            panic!("HTTP/1.1 expected");
        };
        s.send_request(request()).await.unwrap();
        lease.release();
        tokio::time::timeout(Duration::from_secs(3), closed.recv())
            .await
            .expect("the sweeper closed the idle connection")
            .unwrap();
    }

    #[tokio::test]
    async fn keepalive_is_set_on_upstream_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ka = crate::socket::Keepalive {
            time: Some(Duration::from_secs(7)),
            interval: Some(Duration::from_secs(3)),
            probes: Some(4),
        };
        let s = crate::socket::connect(
            listener.local_addr().unwrap(),
            None,
            Duration::from_secs(5),
            Some(&ka),
        )
        .await
        .unwrap();
        let sock = socket2::SockRef::from(&s);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(3)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
        let plain = crate::socket::connect(
            listener.local_addr().unwrap(),
            None,
            Duration::from_secs(5),
            None,
        )
        .await
        .unwrap();
        assert!(!socket2::SockRef::from(&plain).keepalive().unwrap());
    }

    #[test]
    fn a_shared_h2_connection_is_idle_only_without_streams() {
        let usage = Arc::new(H2Usage::default());
        let stream = Stream::new(&usage);
        assert!(!usage.idle_for(Duration::ZERO), "a stream is in flight");
        drop(stream);
        assert!(usage.idle_for(Duration::ZERO));
        assert!(!usage.idle_for(Duration::from_secs(60)));
    }
}
