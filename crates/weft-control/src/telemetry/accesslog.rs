//! Access logging → Envoy `AccessLog`s on the HCMs and TCP proxies of one direction, as istiod
//! 1.14 writes them (`pilot/pkg/networking/core/v1alpha3/accesslog.go`): the Telemetry API's
//! providers (`envoyFileAccessLog` → `envoy.access_loggers.file`, `envoyOtelAls` →
//! `envoy.access_loggers.open_telemetry`) with the CEL filter as
//! `envoy.access_loggers.extension_filters.cel`, else MeshConfig's legacy `accessLogFile`.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3 as file_log;
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3 as cel;
use envoy_types::pb::envoy::extensions::access_loggers::grpc::v3 as grpc_log;
use envoy_types::pb::envoy::extensions::access_loggers::open_telemetry::v3 as otel;
use envoy_types::pb::opentelemetry::proto::common::v1 as otlp;
use weft_api::mesh::{EnvoyFileAccessLogProvider, EnvoyOtelAlsProvider, Provider};
use weft_telemetry::accesslog::{ENVOY_JSON_LOG_FORMAT_ISTIO, ENVOY_TEXT_LOG_FORMAT};

use super::Mode;
use crate::envoy;
use crate::sidecar::ProxyView;

pub const FILE_LOGGER: &str = "envoy.access_loggers.file";
pub const OTEL_LOGGER: &str = "envoy.access_loggers.open_telemetry";
pub const CEL_FILTER: &str = "envoy.access_loggers.extension_filters.cel";
const DEFAULT_OTEL_LOG_NAME: &str = "otel_envoy_accesslog";
/// The filter-state objects istiod asks the OpenTelemetry logger for (peer metadata).
const PEER_FILTER_STATE: [&str; 4] = [
    "wasm.upstream_peer",
    "wasm.upstream_peer_id",
    "wasm.downstream_peer",
    "wasm.downstream_peer_id",
];

/// The access logs of a proxy's listeners of one direction.
pub fn access_logs(view: &ProxyView, mode: Mode) -> Vec<accesslog::AccessLog> {
    let labels = view.labels();
    let Some(logging) = view
        .push
        .telemetry
        .access_logging(&view.node.namespace, &labels, mode)
    else {
        return legacy(&view.push.mesh);
    };
    let filter = logging
        .filter
        .as_ref()
        .map(|expression| accesslog::AccessLogFilter {
            filter_specifier: Some(
                accesslog::access_log_filter::FilterSpecifier::ExtensionFilter(
                    accesslog::ExtensionFilter {
                        name: CEL_FILTER.into(),
                        config_type: Some(accesslog::extension_filter::ConfigType::TypedConfig(
                            envoy::any(&cel::ExpressionFilter {
                                expression: expression.clone(),
                                ..Default::default()
                            }),
                        )),
                    },
                ),
            ),
        });
    logging
        .providers
        .iter()
        .filter_map(|p| {
            let mut log = match &p.provider {
                Provider::EnvoyFileAccessLog(f) => file_provider(f),
                Provider::EnvoyOtelAls(o) => otel_provider(view, o)?,
                _ => return None,
            };
            log.filter = filter.clone();
            Some(log)
        })
        .collect()
}

fn text_source(mut text: String) -> core::substitution_format_string::Format {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    core::substitution_format_string::Format::TextFormatSource(core::DataSource {
        specifier: Some(core::data_source::Specifier::InlineString(text)),
        ..Default::default()
    })
}

fn istio_json() -> core::substitution_format_string::Format {
    core::substitution_format_string::Format::JsonFormat(envoy::string_struct(
        ENVOY_JSON_LOG_FORMAT_ISTIO
            .iter()
            .map(|(k, v)| (*k, v.to_string())),
    ))
}

/// `envoyFileAccessLog`: text (Istio's TEXT format by default) or labels as JSON (Istio's JSON
/// keys when empty).
fn file_provider(f: &EnvoyFileAccessLogProvider) -> accesslog::AccessLog {
    let format = match &f.log_format {
        Some(lf) => match (&lf.text, &lf.labels) {
            (Some(t), _) if !t.is_empty() => text_source(t.clone()),
            (_, Some(labels)) if !labels.is_empty() => {
                core::substitution_format_string::Format::JsonFormat(json_struct(labels))
            }
            (_, Some(_)) => istio_json(),
            _ => text_source(ENVOY_TEXT_LOG_FORMAT.to_string()),
        },
        None => text_source(ENVOY_TEXT_LOG_FORMAT.to_string()),
    };
    let path = if f.path.is_empty() {
        "/dev/stdout".to_string()
    } else {
        f.path.clone()
    };
    file_access_log(path, format)
}

fn json_struct(
    labels: &serde_json::Map<String, serde_json::Value>,
) -> envoy_types::pb::google::protobuf::Struct {
    envoy::string_struct(labels.iter().map(|(k, v)| {
        let v = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        (k.as_str(), v)
    }))
}

/// `envoyOtelAls` (`buildOpenTelemetryAccessLogConfig`): OTLP logs over gRPC to the provider's
/// service; the body is the text format, the labels are the attributes (sorted by key). None
/// when the service is not in the registry (named at `/debug/config_errors`).
fn otel_provider(view: &ProxyView, o: &EnvoyOtelAlsProvider) -> Option<accesslog::AccessLog> {
    let (hostname, cluster) = match view.push.registry.lookup_cluster(&o.service, o.port) {
        Ok(found) => found,
        Err(e) => {
            tracing::debug!(service = %o.service, error = %e, "envoyOtelAls provider skipped");
            return None;
        }
    };
    let log_name = if o.log_name.is_empty() {
        DEFAULT_OTEL_LOG_NAME.to_string()
    } else {
        o.log_name.clone()
    };
    let text = o
        .log_format
        .as_ref()
        .map(|f| f.text.clone())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| ENVOY_TEXT_LOG_FORMAT.to_string());
    let attributes = o
        .log_format
        .as_ref()
        .and_then(|f| f.labels.as_ref())
        .filter(|l| !l.is_empty())
        .map(|labels| {
            let sorted: BTreeMap<&String, &serde_json::Value> = labels.iter().collect();
            otlp::KeyValueList {
                values: sorted
                    .into_iter()
                    .map(|(k, v)| otlp::KeyValue {
                        key: k.clone(),
                        value: Some(otlp::AnyValue {
                            value: Some(otlp::any_value::Value::StringValue(
                                v.as_str().unwrap_or_default().to_string(),
                            )),
                        }),
                        ..Default::default()
                    })
                    .collect(),
            }
        });
    #[allow(deprecated)]
    let cfg = otel::OpenTelemetryAccessLogConfig {
        common_config: Some(grpc_log::CommonGrpcAccessLogConfig {
            log_name,
            grpc_service: Some(core::GrpcService {
                target_specifier: Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(
                    core::grpc_service::EnvoyGrpc {
                        cluster_name: cluster,
                        authority: hostname,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            transport_api_version: core::ApiVersion::V3 as i32,
            filter_state_objects_to_log: PEER_FILTER_STATE.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        body: Some(otlp::AnyValue {
            value: Some(otlp::any_value::Value::StringValue(text)),
        }),
        attributes,
        ..Default::default()
    };
    Some(accesslog::AccessLog {
        name: OTEL_LOGGER.into(),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(envoy::any(
            &cfg,
        ))),
        ..Default::default()
    })
}

/// MeshConfig `accessLogFile` / `accessLogEncoding` / `accessLogFormat`.
fn legacy(mesh: &weft_api::MeshConfig) -> Vec<accesslog::AccessLog> {
    let path = mesh.access_log_file.clone();
    if path.is_empty() {
        return Vec::new();
    }
    let json = mesh.access_log_encoding == weft_api::mesh::AccessLogEncoding::Json;
    let custom = Some(mesh.access_log_format.clone()).filter(|f| !f.is_empty());
    let format = match (json, custom) {
        // A custom JSON format is a JSON object of key → operator string.
        (true, Some(f)) => {
            match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&f) {
                Ok(m) => core::substitution_format_string::Format::JsonFormat(json_struct(&m)),
                Err(_) => istio_json(),
            }
        }
        (true, None) => istio_json(),
        (false, custom) => text_source(custom.unwrap_or_else(|| ENVOY_TEXT_LOG_FORMAT.to_string())),
    };
    vec![file_access_log(path, format)]
}

fn file_access_log(
    path: String,
    format: core::substitution_format_string::Format,
) -> accesslog::AccessLog {
    let cfg = file_log::FileAccessLog {
        path,
        access_log_format: Some(file_log::file_access_log::AccessLogFormat::LogFormat(
            core::SubstitutionFormatString {
                format: Some(format),
                ..Default::default()
            },
        )),
    };
    accesslog::AccessLog {
        name: FILE_LOGGER.into(),
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(envoy::any(
            &cfg,
        ))),
        ..Default::default()
    }
}
