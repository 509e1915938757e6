//! The sidecar generator: Istio's Envoy resources for one proxy (virtualOutbound,
//! virtualInbound, per-port outbound listeners, route tables per port, outbound/inbound
//! clusters with auto mTLS, EDS endpoints).

mod cluster;
mod listener;
mod route;

use std::collections::BTreeMap;
use std::sync::Arc;

use weft_xds::NamedResource;

use crate::authn::PolicyChain;
use crate::push::PushContext;
use crate::registry::{Service, Workload};

pub use cluster::{cluster_name, parse_cluster_name};

pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
pub const INBOUND_PASSTHROUGH_V4: &str = "InboundPassthroughClusterIpv4";
pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
pub const OUTBOUND_PORT: u32 = 15001;
pub const INBOUND_PORT: u32 = 15006;
/// Source address for connections from the sidecar to its own app (kept out of capture by
/// Istio's `-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN`).
pub const INBOUND_PASSTHROUGH_BIND: &str = "127.0.0.6";

/// The proxy a generation is for, from its node id `sidecar~<ip>~<name>.<ns>~<ns>.svc.cluster.local`.
#[derive(Debug, Clone)]
pub struct SidecarNode {
    pub ip: String,
    pub name: String,
    pub namespace: String,
}

impl SidecarNode {
    pub fn parse(node_id: &str) -> Option<SidecarNode> {
        let mut parts = node_id.split('~');
        let kind = parts.next()?;
        if kind != "sidecar" && kind != "router" {
            return None;
        }
        let ip = parts.next()?.to_string();
        let pod = parts.next()?;
        let (name, namespace) = pod.rsplit_once('.')?;
        Some(SidecarNode {
            ip,
            name: name.to_string(),
            namespace: namespace.to_string(),
        })
    }
}

/// What a generation needs to know about the proxy, resolved once per generation.
pub struct ProxyView<'a> {
    pub push: &'a PushContext,
    pub node: SidecarNode,
    pub workload: Option<Arc<Workload>>,
    /// The services this proxy's workload is an endpoint of.
    pub services: Vec<Arc<Service>>,
}

impl<'a> ProxyView<'a> {
    pub fn new(push: &'a PushContext, node: SidecarNode) -> Self {
        let workload = push.registry.workload(&node.namespace, &node.name).cloned();
        let services = workload
            .as_ref()
            .map(|w| push.registry.services_of(w))
            .unwrap_or_default();
        ProxyView {
            push,
            node,
            workload,
            services,
        }
    }

    fn labels(&self) -> BTreeMap<String, String> {
        self.workload
            .as_ref()
            .map(|w| w.labels.clone())
            .unwrap_or_default()
    }

    pub fn policies(&self) -> PolicyChain<'a> {
        PolicyChain::for_workload(
            &self.push.resources,
            self.push.root_namespace(),
            &self.node.namespace,
            &self.labels(),
        )
    }

    /// The inbound ports: (endpoint port, service port) for each port of the proxy's services,
    /// deduplicated by endpoint port (first service wins, as Istio warns on conflicts).
    pub fn inbound_ports(&self) -> Vec<(u16, crate::registry::ServicePort)> {
        let mut out: BTreeMap<u16, crate::registry::ServicePort> = BTreeMap::new();
        let Some(w) = &self.workload else {
            return Vec::new();
        };
        for svc in &self.services {
            for sp in &svc.ports {
                let ep = svc
                    .endpoints
                    .iter()
                    .find(|e| e.workload.as_deref() == Some(&w.name) && e.namespace == w.namespace);
                if let Some(ep) = ep {
                    out.entry(ep.port_for(sp)).or_insert_with(|| sp.clone());
                }
            }
        }
        out.into_iter().collect()
    }
}

pub fn listeners(view: &ProxyView) -> Vec<NamedResource> {
    listener::build(view)
}

pub fn clusters(view: &ProxyView) -> Vec<NamedResource> {
    cluster::build(view)
}

pub fn endpoints(view: &ProxyView, names: &[String]) -> Vec<NamedResource> {
    cluster::endpoints(view, names)
}

pub fn routes(view: &ProxyView, names: &[String]) -> Vec<NamedResource> {
    route::build(view, names)
}
