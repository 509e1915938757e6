//! The monitoring and debug port (Istio: 15014): `/metrics`, `/debug/syncz` (each proxy and the
//! version it ACKed per type), `/debug/configz` (the config in force), `/debug/config_errors`
//! (why the latest edit was rejected), `/debug/config_skipped` (documents read and not applied,
//! e.g. an EnvoyFilter), `/debug/config_distribution?resource=KIND/NAMESPACE/NAME` (from which
//! push a resource is in force and which proxies applied it; what `weft wait` polls),
//! `/debug/config_dump?proxyID=ID` (what it would send that proxy now; Envoy's `ConfigDump` with
//! `&format=proto`, for `weft proxy-status POD`), `/debug/registryz`, `/ready`.

pub mod distribution;
#[cfg(test)]
mod live_tests;
pub mod wait;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::error::ControlError;
use crate::server::ControlState;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

fn json<T: serde::Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_string_pretty(value) {
        Ok(s) => reply(StatusCode::OK, "application/json", s),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

/// The problems of the config in force and the JWKS fetches failing right now (those come and
/// go between config changes, so they are read live).
fn config_errors(state: &ControlState) -> Vec<String> {
    let mut out = (*state.problems.load_full()).clone();
    out.extend(state.push.load().jwks.problems());
    out
}

fn metrics(state: &ControlState) -> String {
    let mut registry = Registry::default();
    let stats = state.ads.stats();
    let gauge = |registry: &mut Registry, name: &str, help: &str, v: i64| {
        let g: Gauge = Gauge::default();
        g.set(v);
        registry.register(name, help, g);
    };
    gauge(
        &mut registry,
        "pilot_xds",
        "Number of endpoints connected to this pilot using XDS.",
        stats.connections as i64,
    );
    gauge(
        &mut registry,
        "pilot_xds_pushes",
        "Pilot build and send errors for lds, rds, cds and eds.",
        stats.pushes_total.values().sum::<u64>() as i64,
    );
    gauge(
        &mut registry,
        "pilot_total_xds_rejects",
        "Total number of XDS responses from pilot rejected by proxy.",
        stats.nacks_total as i64,
    );
    gauge(
        &mut registry,
        "weft_config_pushes",
        "Config changes pushed since start.",
        state.pushes.load(std::sync::atomic::Ordering::Relaxed) as i64,
    );
    gauge(
        &mut registry,
        "weft_config_errors",
        "Problems in the latest config load.",
        config_errors(state).len() as i64,
    );
    let jwks = state.push.load().jwks.clone();
    gauge(
        &mut registry,
        "pilot_jwks_resolver_network_fetch_success_total",
        "Total number of successfully network fetch by pilot jwks resolver",
        jwks.fetch_success
            .load(std::sync::atomic::Ordering::Relaxed) as i64,
    );
    gauge(
        &mut registry,
        "pilot_jwks_resolver_network_fetch_fail_total",
        "Total number of failed network fetch by pilot jwks resolver",
        jwks.fetch_fail.load(std::sync::atomic::Ordering::Relaxed) as i64,
    );
    gauge(
        &mut registry,
        "weft_config_skipped_warnings",
        "Documents of kinds Istio applies and Weft does not (EnvoyFilter, Gateway API, …), skipped",
        state
            .applied
            .load()
            .notes
            .iter()
            .filter(|n| n.is_warning())
            .count() as i64,
    );
    gauge(
        &mut registry,
        "pilot_services",
        "Total services known to pilot.",
        state.push.load().registry.services.len() as i64,
    );
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        return String::new();
    }
    out.lines()
        .filter(|l| !l.starts_with("# EOF"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// `/debug/config_distribution?resource=KIND/NAMESPACE/NAME`.
async fn config_distribution(state: &ControlState, query: Option<&str>) -> Response<Full<Bytes>> {
    let resource = query
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("resource="));
    let Some((kind, namespace, name)) = resource.and_then(distribution::parse_resource) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "usage: /debug/config_distribution?resource=KIND/NAMESPACE/NAME (e.g. VirtualService/default/reviews)\n",
        );
    };
    // The files as they are now, to tell whether the control plane has read the latest edit.
    let dirs = state.config_dirs.clone();
    let mesh = state.mesh_file.clone();
    let disk = match tokio::task::spawn_blocking(move || {
        crate::store::fingerprint(&dirs, mesh.as_deref())
    })
    .await
    {
        Ok(f) => f,
        Err(e) => {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            );
        }
    };
    json(&distribution::distribution(
        &state.applied.load(),
        disk,
        &kind,
        &namespace,
        &name,
        &state.ads.sync_status(),
        &state.tracker,
    ))
}

/// `/debug/config_dump?proxyID=ID[&format=proto]`: what the control plane would send the
/// connected proxy now: Envoy's `ConfigDump` (protobuf) with `format=proto`, otherwise the
/// version and resource names per type as JSON.
async fn config_dump(state: &Arc<ControlState>, query: Option<&str>) -> Response<Full<Bytes>> {
    let query = query.unwrap_or_default().to_owned();
    let state = state.clone();
    // Generating a proxy's whole config is CPU work: off the runtime that serves xDS.
    match tokio::task::spawn_blocking(move || config_dump_now(&state, &query)).await {
        Ok(resp) => resp,
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

fn config_dump_now(state: &ControlState, query: &str) -> Response<Full<Bytes>> {
    let Some(id) = query.split('&').find_map(|kv| kv.strip_prefix("proxyID=")) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "usage: /debug/config_dump?proxyID=ID[&format=proto] (the ids are in /debug/syncz)\n",
        );
    };
    let generated = match state.ads.would_send(id) {
        None => {
            return reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                format!("no proxy {id} is connected; /debug/syncz lists the connected ones\n"),
            );
        }
        Some(Err(e)) => return reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e),
        Some(Ok(g)) => g,
    };
    if query.split('&').any(|kv| kv == "format=proto") {
        use prost::Message;
        let node = weft_xds::pb::envoy::config::core::v3::Node {
            id: id.to_string(),
            ..Default::default()
        };
        return match weft_xds::dump::Resources::from_generated(node, &generated) {
            Ok(r) => reply(
                StatusCode::OK,
                "application/x-protobuf",
                r.to_config_dump().encode_to_vec(),
            ),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        };
    }
    let summary: std::collections::BTreeMap<_, _> = generated
        .iter()
        .map(|(type_url, (version, resources))| {
            (
                weft_xds::types::short_name(type_url).to_string(),
                serde_json::json!({"version": version, "resources": resources.len()}),
            )
        })
        .collect();
    json(&summary)
}

async fn handle(
    state: Arc<ControlState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let resp = match req.uri().path() {
        "/metrics" | "/stats/prometheus" => {
            reply(StatusCode::OK, "text/plain; version=0.0.4", metrics(&state))
        }
        "/debug/syncz" => json(&state.ads.sync_status()),
        "/debug/configz" => {
            let push = state.push.load();
            json(&serde_json::json!({
                "version": push.version,
                "mesh": &*push.mesh,
                "resources": &*push.resources,
            }))
        }
        "/debug/config_errors" => json(&config_errors(&state)),
        "/debug/config_skipped" => {
            let notes: Vec<String> = state
                .applied
                .load()
                .notes
                .iter()
                .map(ToString::to_string)
                .collect();
            json(&notes)
        }
        "/debug/config_distribution" => config_distribution(&state, req.uri().query()).await,
        "/debug/registryz" => json(&state.push.load().registry),
        "/debug/config_dump" => config_dump(&state, req.uri().query()).await,
        "/ready" => reply(StatusCode::OK, "text/plain", "ready\n"),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "endpoints: /metrics /debug/syncz /debug/configz /debug/config_errors /debug/config_skipped /debug/config_distribution?resource=KIND/NAMESPACE/NAME /debug/config_dump?proxyID=ID /debug/registryz /ready\n",
        ),
    };
    Ok(resp)
}

/// Binds the monitoring port and serves it on a task; the returned future ends if the
/// listener fails.
pub async fn serve(
    addr: SocketAddr,
    state: Arc<ControlState>,
) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ControlError::Listen { addr, source })?;
    tracing::info!(%addr, "serving monitoring and debug endpoints");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    }))
}
