//! An HCM's `tracing`, compiled: the sampling percentage, the custom tags (environment values
//! read once, here) and the tracer (Envoy's Zipkin tracer: the collector's cluster, host and
//! endpoint). A tracer Weft does not run refuses the listener.

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

/// Envoy's Zipkin tracer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Zipkin {
    pub cluster: String,
    /// `Host` of the reports (the cluster name when unset, as Envoy does).
    pub hostname: String,
    pub endpoint: String,
}

#[derive(Debug)]
pub struct Tracing {
    /// Share of requests without a sampling decision that start a sampled trace, in %.
    pub sampling: f64,
    pub custom_tags: Vec<(String, TagSource)>,
    /// None: trace headers propagate, no span is made.
    pub zipkin: Option<Arc<Zipkin>>,
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
    let zipkin = match &t.provider {
        None => None,
        Some(p) => {
            let any = match &p.config_type {
                Some(trace::tracing::http::ConfigType::TypedConfig(any))
                    if any.type_url.ends_with("envoy.config.trace.v3.ZipkinConfig") =>
                {
                    any
                }
                _ => {
                    return Err(ProxyError::Config(format!(
                        "{what}: tracer {} is not supported (Weft runs envoy.tracers.zipkin); \
                         refused",
                        p.name
                    )));
                }
            };
            let z = trace::ZipkinConfig::decode(any.value.as_slice())
                .map_err(|e| ProxyError::Config(format!("{what}: zipkin config: {e}")))?;
            if z.collector_endpoint_version
                != trace::zipkin_config::CollectorEndpointVersion::HttpJson as i32
            {
                return Err(ProxyError::Config(format!(
                    "{what}: zipkin collector_endpoint_version: only HTTP_JSON is supported; \
                     refused"
                )));
            }
            Some(Arc::new(Zipkin {
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
            }))
        }
    };
    Ok(Tracing {
        sampling: t.random_sampling.as_ref().map_or(100.0, |p| p.value),
        custom_tags,
        zipkin,
    })
}
