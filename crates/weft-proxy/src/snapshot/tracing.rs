//! An HCM's `tracing`, compiled: the sampling percentage, the custom tags (environment values
//! read once, here) and the tracer (Envoy's Zipkin tracer: the collector's cluster, host and
//! endpoint; or Envoy's OpenTelemetry tracer: the collector's gRPC cluster, authority and the
//! service name). A tracer Weft does not run refuses the listener.

use std::sync::Arc;

use envoy_types::pb::envoy::config::trace::v3 as trace;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as xhcm;
use envoy_types::pb::envoy::r#type::tracing::v3 as tags;
use prost::Message;

use crate::error::ProxyError;

/// Where a custom tag's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSource {
    /// A literal or an environment variable's value (read when the config is compiled).
    Value(String),
    /// A request header, with its default.
    Header(http::HeaderName, String),
}

/// Where a tracer's spans go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Collector {
    /// Envoy's Zipkin tracer: Zipkin v2 JSON over HTTP; B3 propagation.
    Zipkin {
        cluster: String,
        /// `Host` of the reports (the cluster name when unset, as Envoy does).
        hostname: String,
        endpoint: String,
    },
    /// Envoy's OpenTelemetry tracer: OTLP `TraceService/Export` over gRPC; W3C `traceparent`
    /// propagation.
    Otlp {
        cluster: String,
        /// The calls' `:authority` (the cluster name when unset, as Envoy does).
        authority: String,
        /// The spans' `service.name` (the proxy's own when unset).
        service_name: String,
    },
}

impl Collector {
    pub fn cluster(&self) -> &str {
        match self {
            Collector::Zipkin { cluster, .. } | Collector::Otlp { cluster, .. } => cluster,
        }
    }
}

/// A tracer and, taken once per snapshot, the proxy's reporter for its collector (the proxy
/// keeps one per collector across configs), so a span does not look it up.
#[derive(Debug)]
pub struct Tracer {
    pub collector: Collector,
    pub reporter: std::sync::OnceLock<Arc<crate::spans::Reporter>>,
}

#[derive(Debug)]
pub struct Tracing {
    /// Share of requests without a sampling decision that start a sampled trace, in %.
    pub sampling: f64,
    pub custom_tags: Vec<(String, TagSource)>,
    /// None: trace headers propagate, no span is made.
    pub tracer: Option<Arc<Tracer>>,
}

pub fn compile(
    t: &xhcm::http_connection_manager::Tracing,
    what: &str,
) -> Result<Tracing, ProxyError> {
    let mut custom_tags = Vec::new();
    for tag in &t.custom_tags {
        use tags::custom_tag::Type;
        let source = match &tag.r#type {
            Some(Type::Literal(l)) => TagSource::Value(l.value.clone()),
            Some(Type::Environment(e)) => {
                TagSource::Value(std::env::var(&e.name).unwrap_or_else(|_| e.default_value.clone()))
            }
            Some(Type::RequestHeader(h)) => TagSource::Header(
                http::HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                    ProxyError::Config(format!(
                        "{what}: tracing custom tag {}: bad header name {:?}",
                        tag.tag, h.name
                    ))
                })?,
                h.default_value.clone(),
            ),
            _ => {
                return Err(ProxyError::Config(format!(
                    "{what}: tracing custom tag {}: only literal, environment and header tags \
                     are supported; refused",
                    tag.tag
                )));
            }
        };
        custom_tags.push((tag.tag.clone(), source));
    }
    let tracer = match &t.provider {
        None => None,
        Some(p) => Some(Arc::new(Tracer {
            collector: collector(p, what)?,
            reporter: std::sync::OnceLock::new(),
        })),
    };
    Ok(Tracing {
        sampling: t.random_sampling.as_ref().map_or(100.0, |p| p.value),
        custom_tags,
        tracer,
    })
}

fn collector(p: &trace::tracing::Http, what: &str) -> Result<Collector, ProxyError> {
    let Some(trace::tracing::http::ConfigType::TypedConfig(any)) = &p.config_type else {
        return Err(ProxyError::Config(format!(
            "{what}: tracer {} has no typed_config; refused",
            p.name
        )));
    };
    if any.type_url.ends_with("envoy.config.trace.v3.ZipkinConfig") {
        let z = trace::ZipkinConfig::decode(any.value.as_slice())
            .map_err(|e| ProxyError::Config(format!("{what}: zipkin config: {e}")))?;
        if z.collector_endpoint_version
            != trace::zipkin_config::CollectorEndpointVersion::HttpJson as i32
        {
            return Err(ProxyError::Config(format!(
                "{what}: zipkin collector_endpoint_version: only HTTP_JSON is supported; refused"
            )));
        }
        return Ok(Collector::Zipkin {
            hostname: if z.collector_hostname.is_empty() {
                z.collector_cluster.clone()
            } else {
                z.collector_hostname
            },
            cluster: z.collector_cluster,
            endpoint: if z.collector_endpoint.is_empty() {
                "/api/v2/spans".into()
            } else {
                z.collector_endpoint
            },
        });
    }
    if any
        .type_url
        .ends_with("envoy.config.trace.v3.OpenTelemetryConfig")
    {
        use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
        let o = trace::OpenTelemetryConfig::decode(any.value.as_slice())
            .map_err(|e| ProxyError::Config(format!("{what}: opentelemetry config: {e}")))?;
        let grpc = match o.grpc_service.and_then(|g| g.target_specifier) {
            Some(TargetSpecifier::EnvoyGrpc(g)) => g,
            _ => {
                return Err(ProxyError::Config(format!(
                    "{what}: opentelemetry tracer: only grpc_service with envoy_grpc is \
                     supported (no http_service or google_grpc); refused"
                )));
            }
        };
        return Ok(Collector::Otlp {
            authority: if grpc.authority.is_empty() {
                grpc.cluster_name.clone()
            } else {
                grpc.authority
            },
            cluster: grpc.cluster_name,
            service_name: o.service_name,
        });
    }
    Err(ProxyError::Config(format!(
        "{what}: tracer {} is not supported (Weft runs envoy.tracers.zipkin and \
         envoy.tracers.opentelemetry); refused",
        p.name
    )))
}
