//! The service graph from the sidecars' standard metrics: an edge per (client canonical
//! service, destination service) with request rate, 5xx share, p99 and mTLS share; a node per
//! service with its inbound figures. Edges count what the client's sidecar reports
//! (`reporter="source"`: a fault it injects, a timeout, a refused connection are the client's
//! experience), and the server's sidecar where the client reports nothing (no sidecar, or not
//! scraped); mTLS comes from the server side, the only one that knows the peer's certificate.
//! Counters are kept per endpoint and differenced per endpoint, as Prometheus' `increase`: a
//! proxy that restarted (its counters went down) counts from zero, one that missed a scrape
//! keeps its last values.

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
    /// Sums the samples of one sidecar's scrape.
    pub fn from_samples(samples: &[Sample]) -> Counters {
        let mut c = Counters::default();
        for s in samples {
            let label = |k: &str| s.labels.get(k).map(String::as_str).unwrap_or("unknown");
            let dst = label("destination_service_name");
            if dst == "unknown" {
                continue;
            }
            let dst = node_id(dst, label("destination_service_namespace"));
            let src = node_id(
                label("source_canonical_service"),
                label("source_workload_namespace"),
            );
            let key = (src, dst.clone());
            match label("reporter") {
                "source" => c.edges.entry(key).or_default().add(s),
                "destination" => {
                    c.nodes.entry(dst).or_default().add(s);
                    c.edges_server.entry(key).or_default().add(s);
                }
                _ => {}
            }
        }
        c
    }

    /// What `self` (newer) adds to `before` (older), map by map; see [`increase`].
    fn increase_over(&self, before: Option<&Counters>) -> Counters {
        fn each<K: Ord + Clone>(
            a: &BTreeMap<K, ServiceTotals>,
            b: Option<&BTreeMap<K, ServiceTotals>>,
        ) -> BTreeMap<K, ServiceTotals> {
            a.iter()
                .map(|(k, t)| (k.clone(), increase(b.and_then(|b| b.get(k)), t)))
                .collect()
        }
        Counters {
            edges: each(&self.edges, before.map(|b| &b.edges)),
            edges_server: each(&self.edges_server, before.map(|b| &b.edges_server)),
            nodes: each(&self.nodes, before.map(|b| &b.nodes)),
        }
    }

    /// Adds `other`'s counts to these.
    fn merge(&mut self, other: &Counters) {
        fn each<K: Ord + Clone>(
            into: &mut BTreeMap<K, ServiceTotals>,
            from: &BTreeMap<K, ServiceTotals>,
        ) {
            for (k, t) in from {
                let slot = into.entry(k.clone()).or_default();
                slot.requests += t.requests;
                slot.errors += t.errors;
                slot.mtls += t.mtls;
                for (le, c) in &t.buckets {
                    *slot.buckets.entry(*le).or_default() += c;
                }
            }
        }
        each(&mut self.edges, &other.edges);
        each(&mut self.edges_server, &other.edges_server);
        each(&mut self.nodes, &other.nodes);
    }
}

/// A node's id: `name.namespace`, or `unknown` for a client outside the mesh.
pub fn node_id(name: &str, namespace: &str) -> String {
    if name == "unknown" {
        name.to_string()
    } else {
        format!("{name}.{namespace}")
    }
}

/// Prometheus' `increase` of one endpoint's counters: after − before, or all of `after` when
/// the counters went down (the proxy restarted) or were not there before.
fn increase(before: Option<&ServiceTotals>, after: &ServiceTotals) -> ServiceTotals {
    match before {
        Some(b) if after.requests >= b.requests => ServiceTotals {
            requests: after.requests - b.requests,
            errors: (after.errors - b.errors).max(0.0),
            mtls: (after.mtls - b.mtls).max(0.0),
            buckets: after
                .buckets
                .iter()
                .map(|(le, c)| {
                    (
                        *le,
                        (c - b.buckets.get(le).copied().unwrap_or(0.0)).max(0.0),
                    )
                })
                .collect(),
        },
        _ => after.clone(),
    }
}

/// One scrape: each sidecar's counters, by its address.
pub type Scrape = BTreeMap<String, Counters>;

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
    /// `name.namespace` ([`node_id`]).
    pub id: String,
    /// The service name (`reviews`), or the client's canonical service.
    pub name: String,
    pub namespace: String,
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
    /// When the newest scrape was taken (Unix milliseconds), for the page to tell stale figures.
    pub scraped_at_ms: u64,
}

/// Scrapes kept for the window.
#[derive(Debug, Default)]
pub struct History {
    scrapes: VecDeque<(Instant, Scrape)>,
}

impl History {
    /// Adds a scrape; a sidecar it lacks (a missed scrape) keeps its previous counters.
    pub fn push(&mut self, at: Instant, mut scrape: Scrape) {
        if let Some((_, last)) = self.scrapes.back() {
            for (addr, c) in last {
                scrape.entry(addr.clone()).or_insert_with(|| c.clone());
            }
        }
        self.scrapes.push_back((at, scrape));
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
    pub fn graph(&self, services: &BTreeSet<(String, String)>) -> Graph {
        let (Some((t0, first)), Some((t1, last))) = (self.scrapes.front(), self.scrapes.back())
        else {
            return Graph::default();
        };
        let secs = t1.duration_since(*t0).as_secs_f64();
        // What happened in the window, sidecar by sidecar, summed.
        let mut delta = Counters::default();
        for (addr, after) in last {
            delta.merge(&after.increase_over(first.get(addr)));
        }
        // Edges a client sidecar reports; the others are seen from the server side only.
        let reported: BTreeSet<&(String, String)> =
            last.values().flat_map(|c| c.edges.keys()).collect();
        let zero = ServiceTotals::default();
        let figures = |t: Option<&ServiceTotals>| -> Figures {
            rates(&zero, t.unwrap_or(&zero), secs).into()
        };
        let mut nodes: BTreeMap<String, Node> = services
            .iter()
            .map(|(name, ns)| {
                let id = node_id(name, ns);
                let node = Node {
                    id: id.clone(),
                    name: name.clone(),
                    namespace: ns.clone(),
                    service: true,
                    figures: figures(delta.nodes.get(&id)),
                };
                (id, node)
            })
            .collect();
        let keys: BTreeSet<&(String, String)> = delta
            .edges
            .keys()
            .chain(delta.edges_server.keys())
            .collect();
        let mut edges = Vec::new();
        for key in keys {
            let (src, dst) = key;
            let view = if reported.contains(key) {
                delta.edges.get(key)
            } else {
                delta.edges_server.get(key)
            };
            let Some(view) = view.filter(|t| t.requests > 0.0) else {
                continue;
            };
            let mut f = figures(Some(view));
            // Only the server side knows whether the connection was mutual TLS.
            f.mtls_pct = figures(delta.edges_server.get(key)).mtls_pct;
            for id in [src, dst] {
                nodes.entry(id.clone()).or_insert_with(|| {
                    let (name, namespace) = id.split_once('.').unwrap_or((id, ""));
                    Node {
                        id: id.clone(),
                        name: name.to_string(),
                        namespace: namespace.to_string(),
                        service: false,
                        figures: figures(None),
                    }
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
            scraped_at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_up::status::parse_prometheus;

    /// productpage's sidecar (the client side), details' and productpage's (server sides).
    fn scrape(ok: f64, failed: f64, unknown: f64) -> Scrape {
        let client = format!(
            r#"istio_requests_total{{reporter="source",source_canonical_service="productpage",source_workload_namespace="default",destination_service_name="details",destination_service_namespace="default",response_code="200",connection_security_policy="unknown"}} {ok}
istio_requests_total{{reporter="source",source_canonical_service="productpage",source_workload_namespace="default",destination_service_name="details",destination_service_namespace="default",response_code="500",response_flags="FI",connection_security_policy="unknown"}} {failed}
istio_request_duration_milliseconds_bucket{{reporter="source",source_canonical_service="productpage",source_workload_namespace="default",destination_service_name="details",destination_service_namespace="default",le="5"}} {ok}
istio_request_duration_milliseconds_bucket{{reporter="source",source_canonical_service="productpage",source_workload_namespace="default",destination_service_name="details",destination_service_namespace="default",le="+Inf"}} {}
"#,
            ok + failed
        );
        let details = format!(
            r#"istio_requests_total{{reporter="destination",source_canonical_service="productpage",source_workload_namespace="default",destination_service_name="details",destination_service_namespace="default",response_code="200",connection_security_policy="mutual_tls"}} {ok}
"#
        );
        let productpage = format!(
            r#"istio_requests_total{{reporter="destination",source_canonical_service="unknown",destination_service_name="productpage",destination_service_namespace="default",response_code="200",connection_security_policy="none"}} {unknown}
"#
        );
        [
            ("10.0.0.1", client),
            ("10.0.0.2", details),
            ("10.0.0.3", productpage),
        ]
        .into_iter()
        .map(|(a, t)| (a.to_string(), Counters::from_samples(&parse_prometheus(&t))))
        .collect()
    }

    fn edge<'g>(g: &'g Graph, id: &str) -> &'g Edge {
        g.edges
            .iter()
            .find(|e| e.id == id)
            .unwrap_or_else(|| panic!("no edge {id} in {g:?}"))
    }

    #[test]
    fn edges_count_the_clients_view_and_mtls_the_servers() {
        let t0 = Instant::now();
        let mut h = History::default();
        h.push(t0, scrape(100.0, 0.0, 10.0));
        h.push(t0 + Duration::from_secs(2), scrape(110.0, 10.0, 30.0));
        let services: BTreeSet<(String, String)> = ["details", "productpage", "ratings"]
            .iter()
            .map(|s| (s.to_string(), "default".to_string()))
            .collect();
        let g = h.graph(&services);
        assert_eq!(g.window_secs, 2.0);
        let e = edge(&g, "productpage.default->details.default");
        // 20 requests in 2 s, half of them aborted by the client's sidecar.
        assert_eq!(e.figures.rps, 10.0);
        assert_eq!(e.figures.error_pct, 50.0);
        // The server saw the 10 that reached it, all over mTLS.
        assert_eq!(e.figures.mtls_pct, 100.0);
        assert_eq!(e.figures.p99_ms, None, "half the requests are above 5 ms");
        let outside = edge(&g, "unknown->productpage.default");
        assert_eq!(outside.figures.rps, 10.0);
        let ratings = g
            .nodes
            .iter()
            .find(|n| n.id == "ratings.default")
            .expect("node");
        assert!(ratings.service && ratings.figures.rps == 0.0);
        let unknown = g.nodes.iter().find(|n| n.id == "unknown").expect("node");
        assert!(!unknown.service);
    }

    #[test]
    fn a_restarted_or_missed_sidecar_does_not_distort_the_rates() {
        let t0 = Instant::now();
        let mut h = History::default();
        h.push(t0, scrape(1000.0, 0.0, 0.0));
        // productpage's proxy restarted: its counters start again from zero.
        let mut restarted = scrape(20.0, 0.0, 0.0);
        restarted.insert(
            "10.0.0.2".into(),
            scrape(1020.0, 0.0, 0.0)["10.0.0.2"].clone(),
        );
        h.push(t0 + Duration::from_secs(2), restarted);
        let g = h.graph(&BTreeSet::new());
        let e = edge(&g, "productpage.default->details.default");
        assert_eq!((e.figures.rps, e.figures.error_pct), (10.0, 0.0), "{e:?}");
        // The next scrape misses details' sidecar: its last counters stand in.
        let mut missed = scrape(40.0, 0.0, 0.0);
        missed.remove("10.0.0.2");
        h.push(t0 + Duration::from_secs(4), missed);
        let g = h.graph(&BTreeSet::new());
        let e = edge(&g, "productpage.default->details.default");
        assert_eq!(e.figures.rps, 10.0, "{e:?}");
        assert_eq!(e.figures.mtls_pct, 100.0, "{e:?}");
    }

    #[test]
    fn a_client_without_figures_is_seen_from_the_server() {
        let t0 = Instant::now();
        let mut h = History::default();
        let server_only = |n: f64| {
            let mut s = scrape(n, 0.0, 0.0);
            s.remove("10.0.0.1");
            s
        };
        h.push(t0, server_only(0.0));
        h.push(t0 + Duration::from_secs(1), server_only(5.0));
        let g = h.graph(&BTreeSet::new());
        assert_eq!(
            edge(&g, "productpage.default->details.default").figures.rps,
            5.0
        );
    }

    #[test]
    fn history_keeps_one_window() {
        let t0 = Instant::now();
        let mut h = History::default();
        for i in 0..20 {
            h.push(t0 + Duration::from_secs(i), Scrape::new());
        }
        let g = h.graph(&BTreeSet::new());
        assert!(
            g.window_secs >= WINDOW.as_secs_f64() && g.window_secs < WINDOW.as_secs_f64() + 1.0,
            "{}",
            g.window_secs
        );
    }
}
