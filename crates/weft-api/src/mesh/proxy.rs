//! `mesh.v1alpha1.ProxyConfig`: the mesh-wide proxy defaults (`meshConfig.defaultConfig`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::{ClientTlsSettings, TcpKeepalive};
use crate::duration::Duration;
use crate::networking::ProxyImage;
use crate::telemetry::CustomTag;

/// Proxy settings as written in `meshConfig.defaultConfig` (or the `proxy.istio.io/config`
/// annotation). Missing fields take Istio 1.14's defaults (`DefaultProxyConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MeshProxyConfig {
    /// Directory for generated proxy configuration (default `./etc/istio/proxy`).
    pub config_path: String,
    /// Proxy binary path (default `/usr/local/bin/envoy`).
    pub binary_path: String,
    /// Service cluster name (default `istio-proxy`; oneof with `tracingServiceName`).
    pub service_cluster: Option<String>,
    /// How the tracing service name is derived (oneof with `serviceCluster`).
    pub tracing_service_name: Option<TracingServiceName>,
    /// Drain time on hot restart (default 45s).
    pub drain_duration: Duration,
    /// Parent shutdown time on hot restart (default 60s).
    pub parent_shutdown_duration: Duration,
    /// xDS server address (default `istiod.istio-system.svc:15012`).
    pub discovery_address: String,
    /// Deprecated.
    pub discovery_refresh_delay: Option<Duration>,
    /// Deprecated Zipkin address.
    pub zipkin_address: String,
    /// Statsd UDP sink `host:port`.
    pub statsd_udp_address: String,
    /// Deprecated metrics service address.
    pub envoy_metrics_service_address: String,
    /// Proxy admin port (default 15000).
    pub proxy_admin_port: i32,
    /// Deprecated.
    pub availability_zone: String,
    /// Authentication to the control plane (default MUTUAL_TLS).
    pub control_plane_auth_policy: AuthenticationPolicy,
    /// Custom bootstrap file.
    pub custom_config_file: String,
    /// Maximum stat name length (default 189).
    pub stat_name_length: i32,
    /// Worker threads (default 2; 0 = one per core).
    pub concurrency: Option<i32>,
    /// Bootstrap template path.
    pub proxy_bootstrap_template_path: String,
    /// Inbound interception mode (default REDIRECT).
    pub interception_mode: InterceptionMode,
    /// Tracer configuration (default Zipkin at `zipkin.istio-system:9411`).
    pub tracing: Option<ProxyTracing>,
    /// Deprecated SDS settings.
    pub sds: Option<SdsSettings>,
    /// Envoy access log service.
    pub envoy_access_log_service: Option<RemoteService>,
    /// Envoy metrics service.
    pub envoy_metrics_service: Option<RemoteService>,
    /// Environment for the proxy agent (merged over the defaults).
    pub proxy_metadata: BTreeMap<String, String>,
    /// Envoy runtime values.
    pub runtime_values: BTreeMap<String, String>,
    /// Agent status / health port (default 15020).
    pub status_port: i32,
    /// Extra stat tags.
    pub extra_stat_tags: Vec<String>,
    /// Gateway topology.
    pub gateway_topology: Option<Topology>,
    /// Drain time when the proxy terminates (default 5s).
    pub termination_drain_duration: Duration,
    /// Mesh ID.
    pub mesh_id: String,
    /// VM readiness probe.
    pub readiness_probe: Option<ReadinessProbe>,
    /// Extra Envoy stats to keep.
    pub proxy_stats_matcher: Option<ProxyStatsMatcher>,
    /// Start the application only after the proxy is ready.
    pub hold_application_until_proxy_starts: Option<bool>,
    /// Extra CA certificates (PEM) trusted for control-plane connections.
    pub ca_certificates_pem: Vec<String>,
    /// Proxy image flavour.
    pub image: Option<ProxyImage>,
    /// Private key provider.
    pub private_key_provider: Option<PrivateKeyProvider>,
}

impl Default for MeshProxyConfig {
    /// Istio 1.14 `DefaultProxyConfig()`.
    fn default() -> Self {
        MeshProxyConfig {
            config_path: "./etc/istio/proxy".into(),
            binary_path: "/usr/local/bin/envoy".into(),
            service_cluster: Some("istio-proxy".into()),
            tracing_service_name: None,
            drain_duration: Duration::from_secs(45),
            parent_shutdown_duration: Duration::from_secs(60),
            discovery_address: "istiod.istio-system.svc:15012".into(),
            discovery_refresh_delay: None,
            zipkin_address: String::new(),
            statsd_udp_address: String::new(),
            envoy_metrics_service_address: String::new(),
            proxy_admin_port: 15000,
            availability_zone: String::new(),
            control_plane_auth_policy: AuthenticationPolicy::MutualTls,
            custom_config_file: String::new(),
            stat_name_length: 189,
            concurrency: Some(2),
            proxy_bootstrap_template_path: String::new(),
            interception_mode: InterceptionMode::Redirect,
            tracing: Some(ProxyTracing {
                zipkin: Some(ZipkinTracer {
                    address: "zipkin.istio-system:9411".into(),
                }),
                ..ProxyTracing::default()
            }),
            sds: None,
            envoy_access_log_service: None,
            envoy_metrics_service: None,
            proxy_metadata: BTreeMap::new(),
            runtime_values: BTreeMap::new(),
            status_port: 15020,
            extra_stat_tags: Vec::new(),
            gateway_topology: None,
            termination_drain_duration: Duration::from_secs(5),
            mesh_id: String::new(),
            readiness_probe: None,
            proxy_stats_matcher: None,
            hold_application_until_proxy_starts: None,
            ca_certificates_pem: Vec::new(),
            image: None,
            private_key_provider: None,
        }
    }
}

impl MeshProxyConfig {
    /// Effective `holdApplicationUntilProxyStarts` (false when unset).
    pub fn hold_application(&self) -> bool {
        self.hold_application_until_proxy_starts.unwrap_or(false)
    }

    /// Effective worker thread count (2 when unset, 0 means one per core).
    pub fn effective_concurrency(&self) -> i32 {
        self.concurrency.unwrap_or(2)
    }
}

/// How the tracing service name is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TracingServiceName {
    /// `app` label and namespace.
    #[default]
    AppLabelAndNamespace,
    /// Canonical name only.
    CanonicalNameOnly,
    /// Canonical name and namespace.
    CanonicalNameAndNamespace,
}

/// Control plane authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthenticationPolicy {
    /// No authentication.
    None,
    /// Mutual TLS.
    #[default]
    MutualTls,
    /// Inherit from the parent.
    Inherit,
}

/// How inbound traffic is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InterceptionMode {
    /// iptables REDIRECT (original destination via SO_ORIGINAL_DST).
    #[default]
    Redirect,
    /// iptables TPROXY (preserves source IP).
    Tproxy,
    /// No interception.
    None,
}

/// Tracer configuration in the proxy config (one tracer at most).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyTracing {
    /// Zipkin.
    pub zipkin: Option<ZipkinTracer>,
    /// Lightstep.
    pub lightstep: Option<LightstepTracer>,
    /// Datadog.
    pub datadog: Option<DatadogTracer>,
    /// Stackdriver.
    pub stackdriver: Option<StackdriverTracer>,
    /// OpenCensus agent.
    pub open_census_agent: Option<OpenCensusAgentTracer>,
    /// Custom span tags.
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Maximum length of the request path tag.
    pub max_path_tag_length: u32,
    /// Sampling percentage.
    pub sampling: f64,
    /// TLS to the tracer.
    pub tls_settings: Option<ClientTlsSettings>,
}

/// Zipkin tracer address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ZipkinTracer {
    /// `host:port`.
    pub address: String,
}

/// Lightstep tracer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LightstepTracer {
    /// `host:port`.
    pub address: String,
    /// Access token.
    pub access_token: String,
}

/// Datadog tracer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DatadogTracer {
    /// `host:port`.
    pub address: String,
}

/// Stackdriver tracer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StackdriverTracer {
    /// Debug logging.
    pub debug: bool,
    /// Attribute limit.
    pub max_number_of_attributes: Option<i64>,
    /// Annotation limit.
    pub max_number_of_annotations: Option<i64>,
    /// Message event limit.
    pub max_number_of_message_events: Option<i64>,
}

/// Trace context propagation formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TraceContext {
    /// Unspecified.
    #[default]
    Unspecified,
    /// W3C trace context.
    W3cTraceContext,
    /// gRPC binary.
    GrpcBin,
    /// Google Cloud trace context.
    CloudTraceContext,
    /// Zipkin B3.
    B3,
}

/// OpenCensus agent tracer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OpenCensusAgentTracer {
    /// gRPC address.
    pub address: String,
    /// Propagation formats.
    pub context: Vec<TraceContext>,
}

/// Deprecated SDS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SdsSettings {
    /// Enabled.
    pub enabled: bool,
    /// Token path.
    pub k8s_sa_jwt_path: String,
}

/// A remote gRPC service.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RemoteService {
    /// `host:port`.
    pub address: String,
    /// TLS settings.
    pub tls_settings: Option<ClientTlsSettings>,
    /// Keepalive.
    pub tcp_keepalive: Option<TcpKeepalive>,
}

/// How client certificate details are forwarded by gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ForwardClientCertDetails {
    /// Unset.
    #[default]
    Undefined,
    /// Remove the header.
    Sanitize,
    /// Forward only.
    ForwardOnly,
    /// Append and forward.
    AppendForward,
    /// Sanitize and set.
    SanitizeSet,
    /// Always forward.
    AlwaysForwardOnly,
}

/// Gateway network topology.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Topology {
    /// Trusted proxies in front of the gateway (X-Forwarded-For).
    pub num_trusted_proxies: u32,
    /// XFCC handling.
    pub forward_client_cert_details: ForwardClientCertDetails,
}

/// Readiness probe for VM workloads.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ReadinessProbe {
    /// Initial delay.
    pub initial_delay_seconds: i32,
    /// Timeout.
    pub timeout_seconds: i32,
    /// Period.
    pub period_seconds: i32,
    /// Success threshold.
    pub success_threshold: i32,
    /// Failure threshold.
    pub failure_threshold: i32,
    /// HTTP GET check.
    pub http_get: Option<HttpHealthCheck>,
    /// TCP connect check.
    pub tcp_socket: Option<TcpHealthCheck>,
    /// Command check.
    pub exec: Option<ExecHealthCheck>,
}

/// HTTP health check.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpHealthCheck {
    /// Path.
    pub path: String,
    /// Port (required).
    pub port: u32,
    /// Host.
    pub host: String,
    /// Scheme.
    pub scheme: String,
    /// Headers.
    pub http_headers: Vec<HttpHeader>,
}

/// A header name/value pair.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpHeader {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// TCP health check.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpHealthCheck {
    /// Host.
    pub host: String,
    /// Port (required).
    pub port: u32,
}

/// Command health check.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ExecHealthCheck {
    /// Command and arguments.
    pub command: Vec<String>,
}

/// Extra Envoy stats to keep.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyStatsMatcher {
    /// Stat name prefixes.
    pub inclusion_prefixes: Vec<String>,
    /// Stat name suffixes.
    pub inclusion_suffixes: Vec<String>,
    /// Stat name regexes.
    pub inclusion_regexps: Vec<String>,
}

/// Private key provider.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PrivateKeyProvider {
    /// Intel CryptoMB.
    pub cryptomb: Option<CryptoMb>,
}

/// CryptoMB settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CryptoMb {
    /// Poll delay.
    pub poll_delay: Option<Duration>,
}
