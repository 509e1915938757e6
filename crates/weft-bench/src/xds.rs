//! `weft bench xds`: a simulated fleet of sidecars against a running `weft control`, as Istio's
//! pilot-load. It writes a fleet of services into the control plane's config directory, starts
//! N ADS clients, and times the initial sync, K config changes and an endpoint churn phase,
//! while sampling the control plane's CPU and memory from /proc.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_xds::pb::envoy::config::core::v3::Node;
use weft_xds::pb::google::protobuf::{Struct, Value, value::Kind};
use weft_xds::{AdsClientConfig, ClientState};

use crate::change::{self, Churn, KubeChange, MAX_WRITES, PlannedChange};
use crate::error::BenchError;
use crate::fleet::{self, FleetLayout, FleetWorkload, write_atomic};
use crate::procstat::{self, ProcSample};
use crate::proxy::{CDS, EDS, LDS, ProxyRecord, RDS, Shared, SimProxy, Watches, lock};
use crate::report::{
    ChangeResult, ChurnResult, InitialSync, Percentiles, PhaseCpu, ProcessUsage, TypeCounts,
    XdsLoadReport,
};

/// Arguments of `weft bench xds`.
#[derive(Debug, Clone, clap::Args)]
pub struct XdsLoadArgs {
    /// The control plane's plaintext ADS address, host:port (Istio 15010).
    #[arg(long, default_value = "127.0.0.1:15010")]
    pub control_plane: String,
    /// Simulated sidecars (at most services × endpoints-per-service: each is one WorkloadEntry).
    #[arg(long, default_value_t = 1000)]
    pub proxies: usize,
    /// ServiceEntries to generate.
    #[arg(long, default_value_t = 1000)]
    pub services: usize,
    /// WorkloadEntries per service.
    #[arg(long, default_value_t = 2)]
    pub endpoints_per_service: usize,
    /// Namespaces the services are spread over.
    #[arg(long, default_value_t = 10)]
    pub namespaces: usize,
    /// The control plane's --config-dir: the fleet is written there (bench-*.yaml), then changed.
    #[arg(
        long,
        required_unless_present = "kubeconfig",
        conflicts_with = "kubeconfig"
    )]
    pub config_dir: Option<PathBuf>,
    /// Instead of a directory, the cluster the control plane reads (`weft control
    /// --kubeconfig`): the fleet is made there as Services and Pods (Running and Ready at
    /// their addresses, bound to one Node; the controller manager makes the EndpointSlices),
    /// and changed through the API server.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Config changes to time.
    #[arg(long, default_value_t = 10)]
    pub changes: usize,
    /// Length of the endpoint churn phase (one address change every 100 ms); 0 skips it.
    #[arg(long, default_value_t = 10)]
    pub churn_seconds: u64,
    /// The control plane's pid, to sample its CPU and memory from /proc.
    #[arg(long)]
    pub control_pid: Option<u32>,
    /// Longest wait for the config load, the initial sync and each change.
    #[arg(long, default_value_t = 300)]
    pub timeout_seconds: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The simulated proxies use incremental xDS (as `weft proxy --delta-xds`, Istio's
    /// `ISTIO_DELTA_XDS=true`) instead of state of the world.
    #[arg(long)]
    pub delta: bool,
}

/// Interval between churn writes.
const CHURN_INTERVAL: Duration = Duration::from_millis(100);
/// How often waits look at the proxies.
const POLL: Duration = Duration::from_millis(20);
/// Quiet time that ends a phase: no proxy received anything for this long.
const QUIET: Duration = Duration::from_millis(500);
/// Quiet time that says the control plane has finished loading the fleet.
const LOAD_QUIET: Duration = Duration::from_secs(1);
/// How often the memory sampler reads /proc.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

fn string_value(s: impl Into<String>) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

fn struct_value(fields: Vec<(&str, Value)>) -> Value {
    Value {
        kind: Some(Kind::StructValue(Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        })),
    }
}

/// The node a sidecar of workload `w` sends: Istio's id and the metadata pilot-agent sets.
fn node(id: String, name: &str, namespace: &str, ip: &str, service_account: &str) -> Node {
    let app = service_account.to_string();
    let metadata = Struct {
        fields: [
            ("NAME", string_value(name)),
            ("NAMESPACE", string_value(namespace)),
            ("WORKLOAD_NAME", string_value(name)),
            ("SERVICE_ACCOUNT", string_value(service_account)),
            (
                "INSTANCE_IPS",
                Value {
                    kind: Some(Kind::ListValue(weft_xds::pb::google::protobuf::ListValue {
                        values: vec![string_value(ip)],
                    })),
                },
            ),
            ("LABELS", struct_value(vec![("app", string_value(app))])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    };
    Node {
        id,
        cluster: format!("{name}.{namespace}"),
        metadata: Some(metadata),
        ..Default::default()
    }
}

/// One running simulated proxy.
struct Client {
    record: Arc<Mutex<ProxyRecord>>,
    state: watch::Receiver<ClientState>,
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn spawn_client(endpoint: &str, node: Node, delta: bool, shared: &Arc<Shared>) -> Client {
    let record = Arc::new(Mutex::new(ProxyRecord::new(shared.now())));
    let handler = SimProxy {
        record: record.clone(),
        shared: shared.clone(),
    };
    let config = AdsClientConfig {
        backoff_initial: Duration::from_millis(200),
        backoff_max: Duration::from_secs(5),
        delta,
        ..AdsClientConfig::new(endpoint, node)
    };
    let (tx, state) = watch::channel(ClientState::default());
    let task = tokio::spawn(async move {
        let Err(e) = weft_xds::run_ads_client(config, handler, tx).await;
        tracing::error!(error = %e, "simulated proxy stopped");
    });
    Client {
        record,
        state,
        task,
    }
}

fn workload_node(w: &FleetWorkload) -> Node {
    let ip = w.address.to_string();
    node(w.node_id(), &w.name, &w.namespace, &ip, &w.service_account)
}

/// Polls every proxy until `f` gives a time for each, or `timeout` passes.
async fn wait_all(
    clients: &[Client],
    timeout: Duration,
    f: impl Fn(&ProxyRecord) -> Option<Duration>,
) -> Vec<Option<Duration>> {
    let deadline = Instant::now() + timeout;
    let mut out = vec![None; clients.len()];
    loop {
        let mut pending = 0;
        for (slot, c) in out.iter_mut().zip(clients) {
            if slot.is_none() {
                *slot = f(&lock(&c.record));
                pending += usize::from(slot.is_none());
            }
        }
        if pending == 0 || Instant::now() >= deadline {
            return out;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until no proxy has received anything for `quiet` (at most `max`).
async fn wait_quiet(shared: &Shared, quiet: Duration, max: Duration) {
    let deadline = Instant::now() + max;
    while shared.now().saturating_sub(shared.last_rx()) < quiet && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
}

/// CPU and memory of the control plane (optional) and of this process.
struct Sampler {
    pid: Option<u32>,
    /// Largest RSS seen, KiB: (control plane, fleet).
    peaks: Arc<Mutex<(u64, u64)>>,
    task: JoinHandle<()>,
}

type Mark = (Option<ProcSample>, Option<ProcSample>);

impl Sampler {
    fn start(pid: Option<u32>) -> Self {
        let peaks = Arc::new(Mutex::new((0u64, 0u64)));
        let p = peaks.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let c = pid.and_then(|pid| procstat::sample(Some(pid)).ok());
                let s = procstat::sample(None).ok();
                let mut peaks = lock(&p);
                peaks.0 = peaks.0.max(c.map_or(0, |c| c.rss_kib));
                peaks.1 = peaks.1.max(s.map_or(0, |s| s.rss_kib));
            }
        });
        Sampler { pid, peaks, task }
    }

    fn mark(&self) -> Mark {
        let c = self.pid.and_then(|pid| procstat::sample(Some(pid)).ok());
        let s = procstat::sample(None).ok();
        let mut peaks = lock(&self.peaks);
        peaks.0 = peaks.0.max(c.map_or(0, |c| c.rss_kib));
        peaks.1 = peaks.1.max(s.map_or(0, |s| s.rss_kib));
        (c, s)
    }

    /// Usage of one process from its marks (begin, loaded, synced, changed, churned).
    fn usage(pid: u32, marks: &[Option<ProcSample>], peak_kib: u64) -> Option<ProcessUsage> {
        let m: Vec<ProcSample> = marks.iter().copied().collect::<Option<_>>()?;
        let d = |a: usize, b: usize| m[b].cpu.saturating_sub(m[a].cpu).as_secs_f64();
        let last = m.last()?;
        Some(ProcessUsage {
            pid,
            cpu: PhaseCpu {
                load_s: d(0, 1),
                initial_sync_s: d(1, 2),
                changes_s: d(2, 3),
                churn_s: d(3, 4),
                total_s: d(0, 4),
            },
            rss_peak_mib: peak_kib.max(last.rss_kib) as f64 / 1024.0,
            rss_end_mib: last.rss_kib as f64 / 1024.0,
            rss_hwm_mib: last.hwm_kib as f64 / 1024.0,
        })
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn validate(args: &XdsLoadArgs) -> Result<String, BenchError> {
    let workloads = args.services.saturating_mul(args.endpoints_per_service);
    if args.proxies == 0 {
        return Err(BenchError::InvalidArgs(
            "--proxies must be at least 1".into(),
        ));
    }
    if args.proxies > workloads {
        return Err(BenchError::InvalidArgs(format!(
            "--proxies {} exceeds the fleet's {workloads} WorkloadEntries (--services × \
             --endpoints-per-service); each proxy serves its own workload, so raise one of them",
            args.proxies
        )));
    }
    if args.changes > MAX_WRITES {
        return Err(BenchError::InvalidArgs(format!(
            "--changes must be at most {MAX_WRITES}"
        )));
    }
    if args.churn_seconds.saturating_mul(10) > MAX_WRITES as u64 {
        return Err(BenchError::InvalidArgs(format!(
            "--churn-seconds must be at most {}",
            MAX_WRITES / 10
        )));
    }
    if args.timeout_seconds == 0 {
        return Err(BenchError::InvalidArgs(
            "--timeout-seconds must be at least 1".into(),
        ));
    }
    let endpoint = if args.control_plane.contains("://") {
        args.control_plane.clone()
    } else {
        format!("http://{}", args.control_plane)
    };
    weft_xds::transport::endpoint(&endpoint).map_err(|source| BenchError::ControlPlaneAddress {
        addr: args.control_plane.clone(),
        source,
    })?;
    if let Some(pid) = args.control_pid {
        procstat::sample(Some(pid)).map_err(|source| BenchError::ControlPid { pid, source })?;
    }
    Ok(endpoint)
}

/// Waits until a probe proxy (not one of the fleet) is served the fleet: the churned workload's
/// first address is in its EDS and the control plane has then been quiet for a second. Returns
/// when the probe first saw the fleet, relative to the run's start.
async fn wait_served(
    endpoint: &str,
    args: &XdsLoadArgs,
    layout: &FleetLayout,
    churn: &Churn,
    shared: &Arc<Shared>,
    started: Instant,
) -> Result<Duration, BenchError> {
    let svc = &layout.services[0];
    let probe_ip = std::net::Ipv4Addr::new(10, 127, 255, 254);
    let probe_node = node(
        fleet::node_id(probe_ip, "bench-probe", &svc.namespace),
        "bench-probe",
        &svc.namespace,
        &probe_ip.to_string(),
        "bench-probe",
    );
    let probe = spawn_client(endpoint, probe_node, args.delta, shared);
    let first = Churn::address(0);
    let timeout = Duration::from_secs(args.timeout_seconds);
    loop {
        {
            let rec = lock(&probe.record);
            let has = rec
                .eds_now(churn.cluster)
                .is_some_and(|a| a.contains(&first));
            if has && shared.now().saturating_sub(rec.last_at) >= LOAD_QUIET {
                let seen = rec
                    .first_eds(churn.cluster, Duration::ZERO, |a| a.contains(&first))
                    .unwrap_or(rec.last_at);
                return Ok(seen);
            }
        }
        if started.elapsed() >= timeout {
            let last_error = probe
                .state
                .borrow()
                .last_error
                .clone()
                .unwrap_or_else(|| "none".into());
            return Err(BenchError::ConfigNotServed {
                addr: args.control_plane.clone(),
                dir: args
                    .config_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("the cluster of --kubeconfig")),
                seconds: args.timeout_seconds,
                last_error,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Where the fleet lives: the control plane's config directory, or a cluster.
enum Target {
    Dir,
    Kube(crate::kube::KubeFleet),
}

impl Target {
    async fn change(&self, c: &PlannedChange) -> Result<(), BenchError> {
        match self {
            Target::Dir => write_atomic(&c.file, &c.content).map(|_| ()),
            Target::Kube(k) => match &c.kube {
                KubeChange::Pod(p) => k.pod(p).await,
                KubeChange::Service {
                    name,
                    namespace,
                    pod,
                } => {
                    k.service(name, namespace).await?;
                    k.pod(pod).await
                }
            },
        }
    }

    /// Write `seq` of the churned workload.
    async fn churn(&self, churn: &Churn, seq: usize) -> Result<(), BenchError> {
        match self {
            Target::Dir => write_atomic(&churn.file, &churn.content(seq)).map(|_| ()),
            Target::Kube(k) => {
                let (pod, previous) = churn.pod(seq);
                k.pod(&pod).await?;
                if let Some(prev) = previous {
                    k.delete_pod(churn.namespace(), &prev).await?;
                }
                Ok(())
            }
        }
    }
}

/// Runs one timed change and measures its convergence.
async fn timed_change(
    target: &Target,
    c: &PlannedChange,
    clients: &[Client],
    shared: &Shared,
    timeout: Duration,
) -> Result<(ChangeResult, Vec<Duration>), BenchError> {
    let bytes0 = shared.bytes();
    let counts0 = shared.response_counts();
    let t = shared.now();
    target.change(c).await?;
    let seen = wait_all(clients, timeout, |r| c.probe.seen(r, t)).await;
    let lat: Vec<Duration> = seen.iter().flatten().map(|s| s.saturating_sub(t)).collect();
    wait_quiet(shared, QUIET, timeout).await;
    let bytes = shared.bytes() - bytes0;
    let p = Percentiles::of(&lat);
    tracing::info!(change = %c.description, converged = lat.len(), p99_ms = p.map(|p| p.p99_ms), "change timed");
    Ok((
        ChangeResult {
            change: c.description.clone(),
            xds_type: weft_xds::types::short_name(crate::proxy::TYPES[c.probe.type_index()])
                .to_string(),
            converged: lat.len(),
            missed: clients.len() - lat.len(),
            latency: p,
            bytes,
            responses: TypeCounts::delta(counts0, shared.response_counts()),
        },
        lat,
    ))
}

/// The churn phase: one address change of the churned workload every 100 ms for `seconds`.
async fn churn_phase(
    target: &Target,
    seconds: u64,
    churn: &Churn,
    clients: &[Client],
    shared: &Shared,
    timeout: Duration,
) -> Result<ChurnResult, BenchError> {
    let writes = (seconds * 10) as usize;
    let bytes0 = shared.bytes();
    let counts0 = shared.response_counts();
    let eds0: Vec<u64> = clients
        .iter()
        .map(|c| lock(&c.record).types[EDS].responses)
        .collect();
    let mut times = Vec::with_capacity(writes);
    let mut tick = tokio::time::interval(CHURN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for seq in 1..=writes {
        tick.tick().await;
        times.push(shared.now());
        target.churn(churn, seq).await?;
    }
    let last = Churn::address(writes);
    let cluster = churn.cluster;
    let since = times.first().copied().unwrap_or_default();
    let done = wait_all(clients, timeout, |r| {
        r.first_eds(cluster, since, |a| a.contains(&last))
    })
    .await;
    let mut lags = Vec::with_capacity(writes * clients.len());
    let mut pushes = 0u64;
    for (c, eds0) in clients.iter().zip(&eds0) {
        let rec = lock(&c.record);
        pushes += rec.types[EDS].responses - eds0;
        // (arrival, newest write) of each update of the churn cluster, in arrival order.
        let updates: Vec<(Duration, usize)> = rec
            .eds_log
            .iter()
            .filter(|o| o.cluster == cluster && o.at >= since)
            .filter_map(|o| Churn::newest(&o.addresses).map(|n| (o.at, n)))
            .collect();
        let mut u = 0;
        for (i, t) in times.iter().enumerate() {
            let seq = i + 1;
            while u < updates.len() && (updates[u].1 < seq || updates[u].0 < *t) {
                u += 1;
            }
            match updates.get(u) {
                Some((at, _)) => lags.push(at.saturating_sub(*t)),
                None => break,
            }
        }
    }
    let end = done
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or_else(|| shared.now());
    wait_quiet(shared, QUIET, timeout).await;
    let secs = end.saturating_sub(since).as_secs_f64();
    let per_proxy = pushes as f64 / clients.len().max(1) as f64;
    Ok(ChurnResult {
        writes,
        seconds: secs,
        eds_pushes_per_proxy: per_proxy,
        push_rate_per_s: if secs > 0.0 { per_proxy / secs } else { 0.0 },
        lag: Percentiles::of(&lags),
        undelivered: done.iter().filter(|d| d.is_none()).count(),
        bytes: shared.bytes() - bytes0,
        responses: TypeCounts::delta(counts0, shared.response_counts()),
    })
}

/// Runs the xDS load test against a running control plane whose config directory is
/// `args.config_dir`: writes the fleet and waits until it is served, starts `args.proxies` ADS
/// clients on the current (multi-thread) runtime and times their initial sync, makes
/// `args.changes` timed changes and runs the churn phase. Leaves the fleet and the changes in
/// the directory (the next run replaces them).
pub async fn run_xds_load(args: XdsLoadArgs) -> Result<XdsLoadReport, BenchError> {
    let endpoint = validate(&args)?;
    let timeout = Duration::from_secs(args.timeout_seconds);
    let sampler = Sampler::start(args.control_pid);
    let mut marks = vec![sampler.mark()];

    // Load: write the fleet, wait until a probe proxy is served it.
    let started = Instant::now();
    let (target, layout) = match (&args.config_dir, &args.kubeconfig) {
        (Some(dir), None) => (
            Target::Dir,
            fleet::write_fleet(
                dir,
                args.services,
                args.endpoints_per_service,
                args.namespaces,
            )?,
        ),
        (None, Some(kubeconfig)) => {
            let kube = crate::kube::KubeFleet::connect(kubeconfig).await?;
            let (layout, _) = fleet::plan_fleet(
                Path::new(""),
                args.services,
                args.endpoints_per_service,
                args.namespaces,
            )?;
            kube.create_fleet(&layout).await?;
            (Target::Kube(kube), layout)
        }
        _ => {
            return Err(BenchError::InvalidArgs(
                "give exactly one of --config-dir and --kubeconfig".into(),
            ));
        }
    };
    let mut watches = Watches::default();
    let churn = Churn::new(&layout, &mut watches);
    let mut plan = change::plan(&layout, args.namespaces, args.changes, &mut watches);
    if let Target::Kube(_) = target {
        for c in &mut plan {
            c.description = c
                .description
                .replace("WorkloadEntry", "Pod")
                .replace("ServiceEntry", "Service");
        }
    }
    target.churn(&churn, 0).await?;
    let shared = Arc::new(Shared::new(&watches));
    let offset = shared.start.duration_since(started);
    let seen = wait_served(&endpoint, &args, &layout, &churn, &shared, started).await?;
    let config_load = offset + seen;
    tracing::info!(
        seconds = config_load.as_secs_f64(),
        "control plane serves the fleet"
    );
    marks.push(sampler.mark());

    // Initial sync.
    let bytes0 = shared.bytes();
    let counts0 = shared.response_counts();
    let m = layout.services.len();
    let e = args.endpoints_per_service;
    let t_spawn = shared.now();
    let clients: Vec<Client> = (0..args.proxies)
        .map(|p| {
            let w = &layout.workloads[(p % m) * e + (p / m) % e];
            spawn_client(&endpoint, workload_node(w), args.delta, &shared)
        })
        .collect();
    let synced = wait_all(&clients, timeout, |r| r.synced).await;
    let n_synced = synced.iter().flatten().count();
    if n_synced < clients.len() {
        return Err(BenchError::SyncTimeout {
            synced: n_synced,
            total: clients.len(),
            seconds: args.timeout_seconds,
        });
    }
    let per_proxy: Vec<Duration> = clients
        .iter()
        .zip(&synced)
        .filter_map(|(c, s)| s.map(|s| s.saturating_sub(lock(&c.record).started)))
        .collect();
    let all_synced = synced
        .iter()
        .flatten()
        .max()
        .map_or(Duration::ZERO, |t| t.saturating_sub(t_spawn));
    tracing::info!(
        proxies = n_synced,
        seconds = all_synced.as_secs_f64(),
        "initial sync done"
    );
    wait_quiet(&shared, QUIET, timeout).await;
    let initial = {
        let rec = lock(&clients[0].record);
        InitialSync {
            synced: n_synced,
            per_proxy: Percentiles::of(&per_proxy),
            all_synced_s: all_synced.as_secs_f64(),
            clusters: rec.types[CDS].resources,
            cluster_load_assignments: rec.types[EDS].resources,
            listeners: rec.types[LDS].resources,
            route_tables: rec.types[RDS].resources,
            bytes: shared.bytes() - bytes0,
            responses: TypeCounts::delta(counts0, shared.response_counts()),
        }
    };
    marks.push(sampler.mark());

    // Timed changes.
    let mut changes = Vec::with_capacity(plan.len());
    let mut all_lat = Vec::new();
    for c in &plan {
        let (result, lat) = timed_change(&target, c, &clients, &shared, timeout).await?;
        changes.push(result);
        all_lat.extend(lat);
    }
    marks.push(sampler.mark());

    // Endpoint churn.
    let churn_result = if args.churn_seconds > 0 {
        Some(
            churn_phase(
                &target,
                args.churn_seconds,
                &churn,
                &clients,
                &shared,
                timeout,
            )
            .await?,
        )
    } else {
        None
    };
    marks.push(sampler.mark());

    let mut reasons: HashMap<String, usize> = HashMap::new();
    for c in &clients {
        if let Some(e) = &c.state.borrow().last_error {
            *reasons.entry(e.clone()).or_default() += 1;
        }
    }
    let stream_errors = reasons.values().sum();
    let stream_error = reasons.into_iter().max_by_key(|(_, n)| *n).map(|(e, _)| e);
    let peaks = *lock(&sampler.peaks);
    let control_marks: Vec<Option<ProcSample>> = marks.iter().map(|m| m.0).collect();
    let fleet_marks: Vec<Option<ProcSample>> = marks.iter().map(|m| m.1).collect();
    let control = args
        .control_pid
        .and_then(|pid| Sampler::usage(pid, &control_marks, peaks.0));
    if args.control_pid.is_some() && control.is_none() {
        tracing::warn!(
            "the control plane's /proc entry went away during the run; no CPU or memory figures for it"
        );
    }
    let fleet = Sampler::usage(std::process::id(), &fleet_marks, peaks.1).unwrap_or(ProcessUsage {
        pid: std::process::id(),
        cpu: PhaseCpu::default(),
        rss_peak_mib: 0.0,
        rss_end_mib: 0.0,
        rss_hwm_mib: 0.0,
    });
    drop(clients);
    Ok(XdsLoadReport {
        control_plane: args.control_plane.clone(),
        source: match target {
            Target::Dir => "directory".into(),
            Target::Kube(_) => "kubernetes".into(),
        },
        proxies: args.proxies,
        delta: args.delta,
        services: args.services,
        endpoints_per_service: args.endpoints_per_service,
        namespaces: args.namespaces,
        resources_written: layout.resource_count(),
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        config_load_s: config_load.as_secs_f64(),
        initial,
        changes,
        convergence: Percentiles::of(&all_lat),
        churn: churn_result,
        bytes_total: shared.bytes(),
        stream_errors,
        stream_error,
        control,
        fleet,
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn free_addr() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    fn args(control_plane: String, config_dir: PathBuf) -> XdsLoadArgs {
        XdsLoadArgs {
            control_plane,
            proxies: 30,
            services: 20,
            endpoints_per_service: 2,
            namespaces: 3,
            config_dir: Some(config_dir),
            kubeconfig: None,
            changes: 3,
            churn_seconds: 1,
            control_pid: Some(std::process::id()),
            timeout_seconds: 60,
            json: false,
            delta: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fleet_against_an_in_process_control_plane() {
        let report = fleet_run(false).await;
        assert!(!report.delta);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delta_fleet_against_an_in_process_control_plane() {
        let report = fleet_run(true).await;
        assert!(report.delta);
        assert!(report.to_string().contains("(delta xDS)"));
        // The added service reaches each proxy as its new clusters, route table and
        // assignments, not as the whole configuration again.
        let added = &report.changes[1];
        assert!(added.bytes * 4 < report.initial.bytes, "{added:?}");
    }

    /// Runs a small fleet against a control plane in this process and checks what every run
    /// must show.
    async fn fleet_run(delta: bool) -> XdsLoadReport {
        let config = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let xds = free_addr();
        let mut opts = weft_control::ControlOptions::new(config.path().to_path_buf());
        opts.state_dir = state.path().to_path_buf();
        opts.xds_addr = xds;
        opts.xds_tls_addr = free_addr();
        opts.monitoring_addr = free_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let control = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(weft_control::run(opts, async {
                let _ = stopped.await;
            }))
        });

        // A control plane that could not start says why here rather than as a timeout.
        for _ in 0..20 {
            if control.is_finished() {
                let result = control.join();
                panic!("the control plane stopped at start: {result:?}");
            }
            if std::net::TcpStream::connect(xds).is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let report = run_xds_load(XdsLoadArgs {
            delta,
            ..args(xds.to_string(), config.path().to_path_buf())
        })
        .await
        .unwrap();
        let _ = stop.send(());
        control.join().unwrap().unwrap();

        // Every proxy got the initial config: 2 outbound EDS clusters per service.
        let i = &report.initial;
        assert_eq!(i.synced, 30);
        assert_eq!(i.per_proxy.unwrap().samples, 30);
        assert!(i.clusters >= 40, "{i:?}");
        assert_eq!(i.cluster_load_assignments, 40);
        assert!(i.listeners >= 20 && i.route_tables >= 1, "{i:?}");
        assert!(i.bytes > 0);
        // Every proxy saw each change: an added endpoint, an added service, a relabel.
        assert_eq!(report.changes.len(), 3);
        for c in &report.changes {
            assert_eq!((c.converged, c.missed), (30, 0), "{c:?}");
            assert_eq!(c.latency.unwrap().samples, 30);
            assert!(c.bytes > 0, "{c:?}");
        }
        assert_eq!(
            report
                .changes
                .iter()
                .map(|c| c.xds_type.as_str())
                .collect::<Vec<_>>(),
            ["EDS", "CDS", "EDS"]
        );
        assert_eq!(report.convergence.unwrap().samples, 90);
        // Every proxy ended up with the last churn write, so every write has a lag.
        let churn = report.churn.as_ref().unwrap();
        assert_eq!((churn.writes, churn.undelivered), (10, 0));
        assert_eq!(churn.lag.unwrap().samples, 300);
        assert!(churn.eds_pushes_per_proxy >= 1.0);
        assert_eq!(
            (report.stream_errors, report.stream_error.as_deref()),
            (0, None)
        );
        let control = report.control.as_ref().unwrap();
        assert!(control.rss_peak_mib > 0.0 && control.rss_hwm_mib > 0.0);
        assert!(report.bytes_total >= i.bytes);
        let md = report.to_string();
        assert!(md.contains("| all proxies synced after |"), "{md}");
        assert!(md.contains("relabel"), "{md}");
        report
    }

    #[tokio::test]
    async fn refusals_say_what_to_change() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args("127.0.0.1:1".into(), dir.path().to_path_buf());
        a.proxies = 41;
        let e = run_xds_load(a.clone()).await.unwrap_err();
        assert!(matches!(e, BenchError::InvalidArgs(_)), "{e}");
        assert!(e.to_string().contains("--proxies 41 exceeds"), "{e}");

        a.proxies = 1;
        a.control_pid = Some(u32::MAX);
        let e = run_xds_load(a.clone()).await.unwrap_err();
        assert!(matches!(e, BenchError::ControlPid { .. }), "{e}");

        a.control_pid = None;
        a.control_plane = "not an address".into();
        let e = run_xds_load(a.clone()).await.unwrap_err();
        assert!(matches!(e, BenchError::ControlPlaneAddress { .. }), "{e}");

        // Nothing listens there: the fleet is written but never served.
        a.control_plane = free_addr().to_string();
        a.timeout_seconds = 1;
        let e = run_xds_load(a).await.unwrap_err();
        assert!(matches!(e, BenchError::ConfigNotServed { .. }), "{e}");
        assert!(dir.path().join("bench-fleet-0000.yaml").exists());
        assert!(dir.path().join("bench-churn.yaml").exists());
    }
}
