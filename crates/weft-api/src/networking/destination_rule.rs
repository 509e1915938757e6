//! DestinationRule (`networking.istio.io`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::{
    ClientTlsSettings, LocalityLoadBalancerSetting, PortSelector, TcpKeepalive, WorkloadSelector,
};
use crate::duration::Duration;

/// Policies applied to traffic for a service after routing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DestinationRule {
    /// Service host (required).
    pub host: String,
    /// Policies for the whole service.
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named versions of the service.
    pub subsets: Vec<Subset>,
    /// Namespaces this rule is visible in.
    pub export_to: Vec<String>,
    /// Workloads this rule applies to (1.14).
    pub workload_selector: Option<WorkloadSelector>,
}

/// Traffic policy (load balancing, pools, outlier detection, TLS).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TrafficPolicy {
    /// Load balancer.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool / circuit breaker limits.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides.
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnel (HTTP CONNECT) settings.
    pub tunnel: Option<TunnelSettings>,
}

/// Per-port traffic policy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PortTrafficPolicy {
    /// Port the policy applies to.
    pub port: Option<PortSelector>,
    /// Load balancer.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS.
    pub tls: Option<ClientTlsSettings>,
}

/// Tunnel traffic through an HTTP CONNECT / POST proxy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TunnelSettings {
    /// `CONNECT` or `POST`.
    pub protocol: String,
    /// Tunnel target host.
    pub target_host: String,
    /// Tunnel target port.
    pub target_port: u32,
}

/// A named subset of service endpoints.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Subset {
    /// Subset name (DNS label).
    pub name: String,
    /// Endpoint labels selecting the subset.
    pub labels: BTreeMap<String, String>,
    /// Subset-specific policy overriding the rule's policy.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// Simple load balancing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// Not set: the control plane's default algorithm applies.
    #[default]
    Unspecified,
    /// Deprecated alias of LEAST_REQUEST.
    LeastConn,
    /// Random.
    Random,
    /// Forward to the original destination address.
    Passthrough,
    /// Round robin.
    RoundRobin,
    /// Least outstanding requests.
    LeastRequest,
}

/// Load balancer settings: `simple` or `consistentHash`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LoadBalancerSettings {
    /// Simple algorithm (oneof with `consistentHash`).
    pub simple: Option<SimpleLb>,
    /// Consistent hashing (oneof with `simple`).
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality load balancing.
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// Slow start window for new endpoints.
    pub warmup_duration_secs: Option<Duration>,
}

/// Consistent hash load balancing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConsistentHashLb {
    /// Hash on a header.
    pub http_header_name: Option<String>,
    /// Hash on a cookie.
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the source IP.
    pub use_source_ip: Option<bool>,
    /// Hash on a query parameter.
    pub http_query_parameter_name: Option<String>,
    /// Minimum ring size (default 1024).
    pub minimum_ring_size: u64,
}

/// Cookie used as a hash key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpCookie {
    /// Cookie name (required).
    pub name: String,
    /// Cookie path.
    pub path: String,
    /// Cookie lifetime (required).
    pub ttl: Option<Duration>,
}

/// Connection pool settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConnectionPoolSettings {
    /// TCP limits.
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    pub http: Option<HttpSettings>,
}

/// TCP connection pool settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpSettings {
    /// Maximum connections (default 2^32-1).
    pub max_connections: i32,
    /// Connect timeout (default 10s).
    pub connect_timeout: Option<Duration>,
    /// Keepalive.
    pub tcp_keepalive: Option<TcpKeepalive>,
}

/// Whether HTTP/1.1 upstream connections are upgraded to HTTP/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// Use the mesh-wide default.
    #[default]
    Default,
    /// Never upgrade.
    DoNotUpgrade,
    /// Upgrade.
    Upgrade,
}

/// HTTP connection pool settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Maximum pending HTTP requests (default 2^32-1).
    pub http1_max_pending_requests: i32,
    /// Maximum concurrent requests (default 2^32-1).
    pub http2_max_requests: i32,
    /// Requests per connection (0 = unlimited; 1 disables keep-alive).
    pub max_requests_per_connection: i32,
    /// Maximum outstanding retries (default 2^32-1).
    pub max_retries: i32,
    /// Idle timeout (default 1h).
    pub idle_timeout: Option<Duration>,
    /// HTTP/2 upgrade policy.
    pub h2_upgrade_policy: H2UpgradePolicy,
    /// Use the downstream protocol upstream.
    pub use_client_protocol: bool,
}

/// Outlier detection (passive health checking).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// Deprecated: consecutive 5xx / gateway errors.
    pub consecutive_errors: i32,
    /// Track local-origin failures separately.
    pub split_external_local_origin_errors: bool,
    /// Consecutive local-origin failures before ejection.
    pub consecutive_local_origin_failures: Option<u32>,
    /// Consecutive 502/503/504 before ejection.
    pub consecutive_gateway_errors: Option<u32>,
    /// Consecutive 5xx before ejection (default 5).
    #[serde(rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Analysis interval (default 10s).
    pub interval: Option<Duration>,
    /// Minimum ejection time (default 30s).
    pub base_ejection_time: Option<Duration>,
    /// Maximum ejected share of hosts (default 10).
    pub max_ejection_percent: i32,
    /// Minimum healthy share for ejection to be active (default 0).
    pub min_health_percent: i32,
}
