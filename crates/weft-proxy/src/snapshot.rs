//! The proxy's active configuration: Envoy resources from xDS compiled into the structures the
//! data path uses. A snapshot is immutable; a new one is swapped in atomically on each update,
//! and requests in flight keep the one they started with.

pub mod accesslog;
pub mod balance;
mod cluster;
pub mod counter;
pub mod extauthz;
pub mod filter;
pub mod jwt;
mod listener;
pub mod rbac;
mod route;
pub mod tracing;

use std::collections::BTreeMap;

use crate::FastMap;
use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as XCluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener as XListener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

pub use accesslog::{AccessLogConfig, AccessLogFormat, LogSink};
pub use cluster::{
    Cluster, ClusterKind, ClusterState, ClusterStats, DnsAnswers, Endpoint, Limits,
    UpstreamProtocol, UpstreamTls, compile as compile_cluster, dns_endpoint, fallthrough_cluster,
};
pub use listener::{
    Chain, ChainMatch, Direction, DownstreamTls, EscapedSlashes, Hcm, Listener, NetworkFilter,
    PathNormalization, RouteRef, TcpProxy, Xfcc, XfccMode,
};
pub use route::{
    Action, HashOn, PathMatch, Redirect, RequestInfo, Route, RouteTable, VirtualHost, Weighted,
};

use crate::error::ProxyError;
use crate::tls::TlsFactory;

/// The decoded xDS resources the snapshot was compiled from, by type and name.
#[derive(Debug, Default, Clone)]
pub struct Raw {
    pub listeners: BTreeMap<String, XListener>,
    pub routes: BTreeMap<String, RouteConfiguration>,
    pub clusters: BTreeMap<String, XCluster>,
    pub endpoints: BTreeMap<String, ClusterLoadAssignment>,
    pub versions: BTreeMap<String, String>,
    /// Answers for the host names of DNS clusters (not from xDS: the proxy's resolver).
    pub dns: DnsAnswers,
}

/// The compiled configuration.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub listeners: BTreeMap<String, Arc<Listener>>,
    /// Listeners that don't bind (Istio's `bind_to_port: false` per-port listeners), by address,
    /// for the hand-off from virtualOutbound.
    pub by_addr: FastMap<SocketAddr, Arc<Listener>>,
    pub routes: FastMap<String, Arc<RouteTable>>,
    pub clusters: FastMap<String, Arc<Cluster>>,
    pub raw: Arc<Raw>,
}

/// The `SocketAddress` of an Envoy `Address` (port 0 when it names none).
pub(crate) fn socket_addr(
    addr: Option<&envoy_types::pb::envoy::config::core::v3::Address>,
    what: &str,
) -> Result<SocketAddr, ProxyError> {
    let (host, port) = dns_endpoint(addr)
        .ok_or_else(|| ProxyError::Config(format!("{what}: address must be a socket address")))?;
    let ip: std::net::IpAddr = host
        .parse()
        .map_err(|_| ProxyError::Config(format!("{what}: {host} is not an IP address")))?;
    Ok(SocketAddr::new(ip, port))
}

impl Snapshot {
    /// Compiles everything. Errors name the resource and field and become a NACK.
    pub fn compile(
        raw: Raw,
        tls: &TlsFactory,
        previous: &Snapshot,
    ) -> Result<Snapshot, ProxyError> {
        let mut clusters = FastMap::default();
        for (name, c) in &raw.clusters {
            let cla = raw.endpoints.get(
                c.eds_cluster_config
                    .as_ref()
                    .map(|e| e.service_name.as_str())
                    .filter(|s| !s.is_empty())
                    .unwrap_or(name),
            );
            let compiled = cluster::compile(c, cla, tls, previous.clusters.get(name), &raw.dns)?;
            clusters.insert(name.clone(), Arc::new(compiled));
        }
        let mut routes = FastMap::default();
        for (name, rc) in &raw.routes {
            routes.insert(name.clone(), Arc::new(route::compile(rc)?));
        }
        let mut listeners = BTreeMap::new();
        let mut by_addr = FastMap::default();
        for (name, l) in &raw.listeners {
            let compiled = Arc::new(listener::compile(l, tls)?);
            if !compiled.bind {
                by_addr.insert(compiled.addr, compiled.clone());
            }
            listeners.insert(name.clone(), compiled);
        }
        Ok(Snapshot {
            listeners,
            by_addr,
            routes,
            clusters,
            raw: Arc::new(raw),
        })
    }

    /// The listener that handles a connection captured for `dst` by virtualOutbound: exact
    /// `<ip>_<port>` first, then `0.0.0.0_<port>`.
    pub fn outbound_listener(&self, dst: SocketAddr) -> Option<&Arc<Listener>> {
        self.by_addr.get(&dst).or_else(|| {
            let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), dst.port());
            self.by_addr.get(&any)
        })
    }

    pub fn listener(&self, name: &str) -> Option<&Arc<Listener>> {
        self.listeners.get(name)
    }
}
