//! What `weft up` and `weft status` show: pods (IP, proxy, app, identity, mTLS mode) and per
//! service the request rate, error rate and p99 latency, from the sidecars' metrics (server
//! side, `reporter="destination"`), which are scraped from inside the node namespace.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use http_body_util::{BodyExt, Empty};

use crate::net;

/// One sample of a metric line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses Prometheus text exposition lines (comments skipped).
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            None => (head.to_string(), BTreeMap::new()),
            Some((name, rest)) => (name.to_string(), parse_labels(rest.trim_end_matches('}'))),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    out
}

/// Cumulative per-service counters from one scrape of all pods.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceTotals {
    pub requests: f64,
    pub errors: f64,
    pub mtls: f64,
    /// Histogram buckets (le → cumulative count).
    pub buckets: BTreeMap<u64, f64>,
}

/// Sums the server-side request metrics by destination service.
pub fn totals(samples: &[Sample]) -> BTreeMap<String, ServiceTotals> {
    let mut out: BTreeMap<String, ServiceTotals> = BTreeMap::new();
    for s in samples {
        if s.labels.get("reporter").map(String::as_str) != Some("destination") {
            continue;
        }
        let Some(svc) = s.labels.get("destination_service") else {
            continue;
        };
        out.entry(svc.clone()).or_default().add(s);
    }
    out
}

impl ServiceTotals {
    /// Adds one sample of `istio_requests_total` (requests, 5xx, mutual TLS) or of the
    /// request-duration histogram; other metrics are ignored.
    pub fn add(&mut self, s: &Sample) {
        match s.name.as_str() {
            "istio_requests_total" => {
                self.requests += s.value;
                if s.labels
                    .get("response_code")
                    .is_some_and(|c| c.starts_with('5'))
                {
                    self.errors += s.value;
                }
                if s.labels
                    .get("connection_security_policy")
                    .map(String::as_str)
                    == Some("mutual_tls")
                {
                    self.mtls += s.value;
                }
            }
            "istio_request_duration_milliseconds_bucket" => {
                let le = s.labels.get("le").map(String::as_str).unwrap_or("+Inf");
                // Bucket bounds are in ms; +Inf sorts last.
                let key = if le == "+Inf" {
                    u64::MAX
                } else {
                    (le.parse::<f64>().unwrap_or(0.0) * 1000.0) as u64
                };
                *self.buckets.entry(key).or_default() += s.value;
            }
            _ => {}
        }
    }
}

/// Rate, error share, mTLS share and p99 between two scrapes.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRates {
    pub rps: f64,
    pub error_pct: f64,
    pub mtls_pct: f64,
    /// p99 in ms (upper bound of the bucket), None when there was no traffic.
    pub p99_ms: Option<f64>,
}

pub fn rates(before: &ServiceTotals, after: &ServiceTotals, secs: f64) -> ServiceRates {
    let n = (after.requests - before.requests).max(0.0);
    let pct = |x: f64| if n > 0.0 { 100.0 * x / n } else { 0.0 };
    let p99_ms = (n > 0.0).then(|| {
        let target = 0.99 * n;
        after
            .buckets
            .iter()
            .find(|(le, c)| **c - before.buckets.get(le).copied().unwrap_or(0.0) >= target)
            .map(|(le, _)| {
                if *le == u64::MAX {
                    f64::INFINITY
                } else {
                    *le as f64 / 1000.0
                }
            })
            .unwrap_or(f64::INFINITY)
    });
    ServiceRates {
        rps: if secs > 0.0 { n / secs } else { 0.0 },
        error_pct: pct((after.errors - before.errors).max(0.0)),
        mtls_pct: pct((after.mtls - before.mtls).max(0.0)),
        p99_ms,
    }
}

/// An HTTP GET with a short timeout; None on any failure.
pub async fn get(url: &str) -> Option<(u16, String)> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri: http::Uri = url.parse().ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(2), client.get(uri))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(2), resp.into_body().collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// One observation of the mesh (run inside the node namespace).
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub at: Option<Instant>,
    pub control_ready: bool,
    pub proxies_ready: BTreeMap<String, bool>,
    pub totals: BTreeMap<String, ServiceTotals>,
}

/// Scrapes the control plane and every sidecar.
pub async fn observe(node_ip: Ipv4Addr, pods: &[(String, Ipv4Addr, bool)]) -> Observation {
    let control_ready = get(&format!("http://{node_ip}:15014/ready"))
        .await
        .is_some_and(|(s, _)| s == 200);
    let mut proxies_ready = BTreeMap::new();
    let mut samples = Vec::new();
    for (name, ip, sidecar) in pods {
        if !sidecar {
            continue;
        }
        let ready = get(&format!("http://{ip}:15021/healthz/ready"))
            .await
            .is_some_and(|(s, _)| s == 200);
        proxies_ready.insert(name.clone(), ready);
        if let Some((200, text)) = get(&format!("http://{ip}:15090/stats/prometheus")).await {
            samples.extend(parse_prometheus(&text));
        }
    }
    Observation {
        at: Some(Instant::now()),
        control_ready,
        proxies_ready,
        totals: totals(&samples),
    }
}

/// Runs `f` on a thread that has joined the node's network namespace (so that its sockets
/// reach the pods), with a current-thread tokio runtime, and returns its result.
pub fn in_node_ns<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> std::io::Result<T> {
    in_netns(net::NODE_NS, f)
}

/// Runs `f` on a thread that has joined the network namespace `ns` (`/run/netns/<ns>`: a
/// pod's, to reach its proxy's admin port on 127.0.0.1), with a current-thread tokio runtime.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> std::io::Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || -> std::io::Result<T> {
        let file = std::fs::File::open(&path)?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&file),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(f()))
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
}

/// A pod's row in the status table.
#[derive(Debug, Clone)]
pub struct PodRow {
    pub name: String,
    pub ip: Ipv4Addr,
    pub proxy: String,
    pub app: String,
    pub identity: String,
    pub mtls: String,
}

pub fn render(
    title: &str,
    pods: &[PodRow],
    services: &BTreeMap<String, ServiceRates>,
    notes: &[String],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{title}");
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY)
        .set_header(vec!["POD", "IP", "PROXY", "APP", "IDENTITY", "MTLS"]);
    for p in pods {
        t.add_row(vec![
            p.name.clone(),
            p.ip.to_string(),
            p.proxy.clone(),
            p.app.clone(),
            p.identity.clone(),
            p.mtls.clone(),
        ]);
    }
    let _ = writeln!(out, "{t}");
    let mut s = Table::new();
    s.load_style(UTF8_BORDERS_ONLY)
        .set_header(vec!["SERVICE", "REQ/S", "ERRORS", "MTLS", "P99"]);
    for (name, r) in services {
        s.add_row(vec![
            name.clone(),
            format!("{:.1}", r.rps),
            format!("{:.1}%", r.error_pct),
            format!("{:.0}%", r.mtls_pct),
            match r.p99_ms {
                None => "-".to_string(),
                Some(v) if v.is_infinite() => "> 1h".to_string(),
                Some(v) => format!("≤ {v} ms"),
            },
        ]);
    }
    if !services.is_empty() {
        let _ = writeln!(out, "{s}");
    }
    for n in notes {
        let _ = writeln!(out, "{n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP istio_requests_total x
istio_requests_total{reporter="destination",destination_service="a.default.svc.cluster.local",response_code="200",connection_security_policy="mutual_tls"} 90
istio_requests_total{reporter="destination",destination_service="a.default.svc.cluster.local",response_code="503",connection_security_policy="none"} 10
istio_requests_total{reporter="source",destination_service="a.default.svc.cluster.local",response_code="200",connection_security_policy="unknown"} 100
istio_request_duration_milliseconds_bucket{reporter="destination",destination_service="a.default.svc.cluster.local",le="5"} 50
istio_request_duration_milliseconds_bucket{reporter="destination",destination_service="a.default.svc.cluster.local",le="10"} 99
istio_request_duration_milliseconds_bucket{reporter="destination",destination_service="a.default.svc.cluster.local",le="25"} 100
istio_request_duration_milliseconds_bucket{reporter="destination",destination_service="a.default.svc.cluster.local",le="+Inf"} 100
"#;

    #[test]
    fn parses_labels_with_escapes() {
        let s = parse_prometheus("m{a=\"x\\\"y\",b=\"z\"} 3\n");
        assert_eq!(s[0].labels["a"], "x\"y");
        assert_eq!(s[0].labels["b"], "z");
        assert_eq!(s[0].value, 3.0);
    }

    #[test]
    fn service_rates_from_two_scrapes() {
        let after = totals(&parse_prometheus(TEXT));
        let t = &after["a.default.svc.cluster.local"];
        assert_eq!(t.requests, 100.0, "only the server side counts");
        let r = rates(&ServiceTotals::default(), t, 10.0);
        assert_eq!(r.rps, 10.0);
        assert_eq!(r.error_pct, 10.0);
        assert_eq!(r.mtls_pct, 90.0);
        assert_eq!(r.p99_ms, Some(10.0));
        let idle = rates(t, t, 1.0);
        assert_eq!((idle.rps, idle.p99_ms), (0.0, None));
    }
}
