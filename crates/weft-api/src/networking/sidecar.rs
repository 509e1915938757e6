//! Sidecar (`networking.istio.io`).

use serde::{Deserialize, Serialize};

use crate::common::{Destination, NetworkingWorkloadSelector, Port, ServerTlsSettings};

/// Restricts and tunes the configuration a sidecar receives.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Sidecar {
    /// Workloads this Sidecar applies to (namespace-wide when unset).
    pub workload_selector: Option<NetworkingWorkloadSelector>,
    /// Inbound listeners.
    pub ingress: Vec<IstioIngressListener>,
    /// Outbound listeners and the hosts they import.
    pub egress: Vec<IstioEgressListener>,
    /// Handling of traffic to unknown destinations.
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// How traffic reaches a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// Use the workload's interception mode.
    #[default]
    Default,
    /// Traffic is captured by iptables.
    Iptables,
    /// No capture: the application talks to the listener directly.
    None,
}

/// An inbound listener.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IstioIngressListener {
    /// Port (required).
    pub port: Option<Port>,
    /// Bind address.
    pub bind: String,
    /// Capture mode.
    pub capture_mode: CaptureMode,
    /// Where to forward: `127.0.0.1:PORT`, `0.0.0.0:PORT` or `unix://path`.
    pub default_endpoint: String,
    /// TLS termination settings.
    pub tls: Option<ServerTlsSettings>,
}

/// An outbound listener.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IstioEgressListener {
    /// Port (catch-all listener when unset).
    pub port: Option<Port>,
    /// Bind address or `unix://` path.
    pub bind: String,
    /// Capture mode.
    pub capture_mode: CaptureMode,
    /// Imported hosts as `namespace/dnsName` (`./*`, `istio-system/*`, `*/*`).
    pub hosts: Vec<String>,
}

/// Mode for traffic to destinations outside the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficMode {
    /// Only registered services are reachable (BlackHoleCluster otherwise).
    #[default]
    RegistryOnly,
    /// Unknown destinations pass through.
    AllowAny,
}

/// Outbound traffic policy of a Sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutboundTrafficPolicy {
    /// Mode.
    pub mode: OutboundTrafficMode,
    /// Egress proxy for unknown traffic (ALLOW_ANY only).
    pub egress_proxy: Option<Destination>,
}
