//! The listeners of TCP and TLS service ports (`<vip>_<port>`): one filter chain per `tcp`
//! route (destination subnets as prefix ranges, port) and per `tls` route (SNI hosts with the
//! TLS inspector), as istiod builds them, and the default chain to the service's cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use weft_api::networking::{RouteDestination, VirtualService};
use weft_api::{Resource, Spec};

use super::super::ProxyView;
use super::{listener_filter, tcp_filters_to};
use crate::envoy;
use crate::export::exported_to;
use crate::push::{DOMAIN_SUFFIX, PushContext};
use crate::registry::ServicePort;
use crate::virtual_service::Bound;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;

/// True when the VirtualService applies to sidecars (its gateways are unset or name `mesh`).
fn vs_bound_to_mesh(vs: &VirtualService) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

/// Whether one of the VirtualService's hosts covers `hostname` (Istio's `getConfigsForHost`).
fn vs_claims(r: &Resource, vs: &VirtualService, hostname: &str) -> bool {
    vs.hosts.iter().any(|h| {
        weft_api::host::matches(
            &weft_api::resolve_host(h, &r.meta.namespace, DOMAIN_SUFFIX),
            hostname,
        )
    })
}

/// The hostnames whose TCP/TLS listeners differ between clients: a mesh VirtualService with
/// `tcp` or `tls` routes claims them and either matches on `sourceLabels` or
/// `sourceNamespace`, or is not exported to every namespace. Computed once per push; the
/// listeners of every other service are shared by all sidecars.
pub fn client_dependent(push: &PushContext) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in push.resources.iter() {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        if (vs.tcp.is_empty() && vs.tls.is_empty()) || !vs_bound_to_mesh(vs) {
            continue;
        }
        let restricted = !crate::export::public(crate::export::effective(
            &vs.export_to,
            &push.mesh.default_virtual_service_export_to,
        ));
        let by_source = vs
            .tcp
            .iter()
            .flat_map(|t| &t.match_)
            .any(|m| !m.source_labels.is_empty() || !m.source_namespace.is_empty())
            || vs
                .tls
                .iter()
                .flat_map(|t| &t.match_)
                .any(|m| !m.source_labels.is_empty() || !m.source_namespace.is_empty());
        if !restricted && !by_source {
            continue;
        }
        for svc in &push.registry.services {
            if svc.ports.iter().any(|p| !p.protocol.is_http()) && vs_claims(r, vs, &svc.hostname) {
                out.insert(svc.hostname.clone());
            }
        }
    }
    out
}

/// What the per-client TCP/TLS listeners of a proxy depend on: its namespace (`exportTo`,
/// `sourceNamespace`) and, for each `tcp`/`tls` match with `sourceLabels` in config order,
/// whether the proxy's labels satisfy it. Proxies with equal keys get equal listeners.
pub fn client_key(view: &ProxyView) -> String {
    let mut key = view.node.namespace.clone();
    key.push('|');
    let mut labels: Option<BTreeMap<String, String>> = None;
    for r in view.push.resources.iter() {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        let tcp = vs
            .tcp
            .iter()
            .flat_map(|t| &t.match_)
            .map(|m| &m.source_labels);
        let tls = vs
            .tls
            .iter()
            .flat_map(|t| &t.match_)
            .map(|m| &m.source_labels);
        for wanted in tcp.chain(tls).filter(|l| !l.is_empty()) {
            let labels = labels.get_or_insert_with(|| view.labels());
            let ok = wanted.iter().all(|(k, v)| labels.get(k) == Some(v));
            key.push(if ok { '1' } else { '0' });
        }
    }
    key
}

/// The mesh VirtualServices visible to this proxy that claim `hostname`, in config order
/// (for TCP and TLS, Istio walks all of them, not just the first).
fn l4_virtual_services<'a>(view: &ProxyView<'a>, hostname: &str) -> Vec<Bound<'a>> {
    view.push
        .resources
        .iter()
        .filter_map(|r| {
            let Spec::VirtualService(vs) = &r.spec else {
                return None;
            };
            let visible = vs_bound_to_mesh(vs)
                && exported_to(
                    &vs.export_to,
                    &view.push.mesh.default_virtual_service_export_to,
                    &r.meta.namespace,
                    &view.node.namespace,
                )
                && vs_claims(r, vs, hostname);
            visible.then(|| Bound {
                resource: r,
                vs,
                http: Vec::new(),
            })
        })
        .collect()
}

/// Istio's static part of an L4/TLS match (`matchTCP`/`matchTLS`), decided when the config is
/// built: gateway `mesh`, the listener port, the client's labels and namespace.
struct StaticMatch<'m> {
    gateways: &'m [String],
    port: u32,
    source_labels: &'m BTreeMap<String, String>,
    source_namespace: &'m str,
}

impl StaticMatch<'_> {
    fn applies(&self, port: u16, labels: &BTreeMap<String, String>, namespace: &str) -> bool {
        (self.gateways.is_empty() || self.gateways.iter().any(|g| g == "mesh"))
            && (self.port == 0 || self.port == port as u32)
            && self
                .source_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
            && (self.source_namespace.is_empty() || self.source_namespace == namespace)
    }
}

/// One outbound TCP/TLS filter chain: its runtime match (SNI, destination prefixes) and where
/// it sends the connection.
#[derive(Debug, Clone, PartialEq)]
struct L4Chain {
    server_names: Vec<String>,
    prefix_ranges: Vec<core::CidrRange>,
    stat_prefix: String,
    target: tcp::tcp_proxy::ClusterSpecifier,
}

/// A `destinationSubnets` entry as Envoy's `CidrRange` (a bare address is a host prefix);
/// the unspecified address is no restriction (Istio drops it).
pub(super) fn cidr_range(s: &str) -> Option<core::CidrRange> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u32>().ok()?)),
        None => (s, None),
    };
    let ip: IpAddr = addr.trim().parse().ok()?;
    if ip.is_unspecified() {
        return None;
    }
    let max = if ip.is_ipv4() { 32 } else { 128 };
    Some(core::CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(envoy::u32v(len.unwrap_or(max).min(max))),
    })
}

/// The prefix ranges of a list of subnets, sorted (Istio sorts them) and deduplicated.
fn prefix_ranges(subnets: &[String]) -> Vec<core::CidrRange> {
    let mut sorted: Vec<&String> = subnets.iter().collect();
    sorted.sort();
    let mut out: Vec<core::CidrRange> = Vec::new();
    for r in sorted.into_iter().filter_map(|s| cidr_range(s)) {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// The chain of a VirtualService route: one destination is a cluster (stat prefix the
/// cluster), several are weighted clusters (stat prefix `<vs name>.<vs namespace>`), as
/// Istio's `buildOutboundNetworkFilters`.
fn route_chain(
    view: &ProxyView,
    bound: &Bound,
    port: u16,
    route: &[RouteDestination],
    server_names: &[String],
    prefix_ranges: Vec<core::CidrRange>,
) -> Option<L4Chain> {
    let ctx = super::super::http_route::Ctx {
        view,
        port,
        bound,
        grpc: false,
    };
    let dests: Vec<_> = route
        .iter()
        .filter_map(|d| Some((d.destination.as_ref()?, d.weight)))
        .collect();
    let weighted: Vec<_> = dests.iter().filter(|(_, w)| *w > 0).collect();
    let (stat_prefix, target) = if weighted.len() <= 1 {
        let (d, _) = weighted.first().copied().or(dests.first())?;
        let cluster = super::super::http_route::destination_cluster(&ctx, d);
        (
            cluster.clone(),
            tcp::tcp_proxy::ClusterSpecifier::Cluster(cluster),
        )
    } else {
        let meta = &bound.resource.meta;
        (
            format!("{}.{}", meta.name, meta.namespace),
            tcp::tcp_proxy::ClusterSpecifier::WeightedClusters(tcp::tcp_proxy::WeightedCluster {
                clusters: weighted
                    .iter()
                    .map(|(d, w)| tcp::tcp_proxy::weighted_cluster::ClusterWeight {
                        name: super::super::http_route::destination_cluster(&ctx, d),
                        weight: *w as u32,
                        ..Default::default()
                    })
                    .collect(),
            }),
        )
    };
    // `*` matches every name: no SNI match at all.
    let server_names = if server_names.iter().any(|h| h == "*") {
        Vec::new()
    } else {
        server_names
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect()
    };
    Some(L4Chain {
        server_names,
        prefix_ranges,
        stat_prefix,
        target,
    })
}

/// The chain to the service's own port when no route applies.
fn default_chain(svc: &crate::registry::Service, port: u16) -> L4Chain {
    let cluster = super::super::cluster_name("outbound", port, "", &svc.hostname);
    L4Chain {
        server_names: Vec::new(),
        prefix_ranges: Vec::new(),
        stat_prefix: cluster.clone(),
        target: tcp::tcp_proxy::ClusterSpecifier::Cluster(cluster),
    }
}

/// Istio's `buildSidecarOutboundTCPFilterChainOpts` for a service with a VIP: routes in order;
/// a route without matches, or a match without `destinationSubnets`, is the catch-all and
/// ends the list; matches with subnets become chains on those prefixes (the destination IP
/// is checked by the proxy). Without a catch-all, the service's own cluster is last.
fn tcp_chains(
    view: &ProxyView,
    svc: &crate::registry::Service,
    port: u16,
    vss: &[Bound],
    labels: &BTreeMap<String, String>,
) -> Vec<L4Chain> {
    let ns = view.node.namespace.as_str();
    let mut out: Vec<L4Chain> = Vec::new();
    for b in vss {
        for r in &b.vs.tcp {
            let mut subnets: Vec<String> = Vec::new();
            let mut terminal = r.match_.is_empty();
            for m in &r.match_ {
                let s = StaticMatch {
                    gateways: &m.gateways,
                    port: m.port,
                    source_labels: &m.source_labels,
                    source_namespace: &m.source_namespace,
                };
                if !s.applies(port, labels, ns) {
                    continue;
                }
                if m.destination_subnets.is_empty() {
                    terminal = true;
                    break;
                }
                subnets.extend(m.destination_subnets.iter().cloned());
            }
            if terminal {
                out.extend(route_chain(view, b, port, &r.route, &[], Vec::new()));
                return out;
            }
            if subnets.is_empty() {
                continue;
            }
            let ranges = prefix_ranges(&subnets);
            if ranges.is_empty() {
                // Only unspecified addresses: they match every destination.
                out.extend(route_chain(view, b, port, &r.route, &[], Vec::new()));
                return out;
            }
            // Envoy refuses two chains with the same match; the first one wins anyway.
            if out.iter().any(|c| c.prefix_ranges == ranges) {
                continue;
            }
            out.extend(route_chain(view, b, port, &r.route, &[], ranges));
        }
    }
    out.push(default_chain(svc, port));
    out
}

/// Istio's `buildSidecarOutboundTLSFilterChainOpts` for a service with a VIP: one chain per
/// applicable `tls` match (SNI hosts and destination subnets checked by the proxy; a match
/// whose SNI hosts and subnets repeat an earlier one's can never be reached and is dropped).
/// Without any, the service's own cluster. A connection whose SNI no chain names is closed.
fn tls_chains(
    view: &ProxyView,
    svc: &crate::registry::Service,
    port: u16,
    vss: &[Bound],
    labels: &BTreeMap<String, String>,
) -> Vec<L4Chain> {
    let ns = view.node.namespace.as_str();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for b in vss {
        for r in &b.vs.tls {
            for m in &r.match_ {
                let s = StaticMatch {
                    gateways: &m.gateways,
                    port: m.port,
                    source_labels: &m.source_labels,
                    source_namespace: &m.source_namespace,
                };
                if !s.applies(port, labels, ns) {
                    continue;
                }
                // (SNI is compared without case, so the key is too.)
                let runtime = format!(
                    "{}|{}",
                    m.sni_hosts.join(",").to_ascii_lowercase(),
                    m.destination_subnets.join(",")
                );
                if !seen.insert(runtime) {
                    continue;
                }
                let ranges = prefix_ranges(&m.destination_subnets);
                out.extend(route_chain(view, b, port, &r.route, &m.sni_hosts, ranges));
            }
        }
    }
    if out.is_empty() {
        out.push(default_chain(svc, port));
    }
    out
}

/// The `<vip>_<port>` listeners of a TCP or TLS service port: `tls` routes on TLS/HTTPS ports
/// (with the TLS inspector when a chain matches on SNI), `tcp` routes on the others.
pub(super) fn l4_listeners(
    view: &ProxyView,
    svc: &crate::registry::Service,
    sp: &ServicePort,
) -> Vec<listener::Listener> {
    let vss = l4_virtual_services(view, &svc.hostname);
    let labels = if vss.is_empty() {
        BTreeMap::new()
    } else {
        view.labels()
    };
    let chains = if sp.protocol.is_tls() {
        tls_chains(view, svc, sp.number, &vss, &labels)
    } else {
        tcp_chains(view, svc, sp.number, &vss, &labels)
    };
    svc.vips
        .iter()
        .map(|vip| outbound_l4_listener(view, &vip.to_string(), sp.number, chains.clone()))
        .collect()
}

/// An outbound TCP/TLS listener `<address>_<port>` (not bound: virtualOutbound hands
/// connections to it) with a filter chain per chain, in order, and the TLS inspector when a
/// chain matches on SNI.
fn outbound_l4_listener(
    view: &ProxyView,
    address: &str,
    port: u16,
    chains: Vec<L4Chain>,
) -> listener::Listener {
    let inspect_sni = chains.iter().any(|c| !c.server_names.is_empty());
    let filter_chains = chains
        .into_iter()
        .map(|c| {
            let matched = !c.server_names.is_empty() || !c.prefix_ranges.is_empty();
            listener::FilterChain {
                filter_chain_match: matched.then(|| listener::FilterChainMatch {
                    server_names: c.server_names,
                    prefix_ranges: c.prefix_ranges,
                    ..Default::default()
                }),
                filters: tcp_filters_to(
                    c.stat_prefix,
                    c.target,
                    view,
                    crate::telemetry::Mode::Client,
                ),
                ..Default::default()
            }
        })
        .collect();
    listener::Listener {
        name: format!("{address}_{port}"),
        address: Some(envoy::socket_address(address, port as u32)),
        bind_to_port: Some(envoy::boolv(false)),
        traffic_direction: core::TrafficDirection::Outbound as i32,
        listener_filters: if inspect_sni {
            vec![listener_filter::<
                envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector,
            >("envoy.filters.listener.tls_inspector")]
        } else {
            Vec::new()
        },
        filter_chains,
        ..Default::default()
    }
}

/// Istio's `0.0.0.0_<port>` listeners for the TCP and TLS ports of services without addresses,
/// reached when the app connects to the address the name resolves to: on a TLS port a chain
/// per service matching its host as SNI (or its `tls` routes); on a TCP port the first such
/// service by host name takes the connection (Istio reports a conflict for the others).
/// Otherwise, Istio's fallthrough chain: PassthroughCluster, or BlackHoleCluster under
/// REGISTRY_ONLY. Ports with HTTP services are left to the HTTP listener of that port.
pub(super) fn wildcard_listeners(
    view: &ProxyView,
    http_ports: &BTreeSet<u16>,
    dependent: &BTreeSet<String>,
    fallthrough: &str,
) -> Vec<listener::Listener> {
    let mut by_port: BTreeMap<u16, Vec<(&crate::registry::Service, &ServicePort)>> =
        BTreeMap::new();
    for svc in view.visible_services() {
        if !svc.auto_vip || dependent.contains(&svc.hostname) {
            continue;
        }
        for sp in svc.ports.iter().filter(|p| !p.protocol.is_http()) {
            if !http_ports.contains(&sp.number) {
                by_port.entry(sp.number).or_default().push((svc, sp));
            }
        }
    }
    let mut out = Vec::new();
    for (port, services) in by_port {
        let mut chains: Vec<L4Chain> = Vec::new();
        let mut default: Option<L4Chain> = None;
        for (svc, sp) in services {
            let vss = l4_virtual_services(view, &svc.hostname);
            let labels = if vss.is_empty() {
                BTreeMap::new()
            } else {
                view.labels()
            };
            if sp.protocol.is_tls() {
                for mut c in tls_chains(view, svc, port, &vss, &labels) {
                    if c.server_names.is_empty() {
                        c.server_names = vec![svc.hostname.clone()];
                    }
                    chains.push(c);
                }
            } else if default.is_none() {
                default = tcp_chains(view, svc, port, &vss, &labels)
                    .into_iter()
                    .last();
            }
        }
        let default = default.unwrap_or_else(|| L4Chain {
            server_names: Vec::new(),
            prefix_ranges: Vec::new(),
            stat_prefix: fallthrough.to_string(),
            target: tcp::tcp_proxy::ClusterSpecifier::Cluster(fallthrough.to_string()),
        });
        // Two services' `tls` routes can name the same SNI: Envoy refuses a listener with two
        // equal matches, so the first chain for a match wins.
        let mut seen = BTreeSet::new();
        chains.retain(|c| seen.insert(format!("{:?}|{:?}", c.server_names, c.prefix_ranges)));
        chains.push(default);
        out.push(outbound_l4_listener(view, "0.0.0.0", port, chains));
    }
    out
}
