//! The proxy's HTTP ports: admin on 127.0.0.1:15000 (`POST /why`, `/config_dump`, `?format=proto` for the
//! xDS resources as Envoy's `ConfigDump`, `/clusters`, `/certs`, `/stats`,
//! `/ready`, `/logging`, `/quitquitquit`), the agent port 15020 (`/stats/prometheus`,
//! `/healthz/ready`, `/quitquitquit`), health 15021 (`/healthz/ready`) and Prometheus 15090.

use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;

use crate::Proxy;
use crate::error::ProxyError;
use crate::snapshot::{ClusterKind, NetworkFilter, RouteRef};

/// Which endpoints a port serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Admin,
    Agent,
    Health,
    Prometheus,
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

fn json_reply(value: &serde_json::Value) -> Response<Full<Bytes>> {
    match serde_json::to_string_pretty(value) {
        Ok(s) => reply(StatusCode::OK, "application/json", s),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

fn ready(proxy: &Proxy) -> Response<Full<Bytes>> {
    if proxy.ready() {
        return reply(StatusCode::OK, "text/plain", "");
    }
    let config = proxy
        .config_ready
        .load(std::sync::atomic::Ordering::Acquire);
    let cert = proxy.identity.borrow().is_some();
    let no_cert = || {
        let mut why = format!("no workload certificate yet from {}", proxy.identity_source);
        if let Some(error) = proxy.identity_store.last_error() {
            why.push_str(": ");
            why.push_str(&error);
        }
        why
    };
    let dns = proxy.dns_warm.load(std::sync::atomic::Ordering::Acquire);
    let why = match (config, cert) {
        (false, false) => format!("no config from the control plane yet, and {}", no_cert()),
        (false, true) => "no config from the control plane yet".to_string(),
        (true, false) => no_cert(),
        (true, true) if !dns => "the DNS clusters' names are not resolved yet".to_string(),
        (true, true) => "ready".to_string(),
    };
    reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        format!("not ready: {why}\n"),
    )
}

/// `POST /why` with a JSON [`crate::why::Probe`]: what the proxy would do with it.
async fn why(proxy: &Proxy, req: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let body = match http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("cannot read the probe: {e}\n"),
            );
        }
    };
    match serde_json::from_slice::<crate::why::Probe>(&body) {
        Ok(p) => match serde_json::to_value(crate::why::explain(&proxy.snapshot.load(), &p)) {
            Ok(v) => json_reply(&v),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        },
        Err(e) => reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            format!("the probe is not a weft why probe: {e}\n"),
        ),
    }
}

/// Envoy's `/certs`: the workload certificate chain and the trusted roots now in use.
fn certs(proxy: &Proxy) -> serde_json::Value {
    let describe =
        |der: &rustls_pki_types::CertificateDer<'_>, path: &str| match weft_identity::describe(der)
        {
            Ok(c) => json!({
                "path": path,
                "serial_number": c.serial_number,
                "subject_alt_names": c.uris.iter().map(|u| json!({"uri": u}))
                    .chain(c.dns_names.iter().map(|d| json!({"dns": d}))).collect::<Vec<_>>(),
                "days_until_expiration": c.days_until_expiration.to_string(),
                "valid_from": c.valid_from,
                "expiration_time": c.expiration_time,
            }),
            Err(e) => json!({"path": path, "error": e.to_string()}),
        };
    let identity = proxy.identity.borrow().clone();
    let certificates = identity
        .map(|id| {
            let source = proxy.identity_source.as_str();
            let mut ca: Vec<_> = Vec::new();
            if id.bundle.domains.is_empty() {
                ca.extend(id.bundle.roots.iter().map(|r| describe(r, source)));
            } else {
                for (td, roots) in &id.bundle.domains {
                    ca.extend(
                        roots
                            .iter()
                            .map(|r| describe(r, &format!("{source} (trust domain {td})"))),
                    );
                }
            }
            vec![json!({
                "ca_cert": ca,
                "cert_chain": id.svid.chain.iter().map(|c| describe(c, source)).collect::<Vec<_>>(),
            })]
        })
        .unwrap_or_default();
    json!({ "certificates": certificates })
}

fn config_dump(proxy: &Proxy) -> serde_json::Value {
    let snap = proxy.snapshot.load();
    let listeners: Vec<_> = snap
        .listeners
        .values()
        .map(|l| {
            json!({
                "name": l.name,
                "address": l.addr.to_string(),
                "bind_to_port": l.bind,
                "direction": format!("{:?}", l.direction),
                "filter_chains": l.chains.iter().map(|c| json!({
                    "name": c.name,
                    "destination_port": c.matcher.destination_port,
                    "prefix_ranges": c.matcher.prefix_ranges.iter().map(|(ip, len)| format!("{ip}/{len}")).collect::<Vec<_>>(),
                    "server_names": c.matcher.server_names,
                    "transport_protocol": c.matcher.transport,
                    "application_protocols": c.matcher.alpns,
                    "tls": c.tls.is_some(),
                    "filter": match &c.filter {
                        NetworkFilter::Http(h) => json!({"http_connection_manager": {
                            "stat_prefix": h.stat_prefix,
                            "route_config": match &h.routes { RouteRef::Rds(n) => n.clone(), RouteRef::Inline(t) => t.name.clone() },
                            "access_logs": h.access_log.iter().map(|a| a.describe()).collect::<Vec<_>>(),
                            "http_filters": h.filters.iter().map(crate::snapshot::filter::HttpFilter::name).collect::<Vec<_>>(),
                        }}),
                        NetworkFilter::Tcp(t) => json!({"tcp_proxy": {
                            "cluster": &*t.cluster,
                            "weighted_clusters": t.weighted.iter().map(|(c, w)| json!({"name": &**c, "weight": w})).collect::<Vec<_>>(),
                            "stat_prefix": t.stat_prefix,
                        }}),
                    },
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut routes: Vec<_> = snap
        .routes
        .values()
        .map(|t| {
            json!({
                "name": t.name,
                "virtual_hosts": t.vhosts.iter().map(|v| json!({
                    "name": v.name,
                    "domains": v.domains,
                    "routes": v.routes.iter().map(|r| json!({
                        "name": &*r.name,
                        "action": format!("{:?}", r.action),
                        "timeout_ms": r.timeout.as_millis() as u64,
                        "retry": r.retry.as_ref().map(|p| format!("{p:?}")),
                        "hash_policy": r.hash.iter().map(|h| format!("{h:?}")).collect::<Vec<_>>(),
                        "fault": r.per_filter.fault.as_ref().map(|f| format!("{f:?}")),
                        "mirrors": r.mirrors.iter().map(|(c, _)| c.to_string()).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    routes.sort_by_key(|r| r["name"].as_str().unwrap_or_default().to_string());
    let mut clusters: Vec<_> = snap
        .clusters
        .values()
        .map(|c| {
            json!({
                "name": &*c.name,
                "type": match c.kind { ClusterKind::Endpoints => "EDS", ClusterKind::OriginalDst => "ORIGINAL_DST" },
                "connect_timeout_ms": c.connect_timeout.as_millis() as u64,
                "upstream_protocol": c.protocol.as_str(),
                "idle_timeout_s": c.idle_timeout.map(|d| d.as_secs_f64()),
                "tcp_keepalive": c.keepalive.map(|k| json!({"time_s": k.time.map(|d| d.as_secs()), "interval_s": k.interval.map(|d| d.as_secs()), "probes": k.probes})),
                "lb_policy": match &c.lb {
                    crate::snapshot::balance::Lb::RoundRobin => "ROUND_ROBIN",
                    crate::snapshot::balance::Lb::LeastRequest => "LEAST_REQUEST",
                    crate::snapshot::balance::Lb::Random => "RANDOM",
                    crate::snapshot::balance::Lb::RingHash(_) => "RING_HASH",
                },
                "circuit_breakers": format!("{:?}", c.limits),
                "outlier_detection": c.outlier.as_ref().map(|o| format!("{o:?}")),
                "endpoints": c.endpoints.iter().map(|e| json!({
                    "address": e.addr.to_string(),
                    "weight": e.weight,
                    "tls": e.tls.as_ref().map(|t| json!({"sni": t.sni, "subject_alt_names": t.sans})),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    clusters.sort_by_key(|c| c["name"].as_str().unwrap_or_default().to_string());
    let identity = proxy.identity.borrow().as_ref().map(|i| {
        json!({
            "spiffe_id": i.svid.id.to_string(),
            "not_after": humantime_secs(i.svid.not_after),
        })
    });
    json!({
        "versions": &snap.raw.versions,
        "xds": &*proxy.xds_state.borrow(),
        "identity": identity,
        "listeners": listeners,
        "routes": routes,
        "clusters": clusters,
    })
}

/// The xDS resources the proxy holds, as received (what `/config_dump?format=proto` serves as
/// Envoy's `ConfigDump`, for `weft proxy-config` and `weft proxy-status POD`).
fn xds_resources(proxy: &Proxy) -> weft_xds::dump::Resources {
    let snap = proxy.snapshot.load();
    let raw = &snap.raw;
    let versions = [
        weft_xds::types::LISTENER,
        weft_xds::types::ROUTE,
        weft_xds::types::CLUSTER,
        weft_xds::types::ENDPOINT,
    ]
    .into_iter()
    .filter_map(|t| {
        let v = raw.versions.get(weft_xds::types::short_name(t))?;
        Some((t.to_string(), v.clone()))
    })
    .collect();
    weft_xds::dump::Resources {
        node: proxy.options.node(),
        listeners: raw.listeners.clone(),
        routes: raw.routes.clone(),
        clusters: raw.clusters.clone(),
        endpoints: raw.endpoints.clone(),
        versions,
    }
}

fn humantime_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Envoy's cluster stats, as (name, value) per cluster.
fn cluster_stats(proxy: &Proxy) -> Vec<(String, Vec<(&'static str, u64)>)> {
    use std::sync::atomic::Ordering::Relaxed;
    let snap = proxy.snapshot.load();
    let mut names: Vec<_> = snap.clusters.keys().cloned().collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let st = &snap.clusters[&n].state;
            let s = &st.stats;
            let values = vec![
                ("upstream_cx_total", s.upstream_cx_total.load(Relaxed)),
                ("upstream_cx_overflow", s.upstream_cx_overflow.load(Relaxed)),
                ("upstream_cx_active", st.connections.load(Relaxed) as u64),
                ("upstream_rq_total", s.upstream_rq_total.load(Relaxed)),
                ("upstream_rq_active", st.active.load(Relaxed) as u64),
                (
                    "upstream_rq_pending_active",
                    st.pending.load(Relaxed) as u64,
                ),
                (
                    "upstream_rq_pending_total",
                    s.upstream_rq_pending_total.load(Relaxed),
                ),
                (
                    "upstream_rq_pending_overflow",
                    s.upstream_rq_pending_overflow.load(Relaxed),
                ),
                ("upstream_rq_retry", s.upstream_rq_retry.load(Relaxed)),
                (
                    "upstream_rq_retry_overflow",
                    s.upstream_rq_retry_overflow.load(Relaxed),
                ),
                (
                    "outlier_detection.ejections_total",
                    s.outlier_detection_ejections_total.load(Relaxed),
                ),
                (
                    "outlier_detection.ejections_active",
                    snap.clusters[&n]
                        .hosts
                        .iter()
                        .filter(|h| h.ejected())
                        .count() as u64,
                ),
            ];
            (n, values)
        })
        .collect()
}

/// Envoy's `/stats` text (`cluster.<name>.<stat>: <value>`), then Istio's metrics.
fn stats_text(proxy: &Proxy) -> String {
    let mut out = String::new();
    for (n, values) in cluster_stats(proxy) {
        for (stat, v) in values {
            let _ = writeln!(out, "cluster.{n}.{stat}: {v}");
        }
    }
    crate::snapshot::counter::stats_text(&mut out);
    out.push_str(&proxy.metrics_text());
    out
}

/// Istio's metrics, then Envoy's cluster stats as Prometheus (`envoy_cluster_<stat>`).
fn prometheus_text(proxy: &Proxy) -> String {
    let mut out = proxy.metrics_text();
    crate::snapshot::counter::prometheus_text(&mut out);
    let stats = cluster_stats(proxy);
    if let Some((_, first)) = stats.first() {
        for (i, (stat, _)) in first.iter().enumerate() {
            let kind = if stat.ends_with("_active") {
                "gauge"
            } else {
                "counter"
            };
            let name = stat.replace('.', "_");
            let _ = writeln!(out, "# TYPE envoy_cluster_{name} {kind}");
            for (n, values) in &stats {
                let _ = writeln!(
                    out,
                    "envoy_cluster_{name}{{cluster_name=\"{n}\"}} {}",
                    values[i].1
                );
            }
        }
    }
    out
}

/// Envoy's `/clusters` text: `<cluster>::<host>::<stat>::<value>`.
fn clusters_text(proxy: &Proxy) -> String {
    let snap = proxy.snapshot.load();
    let mut names: Vec<_> = snap.clusters.keys().cloned().collect();
    names.sort();
    let mut out = String::new();
    for n in names {
        let c = &snap.clusters[&n];
        let l = c.limits;
        for (name, v) in [
            ("max_connections", l.max_connections),
            ("max_pending_requests", l.max_pending),
            ("max_requests", l.max_requests),
            ("max_retries", l.max_retries),
        ] {
            let _ = writeln!(out, "{n}::default_priority::{name}::{v}");
        }
        for e in &c.endpoints {
            let flags = if c.outlier.is_some() && e.host.ejected() {
                "/failed_outlier_check"
            } else {
                "healthy"
            };
            let _ = writeln!(out, "{n}::{}::health_flags::{flags}", e.addr);
            let _ = writeln!(out, "{n}::{}::weight::{}", e.addr, e.weight);
        }
    }
    out
}

async fn handle(
    port: Port,
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let resp = match (port, path) {
        (Port::Health | Port::Agent | Port::Admin, "/healthz/ready") | (Port::Admin, "/ready") => {
            ready(&proxy)
        }
        (Port::Agent | Port::Prometheus | Port::Admin, "/stats/prometheus") => {
            let mut out = prometheus_text(&proxy).into_bytes();
            // The status port adds the app's metrics (Istio's metrics merge).
            if let (Port::Agent, Some(app)) = (port, &proxy.options.app_metrics) {
                append_app_metrics(&mut out, app, req.headers()).await;
            }
            reply(StatusCode::OK, "text/plain; version=0.0.4", out)
        }
        (Port::Admin, "/stats") => reply(StatusCode::OK, "text/plain", stats_text(&proxy)),
        (Port::Admin, "/config_dump")
            if req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').any(|kv| kv == "format=proto")) =>
        {
            use prost::Message;
            // Copying and encoding every resource is not data-path work: a blocking thread.
            let p = proxy.clone();
            match tokio::task::spawn_blocking(move || {
                xds_resources(&p).to_config_dump().encode_to_vec()
            })
            .await
            {
                Ok(body) => reply(StatusCode::OK, "application/x-protobuf", body),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    e.to_string(),
                ),
            }
        }
        (Port::Admin, "/config_dump") => json_reply(&config_dump(&proxy)),
        (Port::Admin, "/why") if req.method() == Method::POST => why(&proxy, req).await,
        (Port::Admin, "/certs") => json_reply(&certs(&proxy)),
        (Port::Admin, "/clusters") => reply(StatusCode::OK, "text/plain", clusters_text(&proxy)),
        (Port::Admin, "/logging") => {
            // Envoy's `/logging`: GET lists the active loggers, POST `?level=L` sets them
            // (a tracing filter: `debug`, `weft_proxy=debug,info`).
            let level = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("level=")))
                .map(str::to_owned);
            match (crate::admin::log_level_hook(), level) {
                (None, _) => reply(
                    StatusCode::NOT_IMPLEMENTED,
                    "text/plain",
                    "log level is fixed in this process\n",
                ),
                (Some(_), Some(_)) if req.method() != Method::POST => reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain",
                    "changing the log level needs POST /logging?level=L\n",
                ),
                (Some(hook), level) => {
                    // A change touches only the loggers it names (a bare level is the
                    // default's): the rest of the filter in force stays, as Envoy's
                    // `?name=level` leaves the other loggers alone.
                    let result = match level {
                        None => hook(None),
                        Some(update) => hook(None)
                            .and_then(|current| hook(Some(&merge_filter(&current, &update)))),
                    };
                    match result {
                        Ok(filter) => reply(StatusCode::OK, "text/plain", active_loggers(&filter)),
                        Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
                    }
                }
            }
        }
        (Port::Agent, p) if p.starts_with("/app-health/") => app_health(&proxy, p).await,
        (Port::Admin | Port::Agent, "/quitquitquit") if req.method() == Method::POST => {
            proxy.draining.send_replace(true);
            reply(StatusCode::OK, "text/plain", "OK\n")
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    Ok(resp)
}

/// Appends the app's metrics, scraped now (app_metrics.rs), to the proxy's; leaves them out,
/// with a warning, when the app cannot be scraped.
async fn append_app_metrics(
    out: &mut Vec<u8>,
    app: &crate::app_metrics::AppMetrics,
    headers: &http::HeaderMap,
) {
    match crate::app_metrics::scrape(app, crate::app_metrics::timeout(headers)).await {
        Ok(metrics) => {
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.extend_from_slice(&metrics);
        }
        Err(why) => tracing::warn!(error = %why, "serving the proxy's metrics without the app's"),
    }
}

/// `/app-health/<container>/<probe>`: the app's own probe, run now (probe.rs).
async fn app_health(proxy: &Proxy, path: &str) -> Response<Full<Bytes>> {
    let Some(probe) = proxy.options.app_probers.get(path) else {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no app probe {path} (ISTIO_KUBE_APP_PROBERS)\n"),
        );
    };
    let ip = proxy
        .options
        .pod_ip
        .parse()
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let (code, why) = crate::probe::run(probe, ip).await;
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !why.is_empty() {
        tracing::debug!(probe = path, reason = %why, "app probe failed");
    }
    reply(status, "text/plain", why)
}

/// Sets the log filter when given one; returns the filter in force.
type LevelHook = Box<dyn Fn(Option<&str>) -> Result<String, String> + Send + Sync>;

/// Envoy's `active loggers:` listing of a tracing filter (`info,weft_proxy=debug`): the
/// default level, then one line per target.
fn active_loggers(filter: &str) -> String {
    let mut out = String::from("active loggers:\n");
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (target, level) = directive.rsplit_once('=').unwrap_or(("default", directive));
        let _ = writeln!(out, "  {target}: {level}");
    }
    out
}
/// Overlays `update`'s directives (`debug`, `weft_proxy=trace`) on the filter in force: a bare
/// level replaces the default, a `target=level` replaces that target's, and every other
/// directive is kept in its place.
fn merge_filter(current: &str, update: &str) -> String {
    let key = |d: &str| d.rsplit_once('=').map(|(t, _)| t.to_owned());
    let mut out: Vec<String> = current
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect();
    for d in update.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match out.iter_mut().find(|o| key(o) == key(d)) {
            Some(slot) => *slot = d.to_owned(),
            None => out.push(d.to_owned()),
        }
    }
    out.join(",")
}

static LEVEL_HOOK: std::sync::OnceLock<LevelHook> = std::sync::OnceLock::new();

/// Lets the binary plug in a log-level changer for `/logging?level=`.
pub fn set_log_level_hook(hook: LevelHook) {
    let _ = LEVEL_HOOK.set(hook);
}

fn log_level_hook() -> Option<&'static LevelHook> {
    LEVEL_HOOK.get()
}

async fn serve(addr: SocketAddr, port: Port, proxy: Arc<Proxy>) -> Result<(), ProxyError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Listen { addr, source })?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(port, proxy.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    Ok(())
}

/// Binds and serves all four ports.
pub async fn serve_all(proxy: Arc<Proxy>) -> Result<(), ProxyError> {
    let o = &proxy.options;
    serve(
        SocketAddr::from(([127, 0, 0, 1], o.admin_port)),
        Port::Admin,
        proxy.clone(),
    )
    .await?;
    serve(
        SocketAddr::from(([0, 0, 0, 0], o.status_port)),
        Port::Agent,
        proxy.clone(),
    )
    .await?;
    serve(
        SocketAddr::from(([0, 0, 0, 0], o.health_port)),
        Port::Health,
        proxy.clone(),
    )
    .await?;
    serve(
        SocketAddr::from(([0, 0, 0, 0], o.prometheus_port)),
        Port::Prometheus,
        proxy.clone(),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_change_keeps_the_loggers_it_does_not_name() {
        assert_eq!(
            merge_filter("info,weft_proxy::xds=debug", "weft_proxy=trace"),
            "info,weft_proxy::xds=debug,weft_proxy=trace"
        );
        assert_eq!(
            merge_filter("info,weft_proxy::xds=debug", "warn"),
            "warn,weft_proxy::xds=debug"
        );
        assert_eq!(
            merge_filter("info,weft_proxy::xds=debug", "weft_proxy::xds=off"),
            "info,weft_proxy::xds=off"
        );
        assert_eq!(
            active_loggers("warn,weft_proxy::xds=off"),
            "active loggers:\n  default: warn\n  weft_proxy::xds: off\n"
        );
    }
}
