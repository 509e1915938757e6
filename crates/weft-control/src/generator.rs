//! Picks the resource form for each proxy (Envoy-style sidecar, or proxyless gRPC when the
//! node metadata says `GENERATOR: grpc`, as istiod does) and generates from the current push
//! context. What is the same for every sidecar of a push (outbound clusters and listeners, the
//! route table of a port for a namespace, each ClusterLoadAssignment) is built once per push and
//! shared; the TCP/TLS listeners whose VirtualService routes depend on the client are shared by
//! the proxies with the same namespace and `sourceLabels` outcomes; the outbound clusters (and
//! route tables) by the proxies whose DestinationRules resolve alike (the same
//! [`destination::Scope`] key: one for every proxy unless a namespace's own rules, an `exportTo`
//! or a `workloadSelector` sets some apart); an assignment by the proxies that agree on its
//! subset's labels; only the proxy's inbound side is built per proxy.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use weft_xds::{Generated, Generator, NamedResource, ProxyInfo, Subscription};

use crate::destination;
use crate::push::PushContext;
use crate::sidecar::{self, ProxyView, SidecarNode};

/// Resources shared by the proxies of one push version.
#[derive(Default)]
struct Shared {
    version: String,
    /// DestinationRule scope key → the clusters of the proxies of that scope.
    clusters: HashMap<String, Arc<Vec<NamedResource>>>,
    /// Telemetry key (the Telemetry resources a proxy's outbound logging comes from) → the
    /// outbound listeners the proxies with that key share.
    listeners: HashMap<String, Arc<Vec<NamedResource>>>,
    /// The services whose TCP/TLS listeners depend on the client.
    client_dependent: Option<Arc<BTreeSet<String>>>,
    /// Listener key (namespace and TCP/TLS `sourceLabels` matches) → those services' listeners.
    client_listeners: HashMap<String, Arc<Vec<NamedResource>>>,
    /// Proxy namespace, `sourceLabels` and DestinationRule scope key → route table name → table.
    routes: HashMap<String, HashMap<String, Option<NamedResource>>>,
    /// [`destination::endpoints_key`] (cluster name and subset labels) → assignment.
    endpoints: HashMap<String, Option<NamedResource>>,
    /// The previous versions' encodings, by name.
    previous: Previous,
}

impl Shared {
    /// The clusters every sidecar of this version with the DestinationRule scope of `view`
    /// gets, built on first use.
    fn clusters(&mut self, view: &ProxyView) -> Arc<Vec<NamedResource>> {
        let previous = &self.previous.clusters;
        self.clusters
            .entry(format!(
                "{}|{}",
                view.destination_scope.key(),
                view.visibility_key()
            ))
            .or_insert_with(|| {
                Arc::new(
                    sidecar::shared_clusters(view)
                        .into_iter()
                        .map(|c| {
                            let prev = previous.get(c.name()).map_or(&[][..], Vec::as_slice);
                            stable_among::<Cluster>(c, prev)
                        })
                        .collect(),
                )
            })
            .clone()
    }
}

/// Encodings of earlier pushes, so that a resource whose content did not change keeps its exact
/// bytes (and the same shared allocation). Envoy's protos hold maps — metadata, typed options —
/// whose encoding order is not stable; without this every push would look like a change of
/// every cluster, and every proxy would be sent all of them again.
#[derive(Default)]
struct Previous {
    /// Per name, one encoding per content the scopes of the last push gave it.
    clusters: HashMap<String, Vec<NamedResource>>,
    /// Per telemetry key, like client listeners.
    listeners: HashMap<String, HashMap<String, NamedResource>>,
    /// Per listener key, like routes.
    client_listeners: HashMap<String, HashMap<String, NamedResource>>,
    routes: HashMap<String, HashMap<String, NamedResource>>,
    endpoints: HashMap<String, NamedResource>,
    /// What the DestinationRule index of the last push [`MeshGenerator::changed_endpoints`]
    /// saw was built from.
    destination_rules: Option<Arc<destination::Inputs>>,
}

/// Reuses the previous resource when its decoded content is equal.
fn stable<T: prost::Message + Default + PartialEq>(
    new: NamedResource,
    prev: Option<&NamedResource>,
) -> NamedResource {
    match prev {
        Some(p) => stable_among::<T>(new, std::slice::from_ref(p)),
        None => new,
    }
}

/// Reuses the first of the previous resources whose decoded content is equal.
fn stable_among<T: prost::Message + Default + PartialEq>(
    new: NamedResource,
    prev: &[NamedResource],
) -> NamedResource {
    if let Some(p) = prev.iter().find(|p| p.same(&new)) {
        return p.clone();
    }
    let mut decoded = None;
    for p in prev {
        if p.resource().type_url != new.resource().type_url {
            continue;
        }
        let Ok(b) = decoded.get_or_insert_with(|| T::decode(new.resource().value.as_slice()))
        else {
            return new;
        };
        if T::decode(p.resource().value.as_slice()).is_ok_and(|a| a == *b) {
            return p.clone();
        }
    }
    new
}

fn stable_all<T: prost::Message + Default + PartialEq>(
    new: Vec<NamedResource>,
    prev: &HashMap<String, NamedResource>,
) -> Vec<NamedResource> {
    new.into_iter()
        .map(|r| {
            let p = prev.get(r.name());
            stable::<T>(r, p)
        })
        .collect()
}

fn by_name(resources: impl IntoIterator<Item = NamedResource>) -> HashMap<String, NamedResource> {
    resources
        .into_iter()
        .map(|r| (r.name().to_string(), r))
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

    /// Runs `f` on the cache of `version`, starting a new cache when the version moved on. A
    /// caller still on an older version (it loaded the push context just before a new one was
    /// stored) gets a scratch cache: the shared one never goes back, or the encodings kept for
    /// the next push would be those of an older one.
    fn with_shared<T>(&self, version: &str, f: impl FnOnce(&mut Shared) -> T) -> T {
        let mut guard = match self.shared.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if guard.version != version && self.push.load().version != version {
            drop(guard);
            return f(&mut Shared {
                version: version.to_string(),
                ..Shared::default()
            });
        }
        if guard.version != version {
            let old = std::mem::take(&mut *guard);
            let mut previous = old.previous;
            // Keep the newest encodings of each name.
            if !old.clusters.is_empty() {
                previous.clusters.clear();
                for r in old.clusters.values().flat_map(|c| c.iter()) {
                    let variants = previous.clusters.entry(r.name().to_string()).or_default();
                    if !variants.iter().any(|v| v.same(r)) {
                        variants.push(r.clone());
                    }
                }
            }
            for (key, listeners) in old.listeners {
                previous
                    .listeners
                    .entry(key)
                    .or_default()
                    .extend(by_name(listeners.iter().cloned()));
            }
            for (key, listeners) in old.client_listeners {
                previous
                    .client_listeners
                    .entry(key)
                    .or_default()
                    .extend(by_name(listeners.iter().cloned()));
            }
            for (ns, tables) in old.routes {
                previous
                    .routes
                    .entry(ns)
                    .or_default()
                    .extend(tables.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
            }
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

impl MeshGenerator {
    /// Builds every ClusterLoadAssignment of `push` (for each DestinationRule scope a proxy can
    /// have) into the shared cache and returns the names whose content differs from the
    /// previous push (new, changed or gone): the only assignments proxies need to look at again
    /// (istiod's incremental EDS). When the DestinationRules (or the labels their selectors
    /// read) changed, a proxy may resolve a subset to other labels: every subset's assignment
    /// is named then.
    pub fn changed_endpoints(&self, push: &PushContext) -> BTreeSet<String> {
        let node = SidecarNode {
            ip: String::new(),
            name: String::new(),
            namespace: push.root_namespace().to_string(),
        };
        // Key → (cluster name, a proxy view that resolves the name to that key).
        let mut wanted: BTreeMap<String, (String, usize)> = BTreeMap::new();
        let views: Vec<ProxyView> = push
            .destination_rules
            .scopes(&push.registry)
            .into_iter()
            .map(|scope| {
                let mut view = ProxyView::new(push, node.clone());
                view.destination_scope = scope;
                view
            })
            .collect();
        for (i, view) in views.iter().enumerate() {
            for name in outbound_cluster_names(view) {
                let key = destination::endpoints_key(view, &name);
                wanted.entry(key).or_insert((name, i));
            }
        }
        let inputs = push.destination_rules.inputs().clone();
        self.with_shared(&push.version, |c| {
            let rules_changed = c
                .previous
                .destination_rules
                .as_ref()
                .is_some_and(|p| *p != inputs);
            let mut changed = BTreeSet::new();
            for (key, (name, i)) in &wanted {
                // Streams may have built some of them already for this version: those stay.
                if !c.endpoints.contains_key(key) {
                    let built = sidecar::endpoints(&views[*i], std::slice::from_ref(name))
                        .pop()
                        .map(|r| stable::<ClusterLoadAssignment>(r, c.previous.endpoints.get(key)));
                    c.endpoints.insert(key.clone(), built);
                }
                let same = match (c.endpoints.get(key), c.previous.endpoints.get(key)) {
                    (Some(Some(n)), Some(p)) => n.same(p),
                    (Some(None) | None, None) => true,
                    _ => false,
                };
                let subset =
                    sidecar::parse_cluster_name(name).is_some_and(|(_, _, s, _)| !s.is_empty());
                if !same || (rules_changed && subset) {
                    changed.insert(name.clone());
                }
            }
            // Assignments of clusters that are gone.
            changed.extend(
                c.previous
                    .endpoints
                    .iter()
                    .filter(|(k, _)| !matches!(c.endpoints.get(*k), Some(Some(_))))
                    .map(|(_, r)| r.name().to_string()),
            );
            c.previous
                .endpoints
                .retain(|k, _| c.endpoints.get(k).is_some_and(Option::is_some));
            c.previous.destination_rules = Some(inputs);
            changed
        })
    }
}

/// The names of the outbound clusters a sidecar with this view gets (one per service port and
/// subset), as the cluster generator names them.
fn outbound_cluster_names(view: &ProxyView) -> Vec<String> {
    let mut out = Vec::new();
    for svc in &view.push.registry.services {
        let subsets = destination::subsets_for(view, svc);
        for sp in &svc.ports {
            out.push(sidecar::cluster_name(
                "outbound",
                sp.number,
                "",
                &svc.hostname,
            ));
            for s in &subsets {
                out.push(sidecar::cluster_name(
                    "outbound",
                    sp.number,
                    &s.name,
                    &svc.hostname,
                ));
            }
        }
    }
    out
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

/// The names of a subscription by name (none for a wildcard: route tables and assignments are
/// only ever asked for by name).
fn named(sub: &Subscription) -> impl Iterator<Item = &String> {
    match sub {
        Subscription::Wildcard => None,
        Subscription::Names(n) => Some(n.iter()),
    }
    .into_iter()
    .flatten()
}

fn filter<'a>(
    resources: impl IntoIterator<Item = &'a NamedResource>,
    sub: &Subscription,
) -> Vec<NamedResource> {
    resources
        .into_iter()
        .filter(|r| sub.contains(r.name()))
        .cloned()
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
                // Every sidecar shares the listeners but for the TCP/TLS ones whose routes
                // depend on the client; those are shared by proxies with the same key.
                let (shared, client) = self.with_shared(version, |c| {
                    let dependent = c
                        .client_dependent
                        .get_or_insert_with(|| {
                            Arc::new(sidecar::client_dependent_listeners(view.push))
                        })
                        .clone();
                    // Proxies under different Sidecar resources or service exports see different
                    // services.
                    let telemetry =
                        format!("{}|{}", sidecar::telemetry_key(view), view.visibility_key());
                    let none = HashMap::new();
                    let previous = c.previous.listeners.get(&telemetry).unwrap_or(&none);
                    let shared = c
                        .listeners
                        .entry(telemetry.clone())
                        .or_insert_with(|| {
                            Arc::new(stable_all::<Listener>(
                                sidecar::shared_listeners(view, &dependent),
                                previous,
                            ))
                        })
                        .clone();
                    if dependent.is_empty() {
                        return (shared, None);
                    }
                    let key = format!("{}|{telemetry}", sidecar::listener_key(view));
                    let none = HashMap::new();
                    let previous = c.previous.client_listeners.get(&key).unwrap_or(&none);
                    let client = c
                        .client_listeners
                        .entry(key)
                        .or_insert_with(|| {
                            Arc::new(stable_all::<Listener>(
                                sidecar::client_listeners(view, &dependent),
                                previous,
                            ))
                        })
                        .clone();
                    (shared, Some(client))
                });
                let mut out = filter(shared.iter(), sub);
                if let Some(client) = &client {
                    out.extend(filter(client.iter(), sub));
                }
                out.extend(filter([&sidecar::inbound_listener(view)], sub));
                out
            }
            weft_xds::types::CLUSTER => {
                let shared = self.with_shared(version, |c| c.clusters(view));
                let mut out = filter(shared.iter(), sub);
                out.extend(filter(&sidecar::inbound_clusters(view), sub));
                out
            }
            weft_xds::types::ROUTE => {
                // Route tables differ by namespace and by the sourceLabels matches the proxy
                // satisfies; proxies alike in both share them.
                // The hash policies of consistent-hash DestinationRules depend on the
                // proxy's DestinationRule scope.
                let key = format!(
                    "{}|{}|{}|{}",
                    view.node.namespace,
                    sidecar::http_route::source_key(view),
                    view.destination_scope.key(),
                    view.visibility_key()
                );
                let ns = key.as_str();
                self.with_shared(version, |c| {
                    let previous = c.previous.routes.get(ns);
                    let tables = c.routes.entry(ns.to_string()).or_default();
                    named(sub)
                        .filter_map(|name| {
                            if !tables.contains_key(name) {
                                let built = sidecar::routes(view, std::slice::from_ref(name))
                                    .pop()
                                    .map(|r| {
                                        stable::<RouteConfiguration>(
                                            r,
                                            previous.and_then(|p| p.get(name)),
                                        )
                                    });
                                tables.insert(name.clone(), built);
                            }
                            tables.get(name).cloned().flatten()
                        })
                        .collect()
                })
            }
            weft_xds::types::ENDPOINT => {
                // A subset's assignment depends on the labels the proxy's rule gives it.
                let keyed: Vec<(String, &String)> = named(sub)
                    .map(|name| (destination::endpoints_key(view, name), name))
                    .collect();
                self.with_shared(version, |c| {
                    keyed
                        .into_iter()
                        .filter_map(|(key, name)| {
                            if !c.endpoints.contains_key(&key) {
                                let built = sidecar::endpoints(view, std::slice::from_ref(name))
                                    .pop()
                                    .map(|r| {
                                        stable::<ClusterLoadAssignment>(
                                            r,
                                            c.previous.endpoints.get(&key),
                                        )
                                    });
                                c.endpoints.insert(key.clone(), built);
                            }
                            c.endpoints.get(&key).cloned().flatten()
                        })
                        .collect()
                })
            }
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
                weft_xds::types::ROUTE => crate::grpcgen::routes(&view, &requested),
                weft_xds::types::CLUSTER => crate::grpcgen::clusters(&view, &requested),
                weft_xds::types::ENDPOINT => crate::grpcgen::endpoints(&view, &requested),
                other => {
                    return Err(format!(
                        "type {other} is not served to proxyless gRPC clients"
                    ));
                }
            }
        } else if type_url == weft_xds::types::NAME_TABLE {
            // The DNS proxy's table (pilot-agent asks with ISTIO_META_DNS_CAPTURE).
            let flag = |k: &str| {
                proxy
                    .metadata
                    .get(k)
                    .and_then(|v| v.as_str())
                    .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "t"))
            };
            sidecar::nds::resources(&view, flag("DNS_AUTO_ALLOCATE"))
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
                .map(|r| r.name().to_string())
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
                            r.name().to_string(),
                            <Cluster as prost::Message>::decode(r.resource().value.as_slice())
                                .unwrap(),
                        )
                    })
                    .collect()
            };
            assert_eq!(decoded(&s.resources), decoded(&full));
        }
        let eds = Subscription::names(["outbound|80||s.default.svc.cluster.local", "nope"]);
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
        assert!(
            before.values().all(|v| v.len() == 1),
            "one scope, one encoding"
        );
        let again = g
            .generate(&client, weft_xds::types::CLUSTER, &Subscription::Wildcard)
            .unwrap();
        assert!(!before.is_empty());
        for r in &again.resources {
            if let Some(p) = before.get(r.name()).and_then(|v| v.first()) {
                assert_eq!(
                    p.resource().value,
                    r.resource().value,
                    "{} was re-encoded differently",
                    r.name()
                );
            }
        }
        let cla = <envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment as prost::Message>::decode(
            e.resources[0].resource().value.as_slice(),
        )
        .unwrap();
        assert!(format!("{cla:?}").contains("10.0.0.9"));
    }

    #[test]
    fn tcp_listeners_that_depend_on_the_client_are_shared_by_key() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: t, namespace: default}\nspec:\n  hosts: [t]\n  addresses: [10.78.0.20]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 9000, name: tcp, protocol: TCP}]\n  workloadSelector: {labels: {app: t}}\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: u, namespace: default}\nspec:\n  hosts: [u]\n  addresses: [10.78.0.21]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 9000, name: tcp, protocol: TCP}]\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a, namespace: default}\nspec: {address: 10.0.0.1, labels: {app: a}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: b, namespace: default}\nspec: {address: 10.0.0.2, labels: {app: b}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a2, namespace: default}\nspec: {address: 10.0.0.3, labels: {app: a}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: t, namespace: default}\nspec:\n  hosts: [t]\n  tcp:\n  - match: [{sourceLabels: {app: b}}]\n    route: [{destination: {host: u}}]\n  - route: [{destination: {host: t}}]\n";
        let (resources, problems) = weft_api::parse_documents(yaml, std::path::Path::new("t.yaml"));
        assert!(problems.is_empty(), "{problems:?}");
        let push = Arc::new(ArcSwap::from_pointee(PushContext::new(
            "1".into(),
            Arc::new(weft_api::MeshConfig::default()),
            Arc::new(resources),
        )));
        let g = MeshGenerator::new(push.clone());
        let lds = |name: &str| {
            let info = ProxyInfo {
                id: format!("sidecar~10.0.0.9~{name}.default~default.svc.cluster.local"),
                cluster: String::new(),
                metadata: serde_json::json!({}),
                peer_addr: None,
                conn_id: 1,
            };
            g.generate(&info, weft_xds::types::LISTENER, &Subscription::Wildcard)
                .unwrap()
                .resources
        };
        let find = |rs: &[NamedResource], name: &str| {
            rs.iter()
                .find(|r| r.name() == name)
                .cloned()
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        let (a, b, a2) = (lds("a"), lds("b"), lds("a2"));
        let target = |r: &NamedResource| {
            use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
            use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
            let l = <Listener as prost::Message>::decode(r.resource().value.as_slice()).unwrap();
            let Some(ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
            else {
                panic!("no tcp_proxy")
            };
            let t = <TcpProxy as prost::Message>::decode(any.value.as_slice()).unwrap();
            format!("{:?}", t.cluster_specifier)
        };
        let (ta, tb) = (find(&a, "10.78.0.20_9000"), find(&b, "10.78.0.20_9000"));
        assert!(
            target(&ta).contains("outbound|9000||t.default"),
            "{}",
            target(&ta)
        );
        assert!(
            target(&tb).contains("outbound|9000||u.default"),
            "{}",
            target(&tb)
        );
        // Proxies with the same key get the very same resource; u's listener is shared by all.
        assert!(find(&a2, "10.78.0.20_9000").same(&ta));
        assert!(find(&a, "10.78.0.21_9000").same(&find(&b, "10.78.0.21_9000")));
        assert_eq!(a.len(), b.len());
        // The next push keeps the bytes of what did not change.
        push.store(Arc::new(PushContext::new(
            "2".into(),
            Arc::new(weft_api::MeshConfig::default()),
            push.load().resources.clone(),
        )));
        let b2 = lds("b");
        assert_eq!(
            find(&b2, "10.78.0.20_9000").resource().value,
            tb.resource().value
        );
    }

    #[test]
    fn changed_endpoints_names_what_moved() {
        let yaml = "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: s, namespace: default}\nspec:\n  hosts: [s]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  workloadSelector: {labels: {app: s}}\n---\napiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: t, namespace: default}\nspec:\n  hosts: [t]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  workloadSelector: {labels: {app: t}}\n---\napiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\nmetadata: {name: w, namespace: default}\nspec: {address: 10.0.0.1, labels: {app: s}}\n";
        let ctx = |v: &str, yaml: &str| {
            let (resources, problems) =
                weft_api::parse_documents(yaml, std::path::Path::new("t.yaml"));
            assert!(problems.is_empty(), "{problems:?}");
            Arc::new(PushContext::new(
                v.into(),
                Arc::new(weft_api::MeshConfig::default()),
                Arc::new(resources),
            ))
        };
        let first = ctx("1", yaml);
        let push = Arc::new(ArcSwap::new(first.clone()));
        let g = MeshGenerator::new(push.clone());
        let s = "outbound|80||s.default.svc.cluster.local".to_string();
        let t = "outbound|80||t.default.svc.cluster.local".to_string();
        // Everything is new the first time.
        assert_eq!(
            g.changed_endpoints(&first),
            BTreeSet::from([s.clone(), t.clone()])
        );
        // The workload moves from s to t: both assignments changed.
        let second = ctx("2", &yaml.replace("labels: {app: s}}", "labels: {app: t}}"));
        push.store(second.clone());
        assert_eq!(
            g.changed_endpoints(&second),
            BTreeSet::from([s.clone(), t.clone()])
        );
        // Another version with the same endpoints: nothing changed.
        let third = ctx("3", &yaml.replace("labels: {app: s}}", "labels: {app: t}}"));
        push.store(third.clone());
        assert!(g.changed_endpoints(&third).is_empty());
        // Service t is deleted: its assignment is named as gone.
        let fourth = ctx("4", &yaml.replace("hosts: [t]", "hosts: [u]"));
        push.store(fourth.clone());
        let changed = g.changed_endpoints(&fourth);
        assert!(changed.contains(&t), "{changed:?}");
    }
}
