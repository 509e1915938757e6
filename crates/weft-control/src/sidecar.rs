//! The sidecar generator: Istio's Envoy resources for one proxy (virtualOutbound,
//! virtualInbound, per-port outbound listeners, route tables per port, outbound/inbound
//! clusters with auto mTLS, EDS endpoints).

mod cluster;
pub mod http_route;
mod listener;
pub mod nds;
mod route;
pub mod scope;
pub mod traffic_policy;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use weft_xds::NamedResource;

use crate::authn::PolicyChain;
use crate::push::PushContext;
use crate::registry::{Service, Workload};

pub use cluster::{cluster_name, parse_cluster_name};
pub use route::service_routes;

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
    /// What this proxy's DestinationRule lookups depend on (namespace, workload labels).
    pub destination_scope: crate::destination::Scope,
    /// The Sidecar resource that applies to the proxy, if any.
    pub sidecar: Option<scope::SidecarScope>,
}

impl<'a> ProxyView<'a> {
    pub fn new(push: &'a PushContext, node: SidecarNode) -> Self {
        let workload = push.registry.workload(&node.namespace, &node.name).cloned();
        let services = workload
            .as_ref()
            .map(|w| push.registry.services_of(w))
            .unwrap_or_default();
        let labels = workload
            .as_ref()
            .map(|w| w.labels.clone())
            .unwrap_or_default();
        let sidecar = scope::SidecarScope::for_proxy(
            &push.resources,
            push.root_namespace(),
            &node.namespace,
            &labels,
        );
        let destination_scope = push.destination_rules.scope(&node.namespace, labels);
        ProxyView {
            push,
            node,
            workload,
            services,
            destination_scope,
            sidecar,
        }
    }

    /// The services the proxy imports (exported to its namespace; its Sidecar's
    /// `egress.hosts`, all without one), one per host name (see [`ProxyView::service`]).
    pub fn visible_services(&self) -> impl Iterator<Item = &'a Arc<Service>> + '_ {
        let registry = &self.push.registry;
        registry.services.iter().filter(move |s| {
            self.sees(s)
                && (!registry.shared_host(&s.hostname)
                    || self
                        .service(&s.hostname)
                        .is_some_and(|chosen| Arc::ptr_eq(chosen, s)))
        })
    }

    /// Whether the service is exported to the proxy's namespace and imported by its Sidecar.
    fn sees(&self, s: &Service) -> bool {
        self.push.service_exports.visible(s, &self.node.namespace)
            && self
                .sidecar
                .as_ref()
                .is_none_or(|sc| sc.imports(s, &self.node.namespace))
    }

    /// The service of `hostname` the proxy sees: when several namespaces define the host, its
    /// own namespace's, else the first visible one
    /// ([`Registry::service_for`](crate::registry::Registry::service_for)).
    pub fn service(&self, hostname: &str) -> Option<&'a Arc<Service>> {
        self.push
            .registry
            .service_for(hostname, &self.node.namespace, |s| self.sees(s))
    }

    /// The outbound traffic policy in force: the Sidecar's, else the mesh's.
    pub fn outbound_mode(&self) -> weft_api::networking::OutboundTrafficMode {
        self.sidecar
            .as_ref()
            .and_then(|s| s.outbound_mode)
            .unwrap_or(self.push.mesh.outbound_traffic_policy.mode)
    }

    /// Whether unknown destinations go to the BlackHoleCluster.
    pub fn registry_only(&self) -> bool {
        self.outbound_mode() == weft_api::networking::OutboundTrafficMode::RegistryOnly
    }

    /// What generated resources depend on through the Sidecar resource.
    pub fn sidecar_key(&self) -> &str {
        self.sidecar.as_ref().map_or("", |s| s.key.as_str())
    }

    /// What the set of [`visible_services`](Self::visible_services) depends on: the Sidecar
    /// resource and the namespace when a service is exported to it alone.
    pub fn visibility_key(&self) -> String {
        format!(
            "{}|{}",
            self.sidecar_key(),
            self.push.service_exports.key(&self.node.namespace)
        )
    }

    /// The proxy's workload labels (none without a WorkloadEntry).
    pub fn labels(&self) -> BTreeMap<String, String> {
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
                    .chain(&svc.unready_endpoints)
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
    let dependent = client_dependent_listeners(view.push);
    let mut out = shared_listeners(view, &dependent);
    out.extend(client_listeners(view, &dependent));
    out.push(inbound_listener(view));
    out
}

pub fn clusters(view: &ProxyView) -> Vec<NamedResource> {
    let mut out = shared_clusters(view);
    out.extend(inbound_clusters(view));
    out
}

/// The services whose TCP/TLS listeners differ between clients (VirtualService `tcp`/`tls`
/// matches on `sourceLabels` or `sourceNamespace`, or a restricted `exportTo`).
pub fn client_dependent_listeners(push: &PushContext) -> BTreeSet<String> {
    listener::client_dependent(push)
}

/// The part of the listeners that is the same for every sidecar of a push (all but the
/// TCP/TLS listeners of the `dependent` services).
pub fn shared_listeners(view: &ProxyView, dependent: &BTreeSet<String>) -> Vec<NamedResource> {
    listener::shared(view, dependent)
}

/// The TCP/TLS listeners of the `dependent` services for this proxy; the same for every proxy
/// with the same [`listener_key`].
pub fn client_listeners(view: &ProxyView, dependent: &BTreeSet<String>) -> Vec<NamedResource> {
    listener::per_client(view, dependent)
}

/// What [`client_listeners`] depend on: the proxy's namespace and which `tcp`/`tls`
/// `sourceLabels` matches its labels satisfy.
pub fn listener_key(view: &ProxyView) -> String {
    listener::client_key(view)
}

/// What a proxy's outbound telemetry (access logging) depends on: proxies with equal keys
/// share their outbound listeners.
pub fn telemetry_key(view: &ProxyView) -> String {
    let labels = view.labels();
    let mut key = view
        .push
        .telemetry
        .client_key(&view.node.namespace, &labels);
    if crate::telemetry::tracing::uses_opentelemetry(view, crate::telemetry::Mode::Client) {
        key.push_str("|otel:");
        key.push_str(&crate::telemetry::tracing::service_name(view));
    }
    key
}

/// The proxy's own virtualInbound listener.
pub fn inbound_listener(view: &ProxyView) -> NamedResource {
    listener::inbound(view)
}

/// The part of the clusters that is the same for every sidecar of a push.
pub fn shared_clusters(view: &ProxyView) -> Vec<NamedResource> {
    cluster::shared(view)
}

/// The proxy's own inbound clusters.
pub fn inbound_clusters(view: &ProxyView) -> Vec<NamedResource> {
    cluster::inbound(view)
}

pub fn endpoints(view: &ProxyView, names: &[String]) -> Vec<NamedResource> {
    cluster::endpoints(view, names)
}

pub fn routes(view: &ProxyView, names: &[String]) -> Vec<NamedResource> {
    route::build(view, names)
}

#[cfg(test)]
mod tests;
