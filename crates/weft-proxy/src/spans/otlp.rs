//! OTLP spans (`opentelemetry.proto.collector.trace.v1.TraceService/Export` over gRPC), as
//! Envoy's OpenTelemetry tracer sends them: one resource with the proxy's `service.name`, the
//! span tags as string attributes, SERVER or CLIENT kind, and an error status when the span is
//! tagged `error`.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1 as otlp;

use super::Span;
use super::report::REPORT_TIMEOUT;
use crate::Proxy;
use crate::conn::ConnInfo;
use crate::http::grpc::ClusterChannel;
use crate::otlp::string_kv;
use crate::snapshot::Cluster;

/// A span in OTLP.
pub(super) fn span(s: Span) -> otlp::Span {
    let start = s.start_us.saturating_mul(1000);
    otlp::Span {
        trace_id: s.trace_id.to_be_bytes().to_vec(),
        span_id: s.span_id.to_be_bytes().to_vec(),
        parent_span_id: s
            .parent_id
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        trace_state: s.trace_state,
        name: s.name,
        kind: if s.server {
            otlp::span::SpanKind::Server
        } else {
            otlp::span::SpanKind::Client
        } as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(s.duration_us.saturating_mul(1000)),
        attributes: s.tags.into_iter().map(|(k, v)| string_kv(&k, v)).collect(),
        status: s.error.then(|| otlp::Status {
            code: otlp::status::StatusCode::Error as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The export request of a batch: spans grouped by service name (one per proxy in practice).
pub(super) fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    let mut by_service: Vec<(String, String, Vec<otlp::Span>)> = Vec::new();
    for s in spans {
        let (service, ip) = (s.service.clone(), s.ip.clone());
        match by_service.iter_mut().find(|(svc, _, _)| *svc == service) {
            Some((_, _, v)) => v.push(span(s)),
            None => by_service.push((service, ip, vec![span(s)])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, ip, spans)| otlp::ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string_kv("service.name", service), string_kv("host.ip", ip)],
                    ..Default::default()
                }),
                scope_spans: vec![otlp::ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "weft".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// Exports a batch to the collector's cluster.
pub(super) async fn export(
    proxy: &Arc<Proxy>,
    cluster: Arc<Cluster>,
    authority: &str,
    spans: Vec<Span>,
) -> Result<(), String> {
    let channel = ClusterChannel {
        proxy: proxy.clone(),
        conn: Arc::new(ConnInfo::local_call()),
        cluster,
        authority: authority.into(),
    };
    let mut client = TraceServiceClient::new(channel);
    let call = client.export(request(spans));
    match tokio::time::timeout(REPORT_TIMEOUT, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(status.to_string()),
        Err(_) => Err(format!("no answer within {REPORT_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_grouped_by_service_with_ids_as_bytes() {
        let mk = |service: &str, id: u64, error: bool| Span {
            trace_id: 0x0af7651916cd43dd8448eb211c80319c,
            span_id: id,
            parent_id: (id == 2).then_some(1),
            server: id == 1,
            name: "productpage.default.svc.cluster.local:9080/*".into(),
            start_us: 5,
            duration_us: 7,
            service: service.into(),
            ip: "10.0.0.1".into(),
            tags: vec![("http.status_code".into(), "503".into())],
            error,
            trace_state: "vendor=x".into(),
        };
        let r = request(vec![
            mk("productpage.default", 1, false),
            mk("productpage.default", 2, true),
            mk("reviews.default", 3, false),
        ]);
        assert_eq!(r.resource_spans.len(), 2);
        let first = &r.resource_spans[0];
        assert_eq!(
            first.resource.as_ref().unwrap().attributes[0],
            string_kv("service.name", "productpage.default".into())
        );
        let spans = &first.scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        assert_eq!(
            spans[0].trace_id,
            0x0af7651916cd43dd8448eb211c80319cu128.to_be_bytes()
        );
        assert_eq!(spans[0].kind, otlp::span::SpanKind::Server as i32);
        assert!(spans[0].parent_span_id.is_empty() && spans[0].status.is_none());
        assert_eq!(spans[1].parent_span_id, 1u64.to_be_bytes());
        assert_eq!(spans[1].kind, otlp::span::SpanKind::Client as i32);
        assert_eq!(spans[1].start_time_unix_nano, 5000);
        assert_eq!(spans[1].end_time_unix_nano, 12000);
        assert_eq!(
            spans[1].status.as_ref().map(|s| s.code),
            Some(otlp::status::StatusCode::Error as i32)
        );
        assert_eq!(spans[1].trace_state, "vendor=x");
    }
}
