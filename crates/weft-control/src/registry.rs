//! The service registry: ServiceEntry (services, VIPs, ports, inline endpoints) and
//! WorkloadEntry (workload instances), selected into endpoints the way Istio does, aggregated
//! with what a platform registry (Kubernetes: Services, EndpointSlices, Pods; `weft-kube`)
//! contributes as [`Platform`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use weft_api::{Protocol, Resource, Spec};

/// The label Istio's injector puts on workloads with a sidecar; endpoints carrying
/// `istio` get mTLS from clients with auto mTLS.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
/// Opt-out annotation: a WorkloadEntry with `sidecar.istio.io/inject: "false"` has no sidecar.
pub const INJECT_ANNOTATION: &str = "sidecar.istio.io/inject";

/// One port of a service.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServicePort {
    pub number: u16,
    pub name: String,
    #[serde(skip)]
    pub protocol: Protocol,
    pub target_port: Option<u16>,
}

/// A service from a ServiceEntry host or a platform (Kubernetes Service).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Service {
    /// Fully qualified host name (`reviews.default.svc.cluster.local`).
    pub hostname: String,
    /// The ServiceEntry's namespace.
    pub namespace: String,
    /// The ServiceEntry's name (Istio's `destination_service_name` is the Kubernetes Service name;
    /// off Kubernetes the first label of the host).
    pub name: String,
    pub vips: Vec<IpAddr>,
    /// True when the VIP was allocated by the control plane (no `addresses` in the ServiceEntry).
    pub auto_vip: bool,
    pub ports: Vec<ServicePort>,
    pub mesh_internal: bool,
    pub subject_alt_names: Vec<String>,
    pub endpoints: Vec<Endpoint>,
    /// Endpoints the platform lists as not ready (Kubernetes): not load balanced to, but
    /// their own proxies still serve the service's ports inbound.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unready_endpoints: Vec<Endpoint>,
    /// The ServiceEntry's `resolution`.
    pub resolution: weft_api::networking::Resolution,
    /// With `resolution: DNS`/`DNS_ROUND_ROBIN`: the endpoints named by host (the proxy
    /// resolves them), or the service's own host when the ServiceEntry lists no endpoints.
    pub dns_endpoints: Vec<DnsEndpoint>,
    /// The namespaces the service is exported to (the ServiceEntry's `exportTo`, a Kubernetes
    /// Service's `networking.istio.io/exportTo` annotation); empty: the mesh's
    /// `defaultServiceExportTo` (see [`crate::export`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
}

/// An endpoint the proxy resolves by DNS (Envoy's STRICT_DNS/LOGICAL_DNS clusters).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DnsEndpoint {
    pub host: String,
    /// Service port name → endpoint port.
    pub ports: BTreeMap<String, u16>,
    pub labels: BTreeMap<String, String>,
    pub locality: String,
    pub weight: u32,
    pub tls_mode: String,
}

impl DnsEndpoint {
    /// The endpoint port for a service port (as [`Endpoint::port_for`]).
    pub fn port_for(&self, sp: &ServicePort) -> u16 {
        sp.endpoint_port(&self.ports)
    }
}

impl ServicePort {
    /// The endpoint port for this service port, given an endpoint's named ports: the port of
    /// the same name, else the targetPort, else the number (Istio's rules).
    pub fn endpoint_port(&self, ports: &BTreeMap<String, u16>) -> u16 {
        ports
            .get(&self.name)
            .copied()
            .or(self.target_port)
            .unwrap_or(self.number)
    }
}

impl Service {
    /// Whether the proxy resolves this service's endpoints by DNS.
    pub fn resolves_by_dns(&self) -> bool {
        use weft_api::networking::Resolution;
        matches!(self.resolution, Resolution::Dns | Resolution::DnsRoundRobin)
    }

    pub fn port(&self, number: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }

    /// The names the service goes by for a client in `client_ns`: the FQDN, `name.ns`,
    /// `name.ns.svc` and, in the same namespace, the short name (Kubernetes' search path).
    pub fn names(&self, client_ns: &str) -> Vec<String> {
        let mut names = vec![self.hostname.clone()];
        let suffix = format!(".{}.svc.{}", self.namespace, crate::push::DOMAIN_SUFFIX);
        if let Some(short) = self.hostname.strip_suffix(&suffix) {
            names.push(format!("{short}.{}", self.namespace));
            names.push(format!("{short}.{}.svc", self.namespace));
            if self.namespace == client_ns {
                names.push(short.to_string());
            }
        }
        names
    }

    /// The SPIFFE service accounts of this service's endpoints (for the client's SAN check).
    pub fn service_accounts(&self, trust_domain: &str) -> Vec<String> {
        let mut out: BTreeSet<String> = self
            .endpoints
            .iter()
            .filter_map(|e| e.service_account.as_ref().map(|sa| (sa, &e.namespace)))
            .map(|(sa, ns)| format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}"))
            .collect();
        out.extend(self.subject_alt_names.iter().cloned());
        out.into_iter().collect()
    }
}

/// One endpoint of a service: a workload instance reachable on some ports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Endpoint {
    pub address: IpAddr,
    /// Service port name → endpoint port (WorkloadEntry `ports`).
    pub ports: BTreeMap<String, u16>,
    pub labels: BTreeMap<String, String>,
    pub namespace: String,
    pub workload: Option<String>,
    pub service_account: Option<String>,
    pub network: String,
    pub locality: String,
    pub weight: u32,
    /// `istio` when the endpoint has a sidecar.
    pub tls_mode: String,
}

impl Endpoint {
    /// The endpoint port for a service port: the WorkloadEntry's port of the same name, else the
    /// service port's targetPort, else its number (Istio's rules).
    pub fn port_for(&self, sp: &ServicePort) -> u16 {
        sp.endpoint_port(&self.ports)
    }
}

/// A workload instance (WorkloadEntry).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Workload {
    pub name: String,
    pub namespace: String,
    pub address: IpAddr,
    pub ports: BTreeMap<String, u16>,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub network: String,
    pub locality: String,
    pub weight: u32,
    pub tls_mode: String,
}

impl Workload {
    fn endpoint(&self) -> Endpoint {
        Endpoint {
            address: self.address,
            ports: self.ports.clone(),
            labels: self.labels.clone(),
            namespace: self.namespace.clone(),
            workload: Some(self.name.clone()),
            service_account: Some(self.service_account.clone()),
            network: self.network.clone(),
            locality: self.locality.clone(),
            weight: self.weight,
            tls_mode: self.tls_mode.clone(),
        }
    }
}

/// All services and workloads, indexed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Registry {
    #[serde(serialize_with = "ser_services")]
    pub services: Vec<Arc<Service>>,
    /// Host name → indexes of the services of that name (one per namespace that defines it),
    /// in namespace order.
    #[serde(skip)]
    by_host: HashMap<String, Vec<usize>>,
    #[serde(serialize_with = "ser_workloads")]
    pub workloads: BTreeMap<(String, String), Arc<Workload>>,
    /// (namespace, workload name) → indexes of the services it is an endpoint of.
    #[serde(skip)]
    by_workload: HashMap<(String, String), Vec<usize>>,
}

fn ser_services<S: serde::Serializer>(v: &[Arc<Service>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| x.as_ref()))
}

fn ser_workloads<S: serde::Serializer>(
    v: &BTreeMap<(String, String), Arc<Workload>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.values().map(|x| x.as_ref()))
}

/// What a platform registry adds to the ServiceEntry/WorkloadEntry one: its services with their
/// endpoints (each naming its workload), and a workload per instance (a pod), by which the
/// instance's proxy finds its labels, service account and services, and which ServiceEntry
/// `workloadSelector`s select as they select WorkloadEntries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Platform {
    pub services: Vec<Service>,
    pub workloads: Vec<Workload>,
}

impl Platform {
    /// Whether `other` differs from this in endpoints and workloads alone (the services' own
    /// fields the same).
    pub fn alike_but_endpoints(&self, other: &Platform) -> bool {
        self.services.len() == other.services.len()
            && self.services.iter().zip(&other.services).all(|(a, b)| {
                a.hostname == b.hostname
                    && a.namespace == b.namespace
                    && a.name == b.name
                    && a.vips == b.vips
                    && a.ports == b.ports
                    && a.resolution == b.resolution
                    && a.dns_endpoints == b.dns_endpoints
                    && a.mesh_internal == b.mesh_internal
                    && a.export_to == b.export_to
            })
    }
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Registry {
    /// `LookupCluster`: `ns/host` names the service of that namespace; a bare host must be unique
    /// across namespaces. Returns (hostname, `outbound|<port>||<hostname>`).
    pub fn lookup_cluster(&self, service: &str, port: u32) -> Result<(String, String), String> {
        if service.is_empty() {
            return Err("service must not be empty".into());
        }
        let cluster = |h: &str| format!("outbound|{port}||{h}");
        let parts: Vec<&str> = service.split('/').collect();
        if let [ns, host] = parts[..] {
            if self
                .services
                .iter()
                .any(|s| s.hostname == host && s.namespace == ns)
            {
                return Ok((host.to_string(), cluster(host)));
            }
        } else {
            let mut namespaces: Vec<&str> = self
                .services
                .iter()
                .filter(|s| s.hostname == service)
                .map(|s| s.namespace.as_str())
                .collect();
            namespaces.sort_unstable();
            namespaces.dedup();
            match namespaces.len() {
                1 => return Ok((service.to_string(), cluster(service))),
                0 => {}
                _ => {
                    return Err(format!(
                        "found {service} in multiple namespaces [{}], specify the namespace explicitly \
                         in the format of <Namespace>/<Hostname>",
                        namespaces.join(" ")
                    ));
                }
            }
        }
        Err(format!(
            "could not find service {service} in Istio service registry"
        ))
    }

    /// Builds the registry from the current resources. `domain_suffix` is `cluster.local`.
    pub fn build(resources: &[Resource], domain_suffix: &str) -> Registry {
        Registry::build_with(resources, &Platform::default(), domain_suffix)
    }

    /// Builds the registry from the current resources and a platform's services and workloads.
    pub fn build_with(
        resources: &[Resource],
        platform: &Platform,
        domain_suffix: &str,
    ) -> Registry {
        let mut workloads: BTreeMap<(String, String), Arc<Workload>> = platform
            .workloads
            .iter()
            .map(|w| ((w.namespace.clone(), w.name.clone()), Arc::new(w.clone())))
            .collect();
        for r in resources {
            if let Spec::WorkloadEntry(we) = &r.spec {
                let Ok(address) = we.address.parse::<IpAddr>() else {
                    // DNS and unix:// addresses are valid Istio but not routable here yet.
                    tracing::warn!(
                        workload = %format!("{}/{}", r.meta.namespace, r.meta.name),
                        address = %we.address,
                        "WorkloadEntry address is not an IP address; it is left out of the registry"
                    );
                    continue;
                };
                let injected = r
                    .meta
                    .annotations
                    .get(INJECT_ANNOTATION)
                    .map(String::as_str)
                    != Some("false");
                let tls_mode = we.labels.get(TLS_MODE_LABEL).cloned().unwrap_or_else(|| {
                    if injected {
                        "istio".into()
                    } else {
                        "disabled".into()
                    }
                });
                let w = Workload {
                    name: r.meta.name.clone(),
                    namespace: r.meta.namespace.clone(),
                    address,
                    ports: we
                        .ports
                        .iter()
                        .map(|(k, v)| (k.clone(), *v as u16))
                        .collect(),
                    labels: we.labels.clone(),
                    service_account: if we.service_account.is_empty() {
                        "default".into()
                    } else {
                        we.service_account.clone()
                    },
                    network: we.network.clone(),
                    locality: we.locality.clone(),
                    weight: we.weight.max(1),
                    tls_mode,
                };
                workloads.insert((w.namespace.clone(), w.name.clone()), Arc::new(w));
            }
        }

        let mut services: Vec<Service> = platform.services.clone();
        for r in resources {
            let Spec::ServiceEntry(se) = &r.spec else {
                continue;
            };
            let ns = &r.meta.namespace;
            let ports: Vec<ServicePort> = se
                .ports
                .iter()
                .map(|p| ServicePort {
                    number: p.number as u16,
                    name: p.name.clone(),
                    protocol: if p.protocol.is_empty() {
                        weft_api::protocol_for_port(None, &p.name, p.number)
                    } else {
                        Protocol::from_istio_name(&p.protocol)
                    },
                    target_port: (p.target_port != 0).then_some(p.target_port as u16),
                })
                .collect();
            use weft_api::networking::Resolution;
            let by_dns = matches!(se.resolution, Resolution::Dns | Resolution::DnsRoundRobin);
            let mut endpoints: Vec<Endpoint> = Vec::new();
            let mut dns_endpoints: Vec<DnsEndpoint> = Vec::new();
            let tls_mode_of = |labels: &BTreeMap<String, String>| {
                labels
                    .get(TLS_MODE_LABEL)
                    .cloned()
                    .unwrap_or_else(|| "disabled".into())
            };
            for (i, e) in se.endpoints.iter().enumerate() {
                let Ok(address) = e.address.parse::<IpAddr>() else {
                    // A host name: resolved by the proxy with DNS resolution (validation
                    // refuses it with STATIC).
                    if by_dns {
                        dns_endpoints.push(DnsEndpoint {
                            host: e.address.clone(),
                            ports: e
                                .ports
                                .iter()
                                .map(|(k, v)| (k.clone(), *v as u16))
                                .collect(),
                            labels: e.labels.clone(),
                            locality: e.locality.clone(),
                            weight: e.weight.max(1),
                            tls_mode: tls_mode_of(&e.labels),
                        });
                    }
                    continue;
                };
                endpoints.push(Endpoint {
                    address,
                    ports: e
                        .ports
                        .iter()
                        .map(|(k, v)| (k.clone(), *v as u16))
                        .collect(),
                    labels: e.labels.clone(),
                    namespace: ns.clone(),
                    workload: Some(format!("{}-{i}", r.meta.name)),
                    service_account: Some(e.service_account.clone()).filter(|s| !s.is_empty()),
                    network: e.network.clone(),
                    locality: e.locality.clone(),
                    weight: e.weight.max(1),
                    tls_mode: tls_mode_of(&e.labels),
                });
            }
            if let Some(sel) = &se.workload_selector {
                for w in workloads.values() {
                    if &w.namespace == ns && selects(&sel.labels, &w.labels) {
                        endpoints.push(w.endpoint());
                    }
                }
            }
            let vips: Vec<IpAddr> = se
                .addresses
                .iter()
                .filter_map(|a| a.split('/').next().and_then(|ip| ip.parse().ok()))
                .collect();
            for host in &se.hosts {
                let hostname = weft_api::resolve_host(host, ns, domain_suffix);
                let name = hostname.split('.').next().unwrap_or(&hostname).to_string();
                // DNS resolution with no endpoints: each host resolves itself (istiod's
                // instances with the host as address).
                let dns_endpoints =
                    if by_dns && se.endpoints.is_empty() && se.workload_selector.is_none() {
                        vec![DnsEndpoint {
                            host: hostname.clone(),
                            ports: BTreeMap::new(),
                            labels: BTreeMap::new(),
                            locality: String::new(),
                            weight: 1,
                            tls_mode: "disabled".into(),
                        }]
                    } else {
                        dns_endpoints.clone()
                    };
                services.push(Service {
                    hostname,
                    namespace: ns.clone(),
                    name,
                    auto_vip: vips.is_empty(),
                    vips: vips.clone(),
                    ports: ports.clone(),
                    mesh_internal: se.location == weft_api::networking::Location::MeshInternal,
                    subject_alt_names: se.subject_alt_names.clone(),
                    endpoints: endpoints.clone(),
                    unready_endpoints: Vec::new(),
                    resolution: se.resolution,
                    dns_endpoints,
                    export_to: se.export_to.clone(),
                });
            }
        }
        allocate_vips(&mut services);
        services.sort_by(|a, b| {
            (a.hostname.as_str(), a.namespace.as_str())
                .cmp(&(b.hostname.as_str(), b.namespace.as_str()))
        });
        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            by_host.entry(s.hostname.clone()).or_default().push(i);
        }
        let mut by_workload: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, svc) in services.iter().enumerate() {
            for e in svc.endpoints.iter().chain(&svc.unready_endpoints) {
                if let Some(w) = &e.workload {
                    let list = by_workload
                        .entry((e.namespace.clone(), w.clone()))
                        .or_default();
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                }
            }
        }
        Registry {
            services: services.into_iter().map(Arc::new).collect(),
            by_host,
            workloads,
            by_workload,
        }
    }

    /// The service of `hostname` (the first namespace's when several define it); a proxy's
    /// lookups go through [`Registry::service_for`].
    pub fn service(&self, hostname: &str) -> Option<&Arc<Service>> {
        self.by_host
            .get(hostname)
            .and_then(|idx| idx.first())
            .map(|&i| &self.services[i])
    }

    /// The service of `hostname` a proxy in `namespace` uses among those `visible` to it, as
    /// istiod picks one when several namespaces define the same host: its own namespace's,
    /// else the first (Istio takes the oldest; Weft, having no creation times for files, the
    /// first namespace by name).
    pub fn service_for(
        &self,
        hostname: &str,
        namespace: &str,
        visible: impl Fn(&Service) -> bool,
    ) -> Option<&Arc<Service>> {
        let mut first = None;
        for &i in self.by_host.get(hostname)? {
            let s = &self.services[i];
            if !visible(s) {
                continue;
            }
            if s.namespace == namespace {
                return Some(s);
            }
            first.get_or_insert(s);
        }
        first
    }

    /// The namespaces that define a host another namespace defines too.
    pub fn namespaces_sharing_hosts(&self) -> std::collections::BTreeSet<String> {
        self.by_host
            .values()
            .filter(|idx| idx.len() > 1)
            .flatten()
            .map(|&i| self.services[i].namespace.clone())
            .collect()
    }

    /// Whether several namespaces define `hostname`.
    pub fn shared_host(&self, hostname: &str) -> bool {
        self.by_host.get(hostname).is_some_and(|idx| idx.len() > 1)
    }

    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Arc<Workload>> {
        self.workloads
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// Per workload (namespace, name), the host names of the services it is an endpoint of
    /// (ready or not), for telling which proxies' own services changed.
    pub fn memberships(&self) -> BTreeMap<(String, String), Vec<&str>> {
        self.by_workload
            .iter()
            .map(|(k, idx)| {
                let mut hosts: Vec<&str> = idx
                    .iter()
                    .map(|&i| self.services[i].hostname.as_str())
                    .collect();
                hosts.sort_unstable();
                (k.clone(), hosts)
            })
            .collect()
    }

    /// The services a workload is an endpoint of.
    pub fn services_of(&self, w: &Workload) -> Vec<Arc<Service>> {
        self.by_workload
            .get(&(w.namespace.clone(), w.name.clone()))
            .map(|idx| idx.iter().map(|&i| self.services[i].clone()).collect())
            .unwrap_or_default()
    }
}

/// Istio's DNS auto-allocation: services without addresses get a VIP from 240.240.0.0/16,
/// chosen by a hash of the host name (stable across unrelated changes) with linear probing.
fn allocate_vips(services: &mut [Service]) {
    let mut used: BTreeSet<IpAddr> = services
        .iter()
        .flat_map(|s| s.vips.iter().copied())
        .collect();
    let mut order: Vec<usize> = (0..services.len())
        .filter(|&i| services[i].vips.is_empty())
        .collect();
    order.sort_by(|&a, &b| services[a].hostname.cmp(&services[b].hostname));
    for i in order {
        let mut h: u32 = 2166136261;
        for b in services[i].hostname.bytes() {
            h = (h ^ b as u32).wrapping_mul(16777619);
        }
        let mut slot = (h % 65534) + 1;
        loop {
            let ip = IpAddr::V4(Ipv4Addr::new(
                240,
                240,
                (slot >> 8) as u8,
                (slot & 0xff) as u8,
            ));
            if used.insert(ip) {
                services[i].vips.push(ip);
                break;
            }
            slot = slot % 65534 + 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(yaml: &str) -> Registry {
        let (resources, problems) = weft_api::parse_documents(yaml, std::path::Path::new("t.yaml"));
        assert!(problems.is_empty(), "{problems:?}");
        Registry::build(&resources, "cluster.local")
    }

    #[test]
    fn short_hosts_resolve_and_vips_are_allocated_stably() {
        let yaml = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: a, namespace: ns1}\nspec:\n  hosts: [alpha, beta.example.com]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http-web, protocol: HTTP}]\n";
        let r = build(yaml);
        let alpha = r
            .service("alpha.ns1.svc.cluster.local")
            .expect("short name resolved");
        assert!(alpha.auto_vip);
        let vip = alpha.vips[0];
        assert!(vip.to_string().starts_with("240.240."), "{vip}");
        assert_eq!(alpha.ports[0].protocol, Protocol::Http);
        let beta = r.service("beta.example.com").expect("FQDN kept");
        assert_ne!(beta.vips[0], vip);
        // Adding an unrelated service does not move existing VIPs.
        let more = format!(
            "{yaml}---\napiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {{name: b, namespace: ns1}}\nspec:\n  hosts: [gamma]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 80, name: http}}]\n"
        );
        assert_eq!(
            build(&more)
                .service("gamma.ns1.svc.cluster.local")
                .unwrap()
                .ports[0]
                .protocol,
            Protocol::Http,
            "protocol from the port name prefix when none is given"
        );
        let r2 = build(&more);
        assert_eq!(
            r2.service("alpha.ns1.svc.cluster.local").unwrap().vips[0],
            vip
        );
    }

    #[test]
    fn workload_selection_is_per_namespace_and_tls_mode_follows_injection() {
        let yaml = r#"apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: s, namespace: a}
spec:
  hosts: [s]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http}]
  workloadSelector: {labels: {app: s}}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: w1, namespace: a}
spec: {address: 10.0.0.1, labels: {app: s}}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: w2, namespace: a, annotations: {sidecar.istio.io/inject: "false"}}
spec: {address: 10.0.0.2, labels: {app: s}}
---
apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: w3, namespace: b}
spec: {address: 10.0.0.3, labels: {app: s}}
"#;
        let r = build(yaml);
        let s = r.service("s.a.svc.cluster.local").unwrap();
        let eps: Vec<_> = s
            .endpoints
            .iter()
            .map(|e| (e.address.to_string(), e.tls_mode.clone()))
            .collect();
        assert_eq!(
            eps,
            vec![
                ("10.0.0.1".into(), "istio".into()),
                ("10.0.0.2".into(), "disabled".into())
            ]
        );
        assert_eq!(
            s.service_accounts("cluster.local"),
            vec!["spiffe://cluster.local/ns/a/sa/default".to_string()]
        );
        let w1 = r.workload("a", "w1").unwrap();
        assert_eq!(r.services_of(w1).len(), 1);
        assert!(r.services_of(r.workload("b", "w3").unwrap()).is_empty());
    }
}
