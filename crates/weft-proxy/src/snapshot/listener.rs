//! Listeners and filter chains: chain selection by destination port, destination IP prefix,
//! server name (SNI), transport protocol and ALPN (Envoy's FilterChainMatch order), downstream
//! TLS, and the two network filters Weft runs: the HTTP connection manager and the TCP proxy.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as xhcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use prost::Message;

use super::accesslog::{AccessLogConfig, access_logs};
use super::rbac::{NETWORK_RBAC_TYPE, RbacFilter};
use super::route::RouteTable;
use crate::error::ProxyError;

mod hcm;
use crate::tls::{SanMatch, TlsFactory};
pub use hcm::{EscapedSlashes, Hcm, PathNormalization, Xfcc, XfccMode};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Default, Clone)]
pub struct ChainMatch {
    pub destination_port: Option<u16>,
    /// Destination IP prefixes (`prefix_ranges`); empty matches any address.
    pub prefix_ranges: Vec<(IpAddr, u8)>,
    /// Server names (SNI, lowercase), exact or `*.suffix`; empty matches any connection.
    pub server_names: Vec<String>,
    /// `tls` or `raw_buffer`; None matches both.
    pub transport: Option<String>,
    pub alpns: Vec<String>,
}

/// Whether `ip` lies in `prefix/len`.
fn in_prefix(ip: IpAddr, prefix: IpAddr, len: u8) -> bool {
    match (ip, prefix) {
        (IpAddr::V4(a), IpAddr::V4(p)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(p) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(p)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(p) & mask
        }
        _ => false,
    }
}

impl ChainMatch {
    /// How specifically the chain matches a destination port: exact 1, unset 0.
    fn port_score(&self, port: u16) -> Option<u32> {
        match self.destination_port {
            None => Some(0),
            Some(p) => (p == port).then_some(1),
        }
    }

    /// The longest of the chain's prefixes holding `ip` (no prefixes: length 0, as Envoy
    /// treats them as `0.0.0.0/0`).
    fn ip_score(&self, ip: IpAddr) -> Option<u32> {
        if self.prefix_ranges.is_empty() {
            return Some(0);
        }
        self.prefix_ranges
            .iter()
            .filter(|(p, len)| in_prefix(ip, *p, *len))
            .map(|(_, len)| u32::from(*len))
            .max()
    }

    /// Exact server name first, then the longest `*.` wildcard covering it, then chains without
    /// server names; a connection without SNI only matches the last.
    fn sni_score(&self, sni: Option<&str>) -> Option<u32> {
        if self.server_names.is_empty() {
            return Some(0);
        }
        let sni = sni?.to_ascii_lowercase();
        self.server_names
            .iter()
            .filter_map(|name| {
                if *name == sni {
                    return Some(u32::MAX);
                }
                let suffix = name.strip_prefix('*')?;
                (suffix.starts_with('.') && sni.len() > suffix.len() && sni.ends_with(suffix))
                    .then_some(1 + suffix.len() as u32)
            })
            .max()
    }

    fn transport_score(&self, transport: &str) -> Option<u32> {
        match &self.transport {
            None => Some(0),
            Some(t) => (t == transport).then_some(1),
        }
    }

    fn alpn_score(&self, alpns: &[String]) -> Option<u32> {
        if self.alpns.is_empty() {
            return Some(0);
        }
        self.alpns.iter().any(|a| alpns.contains(a)).then_some(1)
    }
}

/// The chains that match most specifically by `score` (None: no match).
fn narrow(
    chains: Vec<&Arc<Chain>>,
    score: impl Fn(&ChainMatch) -> Option<u32>,
) -> Vec<&Arc<Chain>> {
    let scored: Vec<(u32, &Arc<Chain>)> = chains
        .into_iter()
        .filter_map(|c| Some((score(&c.matcher)?, c)))
        .collect();
    let best = scored.iter().map(|(s, _)| *s).max();
    scored
        .into_iter()
        .filter(|(s, _)| Some(*s) == best)
        .map(|(_, c)| c)
        .collect()
}

/// Downstream (server-side) TLS.
#[derive(Debug)]
pub struct DownstreamTls {
    /// Config offering the chain's ALPN list.
    pub with_alpn: Arc<rustls::ServerConfig>,
    /// The same without ALPN, for clients whose ALPN list does not intersect (Envoy then just
    /// negotiates none; rustls would fail the handshake).
    pub without_alpn: Arc<rustls::ServerConfig>,
    pub alpns: Vec<Vec<u8>>,
}

#[derive(Debug)]
pub enum RouteRef {
    Rds(String),
    Inline(Arc<RouteTable>),
}

#[derive(Debug)]
pub struct TcpProxy {
    pub stat_prefix: String,
    /// The first destination (the only one unless weighted).
    pub cluster: Arc<str>,
    /// Destinations with their weights (TCP traffic shifting).
    pub weighted: Vec<(Arc<str>, u32)>,
    pub access_log: Vec<Arc<AccessLogConfig>>,
    /// The Telemetry metric overrides of the chain's `istio.stats` filter.
    pub stats: Option<Arc<weft_telemetry::overrides::MetricOverrides>>,
}

impl TcpProxy {
    /// The cluster for a new connection: a draw over the weights.
    pub fn pick(&self) -> &Arc<str> {
        if self.weighted.len() > 1 {
            let total: u32 = self.weighted.iter().map(|(_, w)| *w).sum();
            let mut n = rand::random::<u32>() % total.max(1);
            for (c, w) in &self.weighted {
                if n < *w {
                    return c;
                }
                n -= w;
            }
        }
        &self.cluster
    }
}

#[derive(Debug, Clone)]
pub enum NetworkFilter {
    Http(Arc<Hcm>),
    Tcp(Arc<TcpProxy>),
}

#[derive(Debug)]
pub struct Chain {
    pub name: String,
    pub matcher: ChainMatch,
    pub tls: Option<Arc<DownstreamTls>>,
    /// Network RBAC filters, in chain order, evaluated once per connection before `filter`.
    pub rbac: Vec<Arc<RbacFilter>>,
    /// The network ext_authz filter (CUSTOM policies on TCP), asked after the RBAC filters.
    pub ext_authz: Option<Arc<super::extauthz::ExtAuthz>>,
    pub filter: NetworkFilter,
}

#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub addr: SocketAddr,
    pub bind: bool,
    pub direction: Direction,
    pub chains: Vec<Arc<Chain>>,
    /// Whether chain selection needs the TLS ClientHello / HTTP sniffing.
    pub inspect_tls: bool,
    pub inspect_http: bool,
}

impl Listener {
    /// Envoy's filter chain selection, one criterion after the other, each keeping only the
    /// most specific chains that match (no going back to a less specific one): destination
    /// port (exact beats unset), destination IP (longest prefix beats none), server name (exact,
    /// then the longest wildcard, then unset), transport protocol (exact beats unset), ALPN
    /// (intersecting beats unset); the first of what is left.
    pub fn select(
        &self,
        dst: SocketAddr,
        sni: Option<&str>,
        transport: &str,
        alpns: &[String],
    ) -> Option<&Arc<Chain>> {
        let chains: Vec<&Arc<Chain>> = self.chains.iter().collect();
        let chains = narrow(chains, |m| m.port_score(dst.port()));
        let chains = narrow(chains, |m| m.ip_score(dst.ip()));
        let chains = narrow(chains, |m| m.sni_score(sni));
        let chains = narrow(chains, |m| m.transport_score(transport));
        let chains = narrow(chains, |m| m.alpn_score(alpns));
        chains.into_iter().next()
    }
}

fn downstream_tls(
    ts: &core::TransportSocket,
    factory: &TlsFactory,
    what: &str,
) -> Result<Option<Arc<DownstreamTls>>, ProxyError> {
    let Some(core::transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        return Ok(None);
    };
    if any.type_url.ends_with("raw_buffer.v3.RawBuffer") {
        return Ok(None);
    }
    let ctx = tls::DownstreamTlsContext::decode(any.value.as_slice())
        .map_err(|e| ProxyError::Config(format!("{what}: transport_socket: {e}")))?;
    let common = ctx.common_tls_context.unwrap_or_default();
    let min13 = common.tls_params.as_ref().is_some_and(|p| {
        p.tls_minimum_protocol_version == tls::tls_parameters::TlsProtocol::TlSv13 as i32
    });
    let trust_domains: Vec<String> = crate::tls::san_matchers(&common)
        .into_iter()
        .filter_map(|m| match m {
            SanMatch::Prefix(p) => p
                .strip_prefix("spiffe://")
                .map(|td| td.trim_end_matches('/').to_string()),
            SanMatch::Exact(_) => None,
        })
        .collect();
    let alpns: Vec<Vec<u8>> = common
        .alpn_protocols
        .iter()
        .map(|a| a.as_bytes().to_vec())
        .collect();
    let with_alpn = factory
        .server(min13, &alpns, &trust_domains)
        .map_err(|e| ProxyError::Config(format!("{what}: {e}")))?;
    let without_alpn = factory
        .server(min13, &[], &trust_domains)
        .map_err(|e| ProxyError::Config(format!("{what}: {e}")))?;
    Ok(Some(Arc::new(DownstreamTls {
        with_alpn,
        without_alpn,
        alpns,
    })))
}

/// What a network filter of a chain is to Weft.
enum Decoded {
    Terminal(NetworkFilter),
    Rbac(RbacFilter),
    ExtAuthz(super::extauthz::ExtAuthz),
    Stats(weft_telemetry::overrides::MetricOverrides),
    Skip,
}

/// Decodes a network filter by its config type. Istio's telemetry filters are skipped; any
/// filter Weft does not run refuses the listener (fail closed).
fn network_filter(
    f: &listener::Filter,
    origin: (Arc<str>, usize, Arc<str>),
    what: &str,
) -> Result<Decoded, ProxyError> {
    let fwhat = format!("{what}: filter {}", f.name);
    let any = match &f.config_type {
        Some(listener::filter::ConfigType::TypedConfig(any)) => Some(any),
        Some(listener::filter::ConfigType::ConfigDiscovery(_)) => {
            return Err(ProxyError::Config(format!(
                "{fwhat}: config_discovery (ECDS) is not supported; refused"
            )));
        }
        None => None,
    };
    if let Some(json) = super::filter::network_stats_overrides(any) {
        return weft_telemetry::overrides::MetricOverrides::from_plugin_json(&json)
            .map(Decoded::Stats)
            .map_err(|e| ProxyError::Config(format!("{fwhat}: {e}")));
    }
    if super::filter::harmless_network(&f.name, any) {
        return Ok(Decoded::Skip);
    }
    let Some(any) = any else {
        return Err(ProxyError::Config(format!(
            "{fwhat}: a network filter without typed_config is not supported; refused (fail closed)"
        )));
    };
    let kind = super::filter::type_name(&any.type_url);
    if kind == "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" {
        let h = xhcm::HttpConnectionManager::decode(any.value.as_slice())
            .map_err(|e| ProxyError::Config(format!("{fwhat}: {e}")))?;
        return Ok(Decoded::Terminal(NetworkFilter::Http(Arc::new(
            hcm::compile(h, origin, what)?,
        ))));
    }
    if kind == NETWORK_RBAC_TYPE {
        return Ok(Decoded::Rbac(RbacFilter::network(any, &fwhat)?));
    }
    if kind == super::extauthz::NETWORK_EXT_AUTHZ_TYPE {
        return Ok(Decoded::ExtAuthz(super::extauthz::compile_network(
            any, &fwhat,
        )?));
    }
    if kind == "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy" {
        let t = tcp::TcpProxy::decode(any.value.as_slice())
            .map_err(|e| ProxyError::Config(format!("{what}: {}: {e}", f.name)))?;
        let weighted: Vec<(Arc<str>, u32)> = match t.cluster_specifier {
            Some(tcp::tcp_proxy::ClusterSpecifier::Cluster(c)) => vec![(Arc::from(c), 1)],
            Some(tcp::tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => w
                .clusters
                .iter()
                .filter(|c| c.weight > 0)
                .map(|c| (Arc::from(c.name.as_str()), c.weight))
                .collect(),
            None => Vec::new(),
        };
        if weighted.is_empty() {
            return Err(ProxyError::Config(format!(
                "{what}: {}: tcp_proxy needs a cluster or weighted clusters with weight",
                f.name
            )));
        }
        return Ok(Decoded::Terminal(NetworkFilter::Tcp(Arc::new(TcpProxy {
            access_log: access_logs(&t.access_log, what)?,
            stat_prefix: t.stat_prefix,
            stats: None,
            cluster: weighted[0].0.clone(),
            weighted,
        }))));
    }
    Err(ProxyError::Config(format!(
        "{fwhat}: unknown network filter type {kind:?}; refused (fail closed)"
    )))
}

pub fn compile(l: &listener::Listener, factory: &TlsFactory) -> Result<Listener, ProxyError> {
    let what = format!("listener {}", l.name);
    let addr = if l.api_listener.is_some() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        super::socket_addr(l.address.as_ref(), &what)?
    };
    let mut chains = Vec::new();
    let mut inspect_http = false;
    let mut inspect_tls = false;
    for (i, fc) in l
        .filter_chains
        .iter()
        .chain(l.default_filter_chain.iter())
        .enumerate()
    {
        let cwhat = format!("{what}: filter_chains[{i}] {}", fc.name);
        let m = fc.filter_chain_match.clone().unwrap_or_default();
        let mut prefix_ranges = Vec::with_capacity(m.prefix_ranges.len());
        for r in &m.prefix_ranges {
            let ip: IpAddr = r.address_prefix.parse().map_err(|_| {
                ProxyError::Config(format!(
                    "{cwhat}: prefix_ranges: {:?} is not an IP address",
                    r.address_prefix
                ))
            })?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = r.prefix_len.as_ref().map_or(0, |l| l.value);
            if len > max {
                return Err(ProxyError::Config(format!(
                    "{cwhat}: prefix_ranges: {}/{len} is longer than the address",
                    r.address_prefix
                )));
            }
            prefix_ranges.push((ip, len as u8));
        }
        let matcher = ChainMatch {
            destination_port: m.destination_port.map(|p| p.value as u16),
            prefix_ranges,
            server_names: m
                .server_names
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            transport: Some(m.transport_protocol).filter(|t| !t.is_empty()),
            alpns: m.application_protocols,
        };
        // The ClientHello is read when a chain matches on TLS or on the server name.
        inspect_tls |= matcher.transport.is_some() || !matcher.server_names.is_empty();
        inspect_http |= matcher.transport.as_deref() != Some("tls") && !matcher.alpns.is_empty();
        let tls = match &fc.transport_socket {
            Some(ts) => downstream_tls(ts, factory, &cwhat)?,
            None => None,
        };
        let mut filter = None;
        let mut rbac = Vec::new();
        let mut ext_authz = None;
        let mut stats = None;
        for f in &fc.filters {
            let origin = (Arc::from(l.name.as_str()), i, Arc::from(fc.name.as_str()));
            match network_filter(f, origin, &cwhat)? {
                Decoded::Terminal(nf) => filter = Some(nf),
                Decoded::Rbac(r) => rbac.push(Arc::new(r)),
                Decoded::ExtAuthz(_) if ext_authz.is_some() => {
                    return Err(ProxyError::Config(format!(
                        "{cwhat}: more than one network ext_authz filter; refused"
                    )));
                }
                Decoded::ExtAuthz(e) => ext_authz = Some(Arc::new(e)),
                Decoded::Stats(s) => stats = Some(Arc::new(s)),
                Decoded::Skip => {}
            }
        }
        let Some(mut filter) = filter else {
            return Err(ProxyError::Config(format!(
                "{cwhat}: no http_connection_manager or tcp_proxy filter"
            )));
        };
        if let (NetworkFilter::Tcp(t), Some(s)) = (&mut filter, stats)
            && let Some(t) = Arc::get_mut(t)
        {
            t.stats = Some(s);
        }
        chains.push(Arc::new(Chain {
            name: fc.name.clone(),
            matcher,
            tls,
            rbac,
            ext_authz,
            filter,
        }));
    }
    Ok(Listener {
        name: l.name.clone(),
        addr,
        bind: l.bind_to_port.as_ref().is_none_or(|b| b.value) && l.api_listener.is_none(),
        direction: if l.traffic_direction == core::TrafficDirection::Inbound as i32 {
            Direction::Inbound
        } else {
            Direction::Outbound
        },
        chains,
        inspect_tls,
        inspect_http,
    })
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::google::protobuf;

    use super::*;

    fn chain(name: &str, port: Option<u16>, transport: Option<&str>, alpns: &[&str]) -> Arc<Chain> {
        chain_with(
            name,
            ChainMatch {
                destination_port: port,
                transport: transport.map(Into::into),
                alpns: alpns.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            },
        )
    }

    fn chain_with(name: &str, matcher: ChainMatch) -> Arc<Chain> {
        Arc::new(Chain {
            name: name.into(),
            matcher,
            tls: None,
            rbac: Vec::new(),
            ext_authz: None,
            filter: NetworkFilter::Tcp(Arc::new(TcpProxy {
                stat_prefix: String::new(),
                cluster: "c".into(),
                weighted: vec![("c".into(), 1)],
                access_log: Vec::new(),
                stats: None,
            })),
        })
    }

    fn inbound() -> Listener {
        Listener {
            name: "virtualInbound".into(),
            addr: SocketAddr::from(([0, 0, 0, 0], 15006)),
            bind: true,
            direction: Direction::Inbound,
            chains: vec![
                chain(
                    "8080-mtls-http",
                    Some(8080),
                    Some("tls"),
                    &["istio-http/1.1", "istio-h2"],
                ),
                chain(
                    "8080-plain-http",
                    Some(8080),
                    Some("raw_buffer"),
                    &["http/1.1", "h2c"],
                ),
                chain(
                    "8080-mtls-tcp",
                    Some(8080),
                    Some("tls"),
                    &["istio-peer-exchange", "istio"],
                ),
                chain("8080-plain-tcp", Some(8080), Some("raw_buffer"), &[]),
                chain("8080-passthrough", Some(8080), Some("tls"), &[]),
                chain("any-plain", None, Some("raw_buffer"), &[]),
            ],
            inspect_tls: true,
            inspect_http: true,
        }
    }

    fn select(l: &Listener, port: u16, transport: &str, alpns: &[&str]) -> Option<String> {
        let alpns: Vec<String> = alpns.iter().map(|a| a.to_string()).collect();
        let dst = SocketAddr::from(([10, 77, 0, 11], port));
        l.select(dst, None, transport, &alpns)
            .map(|c| c.name.clone())
    }

    fn outbound(chains: Vec<Arc<Chain>>) -> Listener {
        Listener {
            name: "10.78.0.20_9443".into(),
            addr: SocketAddr::from(([10, 78, 0, 20], 9443)),
            bind: false,
            direction: Direction::Outbound,
            chains,
            inspect_tls: true,
            inspect_http: false,
        }
    }

    fn matching(prefixes: &[(&str, u8)], names: &[&str]) -> ChainMatch {
        ChainMatch {
            prefix_ranges: prefixes
                .iter()
                .map(|(ip, len)| (ip.parse().unwrap(), *len))
                .collect(),
            server_names: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    fn pick(l: &Listener, ip: &str, sni: Option<&str>, transport: &str) -> Option<String> {
        let dst = SocketAddr::new(ip.parse().unwrap(), 9443);
        l.select(dst, sni, transport, &[]).map(|c| c.name.clone())
    }

    #[test]
    fn server_names_pick_exact_then_longest_wildcard_then_none() {
        let l = outbound(vec![
            chain_with("wide", matching(&[], &["*.com"])),
            chain_with("wild", matching(&[], &["*.example.com"])),
            chain_with(
                "two",
                matching(&[], &["two.example.com", "deux.example.com"]),
            ),
            chain_with("any", matching(&[], &[])),
        ]);
        assert_eq!(
            pick(&l, "10.78.0.20", Some("two.example.com"), "tls").as_deref(),
            Some("two")
        );
        assert_eq!(
            pick(&l, "10.78.0.20", Some("DEUX.example.com"), "tls").as_deref(),
            Some("two")
        );
        assert_eq!(
            pick(&l, "10.78.0.20", Some("a.b.example.com"), "tls").as_deref(),
            Some("wild")
        );
        assert_eq!(
            pick(&l, "10.78.0.20", Some("example.com"), "tls").as_deref(),
            Some("wide")
        );
        assert_eq!(
            pick(&l, "10.78.0.20", Some("example.org"), "tls").as_deref(),
            Some("any")
        );
        // No SNI (plaintext, or TLS without it) only matches chains without server names.
        assert_eq!(
            pick(&l, "10.78.0.20", None, "raw_buffer").as_deref(),
            Some("any")
        );
        // Without a catch-all, an unknown name matches nothing (the connection is closed).
        let l = outbound(vec![chain_with("two", matching(&[], &["two.example.com"]))]);
        assert_eq!(pick(&l, "10.78.0.20", Some("one.example.com"), "tls"), None);
        assert_eq!(pick(&l, "10.78.0.20", None, "tls"), None);
    }

    #[test]
    fn destination_ip_takes_the_longest_prefix_before_the_server_name() {
        let l = outbound(vec![
            chain_with("wide", matching(&[("10.0.0.0", 8)], &[])),
            chain_with(
                "narrow",
                matching(&[("10.78.0.0", 16), ("192.168.1.1", 32)], &[]),
            ),
            chain_with("narrow-sni", matching(&[("10.78.0.0", 16)], &["a.example"])),
            chain_with("v6", matching(&[("2001:db8::", 32)], &[])),
            chain_with("sni-anywhere", matching(&[], &["b.example"])),
            chain_with("any", matching(&[], &[])),
        ]);
        assert_eq!(
            pick(&l, "10.78.0.20", Some("a.example"), "tls").as_deref(),
            Some("narrow-sni")
        );
        assert_eq!(
            pick(&l, "10.78.0.20", None, "raw_buffer").as_deref(),
            Some("narrow")
        );
        // The IP decides first: a name only another prefix level knows does not count.
        assert_eq!(
            pick(&l, "10.78.0.20", Some("b.example"), "tls").as_deref(),
            Some("narrow")
        );
        assert_eq!(
            pick(&l, "192.168.1.1", None, "raw_buffer").as_deref(),
            Some("narrow")
        );
        assert_eq!(
            pick(&l, "10.1.2.3", None, "raw_buffer").as_deref(),
            Some("wide")
        );
        assert_eq!(
            pick(&l, "2001:db8::1", None, "raw_buffer").as_deref(),
            Some("v6")
        );
        assert_eq!(
            pick(&l, "172.16.0.1", Some("b.example"), "tls").as_deref(),
            Some("sni-anywhere")
        );
        assert_eq!(
            pick(&l, "172.16.0.1", None, "raw_buffer").as_deref(),
            Some("any")
        );
        assert!(in_prefix(
            "1.2.3.4".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
            0
        ));
        assert!(!in_prefix(
            "10.0.0.1".parse().unwrap(),
            "::".parse().unwrap(),
            0
        ));
    }

    #[test]
    fn prefix_ranges_and_server_names_compile_from_xds() {
        let tcp = tcp::TcpProxy {
            stat_prefix: "s".into(),
            cluster_specifier: Some(tcp::tcp_proxy::ClusterSpecifier::Cluster("c".into())),
            ..Default::default()
        };
        let chain = |prefix: &str, len: u32| listener::FilterChain {
            filter_chain_match: Some(listener::FilterChainMatch {
                prefix_ranges: vec![core::CidrRange {
                    address_prefix: prefix.into(),
                    prefix_len: Some(protobuf::UInt32Value { value: len }),
                }],
                server_names: vec!["Two.Example.com".into()],
                ..Default::default()
            }),
            filters: vec![listener::Filter {
                name: "envoy.filters.network.tcp_proxy".into(),
                config_type: Some(listener::filter::ConfigType::TypedConfig(protobuf::Any {
                    type_url:
                        "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
                            .into(),
                    value: tcp.encode_to_vec(),
                })),
            }],
            ..Default::default()
        };
        let l = |c: listener::FilterChain| listener::Listener {
            name: "10.78.0.20_9443".into(),
            address: Some(core::Address {
                address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                    address: "10.78.0.20".into(),
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(9443)),
                    ..Default::default()
                })),
            }),
            filter_chains: vec![c],
            ..Default::default()
        };
        let live = Arc::new(weft_identity::LiveIdentity::new());
        let factory = TlsFactory::new(live, "cluster.local".into());
        let compiled = compile(&l(chain("10.78.0.0", 16)), &factory).unwrap();
        assert!(compiled.inspect_tls, "SNI matching reads the ClientHello");
        assert!(!compiled.inspect_http);
        let m = &compiled.chains[0].matcher;
        assert_eq!(m.prefix_ranges, vec![("10.78.0.0".parse().unwrap(), 16)]);
        assert_eq!(m.server_names, vec!["two.example.com".to_string()]);
        let e = compile(&l(chain("10.78.0.0", 33)), &factory)
            .unwrap_err()
            .to_string();
        assert!(e.contains("prefix_ranges"), "{e}");
        let e = compile(&l(chain("ten", 8)), &factory)
            .unwrap_err()
            .to_string();
        assert!(e.contains("prefix_ranges"), "{e}");
    }

    #[test]
    fn chain_selection_follows_envoy_order() {
        let l = inbound();
        assert_eq!(
            select(&l, 8080, "tls", &["istio-http/1.1", "istio", "http/1.1"]).as_deref(),
            Some("8080-mtls-http")
        );
        assert_eq!(
            select(&l, 8080, "tls", &["istio-peer-exchange", "istio"]).as_deref(),
            Some("8080-mtls-tcp")
        );
        assert_eq!(
            select(&l, 8080, "tls", &["h2"]).as_deref(),
            Some("8080-passthrough")
        );
        assert_eq!(
            select(&l, 8080, "raw_buffer", &["http/1.1"]).as_deref(),
            Some("8080-plain-http")
        );
        assert_eq!(
            select(&l, 8080, "raw_buffer", &[]).as_deref(),
            Some("8080-plain-tcp")
        );
        // Another port falls to the port-less chains; TLS there matches nothing.
        assert_eq!(
            select(&l, 9999, "raw_buffer", &[]).as_deref(),
            Some("any-plain")
        );
        assert_eq!(select(&l, 9999, "tls", &["istio"]), None);
    }

    #[test]
    fn a_listener_without_filters_is_refused_with_its_name() {
        let l = listener::Listener {
            name: "broken".into(),
            address: Some(core::Address {
                address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                    address: "0.0.0.0".into(),
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(80)),
                    ..Default::default()
                })),
            }),
            filter_chains: vec![listener::FilterChain {
                name: "empty".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let live = Arc::new(weft_identity::LiveIdentity::new());
        let factory = TlsFactory::new(live, "cluster.local".into());
        let e = compile(&l, &factory).unwrap_err().to_string();
        assert!(e.contains("listener broken") && e.contains("empty"), "{e}");
    }
}
