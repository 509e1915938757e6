//! The service graph from the sidecars' standard metrics: an edge per (client canonical
//! service, destination service) with request rate, 5xx share, p99 and mTLS share; a node per
//! service with its inbound figures. Edges count what the client's sidecar reports
//! (`reporter="source"`: a fault it injects, a timeout, a refused connection are the client's
//! experience), and the server's sidecar where the client has none (`source_canonical_service
//! ="unknown"`); mTLS comes from the server side, the only one that knows the peer's certificate.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;
use weft_up::status::{Sample, ServiceRates, ServiceTotals, rates};

/// The rates are taken over this much history (or what there is of it).
pub const WINDOW: Duration = Duration::from_secs(6);

/// The cumulative counters of one scrape of every sidecar.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// (source, destination service) → what the client side reported.
    pub edges: BTreeMap<(String, String), ServiceTotals>,
    /// (source, destination service) → what the server side reported (for the mTLS share).
    pub edges_server: BTreeMap<(String, String), ServiceTotals>,
    /// destination service → what its servers reported.
    pub nodes: BTreeMap<String, ServiceTotals>,
}

impl Counters {
    /// Sums the samples of one scrape.
    pub fn from_samples(samples: &[Sample]) -> Counters {
        let mut c = Counters::default();
        for s in samples {
            let label = |k: &str| s.labels.get(k).map(String::as_str).unwrap_or("unknown");
            let dst = label("destination_service_name");
            if dst == "unknown" {
                continue;
            }
            let src = label("source_canonical_service");
            let key = (src.to_string(), dst.to_string());
            match label("reporter") {
                "source" => c.edges.entry(key).or_default().add(s),
                "destination" => {
                    c.nodes.entry(dst.to_string()).or_default().add(s);
                    c.edges_server.entry(key.clone()).or_default().add(s);
                    // A client without a sidecar reports nothing: the server speaks for it.
                    if src == "unknown" {
                        c.edges.entry(key).or_default().add(s);
                    }
                }
                _ => {}
            }
        }
        c
    }
}

/// Figures of a node or an edge over the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Figures {
    pub rps: f64,
    pub error_pct: f64,
    /// None without traffic.
    pub p99_ms: Option<f64>,
    pub mtls_pct: f64,
}

impl From<ServiceRates> for Figures {
    fn from(r: ServiceRates) -> Self {
        Figures {
            rps: r.rps,
            error_pct: r.error_pct,
            p99_ms: r.p99_ms.filter(|p| p.is_finite()),
            mtls_pct: r.mtls_pct,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Node {
    /// The service name (`reviews`), or the client's canonical service.
    pub id: String,
    /// A service of the registry (clickable), or only a client (`unknown`: no sidecar).
    pub service: bool,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Edge {
    /// `source->target`.
    pub id: String,
    pub source: String,
    pub target: String,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Seconds of history the figures cover.
    pub window_secs: f64,
}

/// Scrapes kept for the window.
#[derive(Debug, Default)]
pub struct History {
    scrapes: VecDeque<(Instant, Counters)>,
}

impl History {
    pub fn push(&mut self, at: Instant, c: Counters) {
        self.scrapes.push_back((at, c));
        // Keep the newest scrape that is at least WINDOW old, and everything after it.
        while self.scrapes.len() > 2
            && self
                .scrapes
                .get(1)
                .is_some_and(|(t, _)| at.duration_since(*t) >= WINDOW)
        {
            self.scrapes.pop_front();
        }
    }

    /// The graph between the oldest and the newest scrape kept; `services` (the registry's)
    /// are nodes even before any traffic.
    pub fn graph(&self, services: &BTreeSet<String>) -> Graph {
        let (Some((t0, before)), Some((t1, after))) = (self.scrapes.front(), self.scrapes.back())
        else {
            return Graph::default();
        };
        let secs = t1.duration_since(*t0).as_secs_f64();
        let zero = ServiceTotals::default();
        let figures = |b: Option<&ServiceTotals>, a: &ServiceTotals| -> Figures {
            rates(b.unwrap_or(&zero), a, secs).into()
        };
        let mut nodes: BTreeMap<String, Node> = services
            .iter()
            .map(|s| {
                let f = match after.nodes.get(s) {
                    Some(a) => figures(before.nodes.get(s), a),
                    None => figures(None, &zero),
                };
                (
                    s.clone(),
                    Node {
                        id: s.clone(),
                        service: true,
                        figures: f,
                    },
                )
            })
            .collect();
        let mut edges = Vec::new();
        for ((src, dst), a) in &after.edges {
            let key = (src.clone(), dst.clone());
            let mut f = figures(before.edges.get(&key), a);
            // Only the server side knows whether the connection was mutual TLS.
            f.mtls_pct = after
                .edges_server
                .get(&key)
                .map(|a| figures(before.edges_server.get(&key), a).mtls_pct)
                .unwrap_or(0.0);
            if a.requests == 0.0 {
                continue;
            }
            for id in [src, dst] {
                nodes.entry(id.clone()).or_insert_with(|| Node {
                    id: id.clone(),
                    service: services.contains(id),
                    figures: figures(None, &zero),
                });
            }
            edges.push(Edge {
                id: format!("{src}->{dst}"),
                source: src.clone(),
                target: dst.clone(),
                figures: f,
            });
        }
        Graph {
            nodes: nodes.into_values().collect(),
            edges,
            window_secs: secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_up::status::parse_prometheus;

    fn scrape(ok: f64, failed: f64, unknown: f64) -> Counters {
        let text = format!(
            r#"istio_requests_total{{reporter="source",source_canonical_service="productpage",destination_service_name="details",response_code="200",connection_security_policy="unknown"}} {ok}
istio_requests_total{{reporter="source",source_canonical_service="productpage",destination_service_name="details",response_code="500",response_flags="FI",connection_security_policy="unknown"}} {failed}
istio_requests_total{{reporter="destination",source_canonical_service="productpage",destination_service_name="details",response_code="200",connection_security_policy="mutual_tls"}} {ok}
istio_request_duration_milliseconds_bucket{{reporter="source",source_canonical_service="productpage",destination_service_name="details",le="5"}} {ok}
istio_request_duration_milliseconds_bucket{{reporter="source",source_canonical_service="productpage",destination_service_name="details",le="+Inf"}} {}
istio_requests_total{{reporter="destination",source_canonical_service="unknown",destination_service_name="productpage",response_code="200",connection_security_policy="none"}} {unknown}
"#,
            ok + failed
        );
        Counters::from_samples(&parse_prometheus(&text))
    }

    #[test]
    fn edges_count_the_clients_view_and_mtls_the_servers() {
        let t0 = Instant::now();
        let mut h = History::default();
        h.push(t0, scrape(100.0, 0.0, 10.0));
        h.push(t0 + Duration::from_secs(2), scrape(110.0, 10.0, 30.0));
        let services: BTreeSet<String> = ["details", "productpage", "ratings"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let g = h.graph(&services);
        assert_eq!(g.window_secs, 2.0);
        let e = g
            .edges
            .iter()
            .find(|e| e.id == "productpage->details")
            .expect("edge");
        // 20 requests in 2 s, half of them aborted by the client's sidecar.
        assert_eq!(e.figures.rps, 10.0);
        assert_eq!(e.figures.error_pct, 50.0);
        // The server saw the 10 that reached it, all over mTLS.
        assert_eq!(e.figures.mtls_pct, 100.0);
        assert_eq!(e.figures.p99_ms, None, "half the requests are above 5 ms");
        let outside = g
            .edges
            .iter()
            .find(|e| e.id == "unknown->productpage")
            .expect("edge from outside the mesh");
        assert_eq!(outside.figures.rps, 10.0);
        let ratings = g.nodes.iter().find(|n| n.id == "ratings").expect("node");
        assert!(ratings.service && ratings.figures.rps == 0.0);
        let unknown = g.nodes.iter().find(|n| n.id == "unknown").expect("node");
        assert!(!unknown.service);
    }

    #[test]
    fn history_keeps_one_window() {
        let t0 = Instant::now();
        let mut h = History::default();
        for i in 0..20 {
            h.push(t0 + Duration::from_secs(i), Counters::default());
        }
        let g = h.graph(&BTreeSet::new());
        assert!(
            g.window_secs >= WINDOW.as_secs_f64() && g.window_secs < WINDOW.as_secs_f64() + 1.0,
            "{}",
            g.window_secs
        );
    }
}
