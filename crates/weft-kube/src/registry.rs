//! Kubernetes' registry as istiod builds it: a service per Service
//! (`<name>.<namespace>.svc.cluster.local`, its cluster IPs, its ports with the protocol from
//! `appProtocol`, then the port name), endpoints from its EndpointSlices (the pod's labels,
//! service account and the node's locality; not-ready ones kept apart), a workload per running
//! pod with an IP (how its proxy finds itself), headless Services as passthrough and
//! ExternalName Services resolved by DNS.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weft_api::networking::Resolution;
use weft_control::registry::{
    DnsEndpoint, Endpoint, Platform, Service, ServicePort, TLS_MODE_LABEL, Workload,
};

/// The label an EndpointSlice names its Service by.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Node labels of the locality (Istio's `region/zone/subzone`).
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const SUBZONE_LABEL: &str = "topology.istio.io/subzone";

/// The objects the registry is built from.
#[derive(Default)]
pub struct Objects<'a> {
    pub services: &'a [Arc<KubeService>],
    pub slices: &'a [Arc<EndpointSlice>],
    pub pods: &'a [Arc<Pod>],
    pub nodes: &'a [Arc<Node>],
}

fn locality(node: Option<&Node>) -> String {
    let Some(labels) = node.and_then(|n| n.metadata.labels.as_ref()) else {
        return String::new();
    };
    let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or_default();
    let parts = [get(REGION_LABEL), get(ZONE_LABEL), get(SUBZONE_LABEL)];
    let used = parts
        .iter()
        .rposition(|p| !p.is_empty())
        .map_or(0, |i| i + 1);
    parts[..used].join("/")
}

/// The annotation a Service is exported by (Istio's `networking.istio.io/exportTo`).
const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// The namespaces the Service's `networking.istio.io/exportTo` annotation exports it to
/// (comma-separated, as Istio reads it); none without the annotation (the mesh default).
fn export_to(svc: &KubeService) -> Vec<String> {
    svc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn key(ns: Option<&String>, name: Option<&String>) -> (String, String) {
    (
        ns.cloned().unwrap_or_default(),
        name.cloned().unwrap_or_default(),
    )
}

/// The pod's labels, service account and locality, as its endpoints carry them.
struct PodInfo<'a> {
    pod: &'a Pod,
    locality: String,
}

impl PodInfo<'_> {
    fn labels(&self) -> BTreeMap<String, String> {
        self.pod.metadata.labels.clone().unwrap_or_default()
    }

    fn service_account(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into())
    }

    /// `istio` for pods with a sidecar (the injector's label), else `disabled`.
    fn tls_mode(&self) -> String {
        self.pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(TLS_MODE_LABEL).cloned())
            .unwrap_or_else(|| "disabled".into())
    }
}

/// Builds the platform registry from the objects.
pub fn build(objects: &Objects<'_>, domain_suffix: &str) -> Platform {
    let nodes: HashMap<&str, &Node> = objects
        .nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n.as_ref())))
        .collect();
    let pods: HashMap<(String, String), PodInfo> = objects
        .pods
        .iter()
        .map(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
            (
                key(p.metadata.namespace.as_ref(), p.metadata.name.as_ref()),
                PodInfo {
                    pod: p.as_ref(),
                    locality: locality(node.and_then(|n| nodes.get(n).copied())),
                },
            )
        })
        .collect();

    let mut slices: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
    for s in objects.slices {
        let Some(svc) = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        slices
            .entry(key(s.metadata.namespace.as_ref(), Some(svc)))
            .or_default()
            .push(s.as_ref());
    }

    let mut services = Vec::new();
    for svc in objects.services {
        let (ns, name) = key(svc.metadata.namespace.as_ref(), svc.metadata.name.as_ref());
        let Some(spec) = &svc.spec else { continue };
        let hostname = format!("{name}.{ns}.svc.{domain_suffix}");
        let ports: Vec<ServicePort> = spec
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") != "UDP")
            .map(|p| {
                let pname = p.name.clone().unwrap_or_default();
                ServicePort {
                    number: p.port as u16,
                    protocol: weft_api::protocol_for_port(
                        p.app_protocol.as_deref(),
                        &pname,
                        p.port as u32,
                    ),
                    name: pname,
                    target_port: match &p.target_port {
                        Some(IntOrString::Int(n)) => Some(*n as u16),
                        _ => None,
                    },
                }
            })
            .collect();
        let mut service = Service {
            hostname,
            namespace: ns.clone(),
            name: name.clone(),
            vips: Vec::new(),
            auto_vip: false,
            ports,
            mesh_internal: true,
            subject_alt_names: Vec::new(),
            endpoints: Vec::new(),
            unready_endpoints: Vec::new(),
            resolution: Resolution::Static,
            dns_endpoints: Vec::new(),
            export_to: export_to(svc),
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            // Outside the mesh, resolved by DNS (istiod's ExternalName services).
            service.mesh_internal = false;
            service.resolution = Resolution::Dns;
            if let Some(host) = &spec.external_name {
                service.dns_endpoints.push(DnsEndpoint {
                    host: host.clone(),
                    ports: BTreeMap::new(),
                    labels: BTreeMap::new(),
                    locality: String::new(),
                    weight: 1,
                    tls_mode: "disabled".into(),
                });
            }
            services.push(service);
            continue;
        }
        let ips: Vec<&String> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .collect();
        if ips.iter().any(|ip| ip.as_str() == "None") {
            // Headless: to the address the client asked for (istiod: Passthrough).
            service.resolution = Resolution::None;
        } else {
            // clusterIPs holds clusterIP first; each address once (a repeated VIP would give
            // duplicate listeners and virtual-host domains).
            let mut vips: Vec<IpAddr> = Vec::new();
            for ip in ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                if !vips.contains(&ip) {
                    vips.push(ip);
                }
            }
            service.vips = vips;
        }
        let mut seen: BTreeSet<IpAddr> = BTreeSet::new();
        for slice in slices
            .get(&(ns.clone(), name.clone()))
            .into_iter()
            .flatten()
        {
            let ports: BTreeMap<String, u16> = slice
                .ports
                .iter()
                .flatten()
                .filter(|p| p.protocol.as_deref().unwrap_or("TCP") != "UDP")
                .filter_map(|p| Some((p.name.clone().unwrap_or_default(), p.port? as u16)))
                .collect();
            for ep in &slice.endpoints {
                let pod = ep
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .and_then(|r| {
                        pods.get(&key(
                            Some(r.namespace.as_ref().unwrap_or(&ns)),
                            r.name.as_ref(),
                        ))
                    });
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                for addr in &ep.addresses {
                    let Ok(address) = addr.parse::<IpAddr>() else {
                        continue;
                    };
                    if !seen.insert(address) {
                        continue;
                    }
                    let endpoint = Endpoint {
                        address,
                        ports: ports.clone(),
                        labels: pod.map(PodInfo::labels).unwrap_or_default(),
                        namespace: ns.clone(),
                        workload: pod.and_then(|p| p.pod.metadata.name.clone()),
                        service_account: pod.map(PodInfo::service_account),
                        network: String::new(),
                        locality: pod
                            .map(|p| p.locality.clone())
                            .unwrap_or_else(|| ep.zone.clone().unwrap_or_default()),
                        weight: 1,
                        tls_mode: pod
                            .map(PodInfo::tls_mode)
                            .unwrap_or_else(|| "disabled".into()),
                    };
                    if ready {
                        service.endpoints.push(endpoint);
                    } else {
                        service.unready_endpoints.push(endpoint);
                    }
                }
            }
        }
        services.push(service);
    }
    services.sort_by(|a, b| a.hostname.cmp(&b.hostname));

    let mut workloads: Vec<Workload> = pods
        .values()
        .filter(|p| {
            let phase = p.pod.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .filter_map(|p| {
            let address = p.pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
            Some(Workload {
                name: p.pod.metadata.name.clone()?,
                namespace: p.pod.metadata.namespace.clone()?,
                address,
                ports: BTreeMap::new(),
                labels: p.labels(),
                service_account: p.service_account(),
                network: String::new(),
                locality: p.locality.clone(),
                weight: 1,
                tls_mode: p.tls_mode(),
            })
        })
        .collect();
    workloads.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Platform {
        services,
        workloads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj<T: serde::de::DeserializeOwned>(json: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(json).expect("object"))
    }

    #[test]
    fn services_endpoints_and_workloads_as_istiod_builds_them() {
        let services = [
            obj(serde_json::json!({
                "metadata": {"name": "reviews", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20", "fd00::20"], "selector": {"app": "reviews"},
                         "ports": [{"name": "http", "port": 9080, "targetPort": 9080},
                                   {"name": "metrics", "port": 9090, "appProtocol": "tcp", "targetPort": "prom"},
                                   {"name": "dns", "port": 53, "protocol": "UDP"}]}
            })),
            obj(serde_json::json!({
                "metadata": {"name": "db", "namespace": "default", "annotations": {"networking.istio.io/exportTo": " ., shop ,"}},
                "spec": {"clusterIP": "None", "ports": [{"name": "tcp-db", "port": 5432}]}
            })),
            obj(serde_json::json!({
                "metadata": {"name": "ext", "namespace": "default"},
                "spec": {"type": "ExternalName", "externalName": "example.com", "ports": [{"name": "https", "port": 443}]}
            })),
        ];
        let slices = [obj(serde_json::json!({
            "metadata": {"name": "reviews-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "reviews"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}, {"name": "metrics", "port": 9091}],
            "endpoints": [
                {"addresses": ["10.1.0.5"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "name": "reviews-v1-x", "namespace": "default"}},
                {"addresses": ["10.1.0.6"], "conditions": {"ready": false}, "targetRef": {"kind": "Pod", "name": "reviews-v2-y", "namespace": "default"}},
                {"addresses": ["10.1.0.5"], "conditions": {"ready": true}}
            ]
        }))];
        let pods = [
            obj(serde_json::json!({
                "metadata": {"name": "reviews-v1-x", "namespace": "default", "labels": {"app": "reviews", "version": "v1", "security.istio.io/tlsMode": "istio"}},
                "spec": {"serviceAccountName": "bookinfo-reviews", "nodeName": "n1", "containers": []},
                "status": {"phase": "Running", "podIP": "10.1.0.5"}
            })),
            obj(serde_json::json!({
                "metadata": {"name": "reviews-v2-y", "namespace": "default", "labels": {"app": "reviews", "version": "v2"}},
                "spec": {"containers": []},
                "status": {"phase": "Running", "podIP": "10.1.0.6"}
            })),
            obj(serde_json::json!({
                "metadata": {"name": "done", "namespace": "default"},
                "spec": {"containers": []},
                "status": {"phase": "Succeeded", "podIP": "10.1.0.7"}
            })),
        ];
        let nodes = [obj(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/region": "eu", "topology.kubernetes.io/zone": "eu-1"}}
        }))];
        let p = build(
            &Objects {
                services: &services,
                slices: &slices,
                pods: &pods,
                nodes: &nodes,
            },
            "cluster.local",
        );
        let hosts: Vec<&str> = p.services.iter().map(|s| s.hostname.as_str()).collect();
        assert_eq!(
            hosts,
            [
                "db.default.svc.cluster.local",
                "ext.default.svc.cluster.local",
                "reviews.default.svc.cluster.local"
            ]
        );
        let reviews = &p.services[2];
        // Dual stack: each address once.
        assert_eq!(
            reviews.vips,
            [
                "10.96.0.20".parse::<IpAddr>().unwrap(),
                "fd00::20".parse::<IpAddr>().unwrap()
            ]
        );
        assert_eq!(reviews.resolution, Resolution::Static);
        // UDP is left out; appProtocol wins over the port name; a named targetPort is the
        // slice's business.
        assert_eq!(reviews.ports.len(), 2);
        assert_eq!(reviews.ports[0].protocol, weft_api::Protocol::Http);
        assert_eq!(reviews.ports[0].target_port, Some(9080));
        assert_eq!(reviews.ports[1].protocol, weft_api::Protocol::Tcp);
        assert_eq!(reviews.ports[1].target_port, None);
        // One ready endpoint (the duplicate address once), one not ready.
        assert_eq!(reviews.endpoints.len(), 1);
        let ep = &reviews.endpoints[0];
        assert_eq!(ep.workload.as_deref(), Some("reviews-v1-x"));
        assert_eq!(ep.service_account.as_deref(), Some("bookinfo-reviews"));
        assert_eq!(ep.locality, "eu/eu-1");
        assert_eq!(ep.tls_mode, "istio");
        assert_eq!(ep.labels["version"], "v1");
        assert_eq!(ep.port_for(&reviews.ports[1]), 9091);
        assert_eq!(reviews.unready_endpoints.len(), 1);
        assert_eq!(
            reviews.unready_endpoints[0].service_account.as_deref(),
            Some("default")
        );
        assert_eq!(p.services[0].resolution, Resolution::None);
        // The exportTo annotation, comma-separated; none: the mesh default.
        assert_eq!(p.services[0].export_to, [".", "shop"]);
        assert!(reviews.export_to.is_empty());
        assert!(p.services[0].vips.is_empty());
        assert_eq!(p.services[1].resolution, Resolution::Dns);
        assert_eq!(p.services[1].dns_endpoints[0].host, "example.com");
        assert!(!p.services[1].mesh_internal);
        // Running pods with an IP are workloads; finished ones are not.
        let names: Vec<&str> = p.workloads.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["reviews-v1-x", "reviews-v2-y"]);
    }
}
