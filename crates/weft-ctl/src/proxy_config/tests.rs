use super::*;
use prost::Message;
use weft_xds::pb::envoy::config::cluster::v3::{Cluster, cluster};
use weft_xds::pb::envoy::config::core::v3::{
    Address, Metadata, SocketAddress, address, socket_address,
};
use weft_xds::pb::envoy::config::listener::v3::{
    Filter as NetFilter, FilterChain, FilterChainMatch, Listener, filter,
};
use weft_xds::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds, http_connection_manager,
};
use weft_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use weft_xds::pb::google::protobuf::{Any, Struct, UInt32Value, Value as PValue, value::Kind};

fn config_metadata(path: &str) -> Metadata {
    let mut fields = std::collections::HashMap::new();
    fields.insert(
        "config".to_string(),
        PValue {
            kind: Some(Kind::StringValue(path.into())),
        },
    );
    let mut m = Metadata::default();
    m.filter_metadata.insert(
        "istio".into(),
        Struct {
            fields: fields.into_iter().collect(),
        },
    );
    m
}

fn eds(name: &str, rule: Option<&str>) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        metadata: rule.map(config_metadata),
        ..Default::default()
    }
}

#[test]
fn cluster_table_as_istioctl() {
    let mut res = Resources::default();
    for c in [
        eds(
            "outbound|9080|v1|reviews.default.svc.cluster.local",
            Some("/apis/networking.istio.io/v1alpha3/namespaces/default/destination-rule/reviews"),
        ),
        eds("outbound|9080||details.default.svc.cluster.local", None),
        eds("inbound|9080||", None),
        Cluster {
            name: "BlackHoleCluster".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            )),
            ..Default::default()
        },
    ] {
        res.clusters.insert(c.name.clone(), c);
    }
    let (text, names) = clusters(&res, &Filter::default());
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        vec![
            "SERVICE FQDN",
            "PORT",
            "SUBSET",
            "DIRECTION",
            "TYPE",
            "DESTINATION RULE"
        ]
    );
    assert!(
        lines.contains(&vec!["BlackHoleCluster", "-", "-", "-", "STATIC"]),
        "{text}"
    );
    assert!(
        lines.contains(&vec!["9080", "-", "inbound", "EDS"]),
        "{text}"
    );
    assert!(
        lines.contains(&vec![
            "reviews.default.svc.cluster.local",
            "9080",
            "v1",
            "outbound",
            "EDS",
            "reviews.default"
        ]),
        "{text}"
    );
    assert_eq!(names.len(), 4);
    // Filters are substring tests on the name.
    let f = Filter {
        fqdn: Some("reviews".into()),
        ..Default::default()
    };
    let (text, names) = clusters(&res, &f);
    assert_eq!(
        names,
        vec!["outbound|9080|v1|reviews.default.svc.cluster.local"],
        "{text}"
    );
    let f = Filter {
        port: Some(9080),
        direction: Some("inbound".into()),
        ..Default::default()
    };
    assert_eq!(clusters(&res, &f).1, vec!["inbound|9080||"]);
}

fn typed<M: Message>(type_url: &str, m: &M) -> Option<filter::ConfigType> {
    Some(filter::ConfigType::TypedConfig(Any {
        type_url: type_url.into(),
        value: m.encode_to_vec(),
    }))
}

fn listener(addr: &str, port: u32, chains: Vec<FilterChain>) -> Listener {
    Listener {
        name: format!("{addr}_{port}"),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: addr.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..Default::default()
            })),
        }),
        filter_chains: chains,
        ..Default::default()
    }
}

#[test]
fn listener_rows_as_istioctl() {
    let hcm = NetFilter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: typed(
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            &HttpConnectionManager {
                route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
                    route_config_name: "9080".into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
        ),
    };
    let tcp = NetFilter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: typed(
            "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            &TcpProxy {
                cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(
                    "PassthroughCluster".into(),
                )),
                ..Default::default()
            },
        ),
    };
    let mut res = Resources::default();
    let l = listener(
        "0.0.0.0",
        9080,
        vec![
            FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    transport_protocol: "raw_buffer".into(),
                    application_protocols: vec!["http/1.1".into(), "h2c".into()],
                    ..Default::default()
                }),
                filters: vec![hcm],
                ..Default::default()
            },
            FilterChain {
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(UInt32Value { value: 9080 }),
                    ..Default::default()
                }),
                filters: vec![tcp.clone()],
                ..Default::default()
            },
        ],
    );
    res.listeners.insert(l.name.clone(), l);
    let (text, _) = listeners(&res, &Filter::default());
    assert_eq!(
        text,
        "ADDRESS PORT MATCH                                DESTINATION\n\
         0.0.0.0 9080 Trans: raw_buffer; App: http/1.1,h2c Route: 9080\n\
         0.0.0.0 9080 Addr: *:9080                         PassthroughCluster\n"
    );
    let f = Filter {
        port: Some(80),
        ..Default::default()
    };
    assert_eq!(listeners(&res, &f).1.len(), 0);
    assert_eq!(
        super::summary::listener_type(&res.listeners["0.0.0.0_9080"]),
        "HTTP+TCP"
    );

    // A tcp_proxy to the BlackHoleCluster is not TCP traffic (istioctl's rule).
    let mut blackhole = tcp.clone();
    blackhole.config_type = typed(
        "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        &TcpProxy {
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(
                "BlackHoleCluster".into(),
            )),
            ..Default::default()
        },
    );
    let only_blackhole = listener(
        "0.0.0.0",
        15001,
        vec![FilterChain {
            filters: vec![blackhole],
            ..Default::default()
        }],
    );
    assert_eq!(super::summary::listener_type(&only_blackhole), "UNKNOWN");
    let by_type = |t: &str| Filter {
        listener_type: Some(t.into()),
        ..Default::default()
    };
    assert_eq!(
        listeners(&res, &by_type("http+tcp")).1,
        vec!["0.0.0.0_9080".to_string()]
    );
    assert!(listeners(&res, &by_type("tcp")).1.is_empty());
}

#[test]
fn route_table_as_istioctl() {
    let to = |c: &str| {
        Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(c.into())),
            ..Default::default()
        }))
    };
    let rc = RouteConfiguration {
        name: "9080".into(),
        virtual_hosts: vec![
            VirtualHost {
                name: "reviews.default.svc.cluster.local:9080".into(),
                domains: vec![
                    "reviews.default.svc.cluster.local".into(),
                    "reviews.default.svc.cluster.local:9080".into(),
                    "reviews".into(),
                    "reviews:9080".into(),
                    "reviews.default.svc".into(),
                    "reviews.default".into(),
                    "10.96.0.7".into(),
                ],
                routes: vec![Route {
                    r#match: Some(RouteMatch {
                        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: to("outbound|9080|v1|reviews.default.svc.cluster.local"),
                    metadata: Some(config_metadata(
                        "/apis/networking.istio.io/v1alpha3/namespaces/default/virtual-service/reviews",
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            },
            VirtualHost {
                name: "allow_any".into(),
                domains: vec!["*".into()],
                routes: vec![Route {
                    action: to("PassthroughCluster"),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let mut res = Resources::default();
    res.routes.insert(rc.name.clone(), rc);
    let (text, names) = routes(&res, &Filter::default());
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 2, "{text}");
    let cells: Vec<&str> = rows[1]
        .split("     ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cells,
        vec![
            "9080",
            "reviews, reviews.default + 1 more...",
            "/*",
            "reviews.default"
        ],
        "{text}"
    );
    assert_eq!(names, vec!["9080"]);
    let f = Filter {
        name: Some("80".into()),
        ..Default::default()
    };
    assert!(routes(&res, &f).1.is_empty());
}

#[test]
fn names_and_paths() {
    assert_eq!(
        parse_cluster_name("outbound_.9080_.v1_.reviews.default.svc.cluster.local"),
        Some(("outbound", 9080, "v1", "reviews.default.svc.cluster.local"))
    );
    assert_eq!(parse_cluster_name("PassthroughCluster"), None);
    assert_eq!(
        render_config("/apis/networking.istio.io/v1alpha3/namespaces/ns1/virtual-service/vs"),
        "vs.ns1"
    );
    assert_eq!(render_config("/apis/other/x"), "<unknown>");
    assert_eq!(route_domains(&["*".into()]), "*");
}

#[test]
fn endpoints_from_the_clusters_page() {
    let text = "outbound|80||httpbin.default.svc.cluster.local::default_priority::max_connections::1024\n\
                outbound|80||httpbin.default.svc.cluster.local::10.0.0.5:80::health_flags::healthy\n\
                outbound|80||httpbin.default.svc.cluster.local::10.0.0.5:80::weight::1\n\
                outbound|80||httpbin.default.svc.cluster.local::10.0.0.6:80::health_flags::/failed_outlier_check\n\
                outbound|80||httpbin.default.svc.cluster.local::10.0.0.6:80::weight::3\n";
    let hosts = parse_clusters_text(text);
    assert_eq!(hosts.len(), 2);
    assert!(hosts[1].failed_outlier_check && hosts[1].weight == 3);
    let (table, sel) = endpoints(&hosts, &Filter::default());
    assert_eq!(sel.len(), 2);
    assert!(
        table
            .lines()
            .nth(2)
            .is_some_and(|l| l.starts_with("10.0.0.6:80")
                && l.contains("HEALTHY")
                && l.contains("FAILED")),
        "{table}"
    );
    let f = Filter {
        address: Some("10.0.0.5".into()),
        ..Default::default()
    };
    assert_eq!(endpoints(&hosts, &f).1.len(), 1);
    let f = Filter {
        status: Some("unhealthy".into()),
        ..Default::default()
    };
    assert!(endpoints(&hosts, &f).1.is_empty());
}

#[test]
fn secrets_and_log_levels() {
    let certs = serde_json::json!({"certificates": [{
        "cert_chain": [{"serial_number": "1a2b", "expiration_time": "2026-12-07T00:00:00Z", "valid_from": "2026-12-06T00:00:00Z"}],
        "ca_cert": [{"serial_number": "ff", "expiration_time": "2036-01-01T00:00:00Z", "valid_from": "2026-01-01T00:00:00Z"}],
    }]});
    let t = secrets(&certs);
    let rows: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows[1],
        vec![
            "default",
            "Cert",
            "Chain",
            "ACTIVE",
            "true",
            "6699",
            "2026-12-07T00:00:00Z",
            "2026-12-06T00:00:00Z"
        ]
    );
    assert_eq!(rows[2][..5], ["ROOTCA", "CA", "ACTIVE", "true", "255"]);
    assert_eq!(
        secrets(&serde_json::json!({"certificates": []})),
        "No active or warming secrets found.\n"
    );
    assert_eq!(log_filter("debug").expect("level"), "debug");
    assert_eq!(
        log_filter("warning,weft_proxy::xds:trace").expect("level"),
        "warn,weft_proxy::xds=trace"
    );
    assert!(log_filter("loud").is_err());
}
