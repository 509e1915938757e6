//! Istio's standard proxy metrics and their Prometheus (text 0.0.4) exposition.

use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::labels::{RequestLabels, TcpLabels};
use crate::overrides::{MetricOverrides, Series, StandardMetric, TagValues};

/// The metric overrides in force for a series and the request's computed label values.
pub type Overrides<'a> = Option<(&'a MetricOverrides, &'a TagValues)>;

/// Content type of [`Metrics::encode_prometheus`] (what `/stats/prometheus` serves).
pub const PROMETHEUS_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Envoy's default histogram buckets (Istio 1.14 does not override them).
pub const ENVOY_DEFAULT_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

fn envoy_histogram() -> Histogram {
    Histogram::new(ENVOY_DEFAULT_BUCKETS)
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Cached per-label-set handles for the HTTP/gRPC metrics; recording only touches the
/// series themselves (atomics for counters, a per-series mutex for histograms).
/// A metric an override dropped has no handle.
#[derive(Clone, Debug)]
pub struct RequestHandle {
    requests: Option<Counter>,
    duration: Option<Histogram>,
    request_bytes: Option<Histogram>,
    response_bytes: Option<Histogram>,
    request_messages: Option<Counter>,
    response_messages: Option<Counter>,
}

impl RequestHandle {
    /// Records one completed request. The duration is recorded in whole milliseconds, as
    /// Istio's stats filter does.
    pub fn record(&self, duration: Duration, request_bytes: u64, response_bytes: u64) {
        if let Some(c) = &self.requests {
            c.inc();
        }
        if let Some(h) = &self.duration {
            h.observe(duration_ms(duration));
        }
        if let Some(h) = &self.request_bytes {
            h.observe(request_bytes as f64);
        }
        if let Some(h) = &self.response_bytes {
            h.observe(response_bytes as f64);
        }
    }

    /// Adds gRPC streaming message counts (`istio_request_messages_total` /
    /// `istio_response_messages_total`).
    pub fn grpc_messages(&self, request_messages: u64, response_messages: u64) {
        if let Some(c) = &self.request_messages {
            c.inc_by(request_messages);
        }
        if let Some(c) = &self.response_messages {
            c.inc_by(response_messages);
        }
    }
}

/// Cached per-label-set handles for the TCP metrics.
#[derive(Clone, Debug)]
pub struct TcpHandle {
    opened: Option<Counter>,
    closed: Option<Counter>,
    sent: Option<Counter>,
    received: Option<Counter>,
}

impl TcpHandle {
    /// Counts an opened connection.
    pub fn opened(&self) {
        if let Some(c) = &self.opened {
            c.inc();
        }
    }

    /// Counts a closed connection.
    pub fn closed(&self) {
        if let Some(c) = &self.closed {
            c.inc();
        }
    }

    /// Adds transferred bytes (`sent` = towards the client / response direction).
    pub fn bytes(&self, sent: u64, received: u64) {
        if let Some(c) = self.sent.as_ref().filter(|_| sent > 0) {
            c.inc_by(sent);
        }
        if let Some(c) = self.received.as_ref().filter(|_| received > 0) {
            c.inc_by(received);
        }
    }
}

fn duration_ms(duration: Duration) -> f64 {
    // Whole milliseconds; u128 -> f64 is exact for any realistic duration.
    duration.as_millis() as f64
}

/// The proxy's metric registry with Istio's standard metrics registered.
///
/// Build it, add proxy-level metrics through [`Metrics::registry_mut`] or the
/// `register_*` helpers, then share it (e.g. in an `Arc`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<Series<RequestLabels>, Counter>,
    duration: HistogramFamily<Series<RequestLabels>>,
    request_bytes: HistogramFamily<Series<RequestLabels>>,
    response_bytes: HistogramFamily<Series<RequestLabels>>,
    request_messages: Family<Series<RequestLabels>, Counter>,
    response_messages: Family<Series<RequestLabels>, Counter>,
    tcp_sent: Family<Series<TcpLabels>, Counter>,
    tcp_received: Family<Series<TcpLabels>, Counter>,
    tcp_opened: Family<Series<TcpLabels>, Counter>,
    tcp_closed: Family<Series<TcpLabels>, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the registry with the Istio standard metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Series<RequestLabels>, Counter>::default();
        let request_messages = Family::<Series<RequestLabels>, Counter>::default();
        let response_messages = Family::<Series<RequestLabels>, Counter>::default();
        let duration: HistogramFamily<Series<RequestLabels>> =
            Family::new_with_constructor(envoy_histogram);
        let request_bytes: HistogramFamily<Series<RequestLabels>> =
            Family::new_with_constructor(envoy_histogram);
        let response_bytes: HistogramFamily<Series<RequestLabels>> =
            Family::new_with_constructor(envoy_histogram);
        let tcp_sent = Family::<Series<TcpLabels>, Counter>::default();
        let tcp_received = Family::<Series<TcpLabels>, Counter>::default();
        let tcp_opened = Family::<Series<TcpLabels>, Counter>::default();
        let tcp_closed = Family::<Series<TcpLabels>, Counter>::default();

        // Counters are registered without `_total`; the encoder appends it.
        registry.register(
            "istio_requests",
            "Total number of requests handled by the proxy",
            requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Duration of requests in milliseconds",
            duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Sizes of HTTP request bodies",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Sizes of HTTP response bodies",
            response_bytes.clone(),
        );
        registry.register(
            "istio_request_messages",
            "Number of gRPC messages sent by the client",
            request_messages.clone(),
        );
        registry.register(
            "istio_response_messages",
            "Number of gRPC messages sent by the server",
            response_messages.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent during the response of TCP connections",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received during the request of TCP connections",
            tcp_received.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );

        Metrics {
            registry,
            requests,
            duration,
            request_bytes,
            response_bytes,
            request_messages,
            response_messages,
            tcp_sent,
            tcp_received,
            tcp_opened,
            tcp_closed,
        }
    }

    /// The registry, for registering extra proxy-level metrics before sharing `self`.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The registry (e.g. for a custom encoder).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Registers a counter; `name` without `_total` (the encoder appends it).
    pub fn register_counter(&mut self, name: &str, help: &str) -> Counter {
        let counter = Counter::default();
        self.registry.register(name, help, counter.clone());
        counter
    }

    /// Registers a gauge.
    pub fn register_gauge(&mut self, name: &str, help: &str) -> Gauge {
        let gauge = Gauge::default();
        self.registry.register(name, help, gauge.clone());
        gauge
    }

    /// Returns handles for one request label set under the listener's overrides; cache them
    /// per (route, peer, outcome) so the hot path does not hash the label set per request.
    pub fn request_handle(&self, labels: &RequestLabels, ov: Overrides<'_>) -> RequestHandle {
        let series = |m: StandardMetric| series(labels, m, ov);
        RequestHandle {
            requests: series(StandardMetric::RequestCount)
                .map(|s| self.requests.get_or_create_owned(&s)),
            duration: series(StandardMetric::RequestDuration)
                .map(|s| self.duration.get_or_create_owned(&s)),
            request_bytes: series(StandardMetric::RequestSize)
                .map(|s| self.request_bytes.get_or_create_owned(&s)),
            response_bytes: series(StandardMetric::ResponseSize)
                .map(|s| self.response_bytes.get_or_create_owned(&s)),
            request_messages: series(StandardMetric::GrpcRequestMessages)
                .map(|s| self.request_messages.get_or_create_owned(&s)),
            response_messages: series(StandardMetric::GrpcResponseMessages)
                .map(|s| self.response_messages.get_or_create_owned(&s)),
        }
    }

    /// Returns handles for one TCP label set under the listener's overrides.
    pub fn tcp_handle(&self, labels: &TcpLabels, ov: Overrides<'_>) -> TcpHandle {
        let series = |m: StandardMetric| series(labels, m, ov);
        TcpHandle {
            opened: series(StandardMetric::TcpOpened)
                .map(|s| self.tcp_opened.get_or_create_owned(&s)),
            closed: series(StandardMetric::TcpClosed)
                .map(|s| self.tcp_closed.get_or_create_owned(&s)),
            sent: series(StandardMetric::TcpSent).map(|s| self.tcp_sent.get_or_create_owned(&s)),
            received: series(StandardMetric::TcpReceived)
                .map(|s| self.tcp_received.get_or_create_owned(&s)),
        }
    }

    /// Encodes every registered metric in the Prometheus text format 0.0.4 (no `# EOF`),
    /// with histogram `le` bounds in fixed-point notation as Envoy prints them
    /// (`le="3600000"`, not `3.6e+06`).
    pub fn encode_prometheus(&self) -> String {
        let mut raw = String::new();
        if prometheus_text::encode(&mut raw, &self.registry).is_err() {
            // Writing into a String cannot fail; an error would come from a metric's own
            // encoder, which the registered types never return.
            tracing::warn!("encoding metrics failed; serving a partial exposition");
        }
        fix_bucket_bounds(raw)
    }
}

fn series<L: crate::overrides::LabelPairs + Clone>(
    labels: &L,
    metric: StandardMetric,
    ov: Overrides<'_>,
) -> Option<Series<L>> {
    match ov {
        None => Some(Series::Standard(labels.clone())),
        Some((o, values)) => o.series(metric, labels, values),
    }
}

/// Rewrites scientific-notation `le` values (`1.8e+06`) to fixed point (`1800000`).
fn fix_bucket_bounds(raw: String) -> String {
    if !raw.contains("e+") && !raw.contains("e-") {
        return raw;
    }
    let mut out = String::with_capacity(raw.len() + 64);
    for line in raw.split_inclusive('\n') {
        match bucket_bound_span(line) {
            Some((start, end)) => {
                let value = &line[start..end];
                match value.parse::<f64>() {
                    Ok(v) if v.is_finite() && value.contains('e') => {
                        out.push_str(&line[..start]);
                        out.push_str(&v.to_string());
                        out.push_str(&line[end..]);
                    }
                    _ => out.push_str(line),
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Byte range of the value of the final `le="..."` label of a `_bucket` sample line.
fn bucket_bound_span(line: &str) -> Option<(usize, usize)> {
    if line.starts_with('#') || !line.contains("_bucket{") {
        return None;
    }
    // `le` is encoded last, right before the closing brace.
    let close = line.rfind("\"}")?;
    let start = line[..close]
        .rfind(",le=\"")
        .map(|i| i + 5)
        .or_else(|| line[..close].rfind("{le=\"").map(|i| i + 5))?;
    Some((start, close))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{
        Label, Parties, PeerInfo, Protocol, Reporter, SecurityPolicy, ServiceInfo,
    };
    use std::collections::HashMap;

    const REQUEST_LABEL_ORDER: [&str; 25] = [
        "reporter",
        "source_workload",
        "source_canonical_service",
        "source_canonical_revision",
        "source_workload_namespace",
        "source_principal",
        "source_app",
        "source_version",
        "source_cluster",
        "destination_workload",
        "destination_workload_namespace",
        "destination_principal",
        "destination_app",
        "destination_version",
        "destination_service",
        "destination_service_name",
        "destination_service_namespace",
        "destination_canonical_service",
        "destination_canonical_revision",
        "destination_cluster",
        "request_protocol",
        "response_code",
        "grpc_response_status",
        "response_flags",
        "connection_security_policy",
    ];

    fn peers() -> (PeerInfo, PeerInfo, ServiceInfo) {
        let src = PeerInfo {
            workload: "productpage-v1".into(),
            namespace: "default".into(),
            principal: "spiffe://cluster.local/ns/default/sa/bookinfo-productpage".into(),
            app: "productpage".into(),
            version: "v1".into(),
            canonical_service: "productpage".into(),
            canonical_revision: "v1".into(),
            cluster: "Kubernetes".into(),
        };
        let dst = PeerInfo {
            workload: "details-v1".into(),
            app: "details".into(),
            canonical_service: "details".into(),
            ..PeerInfo::unknown()
        };
        let svc = ServiceInfo::from_host("details.default.svc.cluster.local");
        (src, dst, svc)
    }

    fn request_labels(code: u16) -> RequestLabels {
        let (src, dst, svc) = peers();
        let parties = Parties {
            reporter: Reporter::Destination,
            source: &src,
            destination: &dst,
            service: &svc,
            security_policy: SecurityPolicy::MutualTls,
        };
        RequestLabels::new(&parties, Protocol::Http, code, None, Label::no_flags())
    }

    fn tcp_labels() -> TcpLabels {
        let (src, dst, svc) = peers();
        let parties = Parties {
            reporter: Reporter::Source,
            source: &src,
            destination: &dst,
            service: &svc,
            security_policy: SecurityPolicy::Unknown,
        };
        TcpLabels::new(&parties, Label::no_flags())
    }

    /// A parsed sample line of the Prometheus text format.
    #[derive(Debug)]
    struct Sample {
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    }

    fn valid_metric_name(name: &str) -> bool {
        let mut chars = name.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn parse_value(v: &str) -> Result<f64, String> {
        match v {
            "+Inf" => Ok(f64::INFINITY),
            "-Inf" => Ok(f64::NEG_INFINITY),
            "NaN" => Ok(f64::NAN),
            _ => v
                .parse::<f64>()
                .map_err(|e| format!("bad value {v:?}: {e}")),
        }
    }

    fn parse_sample(line: &str) -> Result<Sample, String> {
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| format!("no value in {line:?}"))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(format!("bad metric name {name:?}"));
        }
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(after) = rest.strip_prefix('{') {
            let mut s = after;
            loop {
                if let Some(r) = s.strip_prefix('}') {
                    s = r;
                    break;
                }
                let eq = s.find('=').ok_or("label without '='")?;
                let key = &s[..eq];
                if !valid_metric_name(key) || key.contains(':') {
                    return Err(format!("bad label name {key:?}"));
                }
                s = s[eq + 1..]
                    .strip_prefix('"')
                    .ok_or("label value not quoted")?;
                let mut value = String::new();
                let mut chars = s.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            other => return Err(format!("bad escape {other:?}")),
                        },
                        Some((_, '\n')) | None => return Err("unterminated label value".into()),
                        Some((_, c)) => value.push(c),
                    }
                };
                labels.push((key.to_owned(), value));
                s = &s[end + 1..];
                if let Some(r) = s.strip_prefix(',') {
                    s = r;
                } else if !s.starts_with('}') {
                    return Err(format!("expected ',' or '}}' in {line:?}"));
                }
            }
            rest = s;
        }
        let rest = rest.strip_prefix(' ').ok_or("no space before value")?;
        let mut parts = rest.split(' ');
        let value = parse_value(parts.next().ok_or("missing value")?)?;
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .map_err(|e| format!("bad timestamp: {e}"))?;
        }
        if parts.next().is_some() {
            return Err("trailing tokens".into());
        }
        Ok(Sample {
            name: name.to_owned(),
            labels,
            value,
        })
    }

    /// Checks the Prometheus text exposition format 0.0.4 line by line and returns samples.
    fn check_exposition(text: &str) -> Result<Vec<Sample>, String> {
        if !text.ends_with('\n') {
            return Err("exposition must end with a newline".into());
        }
        let mut types: HashMap<String, String> = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut parts = comment.trim_start().splitn(3, ' ');
                match parts.next() {
                    Some("HELP") => {
                        let name = parts.next().ok_or("HELP without name")?;
                        if !valid_metric_name(name) {
                            return Err(format!("bad HELP name {name:?}"));
                        }
                    }
                    Some("TYPE") => {
                        let name = parts.next().ok_or("TYPE without name")?;
                        let ty = parts.next().ok_or("TYPE without type")?;
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty) {
                            return Err(format!("unknown type {ty:?} (OpenMetrics-only?)"));
                        }
                        if types.insert(name.to_owned(), ty.to_owned()).is_some() {
                            return Err(format!("duplicate TYPE for {name}"));
                        }
                    }
                    Some("EOF") => return Err("'# EOF' is OpenMetrics-only".into()),
                    Some("UNIT") => return Err("'# UNIT' is OpenMetrics-only".into()),
                    _ => {}
                }
                continue;
            }
            let sample = parse_sample(line)?;
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let base = sample.name.strip_suffix(suffix)?;
                    (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
                })
                .unwrap_or(&sample.name);
            let ty = types
                .get(family)
                .ok_or_else(|| format!("sample {} before its TYPE", sample.name))?;
            if ty == "histogram" && sample.name.ends_with("_bucket") {
                let le = sample
                    .labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .ok_or("bucket without le")?;
                parse_value(&le.1)?;
            }
            samples.push(sample);
        }
        Ok(samples)
    }

    #[test]
    fn encodes_request_metrics_with_istio_labels() {
        let mut metrics = Metrics::new();
        let extra = metrics.register_counter("weft_proxy_config_updates", "Config updates");
        extra.inc();
        let labels = request_labels(200);
        metrics
            .request_handle(&labels, None)
            .record(Duration::from_micros(3_700), 120, 4_000);
        metrics
            .request_handle(&labels, None)
            .record(Duration::from_millis(2_000_000), 0, 0);
        let text = metrics.encode_prometheus();

        let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(!text.contains("# EOF"));
        assert!(text.contains("# TYPE istio_requests_total counter\n"));
        assert!(!text.contains("_total_total"));
        assert!(text.contains("weft_proxy_config_updates_total 1\n"));

        let req = samples
            .iter()
            .find(|s| s.name == "istio_requests_total")
            .expect("istio_requests_total sample");
        let names: Vec<&str> = req.labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, REQUEST_LABEL_ORDER);
        assert_eq!(req.value, 2.0);
        let label = |k: &str| {
            req.labels
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(label("reporter"), Some("destination"));
        assert_eq!(label("destination_version"), Some("unknown"));
        assert_eq!(label("destination_canonical_revision"), Some("latest"));
        assert_eq!(label("response_code"), Some("200"));
        assert_eq!(label("grpc_response_status"), Some(""));
        assert_eq!(label("response_flags"), Some("-"));
        assert_eq!(
            label("source_principal"),
            Some("spiffe://cluster.local/ns/default/sa/bookinfo-productpage")
        );
    }

    #[test]
    fn histogram_buckets_match_envoy() {
        let metrics = Metrics::new();
        let labels = request_labels(503);
        metrics
            .request_handle(&labels, None)
            .record(Duration::from_micros(3_700), 120, 4_000);
        metrics
            .request_handle(&labels, None)
            .record(Duration::from_millis(2_000_000), 0, 0);
        let text = metrics.encode_prometheus();
        let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

        let buckets: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.name == "istio_request_duration_milliseconds_bucket")
            .collect();
        let les: Vec<&str> = buckets
            .iter()
            .map(|s| s.labels.last().map(|(_, v)| v.as_str()).unwrap_or_default())
            .collect();
        assert_eq!(
            les,
            [
                "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000",
                "10000", "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf"
            ]
        );
        // le comes after the Istio labels.
        assert_eq!(buckets[0].labels.len(), 26);
        assert_eq!(buckets[0].labels[25].0, "le");
        // 3 ms falls in le=5 (not le=1), 2_000_000 ms in le=3600000.
        let count_at = |le: &str| {
            buckets
                .iter()
                .find(|s| s.labels.last().map(|(_, v)| v.as_str()) == Some(le))
                .map(|s| s.value)
        };
        assert_eq!(count_at("1"), Some(0.0));
        assert_eq!(count_at("5"), Some(1.0));
        assert_eq!(count_at("1800000"), Some(1.0));
        assert_eq!(count_at("3600000"), Some(2.0));
        assert_eq!(count_at("+Inf"), Some(2.0));
        assert!(text.contains("# TYPE istio_request_duration_milliseconds histogram\n"));
        let sum = samples
            .iter()
            .find(|s| s.name == "istio_request_duration_milliseconds_sum")
            .map(|s| s.value);
        assert_eq!(sum, Some(2_000_003.0));
        let count = samples
            .iter()
            .find(|s| s.name == "istio_request_duration_milliseconds_count")
            .map(|s| s.value);
        assert_eq!(count, Some(2.0));
        for name in ["istio_request_bytes_bucket", "istio_response_bytes_bucket"] {
            assert_eq!(
                samples.iter().filter(|s| s.name == name).count(),
                20,
                "{name}"
            );
        }
        let resp_le_5000 = samples
            .iter()
            .find(|s| {
                s.name == "istio_response_bytes_bucket"
                    && s.labels.last().map(|(_, v)| v.as_str()) == Some("5000")
            })
            .map(|s| s.value);
        assert_eq!(resp_le_5000, Some(2.0));
    }

    #[test]
    fn tcp_metrics_and_handles() {
        let metrics = Metrics::new();
        let labels = tcp_labels();
        metrics.tcp_handle(&labels, None).opened();
        metrics.tcp_handle(&labels, None).bytes(10, 20);
        let handle = metrics.tcp_handle(&labels, None);
        handle.opened();
        handle.bytes(5, 0);
        handle.closed();
        metrics.tcp_handle(&labels, None).closed();

        let req = request_labels(200);
        let rh = metrics.request_handle(&req, None);
        rh.record(Duration::from_millis(7), 1, 2);
        rh.grpc_messages(3, 4);

        let text = metrics.encode_prometheus();
        let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let value = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
        assert_eq!(value("istio_tcp_connections_opened_total"), Some(2.0));
        assert_eq!(value("istio_tcp_connections_closed_total"), Some(2.0));
        assert_eq!(value("istio_tcp_sent_bytes_total"), Some(15.0));
        assert_eq!(value("istio_tcp_received_bytes_total"), Some(20.0));
        assert_eq!(value("istio_requests_total"), Some(1.0));
        assert_eq!(value("istio_request_messages_total"), Some(3.0));
        assert_eq!(value("istio_response_messages_total"), Some(4.0));

        let tcp = samples
            .iter()
            .find(|s| s.name == "istio_tcp_sent_bytes_total")
            .expect("tcp sample");
        let names: Vec<&str> = tcp.labels.iter().map(|(k, _)| k.as_str()).collect();
        let expected: Vec<&str> = REQUEST_LABEL_ORDER
            .iter()
            .copied()
            .filter(|n| *n != "response_code" && *n != "grpc_response_status")
            .collect();
        assert_eq!(names, expected);
        let label = |k: &str| {
            tcp.labels
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(label("request_protocol"), Some("tcp"));
        assert_eq!(label("connection_security_policy"), Some("unknown"));
        assert_eq!(label("reporter"), Some("source"));
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new();
        let mut labels = request_labels(200);
        labels.source_app = Label::new("we\"ird\\app\nx");
        metrics
            .request_handle(&labels, None)
            .record(Duration::ZERO, 0, 0);
        let text = metrics.encode_prometheus();
        let samples = check_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let app = samples
            .iter()
            .find(|s| s.name == "istio_requests_total")
            .and_then(|s| s.labels.iter().find(|(k, _)| k == "source_app"))
            .map(|(_, v)| v.clone());
        assert_eq!(app.as_deref(), Some("we\"ird\\app\nx"));
    }

    #[test]
    fn checker_rejects_openmetrics() {
        assert!(check_exposition("# TYPE a counter\na_total 1\n# EOF\n").is_err());
        assert!(check_exposition("a_total 1\n").is_err());
        assert!(check_exposition("# TYPE a counter\na{b=\"c} 1\n").is_err());
        assert!(check_exposition("# TYPE a counter\na 1\n").is_ok());
    }

    #[test]
    fn fix_bucket_bounds_rewrites_only_le() {
        let raw = "x_bucket{a=\"1e+06\",le=\"1.8e+06\"} 3\nx_sum 1.5e+07\n".to_owned();
        assert_eq!(
            fix_bucket_bounds(raw),
            "x_bucket{a=\"1e+06\",le=\"1800000\"} 3\nx_sum 1.5e+07\n"
        );
        let single = "y_bucket{le=\"3.6e+06\"} 1\n".to_owned();
        assert_eq!(fix_bucket_bounds(single), "y_bucket{le=\"3600000\"} 1\n");
    }
}
