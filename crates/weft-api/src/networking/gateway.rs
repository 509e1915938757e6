//! Gateway (`networking.istio.io`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::{Port, ServerTlsSettings};

/// A load balancer at the edge of the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Gateway {
    /// Listeners (required).
    pub servers: Vec<Server>,
    /// Pod labels of the gateway workloads (required), e.g. `istio: ingressgateway`.
    pub selector: BTreeMap<String, String>,
}

/// One listener of a Gateway.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Server {
    /// Port to listen on (required).
    pub port: Option<Port>,
    /// Bind address or `unix://` path.
    pub bind: String,
    /// Hosts exposed (`[ns/]host`, required).
    pub hosts: Vec<String>,
    /// TLS settings.
    pub tls: Option<ServerTlsSettings>,
    /// Loopback endpoint to forward to (unused by Istio 1.14).
    pub default_endpoint: String,
    /// Server name (used in stats / RDS names).
    pub name: String,
}
