//! The mesh configuration file (`mesh.v1alpha1.MeshConfig`).

mod providers;
mod proxy;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::{ClientTlsSettings, HttpRetry, LocalityLoadBalancerSetting, TcpKeepalive};
use crate::duration::Duration;
use crate::networking::OutboundTrafficMode;

pub use providers::*;
pub use proxy::*;

/// Mesh-wide configuration. Missing fields take Istio 1.14's `DefaultMeshConfig()` values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MeshConfig {
    /// Outbound capture port (default 15001).
    pub proxy_listen_port: i32,
    /// HTTP proxy port (0 = disabled).
    pub proxy_http_port: i32,
    /// Upstream connect timeout (default 10s).
    pub connect_timeout: Duration,
    /// Protocol sniffing timeout (default 0s = none).
    pub protocol_detection_timeout: Duration,
    /// Upstream TCP keepalive.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Kubernetes ingress class handled (default `istio`).
    pub ingress_class: String,
    /// Ingress service (default `istio-ingressgateway`).
    pub ingress_service: String,
    /// Kubernetes Ingress handling (default STRICT).
    pub ingress_controller_mode: IngressControllerMode,
    /// Gateway selector for Kubernetes Ingress.
    pub ingress_selector: String,
    /// Enable tracing (default true).
    pub enable_tracing: bool,
    /// Legacy access log file (empty = off), e.g. `/dev/stdout`.
    pub access_log_file: String,
    /// Legacy access log format (empty = Istio default).
    pub access_log_format: String,
    /// Legacy access log encoding (default TEXT).
    pub access_log_encoding: AccessLogEncoding,
    /// Enable the Envoy gRPC access log service.
    pub enable_envoy_access_log_service: bool,
    /// Disable listener-level access logs.
    pub disable_envoy_listener_log: bool,
    /// Default proxy configuration.
    pub default_config: MeshProxyConfig,
    /// Handling of traffic to unknown destinations (default ALLOW_ANY).
    pub outbound_traffic_policy: MeshOutboundTrafficPolicy,
    /// Extra configuration sources.
    pub config_sources: Vec<ConfigSource>,
    /// Automatic client mTLS (default true).
    pub enable_auto_mtls: bool,
    /// Trust domain (default `cluster.local`).
    pub trust_domain: String,
    /// Other trust domains treated as this one.
    pub trust_domain_aliases: Vec<String>,
    /// Extra root certificates.
    pub ca_certificates: Vec<CertificateData>,
    /// Default `exportTo` of services (default `["*"]`).
    pub default_service_export_to: Vec<String>,
    /// Default `exportTo` of VirtualServices (default `["*"]`).
    pub default_virtual_service_export_to: Vec<String>,
    /// Default `exportTo` of DestinationRules (default `["*"]`).
    pub default_destination_rule_export_to: Vec<String>,
    /// Namespace holding mesh-wide policies (default `istio-system`).
    pub root_namespace: String,
    /// Locality load balancing (default `{enabled: true}`).
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// DNS refresh rate for DNS clusters (default 60s).
    pub dns_refresh_rate: Duration,
    /// Default HTTP/2 upgrade policy (default DO_NOT_UPGRADE).
    pub h2_upgrade_policy: MeshH2UpgradePolicy,
    /// Inbound cluster stat name pattern.
    pub inbound_cluster_stat_name: String,
    /// Outbound cluster stat name pattern.
    pub outbound_cluster_stat_name: String,
    /// Certificates istiod provisions (deprecated).
    pub certificates: Vec<Certificate>,
    /// Thrift settings.
    pub thrift_config: Option<ThriftConfig>,
    /// Per-host service settings.
    pub service_settings: Vec<ServiceSettings>,
    /// Merge application metrics into the agent's Prometheus endpoint (default true, as in Istio's chart).
    pub enable_prometheus_merge: Option<bool>,
    /// Deprecated.
    pub verify_certificate_at_client: Option<bool>,
    /// External CA.
    pub ca: Option<CaConfig>,
    /// Named telemetry / ext-authz providers (built-ins `prometheus`, `stackdriver`, `envoy`).
    pub extension_providers: Vec<ExtensionProvider>,
    /// Providers used when no Telemetry resource selects one.
    pub default_providers: DefaultProviders,
    /// Namespaces watched (Kubernetes label selectors).
    pub discovery_selectors: Vec<LabelSelector>,
    /// Path normalization.
    pub path_normalization: Option<ProxyPathNormalization>,
    /// Default HTTP retry policy.
    pub default_http_retry_policy: Option<HttpRetry>,
    /// Workload mTLS settings.
    #[serde(rename = "meshMTLS")]
    pub mesh_mtls: Option<MeshTlsConfig>,
}

impl Default for MeshConfig {
    /// Istio 1.14 `DefaultMeshConfig()`.
    fn default() -> Self {
        MeshConfig {
            proxy_listen_port: 15001,
            proxy_http_port: 0,
            connect_timeout: Duration::from_secs(10),
            protocol_detection_timeout: Duration::from_secs(0),
            tcp_keepalive: None,
            ingress_class: "istio".into(),
            ingress_service: "istio-ingressgateway".into(),
            ingress_controller_mode: IngressControllerMode::Strict,
            ingress_selector: String::new(),
            enable_tracing: true,
            access_log_file: String::new(),
            access_log_format: String::new(),
            access_log_encoding: AccessLogEncoding::Text,
            enable_envoy_access_log_service: false,
            disable_envoy_listener_log: false,
            default_config: MeshProxyConfig::default(),
            outbound_traffic_policy: MeshOutboundTrafficPolicy::default(),
            config_sources: Vec::new(),
            enable_auto_mtls: true,
            trust_domain: "cluster.local".into(),
            trust_domain_aliases: Vec::new(),
            ca_certificates: Vec::new(),
            default_service_export_to: vec!["*".into()],
            default_virtual_service_export_to: vec!["*".into()],
            default_destination_rule_export_to: vec!["*".into()],
            root_namespace: "istio-system".into(),
            locality_lb_setting: Some(LocalityLoadBalancerSetting {
                enabled: Some(true),
                ..LocalityLoadBalancerSetting::default()
            }),
            dns_refresh_rate: Duration::from_secs(60),
            h2_upgrade_policy: MeshH2UpgradePolicy::DoNotUpgrade,
            inbound_cluster_stat_name: String::new(),
            outbound_cluster_stat_name: String::new(),
            certificates: Vec::new(),
            thrift_config: Some(ThriftConfig::default()),
            service_settings: Vec::new(),
            enable_prometheus_merge: Some(true),
            verify_certificate_at_client: None,
            ca: None,
            extension_providers: builtin_extension_providers(),
            default_providers: DefaultProviders::default(),
            discovery_selectors: Vec::new(),
            path_normalization: None,
            default_http_retry_policy: None,
            mesh_mtls: None,
        }
    }
}

/// The providers every mesh has: `prometheus`, `stackdriver` and `envoy` (file log to stdout).
pub fn builtin_extension_providers() -> Vec<ExtensionProvider> {
    vec![
        ExtensionProvider {
            name: "prometheus".into(),
            provider: Provider::Prometheus(PrometheusProvider {}),
        },
        ExtensionProvider {
            name: "stackdriver".into(),
            provider: Provider::Stackdriver(StackdriverProvider::default()),
        },
        ExtensionProvider {
            name: "envoy".into(),
            provider: Provider::EnvoyFileAccessLog(EnvoyFileAccessLogProvider {
                path: "/dev/stdout".into(),
                log_format: None,
            }),
        },
    ]
}

impl MeshConfig {
    /// Looks up an extension provider by name.
    pub fn extension_provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }

    /// Mesh outbound traffic mode.
    pub fn outbound_mode(&self) -> OutboundTrafficMode {
        self.outbound_traffic_policy.mode
    }

    /// Minimum TLS version for inbound workload mTLS (TLS_AUTO when unset; TLS_AUTO means 1.2).
    pub fn min_tls_version(&self) -> MeshTlsProtocol {
        self.mesh_mtls
            .as_ref()
            .map_or(MeshTlsProtocol::TlsAuto, |m| m.min_protocol_version)
    }

    /// Whether locality load balancing is enabled (true unless explicitly disabled).
    pub fn locality_lb_enabled(&self) -> bool {
        self.locality_lb_setting
            .as_ref()
            .and_then(|l| l.enabled)
            .unwrap_or(true)
    }

    /// Whether Prometheus metrics merging is enabled (true unless explicitly disabled).
    pub fn prometheus_merge_enabled(&self) -> bool {
        self.enable_prometheus_merge.unwrap_or(true)
    }

    /// The protocol sniffing timeout, `None` when disabled (0s).
    pub fn protocol_detection_timeout(&self) -> Option<std::time::Duration> {
        let d = self.protocol_detection_timeout.get();
        (!d.is_zero()).then_some(d)
    }

    /// The trust domain followed by its aliases.
    pub fn trust_domains(&self) -> Vec<&str> {
        std::iter::once(self.trust_domain.as_str())
            .chain(self.trust_domain_aliases.iter().map(String::as_str))
            .collect()
    }

    /// Merges user-listed providers over the built-ins by name (as Istio's `ApplyMeshConfig`).
    pub(crate) fn merge_builtin_providers(&mut self) {
        let user = std::mem::take(&mut self.extension_providers);
        let mut merged = builtin_extension_providers();
        for p in user {
            match merged.iter_mut().find(|e| e.name == p.name) {
                Some(existing) => existing.provider = p.provider,
                None => merged.push(p),
            }
        }
        self.extension_providers = merged;
        self.trust_domain_aliases.sort();
        self.trust_domain_aliases.dedup();
    }
}

/// Kubernetes Ingress handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IngressControllerMode {
    /// Unspecified.
    #[default]
    Unspecified,
    /// Ignore Ingress resources.
    Off,
    /// Handle Ingresses without a class or with the configured class.
    Default,
    /// Handle only Ingresses with the configured class.
    Strict,
}

/// Legacy access log encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    /// Text lines.
    #[default]
    Text,
    /// JSON objects.
    Json,
}

/// Mesh-wide outbound traffic policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MeshOutboundTrafficPolicy {
    /// Mode (default ALLOW_ANY).
    pub mode: OutboundTrafficMode,
}

impl Default for MeshOutboundTrafficPolicy {
    fn default() -> Self {
        MeshOutboundTrafficPolicy {
            mode: OutboundTrafficMode::AllowAny,
        }
    }
}

/// Mesh-wide HTTP/2 upgrade policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MeshH2UpgradePolicy {
    /// Keep HTTP/1.1.
    #[default]
    DoNotUpgrade,
    /// Upgrade to HTTP/2.
    Upgrade,
}

/// Minimum TLS version for workload mTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MeshTlsProtocol {
    /// Default (TLS 1.2 minimum).
    #[default]
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

/// `meshMTLS` settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MeshTlsConfig {
    /// Minimum TLS version accepted by inbound mTLS listeners.
    pub min_protocol_version: MeshTlsProtocol,
}

/// A configuration source (MCP / xDS).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConfigSource {
    /// Address (`fs:///path`, `xds://host:port`, `k8s://`).
    pub address: String,
    /// TLS to the source.
    pub tls_settings: Option<ClientTlsSettings>,
    /// Resource kinds served.
    pub subscribed_resources: Vec<ConfigResource>,
}

/// Resource kinds of a config source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConfigResource {
    /// ServiceEntry / WorkloadEntry.
    #[default]
    ServiceRegistry,
}

/// Extra root certificate data.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CertificateData {
    /// PEM roots (oneof with `spiffeBundleUrl`).
    pub pem: Option<String>,
    /// SPIFFE bundle endpoint (oneof with `pem`).
    pub spiffe_bundle_url: Option<String>,
    /// Signers using these roots.
    pub cert_signers: Vec<String>,
    /// Trust domains using these roots.
    pub trust_domains: Vec<String>,
}

/// A DNS certificate istiod provisions (deprecated).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Certificate {
    /// Secret name.
    pub secret_name: String,
    /// DNS names.
    pub dns_names: Vec<String>,
}

/// Thrift settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ThriftConfig {
    /// Rate limit service URL.
    pub rate_limit_url: String,
    /// Rate limit timeout.
    pub rate_limit_timeout: Option<Duration>,
}

/// Settings for a set of hosts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceSettings {
    /// The settings.
    pub settings: Option<ServiceSettingsValues>,
    /// Hosts (wildcards allowed).
    pub hosts: Vec<String>,
}

/// Per-service settings values.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceSettingsValues {
    /// Only reachable from the local cluster.
    pub cluster_local: bool,
}

/// External CA settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CaConfig {
    /// CA address.
    pub address: String,
    /// TLS to the CA.
    pub tls_settings: Option<ClientTlsSettings>,
    /// Request timeout.
    pub request_timeout: Option<Duration>,
    /// CSRs go through istiod.
    pub istiod_side: bool,
}

/// Default providers per telemetry type.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DefaultProviders {
    /// Tracing providers.
    pub tracing: Vec<String>,
    /// Metrics providers.
    pub metrics: Vec<String>,
    /// Access logging providers.
    pub access_logging: Vec<String>,
}

/// A Kubernetes label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LabelSelector {
    /// Exact label matches.
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector, as Kubernetes reads one: every `matchLabels`
    /// entry and every expression (`In`, `NotIn`, `Exists`, `DoesNotExist`; any other operator
    /// matches nothing). An empty selector selects everything.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|e| {
                let value = labels.get(&e.key);
                match e.operator.as_str() {
                    "In" => value.is_some_and(|v| e.values.contains(v)),
                    "NotIn" => value.is_none_or(|v| !e.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    _ => false,
                }
            })
    }
}

/// A set-based label requirement.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for In / NotIn.
    pub values: Vec<String>,
}

/// Path normalization applied by proxies.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyPathNormalization {
    /// Normalization type.
    pub normalization: NormalizationType,
}

/// Path normalization types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NormalizationType {
    /// BASE.
    #[default]
    Default,
    /// No normalization.
    None,
    /// RFC 3986 normalization.
    Base,
    /// BASE plus merging slashes.
    MergeSlashes,
    /// MERGE_SLASHES plus decoding `%2F` / `%5C`.
    DecodeAndMergeSlashes,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_read_as_kubernetes_does() {
        let sel: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"mesh": "weft"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }))
        .expect("selector");
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(sel.matches(&labels(&[("mesh", "weft"), ("env", "prod")])));
        assert!(!sel.matches(&labels(&[("mesh", "weft"), ("env", "dev")])));
        assert!(!sel.matches(&labels(&[("mesh", "weft")])));
        assert!(!sel.matches(&labels(&[
            ("mesh", "weft"),
            ("env", "prod"),
            ("legacy", "1")
        ])));
        assert!(!sel.matches(&labels(&[("env", "prod")])));
        let not_in: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]},
                                 {"key": "team", "operator": "Exists"}],
        }))
        .expect("selector");
        assert!(not_in.matches(&labels(&[("team", "a")])));
        assert!(!not_in.matches(&labels(&[("team", "a"), ("tier", "db")])));
        assert!(!not_in.matches(&labels(&[("tier", "web")])));
        assert!(LabelSelector::default().matches(&labels(&[])));
    }
}
