#![forbid(unsafe_code)]
//! `weft proxy`: the sidecar (Envoy + pilot-agent in one). It gets its identity from the CA,
//! its configuration over ADS as standard Envoy resources, captures the pod's traffic on
//! 15001/15006 and serves it: HTTP/1.1, HTTP/2, gRPC and TCP, mTLS between sidecars, Istio's
//! metrics and access logs, and the admin and health ports.

mod accesslog;
pub mod admin;
pub mod app_metrics;
pub mod authn;
mod batch;
mod body;
mod conn;
mod dns;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod http;
pub mod iptables;
mod listen;
pub mod nameserver;
pub mod options;
mod otlp;
pub mod probe;
mod readbuf;
pub mod snapshot;
pub mod socket;
mod spans;
mod stats;
mod tcp;
pub mod tls;
mod upstream;
pub mod why;
mod xds;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

pub use error::ProxyError;
pub use http::HttpLimits;
pub use listen::{Sniffed, classify};
pub use options::ProxyOptions;

use crate::snapshot::{Direction, Snapshot};

/// A hash map for what every request looks up (pools, routes, clusters): foldhash, seeded per
/// map, instead of SipHash, whose hashing of a pool key cost more than the lookup itself.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
/// Istio's TEXT access-log format, used when a file access log names no format.
pub const DEFAULT_LOG_FORMAT: &str = weft_telemetry::accesslog::ENVOY_TEXT_LOG_FORMAT;

/// Counts connections in flight, for draining.
#[derive(Debug, Default)]
pub struct Active(AtomicUsize);

pub struct ActiveGuard<'a>(&'a Active);

impl Active {
    pub fn enter(&self) -> ActiveGuard<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self)
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Everything the data path shares.
pub struct Proxy {
    pub options: ProxyOptions,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pools: upstream::Pools,
    telemetry: stats::Telemetry,
    /// Flips to true when the proxy starts draining.
    pub draining: watch::Sender<bool>,
    pub active: Active,
    pub tls: Arc<tls::TlsFactory>,
    pub config_ready: Arc<AtomicBool>,
    /// The DNS clusters' first lookups are done (see `xds::ConfigHandler::dns_warm`).
    pub dns_warm: Arc<AtomicBool>,
    pub identity: watch::Receiver<Option<Arc<weft_identity::Identity>>>,
    /// The identity source's store (its last failure, for readiness).
    pub identity_store: weft_identity::IdentityStore,
    /// Where certificates come from, for operators ("the CA at …", "the SDS server at …").
    pub identity_source: String,
    pub xds_state: watch::Receiver<weft_xds::ClientState>,
}

impl Proxy {
    /// Ready when it has listeners and clusters from the control plane and a certificate.
    pub fn ready(&self) -> bool {
        self.config_ready.load(Ordering::Acquire)
            && self.dns_warm.load(Ordering::Acquire)
            && self.identity.borrow().is_some()
    }

    pub fn metrics_text(&self) -> String {
        self.telemetry.metrics.encode_prometheus()
    }

    fn drop_stale_pools(&self) {
        let snap = self.snapshot.load();
        self.pools.retain(&|name, generation| {
            snap.clusters
                .get(name)
                .is_some_and(|c| c.generation == generation)
        });
    }
}

/// Runs the sidecar until SIGTERM/SIGINT or `/quitquitquit`, then drains.
///
/// Control work (ADS, CA, admin) runs on its own single-threaded runtime so that it never
/// stalls the data path, which runs on the caller's runtime.
pub async fn run(options: ProxyOptions) -> Result<(), ProxyError> {
    let token = options.token()?;
    let node = options.node();
    let node_metadata = options.node_metadata();
    let principal = format!(
        "spiffe://{}/ns/{}/sa/{}",
        options.trust_domain, options.namespace, options.service_account
    );

    // xDS and the CA over TLS when the control plane's root is given (istiod's 15012).
    let control_tls = options.control_plane_tls()?;
    // Control runtime.
    let (ctl_tx, ctl_rx) = std::sync::mpsc::channel();
    let ctl_options = options.clone();
    let ctl_tls = control_tls.clone();
    let sds_node = envoy_types::pb::envoy::config::core::v3::Node {
        id: node.id.clone(),
        cluster: node.cluster.clone(),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("weft-control-io".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ctl_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let socket = ctl_options.sds_socket.clone();
                if weft_identity::sds::is_served(&socket).await {
                    // As pilot-agent with a workload identity socket: no CA client at all.
                    let source = format!("the SDS server at {}", socket.display());
                    tracing::info!(socket = %socket.display(),
                        "workload SDS socket found: the certificate and trust bundle come from it (SPIRE); the Istio CA is not used");
                    let (store, rx) = weft_identity::IdentityStore::new();
                    let _ = ctl_tx.send(Ok((rx, store.clone(), source, token)));
                    let config = weft_identity::SdsConfig {
                        socket,
                        node: sds_node,
                    };
                    weft_identity::sds::run(config, store).await;
                    return;
                }
                let ca_address = ctl_options.ca_address();
                let tls = match ctl_tls.map(|c| {
                    weft_xds::transport::tls_connector(c, ctl_options.control_plane_name.as_deref())
                }) {
                    Some(Err(e)) => {
                        let _ = ctl_tx.send(Err(e.to_string()));
                        return;
                    }
                    other => other.and_then(Result::ok),
                };
                let channel = match weft_xds::transport::endpoint(&ca_address) {
                    Ok(ep) => match tls {
                        Some(tls) => ep.connect_with_connector_lazy(tls),
                        None => ep.connect_lazy(),
                    },
                    Err(e) => {
                        let _ = ctl_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                tracing::info!(socket = %socket.display(), ca = %ca_address,
                    "no workload SDS socket: certificates come from the Istio CA");
                let ca = weft_identity::CaClient::new(channel, token.clone());
                let (mgr, rx) =
                    weft_identity::IdentityManager::spawn(Arc::new(ca), ctl_options.cert_ttl);
                let source = format!("the CA at {ca_address}");
                let _ = ctl_tx.send(Ok((rx, mgr.store(), source, token)));
                let _keep = mgr;
                std::future::pending::<()>().await;
            });
        })
        .map_err(|e| ProxyError::Config(format!("cannot start the control thread: {e}")))?;
    let (identity_rx, identity_store, identity_source, token) = ctl_rx
        .recv()
        .map_err(|e| ProxyError::Config(format!("control thread failed: {e}")))?
        .map_err(ProxyError::Config)?;

    let live = Arc::new(weft_identity::LiveIdentity::new());
    weft_identity::LiveIdentity::watch_into(&live, identity_rx.clone());
    let tls = Arc::new(tls::TlsFactory::new(live, options.trust_domain.clone()));
    let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
    let config_ready = Arc::new(AtomicBool::new(false));
    let (xds_tx, xds_rx) = watch::channel(weft_xds::ClientState::default());
    let (draining, _) = watch::channel(false);
    let node_id = node.id.clone();
    let dns_warm = Arc::new(AtomicBool::new(true));
    let proxy = Arc::new(Proxy {
        telemetry: stats::Telemetry::new(node_metadata, &node_id, &node.cluster, &principal),
        options: options.clone(),
        snapshot: snapshot.clone(),
        pools: upstream::Pools::default(),
        draining,
        active: Active::default(),
        tls: tls.clone(),
        config_ready: config_ready.clone(),
        dns_warm: dns_warm.clone(),
        identity: identity_rx,
        identity_store,
        identity_source,
        xds_state: xds_rx,
    });

    // ADS on the control runtime's thread pool would need Send handles; it only touches the
    // snapshot ArcSwap, so it runs as a task on a dedicated thread of its own.
    let mut handler = xds::ConfigHandler::new(snapshot.clone(), tls.clone(), config_ready.clone());
    handler.dns_warm = dns_warm;
    // pilot-agent's DNS proxy: 127.0.0.1:15053, UDP and TCP, fed by NDS.
    if options.dns_capture {
        let upstreams = std::fs::read_to_string("/etc/resolv.conf")
            .map(|c| nameserver::upstreams_of(&c))
            .unwrap_or_default();
        let names = Arc::new(nameserver::NameServer::new(upstreams.clone()));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], nameserver::DNS_PROXY_PORT));
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|source| ProxyError::Listen { addr, source })?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Listen { addr, source })?;
        tokio::spawn(names.clone().serve_udp(udp));
        tokio::spawn(names.clone().serve_tcp(tcp));
        tracing::info!(%addr, upstreams = ?upstreams, "DNS proxy listening (ISTIO_META_DNS_CAPTURE)");
        handler.serve_names(names, options.namespace.clone());
    }
    let mut cfg = weft_xds::AdsClientConfig::new(options.xds_address(), node);
    cfg.auth_token = Some(token);
    cfg.tls = control_tls;
    cfg.tls_server_name = options.control_plane_name.clone();
    cfg.delta = options.delta_xds;
    std::thread::Builder::new()
        .name("weft-xds".into())
        .spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                tracing::error!("cannot start the xDS runtime");
                return;
            };
            rt.block_on(async move {
                // DNS clusters' host names are resolved on this thread too.
                tokio::spawn(handler.dns_task(Arc::new(dns::SystemLookup)));
                let Err(e) = weft_xds::run_ads_client(cfg, handler, xds_tx).await;
                tracing::error!(error = %e, "xDS client stopped: fix --control-plane and restart");
            });
        })
        .map_err(|e| ProxyError::Config(format!("cannot start the xDS thread: {e}")))?;

    // Data path listeners.
    let bind = |port: u16| async move {
        let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Listen { addr, source })
    };
    admin::serve_all(proxy.clone()).await?;
    // As Envoy, which has no listeners until LDS (and their certificates) arrive, the capture
    // ports are opened once the proxy is ready: until then a captured connection is refused
    // (a connect failure, which callers retry on another endpoint, as when a sidecar restarts)
    // rather than accepted and closed.
    let mut draining = proxy.draining.subscribe();
    while !proxy.ready() {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = draining.changed() => break,
        }
    }
    let out = bind(options.outbound_port).await?;
    let inb = bind(options.inbound_port).await?;
    tokio::spawn(listen::accept_loop(out, Direction::Outbound, proxy.clone()));
    tokio::spawn(listen::accept_loop(inb, Direction::Inbound, proxy.clone()));
    tracing::info!(
        outbound = options.outbound_port,
        inbound = options.inbound_port,
        "ready: capture ports open"
    );

    // The principal in telemetry follows the certificate actually issued.
    let mut ids = proxy.identity.clone();
    let principal_proxy = proxy.clone();
    tokio::spawn(async move {
        loop {
            let id = ids
                .borrow_and_update()
                .as_ref()
                .map(|i| i.svid.id.to_string());
            if let Some(id) = id {
                principal_proxy.telemetry.set_principal(&id);
            }
            if ids.changed().await.is_err() {
                return;
            }
        }
    });

    // Periodic housekeeping: drop pools of clusters that are gone.
    let housekeeping = proxy.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            housekeeping.drop_stale_pools();
        }
    });
    tracing::info!(node = %node_id, "weft proxy started");

    // Wait for a stop signal.
    let mut quit = proxy.draining.subscribe();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| ProxyError::Config(format!("cannot install the SIGTERM handler: {e}")))?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: draining"),
        _ = quit.changed() => tracing::info!("quitquitquit: draining"),
    }
    proxy.draining.send_replace(true);
    let deadline = tokio::time::Instant::now() + options.termination_drain;
    while proxy.active.count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::info!(in_flight = proxy.active.count(), "drained; exiting");
    Ok(())
}

/// A proxy around `snapshot` for in-process data-path tests: no control plane, no identity.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn test_proxy(snapshot: Snapshot) -> Arc<Proxy> {
    let live = Arc::new(weft_identity::LiveIdentity::new());
    let (identity_store, identity) = weft_identity::IdentityStore::new();
    let (_, xds_state) = watch::channel(weft_xds::ClientState::default());
    let (draining, _) = watch::channel(false);
    Arc::new(Proxy {
        options: ProxyOptions::new("127.0.0.1:15010".into(), "foo".into(), "test".into()),
        snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
        pools: upstream::Pools::default(),
        telemetry: stats::Telemetry::new(
            weft_telemetry::NodeMetadata::default(),
            "test",
            "test.foo",
            "spiffe://cluster.local/ns/foo/sa/test",
        ),
        draining,
        active: Active::default(),
        tls: Arc::new(tls::TlsFactory::new(live, "cluster.local".into())),
        config_ready: Arc::new(AtomicBool::new(true)),
        dns_warm: Arc::new(AtomicBool::new(true)),
        identity,
        identity_store,
        identity_source: "none (a test proxy)".into(),
        xds_state,
    })
}
