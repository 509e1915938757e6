//! Tracing → the HCM's `tracing` (Envoy's Zipkin tracer, `envoy.tracers.zipkin`: Zipkin v2 JSON
//! to the provider's cluster at `/api/v2/spans`, 128-bit trace ids, no shared span context; or
//! Envoy's OpenTelemetry tracer, `envoy.tracers.opentelemetry`: OTLP over gRPC to the provider's
//! cluster, with the proxy's service name), as istiod writes it: from the Telemetry API
//! (`zipkin` and, as Istio 1.16 added, `opentelemetry` providers), else from MeshConfig's
//! legacy settings (`enableTracing` with `defaultConfig.tracing.zipkin.address`, used only when
//! that address is a service of the registry). Sampling is `randomSamplingPercentage`, else
//! `defaultConfig.tracing.sampling` (Istio's 1% when unset).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::trace::v3 as trace;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::r#type::tracing::v3 as tags;
use envoy_types::pb::envoy::r#type::v3::Percent;
use weft_api::mesh::Provider;
use weft_api::telemetry::CustomTag;

use super::Mode;
use crate::envoy;
use crate::sidecar::ProxyView;

pub const ZIPKIN_TRACER: &str = "envoy.tracers.zipkin";
pub const OTEL_TRACER: &str = "envoy.tracers.opentelemetry";
/// Istio's default sampling percentage (`PILOT_TRACE_SAMPLING`).
const DEFAULT_SAMPLING: f64 = 1.0;

fn custom_tags(t: &BTreeMap<String, CustomTag>) -> Vec<tags::CustomTag> {
    use tags::custom_tag::{Environment, Header, Literal, Type};
    t.iter()
        .filter_map(|(name, tag)| {
            let kind = if let Some(l) = &tag.literal {
                Type::Literal(Literal {
                    value: l.value.clone(),
                })
            } else if let Some(e) = &tag.environment {
                Type::Environment(Environment {
                    name: e.name.clone(),
                    default_value: e.default_value.clone(),
                })
            } else if let Some(h) = &tag.header {
                Type::RequestHeader(Header {
                    name: h.name.clone(),
                    default_value: h.default_value.clone(),
                })
            } else {
                return None;
            };
            Some(tags::CustomTag {
                tag: name.clone(),
                r#type: Some(kind),
            })
        })
        .collect()
}

fn zipkin(cluster: String, hostname: String) -> trace::tracing::Http {
    trace::tracing::Http {
        name: ZIPKIN_TRACER.into(),
        config_type: Some(trace::tracing::http::ConfigType::TypedConfig(envoy::any(
            &trace::ZipkinConfig {
                collector_cluster: cluster,
                collector_endpoint: "/api/v2/spans".into(),
                trace_id_128bit: true,
                shared_span_context: Some(envoy::boolv(false)),
                collector_endpoint_version: trace::zipkin_config::CollectorEndpointVersion::HttpJson
                    as i32,
                collector_hostname: hostname,
                ..Default::default()
            },
        ))),
    }
}

fn opentelemetry(cluster: String, hostname: String, service_name: String) -> trace::tracing::Http {
    use envoy_types::pb::envoy::config::core::v3::{GrpcService, grpc_service};
    trace::tracing::Http {
        name: OTEL_TRACER.into(),
        config_type: Some(trace::tracing::http::ConfigType::TypedConfig(envoy::any(
            &trace::OpenTelemetryConfig {
                grpc_service: Some(GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: cluster,
                            authority: hostname,
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }),
                service_name,
                ..Default::default()
            },
        ))),
    }
}

/// The service name of a proxy's spans, as pilot-agent's default `tracingServiceName`
/// (APP_LABEL_AND_NAMESPACE) makes it: `<app label>.<namespace>`, else `<pod>.<namespace>`.
pub fn service_name(view: &ProxyView) -> String {
    let labels = view.labels();
    let app = labels
        .get("app")
        .filter(|a| !a.is_empty())
        .map_or(view.node.name.as_str(), String::as_str);
    format!("{app}.{}", view.node.namespace)
}

/// Whether the proxy's `mode` spans go to an OpenTelemetry provider (their config then names
/// the proxy's service, so outbound listeners are not shared across services).
pub fn uses_opentelemetry(view: &ProxyView, mode: Mode) -> bool {
    let labels = view.labels();
    view.push
        .telemetry
        .tracing(&view.node.namespace, &labels, mode)
        .and_then(|t| t.provider)
        .and_then(|name| view.push.telemetry.provider(&name).map(|p| &p.provider))
        .is_some_and(|p| matches!(p, Provider::Opentelemetry(_)))
}

/// The HCM's tracing for a proxy's listeners of one direction (None: no tracing).
pub fn hcm_tracing(view: &ProxyView, mode: Mode) -> Option<hcm::http_connection_manager::Tracing> {
    let mesh = &view.push.mesh;
    let legacy = mesh.default_config.tracing.clone().unwrap_or_default();
    let default_sampling = if legacy.sampling > 0.0 {
        legacy.sampling
    } else {
        DEFAULT_SAMPLING
    };
    let labels = view.labels();
    let (provider, sampling, tags) =
        match view
            .push
            .telemetry
            .tracing(&view.node.namespace, &labels, mode)
        {
            Some(t) => {
                let provider = match (&t.provider, t.disable_span_reporting) {
                    (Some(name), false) => {
                        match view.push.telemetry.provider(name).map(|p| &p.provider) {
                            Some(Provider::Zipkin(z)) => {
                                let (hostname, cluster) =
                                    view.push.registry.lookup_cluster(&z.service, z.port).ok()?;
                                Some(zipkin(cluster, hostname))
                            }
                            Some(Provider::Opentelemetry(o)) => {
                                let (hostname, cluster) =
                                    view.push.registry.lookup_cluster(&o.service, o.port).ok()?;
                                Some(opentelemetry(cluster, hostname, service_name(view)))
                            }
                            // Unknown or not a tracer: named at /debug/config_errors.
                            _ => return None,
                        }
                    }
                    // No provider, or reporting disabled: headers still propagate, no spans.
                    _ => None,
                };
                (
                    provider,
                    t.sampling.unwrap_or(default_sampling),
                    custom_tags(&t.custom_tags),
                )
            }
            None => {
                if !mesh.enable_tracing {
                    return None;
                }
                let address = legacy.zipkin.as_ref()?.address.clone();
                let (host, port) = address.rsplit_once(':')?;
                let port: u32 = port.parse().ok()?;
                // `zipkin.istio-system` → the registry's FQDN.
                let fqdn = if host.split('.').count() == 2 {
                    format!("{host}.svc.{}", crate::push::DOMAIN_SUFFIX)
                } else {
                    host.to_string()
                };
                let (hostname, cluster) = view.push.registry.lookup_cluster(&fqdn, port).ok()?;
                (
                    Some(zipkin(cluster, hostname)),
                    default_sampling,
                    custom_tags(&legacy.custom_tags),
                )
            }
        };
    Some(hcm::http_connection_manager::Tracing {
        client_sampling: Some(Percent { value: 100.0 }),
        random_sampling: Some(Percent {
            value: sampling.clamp(0.0, 100.0),
        }),
        overall_sampling: Some(Percent { value: 100.0 }),
        custom_tags: tags,
        provider,
        ..Default::default()
    })
}
