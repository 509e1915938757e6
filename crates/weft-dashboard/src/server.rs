//! The page's HTTP server and the scraper behind it. Every second the scraper reads the
//! registry from the control plane (`/debug/registryz`) and each endpoint's sidecar metrics
//! (`:15020/stats/prometheus`), and keeps the graph JSON ready; the server answers `/` (the
//! page), `/api/graph`, `/api/service?name=N&namespace=NS` and `/api/config`.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::Request;
use hyper::body::Incoming;
use serde::Deserialize;
use weft_up::status::{get, parse_prometheus};

use crate::error::DashboardError;
use crate::graph::{Counters, History, Scrape};

const PAGE: &str = include_str!("page.html");

/// Where the dashboard listens and where the control plane's debug port is.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    /// HOST:PORT of the control plane's monitoring/debug port (15014).
    pub control: String,
}

struct State {
    control: String,
    graph: Mutex<Bytes>,
}

#[derive(Deserialize)]
struct Registry {
    services: Vec<RegistryService>,
}

#[derive(Deserialize)]
struct RegistryService {
    name: String,
    namespace: String,
    #[serde(default)]
    endpoints: Vec<RegistryEndpoint>,
}

#[derive(Deserialize)]
struct RegistryEndpoint {
    address: std::net::IpAddr,
    /// `istio` for a workload with a sidecar (the only ones with metrics to read).
    #[serde(default)]
    tls_mode: String,
}

/// One round: the registry, then every sidecar's metrics, all at once.
async fn scrape(control: &str) -> Option<(BTreeSet<(String, String)>, Scrape)> {
    let (200, body) = get(&format!("http://{control}/debug/registryz")).await? else {
        return None;
    };
    let registry: Registry = serde_json::from_str(&body).ok()?;
    let services = registry
        .services
        .iter()
        .map(|s| (s.name.clone(), s.namespace.clone()))
        .collect();
    let sidecars: BTreeSet<std::net::IpAddr> = registry
        .services
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.tls_mode == "istio")
        .map(|e| e.address)
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for ip in sidecars {
        tasks.spawn(async move {
            let url = format!("http://{}/stats/prometheus", SocketAddr::new(ip, 15020));
            match get(&url).await {
                Some((200, text)) => Some((
                    ip.to_string(),
                    Counters::from_samples(&parse_prometheus(&text)),
                )),
                _ => None,
            }
        });
    }
    let mut scrape = Scrape::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(Some((ip, counters))) = done {
            scrape.insert(ip, counters);
        }
    }
    Some((services, scrape))
}

async fn scraper(state: Arc<State>) {
    let mut history = History::default();
    // Said once when it changes, not every second.
    let mut trouble: Option<String> = None;
    loop {
        let started = Instant::now();
        let now = match scrape(&state.control).await {
            Some((services, scrape)) => {
                let read = scrape.len();
                history.push(Instant::now(), scrape);
                let graph = history.graph(&services);
                if let Ok(json) = serde_json::to_vec(&graph)
                    && let Ok(mut g) = state.graph.lock()
                {
                    *g = Bytes::from(json);
                }
                (read == 0 && !services.is_empty()).then(|| {
                    "no sidecar answers on port 15020: run the dashboard where the pods' addresses are reachable (weft up does)".to_string()
                })
            }
            None => Some(format!(
                "the control plane's registry at http://{}/debug/registryz is not reachable; the graph keeps its last figures",
                state.control
            )),
        };
        if now != trouble {
            match &now {
                Some(t) => tracing::warn!("dashboard: {t}"),
                None => tracing::info!("dashboard: reading the sidecars' metrics"),
            }
            trouble = now;
        }
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(started.elapsed())).await;
    }
}

fn reply(status: StatusCode, kind: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(kind) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

fn json(v: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec(v) {
        Ok(b) => reply(StatusCode::OK, "application/json", b),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

/// The control plane's config in force and registry, and its trust domain.
async fn world(control: &str) -> Result<(weft_ctl::describe::World, String), String> {
    let fetch = |path: &'static str| async move {
        match get(&format!("http://{control}{path}")).await {
            Some((200, body)) => Ok(body),
            Some((s, body)) => Err(format!("the control plane's {path} answered {s}: {body}")),
            None => Err(format!(
                "the control plane at {control} does not answer {path}"
            )),
        }
    };
    let configz = fetch("/debug/configz").await?;
    let registryz = fetch("/debug/registryz").await?;
    let trust_domain = serde_json::from_str::<serde_json::Value>(&configz)
        .ok()
        .and_then(|v| v["mesh"]["trustDomain"].as_str().map(String::from))
        .unwrap_or_else(|| "cluster.local".into());
    let world = weft_ctl::describe::World::from_json(configz.as_bytes(), registryz.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok((world, trust_domain))
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let resp = match req.uri().path() {
        "/" => reply(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        "/api/graph" => {
            let body = state.graph.lock().map(|g| g.clone()).unwrap_or_default();
            reply(StatusCode::OK, "application/json", body)
        }
        "/api/service" => {
            let q = query(&req);
            let (Some(name), ns) = (q.get("name"), q.get("namespace")) else {
                return Ok(reply(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "usage: /api/service?name=NAME[&namespace=NS]\n",
                ));
            };
            let ns = ns.map_or("default", String::as_str);
            match world(&state.control).await {
                Err(e) => reply(StatusCode::BAD_GATEWAY, "text/plain", e),
                Ok((w, td)) => match crate::details::service(&w, &td, name, ns) {
                    Some(d) => json(&d),
                    None => reply(
                        StatusCode::NOT_FOUND,
                        "text/plain",
                        format!("no service {name} in namespace {ns}\n"),
                    ),
                },
            }
        }
        "/api/config" => {
            let errors = match get(&format!("http://{}/debug/config_errors", state.control)).await {
                Some((200, body)) => serde_json::from_str::<Vec<String>>(&body).unwrap_or_default(),
                _ => vec![format!(
                    "the control plane at {} does not answer /debug/config_errors",
                    state.control
                )],
            };
            match world(&state.control).await {
                Err(e) => reply(StatusCode::BAD_GATEWAY, "text/plain", e),
                Ok((w, _)) => json(&serde_json::json!({
                    "resources": crate::details::resources(&w),
                    "errors": errors,
                })),
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    Ok(resp)
}

/// Serves the dashboard until the task is dropped.
pub async fn run(opts: Options) -> Result<(), DashboardError> {
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| DashboardError::Listen {
            addr: opts.listen,
            source,
        })?;
    let state = Arc::new(State {
        control: opts.control,
        graph: Mutex::new(Bytes::from_static(
            b"{\"nodes\":[],\"edges\":[],\"window_secs\":0,\"scraped_at_ms\":0}",
        )),
    });
    tokio::spawn(scraper(state.clone()));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors, most likely: do not spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
        });
    }
}
