//! xDS resource compilation in the proxy: arbitrary Listener, Cluster, RouteConfiguration and
//! ClusterLoadAssignment protobufs (the first byte picks the type) give a snapshot or a named
//! rejection (a NACK), never a panic.
#![no_main]

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use weft_proxy::snapshot::{Raw, Snapshot};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let mut raw = Raw::default();
    match kind % 4 {
        0 => match Listener::decode(body) {
            Ok(l) => {
                raw.listeners.insert(l.name.clone(), l);
            }
            Err(_) => return,
        },
        1 => match Cluster::decode(body) {
            Ok(c) => {
                raw.clusters.insert(c.name.clone(), c);
            }
            Err(_) => return,
        },
        2 => match RouteConfiguration::decode(body) {
            Ok(r) => {
                raw.routes.insert(r.name.clone(), r);
            }
            Err(_) => return,
        },
        _ => match ClusterLoadAssignment::decode(body) {
            Ok(e) => {
                // An EDS cluster for it, so that the assignment is compiled too.
                let cluster = Cluster {
                    name: e.cluster_name.clone(),
                    cluster_discovery_type: Some(
                        envoy_types::pb::envoy::config::cluster::v3::cluster::ClusterDiscoveryType::Type(
                            envoy_types::pb::envoy::config::cluster::v3::cluster::DiscoveryType::Eds as i32,
                        ),
                    ),
                    ..Default::default()
                };
                raw.clusters.insert(e.cluster_name.clone(), cluster);
                raw.endpoints.insert(e.cluster_name.clone(), e);
            }
            Err(_) => return,
        },
    }
    let live = Arc::new(weft_identity::LiveIdentity::new());
    let tls = weft_proxy::tls::TlsFactory::new(live, "cluster.local".into());
    let _ = Snapshot::compile(raw, &tls, &Snapshot::default());
});
