//! `weft up DIR`: the whole mesh on one machine. Creates the node and pod namespaces, runs the
//! control plane on the directory (edits apply live), starts each pod's capture, sidecar and
//! app, shows live status, and removes everything on Ctrl-C or `weft down`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::Watcher;

use crate::error::UpError;
use crate::net;
use crate::procs::{Proc, Role, Supervised};
use crate::spec::{self, Plan};
use crate::state::{PodState, State};
use crate::status::{self, Observation, PodRow, ServiceRates};

/// Settings of `weft up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub dir: PathBuf,
    /// The `weft` binary the pods run (normally this executable).
    pub weft: PathBuf,
    /// Where the control plane keeps its CA and credential key between runs.
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    /// Redraw the status in place (a terminal) or print changes as lines (a log).
    pub interactive: bool,
    /// Serves the service-graph page (given its listen address in the node namespace and the
    /// control plane's debug address); run on a thread inside the node namespace, its port
    /// forwarded to the host's loopback.
    pub dashboard: Option<DashboardFn>,
}

/// The future that serves the dashboard.
pub type DashboardFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Starts the dashboard: `(listen, control plane debug HOST:PORT)` → the serving future.
#[derive(Clone)]
pub struct DashboardFn(
    pub std::sync::Arc<dyn Fn(std::net::SocketAddr, String) -> DashboardFuture + Send + Sync>,
);

impl std::fmt::Debug for DashboardFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DashboardFn")
    }
}

/// The dashboard's port (Kiali's), on the node address and the host's loopback.
pub const DASHBOARD_PORT: u16 = 20001;

impl UpOptions {
    pub fn new(dir: PathBuf, weft: PathBuf) -> Self {
        UpOptions {
            dir,
            weft,
            state_dir: PathBuf::from("/var/lib/weft/up"),
            log_dir: PathBuf::from("/run/weft/logs"),
            interactive: std::io::stdout().is_terminal(),
            dashboard: None,
        }
    }
}

pub fn require_root() -> Result<(), UpError> {
    if rustix::process::geteuid().is_root() {
        Ok(())
    } else {
        Err(UpError::NotRoot)
    }
}

/// Loads and validates the directory; any problem refuses the start.
pub fn load(dir: &Path) -> Result<(Plan, weft_control::store::Snapshot), UpError> {
    let mesh = Some(dir.join(spec::MESH_FILE)).filter(|p| p.exists());
    let mut store = weft_control::store::ConfigStore::new(dir.to_path_buf(), mesh);
    let snap = store.load()?;
    if !snap.problems.is_empty() {
        return Err(UpError::Invalid(snap.problems.join("\n")));
    }
    let plan = spec::plan(dir, &snap.resources)?;
    Ok((plan, snap))
}

fn registry(snap: &weft_control::store::Snapshot) -> weft_control::registry::Registry {
    weft_control::registry::Registry::build(&snap.resources, weft_control::push::DOMAIN_SUFFIX)
}

fn write_all_hosts(plan: &Plan, snap: &weft_control::store::Snapshot) -> Result<(), UpError> {
    let reg = registry(snap);
    for p in &plan.pods {
        net::write_hosts(&net::pod_ns(&p.name), &net::hosts_file(&reg, &p.namespace))?;
    }
    Ok(())
}

fn argv(weft: &Path, args: &[&str]) -> Vec<String> {
    std::iter::once(weft.to_string_lossy().into_owned())
        .chain(args.iter().map(|s| s.to_string()))
        .collect()
}

/// A pod's processes and what is known of them.
struct Running {
    pod: spec::Pod,
    proxy: Option<Proc>,
    app: Option<Proc>,
    app_started: bool,
    /// When the app was started: an app counts as up once it has run for a second.
    app_started_at: Option<Instant>,
    failure: Option<String>,
}

fn signal_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        });
        f.store(true, Ordering::SeqCst);
    });
    flag
}

/// Watches the node: one observation a second, from a thread inside the node namespace.
fn observer(plan: &Plan) -> mpsc::Receiver<Observation> {
    let (tx, rx) = mpsc::channel();
    let node_ip = plan.node_ip;
    let pods: Vec<_> = plan
        .pods
        .iter()
        .map(|p| (p.name.clone(), p.ip, p.sidecar))
        .collect();
    std::thread::spawn(move || {
        let r = status::in_node_ns(move || {
            Box::pin(async move {
                loop {
                    let o = status::observe(node_ip, &pods).await;
                    if tx.send(o).is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        });
        if let Err(e) = r {
            tracing::error!(error = %e, "cannot watch the mesh from the node namespace");
        }
    });
    rx
}

/// Runs the mesh until interrupted.
pub fn up(opts: UpOptions) -> Result<(), UpError> {
    require_root()?;
    let dir = opts.dir.canonicalize().map_err(|source| UpError::Read {
        path: opts.dir.clone(),
        source,
    })?;
    let (plan, snap) = load(&dir)?;
    crate::state::clear_stale()?;
    std::fs::create_dir_all(&opts.log_dir)?;
    std::fs::create_dir_all(&opts.state_dir)?;
    let stop = signal_flag();

    let mut state = State {
        pid: std::process::id() as i32,
        dir: dir.clone(),
        node_ip: plan.node_ip,
        log_dir: opts.log_dir.clone(),
        pods: Vec::new(),
        namespaces: Vec::new(),
        groups: Vec::new(),
    };
    let mut procs: Vec<Proc> = Vec::new();
    let result = run(&opts, &plan, &snap, &mut state, &mut procs, &stop);
    // Teardown, whatever happened.
    println!("stopping the mesh…");
    crate::procs::stop_all(&mut procs, Duration::from_secs(3));
    state.clean();
    println!("mesh stopped; namespaces, links, processes and hosts files removed");
    result
}

fn run(
    opts: &UpOptions,
    plan: &Plan,
    snap: &weft_control::store::Snapshot,
    state: &mut State,
    procs: &mut Vec<Proc>,
    stop: &AtomicBool,
) -> Result<(), UpError> {
    let prefix = plan.subnet.prefix_len();
    state.namespaces.push(net::NODE_NS.to_string());
    state.save()?;
    net::create_node(plan.node_ip, prefix)?;
    for (i, p) in plan.pods.iter().enumerate() {
        let ns = net::pod_ns(&p.name);
        state.namespaces.push(ns.clone());
        state.save()?;
        net::create_pod(&p.name, i + 1, p.ip, prefix, plan.node_ip)?;
    }
    write_all_hosts(plan, snap)?;

    // The control plane, in the node namespace.
    let dir = plan.dir.to_string_lossy().into_owned();
    let state_dir = opts.state_dir.to_string_lossy().into_owned();
    let mut cp_args = vec![
        "control",
        "--config-dir",
        dir.as_str(),
        "--state-dir",
        state_dir.as_str(),
    ];
    // With telemetry tools: their services in a directory of their own, and the user's mesh
    // config with their providers (kept in step with the user's file below).
    let telemetry = if plan.tools.is_empty() {
        None
    } else {
        let sidecars: Vec<(String, String, std::net::Ipv4Addr)> = plan
            .pods
            .iter()
            .filter(|p| p.sidecar)
            .map(|p| (p.name.clone(), p.namespace.clone(), p.ip))
            .collect();
        Some(crate::telemetry::prepare(
            &plan.tools,
            Some(&plan.dir.join(spec::MESH_FILE)),
            plan.node_ip,
            &sidecars,
        )?)
    };
    for n in &plan.notices {
        println!("{n}");
    }
    let mesh = match &telemetry {
        Some((_, m)) => Some(m.to_string_lossy().into_owned()),
        None => plan
            .mesh_file
            .as_ref()
            .map(|m| m.to_string_lossy().into_owned()),
    };
    if let Some(m) = &mesh {
        cp_args.extend(["--mesh-config", m.as_str()]);
    }
    let extra = telemetry
        .as_ref()
        .map(|(d, _)| d.to_string_lossy().into_owned());
    if let Some(d) = &extra {
        cp_args.extend(["--extra-config-dir", d.as_str()]);
    }
    let cp_log = opts.log_dir.join("control.log");
    let cp = Proc::spawn(
        "node",
        Role::Control,
        net::NODE_NS,
        None,
        &argv(&opts.weft, &cp_args),
        &BTreeMap::new(),
        &cp_log,
    )?;
    state.groups.push(cp.group());
    procs.push(cp);
    state.save()?;
    let observations = observer(plan);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if let Ok(o) = observations.recv_timeout(Duration::from_millis(500))
            && o.control_ready
        {
            break;
        }
        if procs[0].poll().is_some() || Instant::now() > deadline {
            return Err(UpError::Timeout {
                what: "the control plane".into(),
                secs: 30,
                log: cp_log,
            });
        }
    }
    println!(
        "control plane ready on {}:15010 (debug: {}:15014)",
        plan.node_ip, plan.node_ip
    );
    // The tools' pages, on the host's loopback.
    let uis: Vec<(u16, std::net::SocketAddrV4)> = plan
        .tools
        .iter()
        .filter_map(|t| {
            let port = t.kind.ui_port()?;
            Some((port, std::net::SocketAddrV4::new(t.ip, port)))
        })
        .collect();
    let mut bound = crate::forward::start(&uis).into_iter();
    for t in &plan.tools {
        let at = if t.kind.ui_port().is_some() {
            bound.next().flatten()
        } else {
            None
        };
        println!("{}", crate::telemetry::announce(t, at));
    }
    if let Some(DashboardFn(serve)) = opts.dashboard.clone() {
        let listen = std::net::SocketAddrV4::new(plan.node_ip, DASHBOARD_PORT);
        let control = format!("{}:15014", plan.node_ip);
        std::thread::spawn(move || {
            if let Err(e) = status::in_node_ns(move || serve(listen.into(), control)) {
                tracing::error!(error = %e, "cannot serve the dashboard from the node namespace");
            }
        });
        match crate::forward::start(&[(DASHBOARD_PORT, listen)]).first() {
            Some(Some(host)) => println!("dashboard: the live service graph on http://{host}/"),
            _ => println!(
                "dashboard: the live service graph on http://{listen}/ (inside the mesh network)"
            ),
        }
    }

    // With SPIRE: its server and agent in the node namespace, an entry per sidecar.
    let spire = match &plan.spire {
        Some(bins) => {
            let before = procs.len();
            let started = crate::spire::Spire::start(
                bins,
                &snap.mesh.trust_domain,
                net::NODE_NS,
                &opts.log_dir,
                procs,
            );
            for p in &procs[before..] {
                state.groups.push(p.group());
            }
            state.save()?;
            let spire = started?;
            println!(
                "SPIRE server and agent ready (trust domain {}, agent socket {}): SPIRE issues the sidecars' identities",
                spire.trust_domain(),
                spire.socket().display()
            );
            Some(spire)
        }
        None => None,
    };

    // Pods: capture and sidecar first; each app once its sidecar is ready.
    let tokens = weft_identity::TokenAuthority::load_or_create(&opts.state_dir)?;
    let token_dir = PathBuf::from(crate::state::STATE_DIR).join("tokens");
    std::fs::create_dir_all(&token_dir)?;
    let mut running: Vec<Running> = Vec::new();
    for (i, p) in plan.pods.iter().enumerate() {
        let ns = net::pod_ns(&p.name);
        let mut r = Running {
            pod: p.clone(),
            proxy: None,
            app: None,
            app_started: false,
            app_started_at: None,
            failure: None,
        };
        let mut identity = None;
        if p.sidecar {
            net::run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                &opts.weft.to_string_lossy(),
                "iptables",
            ])?;
            let (wns, wname) = p.workload.clone().unwrap_or_default();
            let token_file = token_dir.join(format!("{}.token", p.name));
            std::fs::write(&token_file, tokens.issue(&wns, &wname))?;
            rustix::fs::chown(
                &token_file,
                rustix::process::Uid::from_raw(1337).into(),
                rustix::process::Gid::from_raw(1337).into(),
            )
            .map_err(std::io::Error::from)?;
            rustix::fs::chmod(&token_file, rustix::fs::Mode::from_raw_mode(0o600))
                .map_err(std::io::Error::from)?;
            let control = format!("{}:15010", plan.node_ip);
            let workload = format!("{wns}/{wname}");
            let ip = p.ip.to_string();
            let tf = token_file.to_string_lossy().into_owned();
            let mut args = vec![
                "proxy".to_string(),
                "--control-plane".into(),
                control,
                "--workload".into(),
                workload,
                "--token-file".into(),
                tf,
                "--pod-ip".into(),
                ip,
                "--service-account".into(),
                p.service_account.clone(),
            ];
            for (k, v) in &p.labels {
                args.push("--label".into());
                args.push(format!("{k}={v}"));
            }
            let mut groups = Vec::new();
            identity = Some(match &spire {
                Some(spire) => {
                    // The agent tells pods apart by a supplementary group of their own.
                    let gid = crate::spire::GID_BASE + i as u32;
                    groups.push(gid);
                    args.push("--sds-socket".into());
                    args.push(spire.socket().to_string_lossy().into_owned());
                    format!(
                        "{} (SPIRE)",
                        spire.register(&p.name, &p.namespace, &p.service_account, gid)?
                    )
                }
                None => format!(
                    "spiffe://{}/ns/{}/sa/{}",
                    snap.mesh.trust_domain, p.namespace, p.service_account
                ),
            });
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            // As Istio's injector, MeshConfig defaultConfig.proxyMetadata becomes the sidecar's
            // environment (ISTIO_DELTA_XDS=true, for one).
            let proxy = Proc::spawn_in_groups(
                &p.name,
                Role::Proxy,
                &ns,
                Some("1337"),
                &groups,
                &argv(&opts.weft, &a),
                &snap.mesh.default_config.proxy_metadata,
                &opts.log_dir.join(format!("{}-proxy.log", p.name)),
            )?;
            state.groups.push(proxy.group());
            r.proxy = Some(proxy);
        }
        state.pods.push(PodState {
            name: p.name.clone(),
            ns,
            ip: p.ip,
            sidecar: p.sidecar,
            identity,
            proxy_group: r.proxy.as_ref().map(Proc::group),
            app_group: None,
        });
        running.push(r);
    }
    state.save()?;

    // Live config: the control plane watches the directory itself; here, keep the pods' hosts
    // files in step with the services.
    let (watch_tx, watch_rx) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok() {
            let _ = watch_tx.send(());
        }
    })
    .map_err(|e| UpError::Command {
        cmd: "watch".into(),
        reason: e.to_string(),
    })?;
    let _ = watcher.watch(&plan.dir, notify::RecursiveMode::Recursive);

    let title = format!(
        "weft up {} — Ctrl-C or `weft down` to stop",
        plan.dir.display()
    );
    let mut previous: Option<Observation> = None;
    let mut rates: BTreeMap<String, ServiceRates> = BTreeMap::new();
    let mut last_print = Instant::now() - Duration::from_secs(60);
    let mut announced_ready = false;
    let mut last_lines: Vec<String> = Vec::new();
    let modes = mtls_modes(plan, snap);
    while !stop.load(Ordering::SeqCst) {
        // The control plane is kept running as Kubernetes keeps istiod: started again when it
        // exits; the sidecars keep serving on their last config meanwhile.
        if let Some(line) = supervise(&mut procs[0], "the control plane", None, state)? {
            println!("{line}");
            last_lines.push(line);
        }
        let obs = match observations.recv_timeout(Duration::from_millis(1500)) {
            Ok(o) => o,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if watch_rx.try_recv().is_ok() {
            while watch_rx.try_recv().is_ok() {}
            let mesh = Some(plan.dir.join(spec::MESH_FILE)).filter(|p| p.exists());
            let mut store = weft_control::store::ConfigStore::new(plan.dir.clone(), mesh);
            if let Ok(s) = store.load()
                && s.problems.is_empty()
            {
                write_all_hosts(plan, &s)?;
            }
            if let Some((_, merged)) = &telemetry
                && let Err(e) = crate::telemetry::write_mesh(
                    &plan.tools,
                    Some(&plan.dir.join(spec::MESH_FILE)),
                    merged,
                )
            {
                last_lines.push(format!(
                    "mesh.yaml: cannot pass the edit on to the control plane: {e}"
                ));
            }
        }
        // Start apps whose sidecar is ready; notice exits.
        let mut changed = false;
        for r in running.iter_mut() {
            let ready =
                !r.pod.sidecar || obs.proxies_ready.get(&r.pod.name).copied().unwrap_or(false);
            if ready && !r.app_started && r.failure.is_none() {
                r.app_started = true;
                r.app_started_at = Some(Instant::now());
                if !r.pod.command.is_empty() {
                    let cmd: Vec<String> = r
                        .pod
                        .command
                        .iter()
                        .enumerate()
                        .map(|(i, a)| {
                            if i == 0 && a == "weft" {
                                opts.weft.to_string_lossy().into_owned()
                            } else {
                                a.clone()
                            }
                        })
                        .collect();
                    // Like Kubernetes, the pod name is the app's HOSTNAME.
                    let mut env = r.pod.env.clone();
                    env.entry("HOSTNAME".into())
                        .or_insert_with(|| r.pod.name.clone());
                    let app = Proc::spawn(
                        &r.pod.name,
                        Role::App,
                        &net::pod_ns(&r.pod.name),
                        Some(&r.pod.user),
                        &cmd,
                        &env,
                        &opts.log_dir.join(format!("{}-app.log", r.pod.name)),
                    )?;
                    state.groups.push(app.group());
                    if let Some(ps) = state.pods.iter_mut().find(|p| p.name == r.pod.name) {
                        ps.app_group = Some(app.group());
                    }
                    state.save()?;
                    r.app = Some(app);
                }
                changed = true;
            }
            // A sidecar that exits is started again (its app keeps running), as the kubelet
            // restarts a container.
            if let Some(proxy) = r.proxy.as_mut() {
                let what = format!("pod {}: proxy", r.pod.name);
                if let Some(line) = supervise(proxy, &what, Some(&r.pod.name), state)? {
                    if !opts.interactive {
                        println!("{line}");
                    }
                    last_lines.push(line);
                    changed = true;
                }
            }
            if r.failure.is_none()
                && let Some(p) = r.app.as_mut()
                && let Some(status) = p.poll()
            {
                let lines = p.last_lines(5);
                r.failure = Some(format!("{} exited ({status})", p.role.as_str()));
                let msg = format!(
                    "pod {}: {} exited ({status}); last output:\n  {}",
                    r.pod.name,
                    p.role.as_str(),
                    lines.join("\n  ")
                );
                last_lines.push(msg.clone());
                if !opts.interactive {
                    println!("{msg}");
                }
                changed = true;
            }
        }
        if let Some(prev) = &previous
            && let (Some(a), Some(b)) = (prev.at, obs.at)
        {
            let secs = b.duration_since(a).as_secs_f64();
            rates = obs
                .totals
                .iter()
                .map(|(svc, t)| {
                    (
                        svc.clone(),
                        status::rates(&prev.totals.get(svc).cloned().unwrap_or_default(), t, secs),
                    )
                })
                .collect();
        }
        // Every pod has settled: ready, or failed.
        let settled = running.iter().all(|r| {
            r.failure.is_some()
                || (r
                    .app_started_at
                    .is_some_and(|t| t.elapsed() >= Duration::from_secs(1))
                    && (!r.pod.sidecar || obs.proxies_ready.get(&r.pod.name) == Some(&true)))
        });
        if settled && !announced_ready {
            announced_ready = true;
            changed = true;
            let failed: Vec<&str> = running
                .iter()
                .filter(|r| r.failure.is_some())
                .map(|r| r.pod.name.as_str())
                .collect();
            let line = if failed.is_empty() {
                format!("mesh ready: {} pods", running.len())
            } else {
                format!(
                    "mesh up: {} pods, {} failed ({}); the others keep running",
                    running.len(),
                    failed.len(),
                    failed.join(", ")
                )
            };
            if opts.interactive {
                last_lines.push(line);
            } else {
                println!("{line}");
            }
        }
        let rows: Vec<PodRow> = running
            .iter()
            .map(|r| PodRow {
                name: r.pod.name.clone(),
                ip: r.pod.ip,
                proxy: if !r.pod.sidecar {
                    "none".into()
                } else if r
                    .proxy
                    .as_ref()
                    .is_some_and(|p| p.exited_status().is_some())
                {
                    "restarting".into()
                } else if obs.proxies_ready.get(&r.pod.name) == Some(&true) {
                    match r.proxy.as_ref().map_or(0, |p| p.restarts) {
                        0 => "ready".into(),
                        1 => "ready (1 restart)".into(),
                        n => format!("ready ({n} restarts)"),
                    }
                } else {
                    "starting".into()
                },
                app: match (&r.app, r.app_started) {
                    (Some(a), _) if a.exited_status().is_some() => "failed".into(),
                    (Some(_), _) => "running".into(),
                    (None, true) => "-".into(),
                    (None, false) => "waiting".into(),
                },
                identity: state
                    .pods
                    .iter()
                    .find(|p| p.name == r.pod.name)
                    .and_then(|p| p.identity.clone())
                    .unwrap_or_else(|| "-".into()),
                mtls: modes
                    .get(&r.pod.name)
                    .cloned()
                    .unwrap_or_else(|| "off (no sidecar)".into()),
            })
            .collect();
        let text = status::render(&title, &rows, &rates, &last_lines);
        if opts.interactive {
            print!("\x1b[2J\x1b[H{text}");
            let _ = std::io::stdout().flush();
        } else if changed || last_print.elapsed() > Duration::from_secs(30) {
            println!("{text}");
            last_print = Instant::now();
        }
        previous = Some(obs);
    }
    for r in running {
        procs.extend(r.proxy);
        procs.extend(r.app);
    }
    Ok(())
}

/// Runs [`Proc::supervise`] on `p`, keeping the state's process groups current (and, for the
/// sidecar of `pod`, that pod's); the line to show when it exited or was started again.
fn supervise(
    p: &mut Proc,
    what: &str,
    pod: Option<&str>,
    state: &mut State,
) -> Result<Option<String>, UpError> {
    Ok(match p.supervise()? {
        Supervised::Running | Supervised::Waiting => None,
        Supervised::Exited(status, delay) => {
            let lines = p.last_lines(3);
            Some(format!(
                "{what} exited ({status}); starting it again in {:.0?}; last output:\n  {}",
                delay,
                lines.join("\n  ")
            ))
        }
        Supervised::Restarted(group) => {
            state.groups.push(group);
            if let Some(ps) = pod.and_then(|pod| state.pods.iter_mut().find(|p| p.name == pod)) {
                ps.proxy_group = Some(group);
            }
            state.save()?;
            Some(format!("{what} started again (restart {})", p.restarts))
        }
    })
}

/// Each pod's inbound mTLS mode from the PeerAuthentications (workload-level).
pub fn mtls_modes(plan: &Plan, snap: &weft_control::store::Snapshot) -> BTreeMap<String, String> {
    plan.pods
        .iter()
        .filter(|p| p.sidecar)
        .map(|p| {
            let chain = weft_control::authn::PolicyChain::for_workload(
                &snap.resources,
                &snap.mesh.root_namespace,
                &p.namespace,
                &p.labels,
            );
            (p.name.clone(), chain.workload_mode().as_str().to_string())
        })
        .collect()
}
