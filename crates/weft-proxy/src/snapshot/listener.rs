//! Listeners and filter chains: chain selection by destination port, transport protocol and
//! ALPN (Envoy's FilterChainMatch order), downstream TLS, and the two network filters Weft
//! runs: the HTTP connection manager and the TCP proxy.

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::extensions::access_loggers::file::v3 as file_log;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3 as tcp;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::google::protobuf;
use prost::Message;

use super::route::{self, RouteTable};
use crate::error::ProxyError;
use crate::tls::{SanMatch, TlsFactory};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Default, Clone)]
pub struct ChainMatch {
    pub destination_port: Option<u16>,
    /// `tls` or `raw_buffer`; None matches both.
    pub transport: Option<String>,
    pub alpns: Vec<String>,
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
pub enum AccessLogFormat {
    Text(weft_telemetry::CompiledFormat),
    Json(weft_telemetry::CompiledJsonFormat),
}

#[derive(Debug)]
pub struct AccessLogConfig {
    pub path: String,
    pub format: AccessLogFormat,
}

#[derive(Debug)]
pub enum RouteRef {
    Rds(String),
    Inline(Arc<RouteTable>),
}

#[derive(Debug)]
pub struct Hcm {
    pub stat_prefix: String,
    pub routes: RouteRef,
    /// The HTTP filter chain, router last.
    pub filters: Vec<super::filter::HttpFilter>,
    pub access_log: Vec<Arc<AccessLogConfig>>,
}

#[derive(Debug)]
pub struct TcpProxy {
    pub stat_prefix: String,
    /// The first destination (the only one unless weighted).
    pub cluster: Arc<str>,
    /// Destinations with their weights (TCP traffic shifting).
    pub weighted: Vec<(Arc<str>, u32)>,
    pub access_log: Vec<Arc<AccessLogConfig>>,
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
    /// Envoy's filter chain selection: destination port (exact beats unset), then transport
    /// protocol (exact beats unset), then ALPN (intersecting beats unset).
    pub fn select(&self, port: u16, transport: &str, alpns: &[String]) -> Option<&Arc<Chain>> {
        let by_port: Vec<&Arc<Chain>> = {
            let exact: Vec<_> = self
                .chains
                .iter()
                .filter(|c| c.matcher.destination_port == Some(port))
                .collect();
            if exact.is_empty() {
                self.chains
                    .iter()
                    .filter(|c| c.matcher.destination_port.is_none())
                    .collect()
            } else {
                exact
            }
        };
        let by_transport: Vec<&Arc<Chain>> = {
            let exact: Vec<_> = by_port
                .iter()
                .copied()
                .filter(|c| c.matcher.transport.as_deref() == Some(transport))
                .collect();
            if exact.is_empty() {
                by_port
                    .into_iter()
                    .filter(|c| c.matcher.transport.is_none())
                    .collect()
            } else {
                exact
            }
        };
        by_transport
            .iter()
            .copied()
            .find(|c| {
                !c.matcher.alpns.is_empty() && c.matcher.alpns.iter().any(|a| alpns.contains(a))
            })
            .or_else(|| {
                by_transport
                    .iter()
                    .copied()
                    .find(|c| c.matcher.alpns.is_empty())
            })
    }
}

fn access_logs(
    logs: &[accesslog::AccessLog],
    what: &str,
) -> Result<Vec<Arc<AccessLogConfig>>, ProxyError> {
    let mut out = Vec::new();
    for l in logs {
        let Some(accesslog::access_log::ConfigType::TypedConfig(any)) = &l.config_type else {
            continue;
        };
        if !any.type_url.ends_with("file.v3.FileAccessLog") {
            tracing::debug!(logger = %l.name, "access logger type not supported; skipped");
            continue;
        }
        let f = file_log::FileAccessLog::decode(any.value.as_slice())
            .map_err(|e| ProxyError::Config(format!("{what}: access_log {}: {e}", l.name)))?;
        use core::substitution_format_string::Format;
        use file_log::file_access_log::AccessLogFormat as F;
        let compile = |s: &str| {
            weft_telemetry::CompiledFormat::compile(s)
                .map_err(|e| ProxyError::Config(format!("{what}: access_log format: {e}")))
        };
        let json = |s: &protobuf::Struct| -> Result<AccessLogFormat, ProxyError> {
            let pairs: Vec<(String, String)> = s
                .fields
                .iter()
                .filter_map(|(k, v)| match &v.kind {
                    Some(protobuf::value::Kind::StringValue(op)) => Some((k.clone(), op.clone())),
                    _ => None,
                })
                .collect();
            weft_telemetry::CompiledJsonFormat::from_pairs(
                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .map(AccessLogFormat::Json)
            .map_err(|e| ProxyError::Config(format!("{what}: access_log json_format: {e}")))
        };
        let format = match &f.access_log_format {
            Some(F::LogFormat(sfs)) => match &sfs.format {
                Some(Format::TextFormatSource(ds)) => match &ds.specifier {
                    Some(core::data_source::Specifier::InlineString(s)) => {
                        AccessLogFormat::Text(compile(s)?)
                    }
                    _ => AccessLogFormat::Text(compile(crate::DEFAULT_LOG_FORMAT)?),
                },
                #[allow(deprecated)]
                Some(Format::TextFormat(s)) => AccessLogFormat::Text(compile(s)?),
                Some(Format::JsonFormat(s)) => json(s)?,
                None => AccessLogFormat::Text(compile(crate::DEFAULT_LOG_FORMAT)?),
            },
            #[allow(deprecated)]
            Some(F::Format(s)) => AccessLogFormat::Text(compile(s)?),
            #[allow(deprecated)]
            Some(F::JsonFormat(s)) | Some(F::TypedJsonFormat(s)) => json(s)?,
            None => AccessLogFormat::Text(compile(crate::DEFAULT_LOG_FORMAT)?),
        };
        out.push(Arc::new(AccessLogConfig {
            path: f.path,
            format,
        }));
    }
    Ok(out)
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

fn network_filter(f: &listener::Filter, what: &str) -> Result<Option<NetworkFilter>, ProxyError> {
    let Some(listener::filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        return Ok(None);
    };
    if any
        .type_url
        .ends_with("http_connection_manager.v3.HttpConnectionManager")
    {
        let h = hcm::HttpConnectionManager::decode(any.value.as_slice())
            .map_err(|e| ProxyError::Config(format!("{what}: {}: {e}", f.name)))?;
        let routes = match h.route_specifier {
            Some(hcm::http_connection_manager::RouteSpecifier::Rds(rds)) => {
                RouteRef::Rds(rds.route_config_name)
            }
            Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(rc)) => {
                RouteRef::Inline(Arc::new(route::compile(&rc)?))
            }
            _ => {
                return Err(ProxyError::Config(format!(
                    "{what}: {}: route_specifier must be rds or route_config",
                    f.name
                )));
            }
        };
        return Ok(Some(NetworkFilter::Http(Arc::new(Hcm {
            filters: super::filter::chain(&h.http_filters, what)?,
            access_log: access_logs(&h.access_log, what)?,
            stat_prefix: h.stat_prefix,
            routes,
        }))));
    }
    if any.type_url.ends_with("tcp_proxy.v3.TcpProxy") {
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
        return Ok(Some(NetworkFilter::Tcp(Arc::new(TcpProxy {
            access_log: access_logs(&t.access_log, what)?,
            stat_prefix: t.stat_prefix,
            cluster: weighted[0].0.clone(),
            weighted,
        }))));
    }
    tracing::debug!(filter = %f.name, "network filter not supported; skipped");
    Ok(None)
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
        let matcher = ChainMatch {
            destination_port: m.destination_port.map(|p| p.value as u16),
            transport: Some(m.transport_protocol).filter(|t| !t.is_empty()),
            alpns: m.application_protocols,
        };
        inspect_tls |= matcher.transport.is_some();
        inspect_http |= matcher.transport.as_deref() != Some("tls") && !matcher.alpns.is_empty();
        let tls = match &fc.transport_socket {
            Some(ts) => downstream_tls(ts, factory, &cwhat)?,
            None => None,
        };
        let mut filter = None;
        for f in &fc.filters {
            if let Some(nf) = network_filter(f, &cwhat)? {
                filter = Some(nf);
            }
        }
        let Some(filter) = filter else {
            return Err(ProxyError::Config(format!(
                "{cwhat}: no http_connection_manager or tcp_proxy filter"
            )));
        };
        chains.push(Arc::new(Chain {
            name: fc.name.clone(),
            matcher,
            tls,
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
    use super::*;

    fn chain(name: &str, port: Option<u16>, transport: Option<&str>, alpns: &[&str]) -> Arc<Chain> {
        Arc::new(Chain {
            name: name.into(),
            matcher: ChainMatch {
                destination_port: port,
                transport: transport.map(Into::into),
                alpns: alpns.iter().map(|a| a.to_string()).collect(),
            },
            tls: None,
            filter: NetworkFilter::Tcp(Arc::new(TcpProxy {
                stat_prefix: String::new(),
                cluster: "c".into(),
                weighted: vec![("c".into(), 1)],
                access_log: Vec::new(),
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
        l.select(port, transport, &alpns).map(|c| c.name.clone())
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
