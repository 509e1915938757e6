//! The proxy's side of ADS: decodes each response, compiles a new snapshot from the whole
//! resource set and swaps it in atomically; anything that does not compile is NACKed and the
//! previous snapshot stays in force. State-of-the-world LDS and CDS responses replace their set;
//! EDS and RDS responses, and every delta response, add or replace what they carry and drop what
//! they name as removed. Subscriptions follow Envoy: CDS and LDS wildcard, EDS for the EDS
//! clusters CDS named, RDS for the route tables LDS named.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::watch;
use weft_xds::client::Update;

use crate::snapshot::{Raw, Snapshot};
use crate::tls::TlsFactory;

pub struct ConfigHandler {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub tls: Arc<TlsFactory>,
    /// What the snapshot was compiled from; shared with the DNS resolver, which recompiles
    /// when an answer changes.
    raw: Arc<Mutex<Raw>>,
    /// Set once CDS and LDS have both been applied (Envoy's initial fetch).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    got: BTreeSet<String>,
    /// The host names of the DNS clusters, for the resolver.
    dns_targets: watch::Sender<crate::dns::Targets>,
    /// The DNS proxy NDS feeds, and the proxy's namespace (for short names).
    names: Option<(Arc<crate::nameserver::NameServer>, String)>,
    /// False from the first config with DNS clusters until each of their names has been
    /// looked up once (Envoy's initial cluster warming); readiness waits for it.
    pub dns_warm: Arc<std::sync::atomic::AtomicBool>,
}

fn locked(raw: &Mutex<Raw>) -> std::sync::MutexGuard<'_, Raw> {
    raw.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConfigHandler {
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        tls: Arc<TlsFactory>,
        ready: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        ConfigHandler {
            snapshot,
            tls,
            raw: Arc::default(),
            ready,
            got: BTreeSet::new(),
            dns_targets: watch::Sender::new(Default::default()),
            names: None,
            dns_warm: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    /// Subscribes to Istio's name table (NDS) and keeps `names` answering from it.
    pub fn serve_names(&mut self, names: Arc<crate::nameserver::NameServer>, namespace: String) {
        self.names = Some((names, namespace));
    }

    /// The resolver of the DNS clusters' host names; run it on the same runtime as the ADS
    /// client. Each changed answer recompiles the snapshot from the current resources.
    pub fn dns_task(
        &self,
        lookup: Arc<dyn crate::dns::Lookup>,
    ) -> impl Future<Output = ()> + use<> {
        let raw = self.raw.clone();
        let snapshot = self.snapshot.clone();
        let tls = self.tls.clone();
        let targets = self.dns_targets.subscribe();
        let warm = self.dns_warm.clone();
        crate::dns::run(
            lookup,
            targets,
            move |answers| {
                // The lock is held until the new snapshot is in place, so an xDS update and a DNS
                // answer never overwrite each other.
                let mut current = locked(&raw);
                let mut next = current.clone();
                next.dns = answers.clone();
                match Snapshot::compile(next.clone(), &tls, &snapshot.load()) {
                    Ok(snap) => {
                        snapshot.store(Arc::new(snap));
                        *current = next;
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot apply the new DNS answers; keeping the previous ones");
                    }
                }
            },
            warm,
        )
    }
}

fn decode_all<T: Message + Default>(
    resources: &[Any],
    kind: &str,
    name: impl Fn(&T) -> String,
) -> Result<Vec<(String, T)>, String> {
    resources
        .iter()
        .map(|a| {
            T::decode(a.value.as_slice())
                .map(|m| (name(&m), m))
                .map_err(|e| format!("cannot decode {kind}: {e}"))
        })
        .collect()
}

impl weft_xds::Handler for ConfigHandler {
    fn on_response(&mut self, type_url: &str, update: Update) -> Result<(), String> {
        if type_url == weft_xds::types::NAME_TABLE {
            let Some((names, namespace)) = &self.names else {
                return Err(
                    "weft proxy did not ask for the name table (DNS capture is off)".into(),
                );
            };
            let mut table = weft_xds::istio::NameTable::default();
            for any in &update.resources {
                let part = weft_xds::istio::NameTable::decode(any.value.as_slice())
                    .map_err(|e| format!("cannot decode NameTable: {e}"))?;
                table.table.extend(part.table);
            }
            let table = crate::nameserver::Table::from_nds(&table, namespace);
            tracing::debug!(names = table.len(), version = %update.version, "applied NDS");
            names.set_table(table);
            return Ok(());
        }
        // Held until the new snapshot is in place (see `dns_task`).
        let shared = self.raw.clone();
        let mut current = locked(&shared);
        let mut raw = current.clone();
        let resources = &update.resources;
        match type_url {
            weft_xds::types::LISTENER => {
                let decoded = decode_all::<Listener>(resources, "Listener", |l| l.name.clone())?;
                update.merge_into(&mut raw.listeners, decoded);
            }
            weft_xds::types::CLUSTER => {
                let decoded = decode_all::<Cluster>(resources, "Cluster", |c| c.name.clone())?;
                update.merge_into(&mut raw.clusters, decoded);
            }
            weft_xds::types::ROUTE => {
                let decoded =
                    decode_all::<RouteConfiguration>(resources, "RouteConfiguration", |r| {
                        r.name.clone()
                    })?;
                update.merge_into(&mut raw.routes, decoded);
            }
            weft_xds::types::ENDPOINT => {
                let decoded =
                    decode_all::<ClusterLoadAssignment>(resources, "ClusterLoadAssignment", |c| {
                        c.cluster_name.clone()
                    })?;
                update.merge_into(&mut raw.endpoints, decoded);
            }
            other => return Err(format!("weft proxy does not handle type {other}")),
        }
        // What no listener or cluster refers to any more is dropped (Envoy unsubscribes it).
        // Assignments change reference only with clusters or assignments, route tables only
        // with listeners or route tables.
        match type_url {
            weft_xds::types::CLUSTER | weft_xds::types::ENDPOINT => {
                let eds = eds_names(&raw);
                raw.endpoints.retain(|name, _| eds.contains(name));
            }
            _ => {
                let rds = rds_names(&raw);
                raw.routes.retain(|name, _| rds.contains(name));
            }
        }
        let version = update.version.as_str();
        raw.versions.insert(
            weft_xds::types::short_name(type_url).to_string(),
            version.to_string(),
        );
        let previous = self.snapshot.load();
        let snap =
            Snapshot::compile(raw.clone(), &self.tls, &previous).map_err(|e| e.to_string())?;
        self.snapshot.store(Arc::new(snap));
        if type_url == weft_xds::types::CLUSTER {
            let initial = !self.ready.load(std::sync::atomic::Ordering::Acquire);
            let warm = &self.dns_warm;
            self.dns_targets.send_if_modified(|t| {
                let next = crate::dns::targets(&raw);
                let changed = *t != next;
                if changed && initial && !next.is_empty() {
                    // Not ready until the resolver has looked these names up once.
                    warm.store(false, std::sync::atomic::Ordering::Release);
                }
                *t = next;
                changed
            });
        }
        *current = raw;
        drop(current);
        self.got.insert(type_url.to_string());
        if self.got.contains(weft_xds::types::LISTENER)
            && self.got.contains(weft_xds::types::CLUSTER)
        {
            self.ready.store(true, std::sync::atomic::Ordering::Release);
        }
        tracing::debug!(
            type_url = weft_xds::types::short_name(type_url),
            version,
            count = update.resources.len(),
            removed = update.removed.len(),
            "applied"
        );
        Ok(())
    }

    fn subscriptions(&self) -> Vec<(String, Vec<String>)> {
        let raw = locked(&self.raw);
        vec![
            (weft_xds::types::CLUSTER.to_string(), Vec::new()),
            (
                weft_xds::types::ENDPOINT.to_string(),
                eds_names(&raw).into_iter().collect(),
            ),
            (weft_xds::types::LISTENER.to_string(), Vec::new()),
            (
                weft_xds::types::ROUTE.to_string(),
                rds_names(&raw).into_iter().collect(),
            ),
        ]
        .into_iter()
        .chain(
            self.names
                .is_some()
                .then(|| (weft_xds::types::NAME_TABLE.to_string(), Vec::new())),
        )
        .collect()
    }
}

/// The assignments the EDS clusters of `raw` ask for.
fn eds_names(raw: &Raw) -> BTreeSet<String> {
    raw.clusters
        .values()
        .filter_map(|c| {
            c.eds_cluster_config.as_ref().map(|e| {
                if e.service_name.is_empty() {
                    c.name.clone()
                } else {
                    e.service_name.clone()
                }
            })
        })
        .collect()
}

/// The route tables the listeners of `raw` name through RDS.
fn rds_names(raw: &Raw) -> BTreeSet<String> {
    let mut rds = BTreeSet::new();
    for l in raw.listeners.values() {
        for fc in &l.filter_chains {
            for f in &fc.filters {
                if let Some(
                    envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(
                        any,
                    ),
                ) = &f.config_type
                    && any.type_url.ends_with("HttpConnectionManager")
                    && let Ok(h) = hcm::HttpConnectionManager::decode(any.value.as_slice())
                    && let Some(hcm::http_connection_manager::RouteSpecifier::Rds(r)) =
                        h.route_specifier
                {
                    rds.insert(r.route_config_name);
                }
            }
        }
    }
    rds
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::cluster::v3::cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::{LbEndpoint, LocalityLbEndpoints};
    use weft_xds::Handler;

    use super::*;

    fn eds_cluster(name: &str) -> Any {
        envoy_types::util::pack_any(Cluster {
            name: name.into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cluster::EdsClusterConfig::default()),
            ..Default::default()
        })
    }

    fn cla(name: &str, endpoints: usize) -> Any {
        envoy_types::util::pack_any(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint::default(); endpoints],
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    const CDS: &str = weft_xds::types::CLUSTER;
    const EDS: &str = weft_xds::types::ENDPOINT;

    /// A state-of-the-world response.
    fn sotw(type_url: &str, version: &str, resources: Vec<Any>) -> Update {
        Update::state_of_the_world(type_url, version.into(), resources)
    }

    fn handler() -> ConfigHandler {
        let live = Arc::new(weft_identity::LiveIdentity::new());
        ConfigHandler::new(
            Arc::new(ArcSwap::from_pointee(Snapshot::default())),
            Arc::new(TlsFactory::new(live, "cluster.local".into())),
            Arc::default(),
        )
    }

    /// A DNS cluster's names are looked up before the proxy counts as warm, and the answer
    /// becomes the cluster's endpoints.
    #[tokio::test]
    async fn dns_clusters_warm_before_ready_and_take_their_answers() {
        struct Fixed;
        impl crate::dns::Lookup for Fixed {
            fn lookup(&self, _: String) -> futures::future::BoxFuture<'static, crate::dns::Answer> {
                Box::pin(async {
                    Ok((
                        vec!["192.0.2.8".parse().unwrap()],
                        std::time::Duration::from_secs(60),
                    ))
                })
            }
        }
        let mut h = handler();
        let assignment = ClusterLoadAssignment {
            endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(
                    envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(
                        envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
                            address: Some(envoy_types::pb::envoy::config::core::v3::Address {
                                address: Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(
                                    envoy_types::pb::envoy::config::core::v3::SocketAddress {
                                        address: "api.example.com".into(),
                                        port_specifier: Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(443)),
                                        ..Default::default()
                                    },
                                )),
                            }),
                            ..Default::default()
                        },
                    ),
                ),
                ..Default::default()
            }],
            ..Default::default()
        }],
            ..Default::default()
        };
        let ep = envoy_types::util::pack_any(Cluster {
            name: "outbound|443||api.example.com".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::StrictDns as i32,
            )),
            load_assignment: Some(assignment),
            ..Default::default()
        });
        h.on_response(CDS, sotw(CDS, "1", vec![ep])).unwrap();
        assert!(
            !h.dns_warm.load(std::sync::atomic::Ordering::Acquire),
            "not warm before the lookup"
        );
        let task = tokio::spawn(h.dns_task(Arc::new(Fixed)));
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !h.dns_warm.load(std::sync::atomic::Ordering::Acquire) {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("warm after the first lookup");
        let snap = h.snapshot.load();
        let c = &snap.clusters["outbound|443||api.example.com"];
        assert_eq!(c.endpoints[0].addr.to_string(), "192.0.2.8:443");
        task.abort();
    }

    #[test]
    fn endpoint_responses_update_what_they_carry_and_cluster_removal_drops_the_rest() {
        let mut h = handler();
        h.on_response(
            weft_xds::types::CLUSTER,
            sotw(CDS, "1", vec![eds_cluster("a"), eds_cluster("b")]),
        )
        .unwrap();
        let eds = |h: &ConfigHandler| h.subscriptions()[1].1.clone();
        assert_eq!(eds(&h), ["a", "b"]);
        h.on_response(
            weft_xds::types::ENDPOINT,
            sotw(EDS, "1", vec![cla("a", 1), cla("b", 1)]),
        )
        .unwrap();
        // A later response with only "b" changes "b" and keeps "a".
        h.on_response(weft_xds::types::ENDPOINT, sotw(EDS, "2", vec![cla("b", 3)]))
            .unwrap();
        let count = |h: &ConfigHandler, n: &str| {
            locked(&h.raw)
                .endpoints
                .get(n)
                .map(|c| c.endpoints[0].lb_endpoints.len())
        };
        assert_eq!(count(&h, "a"), Some(1));
        assert_eq!(count(&h, "b"), Some(3));
        // Cluster "a" goes away: so do its endpoints, and its subscription.
        h.on_response(
            weft_xds::types::CLUSTER,
            sotw(CDS, "3", vec![eds_cluster("b")]),
        )
        .unwrap();
        assert_eq!(count(&h, "a"), None);
        assert_eq!(count(&h, "b"), Some(3));
        assert_eq!(eds(&h), ["b"]);
    }

    #[test]
    fn delta_responses_add_replace_and_remove() {
        let mut h = handler();
        let delta = |version: &str, resources: Vec<Any>, removed: &[&str]| {
            Update::delta(
                version.into(),
                resources,
                removed.iter().map(|s| s.to_string()).collect(),
            )
        };
        let clusters =
            |h: &ConfigHandler| locked(&h.raw).clusters.keys().cloned().collect::<Vec<_>>();
        h.on_response(
            weft_xds::types::CLUSTER,
            delta("1", vec![eds_cluster("a"), eds_cluster("b")], &[]),
        )
        .unwrap();
        h.on_response(
            weft_xds::types::ENDPOINT,
            delta("1", vec![cla("a", 1), cla("b", 2)], &[]),
        )
        .unwrap();
        // An added cluster leaves the others in place.
        h.on_response(
            weft_xds::types::CLUSTER,
            delta("2", vec![eds_cluster("c")], &[]),
        )
        .unwrap();
        assert_eq!(clusters(&h), ["a", "b", "c"]);
        assert_eq!(h.snapshot.load().clusters.len(), 3);
        // A removal drops the cluster, its assignment and its subscription.
        h.on_response(weft_xds::types::CLUSTER, delta("3", vec![], &["a"]))
            .unwrap();
        assert_eq!(clusters(&h), ["b", "c"]);
        assert!(!locked(&h.raw).endpoints.contains_key("a"));
        assert_eq!(h.subscriptions()[1].1, ["b", "c"]);
        assert_eq!(h.snapshot.load().clusters.len(), 2);
        // An assignment removed by the control plane goes while its cluster stays.
        h.on_response(weft_xds::types::ENDPOINT, delta("4", vec![], &["b"]))
            .unwrap();
        assert!(locked(&h.raw).endpoints.is_empty());
        assert_eq!(locked(&h.raw).versions["EDS"], "4");
    }
}
