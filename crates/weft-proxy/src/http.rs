//! The HTTP connection manager: serves HTTP/1.1 and HTTP/2 (h2c or over mTLS) downstream,
//! routes each request (virtual host → first matching route → cluster), forwards it over a
//! pooled upstream connection (HTTP/1.1 or HTTP/2 as the downstream spoke, or HTTP/2 when the
//! cluster says so), exchanges Istio peer metadata, and records metrics and the access log.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use weft_telemetry::overrides::{MetricOverrides, TagValues};
use weft_telemetry::{
    AccessLogEntry, HttpProtocol, PeerInfo, Reporter, SecurityPolicy, ServiceInfo,
};

use crate::Proxy;
use crate::body::{Completion, ResponseBody};
use crate::conn::ConnInfo;
use crate::snapshot::{Direction, Hcm, Snapshot};
use crate::stats;
use crate::upstream::Lease;

pub(crate) mod authz;
pub(crate) mod extauthz;
pub(crate) mod grpc;
pub(crate) mod jwt;
mod limits;
mod path;
#[cfg(test)]
mod rbac_tests;
mod router;
mod xfcc;

pub use limits::{HcmLimits, HttpLimits};

const PEER_MD: HeaderName = HeaderName::from_static(weft_telemetry::peer::PEER_METADATA_HEADER);
const PEER_MD_ID: HeaderName =
    HeaderName::from_static(weft_telemetry::peer::PEER_METADATA_ID_HEADER);
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const UPSTREAM_SERVICE_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Serves HTTP on one downstream connection until it closes.
/// What ends a connection other than its peer.
enum Rare {
    Drain,
    Tripped,
}

pub async fn serve<IO>(io: IO, conn: ConnInfo, hcm: Arc<Hcm>, proxy: Arc<Proxy>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let conn = Arc::new(conn);
    let proxy_drain = proxy.draining.clone();
    let handles = Arc::new(HandleCache::default());
    let limits = hcm.limits.effective(&proxy.options.http_limits);
    let counters = hcm.limits.counters.clone();
    let resets = Arc::new(limits::Resets::default());
    let remote = conn.remote;
    let streams = resets.clone();
    let svc = hyper::service::service_fn(move |req| {
        // The stream is counted now, not when the handler first runs: a stream reset at once
        // counts too. Boxed: hyper moves the request's future into place after `call`
        // returns, and a future this deep (router, attempts, pool) is kilobytes; a box moves
        // as a pointer.
        Box::pin(handle(
            req,
            conn.clone(),
            hcm.clone(),
            proxy.clone(),
            handles.clone(),
            limits,
            streams.stream(),
        ))
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20);
    limits.configure(&mut builder);
    let mut draining = proxy_drain.subscribe();
    let io = limits::WriteStall::new(io, limits.stream_idle_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    // The proxy's draining and the rapid-reset guard, rare events: in a FuturesUnordered,
    // which polls them only when their own waker fired, not each time the connection's task
    // wakes (a lock in Notify for each, several times a request).
    let mut rare = futures::stream::FuturesUnordered::new();
    rare.push(futures::future::Either::Left(async move {
        // Its sender gone, the proxy is ending: drain too.
        let _ = draining.wait_for(|d| *d).await;
        Rare::Drain
    }));
    rare.push(futures::future::Either::Right(async move {
        resets.tripped().await;
        Rare::Tripped
    }));
    let result = tokio::select! {
        biased;
        r = conn.as_mut() => r,
        // Never None: both stay in it until one ends the connection.
        Some(event) = futures::StreamExt::next(&mut rare) => match event {
            Rare::Drain => {
                // Draining: HTTP/1.1 answers the request in flight with `connection: close`,
                // HTTP/2 sends GOAWAY; then the connection ends.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            Rare::Tripped => {
                counters.premature_resets.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%remote, "closing a connection on which the client reset most of its last {} streams within {:?} of opening them (HTTP/2 rapid reset)", limits::PREMATURE_RESET_STREAMS, limits::PREMATURE_RESET_LIFETIME);
                return;
            }
        },
    };
    if let Err(e) = result {
        // What the client did wrong, counted by Envoy's names; the detail at debug.
        let hyper_error = std::error::Error::source(&*e)
            .and_then(|s| s.downcast_ref::<hyper::Error>())
            .or_else(|| e.downcast_ref::<hyper::Error>());
        if let Some(h) = hyper_error {
            if h.is_timeout() {
                counters.header_timeout.fetch_add(1, Ordering::Relaxed);
            } else if h.is_parse() || h.is_parse_too_large() {
                counters.protocol_error.fetch_add(1, Ordering::Relaxed);
            }
        }
        tracing::debug!(%remote, error = %e, "downstream HTTP connection ended with an error");
    }
}

/// What a connection's requests share, made once per connection (or per change of what it
/// depends on): the metric handles of the label set last seen (requests on one connection
/// mostly share their labels, so recording is then a few atomic adds instead of hashing the
/// 25 labels into four metric families), the peers and service they are labelled with, the
/// XFCC element, and the HCM in force.
#[derive(Default)]
struct HandleCache {
    last: std::sync::Mutex<Option<CachedHandle>>,
    /// The peer metadata header last seen on the connection, decoded.
    peer: std::sync::Mutex<Option<(HeaderValue, Arc<PeerInfo>)>>,
    /// An upstream peer whose metadata names no principal, with the one its certificate
    /// proved: the peer and principal it was made from, and the result.
    proved: std::sync::Mutex<Option<ProvedPeer>>,
    /// The client as its certificate's principal describes it, when it sends no metadata.
    principal_peer: std::sync::OnceLock<Arc<PeerInfo>>,
    /// The destination service the connection's SNI names (Istio's
    /// `outbound_.<port>_.<subset>_.<host>`), for an inbound cluster that names none.
    sni_service: std::sync::OnceLock<Option<Arc<ServiceInfo>>>,
    /// This hop's `x-forwarded-client-cert` element and the setting it was built for: it
    /// depends only on the connection's peer certificate and this proxy's identity.
    xfcc: std::sync::Mutex<Option<(crate::snapshot::Xfcc, Option<HeaderValue>)>>,
    /// The snapshot the last request ran under and the HCM it found at the connection's
    /// place in it ([`current_hcm`]), so the lookup runs once per snapshot change.
    current: std::sync::Mutex<Option<SeenHcm>>,
    /// The stream idle timer, lent to one stream at a time (HTTP/2's concurrent streams take
    /// their own): requests one after another move its deadline instead of each registering
    /// and removing a timer.
    idle_timer: std::sync::Mutex<Option<Pin<Box<tokio::time::Sleep>>>>,
}

/// `(peer, principal, peer with that principal)`.
type ProvedPeer = (Arc<PeerInfo>, Arc<str>, Arc<PeerInfo>);

/// What a request's standard labels are made of: the shared peers and service (held, so
/// their addresses are not reused while cached) and the request's own values. The same
/// parties by identity make the same labels, so a request on a connection whose last request
/// had them takes the cached handle without building its 25 labels.
struct Parties {
    reporter: Reporter,
    source: Arc<PeerInfo>,
    destination: Arc<PeerInfo>,
    service: Arc<ServiceInfo>,
    security: SecurityPolicy,
    grpc: bool,
    code: u16,
    grpc_status: Option<u32>,
}

impl HandleCache {
    /// The connection's stream idle timer if no stream has it, else a timer of its own.
    fn take_idle_timer(&self) -> Pin<Box<tokio::time::Sleep>> {
        self.idle_timer
            .lock()
            .ok()
            .and_then(|mut t| t.take())
            .unwrap_or_else(|| Box::pin(tokio::time::sleep(Duration::ZERO)))
    }

    fn return_idle_timer(&self, timer: Pin<Box<tokio::time::Sleep>>) {
        if let Ok(mut t) = self.idle_timer.lock() {
            t.get_or_insert(timer);
        }
    }
}

impl Parties {
    fn same(&self, o: &Parties) -> bool {
        self.reporter == o.reporter
            && Arc::ptr_eq(&self.source, &o.source)
            && Arc::ptr_eq(&self.destination, &o.destination)
            && Arc::ptr_eq(&self.service, &o.service)
            && self.security == o.security
            && self.grpc == o.grpc
            && self.code == o.code
            && self.grpc_status == o.grpc_status
    }

    fn labels(&self, flags: &str) -> weft_telemetry::RequestLabels {
        let parties = weft_telemetry::Parties {
            reporter: self.reporter,
            source: &self.source,
            destination: &self.destination,
            service: &self.service,
            security_policy: self.security,
        };
        let protocol = if self.grpc {
            weft_telemetry::Protocol::Grpc
        } else {
            weft_telemetry::Protocol::Http
        };
        weft_telemetry::RequestLabels::new(
            &parties,
            protocol,
            self.code,
            self.grpc_status,
            stats::flags_label(flags),
        )
    }
}

/// The metric handles of the label set last seen on a connection, with what it was made of
/// and, under Telemetry metric overrides, those overrides (held, so the pointer stays theirs)
/// and the computed tag values.
struct CachedHandle {
    parties: Parties,
    labels: weft_telemetry::RequestLabels,
    overrides: Option<(Arc<MetricOverrides>, TagValues)>,
    handle: weft_telemetry::RequestHandle,
}

/// A snapshot (held weakly, so its address is not reused while cached) and the HCM found in it.
type SeenHcm = (Weak<Snapshot>, Option<Arc<Hcm>>);

impl HandleCache {
    /// [`current_hcm`], looked up again only when the snapshot changed.
    fn current_hcm(&self, snap: &Arc<Snapshot>, hcm: &Arc<Hcm>) -> Option<Arc<Hcm>> {
        let mut slot = match self.current.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((seen, found)) = slot.as_ref()
            && std::ptr::eq(seen.as_ptr(), Arc::as_ptr(snap))
        {
            return found.clone();
        }
        let found = current_hcm(snap, hcm);
        *slot = Some((Arc::downgrade(snap), found.clone()));
        found
    }

    /// This hop's XFCC element for `x`, built once per connection (and setting).
    fn xfcc_element(
        &self,
        x: &crate::snapshot::Xfcc,
        conn: &ConnInfo,
        proxy: &Proxy,
    ) -> Option<HeaderValue> {
        let mut slot = match self.xfcc.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((cached, el)) = slot.as_ref()
            && cached == x
        {
            return el.clone();
        }
        let el = xfcc::element_value(x, conn, own_uri(proxy).as_deref());
        *slot = Some((*x, el.clone()));
        el
    }

    /// The metric handles of a request made of `parties`, with response flags `flags`.
    fn handle(
        &self,
        metrics: &weft_telemetry::Metrics,
        parties: Parties,
        flags: &str,
        ov: Option<(Arc<MetricOverrides>, TagValues)>,
    ) -> weft_telemetry::RequestHandle {
        let mut slot = match self.last.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let same_overrides = |o: &Option<(Arc<MetricOverrides>, TagValues)>| match (o, &ov) {
            (None, None) => true,
            (Some((a, x)), Some((b, y))) => Arc::ptr_eq(a, b) && x == y,
            _ => false,
        };
        if let Some(c) = slot.as_ref()
            && c.parties.same(&parties)
            && *c.labels.response_flags == *stats::flags_text(flags)
            && same_overrides(&c.overrides)
        {
            return c.handle.clone();
        }
        let labels = parties.labels(flags);
        // Equal labels from other values (a new snapshot's peer, say): the same handles.
        if let Some(c) = slot.as_mut()
            && c.labels == labels
            && same_overrides(&c.overrides)
        {
            c.parties = parties;
            return c.handle.clone();
        }
        let handle = metrics.request_handle(&labels, ov.as_ref().map(|(o, t)| (&**o, t)));
        *slot = Some(CachedHandle {
            parties,
            labels,
            overrides: ov,
            handle: handle.clone(),
        });
        handle
    }

    /// `peer` with the principal its certificate proved, made once per peer and principal.
    fn proved(&self, peer: Arc<PeerInfo>, principal: &Arc<str>) -> Arc<PeerInfo> {
        let mut slot = match self.proved.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((base, p, result)) = slot.as_ref()
            && Arc::ptr_eq(base, &peer)
            && p == principal
        {
            return result.clone();
        }
        let mut with = (*peer).clone();
        with.principal = weft_telemetry::Label::new(principal);
        let result = Arc::new(with);
        *slot = Some((peer, principal.clone(), result.clone()));
        result
    }
}

/// What the completion guard records once the response is over.
struct Done {
    handles: Arc<HandleCache>,
    proxy: Arc<Proxy>,
    hcm: Arc<Hcm>,
    entry: AccessLogEntry,
    started: Instant,
    request_bytes: Arc<AtomicU64>,
    /// Who and what the request's metrics are labelled with (the code is set at the end).
    parties: Parties,
    req_headers: http::HeaderMap,
    resp_headers: http::HeaderMap,
    /// The request's span on this hop, when traced and sampled.
    span: Option<crate::spans::ActiveSpan>,
    lease: Option<Lease>,
}

impl Done {
    /// Adds an Envoy response flag (comma-separated when there are several, as Envoy logs them).
    fn add_flag(&mut self, flag: &'static str) {
        if flag == "-" || flag.is_empty() {
            return;
        }
        let flags = &mut self.entry.response_flags;
        if flags.is_empty() || flags == "-" {
            *flags = flag.into();
        } else if !flags.split(',').any(|f| f == flag) {
            *flags = format!("{flags},{flag}").into();
        }
    }
}

impl Completion for Done {
    fn complete(self: Box<Self>, ending: crate::body::Ending) {
        let mut d = self;
        let response_bytes = ending.bytes;
        if ending.grpc_status.is_some() {
            d.parties.grpc_status = ending.grpc_status;
        }
        d.parties.code = d.entry.response_code;
        let elapsed = d.started.elapsed();
        let request_bytes = d.request_bytes.load(Ordering::Relaxed);
        d.entry.bytes_received = request_bytes;
        d.entry.bytes_sent = response_bytes;
        d.entry.duration_ms = elapsed.as_millis() as u64;
        let cel = weft_telemetry::CelInput {
            request_headers: Some(&d.req_headers),
            response_headers: Some(&d.resp_headers),
            mtls: d.parties.security == SecurityPolicy::MutualTls,
            grpc_status: d.parties.grpc_status,
        };
        let ov = d.hcm.stats.clone().map(|o| {
            let tags = o.evaluate(&d.entry, &cel);
            (o, tags)
        });
        d.handles
            .handle(
                &d.proxy.telemetry.metrics,
                d.parties,
                &d.entry.response_flags,
                ov,
            )
            .record(elapsed, request_bytes, response_bytes);
        if !d.hcm.access_log.is_empty() {
            let req = |name: &str| {
                d.req_headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let resp = |name: &str| {
                d.resp_headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            let input = crate::accesslog::LogInput {
                req: &req,
                resp: &resp,
                cel,
            };
            crate::accesslog::write(&d.proxy, &d.hcm.access_log, &d.entry, &input);
        }
        if let Some(span) = d.span.take() {
            crate::spans::finish(span, &d.proxy, &d.entry);
        }
        if let Some(lease) = d.lease.take()
            && ending.finished
        {
            lease.release();
        }
    }
}

fn protocol(v: Version) -> HttpProtocol {
    match v {
        Version::HTTP_10 => HttpProtocol::Http10,
        Version::HTTP_2 => HttpProtocol::Http2,
        _ => HttpProtocol::Http11,
    }
}

fn header_str(h: &http::HeaderMap, name: &HeaderName) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn is_grpc(h: &http::HeaderMap) -> bool {
    h.get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The peer described by an `x-envoy-peer-metadata` header. A peer sends the same value on
/// every request of a connection, so the last decoded one is kept per connection.
fn peer_from_headers(
    h: &http::HeaderMap,
    principal: Option<&str>,
    cache: &HandleCache,
) -> Option<Arc<PeerInfo>> {
    let value = h.get(&PEER_MD)?;
    let mut slot = match cache.peer.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some((v, p)) = slot.as_ref()
        && v == value
    {
        return Some(p.clone());
    }
    let node = weft_telemetry::decode_peer_header(value.to_str().ok()?).ok()?;
    let peer = Arc::new(PeerInfo::from_metadata(&node, principal.unwrap_or("")));
    *slot = Some((value.clone(), peer.clone()));
    Some(peer)
}

/// A reply the proxy makes itself (Envoy's local reply), with its response flag and details.
pub(crate) struct Local {
    status: StatusCode,
    flags: &'static str,
    /// `%RESPONSE_CODE_DETAILS%`: static for the proxy's own replies, built for filters'
    /// (`rbac_access_denied_matched_policy[…]`, `jwt_authn_access_denied{…}`).
    details: std::borrow::Cow<'static, str>,
    body: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// For a gRPC abort: the status sent in a trailers-only response.
    grpc_status: Option<u32>,
}

/// The HCM now at `hcm`'s place (same listener, chain index and name), when the snapshot
/// changed since `hcm` was compiled; None when it is the same or the chain is gone.
fn current_hcm(snap: &Snapshot, hcm: &Arc<Hcm>) -> Option<Arc<Hcm>> {
    let (listener, i, name) = &hcm.origin;
    let chain = snap.listeners.get(&**listener)?.chains.get(*i)?;
    match &chain.filter {
        crate::snapshot::NetworkFilter::Http(h) if chain.name == **name && !Arc::ptr_eq(h, hcm) => {
            Some(h.clone())
        }
        _ => None,
    }
}

/// One request, from its arrival to the response's head; the response body records the rest
/// when it ends. A plain function returning an `async` block rather than an `async fn`: an
/// `async fn` keeps its arguments twice in its future (as captured and as rebound locals), and
/// this future, every request's, is copied into its box whole. For the same reason what is
/// built before forwarding is built in blocks whose locals end there.
#[allow(clippy::manual_async_fn)]
fn handle(
    mut req: Request<Incoming>,
    conn: Arc<ConnInfo>,
    hcm: Arc<Hcm>,
    proxy: Arc<Proxy>,
    handles: Arc<HandleCache>,
    limits: HttpLimits,
    mut stream: limits::StreamGuard,
) -> impl Future<Output = Result<Response<ResponseBody>, std::convert::Infallible>> {
    async move {
        let (conn, hcm, proxy, limits) = (&conn, &hcm, &proxy, &limits);
        let resp = {
            let started = Instant::now();
            let snap = proxy.snapshot.load_full();
            // The HCM at this connection's place in the current snapshot: a config change (an
            // AuthorizationPolicy, a route) applies to the next request of a kept-alive connection.
            let current = handles.current_hcm(&snap, hcm);
            let hcm = current.as_ref().unwrap_or(hcm);
            let inbound = conn.direction == Direction::Inbound;
            let reporter = if inbound {
                Reporter::Destination
            } else {
                Reporter::Source
            };
            let grpc = is_grpc(req.headers());

            // Envoy's request decoration.
            if !req.headers().contains_key(&REQUEST_ID) {
                // A v4 UUID from the thread's fast RNG (no syscall per request).
                let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
                let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
                if let Ok(v) = HeaderValue::from_str(id.hyphenated().encode_lower(&mut buf)) {
                    req.headers_mut().insert(REQUEST_ID, v);
                }
            }
            if !req.headers().contains_key(&FORWARDED_PROTO) {
                req.headers_mut().insert(
                    FORWARDED_PROTO,
                    HeaderValue::from_static(if conn.mtls() { "https" } else { "http" }),
                );
            }
            // Envoy's request header mutation: path normalization (before routing, the filters and
            // the access log; the normalized path goes upstream) and `x-forwarded-client-cert`.
            let bad_path = hcm.path.active() && !normalize_path(&mut req, hcm);
            xfcc::apply_element(
                &hcm.xfcc,
                conn,
                || handles.xfcc_element(&hcm.xfcc, conn, proxy),
                req.headers_mut(),
            );
            let authority = req
                .uri()
                .authority()
                .map(|a| a.as_str().to_string())
                .or_else(|| header_str(req.headers(), &HOST))
                .unwrap_or_default();

            // Peers: on the server side the client is known from its peer metadata and certificate.
            let (source, mut destination, security) = if inbound {
                let principal = conn.peer_principal.as_deref();
                let src =
                    peer_from_headers(req.headers(), principal, &handles).unwrap_or_else(|| {
                        handles
                            .principal_peer
                            .get_or_init(|| {
                                Arc::new(stats::peer_from_principal(principal.unwrap_or("")))
                            })
                            .clone()
                    });
                let sec = if conn.mtls() {
                    SecurityPolicy::MutualTls
                } else {
                    SecurityPolicy::None
                };
                (src, proxy.telemetry.me(), sec)
            } else {
                (
                    proxy.telemetry.me(),
                    PeerInfo::unknown_shared(),
                    SecurityPolicy::Unknown,
                )
            };
            // Removed either way; a lookup each (custom names are hashed byte by byte).
            let had_peer_md = req.headers_mut().remove(&PEER_MD).is_some()
                | req.headers_mut().remove(&PEER_MD_ID).is_some();

            let request_bytes = Arc::new(AtomicU64::new(0));
            // The log entry and the span go into the request's record; built in a block, so
            // that they do not also stay in this future.
            let (mut done, keep_headers, attributes) = {
                let mut entry = AccessLogEntry::new(SystemTime::now());
                entry.authority = Some(authority);
                // This hop's span, its context carried on in the request's headers.
                let span = hcm
                    .tracing
                    .as_ref()
                    .and_then(|t| crate::spans::start(t, conn.direction, req.headers_mut()));
                // The headers, for the access logs' operators and CEL, and the metric
                // overrides' tag values; the request's attributes for those and a sampled
                // span's tags.
                let keep_headers = !hcm.access_log.is_empty()
                    || hcm.stats.as_ref().is_some_and(|s| s.needs_attributes());
                let attributes = keep_headers || span.is_some();
                if attributes {
                    // Only what the access log needs beyond routing and metrics.
                    entry.method = Some(req.method().as_str().to_string());
                    entry.path = Some(
                        req.uri()
                            .path_and_query()
                            .map(|p| p.as_str())
                            .unwrap_or("/")
                            .to_string(),
                    );
                    entry.protocol = Some(protocol(req.version()));
                    entry.user_agent = header_str(req.headers(), &http::header::USER_AGENT);
                    entry.request_id = header_str(req.headers(), &REQUEST_ID);
                    entry.x_forwarded_for =
                        header_str(req.headers(), &HeaderName::from_static("x-forwarded-for"));
                    entry.downstream_local_address = Some(conn.original_dst);
                    entry.downstream_remote_address = Some(conn.remote);
                    entry.requested_server_name = conn.sni.as_deref().map(str::to_owned);
                    entry.downstream_peer_uri_san =
                        conn.peer_principal.as_deref().map(str::to_owned);
                }

                // Boxed now, not when the response takes it: this future stays small, and the
                // response's completion is this allocation without another copy.
                let mut done = Box::new(Done {
                    handles,
                    proxy: proxy.clone(),
                    hcm: hcm.clone(),
                    entry,
                    started,
                    request_bytes: request_bytes.clone(),
                    parties: Parties {
                        reporter,
                        source,
                        destination: PeerInfo::unknown_shared(),
                        service: ServiceInfo::unknown_shared(),
                        security,
                        grpc,
                        code: 0,
                        grpc_status: None,
                    },
                    req_headers: http::HeaderMap::new(),
                    resp_headers: http::HeaderMap::new(),
                    lease: None,
                    span,
                });
                if keep_headers {
                    done.req_headers = req.headers().clone();
                }
                (done, keep_headers, attributes)
            };

            let result = if bad_path {
                Err(local(
                    StatusCode::BAD_REQUEST,
                    "-",
                    "path_normalization_failed",
                    "Bad Request",
                ))
            } else if let Some(details) = limits.headers_refused(req.version(), req.headers()) {
                hcm.limits
                    .counters
                    .protocol_error
                    .fetch_add(1, Ordering::Relaxed);
                Err(local(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "-",
                    details,
                    "Request Header Fields Too Large",
                ))
            } else {
                let progress = request_bytes.clone();
                let mut idle = limits
                    .stream_idle_timeout
                    .map(|t| (t, done.handles.take_idle_timer()));
                let result = {
                    // Made in place (pinned where it is made, not moved into the select).
                    let forward = std::pin::pin!({
                        let (parts, body) = req.into_parts();
                        router::route_and_forward(
                            parts,
                            body,
                            conn,
                            hcm,
                            proxy,
                            &snap,
                            &mut done,
                            request_bytes,
                        )
                    });
                    match &mut idle {
                        Some((timeout, timer)) => tokio::select! {
                            biased;
                            r = forward => r,
                            _ = limits::stream_idle(*timeout, &progress, timer.as_mut()) => {
                                hcm.limits.counters.idle_timeout.fetch_add(1, Ordering::Relaxed);
                                Err(local(StatusCode::REQUEST_TIMEOUT, "SI", "stream_idle_timeout", "stream timeout"))
                            }
                        },
                        None => forward.await,
                    }
                };
                if let Some((_, timer)) = idle {
                    done.handles.return_idle_timer(timer);
                }
                result
            };

            match result {
                Ok((mut resp, lease, deco)) => {
                    deco.apply(resp.headers_mut());
                    if inbound {
                        if had_peer_md {
                            resp.headers_mut()
                                .insert(PEER_MD, proxy.telemetry.peer_header.clone());
                            resp.headers_mut()
                                .insert(PEER_MD_ID, proxy.telemetry.peer_id_header.clone());
                        }
                    } else {
                        if let Some(p) = peer_from_headers(resp.headers(), None, &done.handles) {
                            destination = p;
                        }
                        resp.headers_mut().remove(&PEER_MD);
                        resp.headers_mut().remove(&PEER_MD_ID);
                    }
                    let service_ms =
                        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    if !inbound {
                        resp.headers_mut()
                            .insert(UPSTREAM_SERVICE_TIME, HeaderValue::from(service_ms));
                    }
                    let upstream_peer = lease.as_ref().and_then(|l| l.peer.as_ref());
                    if let Some(p) = upstream_peer
                        && destination.principal.as_str() == "unknown"
                    {
                        destination = done.handles.proved(destination, p);
                    }
                    if attributes {
                        done.entry.upstream_peer_uri_san = upstream_peer.map(|p| p.to_string());
                    }
                    done.parties.destination = destination;
                    done.entry.response_code = resp.status().as_u16();
                    done.entry.response_code_details = Some("via_upstream".into());
                    done.entry.upstream_service_time = Some(service_ms);
                    done.parties.grpc_status = resp
                        .headers()
                        .get(GRPC_STATUS)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|s| s.parse().ok());
                    if keep_headers {
                        done.resp_headers = resp.headers().clone();
                    }
                    done.lease = lease;
                    let (parts, body) = resp.into_parts();
                    Response::from_parts(parts, ResponseBody::upstream(body, Some(done)))
                }
                Err(local) => {
                    done.parties.destination = destination;
                    done.add_flag(local.flags);
                    done.entry.response_code_details = Some(local.details.clone());
                    let mut resp = if done.parties.grpc {
                        // gRPC clients get Envoy's trailers-only form: HTTP 200 and the status in
                        // grpc-status (from the abort, else mapped from the HTTP status).
                        let code = local
                            .grpc_status
                            .unwrap_or_else(|| grpc_status_for(local.status));
                        done.parties.grpc_status = Some(code);
                        let mut resp = Response::new(ResponseBody::local(Bytes::new(), None));
                        let h = resp.headers_mut();
                        h.insert(
                            http::header::CONTENT_TYPE,
                            HeaderValue::from_static("application/grpc"),
                        );
                        h.insert("grpc-status", HeaderValue::from(code));
                        let message = if local.body.is_empty() {
                            &*local.details
                        } else {
                            local.body.as_str()
                        };
                        if let Ok(v) = HeaderValue::from_str(message) {
                            h.insert("grpc-message", v);
                        }
                        resp
                    } else {
                        let mut resp =
                            Response::new(ResponseBody::local(Bytes::from(local.body), None));
                        *resp.status_mut() = local.status;
                        resp.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            HeaderValue::from_static("text/plain"),
                        );
                        resp
                    };
                    done.entry.response_code = resp.status().as_u16();
                    for (name, value) in local.headers {
                        resp.headers_mut().insert(name, value);
                    }
                    if inbound && had_peer_md {
                        resp.headers_mut()
                            .insert(PEER_MD, proxy.telemetry.peer_header.clone());
                        resp.headers_mut()
                            .insert(PEER_MD_ID, proxy.telemetry.peer_id_header.clone());
                    }
                    resp.body_mut().set_completion(done);
                    resp
                }
            }
        };
        stream.answered();
        Ok(resp)
    }
}

/// Applies the HCM's path normalization to the request; false when the path is refused.
fn normalize_path<B>(req: &mut Request<B>, hcm: &Hcm) -> bool {
    let Some(pq) = req.uri().path_and_query() else {
        return true;
    };
    match path::normalize(pq.as_str(), &hcm.path) {
        Ok(None) => true,
        Ok(Some(new)) => {
            let mut parts = req.uri().clone().into_parts();
            match http::uri::PathAndQuery::try_from(new) {
                Ok(p) => {
                    parts.path_and_query = Some(p);
                    match http::Uri::from_parts(parts) {
                        Ok(u) => {
                            *req.uri_mut() = u;
                            true
                        }
                        Err(_) => false,
                    }
                }
                Err(_) => false,
            }
        }
        Err(path::Invalid) => false,
    }
}

/// This proxy's URI SAN, which `x-forwarded-client-cert` carries (`By=`).
fn own_uri(proxy: &Proxy) -> Option<String> {
    proxy
        .identity
        .borrow()
        .as_ref()
        .map(|i| i.svid.id.to_string())
}

/// Envoy's HTTP status → gRPC status mapping for local replies to gRPC requests.
fn grpc_status_for(status: StatusCode) -> u32 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502 | 503 | 504 => 14,
        _ => 2,
    }
}

fn local(
    status: StatusCode,
    flags: &'static str,
    details: &'static str,
    body: impl Into<String>,
) -> Local {
    Local {
        status,
        flags,
        details: details.into(),
        body: body.into(),
        headers: Vec::new(),
        grpc_status: None,
    }
}

/// The service host from Istio's SNI `outbound_.<port>_.<subset>_.<host>`.
pub(crate) fn sni_host(sni: Option<&str>) -> Option<&str> {
    let rest = sni?.strip_prefix("outbound_.")?;
    let mut it = rest.splitn(3, "_.");
    it.next()?;
    it.next()?;
    it.next()
}

fn strip_hop_by_hop(h: &mut http::HeaderMap) {
    const HOP_BY_HOP: [HeaderName; 5] = [
        http::header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        http::header::TRANSFER_ENCODING,
        http::header::UPGRADE,
    ];
    // One look over the few headers a request has, instead of five lookups in the map;
    // requests rarely carry any of them.
    if h.keys().any(|k| HOP_BY_HOP.contains(k)) {
        for name in &HOP_BY_HOP {
            h.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn returned_size<A, B, C, D, E, F, G, R>(_f: fn(A, B, C, D, E, F, G) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn every_requests_future_stays_small() {
        // Each request's future is written whole into its box when hyper calls the service,
        // and its parts are moved into place as they start: kilobytes more here are
        // kilobytes more copied per request. (The handler's alone was 6.3 KB before the
        // router, the attempts and the pool kept their state in blocks and took no argument
        // twice.)
        let size = returned_size(handle);
        assert!(size <= 4096, "a request's future is {size} bytes");
    }

    #[test]
    fn requests_of_the_same_parties_share_handles_and_others_get_their_own() {
        let metrics = weft_telemetry::Metrics::new();
        let cache = HandleCache::default();
        let me = Arc::new(PeerInfo::unknown());
        let parties = |source: &Arc<PeerInfo>, code| Parties {
            reporter: Reporter::Source,
            source: source.clone(),
            destination: PeerInfo::unknown_shared(),
            service: ServiceInfo::unknown_shared(),
            security: SecurityPolicy::Unknown,
            grpc: false,
            code,
            grpc_status: None,
        };
        let record = |p, flags| {
            cache
                .handle(&metrics, p, flags, None)
                .record(std::time::Duration::from_millis(1), 0, 0)
        };
        record(parties(&me, 200), "");
        record(parties(&me, 200), "-");
        // Equal by value, not by identity (a new snapshot's peer): the same series.
        record(parties(&Arc::new(PeerInfo::unknown()), 200), "");
        record(parties(&me, 503), "UF");
        record(parties(&me, 503), "URX");
        let text = metrics.encode_prometheus();
        let count = |code: &str, flags: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("istio_requests_total{")
                        && l.contains(&format!("response_code=\"{code}\""))
                        && l.contains(&format!("response_flags=\"{flags}\""))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(count("200", "-").as_deref(), Some("3"), "{text}");
        assert_eq!(count("503", "UF").as_deref(), Some("1"), "{text}");
        assert_eq!(count("503", "URX").as_deref(), Some("1"), "{text}");
    }

    #[test]
    fn sni_host_parses_istio_sni() {
        assert_eq!(
            sni_host(Some("outbound_.8080_._.server.default.svc.cluster.local")),
            Some("server.default.svc.cluster.local")
        );
        assert_eq!(
            sni_host(Some(
                "outbound_.9080_.v1_.reviews.default.svc.cluster.local"
            )),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(sni_host(Some("example.com")), None);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = http::HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("connection").is_none());
        assert!(h.get("x-keep").is_some());
    }
}
