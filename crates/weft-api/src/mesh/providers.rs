//! `meshConfig.extensionProviders`: named telemetry and ext-authz backends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::mesh::proxy::TraceContext;

/// A proto3 JSON `uint32`: a number or a string holding one (`port: "9000"`, as the istio.io
/// external-authorization task writes it).
fn uint32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    use serde::de::Error;
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(u64),
        Str(String),
    }
    let n = match NumOrStr::deserialize(d)? {
        NumOrStr::Num(n) => n,
        NumOrStr::Str(s) => s.trim().parse::<u64>().map_err(|_| {
            D::Error::invalid_type(
                serde::de::Unexpected::Str(&s),
                &"a non-negative integer (or a string holding one)",
            )
        })?,
    };
    u32::try_from(n).map_err(|_| D::Error::custom(format!("{n} does not fit in a uint32")))
}

/// A named extension provider referenced by Telemetry and CUSTOM AuthorizationPolicy.
///
/// In YAML it is `{name: <n>, <providerType>: {...}}` with exactly one provider type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawExtensionProvider", into = "RawExtensionProvider")]
pub struct ExtensionProvider {
    /// Provider name (unique).
    pub name: String,
    /// The provider type and its settings.
    pub provider: Provider,
}

/// The settings of one extension provider type.
#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    /// External authorization over HTTP.
    EnvoyExtAuthzHttp(EnvoyExtAuthzHttpProvider),
    /// External authorization over gRPC.
    EnvoyExtAuthzGrpc(EnvoyExtAuthzGrpcProvider),
    /// Zipkin tracing.
    Zipkin(ZipkinProvider),
    /// OpenTelemetry tracing (OTLP over gRPC; Istio 1.16+).
    Opentelemetry(OpenTelemetryTracingProvider),
    /// Lightstep tracing.
    Lightstep(LightstepProvider),
    /// Datadog tracing.
    Datadog(DatadogProvider),
    /// Stackdriver telemetry.
    Stackdriver(StackdriverProvider),
    /// OpenCensus agent tracing.
    Opencensus(OpenCensusAgentProvider),
    /// SkyWalking tracing.
    Skywalking(SkyWalkingProvider),
    /// Prometheus metrics.
    Prometheus(PrometheusProvider),
    /// Envoy file access log.
    EnvoyFileAccessLog(EnvoyFileAccessLogProvider),
    /// Envoy HTTP gRPC access log service.
    EnvoyHttpAls(EnvoyHttpAlsProvider),
    /// Envoy TCP gRPC access log service.
    EnvoyTcpAls(EnvoyTcpAlsProvider),
    /// Envoy OpenTelemetry access log.
    EnvoyOtelAls(EnvoyOtelAlsProvider),
}

impl Provider {
    /// The YAML key of this provider type, e.g. `envoyOtelAls`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Provider::EnvoyExtAuthzHttp(_) => "envoyExtAuthzHttp",
            Provider::EnvoyExtAuthzGrpc(_) => "envoyExtAuthzGrpc",
            Provider::Zipkin(_) => "zipkin",
            Provider::Opentelemetry(_) => "opentelemetry",
            Provider::Lightstep(_) => "lightstep",
            Provider::Datadog(_) => "datadog",
            Provider::Stackdriver(_) => "stackdriver",
            Provider::Opencensus(_) => "opencensus",
            Provider::Skywalking(_) => "skywalking",
            Provider::Prometheus(_) => "prometheus",
            Provider::EnvoyFileAccessLog(_) => "envoyFileAccessLog",
            Provider::EnvoyHttpAls(_) => "envoyHttpAls",
            Provider::EnvoyTcpAls(_) => "envoyTcpAls",
            Provider::EnvoyOtelAls(_) => "envoyOtelAls",
        }
    }
}

/// Wire form of [`ExtensionProvider`] (the protobuf oneof as optional fields).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub(crate) struct RawExtensionProvider {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    envoy_ext_authz_http: Option<EnvoyExtAuthzHttpProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    envoy_ext_authz_grpc: Option<EnvoyExtAuthzGrpcProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    zipkin: Option<ZipkinProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    opentelemetry: Option<OpenTelemetryTracingProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lightstep: Option<LightstepProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    datadog: Option<DatadogProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stackdriver: Option<StackdriverProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    opencensus: Option<OpenCensusAgentProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skywalking: Option<SkyWalkingProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prometheus: Option<PrometheusProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    envoy_file_access_log: Option<EnvoyFileAccessLogProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    envoy_http_als: Option<EnvoyHttpAlsProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    envoy_tcp_als: Option<EnvoyTcpAlsProvider>,
    #[serde(skip_serializing_if = "Option::is_none")]
    envoy_otel_als: Option<EnvoyOtelAlsProvider>,
}

impl TryFrom<RawExtensionProvider> for ExtensionProvider {
    type Error = String;

    fn try_from(r: RawExtensionProvider) -> Result<Self, String> {
        let mut found: Vec<Provider> = Vec::new();
        found.extend(r.envoy_ext_authz_http.map(Provider::EnvoyExtAuthzHttp));
        found.extend(r.envoy_ext_authz_grpc.map(Provider::EnvoyExtAuthzGrpc));
        found.extend(r.zipkin.map(Provider::Zipkin));
        found.extend(r.opentelemetry.map(Provider::Opentelemetry));
        found.extend(r.lightstep.map(Provider::Lightstep));
        found.extend(r.datadog.map(Provider::Datadog));
        found.extend(r.stackdriver.map(Provider::Stackdriver));
        found.extend(r.opencensus.map(Provider::Opencensus));
        found.extend(r.skywalking.map(Provider::Skywalking));
        found.extend(r.prometheus.map(Provider::Prometheus));
        found.extend(r.envoy_file_access_log.map(Provider::EnvoyFileAccessLog));
        found.extend(r.envoy_http_als.map(Provider::EnvoyHttpAls));
        found.extend(r.envoy_tcp_als.map(Provider::EnvoyTcpAls));
        found.extend(r.envoy_otel_als.map(Provider::EnvoyOtelAls));
        match found.len() {
            1 => Ok(ExtensionProvider {
                name: r.name,
                provider: found.remove(0),
            }),
            0 => Err(format!(
                "extension provider {:?} sets no provider type; add exactly one of envoyExtAuthzHttp, \
                 envoyExtAuthzGrpc, zipkin, opentelemetry, lightstep, datadog, stackdriver, opencensus, skywalking, \
                 prometheus, envoyFileAccessLog, envoyHttpAls, envoyTcpAls, envoyOtelAls",
                r.name
            )),
            _ => Err(format!(
                "extension provider {:?} sets several provider types ({}); keep exactly one",
                r.name,
                found
                    .iter()
                    .map(Provider::type_name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

impl From<ExtensionProvider> for RawExtensionProvider {
    fn from(p: ExtensionProvider) -> Self {
        let mut r = RawExtensionProvider {
            name: p.name,
            ..RawExtensionProvider::default()
        };
        match p.provider {
            Provider::EnvoyExtAuthzHttp(x) => r.envoy_ext_authz_http = Some(x),
            Provider::EnvoyExtAuthzGrpc(x) => r.envoy_ext_authz_grpc = Some(x),
            Provider::Zipkin(x) => r.zipkin = Some(x),
            Provider::Opentelemetry(x) => r.opentelemetry = Some(x),
            Provider::Lightstep(x) => r.lightstep = Some(x),
            Provider::Datadog(x) => r.datadog = Some(x),
            Provider::Stackdriver(x) => r.stackdriver = Some(x),
            Provider::Opencensus(x) => r.opencensus = Some(x),
            Provider::Skywalking(x) => r.skywalking = Some(x),
            Provider::Prometheus(x) => r.prometheus = Some(x),
            Provider::EnvoyFileAccessLog(x) => r.envoy_file_access_log = Some(x),
            Provider::EnvoyHttpAls(x) => r.envoy_http_als = Some(x),
            Provider::EnvoyTcpAls(x) => r.envoy_tcp_als = Some(x),
            Provider::EnvoyOtelAls(x) => r.envoy_otel_als = Some(x),
        }
        r
    }
}

/// Request body forwarding for ext-authz.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ExtAuthzRequestBody {
    /// Maximum bytes buffered.
    #[serde(deserialize_with = "uint32")]
    pub max_request_bytes: u32,
    /// Send a partial body when the limit is hit.
    pub allow_partial_message: bool,
    /// Send the body as raw bytes.
    pub pack_as_bytes: bool,
}

/// External authorization over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyExtAuthzHttpProvider {
    /// `[<ns>/]<hostname>` of the authorizer (required).
    pub service: String,
    /// Port (required).
    #[serde(deserialize_with = "uint32")]
    pub port: u32,
    /// Check timeout.
    pub timeout: Option<Duration>,
    /// Prefix added to the check request path.
    pub path_prefix: String,
    /// Allow requests when the authorizer fails.
    pub fail_open: bool,
    /// Status returned when the authorizer fails.
    pub status_on_error: String,
    /// Deprecated: request headers sent to the authorizer.
    pub include_headers_in_check: Vec<String>,
    /// Request headers sent to the authorizer.
    pub include_request_headers_in_check: Vec<String>,
    /// Extra headers sent to the authorizer.
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    /// Body forwarding.
    pub include_request_body_in_check: Option<ExtAuthzRequestBody>,
    /// Authorizer headers copied upstream on allow.
    pub headers_to_upstream_on_allow: Vec<String>,
    /// Authorizer headers copied downstream on deny.
    pub headers_to_downstream_on_deny: Vec<String>,
    /// Authorizer headers copied downstream on allow.
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// External authorization over gRPC.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyExtAuthzGrpcProvider {
    /// `[<ns>/]<hostname>` of the authorizer (required).
    pub service: String,
    /// Port (required).
    #[serde(deserialize_with = "uint32")]
    pub port: u32,
    /// Check timeout.
    pub timeout: Option<Duration>,
    /// Allow requests when the authorizer fails.
    pub fail_open: bool,
    /// Status returned when the authorizer fails.
    pub status_on_error: String,
    /// Body forwarding.
    pub include_request_body_in_check: Option<ExtAuthzRequestBody>,
}

/// Zipkin tracing backend.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ZipkinProvider {
    /// `[<ns>/]<hostname>`.
    pub service: String,
    /// Port.
    #[serde(deserialize_with = "uint32")]
    pub port: u32,
    /// Maximum tag length.
    pub max_tag_length: u32,
}

/// OpenTelemetry tracing backend: OTLP spans over gRPC to the collector's service and port.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OpenTelemetryTracingProvider {
    /// `[<ns>/]<hostname>`.
    pub service: String,
    /// Port (the collector's OTLP/gRPC port, usually 4317).
    #[serde(deserialize_with = "uint32")]
    pub port: u32,
    /// Maximum tag length.
    pub max_tag_length: u32,
}

/// Lightstep tracing backend.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LightstepProvider {
    /// `[<ns>/]<hostname>`.
    pub service: String,
    /// Port.
    #[serde(deserialize_with = "uint32")]
    pub port: u32,
    /// Access token.
    pub access_token: String,
    /// Maximum tag length.
    pub max_tag_length: u32,
}

/// Datadog tracing backend.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DatadogProvider {
    /// `[<ns>/]<hostname>`.
    pub service: String,
    /// Port.
    #[serde(deserialize_with = "uint32")]
    pub port: u32,
    /// Maximum tag length.
    pub max_tag_length: u32,
}

/// SkyWalking tracing backend.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SkyWalkingProvider {
    /// `[<ns>/]<hostname>`.
    pub service: String,
    /// Port.
    #[serde(deserialize_with = "uint32")]
    pub port: u32,
    /// Access token.
    pub access_token: String,
}

/// Stackdriver logging settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StackdriverLogging {
    /// Extra log labels.
    pub labels: BTreeMap<String, String>,
}

/// Stackdriver telemetry backend.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StackdriverProvider {
    /// Debug logging.
    pub debug: bool,
    /// Attribute limit.
    pub max_number_of_attributes: Option<i64>,
    /// Annotation limit.
    pub max_number_of_annotations: Option<i64>,
    /// Message event limit.
    pub max_number_of_message_events: Option<i64>,
    /// Maximum tag length.
    pub max_tag_length: u32,
    /// Logging settings.
    pub logging: Option<StackdriverLogging>,
}

/// OpenCensus agent tracing backend.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OpenCensusAgentProvider {
    /// `[<ns>/]<hostname>`.
    pub service: String,
    /// Port.
    #[serde(deserialize_with = "uint32")]
    pub port: u32,
    /// Propagation formats.
    pub context: Vec<TraceContext>,
    /// Maximum tag length.
    pub max_tag_length: u32,
}

/// Prometheus metrics (no settings).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusProvider {}

/// Access log format: `text` or `labels` (JSON).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LogFormat {
    /// Text format string with Envoy command operators.
    pub text: Option<String>,
    /// JSON format: key → command operator (or nested values).
    pub labels: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Envoy file access log.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyFileAccessLogProvider {
    /// File path, e.g. `/dev/stdout`.
    pub path: String,
    /// Format (Istio default TEXT format when unset).
    pub log_format: Option<LogFormat>,
}

/// Envoy HTTP gRPC access log service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyHttpAlsProvider {
    /// `[<ns>/]<hostname>` (required).
    pub service: String,
    /// Port (required).
    #[serde(deserialize_with = "uint32")]
    pub port: u32,
    /// Log name.
    pub log_name: String,
    /// Filter state objects to log.
    pub filter_state_objects_to_log: Vec<String>,
    /// Extra request headers to log.
    pub additional_request_headers_to_log: Vec<String>,
    /// Extra response headers to log.
    pub additional_response_headers_to_log: Vec<String>,
    /// Extra response trailers to log.
    pub additional_response_trailers_to_log: Vec<String>,
}

/// Envoy TCP gRPC access log service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyTcpAlsProvider {
    /// `[<ns>/]<hostname>` (required).
    pub service: String,
    /// Port (required).
    #[serde(deserialize_with = "uint32")]
    pub port: u32,
    /// Log name.
    pub log_name: String,
    /// Filter state objects to log.
    pub filter_state_objects_to_log: Vec<String>,
}

/// OpenTelemetry log format: body text and attribute labels.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OtelLogFormat {
    /// Body text (Istio default TEXT format when empty).
    pub text: String,
    /// Attributes: key → command operator.
    pub labels: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Envoy OpenTelemetry (OTLP gRPC) access log.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvoyOtelAlsProvider {
    /// `[<ns>/]<hostname>` of the collector (required).
    pub service: String,
    /// Port (required).
    #[serde(deserialize_with = "uint32")]
    pub port: u32,
    /// Log name (default `otel_envoy_accesslog`).
    pub log_name: String,
    /// Format.
    pub log_format: Option<OtelLogFormat>,
}

impl EnvoyOtelAlsProvider {
    /// The log name, defaulting to `otel_envoy_accesslog`.
    pub fn effective_log_name(&self) -> &str {
        if self.log_name.is_empty() {
            "otel_envoy_accesslog"
        } else {
            &self.log_name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_ports_are_accepted_as_proto3_json_does() {
        // The istio.io external-authorization task writes the ports quoted.
        let yaml = r#"
extensionProviders:
- name: "sample-ext-authz-grpc"
  envoyExtAuthzGrpc:
    service: "ext-authz.foo.svc.cluster.local"
    port: "9000"
- name: "sample-ext-authz-http"
  envoyExtAuthzHttp:
    service: "ext-authz.foo.svc.cluster.local"
    port: 8000
    includeRequestHeadersInCheck: ["x-ext-authz"]
    includeRequestBodyInCheck: {maxRequestBytes: "4096"}
"#;
        let mesh = crate::parse_mesh_config(yaml, std::path::Path::new("mesh.yaml"))
            .unwrap_or_else(|p| panic!("{p:?}"));
        let Some(Provider::EnvoyExtAuthzGrpc(g)) = mesh
            .extension_provider("sample-ext-authz-grpc")
            .map(|p| &p.provider)
        else {
            panic!("grpc provider missing")
        };
        assert_eq!(g.port, 9000);
        let Some(Provider::EnvoyExtAuthzHttp(h)) = mesh
            .extension_provider("sample-ext-authz-http")
            .map(|p| &p.provider)
        else {
            panic!("http provider missing")
        };
        assert_eq!(h.port, 8000);
        assert_eq!(
            h.include_request_body_in_check
                .as_ref()
                .map(|b| b.max_request_bytes),
            Some(4096)
        );
        // Not a number: refused, naming the field.
        let bad = yaml.replace("\"9000\"", "\"nine\"");
        let problems = crate::parse_mesh_config(&bad, std::path::Path::new("mesh.yaml"))
            .expect_err("a non-numeric port is refused");
        let text = problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("nine"), "{text}");
    }
}
