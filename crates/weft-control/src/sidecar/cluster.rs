//! Clusters and endpoints: `outbound|<port>|<subset>|<fqdn>` (EDS, auto mTLS through
//! transport_socket_matches), `inbound|<port>||` (original destination, bound to 127.0.0.6),
//! and Istio's PassthroughCluster, BlackHoleCluster and InboundPassthroughClusterIpv4.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as http_opts;
use weft_xds::NamedResource;

use super::{
    BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_BIND, INBOUND_PASSTHROUGH_V4, PASSTHROUGH_CLUSTER,
    ProxyView,
};
use crate::destination::Policy;
use crate::envoy::{self, alpn};
use crate::registry::{DnsEndpoint, Endpoint, Service, ServicePort};

/// Istio's cluster name `outbound|<port>|<subset>|<fqdn>`.
pub fn cluster_name(direction: &str, port: u16, subset: &str, host: &str) -> String {
    format!("{direction}|{port}|{subset}|{host}")
}

/// Splits an Istio cluster name into (direction, port, subset, host).
pub fn parse_cluster_name(name: &str) -> Option<(&str, u16, &str, &str)> {
    let mut it = name.splitn(4, '|');
    let dir = it.next()?;
    let port = it.next()?.parse().ok()?;
    let subset = it.next()?;
    let host = it.next()?;
    Some((dir, port, subset, host))
}

const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

fn connect_timeout(view: &ProxyView) -> Duration {
    Some(view.push.mesh.connect_timeout.get())
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(10))
}

fn base(name: String, view: &ProxyView) -> cluster::Cluster {
    cluster::Cluster {
        name,
        connect_timeout: Some(envoy::duration(connect_timeout(view))),
        lb_policy: cluster::cluster::LbPolicy::RoundRobin as i32,
        ..Default::default()
    }
}

/// Istio's service metadata on clusters, read by telemetry for `destination_service*`.
fn service_metadata(svc: &Service, subset: &str, rule: Option<String>) -> core::Metadata {
    let service = envoy::string_struct([
        ("host", svc.hostname.clone()),
        ("name", svc.name.clone()),
        ("namespace", svc.namespace.clone()),
    ]);
    let mut istio = envoy::string_struct([]);
    istio.fields.insert(
        "services".into(),
        envoy::list_value(vec![envoy::struct_value(service)]),
    );
    if !subset.is_empty() {
        istio
            .fields
            .insert("subset".into(), envoy::string_value(subset.to_string()));
    }
    if let Some(path) = rule {
        istio
            .fields
            .insert("config".into(), envoy::string_value(path));
    }
    envoy::metadata(vec![("istio", istio)])
}

/// The protocol a cluster speaks upstream (Envoy's `HttpProtocolOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// `explicit_http_config.http_protocol_options`: HTTP/1.1 whatever the client spoke.
    Http11,
    /// `explicit_http_config.http2_protocol_options`.
    Http2,
    /// `use_downstream_protocol_config`: the client's protocol.
    Downstream,
}

fn http_protocol_options(
    upstream: Upstream,
    common: core::HttpProtocolOptions,
    upstream_http: Option<core::UpstreamHttpProtocolOptions>,
) -> envoy_types::pb::google::protobuf::Any {
    use http_opts::http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
    };
    let explicit = |c| {
        UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(c),
        })
    };
    let opts = http_opts::HttpProtocolOptions {
        upstream_protocol_options: Some(match upstream {
            Upstream::Http11 => explicit(ProtocolConfig::HttpProtocolOptions(Default::default())),
            Upstream::Http2 => explicit(ProtocolConfig::Http2ProtocolOptions(Default::default())),
            Upstream::Downstream => {
                UpstreamProtocolOptions::UseDownstreamProtocolConfig(Default::default())
            }
        }),
        common_http_protocol_options: (common != core::HttpProtocolOptions::default())
            .then_some(common),
        upstream_http_protocol_options: upstream_http,
        ..Default::default()
    };
    envoy::any(&opts)
}

/// The upstream protocol of an outbound HTTP cluster, as istiod 1.14 picks it
/// (`setUpstreamProtocol`, `applyConnectionPool`, `shouldH2Upgrade`): HTTP/2 for HTTP2/GRPC
/// ports, or when the DestinationRule's `h2UpgradePolicy` is UPGRADE, or when the mesh's is and
/// the rule does not say DO_NOT_UPGRADE; otherwise the client's protocol with
/// `useClientProtocol`, else HTTP/1.1.
fn outbound_protocol(view: &ProxyView, sp: &ServicePort, policy: &Policy) -> Upstream {
    use weft_api::networking::H2UpgradePolicy;
    let http = policy
        .connection_pool
        .as_ref()
        .and_then(|p| p.http.as_ref());
    let rule = http.map_or(H2UpgradePolicy::Default, |h| h.h2_upgrade_policy);
    let mesh_upgrade =
        view.push.mesh.h2_upgrade_policy == weft_api::mesh::MeshH2UpgradePolicy::Upgrade;
    let upgrade =
        rule == H2UpgradePolicy::Upgrade || (mesh_upgrade && rule != H2UpgradePolicy::DoNotUpgrade);
    if sp.protocol.is_http2() || upgrade {
        Upstream::Http2
    } else if http.is_some_and(|h| h.use_client_protocol) {
        Upstream::Downstream
    } else {
        Upstream::Http11
    }
}

/// The client-side mTLS context for a service port (ISTIO_MUTUAL), with Istio's SNI and SANs.
fn istio_mutual(
    view: &ProxyView,
    svc: &Service,
    sp: &ServicePort,
    subset: &str,
) -> tls::UpstreamTlsContext {
    let sans = svc
        .service_accounts(view.push.trust_domain())
        .iter()
        .map(|id| envoy::uri_san(envoy::exact_matcher(id)))
        .collect();
    let alpns: &[&str] = if sp.protocol.is_http() {
        // The HTTP codec overrides these per request protocol (istio-http/1.1, istio-h2).
        &[alpn::ISTIO_HTTP11, alpn::ISTIO, alpn::HTTP11]
    } else {
        &[alpn::PEER_EXCHANGE, alpn::ISTIO]
    };
    let mut common = envoy::common_tls(alpns, sans);
    common.tls_params = Some(envoy::tls_params(false));
    tls::UpstreamTlsContext {
        common_tls_context: Some(common),
        sni: format!("outbound_.{}_.{}_.{}", sp.number, subset, svc.hostname),
        ..Default::default()
    }
}

fn outbound_cluster(
    view: &ProxyView,
    svc: &Service,
    sp: &ServicePort,
    subset: &str,
) -> cluster::Cluster {
    let name = super::cluster_name("outbound", sp.number, subset, &svc.hostname);
    let mut c = base(name.clone(), view);
    if svc.resolves_by_dns() {
        // As istiod: the proxy resolves the endpoints (all addresses for DNS, the first for
        // DNS_ROUND_ROBIN), at the records' TTL, IPv4 only.
        use weft_api::networking::Resolution;
        let dtype = if svc.resolution == Resolution::DnsRoundRobin {
            cluster::cluster::DiscoveryType::LogicalDns
        } else {
            cluster::cluster::DiscoveryType::StrictDns
        };
        c.cluster_discovery_type = Some(cluster::cluster::ClusterDiscoveryType::Type(dtype as i32));
        dns_refresh(&mut c, view.push.mesh.dns_refresh_rate.get());
        c.dns_lookup_family = cluster::cluster::DnsLookupFamily::V4Only as i32;
        c.load_assignment = load_assignment(view, svc, sp, subset, &name);
    } else if svc.resolution == weft_api::networking::Resolution::None {
        // As istiod for `resolution: NONE`: to the connection's original destination.
        c.cluster_discovery_type = Some(cluster::cluster::ClusterDiscoveryType::Type(
            cluster::cluster::DiscoveryType::OriginalDst as i32,
        ));
        c.lb_policy = cluster::cluster::LbPolicy::ClusterProvided as i32;
    } else {
        c.cluster_discovery_type = Some(cluster::cluster::ClusterDiscoveryType::Type(
            cluster::cluster::DiscoveryType::Eds as i32,
        ));
        c.eds_cluster_config = Some(cluster::cluster::EdsClusterConfig {
            eds_config: Some(envoy::ads_source()),
            service_name: name,
        });
    }
    c.metadata = Some(service_metadata(
        svc,
        subset,
        crate::destination::rule_config_path(view, svc),
    ));
    c.circuit_breakers = Some(cluster::CircuitBreakers {
        thresholds: vec![super::traffic_policy::default_thresholds()],
        ..Default::default()
    });
    if view.push.mesh.enable_auto_mtls {
        c.transport_socket_matches = vec![
            cluster::cluster::TransportSocketMatch {
                name: "tlsMode-istio".into(),
                r#match: Some(envoy::string_struct([("tlsMode", "istio".to_string())])),
                transport_socket: Some(envoy::transport_socket(
                    "envoy.transport_sockets.tls",
                    &istio_mutual(view, svc, sp, subset),
                )),
            },
            cluster::cluster::TransportSocketMatch {
                name: "tlsMode-disabled".into(),
                r#match: Some(Default::default()),
                transport_socket: Some(envoy::raw_buffer()),
            },
        ];
    }
    let policy = crate::destination::policy_for(view, svc, sp.number, subset);
    let mut http = core::HttpProtocolOptions::default();
    let upstream_http = super::traffic_policy::apply(
        &mut c,
        &policy,
        &mut http,
        &svc.subject_alt_names,
        view.push.features,
        || istio_mutual(view, svc, sp, subset),
    );
    // Auto SNI lives in the HTTP protocol options: HTTP clusters only, as in istiod.
    if sp.protocol.is_http() {
        let upstream = outbound_protocol(view, sp, &policy);
        c.typed_extension_protocol_options.insert(
            HTTP_OPTIONS_KEY.into(),
            http_protocol_options(upstream, http, upstream_http),
        );
    }
    c
}

/// `dns_refresh_rate` (MeshConfig `dnsRefreshRate`) and `respect_dns_ttl`, the fields istiod
/// 1.14 sets (Envoy has since moved them into the DNS cluster extension).
#[allow(deprecated)]
fn dns_refresh(c: &mut cluster::Cluster, rate: Duration) {
    c.dns_refresh_rate = Some(envoy::duration(rate));
    c.respect_dns_ttl = true;
}

fn original_dst(name: &str, view: &ProxyView, bind: Option<&str>) -> cluster::Cluster {
    let mut c = base(name.to_string(), view);
    c.cluster_discovery_type = Some(cluster::cluster::ClusterDiscoveryType::Type(
        cluster::cluster::DiscoveryType::OriginalDst as i32,
    ));
    c.lb_policy = cluster::cluster::LbPolicy::ClusterProvided as i32;
    if let Some(ip) = bind {
        c.upstream_bind_config = Some(core::BindConfig {
            source_address: Some(match envoy::socket_address(ip, 0).address {
                Some(core::address::Address::SocketAddress(sa)) => sa,
                _ => Default::default(),
            }),
            ..Default::default()
        });
    }
    c
}

fn named(clusters: Vec<cluster::Cluster>) -> Vec<NamedResource> {
    clusters
        .into_iter()
        .map(|c| NamedResource::new(c.name.clone(), envoy::any(&c)))
        .collect()
}

/// The clusters every sidecar gets: one per service port (and subset), and Istio's
/// PassthroughCluster, InboundPassthroughClusterIpv4 and BlackHoleCluster. They depend only on
/// the push context, so the generator builds them once per push.
pub fn shared(view: &ProxyView) -> Vec<NamedResource> {
    let mut out = Vec::new();
    for svc in view.visible_services() {
        for sp in &svc.ports {
            out.push(outbound_cluster(view, svc, sp, ""));
            for subset in crate::destination::subsets_for(view, svc) {
                out.push(outbound_cluster(view, svc, sp, &subset.name));
            }
        }
    }
    // Istio's passthrough clusters carry `passthroughHttpProtocolOptions`: whatever HTTP
    // reaches them goes out in the client's protocol.
    for (name, bind) in [
        (PASSTHROUGH_CLUSTER, None),
        (INBOUND_PASSTHROUGH_V4, Some(INBOUND_PASSTHROUGH_BIND)),
    ] {
        let mut c = original_dst(name, view, bind);
        c.typed_extension_protocol_options.insert(
            HTTP_OPTIONS_KEY.into(),
            http_protocol_options(Upstream::Downstream, Default::default(), None),
        );
        out.push(c);
    }
    let mut blackhole = base(BLACKHOLE_CLUSTER.into(), view);
    blackhole.cluster_discovery_type = Some(cluster::cluster::ClusterDiscoveryType::Type(
        cluster::cluster::DiscoveryType::Static as i32,
    ));
    out.push(blackhole);
    named(out)
}

/// The proxy's own `inbound|<port>||` clusters.
pub fn inbound(view: &ProxyView) -> Vec<NamedResource> {
    let mut out = Vec::new();
    for (port, sp) in view.inbound_ports() {
        let name = super::cluster_name("inbound", port, "", "");
        let mut c = original_dst(&name, view, Some(INBOUND_PASSTHROUGH_BIND));
        // As istiod: HTTP/2 to the app on HTTP2/GRPC ports, HTTP/1.1 on the other HTTP ports
        // (an upgraded sidecar-to-sidecar hop is downgraded here).
        if sp.protocol.is_http() {
            let upstream = if sp.protocol.is_http2() {
                Upstream::Http2
            } else {
                Upstream::Http11
            };
            c.typed_extension_protocol_options.insert(
                HTTP_OPTIONS_KEY.into(),
                http_protocol_options(upstream, Default::default(), None),
            );
        }
        out.push(c);
    }
    named(out)
}

fn lb_endpoint(ep: &Endpoint, port: u16, canonical: (&str, &str)) -> endpoint::LbEndpoint {
    let workload = format!(
        "{};{};{};{};{}",
        ep.workload.clone().unwrap_or_default(),
        ep.namespace,
        canonical.0,
        canonical.1,
        "Kubernetes"
    );
    endpoint::LbEndpoint {
        host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
            endpoint::Endpoint {
                address: Some(envoy::socket_address(&ep.address.to_string(), port as u32)),
                ..Default::default()
            },
        )),
        metadata: Some(envoy::metadata(vec![
            (
                "envoy.transport_socket_match",
                envoy::string_struct([("tlsMode", ep.tls_mode.clone())]),
            ),
            ("istio", envoy::string_struct([("workload", workload)])),
        ])),
        load_balancing_weight: Some(envoy::u32v(ep.weight)),
        ..Default::default()
    }
}

/// The endpoint's canonical service and revision, by telemetry's rules (the workload's name
/// when no label names the service).
fn canonical(ep: &Endpoint) -> (String, String) {
    use weft_telemetry::labels::{canonical_revision, canonical_service};
    (
        canonical_service(&ep.labels, ep.workload.as_deref().unwrap_or_default()),
        canonical_revision(&ep.labels),
    )
}

/// ClusterLoadAssignments for the requested `outbound|…` clusters (EDS; DNS-resolved services
/// carry theirs inline in the cluster).
pub fn endpoints(view: &ProxyView, names: &[String]) -> Vec<NamedResource> {
    let mut out = Vec::new();
    for name in names {
        let Some(("outbound", port, subset, host)) = parse_cluster_name(name) else {
            continue;
        };
        let Some(svc) = view.service(host) else {
            continue;
        };
        let Some(sp) = svc.port(port) else { continue };
        if svc.resolves_by_dns() {
            continue;
        }
        if let Some(cla) = load_assignment(view, svc, sp, subset, name) {
            out.push(NamedResource::new(name.clone(), envoy::any(&cla)));
        }
    }
    out
}

fn dns_lb_endpoint(ep: &DnsEndpoint, port: u16) -> endpoint::LbEndpoint {
    endpoint::LbEndpoint {
        host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
            endpoint::Endpoint {
                address: Some(envoy::socket_address(&ep.host, port as u32)),
                ..Default::default()
            },
        )),
        metadata: Some(envoy::metadata(vec![(
            "envoy.transport_socket_match",
            envoy::string_struct([("tlsMode", ep.tls_mode.clone())]),
        )])),
        load_balancing_weight: Some(envoy::u32v(ep.weight)),
        ..Default::default()
    }
}

/// The endpoints of one service port and subset, by locality; None for an unknown subset.
fn load_assignment(
    view: &ProxyView,
    svc: &Service,
    sp: &ServicePort,
    subset: &str,
    name: &str,
) -> Option<endpoint::ClusterLoadAssignment> {
    let selector = if subset.is_empty() {
        None
    } else {
        Some(
            crate::destination::subsets_for(view, svc)
                .into_iter()
                .find(|s| s.name == subset)
                .map(|s| s.labels)?,
        )
    };
    let selected = |labels: &std::collections::BTreeMap<String, String>| {
        selector
            .as_ref()
            .is_none_or(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
    };
    let mut by_locality: std::collections::BTreeMap<String, Vec<endpoint::LbEndpoint>> =
        Default::default();
    for ep in svc.endpoints.iter().filter(|ep| selected(&ep.labels)) {
        let (cn, cr) = canonical(ep);
        by_locality
            .entry(ep.locality.clone())
            .or_default()
            .push(lb_endpoint(ep, ep.port_for(sp), (&cn, &cr)));
    }
    if svc.resolves_by_dns() {
        for ep in svc.dns_endpoints.iter().filter(|ep| selected(&ep.labels)) {
            by_locality
                .entry(ep.locality.clone())
                .or_default()
                .push(dns_lb_endpoint(ep, ep.port_for(sp)));
        }
    }
    Some(endpoint::ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: by_locality
            .into_iter()
            .map(|(loc, lb_endpoints)| {
                let mut parts = loc.splitn(3, '/');
                endpoint::LocalityLbEndpoints {
                    locality: Some(core::Locality {
                        region: parts.next().unwrap_or_default().to_string(),
                        zone: parts.next().unwrap_or_default().to_string(),
                        sub_zone: parts.next().unwrap_or_default().to_string(),
                    }),
                    load_balancing_weight: Some(envoy::u32v(
                        lb_endpoints
                            .iter()
                            .map(|e| {
                                e.load_balancing_weight
                                    .as_ref()
                                    .map(|w| w.value)
                                    .unwrap_or(1)
                            })
                            .sum(),
                    )),
                    lb_endpoints,
                    ..Default::default()
                }
            })
            .collect(),
        ..Default::default()
    })
}
