//! The per-request path after the HCM's bookkeeping: route selection, the HTTP filter chain
//! (fault injection, CORS), then the router: redirect, rewrite, header operations, mirrors,
//! and the upstream exchange with the route's timeout and retry policy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use http::header::{HOST, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use super::authz::FilterCtx;
use super::{Done, Local, PEER_MD, PEER_MD_ID, local, strip_hop_by_hop};
use crate::Proxy;
use crate::body::{Counted, Replay, RequestBody, Tee};
use crate::conn::ConnInfo;
use crate::snapshot::filter::{AbortWith, Cors, HeaderOps, HttpFilter, RetryPolicy};
use crate::snapshot::{
    Action, Cluster, Direction, Hcm, Redirect, RequestInfo, Route, RouteRef, Snapshot,
};
use crate::stats;
use crate::upstream::{Lease, Sender, UpstreamError, reset_reason};

/// Envoy's per-request buffer limit: a body up to this size is held so that a retry or a
/// mirror can send it again; a larger one streams and is not retried.
const BUFFER_LIMIT: usize = 1 << 20;

/// What the response gets on its way back (route and destination header operations, CORS).
#[derive(Default)]
pub(super) struct Decorations {
    pub headers: Vec<HeaderOps>,
    pub cors_origin: Option<(HeaderValue, Arc<Cors>)>,
    /// A consistent-hash cookie the proxy made for this client.
    pub set_cookie: Option<HeaderValue>,
}

impl Decorations {
    pub fn apply(&self, h: &mut http::HeaderMap) {
        for ops in &self.headers {
            ops.apply(h);
        }
        if let Some(c) = &self.set_cookie {
            h.append(http::header::SET_COOKIE, c.clone());
        }
        if let Some((origin, c)) = &self.cors_origin {
            h.insert("access-control-allow-origin", origin.clone());
            if c.allow_credentials {
                h.insert(
                    "access-control-allow-credentials",
                    HeaderValue::from_static("true"),
                );
            }
            if let Some(v) = &c.expose_headers {
                h.insert("access-control-expose-headers", v.clone());
            }
        }
    }
}

pub(super) type Forwarded = (Response<Incoming>, Option<Lease>, Decorations);

fn scheme(conn: &ConnInfo, req: &Parts) -> &'static str {
    match req.uri.scheme_str() {
        Some("https") => "https",
        Some(_) => "http",
        None if conn.mtls() => "https",
        None => "http",
    }
}

/// Answers a CORS preflight, or notes the origin to allow on the response.
fn cors(c: &Arc<Cors>, req: &Parts, deco: &mut Decorations) -> Option<Local> {
    let origin = req.headers.get(http::header::ORIGIN)?;
    if !origin.to_str().is_ok_and(|o| c.allows(o)) {
        return None;
    }
    let preflight = req.method == http::Method::OPTIONS
        && req
            .headers
            .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
    if !preflight {
        deco.cors_origin = Some((origin.clone(), c.clone()));
        return None;
    }
    let mut reply = local(StatusCode::OK, "-", "cors_response", "");
    reply
        .headers
        .push((http::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()));
    for (name, v) in [
        (http::header::ACCESS_CONTROL_ALLOW_METHODS, &c.allow_methods),
        (http::header::ACCESS_CONTROL_ALLOW_HEADERS, &c.allow_headers),
        (http::header::ACCESS_CONTROL_MAX_AGE, &c.max_age),
    ] {
        if let Some(v) = v {
            reply.headers.push((name, v.clone()));
        }
    }
    if c.allow_credentials {
        reply.headers.push((
            http::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        ));
    }
    Some(reply)
}

fn redirect(r: &Redirect, req: &Parts, authority: &str, scheme: &str) -> Local {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h, Some(p)),
        _ => (authority, None),
    };
    let scheme = r.scheme.as_deref().unwrap_or(scheme);
    let host = r.host.as_deref().unwrap_or(host);
    let port = match r.port {
        Some(p) => Some(p.to_string()),
        // A scheme change drops the old port, as Envoy does.
        None if r.scheme.is_some() => None,
        None => port.map(str::to_owned),
    };
    let path = r.path.clone().unwrap_or_else(|| {
        req.uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into())
    });
    let location = match port {
        Some(p) => format!("{scheme}://{host}:{p}{path}"),
        None => format!("{scheme}://{host}{path}"),
    };
    let mut reply = local(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::MOVED_PERMANENTLY),
        "-",
        "redirect",
        "",
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        reply.headers.push((http::header::LOCATION, v));
    }
    reply
}

/// The value of cookie `name` in the request's Cookie headers.
fn cookie<'a>(h: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// The request's hash for a consistent-hash cluster, from the route's first hash policy that
/// yields one. A missing cookie with a TTL is made here and set on the response, as Envoy does.
fn request_hash(
    route: &Route,
    parts: &http::request::Parts,
    conn: &ConnInfo,
    deco: &mut Decorations,
) -> Option<u64> {
    use crate::snapshot::HashOn;
    use crate::snapshot::balance::hash64;
    for policy in &route.hash {
        let h = match policy {
            HashOn::Header(name) => parts.headers.get(name).map(|v| hash64(v.as_bytes())),
            HashOn::SourceIp => Some(hash64(conn.remote.ip().to_string().as_bytes())),
            HashOn::Query(name) => parts.uri.query().and_then(|q| {
                q.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == name).then(|| hash64(v.as_bytes()))
                })
            }),
            HashOn::Cookie { name, path, ttl } => match cookie(&parts.headers, name) {
                Some(v) => Some(hash64(v.as_bytes())),
                None => ttl.map(|ttl| {
                    let value = format!("{:016x}", rand::random::<u64>());
                    let mut c = format!("{name}=\"{value}\"; Max-Age={}", ttl.as_secs());
                    if !path.is_empty() {
                        c.push_str(&format!("; Path={path}"));
                    }
                    c.push_str("; HttpOnly");
                    deco.set_cookie = HeaderValue::from_str(&c).ok();
                    hash64(format!("\"{value}\"").as_bytes())
                }),
            },
        };
        if h.is_some() {
            return h;
        }
    }
    None
}

/// Runs the HTTP filters before the router, in chain order. A filter may change the request
/// (`parts`), record what later filters need in `cx.sec`, or answer locally. `route` is None
/// when no route matched: the filters still run (an RBAC denial comes before a 404, as in
/// Envoy), without per-route config.
async fn filters(
    hcm: &Hcm,
    route: Option<&Route>,
    parts: &mut Parts,
    cx: &mut FilterCtx<'_>,
    done: &mut Done,
    deco: &mut Decorations,
) -> Result<(), Local> {
    for f in &hcm.filters {
        match f {
            HttpFilter::Fault(default) => {
                let per_route = route.and_then(|r| r.per_filter.fault.as_ref());
                let Some(fault) = per_route.or(default.as_ref()) else {
                    continue;
                };
                if let Some((delay, share)) = fault.delay
                    && share.hit()
                {
                    done.add_flag("DI");
                    tokio::time::sleep(delay).await;
                }
                if let Some((with, share)) = fault.abort
                    && share.hit()
                {
                    let mut reply = match with {
                        AbortWith::Http(s) => local(
                            StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                            "FI",
                            "fault_filter_abort",
                            "fault filter abort",
                        ),
                        AbortWith::Grpc(_) => local(StatusCode::OK, "FI", "fault_filter_abort", ""),
                    };
                    if let AbortWith::Grpc(code) = with {
                        reply.grpc_status = Some(code);
                    }
                    return Err(reply);
                }
            }
            HttpFilter::Cors => {
                if let Some(c) = route.and_then(|r| r.per_filter.cors.as_ref())
                    && let Some(reply) = cors(c, parts, deco)
                {
                    return Err(reply);
                }
            }
            HttpFilter::Rbac(r) => cx.rbac(r, parts)?,
            HttpFilter::JwtAuthn(j) => cx.jwt_authn(j, parts)?,
            HttpFilter::IstioAuthn(a) => super::jwt::istio_authn(a, &mut cx.sec),
            // Boxed: inline, the check's future (a gRPC or HTTP call, ~17 KB) would make every
            // request's future that large and copied as it is moved, authorizer or not.
            HttpFilter::ExtAuthz(e) => Box::pin(cx.ext_authz(e, parts, deco)).await?,
            // Applied where the request's metrics are recorded.
            HttpFilter::Stats(_) => {}
            HttpFilter::Router => break,
        }
    }
    Ok(())
}

/// Routes the request, runs the filters and forwards it. An `async` block for the reason
/// [`Exchange::once`] gives; route selection and the filters run in a block of their own, so
/// that their state is not also kept while the upstream answers.
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_async_fn)]
pub(super) fn route_and_forward<'a>(
    mut parts: Parts,
    body: Incoming,
    conn: &'a Arc<ConnInfo>,
    hcm: &'a Arc<Hcm>,
    proxy: &'a Arc<Proxy>,
    snap: &'a Snapshot,
    done: &'a mut Done,
    request_bytes: Arc<AtomicU64>,
) -> impl Future<Output = Result<Forwarded, Local>> + 'a {
    async move {
        let table = match &hcm.routes {
            RouteRef::Inline(t) => Some(t.clone()),
            RouteRef::Rds(name) => snap.routes.get(name).cloned(),
        };
        let authority = done.entry.authority.clone().unwrap_or_default();
        let scheme = scheme(conn, &parts);
        let mut deco = Decorations::default();
        let (route, target, cluster) = {
            let info = RequestInfo {
                method: parts.method.as_str(),
                authority: &authority,
                scheme,
                path: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/"),
                headers: &parts.headers,
            };
            let route = table
                .as_ref()
                .and_then(|t| t.vhost(&authority))
                .and_then(|vh| vh.routes.iter().find(|r| r.matches(&info)));
            let mut cx = FilterCtx {
                proxy,
                snap,
                conn,
                authority: &authority,
                scheme,
                sec: Default::default(),
            };
            // Without a route the filters still run (an RBAC denial comes before a 404, as
            // in Envoy), without per-route config.
            let found = route.map(|route| {
                done.entry.route_name = Some(route.name.clone());
                // The destination is resolved before the filters run, as Envoy does: a
                // request a filter answers (a fault abort) is still logged and counted against
                // its upstream cluster and destination service.
                let target = route.target();
                let cluster = target
                    .as_ref()
                    .and_then(|(name, _)| snap.clusters.get(&**name).cloned());
                if let Some((name, _)) = &target {
                    done.entry.upstream_cluster = Some(name.clone());
                }
                // Istio's stats for traffic to the passthrough or blackhole: the cluster's name
                // as the service name and the Host as the service (its
                // `getDestinationService`).
                let fallthrough = route
                    .fallthrough
                    .or_else(|| cluster.as_ref().and_then(|c| c.fallthrough));
                if let Some(name) = fallthrough {
                    done.parties.service =
                        Arc::new(stats::passthrough_service(name, Some(&authority)));
                } else if let Some(cluster) = &cluster {
                    let host = authority
                        .rsplit_once(':')
                        .map(|(h, _)| h)
                        .unwrap_or(&authority);
                    // Without the cluster's service, the server side reports the service the
                    // client addressed (its SNI, the same for the whole connection), else the
                    // Host.
                    let meta = cluster.service.as_ref();
                    done.parties.service = if meta.is_none() && conn.direction == Direction::Inbound
                    {
                        let sni = done
                            .handles
                            .sni_service
                            .get_or_init(|| stats::sni_service(conn.sni.as_deref()));
                        match sni {
                            Some(s) => s.clone(),
                            None => stats::service_info(None, host),
                        }
                    } else {
                        stats::service_info(meta, host)
                    };
                }
                (route, target, cluster)
            });
            filters(
                hcm,
                found.as_ref().map(|f| f.0),
                &mut parts,
                &mut cx,
                done,
                &mut deco,
            )
            .await?;
            let Some(found) = found else {
                return Err(local(StatusCode::NOT_FOUND, "NR", "route_not_found", ""));
            };
            found
        };
        match &route.action {
            Action::Direct { status, body } => {
                return Err(local(
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY),
                    "-",
                    "direct_response",
                    body.clone(),
                ));
            }
            Action::Redirect(r) => return Err(redirect(r, &parts, &authority, scheme)),
            Action::Cluster(_) | Action::Weighted(_) => {}
        }
        let Some((_, weighted)) = target else {
            return Err(local(StatusCode::NOT_FOUND, "NR", "route_not_found", ""));
        };
        let Some(cluster) = cluster else {
            return Err(local(
                StatusCode::SERVICE_UNAVAILABLE,
                "NC",
                "cluster_not_found",
                "",
            ));
        };

        // The upstream request: rewrites and header operations. The path stays the request's
        // own (shared bytes, not copied or parsed again) unless rewritten.
        let mut path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let rewritten = match (&route.prefix_rewrite, &route.path) {
            (Some(rewrite), crate::snapshot::PathMatch::Prefix(prefix))
                if path.as_str().len() >= prefix.len()
                    && path.as_str().is_char_boundary(prefix.len()) =>
            {
                Some(format!("{rewrite}{}", &path.as_str()[prefix.len()..]))
            }
            (Some(rewrite), crate::snapshot::PathMatch::Exact(_)) => Some(match path.query() {
                Some(q) => format!("{rewrite}?{q}"),
                None => rewrite.clone(),
            }),
            _ => None,
        };
        if let Some(new) = rewritten {
            path = http::uri::PathAndQuery::try_from(new).map_err(|_| {
                local(
                    StatusCode::BAD_REQUEST,
                    "-",
                    "invalid_rewritten_path",
                    "Bad Request",
                )
            })?;
        }
        let authority = route.host_rewrite.clone().unwrap_or(authority);
        if route.host_rewrite.is_some() {
            parts.headers.remove(HOST);
        }
        route.request_headers.apply(&mut parts.headers);
        if !route.response_headers.is_empty() {
            deco.headers.push(route.response_headers.clone());
        }
        if let Some(w) = weighted {
            w.request_headers.apply(&mut parts.headers);
            if !w.response_headers.is_empty() {
                deco.headers.push(w.response_headers.clone());
            }
        }
        strip_hop_by_hop(&mut parts.headers);

        // Copy the body as it streams when it may be sent again (retries, mirrors); a request
        // without a body (most GETs) needs no copy for a retry.
        let bodiless = http_body::Body::is_end_stream(&body);
        let tee = (!route.mirrors.is_empty() || (route.retry.is_some() && !bodiless))
            .then(|| Tee::new(BUFFER_LIMIT));
        let body = match &tee {
            Some(t) => RequestBody::teed(body, t.clone()),
            None => RequestBody::Stream { body },
        };
        let replay = match (&tee, bodiless) {
            (Some(t), _) => Replay::Tee(t),
            (None, true) => Replay::Empty,
            (None, false) => Replay::Never,
        };
        for (mirror, share) in &route.mirrors {
            if share.hit()
                && let Some(t) = &tee
            {
                mirror_request(
                    proxy,
                    snap,
                    conn,
                    mirror,
                    &parts,
                    &authority,
                    &path,
                    t.clone(),
                );
            }
        }

        let hash = request_hash(route, &parts, conn, &mut deco);
        let exchange = Exchange {
            proxy,
            conn,
            cluster: &cluster,
            h2: cluster.protocol.h2_for(parts.version),
            authority: &authority,
            path: &path,
            hash,
        };
        let attempts = std::pin::pin!(exchange.attempts(
            route.retry.as_deref(),
            parts,
            body,
            replay,
            request_bytes,
            done,
        ));
        let result = if route.timeout.is_zero() {
            attempts.await
        } else {
            match tokio::time::timeout(route.timeout, attempts).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(local(
                        StatusCode::GATEWAY_TIMEOUT,
                        "UT",
                        "response_timeout",
                        "upstream request timeout",
                    ));
                }
            }
        };
        result.map(|(resp, lease)| (resp, Some(lease), deco))
    }
}

/// Sends a copy of the request to a mirror cluster, fire and forget: its answer is dropped
/// and nothing waits for it. The Host gets Istio's `-shadow` suffix.
#[allow(clippy::too_many_arguments)]
fn mirror_request(
    proxy: &Arc<Proxy>,
    snap: &Snapshot,
    conn: &Arc<ConnInfo>,
    cluster: &str,
    parts: &http::request::Parts,
    authority: &str,
    path: &http::uri::PathAndQuery,
    tee: Arc<Tee>,
) {
    let Some(cluster) = snap.clusters.get(cluster).cloned() else {
        return;
    };
    let shadow = match authority.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => format!("{h}-shadow:{p}"),
        _ => format!("{authority}-shadow"),
    };
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.headers_mut() = parts.headers.clone();
    req.headers_mut().remove(HOST);
    *req.version_mut() = parts.version;
    let (parts, ()) = req.into_parts();
    let (proxy, conn, path) = (proxy.clone(), conn.clone(), path.clone());
    tokio::spawn(async move {
        // The copy goes once the original's body is complete (never larger than the buffer).
        let Some(body) = tee.finished().await else {
            return;
        };
        let exchange = Exchange {
            proxy: &proxy,
            conn: &conn,
            cluster: &cluster,
            h2: cluster.protocol.h2_for(parts.version),
            authority: &shadow,
            path: &path,
            hash: None,
        };
        let Some((addr, tls)) = cluster.target(conn.original_dst) else {
            return;
        };
        let bytes = Arc::new(AtomicU64::new(0));
        match exchange.once(addr, tls, parts, body, bytes).await {
            Ok((resp, lease)) => {
                // Read the answer to its end so that the connection can be reused.
                use http_body_util::BodyExt;
                if resp.into_body().collect().await.is_ok() {
                    lease.release();
                }
            }
            Err(e) => {
                tracing::debug!(cluster = %cluster.name, error = ?e.0, "mirror request failed")
            }
        }
    });
}

/// The host of an authority: without the port, and without the brackets of an IPv6 literal.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// One request's exchange with a cluster.
pub(super) struct Exchange<'a> {
    pub proxy: &'a Arc<Proxy>,
    pub conn: &'a Arc<ConnInfo>,
    pub cluster: &'a Arc<Cluster>,
    pub h2: bool,
    pub authority: &'a str,
    pub path: &'a http::uri::PathAndQuery,
    /// The request's hash for a ring-hash cluster.
    pub hash: Option<u64>,
}

/// Why an attempt failed, with the local reply it would give.
pub(super) struct Failed(AttemptError, Local);

impl Failed {
    /// What went wrong, for a log line.
    pub fn reason(&self) -> String {
        match &self.0 {
            AttemptError::Connect(e) => reset_reason(e).to_string(),
            AttemptError::Reset(e) => format!("reset: {e}"),
            AttemptError::PerTryTimeout => "per-try timeout".into(),
        }
    }
}

#[derive(Debug)]
enum AttemptError {
    Connect(UpstreamError),
    Reset(hyper::Error),
    PerTryTimeout,
}

// `Failed` carries the local reply it would give (a `Cow` of details since filters build them).
#[allow(clippy::result_large_err)]
impl Exchange<'_> {
    /// The upstream request for this exchange: its head made for the upstream, its body
    /// counted into `bytes`.
    fn request(
        &self,
        mut parts: http::request::Parts,
        body: RequestBody,
        bytes: Arc<AtomicU64>,
        tls_istio: bool,
    ) -> Request<Counted<RequestBody>> {
        if tls_istio && self.conn.direction == Direction::Outbound {
            parts
                .headers
                .insert(PEER_MD, self.proxy.telemetry.peer_header.clone());
            parts
                .headers
                .insert(PEER_MD_ID, self.proxy.telemetry.peer_id_header.clone());
        }
        if self.h2 {
            parts.version = Version::HTTP_2;
            let uri = format!("http://{}{}", self.authority, self.path);
            parts.uri = uri.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
            parts.headers.remove(HOST);
        } else {
            parts.version = Version::HTTP_11;
            parts.uri = http::Uri::from(self.path.clone());
            if !parts.headers.contains_key(HOST)
                && let Ok(v) = HeaderValue::from_str(self.authority)
            {
                parts.headers.insert(HOST, v);
            }
        }
        Request::from_parts(parts, Counted::new(body, bytes))
    }

    /// One attempt against `addr`.
    ///
    /// A plain function returning an `async` block rather than an `async fn`: an `async fn`
    /// keeps its arguments twice in its future (as captured and as rebound locals), and this
    /// future is part of every request's, which is copied as it is made and boxed.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn once(
        &self,
        addr: SocketAddr,
        tls: Option<Arc<crate::snapshot::UpstreamTls>>,
        parts: http::request::Parts,
        body: RequestBody,
        bytes: Arc<AtomicU64>,
    ) -> impl Future<Output = Result<(Response<Incoming>, Lease), Failed>> + '_ {
        async move {
            // Envoy's auto SNI: TLS origination for the upstream request's host, port stripped.
            let sni = (self.cluster.auto_sni && tls.as_ref().is_some_and(|t| !t.istio))
                .then(|| Arc::from(host_of(self.authority)));
            // A pooled connection without waiting; waiting for one or opening one is boxed,
            // so that this future (every request's) does not hold that state.
            let pools = &self.proxy.pools;
            let leased = match pools.start_lease(self.cluster, addr, tls.as_ref(), self.h2, sni) {
                Ok(Ok(lease)) => Ok(lease),
                Ok(Err(waiting)) => {
                    Box::pin(pools.finish_lease(self.cluster, addr, tls.as_ref(), waiting)).await
                }
                Err(e) => Err(e),
            };
            let mut lease = leased.map_err(|e| {
                let reply = if matches!(e, UpstreamError::Overflow(_)) {
                    local(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "UO",
                        "upstream_reset_before_response_started{overflow}",
                        reset_reason(&e),
                    )
                } else {
                    local(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "UF",
                        "upstream_reset_before_response_started{connection_failure}",
                        reset_reason(&e),
                    )
                };
                Failed(AttemptError::Connect(e), reply)
            })?;
            // The upstream request is made once the connection is ready, so that it is not
            // also kept in this future while waiting.
            let istio = tls.as_ref().is_some_and(|t| t.istio);
            let sent = match &mut lease.sender {
                Sender::H1(s) => match s.ready().await {
                    Ok(()) => {
                        s.send_request(self.request(parts, body, bytes, istio))
                            .await
                    }
                    Err(e) => Err(e),
                },
                Sender::H2(s) => match s.ready().await {
                    Ok(()) => {
                        s.send_request(self.request(parts, body, bytes, istio))
                            .await
                    }
                    Err(e) => Err(e),
                },
            };
            match sent {
                Ok(r) => Ok((r, lease)),
                Err(e) => Err(Failed(
                    AttemptError::Reset(e),
                    local(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "UC",
                        "upstream_reset_before_response_started{connection_termination}",
                        "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                    ),
                )),
            }
        }
    }

    /// An endpoint for attempt `n`, avoiding those tried before when the policy says so.
    fn pick(
        &self,
        tried: &[SocketAddr],
        other_hosts: bool,
    ) -> Option<(SocketAddr, Option<Arc<crate::snapshot::UpstreamTls>>)> {
        let mut pick = self
            .cluster
            .target_hashed(self.conn.original_dst, self.hash)?;
        if other_hosts {
            // Envoy's previous_hosts predicate with host_selection_retry_max_attempts 5.
            for _ in 0..5 {
                if !tried.contains(&pick.0) {
                    break;
                }
                pick = self
                    .cluster
                    .target_hashed(self.conn.original_dst, self.hash)?;
            }
        }
        Some(pick)
    }

    /// Tells outlier detection how an attempt at `addr` went.
    fn outlier(&self, addr: SocketAddr, result: &Result<(Response<Incoming>, Lease), Failed>) {
        let Some(o) = &self.cluster.outlier else {
            return;
        };
        let status = match result {
            Ok((resp, _)) => Some(resp.status().as_u16()),
            // The proxy's own limits say nothing about the host.
            Err(Failed(AttemptError::Connect(UpstreamError::Overflow(_)), _)) => return,
            Err(Failed(AttemptError::PerTryTimeout, _)) => Some(504),
            Err(_) => None,
        };
        if let Some(h) = self.cluster.host(addr)
            && o.record(h, &self.cluster.hosts, status)
        {
            tracing::info!(cluster = %self.cluster.name, %addr, "outlier detection ejected a host");
            self.cluster
                .state
                .stats
                .outlier_detection_ejections_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The attempts of one request under its retry policy. (An `async` block for the reason
    /// [`Exchange::once`] gives.)
    #[allow(clippy::manual_async_fn)]
    fn attempts<'a>(
        &'a self,
        retry: Option<&'a RetryPolicy>,
        parts: http::request::Parts,
        body: RequestBody,
        replay: Replay<'a>,
        request_bytes: Arc<AtomicU64>,
        done: &'a mut Done,
    ) -> impl Future<Output = Result<(Response<Incoming>, Lease), Local>> + 'a {
        async move {
            // Inline for the usual one or two attempts: no allocation per request.
            let mut tried: smallvec::SmallVec<[SocketAddr; 2]> = smallvec::SmallVec::new();
            let mut body = Some(body);
            // The request head, copied for each attempt that may be followed by another and
            // moved into the last one (every attempt of a route without retries).
            let mut head = Some(parts);
            let mut n = 0u32;
            // The retry in flight, if any (the cluster's max_retries gauge).
            let mut in_retry: Option<RetryGauge> = None;
            loop {
                // One attempt, and what follows from it: the response or the reply to give,
                // else the body for the next attempt. In a block, so that the attempt's
                // result is not also kept while the next one backs off.
                let spare = {
                    let Some((addr, tls)) = self.pick(&tried, retry.is_some_and(|r| r.other_hosts))
                    else {
                        return Err(local(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "UH",
                            "no_healthy_upstream",
                            "no healthy upstream",
                        ));
                    };
                    tried.push(addr);
                    done.entry.upstream_host = Some(addr);
                    // The first attempt streams the body (counted); later ones send its copy.
                    let Some(this_body) = body.take() else {
                        return Err(retry_limit());
                    };
                    let bytes = if n == 0 {
                        request_bytes.clone()
                    } else {
                        Arc::new(AtomicU64::new(0))
                    };
                    let may_retry = retry.is_some_and(|r| n < r.num_retries) && replay.possible();
                    // Never None here: only an attempt followed by another keeps a copy, and
                    // only such an attempt loops.
                    let this_head = match (may_retry, head.as_ref()) {
                        (true, Some(h)) => clone_head(h),
                        _ => match head.take() {
                            Some(h) => h,
                            None => return Err(retry_limit()),
                        },
                    };
                    let attempt = std::pin::pin!(self.once(addr, tls, this_head, this_body, bytes));
                    let result = match retry.and_then(|r| r.per_try_timeout) {
                        Some(t) => tokio::time::timeout(t, attempt).await.unwrap_or_else(|_| {
                            Err(Failed(
                                AttemptError::PerTryTimeout,
                                local(
                                    StatusCode::GATEWAY_TIMEOUT,
                                    "UT",
                                    "upstream_per_try_timeout",
                                    "upstream request timeout",
                                ),
                            ))
                        }),
                        None => attempt.await,
                    };
                    in_retry.take();
                    self.outlier(addr, &result);
                    // A retry needs the whole body again: only one captured complete can go.
                    let spare = if may_retry { replay.body() } else { None };
                    let left = spare.is_some();
                    let again = match (&result, retry) {
                        (_, None) => false,
                        (Ok((resp, _)), Some(r)) => {
                            let grpc = resp
                                .headers()
                                .get(super::GRPC_STATUS)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|s| s.parse().ok());
                            let retriable = r.retry_response(resp.status().as_u16(), grpc);
                            if retriable && !left {
                                done.add_flag("URX");
                            }
                            retriable
                        }
                        (Err(Failed(e, _)), Some(r)) => match e {
                            AttemptError::Connect(UpstreamError::Overflow(_)) => false,
                            AttemptError::Connect(_) => r.on.connect_failure,
                            AttemptError::Reset(err) => {
                                r.on.reset || (r.on.refused_stream && refused(err))
                            }
                            AttemptError::PerTryTimeout => r.on.five_xx || r.on.gateway_error,
                        },
                    };
                    if let Err(Failed(AttemptError::Connect(e), _)) = &result {
                        tracing::debug!(cluster = %self.cluster.name, %addr, error = %e, "upstream connect failed");
                        done.entry.upstream_transport_failure_reason =
                            e.transport_failure().map(Into::into);
                    }
                    if !(again && left) {
                        return match result {
                            Ok((resp, lease)) => {
                                done.entry.upstream_local_address = lease.local;
                                Ok((resp, lease))
                            }
                            Err(Failed(_, mut reply)) => {
                                if again && n > 0 {
                                    reply.flags = "URX";
                                }
                                Err(reply)
                            }
                        };
                    }
                    // The cluster's max_retries circuit breaker bounds retries in flight.
                    if !crate::snapshot::ClusterState::try_take(
                        &self.cluster.state.retries,
                        self.cluster.limits.max_retries,
                    ) {
                        self.cluster
                            .state
                            .stats
                            .upstream_rq_retry_overflow
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return match result {
                            Ok((resp, lease)) => Ok((resp, lease)),
                            Err(Failed(_, reply)) => Err(reply),
                        };
                    }
                    self.cluster
                        .state
                        .stats
                        .upstream_rq_retry
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    spare
                };
                n += 1;
                body = spare;
                in_retry = Some(RetryGauge(&self.cluster.state));
                if let Some(r) = retry {
                    tokio::time::sleep(r.backoff(n)).await;
                }
            }
        }
    }
}

/// The reply when no attempt is left to make.
fn retry_limit() -> Local {
    local(
        StatusCode::SERVICE_UNAVAILABLE,
        "URX",
        "upstream_retry_limit_exceeded",
        "",
    )
}

/// One retry in flight on a cluster; released when the retried attempt ends (or the request
/// is dropped).
struct RetryGauge<'a>(&'a crate::snapshot::ClusterState);

impl Drop for RetryGauge<'_> {
    fn drop(&mut self) {
        self.0
            .retries
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

fn refused(e: &hyper::Error) -> bool {
    use std::error::Error;
    let mut src = e.source();
    while let Some(s) = src {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        src = s.source();
    }
    false
}

fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_auto_sni_host_drops_the_port() {
        assert_eq!(super::host_of("a.example.com:8443"), "a.example.com");
        assert_eq!(super::host_of("a.example.com"), "a.example.com");
        assert_eq!(super::host_of("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(super::host_of("10.0.0.1:80"), "10.0.0.1");
    }
}
