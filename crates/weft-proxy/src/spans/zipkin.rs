//! Zipkin v2 JSON spans (`POST /api/v2/spans`), as Envoy's Zipkin tracer sends them.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request};
use serde_json::{Map, Value, json};

use super::Span;
use super::report::REPORT_TIMEOUT;
use crate::Proxy;
use crate::conn::ConnInfo;
use crate::snapshot::Cluster;

/// A span in Zipkin v2 JSON.
pub(super) fn json(span: &Span) -> Value {
    let tags: Map<String, Value> = span
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut s = json!({
        "traceId": format!("{:032x}", span.trace_id),
        "id": format!("{:016x}", span.span_id),
        "name": span.name,
        "kind": if span.server { "SERVER" } else { "CLIENT" },
        "timestamp": span.start_us,
        "duration": span.duration_us,
        "localEndpoint": {
            "serviceName": span.service,
            "ipv4": span.ip,
        },
        "tags": tags,
    });
    if let Some(p) = span.parent_id {
        s["parentId"] = Value::String(format!("{p:016x}"));
    }
    s
}

/// Posts a batch to the collector's cluster.
pub(super) async fn post(
    proxy: &Arc<Proxy>,
    cluster: &Arc<Cluster>,
    hostname: &str,
    endpoint: &str,
    spans: &[Span],
) -> Result<(), String> {
    let body = Bytes::from(Value::Array(spans.iter().map(json).collect()).to_string());
    let (parts, ()) = Request::builder()
        .method(Method::POST)
        .uri(endpoint)
        .header(http::header::HOST, hostname)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(())
        .map_err(|e| e.to_string())?
        .into_parts();
    let conn = Arc::new(ConnInfo::local_call());
    let h2 = cluster.protocol.h2_for(http::Version::HTTP_11);
    let call = crate::http::grpc::call(proxy, &conn, cluster, h2, hostname, parts, Some(body));
    let (head, _) = tokio::time::timeout(REPORT_TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer within {REPORT_TIMEOUT:?}"))??;
    if head.status.is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {}", head.status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_in_zipkin_v2_json() {
        let span = Span {
            trace_id: 0x80f198ee56343ba864fe8b2a57d3eff7,
            span_id: 0xe457b5a2e4d86bd1,
            parent_id: Some(0x05e3ac9a4f6e3b90),
            server: true,
            name: "httpbin.default.svc.cluster.local:8000/*".into(),
            start_us: 1_700_000_000_000_000,
            duration_us: 1200,
            service: "httpbin.default".into(),
            ip: "10.0.0.7".into(),
            tags: vec![("http.status_code".into(), "418".into())],
            error: false,
            trace_state: String::new(),
        };
        let j = json(&span);
        assert_eq!(j["traceId"], "80f198ee56343ba864fe8b2a57d3eff7");
        assert_eq!(j["id"], "e457b5a2e4d86bd1");
        assert_eq!(j["parentId"], "05e3ac9a4f6e3b90");
        assert_eq!(j["kind"], "SERVER");
        assert_eq!(j["localEndpoint"]["serviceName"], "httpbin.default");
        assert_eq!(j["tags"]["http.status_code"], "418");
        assert_eq!(j["duration"], 1200);
    }
}
