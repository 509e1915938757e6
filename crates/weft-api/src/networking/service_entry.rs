//! ServiceEntry and WorkloadEntry (`networking.istio.io`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::{NetworkingWorkloadSelector, Port};

/// Adds a service to Istio's internal registry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceEntry {
    /// Hosts (required; `*.` prefix wildcards allowed).
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDRs.
    pub addresses: Vec<String>,
    /// Service ports.
    pub ports: Vec<Port>,
    /// Inside or outside the mesh.
    pub location: Location,
    /// How endpoints are discovered.
    pub resolution: Resolution,
    /// Static endpoints (oneof-like with `workloadSelector`).
    pub endpoints: Vec<WorkloadEntry>,
    /// Select pods / WorkloadEntries as endpoints (MESH_INTERNAL).
    pub workload_selector: Option<NetworkingWorkloadSelector>,
    /// Namespaces this entry is visible in (`.`, `*`, `~` or names).
    pub export_to: Vec<String>,
    /// Accepted server SANs for the service's workloads.
    pub subject_alt_names: Vec<String>,
}

/// Whether a ServiceEntry is part of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh (no mTLS, no sidecar).
    #[default]
    MeshExternal,
    /// Part of the mesh.
    MeshInternal,
}

/// How a ServiceEntry's endpoints are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Forward to the connection's original destination IP.
    #[default]
    None,
    /// Use the endpoints' addresses.
    Static,
    /// Resolve hosts / endpoint names via DNS (all addresses).
    Dns,
    /// Resolve via DNS, using the first address only.
    DnsRoundRobin,
}

/// A non-Kubernetes workload (also the endpoint form inside ServiceEntry).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadEntry {
    /// IP, DNS name or `unix://` socket path (required).
    pub address: String,
    /// Service port name → endpoint port.
    pub ports: BTreeMap<String, u32>,
    /// Workload labels.
    pub labels: BTreeMap<String, String>,
    /// Network the workload is on.
    pub network: String,
    /// `region/zone/subzone`.
    pub locality: String,
    /// Load balancing weight.
    pub weight: u32,
    /// Service account (identity) of the workload.
    pub service_account: String,
}
