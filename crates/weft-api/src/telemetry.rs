//! `telemetry.istio.io/v1alpha1` Telemetry resource.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::WorkloadSelector;

/// Tracing, metrics and access-log configuration for workloads.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Telemetry {
    /// Workloads (namespace- or mesh-wide when unset).
    pub selector: Option<WorkloadSelector>,
    /// Tracing settings.
    pub tracing: Vec<Tracing>,
    /// Metrics settings.
    pub metrics: Vec<Metrics>,
    /// Access logging settings.
    pub access_logging: Vec<AccessLogging>,
}

/// Traffic direction a telemetry rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    /// Both directions.
    #[default]
    ClientAndServer,
    /// Outbound only.
    Client,
    /// Inbound only.
    Server,
}

/// Selects by traffic direction.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ModeSelector {
    /// Direction.
    pub mode: WorkloadMode,
}

/// Names a mesh extension provider.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProviderRef {
    /// Provider name (required).
    pub name: String,
}

/// Tracing configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Tracing {
    /// Direction.
    #[serde(rename = "match")]
    pub match_: Option<ModeSelector>,
    /// Providers (first one used).
    pub providers: Vec<ProviderRef>,
    /// Sampling percentage 0..=100.
    pub random_sampling_percentage: Option<f64>,
    /// Disable span reporting.
    pub disable_span_reporting: Option<bool>,
    /// Custom span tags.
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Use x-request-id for sampling decisions.
    pub use_request_id_for_trace_sampling: Option<bool>,
}

/// A custom tag: one of literal, environment or header.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CustomTag {
    /// Fixed value.
    pub literal: Option<LiteralTag>,
    /// From an environment variable.
    pub environment: Option<EnvironmentTag>,
    /// From a request header.
    pub header: Option<HeaderTag>,
}

/// Literal tag value.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LiteralTag {
    /// Value.
    pub value: String,
}

/// Tag from the proxy environment.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvironmentTag {
    /// Variable name.
    pub name: String,
    /// Value when unset.
    pub default_value: String,
}

/// Tag from a request header.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HeaderTag {
    /// Header name.
    pub name: String,
    /// Value when absent.
    pub default_value: String,
}

/// Metrics configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Metrics {
    /// Providers.
    pub providers: Vec<ProviderRef>,
    /// Ordered overrides.
    pub overrides: Vec<MetricsOverrides>,
}

/// Standard Istio metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IstioMetric {
    /// All metrics.
    #[default]
    AllMetrics,
    /// `istio_requests_total`.
    RequestCount,
    /// `istio_request_duration_milliseconds`.
    RequestDuration,
    /// `istio_request_bytes`.
    RequestSize,
    /// `istio_response_bytes`.
    ResponseSize,
    /// `istio_tcp_connections_opened_total`.
    TcpOpenedConnections,
    /// `istio_tcp_connections_closed_total`.
    TcpClosedConnections,
    /// `istio_tcp_sent_bytes_total`.
    TcpSentBytes,
    /// `istio_tcp_received_bytes_total`.
    TcpReceivedBytes,
    /// `istio_request_messages_total`.
    GrpcRequestMessages,
    /// `istio_response_messages_total`.
    GrpcResponseMessages,
}

/// Selects metrics: `metric` or `customMetric`, plus direction.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetricSelector {
    /// Standard metric (oneof with `customMetric`).
    pub metric: Option<IstioMetric>,
    /// Custom metric name (oneof with `metric`).
    pub custom_metric: Option<String>,
    /// Direction.
    pub mode: WorkloadMode,
}

/// Override for selected metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MetricsOverrides {
    /// Which metrics.
    #[serde(rename = "match")]
    pub match_: Option<MetricSelector>,
    /// Disable them.
    pub disabled: Option<bool>,
    /// Tag (label) changes.
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// Tag override operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TagOperation {
    /// Insert or update the tag with `value`.
    #[default]
    Upsert,
    /// Remove the tag.
    Remove,
}

/// Change to one metric tag.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TagOverride {
    /// Operation.
    pub operation: TagOperation,
    /// CEL expression for the value (UPSERT).
    pub value: String,
}

/// Access logging configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AccessLogging {
    /// Direction.
    #[serde(rename = "match")]
    pub match_: Option<ModeSelector>,
    /// Providers.
    pub providers: Vec<ProviderRef>,
    /// Disable logging.
    pub disabled: Option<bool>,
    /// Log only entries matching a CEL expression.
    pub filter: Option<AccessLogFilter>,
}

/// CEL filter for access logs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AccessLogFilter {
    /// CEL expression, e.g. `response.code >= 400`.
    pub expression: String,
}

/// A name Prometheus takes as a label: `[a-zA-Z_][a-zA-Z0-9_]*`, not `le` (histograms use
/// it), not reserved (`__` prefix). Telemetry `tagOverrides` names must be one.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name != "le"
        && !name.starts_with("__")
}
