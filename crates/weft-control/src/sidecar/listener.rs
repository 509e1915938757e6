//! Listeners: `virtualOutbound` (15001), `virtualInbound` (15006) with Istio's per-port
//! PERMISSIVE/STRICT/DISABLE filter chains, and the outbound per-port listeners
//! (`0.0.0.0_<port>` for HTTP, `<vip>_<port>` for TCP and TLS, with the filter chains of the
//! VirtualService's `tcp` and `tls` routes) that virtualOutbound hands off to.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use weft_xds::NamedResource;

use super::{
    BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_V4, INBOUND_PORT, OUTBOUND_PORT, PASSTHROUGH_CLUSTER,
    ProxyView, VIRTUAL_INBOUND, VIRTUAL_OUTBOUND,
};
use crate::authn::MtlsMode;
use crate::authz::AuthzFilters;
use crate::envoy::{self, alpn};
use crate::registry::ServicePort;
use crate::telemetry::Mode;
use crate::telemetry::accesslog::access_logs;

mod l4;
pub use l4::{client_dependent, client_key};
use l4::{l4_listeners, wildcard_listeners};

fn router_filter() -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(envoy::any(
            &envoy_types::pb::envoy::extensions::filters::http::router::v3::Router::default(),
        ))),
        ..Default::default()
    }
}

/// Istio's HTTP filter chain (the parts Weft runs): fault injection and CORS, configured per
/// route, then the router.
fn http_filters() -> Vec<hcm::HttpFilter> {
    use envoy_types::pb::envoy::extensions::filters::http::{cors, fault};
    vec![
        hcm::HttpFilter {
            name: super::http_route::FAULT_FILTER.into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(envoy::any(
                &fault::v3::HttpFault::default(),
            ))),
            ..Default::default()
        },
        hcm::HttpFilter {
            name: super::http_route::CORS_FILTER.into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(envoy::any(
                &cors::v3::Cors::default(),
            ))),
            ..Default::default()
        },
        router_filter(),
    ]
}

/// The inbound HCM's filters in istiod's order: CUSTOM authorization (shadow RBAC +
/// ext_authz), request authentication (jwt_authn + istio_authn), the AUDIT, DENY and ALLOW
/// RBAC filters, then fault, CORS and the router.
fn inbound_http_filters(view: &ProxyView, authz: &AuthzFilters) -> Vec<hcm::HttpFilter> {
    let mut out = authz.custom_http.clone();
    out.extend(crate::jwt::http_filters(view));
    out.extend(authz.http.iter().cloned());
    out.extend(http_filters());
    out
}

/// Which side an HCM is on.
enum HcmSide<'a> {
    Outbound,
    /// Inbound, with the workload's authorization filters.
    Inbound(&'a AuthzFilters),
}

/// meshConfig.pathNormalization on an HCM (`listener.go: buildHTTPConnectionManager`).
fn set_path_normalization(cfg: &mut hcm::HttpConnectionManager, view: &ProxyView) {
    use hcm::http_connection_manager::PathWithEscapedSlashesAction as Escaped;
    use weft_api::mesh::NormalizationType as N;
    cfg.path_with_escaped_slashes_action = Escaped::KeepUnchanged as i32;
    let mode = view
        .push
        .mesh
        .path_normalization
        .as_ref()
        .map_or(N::Default, |p| p.normalization);
    match mode {
        N::None => cfg.normalize_path = Some(envoy::boolv(false)),
        N::Default | N::Base => cfg.normalize_path = Some(envoy::boolv(true)),
        N::MergeSlashes => {
            cfg.normalize_path = Some(envoy::boolv(true));
            cfg.merge_slashes = true;
        }
        N::DecodeAndMergeSlashes => {
            cfg.normalize_path = Some(envoy::boolv(true));
            cfg.merge_slashes = true;
            cfg.path_with_escaped_slashes_action = Escaped::UnescapeAndForward as i32;
        }
    }
}

fn hcm_filter(
    stat_prefix: String,
    routes: hcm::http_connection_manager::RouteSpecifier,
    view: &ProxyView,
    side: HcmSide,
) -> listener::Filter {
    let mut cfg = hcm::HttpConnectionManager {
        stat_prefix,
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        http_filters: http_filters(),
        route_specifier: Some(routes),
        access_log: access_logs(
            view,
            match side {
                HcmSide::Outbound => Mode::Client,
                HcmSide::Inbound(_) => Mode::Server,
            },
        ),
        use_remote_address: Some(envoy::boolv(false)),
        ..Default::default()
    };
    set_path_normalization(&mut cfg, view);
    if let HcmSide::Inbound(authz) = side {
        cfg.http_filters = inbound_http_filters(view, authz);
        // buildSidecarInboundHTTPOpts: XFCC appended for mTLS peers (removed otherwise).
        cfg.forward_client_cert_details =
            hcm::http_connection_manager::ForwardClientCertDetails::AppendForward as i32;
        cfg.set_current_client_cert_details =
            Some(hcm::http_connection_manager::SetCurrentClientCertDetails {
                subject: Some(envoy::boolv(true)),
                uri: true,
                dns: true,
                ..Default::default()
            });
    }
    // Metric overrides: Istio's stats filter, just before the router.
    let mode = match side {
        HcmSide::Outbound => Mode::Client,
        HcmSide::Inbound(_) => Mode::Server,
    };
    cfg.tracing = crate::telemetry::tracing::hcm_tracing(view, mode);
    if let Some(stats) = crate::telemetry::stats::http_filter(view, mode) {
        let at = cfg.http_filters.len().saturating_sub(1);
        cfg.http_filters.insert(at, stats);
    }
    listener::Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(listener::filter::ConfigType::TypedConfig(envoy::any(&cfg))),
    }
}

/// The `istio.stats` filter (metric overrides) if any, then the TCP proxy to `cluster`.
fn tcp_filters(
    stat_prefix: String,
    cluster: String,
    view: &ProxyView,
    mode: Mode,
) -> Vec<listener::Filter> {
    tcp_filters_to(
        stat_prefix,
        tcp::tcp_proxy::ClusterSpecifier::Cluster(cluster),
        view,
        mode,
    )
}

fn tcp_filters_to(
    stat_prefix: String,
    target: tcp::tcp_proxy::ClusterSpecifier,
    view: &ProxyView,
    mode: Mode,
) -> Vec<listener::Filter> {
    let cfg = tcp::TcpProxy {
        stat_prefix,
        cluster_specifier: Some(target),
        access_log: access_logs(view, mode),
        ..Default::default()
    };
    let proxy = listener::Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(listener::filter::ConfigType::TypedConfig(envoy::any(&cfg))),
    };
    crate::telemetry::stats::network_filter(view, mode)
        .into_iter()
        .chain([proxy])
        .collect()
}

fn listener_filter<T: prost::Message + prost::Name + Default>(
    name: &str,
) -> listener::ListenerFilter {
    listener::ListenerFilter {
        name: name.into(),
        config_type: Some(listener::listener_filter::ConfigType::TypedConfig(
            envoy::any(&T::default()),
        )),
        ..Default::default()
    }
}

fn named(l: listener::Listener) -> NamedResource {
    NamedResource::new(l.name.clone(), envoy::any(&l))
}

/// The listeners every sidecar gets (virtualOutbound and the per-port outbound listeners);
/// they depend only on the push context. The TCP/TLS listeners of the services in `dependent`
/// (see [`client_dependent`]) are left out: they are built per client by [`per_client`].
pub fn shared(view: &ProxyView, dependent: &BTreeSet<String>) -> Vec<NamedResource> {
    let mut out = vec![named(virtual_outbound(view))];
    out.extend(outbound_listeners(view, dependent).into_iter().map(named));
    out
}

/// The TCP/TLS listeners (`<vip>_<port>`) of the services whose routes depend on the client,
/// built for this proxy. Proxies with the same [`client_key`] get the same ones.
pub fn per_client(view: &ProxyView, dependent: &BTreeSet<String>) -> Vec<NamedResource> {
    let mut out = Vec::new();
    for svc in view.visible_services() {
        if !dependent.contains(&svc.hostname) {
            continue;
        }
        for sp in svc.ports.iter().filter(|p| !p.protocol.is_http()) {
            out.extend(l4_listeners(view, svc, sp).into_iter().map(named));
        }
    }
    out
}

/// The proxy's own virtualInbound.
pub fn inbound(view: &ProxyView) -> NamedResource {
    named(virtual_inbound(view))
}

/// Where traffic for unknown destinations goes under the outbound traffic policy in force.
fn fallthrough(view: &ProxyView) -> &'static str {
    if view.registry_only() {
        BLACKHOLE_CLUSTER
    } else {
        PASSTHROUGH_CLUSTER
    }
}

fn virtual_outbound(view: &ProxyView) -> listener::Listener {
    let fallback = fallthrough(view);
    listener::Listener {
        name: VIRTUAL_OUTBOUND.into(),
        address: Some(envoy::socket_address("0.0.0.0", OUTBOUND_PORT)),
        use_original_dst: Some(envoy::boolv(true)),
        traffic_direction: core::TrafficDirection::Outbound as i32,
        filter_chains: vec![listener::FilterChain {
            name: "virtualOutbound-catchall-tcp".into(),
            filters: tcp_filters(fallback.into(), fallback.into(), view, Mode::Client),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Per-port outbound listeners. HTTP ports share `0.0.0.0_<port>` with the route table `<port>`;
/// TCP and TLS ports get `<vip>_<port>` with the filter chains of the service's `tcp` or `tls`
/// routes (services in `dependent` are left to [`per_client`]).
fn outbound_listeners(view: &ProxyView, dependent: &BTreeSet<String>) -> Vec<listener::Listener> {
    let mut http_ports: BTreeSet<u16> = BTreeSet::new();
    let mut out = Vec::new();
    for svc in view.visible_services() {
        for sp in &svc.ports {
            if sp.protocol.is_http() {
                http_ports.insert(sp.number);
            } else if !dependent.contains(&svc.hostname) {
                out.extend(l4_listeners(view, svc, sp));
            }
        }
    }
    let fallthrough = fallthrough(view);
    out.extend(wildcard_listeners(
        view,
        &http_ports,
        dependent,
        fallthrough,
    ));
    for port in &http_ports {
        out.push(listener::Listener {
            name: format!("0.0.0.0_{port}"),
            address: Some(envoy::socket_address("0.0.0.0", *port as u32)),
            bind_to_port: Some(envoy::boolv(false)),
            traffic_direction: core::TrafficDirection::Outbound as i32,
            filter_chains: vec![listener::FilterChain {
                filters: vec![hcm_filter(
                    format!("outbound_0.0.0.0_{port}"),
                    hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
                        config_source: Some(envoy::ads_source()),
                        route_config_name: port.to_string(),
                    }),
                    view,
                    HcmSide::Outbound,
                )],
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    out
}

/// The server side of mTLS: `default` cert, `ROOTCA` trust, client certificate required,
/// SAN prefix of the trust domain(s), meshMTLS.minProtocolVersion.
fn inbound_tls(view: &ProxyView, alpns: &[&str]) -> core::TransportSocket {
    let mesh = &view.push.mesh;
    let mut domains = vec![mesh.trust_domain.clone()];
    domains.extend(mesh.trust_domain_aliases.iter().cloned());
    let sans = domains
        .iter()
        .map(|td| envoy::uri_san(envoy::prefix_matcher(&format!("spiffe://{td}/"))))
        .collect();
    let min13 = mesh.min_tls_version() == weft_api::mesh::MeshTlsProtocol::TlsV1_3;
    let mut common = envoy::common_tls(alpns, sans);
    common.tls_params = Some(envoy::tls_params(min13));
    let ctx = tls::DownstreamTlsContext {
        common_tls_context: Some(common),
        require_client_certificate: Some(envoy::boolv(true)),
        ..Default::default()
    };
    envoy::transport_socket("envoy.transport_sockets.tls", &ctx)
}

const MTLS_HTTP_ALPNS: &[&str] = &[alpn::ISTIO_HTTP10, alpn::ISTIO_HTTP11, alpn::ISTIO_H2];
const ALL_ISTIO_ALPNS: &[&str] = &[
    alpn::ISTIO,
    alpn::PEER_EXCHANGE,
    alpn::ISTIO_HTTP10,
    alpn::ISTIO_HTTP11,
    alpn::ISTIO_H2,
];
const SERVER_HTTP_ALPNS: &[&str] = &[alpn::H2, alpn::HTTP11];
const SERVER_TCP_ALPNS: &[&str] = &[alpn::PEER_EXCHANGE, alpn::H2, alpn::HTTP11];

/// Which protocol a chain speaks.
#[derive(Clone, Copy)]
enum Chain {
    Http,
    Tcp,
}

struct ChainSpec {
    name: String,
    port: Option<u16>,
    transport: &'static str,
    alpns: &'static [&'static str],
    tls: bool,
    kind: Chain,
}

/// Istio's inbound filter chains for one port and mode (§4d of the digest).
fn chain_specs(
    port: Option<u16>,
    protocol: Option<&ServicePort>,
    mode: MtlsMode,
) -> Vec<ChainSpec> {
    let label = port
        .map(|p| p.to_string())
        .unwrap_or_else(|| "virtualInbound".into());
    let spec = |suffix: &str, transport, alpns, tls, kind| ChainSpec {
        name: format!("{label}-{suffix}"),
        port,
        transport,
        alpns,
        tls,
        kind,
    };
    let declared_http = protocol.is_some_and(|p| p.protocol.is_http());
    let declared_tcp = protocol
        .is_some_and(|p| !p.protocol.is_http() && p.protocol != weft_api::Protocol::Unsupported);
    let mut out = Vec::new();
    match mode {
        MtlsMode::Strict => {
            if declared_http {
                out.push(spec("mtls-http", "tls", ALL_ISTIO_ALPNS, true, Chain::Http));
            } else if declared_tcp {
                out.push(spec("mtls-tcp", "tls", &[], true, Chain::Tcp));
            } else {
                out.push(spec("mtls-http", "tls", MTLS_HTTP_ALPNS, true, Chain::Http));
                out.push(spec("mtls-tcp", "tls", &[], true, Chain::Tcp));
            }
        }
        MtlsMode::Permissive => {
            if declared_http {
                out.push(spec("mtls-http", "tls", ALL_ISTIO_ALPNS, true, Chain::Http));
                out.push(spec(
                    "plaintext-http",
                    "raw_buffer",
                    &[],
                    false,
                    Chain::Http,
                ));
            } else if declared_tcp {
                out.push(spec(
                    "mtls-tcp",
                    "tls",
                    &[alpn::PEER_EXCHANGE, alpn::ISTIO],
                    true,
                    Chain::Tcp,
                ));
                out.push(spec("plaintext-tcp", "raw_buffer", &[], false, Chain::Tcp));
                out.push(spec("passthrough-tls", "tls", &[], false, Chain::Tcp));
            } else {
                out.push(spec("mtls-http", "tls", MTLS_HTTP_ALPNS, true, Chain::Http));
                out.push(spec(
                    "plaintext-http",
                    "raw_buffer",
                    &[alpn::HTTP11, alpn::H2C],
                    false,
                    Chain::Http,
                ));
                out.push(spec(
                    "mtls-tcp",
                    "tls",
                    &[alpn::PEER_EXCHANGE, alpn::ISTIO],
                    true,
                    Chain::Tcp,
                ));
                out.push(spec("plaintext-tcp", "raw_buffer", &[], false, Chain::Tcp));
                out.push(spec("passthrough-tls", "tls", &[], false, Chain::Tcp));
            }
        }
        MtlsMode::Disable => {
            if declared_http {
                out.push(spec("plaintext-http", "", &[], false, Chain::Http));
            } else {
                out.push(spec("plaintext-tcp", "", &[], false, Chain::Tcp));
            }
        }
    }
    out
}

fn virtual_inbound(view: &ProxyView) -> listener::Listener {
    let policies = view.policies();
    let authz = view
        .push
        .authz
        .filters(&view.node.namespace, &view.labels());
    let view = &InboundView {
        view,
        authz: &authz,
    };
    let mut chains = Vec::new();
    for (port, sp) in view.view.inbound_ports() {
        let mode = policies.port_mode(port);
        let cluster = super::cluster_name("inbound", port, "", "");
        for spec in chain_specs(Some(port), Some(&sp), mode) {
            chains.push(inbound_chain(view, spec, &cluster, port));
        }
    }
    // Ports no service declares: passthrough to the original destination, under the
    // workload-level mode.
    for spec in chain_specs(None, None, policies.workload_mode()) {
        chains.push(inbound_chain(view, spec, INBOUND_PASSTHROUGH_V4, 0));
    }
    listener::Listener {
        name: VIRTUAL_INBOUND.into(),
        address: Some(envoy::socket_address("0.0.0.0", INBOUND_PORT)),
        use_original_dst: Some(envoy::boolv(true)),
        traffic_direction: core::TrafficDirection::Inbound as i32,
        listener_filters: vec![
            listener_filter::<envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst>(
                "envoy.filters.listener.original_dst",
            ),
            listener_filter::<envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector>(
                "envoy.filters.listener.tls_inspector",
            ),
            listener_filter::<envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector>(
                "envoy.filters.listener.http_inspector",
            ),
        ],
        filter_chains: chains,
        ..Default::default()
    }
}

/// The proxy and its authorization filters, for building its inbound chains.
struct InboundView<'v, 'a> {
    view: &'v ProxyView<'a>,
    authz: &'v AuthzFilters,
}

fn inbound_chain(
    view: &InboundView,
    spec: ChainSpec,
    cluster: &str,
    port: u16,
) -> listener::FilterChain {
    let filter = match spec.kind {
        Chain::Http => {
            let rc = route::RouteConfiguration {
                name: cluster.to_string(),
                validate_clusters: Some(envoy::boolv(false)),
                virtual_hosts: vec![route::VirtualHost {
                    name: format!("inbound|http|{port}"),
                    domains: vec!["*".into()],
                    routes: vec![route::Route {
                        name: "default".into(),
                        r#match: Some(route::RouteMatch {
                            path_specifier: Some(route::route_match::PathSpecifier::Prefix(
                                "/".into(),
                            )),
                            ..Default::default()
                        }),
                        action: Some(route::route::Action::Route(route::RouteAction {
                            cluster_specifier: Some(
                                route::route_action::ClusterSpecifier::Cluster(cluster.to_string()),
                            ),
                            timeout: Some(envoy::duration(std::time::Duration::ZERO)),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            vec![hcm_filter(
                format!("inbound_0.0.0.0_{port}"),
                hcm::http_connection_manager::RouteSpecifier::RouteConfig(rc),
                view.view,
                HcmSide::Inbound(view.authz),
            )]
        }
        Chain::Tcp => tcp_filters(
            cluster.to_string(),
            cluster.to_string(),
            view.view,
            Mode::Server,
        ),
    };
    // TCP chains (passthrough ones too): CUSTOM network filters, then the AUDIT, DENY and
    // ALLOW network RBAC filters before tcp_proxy (`buildInboundNetworkFilters`).
    let filters = match spec.kind {
        Chain::Http => filter,
        Chain::Tcp => {
            let mut f = view.authz.custom_tcp.clone();
            f.extend(view.authz.tcp.iter().cloned());
            f.extend(filter);
            f
        }
    };
    let server_alpns = match spec.kind {
        Chain::Http => SERVER_HTTP_ALPNS,
        Chain::Tcp => SERVER_TCP_ALPNS,
    };
    listener::FilterChain {
        name: spec.name,
        filter_chain_match: Some(listener::FilterChainMatch {
            destination_port: spec.port.map(|p| envoy::u32v(p as u32)),
            transport_protocol: spec.transport.to_string(),
            application_protocols: spec.alpns.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        transport_socket: spec.tls.then(|| inbound_tls(view.view, server_alpns)),
        filters,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
