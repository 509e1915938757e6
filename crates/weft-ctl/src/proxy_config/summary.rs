//! How istioctl summarises Envoy resources in its tables: cluster names, `istio.config`
//! metadata, listener matches and destinations, route domains and matches.

use prost::Message;
use weft_xds::pb::envoy::config::core::v3::{Metadata, address};
use weft_xds::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use weft_xds::pb::envoy::config::route::v3::{
    Route, RouteConfiguration, RouteMatch, route, route_action, route_match,
};
use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use weft_xds::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use weft_xds::pb::google::protobuf::value::Kind;

const HCM: &str = "envoy.filters.network.http_connection_manager";
const TCP_PROXY: &str = "envoy.filters.network.tcp_proxy";

/// `model.ParseSubsetKey`: `outbound|9080|v1|reviews.default.svc.cluster.local` (or the
/// SNI form `outbound_.9080_.v1_.reviews…`) → (direction, port, subset, fqdn).
pub fn parse_cluster_name(name: &str) -> Option<(&str, u16, &str, &str)> {
    let parts: Vec<&str> = if name.contains('|') {
        name.splitn(4, '|').collect()
    } else if name.contains("_.") {
        name.splitn(4, '.')
            .map(|p| p.trim_end_matches('_'))
            .collect()
    } else {
        return None;
    };
    if parts.len() != 4 {
        return None;
    }
    let port = parts[1].parse().ok()?;
    Some((parts[0], port, parts[2], parts[3]))
}

/// The `istio.config` path in Envoy metadata.
pub fn istio_config(m: &Metadata) -> Option<String> {
    let istio = m.filter_metadata.get("istio")?;
    match istio.fields.get("config")?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

/// istioctl's `renderConfig`: `/apis/networking.istio.io/v1alpha3/namespaces/NS/KIND/NAME` →
/// `NAME.NS`; other paths are `<unknown>`.
pub fn render_config(path: &str) -> String {
    if path.starts_with("/apis/networking.istio.io/v1alpha3/namespaces/") {
        let pieces: Vec<&str> = path.split('/').collect();
        if pieces.len() != 8 {
            return String::new();
        }
        return format!("{}.{}", pieces[7], pieces[5]);
    }
    "<unknown>".into()
}

/// A listener's address and port.
pub fn listener_address(l: &Listener) -> (String, u32) {
    match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => (
            s.address.clone(),
            match &s.port_specifier {
                Some(
                    weft_xds::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                        p,
                    ),
                ) => *p,
                _ => 0,
            },
        ),
        Some(address::Address::Pipe(p)) => (p.path.clone(), 0),
        _ => (String::new(), 0),
    }
}

fn describe_alpn(protocols: &[String]) -> String {
    const NAMED: [(&str, &[&str]); 4] = [
        (
            "HTTP TLS",
            &[
                "http/1.0",
                "http/1.1",
                "h2c",
                "istio-http/1.0",
                "istio-http/1.1",
                "istio-h2",
            ],
        ),
        (
            "Istio HTTP Plain",
            &["istio", "istio-http/1.0", "istio-http/1.1", "istio-h2"],
        ),
        ("TCP TLS", &["istio-peer-exchange", "istio"]),
        ("HTTP", &["http/1.0", "http/1.1", "h2c"]),
    ];
    NAMED
        .iter()
        .find(|(_, set)| set.iter().copied().eq(protocols.iter().map(String::as_str)))
        .map(|(n, _)| n.to_string())
        .unwrap_or_else(|| protocols.join(","))
}

fn chain_match(c: &FilterChain) -> String {
    let Some(m) = &c.filter_chain_match else {
        return "ALL".into();
    };
    let mut d = Vec::new();
    if !m.server_names.is_empty() {
        d.push(format!("SNI: {}", m.server_names.join(",")));
    }
    if !m.transport_protocol.is_empty() {
        d.push(format!("Trans: {}", m.transport_protocol));
    }
    if !m.application_protocols.is_empty() {
        d.push(format!("App: {}", describe_alpn(&m.application_protocols)));
    }
    let port = m
        .destination_port
        .map(|p| format!(":{}", p.value))
        .unwrap_or_default();
    if !m.prefix_ranges.is_empty() {
        let ranges: Vec<String> = m
            .prefix_ranges
            .iter()
            .map(|r| {
                format!(
                    "{}/{}",
                    r.address_prefix,
                    r.prefix_len.map(|l| l.value).unwrap_or(0)
                )
            })
            .collect();
        d.push(format!("Addr: {}{port}", ranges.join(",")));
    } else if !port.is_empty() {
        d.push(format!("Addr: *{port}"));
    }
    if d.is_empty() {
        "ALL".into()
    } else {
        d.join("; ")
    }
}

fn cluster_label(c: &str) -> String {
    if c.contains("Cluster") {
        c.to_string()
    } else {
        format!("Cluster: {c}")
    }
}

fn match_all_cluster(rc: &RouteConfiguration) -> Option<String> {
    let [vh] = rc.virtual_hosts.as_slice() else {
        return None;
    };
    if vh.domains != ["*"] {
        return None;
    }
    let [r] = vh.routes.as_slice() else {
        return None;
    };
    match r.r#match.as_ref()?.path_specifier.as_ref()? {
        route_match::PathSpecifier::Prefix(p) if p == "/" => {}
        _ => return None,
    }
    let Some(route::Action::Route(a)) = &r.action else {
        return None;
    };
    match a.cluster_specifier.as_ref()? {
        route_action::ClusterSpecifier::Cluster(c) => Some(cluster_label(c)),
        _ => None,
    }
}

fn inline_route(rc: &RouteConfiguration) -> String {
    if let Some(c) = match_all_cluster(rc) {
        return c;
    }
    let vhosts: Vec<String> = rc
        .virtual_hosts
        .iter()
        .map(|vh| {
            let routes: Vec<String> = vh
                .routes
                .iter()
                .filter_map(|r| r.r#match.as_ref().map(route_match))
                .collect();
            if vh.domains == ["*"] {
                routes.join(", ")
            } else {
                format!("{} {}", vh.domains.join("/"), routes.join(", "))
            }
        })
        .collect();
    format!("Inline Route: {}", vhosts.join("; "))
}

fn typed<M: Message + Default>(f: &Filter) -> Option<M> {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => M::decode(any.value.as_slice()).ok(),
        _ => None,
    }
}

/// istioctl's `getFilterType`: what a chain's network filters lead to.
fn destination(filters: &[Filter]) -> String {
    for f in filters {
        if f.name == HCM {
            let Some(hcm) = typed::<HttpConnectionManager>(f) else {
                return "HTTP".into();
            };
            return match &hcm.route_specifier {
                Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)) => inline_route(rc),
                Some(http_connection_manager::RouteSpecifier::Rds(rds))
                    if !rds.route_config_name.is_empty() =>
                {
                    format!("Route: {}", rds.route_config_name)
                }
                _ => "HTTP".into(),
            };
        }
        if f.name == TCP_PROXY {
            let Some(t) = typed::<TcpProxy>(f) else {
                continue;
            };
            return match &t.cluster_specifier {
                Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => cluster_label(c),
                Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => w
                    .clusters
                    .iter()
                    .map(|c| format!("{}: {}", cluster_label(&c.name), c.weight))
                    .collect::<Vec<_>>()
                    .join(", "),
                None => "Non-HTTP/Non-TCP".into(),
            };
        }
    }
    "Non-HTTP/Non-TCP".into()
}

/// A listener's rows: (MATCH, DESTINATION) per filter chain, the default chain last.
pub fn listener_rows(l: &Listener) -> Vec<(String, String)> {
    l.filter_chains
        .iter()
        .chain(l.default_filter_chain.as_ref())
        .map(|c| (chain_match(c), destination(&c.filters)))
        .collect()
}

/// istioctl's `retrieveListenerType`: HTTP, TCP, HTTP+TCP or UNKNOWN, from the network
/// filters of every chain (a tcp_proxy to the BlackHoleCluster does not count as TCP).
pub fn listener_type(l: &Listener) -> &'static str {
    let filters = l
        .filter_chains
        .iter()
        .chain(l.default_filter_chain.as_ref())
        .flat_map(|c| &c.filters);
    let (mut http, mut tcp) = (false, false);
    for f in filters {
        if f.name == HCM {
            http = true;
        } else if f.name == TCP_PROXY {
            let blackhole = typed::<TcpProxy>(f).is_some_and(|t| {
                matches!(&t.cluster_specifier,
                    Some(tcp_proxy::ClusterSpecifier::Cluster(c)) if c == "BlackHoleCluster")
            });
            tcp |= !blackhole;
        }
    }
    match (http, tcp) {
        (true, true) => "HTTP+TCP",
        (true, false) => "HTTP",
        (false, true) => "TCP",
        (false, false) => "UNKNOWN",
    }
}

/// istioctl's `describeRouteDomains`: the names without ports, the `.svc.cluster.local` and
/// `.svc` expansions dropped, at most two then `+ N more...`.
pub fn route_domains(domains: &[String]) -> String {
    match domains {
        [] => return String::new(),
        [one] => return one.clone(),
        _ => {}
    }
    let no_port: Vec<&str> = domains
        .iter()
        .map(String::as_str)
        .filter(|d| {
            let colons = d.matches(':').count();
            colons == 0 || (colons > 2 && d.ends_with(']'))
        })
        .collect();
    let kept: Vec<&str> = no_port
        .iter()
        .copied()
        .filter(|d| {
            let shorter = [".svc.cluster.local", ".svc"]
                .iter()
                .filter_map(|s| d.strip_suffix(s))
                .any(|short| no_port.contains(&short));
            !shorter
        })
        .collect();
    if kept.len() > 2 {
        format!("{} + {} more...", kept[..2].join(", "), kept.len() - 2)
    } else {
        kept.join(", ")
    }
}

/// istioctl's `describeMatch`: `P*` for a prefix, the path, `regex R`.
pub fn route_match(m: &RouteMatch) -> String {
    match &m.path_specifier {
        Some(route_match::PathSpecifier::Prefix(p)) => format!("{p}*"),
        Some(route_match::PathSpecifier::Path(p)) => p.clone(),
        Some(route_match::PathSpecifier::SafeRegex(r)) => format!("regex {}", r.regex),
        _ => String::new(),
    }
}

/// Routes to PassthroughCluster are left out of istioctl's route table.
pub fn is_passthrough(r: &Route) -> bool {
    matches!(&r.action, Some(route::Action::Route(a))
        if matches!(&a.cluster_specifier, Some(route_action::ClusterSpecifier::Cluster(c)) if c == "PassthroughCluster"))
}
