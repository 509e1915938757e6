//! Just enough of the Envoy protos to follow subscriptions as Envoy does: cluster names and EDS
//! service names from CDS, route table names from LDS, and the endpoint addresses of the few
//! clusters the benchmark watches. prost skips every field these messages leave out, so a
//! simulated proxy decodes a small part of what it receives.

use std::collections::BTreeSet;

use prost::Message;
use weft_xds::pb::google::protobuf::Any;

/// `envoy.config.cluster.v3.Cluster`: name, discovery type, EDS config.
#[derive(Clone, PartialEq, Message)]
struct Cluster {
    #[prost(string, tag = "1")]
    name: String,
    /// The `type` member of the `cluster_discovery_type` oneof.
    #[prost(int32, optional, tag = "2")]
    discovery_type: Option<i32>,
    #[prost(message, optional, tag = "3")]
    eds_cluster_config: Option<EdsClusterConfig>,
}

#[derive(Clone, PartialEq, Message)]
struct EdsClusterConfig {
    #[prost(string, tag = "2")]
    service_name: String,
}

/// `Cluster.DiscoveryType.EDS`.
const DISCOVERY_TYPE_EDS: i32 = 3;

/// `envoy.config.listener.v3.Listener`: name and filter chains.
#[derive(Clone, PartialEq, Message)]
struct Listener {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, repeated, tag = "3")]
    filter_chains: Vec<FilterChain>,
    #[prost(message, optional, tag = "25")]
    default_filter_chain: Option<FilterChain>,
}

#[derive(Clone, PartialEq, Message)]
struct FilterChain {
    #[prost(message, repeated, tag = "3")]
    filters: Vec<Filter>,
}

#[derive(Clone, PartialEq, Message)]
struct Filter {
    /// The `typed_config` member of the `config_type` oneof.
    #[prost(message, optional, tag = "4")]
    typed_config: Option<Any>,
}

/// `HttpConnectionManager`: the `rds` member of `route_specifier` only.
#[derive(Clone, PartialEq, Message)]
struct HttpConnectionManager {
    #[prost(message, optional, tag = "3")]
    rds: Option<Rds>,
}

#[derive(Clone, PartialEq, Message)]
struct Rds {
    #[prost(string, tag = "2")]
    route_config_name: String,
}

/// `envoy.config.endpoint.v3.ClusterLoadAssignment`: the name only.
#[derive(Clone, PartialEq, Message)]
struct ClusterLoadAssignmentName {
    #[prost(string, tag = "1")]
    cluster_name: String,
}

/// `ClusterLoadAssignment` down to the socket addresses.
#[derive(Clone, PartialEq, Message)]
struct ClusterLoadAssignment {
    #[prost(message, repeated, tag = "2")]
    endpoints: Vec<LocalityLbEndpoints>,
}

#[derive(Clone, PartialEq, Message)]
struct LocalityLbEndpoints {
    #[prost(message, repeated, tag = "2")]
    lb_endpoints: Vec<LbEndpoint>,
}

#[derive(Clone, PartialEq, Message)]
struct LbEndpoint {
    #[prost(message, optional, tag = "1")]
    endpoint: Option<Endpoint>,
}

#[derive(Clone, PartialEq, Message)]
struct Endpoint {
    #[prost(message, optional, tag = "1")]
    address: Option<Address>,
}

#[derive(Clone, PartialEq, Message)]
struct Address {
    #[prost(message, optional, tag = "1")]
    socket_address: Option<SocketAddress>,
}

#[derive(Clone, PartialEq, Message)]
struct SocketAddress {
    #[prost(string, tag = "2")]
    address: String,
}

const HCM_TYPE_SUFFIX: &str =
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// A cluster's name and, for an EDS cluster, the name Envoy subscribes to in EDS (the EDS
/// service name, or the cluster name when that is empty).
pub(crate) fn cluster(bytes: &[u8]) -> Result<(String, Option<String>), prost::DecodeError> {
    let c = Cluster::decode(bytes)?;
    let eds = c.discovery_type == Some(DISCOVERY_TYPE_EDS) || c.eds_cluster_config.is_some();
    let eds_name = eds.then(|| match c.eds_cluster_config {
        Some(e) if !e.service_name.is_empty() => e.service_name,
        _ => c.name.clone(),
    });
    Ok((c.name, eds_name))
}

/// A listener's name; adds the route tables its HTTP connection managers name (RDS) to `out`.
pub(crate) fn listener_routes(
    bytes: &[u8],
    out: &mut BTreeSet<String>,
) -> Result<String, prost::DecodeError> {
    let l = Listener::decode(bytes)?;
    for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
        for f in &chain.filters {
            if let Some(any) = &f.typed_config
                && any.type_url.ends_with(HCM_TYPE_SUFFIX)
                && let Some(rds) = HttpConnectionManager::decode(any.value.as_slice())?.rds
                && !rds.route_config_name.is_empty()
            {
                out.insert(rds.route_config_name);
            }
        }
    }
    Ok(l.name)
}

/// The cluster a ClusterLoadAssignment is for.
pub(crate) fn cla_name(bytes: &[u8]) -> Result<String, prost::DecodeError> {
    Ok(ClusterLoadAssignmentName::decode(bytes)?.cluster_name)
}

/// The socket addresses of a ClusterLoadAssignment's endpoints, sorted.
pub(crate) fn cla_addresses(bytes: &[u8]) -> Result<Vec<String>, prost::DecodeError> {
    let cla = ClusterLoadAssignment::decode(bytes)?;
    let mut out: Vec<String> = cla
        .endpoints
        .into_iter()
        .flat_map(|l| l.lb_endpoints)
        .filter_map(|e| e.endpoint?.address?.socket_address.map(|s| s.address))
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use weft_xds::pb::envoy::config::cluster::v3 as cluster;
    use weft_xds::pb::envoy::config::core::v3 as core;
    use weft_xds::pb::envoy::config::endpoint::v3 as endpoint;
    use weft_xds::pb::envoy::config::listener::v3 as listener;
    use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
    use weft_xds::pb::google::protobuf::Any;

    use super::*;

    fn eds_cluster(name: &str, service_name: &str) -> Vec<u8> {
        cluster::Cluster {
            name: name.into(),
            cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
                cluster::cluster::DiscoveryType::Eds as i32,
            )),
            eds_cluster_config: Some(cluster::cluster::EdsClusterConfig {
                eds_config: Some(core::ConfigSource::default()),
                service_name: service_name.into(),
            }),
            connect_timeout: Some(Default::default()),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn clusters_give_their_eds_names() {
        assert_eq!(
            cluster(&eds_cluster("outbound|80||a", "")).unwrap(),
            ("outbound|80||a".into(), Some("outbound|80||a".into()))
        );
        assert_eq!(
            cluster(&eds_cluster("c", "svc")).unwrap(),
            ("c".into(), Some("svc".into()))
        );
        // STATIC (0) is still on the wire, as a oneof member.
        let passthrough = cluster::Cluster {
            name: "PassthroughCluster".into(),
            cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
                cluster::cluster::DiscoveryType::OriginalDst as i32,
            )),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(
            cluster(&passthrough).unwrap(),
            ("PassthroughCluster".into(), None)
        );
        assert!(cluster(b"\x0a\xff").is_err());
    }

    #[test]
    fn listeners_give_their_route_names() {
        let hcm_any = |route: &str| Any {
            type_url: format!("type.googleapis.com/{HCM_TYPE_SUFFIX}"),
            value: hcm::HttpConnectionManager {
                stat_prefix: "x".into(),
                route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
                    hcm::Rds {
                        config_source: Some(core::ConfigSource::default()),
                        route_config_name: route.into(),
                    },
                )),
                ..Default::default()
            }
            .encode_to_vec(),
        };
        let filter = |any: Any| listener::Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(listener::filter::ConfigType::TypedConfig(any)),
        };
        let tcp = listener::Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(listener::filter::ConfigType::TypedConfig(Any {
                type_url:
                    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
                        .into(),
                value: vec![0x0a, 0x01, b'x'],
            })),
        };
        let l = listener::Listener {
            name: "0.0.0.0_8080".into(),
            filter_chains: vec![
                listener::FilterChain {
                    filters: vec![filter(hcm_any("8080")), tcp.clone()],
                    ..Default::default()
                },
                listener::FilterChain {
                    filters: vec![filter(hcm_any("9080"))],
                    ..Default::default()
                },
            ],
            default_filter_chain: Some(listener::FilterChain {
                filters: vec![filter(hcm_any("default"))],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut names = BTreeSet::new();
        listener_routes(&l.encode_to_vec(), &mut names).unwrap();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            ["8080", "9080", "default"]
        );
    }

    #[test]
    fn cluster_load_assignments_give_name_and_addresses() {
        let ep = |ip: &str| endpoint::LbEndpoint {
            host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                endpoint::Endpoint {
                    address: Some(core::Address {
                        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                            address: ip.into(),
                            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(
                                8080,
                            )),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let cla = endpoint::ClusterLoadAssignment {
            cluster_name: "outbound|8080||a".into(),
            endpoints: vec![
                endpoint::LocalityLbEndpoints {
                    lb_endpoints: vec![ep("10.0.0.2"), ep("10.0.0.1")],
                    ..Default::default()
                },
                endpoint::LocalityLbEndpoints {
                    lb_endpoints: vec![ep("10.0.0.3")],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(cla_name(&cla).unwrap(), "outbound|8080||a");
        assert_eq!(
            cla_addresses(&cla).unwrap(),
            ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        );
    }
}
