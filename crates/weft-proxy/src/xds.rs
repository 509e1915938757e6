//! The proxy's side of ADS: decodes each response, compiles a new snapshot from the whole
//! resource set and swaps it in atomically; anything that does not compile is NACKed and the
//! previous snapshot stays in force. Subscriptions follow Envoy: CDS and LDS wildcard, EDS for
//! the EDS clusters CDS named, RDS for the route tables LDS named.

use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::snapshot::{Raw, Snapshot};
use crate::tls::TlsFactory;

pub struct ConfigHandler {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub tls: Arc<TlsFactory>,
    raw: Raw,
    /// Set once CDS and LDS have both been applied (Envoy's initial fetch).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    got: BTreeSet<String>,
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
            raw: Raw::default(),
            ready,
            got: BTreeSet::new(),
        }
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
    fn on_response(
        &mut self,
        type_url: &str,
        version: &str,
        resources: Vec<Any>,
    ) -> Result<(), String> {
        let mut raw = self.raw.clone();
        match type_url {
            weft_xds::types::LISTENER => {
                raw.listeners = decode_all::<Listener>(&resources, "Listener", |l| l.name.clone())?
                    .into_iter()
                    .collect();
            }
            weft_xds::types::CLUSTER => {
                raw.clusters = decode_all::<Cluster>(&resources, "Cluster", |c| c.name.clone())?
                    .into_iter()
                    .collect();
            }
            weft_xds::types::ROUTE => {
                raw.routes =
                    decode_all::<RouteConfiguration>(&resources, "RouteConfiguration", |r| {
                        r.name.clone()
                    })?
                    .into_iter()
                    .collect();
            }
            weft_xds::types::ENDPOINT => {
                raw.endpoints = decode_all::<ClusterLoadAssignment>(
                    &resources,
                    "ClusterLoadAssignment",
                    |c| c.cluster_name.clone(),
                )?
                .into_iter()
                .collect();
            }
            other => return Err(format!("weft proxy does not handle type {other}")),
        }
        raw.versions.insert(
            weft_xds::types::short_name(type_url).to_string(),
            version.to_string(),
        );
        let previous = self.snapshot.load();
        let snap =
            Snapshot::compile(raw.clone(), &self.tls, &previous).map_err(|e| e.to_string())?;
        self.snapshot.store(Arc::new(snap));
        self.raw = raw;
        self.got.insert(type_url.to_string());
        if self.got.contains(weft_xds::types::LISTENER)
            && self.got.contains(weft_xds::types::CLUSTER)
        {
            self.ready.store(true, std::sync::atomic::Ordering::Release);
        }
        tracing::debug!(
            type_url = weft_xds::types::short_name(type_url),
            version,
            count = resources.len(),
            "applied"
        );
        Ok(())
    }

    fn subscriptions(&self) -> Vec<(String, Vec<String>)> {
        let eds: Vec<String> = self
            .raw
            .clusters
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
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut rds = BTreeSet::new();
        for l in self.raw.listeners.values() {
            for fc in &l.filter_chains {
                for f in &fc.filters {
                    if let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any)) = &f.config_type
                        && any.type_url.ends_with("HttpConnectionManager")
                            && let Ok(h) = hcm::HttpConnectionManager::decode(any.value.as_slice())
                                && let Some(hcm::http_connection_manager::RouteSpecifier::Rds(r)) = h.route_specifier {
                                    rds.insert(r.route_config_name);
                                }
                }
            }
        }
        vec![
            (weft_xds::types::CLUSTER.to_string(), Vec::new()),
            (weft_xds::types::ENDPOINT.to_string(), eds),
            (weft_xds::types::LISTENER.to_string(), Vec::new()),
            (
                weft_xds::types::ROUTE.to_string(),
                rds.into_iter().collect(),
            ),
        ]
    }
}
