//! Clusters: discovery type, endpoints (from EDS or the inline load assignment), upstream TLS
//! chosen per endpoint by `transport_socket_matches` (Istio's auto mTLS), HTTP/2 options and
//! Istio's service metadata for telemetry.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster as XCluster, cluster};
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as http_opts;
use envoy_types::pb::google::protobuf;
use prost::Message;

use super::balance::{HostState, Hosts, Lb, Outlier, SlowStart};
use crate::error::ProxyError;
use crate::tls::TlsFactory;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterKind {
    /// Endpoints from EDS or the inline load assignment.
    Endpoints,
    /// Connect to the downstream connection's original destination.
    OriginalDst,
}

/// An upstream TLS context with its client configs (one per ALPN form).
#[derive(Debug)]
pub struct UpstreamTls {
    pub sni: String,
    pub sans: Vec<String>,
    /// The cluster's own ALPN list (TCP: istio-peer-exchange, istio).
    pub base: Arc<rustls::ClientConfig>,
    /// Istio's HCM ALPN override for HTTP/1.1 and HTTP/2 requests.
    pub http11: Arc<rustls::ClientConfig>,
    pub h2: Arc<rustls::ClientConfig>,
    /// True when this is Istio mTLS (the peer is a sidecar: send peer metadata).
    pub istio: bool,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
    pub tls: Option<Arc<UpstreamTls>>,
    /// Requests in flight and outlier state (kept across updates by address).
    pub host: Arc<HostState>,
}

/// Envoy's circuit-breaker thresholds (default priority).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: u32,
    pub max_pending: u32,
    pub max_requests: u32,
    pub max_retries: u32,
    /// Requests per upstream connection; 0 is unlimited.
    pub max_requests_per_connection: u32,
}

impl Default for Limits {
    /// Envoy's defaults when a cluster sets no thresholds.
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_pending: 1024,
            max_requests: 1024,
            max_retries: 3,
            max_requests_per_connection: 0,
        }
    }
}

/// Counters of one of Envoy's cluster stats.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub upstream_cx_total: AtomicU64,
    pub upstream_cx_overflow: AtomicU64,
    pub upstream_rq_total: AtomicU64,
    pub upstream_rq_pending_overflow: AtomicU64,
    pub upstream_rq_pending_total: AtomicU64,
    pub upstream_rq_retry: AtomicU64,
    pub upstream_rq_retry_overflow: AtomicU64,
    pub upstream_rq_timeout: AtomicU64,
    pub outlier_detection_ejections_total: AtomicU64,
}

/// What a cluster tracks across config updates: circuit-breaker gauges and stats.
#[derive(Debug, Default)]
pub struct ClusterState {
    pub connections: AtomicU32,
    pub pending: AtomicU32,
    pub active: AtomicU32,
    pub retries: AtomicU32,
    /// Woken when a connection closes or goes back to the pool.
    pub freed: tokio::sync::Notify,
    pub stats: ClusterStats,
    pub hosts: Hosts,
}

impl ClusterState {
    /// Takes one unit of `gauge` if it is below `max`.
    pub fn try_take(gauge: &AtomicU32, max: u32) -> bool {
        gauge
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v < max).then_some(v + 1)
            })
            .is_ok()
    }
}

/// Which HTTP protocol a cluster speaks upstream (`envoy.extensions.upstreams.http.v3.
/// HttpProtocolOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// `explicit_http_config.http_protocol_options`, and Envoy's default without options.
    Http11,
    /// `explicit_http_config.http2_protocol_options`.
    Http2,
    /// `use_downstream_protocol_config`: the protocol the client spoke.
    Downstream,
}

impl UpstreamProtocol {
    /// Whether a request that arrived as `version` goes upstream over HTTP/2.
    pub fn h2_for(self, version: http::Version) -> bool {
        match self {
            UpstreamProtocol::Http11 => false,
            UpstreamProtocol::Http2 => true,
            UpstreamProtocol::Downstream => version == http::Version::HTTP_2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http11 => "HTTP/1.1",
            UpstreamProtocol::Http2 => "HTTP/2",
            UpstreamProtocol::Downstream => "downstream",
        }
    }
}

/// 1 h, Envoy's default upstream idle timeout.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub struct Cluster {
    pub name: Arc<str>,
    pub kind: ClusterKind,
    pub connect_timeout: Duration,
    pub bind: Option<IpAddr>,
    pub endpoints: Vec<Endpoint>,
    /// TLS for original-destination clusters (no per-endpoint matches).
    pub default_tls: Option<Arc<UpstreamTls>>,
    /// The HTTP protocol spoken upstream.
    pub protocol: UpstreamProtocol,
    /// Upstream HTTP connections idle this long are closed (`common_http_protocol_options.
    /// idle_timeout`, Envoy's default 1 h; zero disables it: None).
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive on upstream connections (`upstream_connection_options.tcp_keepalive`).
    pub keepalive: Option<crate::socket::Keepalive>,
    /// The destination service labels of Istio's cluster metadata.
    pub service: Option<Arc<weft_telemetry::ServiceInfo>>,
    pub rr: Arc<AtomicUsize>,
    pub limits: Limits,
    pub lb: Lb,
    /// Slow start of new hosts (round robin and least request).
    pub slow_start: Option<SlowStart>,
    pub outlier: Option<Outlier>,
    /// The endpoints' host states, in endpoint order (for outlier accounting).
    pub hosts: Vec<Arc<HostState>>,
    /// Circuit-breaker gauges and stats, kept across updates of the cluster.
    pub state: Arc<ClusterState>,
    /// Hash of the cluster's config: connection pools are per generation.
    pub generation: u64,
    /// Envoy's `auto_sni`: TLS origination sends the request's host (port stripped) as the SNI.
    pub auto_sni: bool,
    /// Istio's passthrough or blackhole cluster name, when this is one (telemetry labels).
    pub fallthrough: Option<&'static str>,
}

/// Istio's clusters for traffic that leaves the registry: their names are telemetry's
/// `destination_service_name` for it.
pub fn fallthrough_cluster(name: &str) -> Option<&'static str> {
    [
        "PassthroughCluster",
        "BlackHoleCluster",
        "InboundPassthroughClusterIpv4",
    ]
    .into_iter()
    .find(|n| *n == name)
}

fn struct_str(s: &protobuf::Struct, key: &str) -> Option<String> {
    match s.fields.get(key)?.kind.as_ref()? {
        protobuf::value::Kind::StringValue(v) => Some(v.clone()),
        _ => None,
    }
}

/// The `destination_service*` labels from Istio's `istio.services[0]` cluster metadata (name
/// and namespace `unknown` when missing), made once here rather than for each request; None
/// without a host.
fn service_meta(c: &XCluster) -> Option<Arc<weft_telemetry::ServiceInfo>> {
    let istio = c.metadata.as_ref()?.filter_metadata.get("istio")?;
    let protobuf::value::Kind::ListValue(list) = istio.fields.get("services")?.kind.as_ref()?
    else {
        return None;
    };
    let protobuf::value::Kind::StructValue(svc) = list.values.first()?.kind.as_ref()? else {
        return None;
    };
    let host = struct_str(svc, "host").filter(|h| !h.is_empty())?;
    let label = |key| weft_telemetry::Label::or_unknown(&struct_str(svc, key).unwrap_or_default());
    Some(Arc::new(weft_telemetry::ServiceInfo {
        fqdn: host.into(),
        name: label("name"),
        namespace: label("namespace"),
    }))
}

fn upstream_tls(
    cluster: &str,
    ts: &core::TransportSocket,
    factory: &TlsFactory,
    auto_san: bool,
) -> Result<Option<Arc<UpstreamTls>>, ProxyError> {
    let Some(core::transport_socket::ConfigType::TypedConfig(any)) = &ts.config_type else {
        return Ok(None);
    };
    if any.type_url.ends_with("raw_buffer.v3.RawBuffer") {
        return Ok(None);
    }
    if !any.type_url.ends_with("tls.v3.UpstreamTlsContext") {
        return Err(ProxyError::Config(format!(
            "cluster {cluster}: transport_socket {}: unsupported type {}",
            ts.name, any.type_url
        )));
    }
    let ctx = tls::UpstreamTlsContext::decode(any.value.as_slice())
        .map_err(|e| ProxyError::Config(format!("cluster {cluster}: transport_socket: {e}")))?;
    let common = ctx.common_tls_context.unwrap_or_default();
    let sans = crate::tls::san_matchers(&common)
        .into_iter()
        .filter_map(|m| match m {
            crate::tls::SanMatch::Exact(s) => Some(s),
            crate::tls::SanMatch::Prefix(_) => None,
        })
        .collect::<Vec<_>>();
    let istio = common
        .tls_certificate_sds_secret_configs
        .iter()
        .any(|s| s.name == "default");
    let alpn = common.alpn_protocols.clone();
    let err =
        |e: weft_identity::IdentityError| ProxyError::Config(format!("cluster {cluster}: {e}"));
    if !istio {
        // TLS origination to a destination outside the mesh (SIMPLE / MUTUAL).
        let mut opts = origination(cluster, &common, &sans)?;
        opts.auto_san_validation = auto_san;
        let with = |alpn: Vec<String>| {
            let mut o = opts.clone();
            o.alpn = alpn.into_iter().map(String::into_bytes).collect();
            factory.origination(&o).map_err(err)
        };
        return Ok(Some(Arc::new(UpstreamTls {
            base: with(alpn.clone())?,
            http11: with(if alpn.is_empty() {
                Vec::new()
            } else {
                vec!["http/1.1".into()]
            })?,
            h2: with(vec!["h2".into()])?,
            sni: ctx.sni,
            sans,
            istio: false,
        })));
    }
    let base = factory.client(&sans, &alpn).map_err(err)?;
    let http11 = factory
        .client(
            &sans,
            &["istio-http/1.1".into(), "istio".into(), "http/1.1".into()],
        )
        .map_err(err)?;
    let h2 = factory
        .client(&sans, &["istio-h2".into(), "istio".into(), "h2".into()])
        .map_err(err)?;
    Ok(Some(Arc::new(UpstreamTls {
        sni: ctx.sni,
        sans,
        base,
        http11,
        h2,
        istio,
    })))
}

/// The origination options of a non-mesh TLS context: CA bundle and client certificate from
/// files (Istio's DestinationRule `caCertificates`, `clientCertificate`, `privateKey`), or the
/// system's trust store (Istio's SDS resource `file-root:system`; `file-root:<path>` is a file).
fn origination(
    cluster: &str,
    common: &tls::CommonTlsContext,
    sans: &[String],
) -> Result<weft_identity::OriginationOptions, ProxyError> {
    use tls::common_tls_context::ValidationContextType as V;
    let file = |d: &Option<core::DataSource>| match d.as_ref().and_then(|d| d.specifier.as_ref()) {
        Some(core::data_source::Specifier::Filename(f)) => Some(f.clone()),
        _ => None,
    };
    let vc = match &common.validation_context_type {
        Some(V::ValidationContext(v)) => Some(v.clone()),
        Some(V::CombinedValidationContext(c)) => c.default_validation_context.clone(),
        _ => None,
    };
    let insecure = vc.as_ref().is_some_and(|v| {
        v.trust_chain_verification
            == tls::certificate_validation_context::TrustChainVerification::AcceptUntrusted as i32
    });
    let client_cert = common
        .tls_certificates
        .first()
        .and_then(|c| Some((file(&c.certificate_chain)?, file(&c.private_key)?)));
    let mut ca_file = vc.as_ref().and_then(|v| file(&v.trusted_ca));
    let mut system_roots = false;
    if let Some(V::CombinedValidationContext(c)) = &common.validation_context_type
        && let Some(sds) = &c.validation_context_sds_secret_config
    {
        match sds.name.strip_prefix("file-root:") {
            Some("system") => system_roots = true,
            Some(path) if !path.is_empty() => ca_file = Some(path.to_string()),
            _ => {
                return Err(ProxyError::Config(format!(
                    "cluster {cluster}: validation context from SDS resource {:?}: weft proxy \
                     serves only file-root:system and file-root:<path>; refused",
                    sds.name
                )));
            }
        }
    }
    Ok(weft_identity::OriginationOptions {
        ca_file,
        system_roots,
        subject_alt_names: sans.to_vec(),
        client_cert,
        insecure_skip_verify: insecure,
        auto_san_validation: false,
        alpn: Vec::new(),
    })
}

/// DNS answers for the host names of STRICT_DNS and LOGICAL_DNS clusters (see `dns.rs`).
pub type DnsAnswers = std::collections::BTreeMap<String, Vec<IpAddr>>;

/// The host (name or IP) and port of an endpoint's socket address.
pub fn dns_endpoint(addr: Option<&core::Address>) -> Option<(&str, u16)> {
    let Some(core::address::Address::SocketAddress(sa)) = addr?.address.as_ref() else {
        return None;
    };
    let port = match sa.port_specifier {
        Some(core::socket_address::PortSpecifier::PortValue(p)) => p as u16,
        _ => 0,
    };
    Some((sa.address.as_str(), port))
}

pub fn compile(
    c: &XCluster,
    cla: Option<&ClusterLoadAssignment>,
    factory: &TlsFactory,
    previous: Option<&Arc<Cluster>>,
    dns: &DnsAnswers,
) -> Result<Cluster, ProxyError> {
    use cluster::DiscoveryType;
    let name = c.name.as_str();
    let dtype = match &c.cluster_discovery_type {
        Some(cluster::ClusterDiscoveryType::Type(t)) => {
            DiscoveryType::try_from(*t).unwrap_or(DiscoveryType::Static)
        }
        Some(cluster::ClusterDiscoveryType::ClusterType(ext)) => {
            return Err(ProxyError::Config(format!(
                "cluster {name}: cluster_type extension {:?} is not supported by weft proxy; use \
                 type STATIC, EDS, STRICT_DNS, LOGICAL_DNS or ORIGINAL_DST",
                ext.name
            )));
        }
        None => DiscoveryType::Static,
    };
    let kind = match dtype {
        DiscoveryType::Static
        | DiscoveryType::Eds
        | DiscoveryType::StrictDns
        | DiscoveryType::LogicalDns => ClusterKind::Endpoints,
        DiscoveryType::OriginalDst => ClusterKind::OriginalDst,
    };
    let connect_timeout = c
        .connect_timeout
        .as_ref()
        .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(10));
    let bind = match c
        .upstream_bind_config
        .as_ref()
        .and_then(|b| b.source_address.as_ref())
    {
        Some(sa) => Some(sa.address.parse().map_err(|_| {
            ProxyError::Config(format!(
                "cluster {name}: upstream_bind_config: bad address {}",
                sa.address
            ))
        })?),
        None => None,
    };
    let http_options = c
        .typed_extension_protocol_options
        .get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
        .and_then(|any| http_opts::HttpProtocolOptions::decode(any.value.as_slice()).ok());
    // Envoy's auto SNI and SAN validation (istiod's ENABLE_AUTO_SNI).
    let auto = http_options
        .as_ref()
        .and_then(|o| o.upstream_http_protocol_options.as_ref());
    let auto_sni = auto.is_some_and(|a| a.auto_sni);
    let auto_san = auto.is_some_and(|a| a.auto_san_validation);
    let mut matches = Vec::new();
    for m in &c.transport_socket_matches {
        let criteria: Vec<(String, String)> = m
            .r#match
            .as_ref()
            .map(|s| {
                s.fields
                    .keys()
                    .filter_map(|k| struct_str(s, k).map(|v| (k.clone(), v)))
                    .collect()
            })
            .unwrap_or_default();
        let tls = match &m.transport_socket {
            Some(ts) => upstream_tls(name, ts, factory, auto_san)?,
            None => None,
        };
        matches.push((criteria, tls));
    }
    let default_tls = match &c.transport_socket {
        Some(ts) => upstream_tls(name, ts, factory, auto_san)?,
        None => None,
    };
    let assignment = cla.or(c.load_assignment.as_ref());
    if dtype == DiscoveryType::LogicalDns
        && assignment.is_some_and(|a| {
            a.endpoints
                .iter()
                .map(|l| l.lb_endpoints.len())
                .sum::<usize>()
                > 1
        })
    {
        return Err(ProxyError::Config(format!(
            "cluster {name}: LOGICAL_DNS clusters must have a single locality_lb_endpoint and a \
             single lb_endpoint"
        )));
    }
    let mut endpoints = Vec::new();
    for loc in assignment
        .map(|a| a.endpoints.as_slice())
        .unwrap_or_default()
    {
        for lbe in &loc.lb_endpoints {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &lbe.host_identifier else {
                continue;
            };
            let addrs = match dtype {
                // Host names resolved by the proxy: every address (STRICT_DNS) or the first
                // (LOGICAL_DNS); none until the first answer.
                DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
                    let (host, port) = dns_endpoint(ep.address.as_ref()).ok_or_else(|| {
                        ProxyError::Config(format!(
                            "cluster {name}: endpoint: address must be a socket address"
                        ))
                    })?;
                    let ips: Vec<IpAddr> = match host.parse::<IpAddr>() {
                        Ok(ip) => vec![ip],
                        Err(_) => dns.get(host).cloned().unwrap_or_default(),
                    };
                    let take = if dtype == DiscoveryType::LogicalDns {
                        1
                    } else {
                        ips.len()
                    };
                    ips.into_iter()
                        .take(take)
                        .map(|ip| SocketAddr::new(ip, port))
                        .collect()
                }
                _ => vec![super::socket_addr(
                    ep.address.as_ref(),
                    &format!("cluster {name}: endpoint"),
                )?],
            };
            let md = lbe
                .metadata
                .as_ref()
                .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"));
            let tls = matches
                .iter()
                .find(|(criteria, _)| {
                    criteria.iter().all(|(k, v)| {
                        md.and_then(|m| struct_str(m, k)).as_deref() == Some(v.as_str())
                    })
                })
                .map(|(_, tls)| tls.clone())
                .unwrap_or_else(|| default_tls.clone());
            for addr in addrs {
                endpoints.push(Endpoint {
                    addr,
                    weight: lbe
                        .load_balancing_weight
                        .as_ref()
                        .map(|w| w.value)
                        .unwrap_or(1)
                        .max(1),
                    tls: tls.clone(),
                    host: Arc::default(),
                });
            }
        }
    }
    let mut limits = Limits::default();
    if let Some(t) = c.circuit_breakers.as_ref().and_then(|cb| {
        cb.thresholds
            .iter()
            .find(|t| t.priority == core::RoutingPriority::Default as i32)
    }) {
        let v =
            |w: &Option<protobuf::UInt32Value>, d: u32| w.as_ref().map(|w| w.value).unwrap_or(d);
        limits.max_connections = v(&t.max_connections, limits.max_connections);
        limits.max_pending = v(&t.max_pending_requests, limits.max_pending);
        limits.max_requests = v(&t.max_requests, limits.max_requests);
        limits.max_retries = v(&t.max_retries, limits.max_retries);
    }
    limits.max_requests_per_connection = http_options
        .as_ref()
        .and_then(|o| o.common_http_protocol_options.as_ref())
        .and_then(|o| o.max_requests_per_connection.as_ref())
        .map(|n| n.value)
        .unwrap_or(0);
    let protocol = {
        use http_opts::http_protocol_options::{
            UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
        };
        match http_options
            .as_ref()
            .and_then(|o| o.upstream_protocol_options.as_ref())
        {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match e.protocol_config {
                Some(ProtocolConfig::Http2ProtocolOptions(_)) => UpstreamProtocol::Http2,
                Some(ProtocolConfig::HttpProtocolOptions(_)) | None => UpstreamProtocol::Http11,
                Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                    return Err(ProxyError::Config(format!(
                        "cluster {name}: HTTP/3 upstreams are not supported by weft proxy"
                    )));
                }
            },
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
                UpstreamProtocol::Downstream
            }
            Some(UpstreamProtocolOptions::AutoConfig(_)) => {
                return Err(ProxyError::Config(format!(
                    "cluster {name}: auto_config (ALPN-chosen upstream protocol) is not supported \
                     by weft proxy; use explicit_http_config or use_downstream_protocol_config"
                )));
            }
            None => UpstreamProtocol::Http11,
        }
    };
    let idle_timeout = http_options
        .as_ref()
        .and_then(|o| o.common_http_protocol_options.as_ref())
        .and_then(|o| o.idle_timeout.as_ref())
        .map_or(Some(DEFAULT_IDLE_TIMEOUT), |d| {
            Some(Duration::new(
                d.seconds.max(0) as u64,
                d.nanos.max(0) as u32,
            ))
            .filter(|d| !d.is_zero())
        });
    let keepalive = c
        .upstream_connection_options
        .as_ref()
        .and_then(|o| o.tcp_keepalive.as_ref())
        .map(|k| crate::socket::Keepalive {
            time: k
                .keepalive_time
                .as_ref()
                .map(|v| Duration::from_secs(v.value.into())),
            interval: k
                .keepalive_interval
                .as_ref()
                .map(|v| Duration::from_secs(v.value.into())),
            probes: k.keepalive_probes.as_ref().map(|v| v.value),
        });
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&c.encode_to_vec(), &mut hasher);
    let generation = std::hash::Hasher::finish(&hasher);
    let state: Arc<ClusterState> = previous.map(|p| p.state.clone()).unwrap_or_default();
    let addrs: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
    let hosts = state.hosts.refresh(&addrs);
    for (e, h) in endpoints.iter_mut().zip(&hosts) {
        e.host = h.clone();
    }
    let weights: Vec<(SocketAddr, u32)> = endpoints.iter().map(|e| (e.addr, e.weight)).collect();
    Ok(Cluster {
        fallthrough: fallthrough_cluster(name),
        lb: Lb::compile(c, &weights),
        slow_start: SlowStart::compile(c),
        outlier: Outlier::compile(c),
        hosts,
        name: name.into(),
        kind,
        connect_timeout,
        bind,
        endpoints,
        default_tls,
        protocol,
        idle_timeout,
        keepalive,
        service: service_meta(c),
        rr: previous.map(|p| p.rr.clone()).unwrap_or_default(),
        limits,
        state,
        generation,
        auto_sni,
    })
}

impl Cluster {
    /// Where a new request or connection goes: the downstream's original destination for an
    /// original-destination cluster, else an endpoint chosen by the cluster's load balancer;
    /// with the TLS to use. None when there is no endpoint.
    pub fn target(
        &self,
        original_dst: SocketAddr,
    ) -> Option<(SocketAddr, Option<Arc<UpstreamTls>>)> {
        self.target_hashed(original_dst, None)
    }

    /// [`Cluster::target`] with the request's hash for a ring-hash cluster.
    pub fn target_hashed(
        &self,
        original_dst: SocketAddr,
        hash: Option<u64>,
    ) -> Option<(SocketAddr, Option<Arc<UpstreamTls>>)> {
        match self.kind {
            ClusterKind::OriginalDst => Some((original_dst, self.default_tls.clone())),
            ClusterKind::Endpoints => self.pick(hash).map(|e| (e.addr, e.tls.clone())),
        }
    }

    /// The host state of an endpoint address.
    pub fn host(&self, addr: SocketAddr) -> Option<&Arc<HostState>> {
        self.endpoints
            .iter()
            .find(|e| e.addr == addr)
            .map(|e| &e.host)
    }

    /// Whether outlier detection leaves `e` out: it is ejected and the cluster is not in
    /// panic (fewer healthy hosts than the panic threshold routes to all).
    fn excluded(&self, e: &Endpoint, panic: bool) -> bool {
        !panic && self.outlier.is_some() && e.host.ejected()
    }

    fn panic(&self) -> bool {
        let Some(o) = &self.outlier else {
            return false;
        };
        if o.panic_threshold <= 0.0 {
            return false;
        }
        let healthy = self.endpoints.iter().filter(|e| !e.host.ejected()).count();
        (healthy as f64) * 100.0 / (self.endpoints.len().max(1) as f64) < o.panic_threshold
    }

    /// The cluster's load balancer over the endpoints outlier detection leaves in.
    pub fn pick(&self, hash: Option<u64>) -> Option<&Endpoint> {
        if self.endpoints.is_empty() {
            return None;
        }
        let panic = self.panic();
        let usable = |e: &&Endpoint| !self.excluded(e, panic);
        match (&self.lb, hash) {
            (Lb::RingHash(ring), Some(h)) => {
                // Walk the ring from the hash to the first usable host.
                let start = ring.partition_point(|(k, _)| *k < h);
                (0..ring.len())
                    .map(|i| &self.endpoints[ring[(start + i) % ring.len()].1])
                    .find(usable)
            }
            (Lb::Random, _) => {
                let hosts: Vec<&Endpoint> = self.endpoints.iter().filter(usable).collect();
                weighted(hosts.iter().copied(), rand::random::<u64>())
            }
            (Lb::LeastRequest, _) => {
                // Envoy's power of two choices.
                let hosts: Vec<&Endpoint> = self.endpoints.iter().filter(usable).collect();
                let a = self.weighted(&hosts, rand::random::<u64>())?;
                let b = self.weighted(&hosts, rand::random::<u64>())?;
                let load = |e: &Endpoint| e.host.active.load(Ordering::Relaxed);
                Some(if load(b) < load(a) { b } else { a })
            }
            _ => {
                let n = self.rr.fetch_add(1, Ordering::Relaxed) as u64;
                if self.outlier.is_none() && self.slow_start.is_none() {
                    // The common case: every endpoint is usable, nothing to collect.
                    return weighted(&self.endpoints, n);
                }
                let hosts: Vec<&Endpoint> = self.endpoints.iter().filter(usable).collect();
                self.weighted(&hosts, n)
            }
        }
    }
}

impl Cluster {
    /// [`weighted`], with the weights of hosts in slow start scaled down: while one is, `n` is
    /// not used and the pick is random in proportion to the scaled weights.
    fn weighted<'a>(&self, hosts: &[&'a Endpoint], n: u64) -> Option<&'a Endpoint> {
        let Some(s) = &self.slow_start else {
            return weighted(hosts.iter().copied(), n);
        };
        let factors: Vec<Option<f64>> = hosts.iter().map(|e| e.host.slow_start_factor(s)).collect();
        if factors.iter().all(Option::is_none) {
            return weighted(hosts.iter().copied(), n);
        }
        // Weights in thousandths, so a host at 10% of weight 1 still counts.
        let scaled: Vec<u64> = hosts
            .iter()
            .zip(&factors)
            .map(|(e, f)| ((e.weight as f64 * 1000.0 * f.unwrap_or(1.0)) as u64).max(1))
            .collect();
        let total: u64 = scaled.iter().sum();
        if total == 0 {
            return None;
        }
        // Drawn at random over the scaled weights while any host warms up (Envoy runs an EDF
        // schedule; the shares are the same).
        let mut n = rand::random::<u64>() % total;
        for (e, w) in hosts.iter().zip(&scaled) {
            if n < *w {
                return Some(e);
            }
            n -= w;
        }
        hosts.first().copied()
    }
}

/// The endpoint at position `n` of the weighted sequence (weights honoured without
/// expanding the list).
fn weighted<'a>(
    hosts: impl IntoIterator<Item = &'a Endpoint, IntoIter: Clone>,
    n: u64,
) -> Option<&'a Endpoint> {
    let hosts = hosts.into_iter();
    let total: u64 = hosts.clone().map(|e| e.weight as u64).sum();
    if total == 0 {
        return None;
    }
    let n = n % total;
    let mut acc = 0u64;
    let mut first = None;
    for e in hosts {
        first = first.or(Some(e));
        acc += e.weight as u64;
        if n < acc {
            return Some(e);
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;

    use super::*;

    fn assignment(ips: &[&str]) -> ClusterLoadAssignment {
        ClusterLoadAssignment {
            cluster_name: "outbound|80||a.default.svc.cluster.local".into(),
            endpoints: vec![endpoint::LocalityLbEndpoints {
                lb_endpoints: ips
                    .iter()
                    .map(|ip| endpoint::LbEndpoint {
                        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
                            endpoint::Endpoint {
                                address: Some(core::Address {
                                    address: Some(core::address::Address::SocketAddress(
                                        core::SocketAddress {
                                            address: ip.to_string(),
                                            port_specifier: Some(
                                                core::socket_address::PortSpecifier::PortValue(80),
                                            ),
                                            ..Default::default()
                                        },
                                    )),
                                }),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn dns_clusters_take_the_resolver_answers() {
        let factory = TlsFactory::new(
            Arc::new(weft_identity::LiveIdentity::new()),
            "cluster.local".into(),
        );
        let dns_cluster = |t: cluster::DiscoveryType| XCluster {
            name: "outbound|80||a.example.com".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(t as i32)),
            load_assignment: Some(assignment(&["a.example.com", "192.0.2.50"])),
            ..Default::default()
        };
        let answers = DnsAnswers::from([(
            "a.example.com".to_string(),
            vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()],
        )]);
        let addrs = |c: &Cluster| {
            c.endpoints
                .iter()
                .map(|e| e.addr.to_string())
                .collect::<Vec<_>>()
        };
        let strict = compile(
            &dns_cluster(cluster::DiscoveryType::StrictDns),
            None,
            &factory,
            None,
            &answers,
        )
        .unwrap();
        assert_eq!(
            addrs(&strict),
            ["192.0.2.1:80", "192.0.2.2:80", "192.0.2.50:80"]
        );
        // LOGICAL_DNS: one endpoint, its first address.
        let mut one = dns_cluster(cluster::DiscoveryType::LogicalDns);
        one.load_assignment = Some(assignment(&["a.example.com"]));
        let logical = compile(&one, None, &factory, None, &answers).unwrap();
        assert_eq!(addrs(&logical), ["192.0.2.1:80"]);
        let two = compile(
            &dns_cluster(cluster::DiscoveryType::LogicalDns),
            None,
            &factory,
            None,
            &answers,
        );
        assert!(two.unwrap_err().to_string().contains("single lb_endpoint"));
        // Not resolved yet: only the literal address.
        let none = compile(
            &dns_cluster(cluster::DiscoveryType::StrictDns),
            None,
            &factory,
            None,
            &DnsAnswers::new(),
        )
        .unwrap();
        assert_eq!(addrs(&none), ["192.0.2.50:80"]);
        // A host name in a STATIC cluster is refused, naming the cluster.
        let err = compile(
            &dns_cluster(cluster::DiscoveryType::Static),
            None,
            &factory,
            None,
            &answers,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("outbound|80||a.example.com")
                && err.to_string().contains("not an IP"),
            "{err}"
        );
    }

    #[test]
    fn a_host_that_joins_warms_up_over_the_slow_start_window() {
        let c = XCluster {
            name: "outbound|80||a.default.svc.cluster.local".into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Eds as i32,
            )),
            lb_config: Some(cluster::LbConfig::RoundRobinLbConfig(
                cluster::RoundRobinLbConfig {
                    slow_start_config: Some(cluster::SlowStartConfig {
                        slow_start_window: Some(protobuf::Duration {
                            seconds: 600,
                            nanos: 0,
                        }),
                        ..Default::default()
                    }),
                },
            )),
            ..Default::default()
        };
        let factory = TlsFactory::new(
            Arc::new(weft_identity::LiveIdentity::new()),
            "cluster.local".into(),
        );
        let first = Arc::new(
            compile(
                &c,
                Some(&assignment(&["10.0.0.1", "10.0.0.2"])),
                &factory,
                None,
                &Default::default(),
            )
            .unwrap(),
        );
        assert!(first.slow_start.is_some());
        let count = |cl: &Cluster, ip: &str| {
            (0..10_000)
                .filter(|_| cl.pick(None).unwrap().addr.ip().to_string() == ip)
                .count()
        };
        // The first endpoints are there from the start: an even round robin.
        assert_eq!(count(&first, "10.0.0.1"), 5_000);
        // A third host joins: at the start of its 10-minute window it gets 10% of its weight,
        // 1/21 of the picks (about 476 of 10,000; 5 sd is about 105).
        let second = compile(
            &c,
            Some(&assignment(&["10.0.0.1", "10.0.0.2", "10.0.0.3"])),
            &factory,
            Some(&first),
            &Default::default(),
        )
        .unwrap();
        let new = count(&second, "10.0.0.3");
        assert!((370..=590).contains(&new), "{new} of 10000");
        // Without slow start it would get a third.
        let mut plain = c.clone();
        plain.lb_config = None;
        let plain = compile(
            &plain,
            Some(&assignment(&["10.0.0.1", "10.0.0.2", "10.0.0.3"])),
            &factory,
            Some(&first),
            &Default::default(),
        )
        .unwrap();
        let share = count(&plain, "10.0.0.3");
        assert!((3_300..=3_400).contains(&share), "{share}");
    }
}
