//! Envoy's admin `ConfigDump` (`envoy.admin.v3`) of the xDS resources one proxy holds, or that
//! the control plane would send it: the proxy's admin port and the control plane's debug port
//! both serve it (protobuf, `?format=proto`), and the operator tools (`weft proxy-status POD`,
//! `weft proxy-config`) read it the way istioctl reads Envoy's.

use std::collections::BTreeMap;

use prost::Message;

use crate::pb::envoy::admin::v3 as admin;
use crate::pb::envoy::config::bootstrap::v3::Bootstrap;
use crate::pb::envoy::config::cluster::v3::Cluster;
use crate::pb::envoy::config::core::v3::Node;
use crate::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use crate::pb::envoy::config::listener::v3::Listener;
use crate::pb::envoy::config::route::v3::RouteConfiguration;
use crate::pb::google::protobuf::Any;
use crate::types;

const BOOTSTRAP_DUMP: &str = "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump";
const CLUSTERS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump";
const LISTENERS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.ListenersConfigDump";
const ROUTES_DUMP: &str = "type.googleapis.com/envoy.admin.v3.RoutesConfigDump";
const ENDPOINTS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump";

/// A config dump that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "the config dump cannot be decoded ({what}): {source}; is the address a Weft proxy's admin port or control plane's debug port?"
)]
pub struct DumpError {
    what: String,
    #[source]
    source: prost::DecodeError,
}

/// The xDS resources of one proxy, by name, with the version of each type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// The proxy's `Node` (id, cluster, metadata).
    pub node: Node,
    /// LDS, by name.
    pub listeners: BTreeMap<String, Listener>,
    /// RDS, by name.
    pub routes: BTreeMap<String, RouteConfiguration>,
    /// CDS, by name.
    pub clusters: BTreeMap<String, Cluster>,
    /// EDS, by cluster name.
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    /// `version_info` per type URL.
    pub versions: BTreeMap<String, String>,
}

/// One resource that is not the same on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// Only the first side (the control plane) has it.
    Missing(String),
    /// Only the second side (the proxy) has it.
    Extra(String),
    /// Both have it, with different content.
    Changed(String),
}

fn any<M: Message>(type_url: &str, m: &M) -> Any {
    Any {
        type_url: type_url.to_string(),
        value: m.encode_to_vec(),
    }
}

fn decode<M: Message + Default>(a: &Any, what: &str) -> Result<M, DumpError> {
    M::decode(a.value.as_slice()).map_err(|source| DumpError {
        what: what.to_string(),
        source,
    })
}

fn diff_map<M: PartialEq>(
    want: &BTreeMap<String, M>,
    have: &BTreeMap<String, M>,
) -> Vec<Difference> {
    let mut out = Vec::new();
    for (name, w) in want {
        match have.get(name) {
            None => out.push(Difference::Missing(name.clone())),
            Some(h) if h != w => out.push(Difference::Changed(name.clone())),
            Some(_) => {}
        }
    }
    out.extend(
        have.keys()
            .filter(|n| !want.contains_key(*n))
            .map(|n| Difference::Extra(n.clone())),
    );
    out
}

impl Resources {
    fn version(&self, type_url: &str) -> String {
        self.versions.get(type_url).cloned().unwrap_or_default()
    }

    /// Decodes resources the control plane generated (type URL → packed resources).
    pub fn from_generated(
        node: Node,
        generated: &crate::server::GeneratedByType,
    ) -> Result<Resources, DumpError> {
        let mut out = Resources {
            node,
            ..Default::default()
        };
        for (type_url, (version, resources)) in generated {
            out.versions.insert(type_url.clone(), version.clone());
            for a in resources {
                match type_url.as_str() {
                    types::LISTENER => {
                        let l: Listener = decode(a, "listener")?;
                        out.listeners.insert(l.name.clone(), l);
                    }
                    types::ROUTE => {
                        let r: RouteConfiguration = decode(a, "route")?;
                        out.routes.insert(r.name.clone(), r);
                    }
                    types::CLUSTER => {
                        let c: Cluster = decode(a, "cluster")?;
                        out.clusters.insert(c.name.clone(), c);
                    }
                    types::ENDPOINT => {
                        let e: ClusterLoadAssignment = decode(a, "endpoint")?;
                        out.endpoints.insert(e.cluster_name.clone(), e);
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Envoy's `ConfigDump`: bootstrap (the node), clusters, listeners, routes, endpoints.
    pub fn to_config_dump(&self) -> admin::ConfigDump {
        let bootstrap = admin::BootstrapConfigDump {
            bootstrap: Some(Bootstrap {
                node: Some(self.node.clone()),
                ..Default::default()
            }),
            last_updated: None,
        };
        let clusters = admin::ClustersConfigDump {
            version_info: self.version(types::CLUSTER),
            dynamic_active_clusters: self
                .clusters
                .values()
                .map(|c| admin::clusters_config_dump::DynamicCluster {
                    version_info: self.version(types::CLUSTER),
                    cluster: Some(any(types::CLUSTER, c)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let listeners = admin::ListenersConfigDump {
            version_info: self.version(types::LISTENER),
            dynamic_listeners: self
                .listeners
                .iter()
                .map(|(name, l)| admin::listeners_config_dump::DynamicListener {
                    name: name.clone(),
                    active_state: Some(admin::listeners_config_dump::DynamicListenerState {
                        version_info: self.version(types::LISTENER),
                        listener: Some(any(types::LISTENER, l)),
                        last_updated: None,
                    }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let routes = admin::RoutesConfigDump {
            dynamic_route_configs: self
                .routes
                .values()
                .map(|r| admin::routes_config_dump::DynamicRouteConfig {
                    version_info: self.version(types::ROUTE),
                    route_config: Some(any(types::ROUTE, r)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let endpoints = admin::EndpointsConfigDump {
            dynamic_endpoint_configs: self
                .endpoints
                .values()
                .map(|e| admin::endpoints_config_dump::DynamicEndpointConfig {
                    version_info: self.version(types::ENDPOINT),
                    endpoint_config: Some(any(types::ENDPOINT, e)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        admin::ConfigDump {
            configs: vec![
                any(BOOTSTRAP_DUMP, &bootstrap),
                any(CLUSTERS_DUMP, &clusters),
                any(LISTENERS_DUMP, &listeners),
                any(ROUTES_DUMP, &routes),
                any(ENDPOINTS_DUMP, &endpoints),
            ],
        }
    }

    /// Reads an encoded `ConfigDump` (what [`Resources::to_config_dump`] makes, or the same
    /// sections from Envoy).
    pub fn from_config_dump(bytes: &[u8]) -> Result<Resources, DumpError> {
        let dump = admin::ConfigDump::decode(bytes).map_err(|source| DumpError {
            what: "ConfigDump".into(),
            source,
        })?;
        let mut out = Resources::default();
        for section in &dump.configs {
            match section.type_url.as_str() {
                BOOTSTRAP_DUMP => {
                    let b: admin::BootstrapConfigDump = decode(section, "bootstrap")?;
                    if let Some(node) = b.bootstrap.and_then(|b| b.node) {
                        out.node = node;
                    }
                }
                CLUSTERS_DUMP => {
                    let d: admin::ClustersConfigDump = decode(section, "clusters")?;
                    out.versions
                        .insert(types::CLUSTER.into(), d.version_info.clone());
                    for c in d
                        .dynamic_active_clusters
                        .iter()
                        .chain(&d.dynamic_warming_clusters)
                    {
                        if let Some(a) = &c.cluster {
                            let c: Cluster = decode(a, "cluster")?;
                            out.clusters.insert(c.name.clone(), c);
                        }
                    }
                }
                LISTENERS_DUMP => {
                    let d: admin::ListenersConfigDump = decode(section, "listeners")?;
                    out.versions
                        .insert(types::LISTENER.into(), d.version_info.clone());
                    for l in &d.dynamic_listeners {
                        if let Some(a) = l.active_state.as_ref().and_then(|s| s.listener.as_ref()) {
                            let l: Listener = decode(a, "listener")?;
                            out.listeners.insert(l.name.clone(), l);
                        }
                    }
                }
                ROUTES_DUMP => {
                    let d: admin::RoutesConfigDump = decode(section, "routes")?;
                    for r in &d.dynamic_route_configs {
                        if let Some(a) = &r.route_config {
                            let rc: RouteConfiguration = decode(a, "route")?;
                            out.versions
                                .insert(types::ROUTE.into(), r.version_info.clone());
                            out.routes.insert(rc.name.clone(), rc);
                        }
                    }
                }
                ENDPOINTS_DUMP => {
                    let d: admin::EndpointsConfigDump = decode(section, "endpoints")?;
                    for e in &d.dynamic_endpoint_configs {
                        if let Some(a) = &e.endpoint_config {
                            let cla: ClusterLoadAssignment = decode(a, "endpoint")?;
                            out.versions
                                .insert(types::ENDPOINT.into(), e.version_info.clone());
                            out.endpoints.insert(cla.cluster_name.clone(), cla);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// What differs between `self` (what the control plane would send) and `held` (what the
    /// proxy holds), per type URL: CDS, LDS, RDS, EDS.
    pub fn diff(&self, held: &Resources) -> BTreeMap<&'static str, Vec<Difference>> {
        BTreeMap::from([
            (types::CLUSTER, diff_map(&self.clusters, &held.clusters)),
            (types::LISTENER, diff_map(&self.listeners, &held.listeners)),
            (types::ROUTE, diff_map(&self.routes, &held.routes)),
            (types::ENDPOINT, diff_map(&self.endpoints, &held.endpoints)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Resources {
        let mut r = Resources {
            node: Node {
                id: "sidecar~10.0.0.1~a.default~default.svc.cluster.local".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        for name in [
            "outbound|9080||reviews.default.svc.cluster.local",
            "BlackHoleCluster",
        ] {
            r.clusters.insert(
                name.into(),
                Cluster {
                    name: name.into(),
                    ..Default::default()
                },
            );
        }
        r.listeners.insert(
            "virtualOutbound".into(),
            Listener {
                name: "virtualOutbound".into(),
                ..Default::default()
            },
        );
        r.routes.insert(
            "9080".into(),
            RouteConfiguration {
                name: "9080".into(),
                ..Default::default()
            },
        );
        r.endpoints.insert(
            "outbound|9080||reviews.default.svc.cluster.local".into(),
            ClusterLoadAssignment {
                cluster_name: "outbound|9080||reviews.default.svc.cluster.local".into(),
                ..Default::default()
            },
        );
        for t in [
            types::CLUSTER,
            types::LISTENER,
            types::ROUTE,
            types::ENDPOINT,
        ] {
            r.versions.insert(t.into(), "2026-12-06T00:00:00Z/3".into());
        }
        r
    }

    #[test]
    fn config_dump_round_trips() {
        let r = sample();
        let bytes = r.to_config_dump().encode_to_vec();
        let back = Resources::from_config_dump(&bytes).expect("decode");
        assert_eq!(back, r);
        assert!(r.diff(&back).values().all(Vec::is_empty));
    }

    #[test]
    fn diff_names_missing_extra_and_changed() {
        let want = sample();
        let mut held = sample();
        held.clusters.remove("BlackHoleCluster");
        held.routes.insert(
            "80".into(),
            RouteConfiguration {
                name: "80".into(),
                ..Default::default()
            },
        );
        if let Some(l) = held.listeners.get_mut("virtualOutbound") {
            l.stat_prefix = "changed".into();
        }
        let d = want.diff(&held);
        assert_eq!(
            d[types::CLUSTER],
            vec![Difference::Missing("BlackHoleCluster".into())]
        );
        assert_eq!(d[types::ROUTE], vec![Difference::Extra("80".into())]);
        assert_eq!(
            d[types::LISTENER],
            vec![Difference::Changed("virtualOutbound".into())]
        );
        assert!(d[types::ENDPOINT].is_empty());
    }

    #[test]
    fn garbage_is_a_named_error() {
        let e = Resources::from_config_dump(b"\xff\xff\xff").expect_err("garbage");
        assert!(e.to_string().contains("ConfigDump"), "{e}");
    }
}
