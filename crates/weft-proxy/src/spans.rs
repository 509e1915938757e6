//! Envoy's tracing of HTTP requests in the sidecar: a span per hop — SERVER on the inbound side,
//! CLIENT on the outbound side — in the trace the request carries or a new one. The tracer
//! decides the propagation as Envoy's do: the Zipkin tracer reads B3 headers, the `b3` single
//! header or W3C `traceparent` and writes B3 (and `traceparent` when the request had one); the
//! OpenTelemetry tracer reads and writes W3C `traceparent` (passing `tracestate` on). The
//! sampling decision travels with the trace; without one, the request's `x-request-id` decides
//! (a stable share of ids, as Envoy samples). The span's own id goes on in the request's
//! headers, so the next hop's span is its child. Finished sampled spans go through a bounded
//! queue (dropped and counted when full, never waited on) to a task that reports them in
//! batches through the proxy's own pools ([`report`]): Zipkin v2 JSON ([`zipkin`]) or OTLP
//! ([`otlp`]).

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use weft_telemetry::AccessLogEntry;

use crate::Proxy;
use crate::snapshot::Direction;
use crate::snapshot::tracing::{Collector, TagSource, Tracer, Tracing};

mod otlp;
mod report;
mod zipkin;

pub use report::Reporter;

const TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const PARENT_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
const B3: HeaderName = HeaderName::from_static("b3");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The trace context a request arrived with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Incoming {
    trace_id: u128,
    span_id: Option<u64>,
    sampled: Option<bool>,
}

fn header<'a>(h: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn hex128(s: &str) -> Option<u128> {
    // 64-bit B3 trace ids are the low half of a 128-bit one.
    (matches!(s.len(), 16 | 32)).then(|| u128::from_str_radix(s, 16).ok())?
}

fn hex64(s: &str) -> Option<u64> {
    (s.len() == 16).then(|| u64::from_str_radix(s, 16).ok())?
}

fn sampled_flag(s: &str) -> Option<bool> {
    match s {
        "1" | "true" | "d" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// B3 multi headers, else the `b3` single header, else W3C `traceparent` (the Zipkin tracer).
fn extract(h: &HeaderMap) -> Option<Incoming> {
    if let Some(trace_id) = header(h, &TRACE_ID).and_then(hex128) {
        let sampled = header(h, &FLAGS)
            .filter(|f| *f == "1")
            .map(|_| true)
            .or_else(|| header(h, &SAMPLED).and_then(sampled_flag));
        return Some(Incoming {
            trace_id,
            span_id: header(h, &SPAN_ID).and_then(hex64),
            sampled,
        });
    }
    if let Some(b3) = header(h, &B3) {
        // `{trace}-{span}[-{sampled}[-{parent}]]`, or just the sampling state.
        let parts: Vec<&str> = b3.split('-').collect();
        if let [trace, span, rest @ ..] = &parts[..]
            && let (Some(trace_id), Some(span_id)) = (hex128(trace), hex64(span))
        {
            return Some(Incoming {
                trace_id,
                span_id: Some(span_id),
                sampled: rest.first().and_then(|s| sampled_flag(s)),
            });
        }
    }
    extract_w3c(h)
}

/// W3C `traceparent`: `{version}-{trace}-{parent}-{flags}` (the OpenTelemetry tracer's only
/// format). An all-zero trace or parent id is invalid.
fn extract_w3c(h: &HeaderMap) -> Option<Incoming> {
    let tp = header(h, &TRACEPARENT)?;
    let parts: Vec<&str> = tp.split('-').collect();
    let [version, trace, span, flags] = parts[..] else {
        return None;
    };
    if version.len() != 2 || version == "ff" || flags.len() != 2 {
        return None;
    }
    let trace_id = (trace.len() == 32).then(|| u128::from_str_radix(trace, 16).ok())??;
    let span_id = hex64(span)?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Incoming {
        trace_id,
        span_id: Some(span_id),
        sampled: Some(flags & 1 == 1),
    })
}

/// Envoy samples a stable share of request ids: the id's hash modulo 10000 below the
/// percentage × 100.
fn sampled_by_request_id(h: &HeaderMap, percent: f64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    if percent <= 0.0 {
        return false;
    }
    let id = h
        .get("x-request-id")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let bucket = crate::snapshot::balance::hash64(id) % 10_000;
    (bucket as f64) < percent * 100.0
}

fn set(h: &mut HeaderMap, name: HeaderName, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(name, v);
    }
}

fn traceparent(trace_id: u128, span_id: u64, sampled: bool) -> String {
    let flags = if sampled { "01" } else { "00" };
    format!("00-{trace_id:032x}-{span_id:016x}-{flags}")
}

/// One hop's span while its request runs.
#[derive(Debug)]
pub struct ActiveSpan {
    trace_id: u128,
    span_id: u64,
    parent_id: Option<u64>,
    server: bool,
    start: SystemTime,
    started: Instant,
    tracer: Arc<Tracer>,
    custom: Vec<(String, String)>,
    trace_state: String,
}

/// Starts the span of a request on this hop, and makes the request carry it on: None when the
/// tracer has no provider (headers propagate as they came) or the trace is not sampled.
pub fn start(
    tracing: &Tracing,
    direction: Direction,
    headers: &mut HeaderMap,
) -> Option<ActiveSpan> {
    let tracer = tracing.tracer.clone()?;
    let w3c = matches!(tracer.collector, Collector::Otlp { .. });
    let incoming = if w3c {
        extract_w3c(headers)
    } else {
        extract(headers)
    };
    let sampled = incoming
        .and_then(|i| i.sampled)
        .unwrap_or_else(|| sampled_by_request_id(headers, tracing.sampling));
    let trace_id = incoming.map_or_else(rand::random::<u128>, |i| i.trace_id);
    let parent_id = incoming.and_then(|i| i.span_id);
    let span_id = rand::random::<u64>() | 1;
    if w3c {
        set(
            headers,
            TRACEPARENT,
            traceparent(trace_id, span_id, sampled),
        );
    } else {
        set(headers, TRACE_ID, format!("{trace_id:032x}"));
        set(headers, SPAN_ID, format!("{span_id:016x}"));
        match parent_id {
            Some(p) => set(headers, PARENT_ID, format!("{p:016x}")),
            None => {
                headers.remove(&PARENT_ID);
            }
        }
        set(
            headers,
            SAMPLED,
            if sampled { "1" } else { "0" }.to_string(),
        );
        headers.remove(&B3);
        if headers.contains_key(&TRACEPARENT) {
            set(
                headers,
                TRACEPARENT,
                traceparent(trace_id, span_id, sampled),
            );
        }
    }
    if !sampled {
        return None;
    }
    let custom = tracing
        .custom_tags
        .iter()
        .map(|(tag, source)| {
            let value = match source {
                TagSource::Value(v) => v.clone(),
                TagSource::Header(name, default) => headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map_or_else(|| default.clone(), str::to_owned),
            };
            (tag.clone(), value)
        })
        .collect();
    let trace_state = if w3c && incoming.is_some() {
        header(headers, &TRACESTATE).unwrap_or_default().to_string()
    } else {
        String::new()
    };
    Some(ActiveSpan {
        trace_id,
        span_id,
        parent_id,
        server: direction == Direction::Inbound,
        start: SystemTime::now(),
        started: Instant::now(),
        tracer,
        custom,
        trace_state,
    })
}

/// A finished span, as both reporters need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_id: Option<u64>,
    pub server: bool,
    pub name: String,
    /// Start, in microseconds since the epoch.
    pub start_us: u64,
    pub duration_us: u64,
    /// The local endpoint's service name and address.
    pub service: String,
    pub ip: String,
    /// Envoy's span tags, then the custom tags, in that order.
    pub tags: Vec<(String, String)>,
    pub error: bool,
    /// W3C `tracestate` the request carried (OpenTelemetry only).
    pub trace_state: String,
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Istio's default `tracingServiceName` (APP_LABEL_AND_NAMESPACE): `<app>.<namespace>`, the
/// workload's `<name>.<namespace>` without an `app` label.
fn service_name(me: &weft_telemetry::PeerInfo, node_cluster: &str) -> String {
    let app = me.app.to_string();
    if app.is_empty() || app == "unknown" {
        node_cluster.to_string()
    } else {
        format!("{app}.{}", me.namespace)
    }
}

/// Ends a span and queues it to its collector.
pub fn finish(span: ActiveSpan, proxy: &Arc<Proxy>, entry: &AccessLogEntry) {
    let me = proxy.telemetry.me();
    let authority = entry.authority.clone().unwrap_or_default();
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h);
    let port = entry.downstream_local_address.map_or(0, |a| a.port());
    let path = entry.path.clone().unwrap_or_default();
    let scheme = if span.server && entry.downstream_peer_uri_san.is_some() {
        "https"
    } else {
        "http"
    };
    let mut tags: Vec<(String, String)> = Vec::with_capacity(24 + span.custom.len());
    let mut tag = |k: &str, v: String| tags.push((k.to_string(), v));
    tag("component", "proxy".into());
    tag("node_id", proxy.telemetry.node_id().to_string());
    tag("zone", String::new());
    tag("istio.canonical_service", me.canonical_service.to_string());
    tag(
        "istio.canonical_revision",
        me.canonical_revision.to_string(),
    );
    tag("istio.namespace", me.namespace.to_string());
    tag("istio.mesh_id", proxy.options.trust_domain.clone());
    tag(
        "guid:x-request-id",
        entry.request_id.clone().unwrap_or_default(),
    );
    tag("http.url", format!("{scheme}://{authority}{path}"));
    tag("http.method", entry.method.clone().unwrap_or_default());
    tag(
        "http.protocol",
        entry.protocol.map(|p| p.as_str()).unwrap_or("-").into(),
    );
    tag("downstream_cluster", "-".into());
    tag(
        "user_agent",
        entry.user_agent.clone().unwrap_or_else(|| "-".into()),
    );
    if let Some(a) = entry.downstream_remote_address {
        tag("peer.address", a.ip().to_string());
    }
    tag("request_size", entry.bytes_received.to_string());
    tag("response_size", entry.bytes_sent.to_string());
    tag("http.status_code", entry.response_code.to_string());
    tag("response_flags", entry.response_flags.to_string());
    if let Some(c) = &entry.upstream_cluster {
        tag("upstream_cluster", c.to_string());
        tag("upstream_cluster.name", c.to_string());
    }
    let error = entry.response_code >= 500 || entry.response_code == 0;
    if error {
        tag("error", "true".into());
    }
    tags.extend(span.custom);
    let service = match &span.tracer.collector {
        Collector::Otlp { service_name, .. } if !service_name.is_empty() => service_name.clone(),
        _ => service_name(&me, proxy.telemetry.node_cluster()),
    };
    let finished = Span {
        trace_id: span.trace_id,
        span_id: span.span_id,
        parent_id: span.parent_id,
        server: span.server,
        name: format!("{host}:{port}/*"),
        start_us: micros(span.start),
        duration_us: span.started.elapsed().as_micros().max(1) as u64,
        service,
        ip: proxy.options.pod_ip.clone(),
        tags,
        error,
        trace_state: span.trace_state,
    };
    span.tracer
        .reporter
        .get_or_init(|| proxy.telemetry.reporter(proxy, &span.tracer.collector))
        .send(finished);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn tracing(sampling: f64) -> Tracing {
        Tracing {
            sampling,
            custom_tags: vec![(
                "user".into(),
                TagSource::Header(HeaderName::from_static("end-user"), "anonymous".into()),
            )],
            tracer: Some(Arc::new(Tracer {
                collector: Collector::Zipkin {
                    cluster: "outbound|9411||zipkin.istio-system.svc.cluster.local".into(),
                    hostname: "zipkin.istio-system.svc.cluster.local".into(),
                    endpoint: "/api/v2/spans".into(),
                },
                reporter: std::sync::OnceLock::new(),
            })),
        }
    }

    #[test]
    fn b3_single_and_traceparent_contexts_are_read() {
        let b3 = headers(&[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
        ]);
        assert_eq!(
            extract(&b3),
            Some(Incoming {
                trace_id: 0x80f198ee56343ba864fe8b2a57d3eff7,
                span_id: Some(0xe457b5a2e4d86bd1),
                sampled: Some(true)
            })
        );
        let single = headers(&[("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0")]);
        assert_eq!(extract(&single).and_then(|i| i.sampled), Some(false));
        let w3c = headers(&[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )]);
        let i = extract(&w3c).unwrap();
        assert_eq!(i.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
        assert_eq!(i.sampled, Some(true));
        assert_eq!(extract(&headers(&[("x-b3-traceid", "zz")])), None);
    }

    #[test]
    fn a_span_joins_the_trace_and_carries_it_on() {
        let t = tracing(0.0);
        let mut h = headers(&[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
            ("end-user", "jason"),
        ]);
        let span = start(&t, Direction::Outbound, &mut h).expect("sampled upstream");
        assert_eq!(span.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
        assert_eq!(span.parent_id, Some(0xe457b5a2e4d86bd1));
        assert_eq!(h["x-b3-parentspanid"], "e457b5a2e4d86bd1");
        assert_eq!(h["x-b3-spanid"], format!("{:016x}", span.span_id));
        assert_eq!(span.custom, vec![("user".into(), "jason".into())]);
        // An unsampled trace propagates, no span.
        let mut h = headers(&[
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "0"),
        ]);
        assert!(start(&tracing(100.0), Direction::Inbound, &mut h).is_none());
        assert_eq!(h["x-b3-sampled"], "0");
    }

    #[test]
    fn new_traces_follow_the_sampling_percentage() {
        let sampled = |pct: f64| {
            (0..2000)
                .filter(|i| {
                    let mut h = headers(&[("x-request-id", &format!("id-{i}"))]);
                    start(&tracing(pct), Direction::Outbound, &mut h).is_some()
                })
                .count()
        };
        assert_eq!(sampled(100.0), 2000);
        assert_eq!(sampled(0.0), 0);
        let ten = sampled(10.0);
        assert!((100..300).contains(&ten), "{ten}");
        // The decision is the request id's: the same id, the same decision.
        let mut a = headers(&[("x-request-id", "fixed")]);
        let mut b = headers(&[("x-request-id", "fixed")]);
        assert_eq!(
            start(&tracing(50.0), Direction::Outbound, &mut a).is_some(),
            start(&tracing(50.0), Direction::Outbound, &mut b).is_some()
        );
    }
}
