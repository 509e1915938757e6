//! ProxyConfig resource (`networking.istio.io/v1beta1`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::WorkloadSelector;

/// Per-workload or per-namespace proxy settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Workloads this applies to (namespace-wide when unset).
    pub selector: Option<WorkloadSelector>,
    /// Worker threads (0 = one per core).
    pub concurrency: Option<i32>,
    /// Extra environment variables for the proxy.
    pub environment_variables: BTreeMap<String, String>,
    /// Proxy image flavour.
    pub image: Option<ProxyImage>,
}

/// Proxy image selection.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyImage {
    /// Image type, e.g. `default`, `debug`, `distroless`.
    pub image_type: String,
}
