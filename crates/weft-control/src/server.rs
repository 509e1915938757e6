//! `weft control`: loads config, runs the CA and the ADS servers (plaintext 15010, TLS 15012),
//! the monitoring/debug port (15014), and pushes on every config change (debounced).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use notify::Watcher;
use tokio::sync::mpsc;
use weft_xds::transport::{KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};

use crate::ca::WorkloadAuthenticator;
use crate::debounce::Settled;
use crate::debug::distribution::{Applied, Tracked, Tracker};
use crate::error::ControlError;
use crate::generator::MeshGenerator;
use crate::push::PushContext;
use crate::store::{ConfigStore, Snapshot};

/// Settings of `weft control`, with Istio's defaults.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    pub config_dir: PathBuf,
    /// More directories of resources, read and watched with `config_dir` (`weft up` puts the
    /// services of the telemetry tools it starts there).
    pub extra_config_dirs: Vec<PathBuf>,
    pub mesh_config: Option<PathBuf>,
    /// Where the self-signed root, its key and the credential key live.
    pub state_dir: PathBuf,
    /// Istio `cacerts` layout to use instead of a self-signed root.
    pub plugin_ca_dir: Option<PathBuf>,
    pub xds_addr: SocketAddr,
    pub xds_tls_addr: SocketAddr,
    pub monitoring_addr: SocketAddr,
    /// Default workload certificate lifetime (Istio: 24h).
    pub cert_ttl: Duration,
    /// Longest lifetime a workload may ask for (Istio: 90 days).
    pub max_cert_ttl: Duration,
    /// When a push goes out after a change (Istio's PILOT_DEBOUNCE_AFTER and PILOT_DEBOUNCE_MAX,
    /// and a shorter maximum for endpoint changes).
    pub debounce: crate::debounce::Debounce,
    /// Proxies with a push in flight at once (PILOT_PUSH_THROTTLE 100).
    pub push_throttle: usize,
    /// Extra CA certificates (PEM) trusted when fetching a RequestAuthentication's jwksUri
    /// (`--jwks-ca`), besides the system bundle and `/cacerts/extra.pem`.
    pub jwks_ca: Option<PathBuf>,
    /// istiod's feature flags (`ENABLE_AUTO_SNI`, `VERIFY_CERTIFICATE_AT_CLIENT`).
    pub features: crate::push::Features,
    /// More names for the TLS port's certificate (on Kubernetes `istiod.<namespace>.svc`).
    pub tls_names: Vec<String>,
}

impl ControlOptions {
    pub fn new(config_dir: PathBuf) -> Self {
        ControlOptions {
            config_dir,
            extra_config_dirs: Vec::new(),
            mesh_config: None,
            state_dir: PathBuf::from("/var/lib/weft/control"),
            plugin_ca_dir: None,
            xds_addr: SocketAddr::from(([0, 0, 0, 0], 15010)),
            xds_tls_addr: SocketAddr::from(([0, 0, 0, 0], 15012)),
            monitoring_addr: SocketAddr::from(([0, 0, 0, 0], 15014)),
            cert_ttl: Duration::from_secs(24 * 3600),
            max_cert_ttl: Duration::from_secs(90 * 24 * 3600),
            debounce: Default::default(),
            push_throttle: weft_xds::server::DEFAULT_PUSH_CONCURRENCY,
            jwks_ca: None,
            features: crate::push::Features::default(),
            tls_names: Vec::new(),
        }
    }
}

/// Shared state of a running control plane (read by the debug endpoints).
pub struct ControlState {
    pub push: Arc<ArcSwap<PushContext>>,
    pub ads: Arc<weft_xds::AdsServer>,
    pub problems: ArcSwap<Vec<String>>,
    pub pushes: std::sync::atomic::AtomicU64,
    /// The config directory, then the extra ones.
    pub config_dirs: Vec<PathBuf>,
    pub mesh_file: Option<PathBuf>,
    /// The config as last loaded, with the push each resource is in force from.
    pub applied: ArcSwap<Applied>,
    /// What each proxy was generated, to tell which pushes it applied.
    pub tracker: Arc<Tracker>,
}

fn version(n: u64) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs}/{n}")
}

/// Runs the control plane until `shutdown` resolves.
pub async fn run(
    opts: ControlOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ControlError> {
    run_with(opts, None, shutdown).await
}

/// Runs the control plane with a config source beside the directory (Kubernetes) until
/// `shutdown` resolves.
pub async fn run_with(
    opts: ControlOptions,
    source: Option<Arc<dyn crate::source::Source>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ControlError> {
    std::fs::create_dir_all(&opts.state_dir).map_err(|source| ControlError::StateDir {
        dir: opts.state_dir.clone(),
        source,
    })?;
    let mut store = ConfigStore::new(opts.config_dir.clone(), opts.mesh_config.clone())
        .with_extra_dirs(opts.extra_config_dirs.clone());
    if let Some(source) = &source {
        store = store.with_source(source.clone());
    }
    let first = store.load()?;
    let mesh = first.mesh.clone();
    let ca = Arc::new(match &opts.plugin_ca_dir {
        Some(dir) => weft_identity::CertificateAuthority::from_plugin_dir(dir, &mesh.trust_domain)?,
        None => weft_identity::CertificateAuthority::load_or_create(
            &opts.state_dir,
            &mesh.trust_domain,
        )?,
    });
    let tokens = Arc::new(weft_identity::TokenAuthority::load_or_create(
        &opts.state_dir,
    )?);

    let mut n = 1u64;
    let first_version = version(n);
    let jwks = Arc::new(crate::jwks::JwksResolver::new(opts.jwks_ca.as_deref())?);
    let push = Arc::new(ArcSwap::from_pointee(
        PushContext::with_platform(
            first_version.clone(),
            first.mesh.clone(),
            first.resources.clone(),
            first.platform.clone(),
        )
        .with_jwks(jwks.clone())
        .with_features(opts.features),
    ));
    let generator = Arc::new(MeshGenerator::new(push.clone()));
    let tracker = Arc::new(Tracker::default());
    tracker.pushed(n, true);
    let ads = Arc::new(weft_xds::AdsServer::with_push_concurrency(
        Arc::new(Tracked {
            inner: generator.clone(),
            tracker: tracker.clone(),
        }),
        opts.push_throttle,
    ));
    let state = Arc::new(ControlState {
        push: push.clone(),
        ads: ads.clone(),
        problems: ArcSwap::from_pointee(with_push_problems(&first.problems, &push.load())),
        pushes: Default::default(),
        config_dirs: store.dirs(),
        mesh_file: opts.mesh_config.clone(),
        applied: ArcSwap::from_pointee(Applied::first(&first, n, &first_version)),
        tracker: tracker.clone(),
    });

    let auth = WorkloadAuthenticator {
        tokens: tokens.clone(),
        push: push.clone(),
        reviewer: source.as_ref().and_then(|s| s.token_reviewer()),
    };
    let ca_service = || {
        weft_identity::ca_server(weft_identity::CaService::new(
            ca.clone(),
            auth.clone(),
            opts.cert_ttl,
            opts.max_cert_ttl,
        ))
    };

    // Plaintext xDS + CA (Istio 15010).
    let plain = tokio::net::TcpListener::bind(opts.xds_addr)
        .await
        .map_err(|source| ControlError::Listen {
            addr: opts.xds_addr,
            source,
        })?;
    tracing::info!(addr = %opts.xds_addr, "serving xDS and the CA (plaintext)");
    // HTTP/2 pings on idle xDS connections, the interval and timeout the proxies' side uses
    // (istiod's gRPC keepalive): a proxy that vanished without closing its connection lets go
    // of its stream and push slot.
    let plain_server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(ads.service())
        .add_service(ca_service())
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(plain));

    // TLS xDS + CA (Istio 15012), with a serving cert from our own CA.
    let tls_listener = tokio::net::TcpListener::bind(opts.xds_tls_addr)
        .await
        .map_err(|source| ControlError::Listen {
            addr: opts.xds_tls_addr,
            source,
        })?;
    let mut names = vec![
        "istiod.istio-system.svc".to_string(),
        "weft-control".to_string(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    for n in &opts.tls_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let tls_config = crate::tls::server_config(&ca, &names, Duration::from_secs(365 * 24 * 3600))?;
    tracing::info!(addr = %opts.xds_tls_addr, "serving xDS and the CA (TLS)");
    let tls_server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .add_service(ads.service())
        .add_service(ca_service())
        .serve_with_incoming(crate::tls::incoming(tls_listener, tls_config));

    let monitoring = crate::debug::serve(opts.monitoring_addr, state.clone()).await?;

    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    // A fetched JWKS that changed pushes like a config change.
    jwks.set_trigger(tx.clone());
    if let Some(source) = &source {
        source.notify(tx.clone());
        // What changed between the first load and now.
        let _ = tx.send(());
        for server in source.servers(ca.clone(), push.clone()) {
            tokio::spawn(server);
        }
    }
    let _watcher = watch(&opts, tx)?;
    let push_loop = async {
        while rx.recv().await.is_some() {
            // Debounce (debounce.rs): at most `max_endpoints` for endpoint changes, else quiet
            // or `max`.
            let peeked = opts
                .debounce
                .settle(&mut rx, || {
                    let snap = store.load().ok()?;
                    let current = push.load();
                    (*current.mesh == *snap.mesh
                        && crate::debounce::endpoints_only(&current.resources, &snap.resources)
                        && current.platform.alike_but_endpoints(&snap.platform))
                    .then_some(snap)
                })
                .await;
            let snap: Snapshot = match peeked {
                Settled::Peeked(snap) => snap,
                Settled::Push => match store.load() {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "reload failed; serving the last good config");
                        continue;
                    }
                },
            };
            let current = push.load();
            state
                .problems
                .store(Arc::new(with_push_problems(&snap.problems, &current)));
            let jwks_changed = jwks.take_dirty();
            if *current.resources == *snap.resources
                && *current.mesh == *snap.mesh
                && *current.platform == *snap.platform
                && !jwks_changed
            {
                state
                    .applied
                    .store(Arc::new(state.applied.load().next(&snap, None)));
                continue;
            }
            n += 1;
            let v = version(n);
            let next = Arc::new(
                PushContext::with_platform(
                    v.clone(),
                    snap.mesh.clone(),
                    snap.resources.clone(),
                    snap.platform.clone(),
                )
                .with_jwks(jwks.clone())
                .with_features(opts.features),
            );
            // Endpoints alone changed: proxies look at their assignments only, but for those
            // of the workloads that changed (push.rs).
            let endpoints_push = if jwks_changed {
                None
            } else {
                next.endpoints_push_since(&current)
            };
            push.store(next.clone());
            state
                .problems
                .store(Arc::new(with_push_problems(&snap.problems, &next)));
            let changed = generator.changed_endpoints(&next);
            state
                .pushes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(version = %v, endpoints_changed = changed.len(), endpoints_only = endpoints_push.is_some(), "config changed; pushing to all proxies");
            if tracker.len() > ads.stats().connections as usize {
                let connected = ads.connected_ids().into_iter().collect();
                tracker.retain_connected(&connected);
            }
            tracker.pushed(n, endpoints_push.is_none());
            let types = endpoints_push
                .is_some()
                .then(|| vec![weft_xds::types::ENDPOINT.to_string()]);
            ads.push(weft_xds::PushEvent {
                version: v.clone(),
                types,
                changed: [(weft_xds::types::ENDPOINT.to_string(), Arc::new(changed))].into(),
                full_for: Arc::new(endpoints_push.unwrap_or_default()),
            });
            state
                .applied
                .store(Arc::new(state.applied.load().next(&snap, Some((n, &v)))));
        }
    };

    tokio::select! {
        r = plain_server => r.map_err(|source| ControlError::Serve { addr: opts.xds_addr, source })?,
        r = tls_server => r.map_err(|source| ControlError::Serve { addr: opts.xds_tls_addr, source })?,
        _ = push_loop => {},
        _ = monitoring => {},
        _ = shutdown => tracing::info!("shutting down"),
    }
    Ok(())
}

/// The load's problems and those the translation of the config in force found (e.g. a CUSTOM
/// AuthorizationPolicy naming an unknown ext-authz provider), as `/debug/config_errors` shows.
fn with_push_problems(load: &[String], push: &PushContext) -> Vec<String> {
    let mut out = load.to_vec();
    out.extend(push.authz.problems().iter().map(|p| p.to_string()));
    out.extend(push.telemetry.problems().iter().map(|p| p.to_string()));
    out
}

fn watch(
    opts: &ControlOptions,
    tx: mpsc::UnboundedSender<()>,
) -> Result<notify::RecommendedWatcher, ControlError> {
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && !matches!(ev.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(());
        }
    })
    .map_err(|source| ControlError::Watch {
        path: opts.config_dir.clone(),
        source,
    })?;
    for dir in std::iter::once(&opts.config_dir).chain(&opts.extra_config_dirs) {
        watcher
            .watch(dir, notify::RecursiveMode::Recursive)
            .map_err(|source| ControlError::Watch {
                path: dir.clone(),
                source,
            })?;
    }
    if let Some(mesh) = &opts.mesh_config {
        // Watch the parent so that editors that replace the file are seen.
        let parent = mesh
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        watcher
            .watch(parent, notify::RecursiveMode::NonRecursive)
            .map_err(|source| ControlError::Watch {
                path: parent.to_path_buf(),
                source,
            })?;
    }
    Ok(watcher)
}
