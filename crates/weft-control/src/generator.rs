//! Picks the resource form for each proxy (Envoy-style sidecar, or proxyless gRPC when the
//! node metadata says `GENERATOR: grpc`, as istiod does) and generates from the current push
//! context. What is the same for every sidecar of a push (outbound clusters and listeners, the
//! route table of a port for a namespace, each ClusterLoadAssignment) is built once per push and
//! shared; only the proxy's inbound side is built per proxy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use weft_xds::{Generated, Generator, NamedResource, ProxyInfo, Subscription};

use crate::push::PushContext;
use crate::sidecar::{self, ProxyView, SidecarNode};

/// Resources shared by the proxies of one push version.
#[derive(Default)]
struct Shared {
    version: String,
    clusters: Option<Arc<Vec<NamedResource>>>,
    listeners: Option<Arc<Vec<NamedResource>>>,
    /// (proxy namespace, route table name) → table.
    routes: HashMap<(String, String), Option<NamedResource>>,
    /// Cluster name → assignment.
    endpoints: HashMap<String, Option<NamedResource>>,
    /// The previous versions' encodings, by name.
    previous: Previous,
}

/// Encodings of earlier pushes, so that a resource whose content did not change keeps its exact
/// bytes. (Envoy's protos hold maps — metadata, typed options — whose encoding order is not
/// stable; without this every push would look like a change of every cluster, and every proxy
/// would be sent all of them again.)
#[derive(Default)]
struct Previous {
    clusters: HashMap<String, NamedResource>,
    listeners: HashMap<String, NamedResource>,
    routes: HashMap<(String, String), NamedResource>,
    endpoints: HashMap<String, NamedResource>,
}

/// Reuses the previous bytes of a resource when its decoded content is equal.
fn stable<T: prost::Message + Default + PartialEq>(
    new: NamedResource,
    prev: Option<&NamedResource>,
) -> NamedResource {
    let Some(prev) = prev else { return new };
    if prev.resource == new.resource || prev.resource.type_url != new.resource.type_url {
        return new;
    }
    match (
        T::decode(prev.resource.value.as_slice()),
        T::decode(new.resource.value.as_slice()),
    ) {
        (Ok(a), Ok(b)) if a == b => prev.clone(),
        _ => new,
    }
}

fn stable_all<T: prost::Message + Default + PartialEq>(
    new: Vec<NamedResource>,
    prev: &HashMap<String, NamedResource>,
) -> Vec<NamedResource> {
    new.into_iter()
        .map(|r| {
            let p = prev.get(&r.name);
            stable::<T>(r, p)
        })
        .collect()
}

/// Generates Envoy resources from the latest push context.
pub struct MeshGenerator {
    push: Arc<ArcSwap<PushContext>>,
    shared: Mutex<Shared>,
}

impl MeshGenerator {
    pub fn new(push: Arc<ArcSwap<PushContext>>) -> Self {
        MeshGenerator {
            push,
            shared: Mutex::default(),
        }
    }

    /// Runs `f` on the cache of `version`, starting a new cache when the version moved on.
    fn with_shared<T>(&self, version: &str, f: impl FnOnce(&mut Shared) -> T) -> T {
        let mut guard = match self.shared.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if guard.version != version {
            let old = std::mem::take(&mut *guard);
            let mut previous = old.previous;
            // Keep the newest encoding of each name.
            if let Some(c) = old.clusters {
                previous.clusters = c.iter().map(|r| (r.name.clone(), r.clone())).collect();
            }
            if let Some(l) = old.listeners {
                previous.listeners = l.iter().map(|r| (r.name.clone(), r.clone())).collect();
            }
            previous.routes.extend(
                old.routes
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v))),
            );
            previous.endpoints.extend(
                old.endpoints
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v))),
            );
            *guard = Shared {
                version: version.to_string(),
                previous,
                ..Shared::default()
            };
        }
        f(&mut guard)
    }
}

fn is_grpc(proxy: &ProxyInfo) -> bool {
    proxy.metadata.get("GENERATOR").and_then(|v| v.as_str()) == Some("grpc")
}

fn names(sub: &Subscription) -> Vec<String> {
    match sub {
        Subscription::Wildcard => Vec::new(),
        Subscription::Names(n) => n.iter().cloned().collect(),
    }
}

fn filter(
    resources: impl IntoIterator<Item = NamedResource>,
    sub: &Subscription,
) -> Vec<NamedResource> {
    resources
        .into_iter()
        .filter(|r| sub.contains(&r.name))
        .collect()
}

impl MeshGenerator {
    fn sidecar(
        &self,
        view: &ProxyView,
        type_url: &str,
        sub: &Subscription,
    ) -> Result<Vec<NamedResource>, String> {
        let version = view.push.version.as_str();
        Ok(match type_url {
            weft_xds::types::LISTENER => {
                let shared = self.with_shared(version, |c| {
                    if c.listeners.is_none() {
                        let built = stable_all::<Listener>(
                            sidecar::shared_listeners(view),
                            &c.previous.listeners,
                        );
                        c.listeners = Some(Arc::new(built));
                    }
                    c.listeners.clone().unwrap_or_default()
                });
                let mut out = filter(shared.iter().cloned(), sub);
                out.extend(filter([sidecar::inbound_listener(view)], sub));
                out
            }
            weft_xds::types::CLUSTER => {
                let shared = self.with_shared(version, |c| {
                    if c.clusters.is_none() {
                        let built = stable_all::<Cluster>(
                            sidecar::shared_clusters(view),
                            &c.previous.clusters,
                        );
                        c.clusters = Some(Arc::new(built));
                    }
                    c.clusters.clone().unwrap_or_default()
                });
                let mut out = filter(shared.iter().cloned(), sub);
                out.extend(filter(sidecar::inbound_clusters(view), sub));
                out
            }
            weft_xds::types::ROUTE => {
                let ns = view.node.namespace.clone();
                self.with_shared(version, |c| {
                    names(sub)
                        .into_iter()
                        .filter_map(|name| {
                            let key = (ns.clone(), name.clone());
                            if !c.routes.contains_key(&key) {
                                let built = sidecar::routes(view, std::slice::from_ref(&name))
                                    .pop()
                                    .map(|r| {
                                        stable::<RouteConfiguration>(r, c.previous.routes.get(&key))
                                    });
                                c.routes.insert(key.clone(), built);
                            }
                            c.routes.get(&key).cloned().flatten()
                        })
                        .collect()
                })
            }
            weft_xds::types::ENDPOINT => self.with_shared(version, |c| {
                names(sub)
                    .into_iter()
                    .filter_map(|name| {
                        if !c.endpoints.contains_key(&name) {
                            let built = sidecar::endpoints(view, std::slice::from_ref(&name))
                                .pop()
                                .map(|r| {
                                    stable::<ClusterLoadAssignment>(
                                        r,
                                        c.previous.endpoints.get(&name),
                                    )
                                });
                            c.endpoints.insert(name.clone(), built);
                        }
                        c.endpoints.get(&name).cloned().flatten()
                    })
                    .collect()
            }),
            other => return Err(format!("type {other} is not served by weft control")),
        })
    }
}

impl Generator for MeshGenerator {
    fn generate(
        &self,
        proxy: &ProxyInfo,
        type_url: &str,
        sub: &Subscription,
    ) -> Result<Generated, String> {
        let push = self.push.load_full();
        let node = SidecarNode::parse(&proxy.id).unwrap_or_else(|| SidecarNode {
            ip: String::new(),
            name: proxy.id.clone(),
            namespace: proxy
                .metadata
                .get("NAMESPACE")
                .and_then(|v| v.as_str())
                .unwrap_or("default")
                .to_string(),
        });
        let view = ProxyView::new(&push, node);
        let resources = if is_grpc(proxy) {
            let requested = names(sub);
            match type_url {
                weft_xds::types::LISTENER => {
                    crate::grpcgen::listeners(&push, &view.node.namespace, &requested)
                }
                weft_xds::types::ROUTE => crate::grpcgen::routes(&push, &requested),
                weft_xds::types::CLUSTER => crate::grpcgen::clusters(&push, &requested),
                weft_xds::types::ENDPOINT => crate::grpcgen::endpoints(&view, &requested),
                other => {
                    return Err(format!(
                        "type {other} is not served to proxyless gRPC clients"
                    ));
                }
            }
        } else {
            self.sidecar(&view, type_url, sub)?
        };
        Ok(Generated {
            version: push.version.clone(),
            resources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_and_per_proxy_parts_add_up_to_the_full_set() {
        let yaml = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: s, namespace: default}\nspec:\n  hosts: [s]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  workloadSelector: {labels: {app: s}}\n---\napiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\nmetadata: {name: w, namespace: default}\nspec: {address: 10.0.0.1, labels: {app: s}}\n";
        let (resources, problems) = weft_api::parse_documents(yaml, std::path::Path::new("t.yaml"));
        assert!(problems.is_empty());
        let push = Arc::new(ArcSwap::from_pointee(PushContext::new(
            "1".into(),
            Arc::new(weft_api::MeshConfig::default()),
            Arc::new(resources),
        )));
        let g = MeshGenerator::new(push.clone());
        let info = |id: &str| ProxyInfo {
            id: id.into(),
            cluster: String::new(),
            metadata: serde_json::json!({}),
            peer_addr: None,
            conn_id: 1,
        };
        let server = info("sidecar~10.0.0.1~w.default~default.svc.cluster.local");
        let client = info("sidecar~10.0.0.2~c.default~default.svc.cluster.local");
        let names = |g: &Generated| {
            g.resources
                .iter()
                .map(|r| r.name.clone())
                .collect::<Vec<_>>()
        };
        for _ in 0..2 {
            let s = g
                .generate(&server, weft_xds::types::CLUSTER, &Subscription::Wildcard)
                .unwrap();
            assert!(
                names(&s).contains(&"inbound|80||".to_string()),
                "{:?}",
                names(&s)
            );
            let c = g
                .generate(&client, weft_xds::types::CLUSTER, &Subscription::Wildcard)
                .unwrap();
            assert!(
                !names(&c).iter().any(|n| n.starts_with("inbound|")),
                "the server's inbound side leaked: {:?}",
                names(&c)
            );
            let p = push.load();
            let full =
                sidecar::clusters(&ProxyView::new(&p, SidecarNode::parse(&server.id).unwrap()));
            // Same resources (compared decoded: map fields have no stable encoding order).
            let decoded = |rs: &[NamedResource]| -> Vec<(String, Cluster)> {
                rs.iter()
                    .map(|r| {
                        (
                            r.name.clone(),
                            <Cluster as prost::Message>::decode(r.resource.value.as_slice())
                                .unwrap(),
                        )
                    })
                    .collect()
            };
            assert_eq!(decoded(&s.resources), decoded(&full));
        }
        let eds = Subscription::Names(
            [
                "outbound|80||s.default.svc.cluster.local".to_string(),
                "nope".to_string(),
            ]
            .into(),
        );
        assert_eq!(
            g.generate(&client, weft_xds::types::ENDPOINT, &eds)
                .unwrap()
                .resources
                .len(),
            1
        );
        // A new push version starts a new cache.
        let yaml2 = yaml.replace("10.0.0.1", "10.0.0.9");
        let (resources, _) = weft_api::parse_documents(&yaml2, std::path::Path::new("t.yaml"));
        push.store(Arc::new(PushContext::new(
            "2".into(),
            Arc::new(weft_api::MeshConfig::default()),
            Arc::new(resources),
        )));
        let e = g
            .generate(&client, weft_xds::types::ENDPOINT, &eds)
            .unwrap();
        assert_eq!(e.version, "2");
        // The clusters did not change (only an endpoint did): their bytes are exactly the
        // previous ones, so the servers see nothing to push.
        let before = g.with_shared("2", |c| c.previous.clusters.clone());
        let again = g
            .generate(&client, weft_xds::types::CLUSTER, &Subscription::Wildcard)
            .unwrap();
        assert!(!before.is_empty());
        for r in &again.resources {
            if let Some(p) = before.get(&r.name) {
                assert_eq!(
                    p.resource.value, r.resource.value,
                    "{} was re-encoded differently",
                    r.name
                );
            }
        }
        let cla = <envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment as prost::Message>::decode(
            e.resources[0].resource.value.as_slice(),
        )
        .unwrap();
        assert!(format!("{cla:?}").contains("10.0.0.9"));
    }
}
