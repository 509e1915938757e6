//! Command-line interface.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

#[derive(Parser, Debug)]
#[command(
    name = "weft",
    about = "Weft: a service mesh that speaks Istio",
    version
)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info`, `weft_proxy=debug`.
    #[arg(long, global = true, env = "WEFT_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the control plane (istiod): config store, registry, CA, xDS.
    Control(ControlArgs),
    /// Run the sidecar proxy for one workload.
    Proxy(ProxyArgs),
    /// Install (or remove) Istio's traffic-capture rules in this network namespace.
    Iptables(IptablesArgs),
    /// Check Istio YAML files; one line per problem, exit 1 if there is any. Documents Weft
    /// does not apply are named too, without failing: `warning:` for kinds Istio applies and
    /// Weft does not (EnvoyFilter, Gateway API, …), `note:` for Kubernetes kinds (skipped).
    Validate {
        /// Files or directories (scanned for *.yaml / *.yml).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// A mesh config file to check as well.
        #[arg(long)]
        mesh_config: Option<PathBuf>,
    },
    /// Wait until every proxy connected to the control plane has applied a resource's current
    /// content (Istio's `istioctl x wait`); fails at once if the control plane or a proxy
    /// refused it. Exit 1 on refusal or timeout.
    Wait(WaitArgs),
    /// Wait until the sidecar in this pod is ready (Istio's `pilot-agent wait`: the injected
    /// postStart hook when `holdApplicationUntilProxyStarts` is set, so the app's containers
    /// start after it). Exit 1 on timeout.
    ProxyWait(ProxyWaitArgs),
    /// istioctl's proxy-status: every proxy's CDS/LDS/EDS/RDS sync state and the version it
    /// ACKed; with a pod, what differs between the control plane's config and the proxy's.
    #[command(visible_alias = "ps")]
    ProxyStatus(crate::ops::ProxyStatusArgs),
    /// istioctl's proxy-config: a proxy's clusters, listeners, routes, endpoints, secrets, or
    /// its log level, from its admin port.
    #[command(visible_alias = "pc")]
    ProxyConfig(crate::ops::ProxyConfigArgs),
    /// istioctl's analyze: Istio's analyzers (IST0101, IST0102, …) over a directory of YAML;
    /// exit 79 when a message reaches --failure-threshold.
    Analyze(crate::ops::AnalyzeArgs),
    /// istioctl's x describe: what applies to a pod or a service, and the effective mTLS.
    #[command(subcommand)]
    Describe(crate::ops::DescribeCommand),
    /// What the sidecars would do with a request, with no traffic sent: each proxy's own
    /// matching on its current config, from the client's outbound side to the server's inbound.
    Why(crate::ops::WhyArgs),
    /// Serve the live service graph (request rate, errors, p99 and mTLS per edge, each
    /// service's pods, identities, routes and policies) for a running control plane. `weft up`
    /// serves it by itself on 127.0.0.1:20001.
    Dashboard {
        /// The control plane's monitoring/debug address (its registry and config; the sidecars'
        /// metrics are read from each endpoint's port 15020).
        #[arg(long, default_value = "127.0.0.1:15014")]
        control_plane: String,
        /// Where to serve the page.
        #[arg(long, default_value = "127.0.0.1:20001")]
        listen: std::net::SocketAddr,
    },
    /// Run a whole mesh on this machine from a directory of Istio YAML and its weft.yaml.
    Up {
        /// The directory (the control plane's config dir: edits apply live).
        dir: PathBuf,
        /// Where the control plane keeps its CA and credential key between runs.
        #[arg(long, default_value = "/var/lib/weft/up")]
        state_dir: PathBuf,
    },
    /// Stop the mesh `weft up` runs and remove everything it created.
    Down,
    /// Show the running mesh once: pods, identities, per-service traffic.
    Status,
    /// Run a command inside a pod of the running mesh, e.g. `weft exec productpage -- curl …`.
    Exec {
        pod: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Built-in sample apps: Istio's bookinfo, an echo server and a load generator.
    #[command(subcommand)]
    Sample(SampleCommand),
    /// Benchmarks of Weft itself (the data-plane harness is bench/run).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print the manifests that run Weft's control plane on a Kubernetes cluster (namespace,
    /// Istio's CRDs, RBAC, MeshConfig ConfigMap, Deployment and Service `istiod`), for
    /// `kubectl apply -f -`.
    Install(InstallArgs),
    /// Delete from the cluster what `weft install` creates.
    Uninstall {
        #[command(flatten)]
        install: InstallArgs,
        /// The cluster's kubeconfig (default: in-cluster, `$KUBECONFIG`, `~/.kube/config`).
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
    },
    /// Print the version.
    Version,
}

#[derive(Args, Debug)]
struct InstallArgs {
    /// The control plane's namespace.
    #[arg(long, default_value = "istio-system")]
    namespace: String,
    /// The image with the `weft` binary.
    #[arg(long, default_value = concat!("weft:", env!("CARGO_PKG_VERSION")))]
    image: String,
}

impl InstallArgs {
    fn options(&self) -> weft_kube::install::InstallOptions {
        weft_kube::install::InstallOptions {
            namespace: self.namespace.clone(),
            image: self.image.clone(),
        }
    }
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// A simulated fleet of sidecars (ADS clients) against `weft control`: initial sync,
    /// change convergence, endpoint churn, control-plane CPU and memory.
    Xds(weft_bench::XdsLoadArgs),
}

#[derive(Subcommand, Debug)]
enum SampleCommand {
    /// Istio's bookinfo apps: productpage, details, reviews (v1, v2, v3) or ratings.
    Bookinfo(weft_sample::BookinfoArgs),
    /// Echo server: HTTP/1.1 + h2c, gRPC, TCP; optional upstream call chains.
    Echo(weft_sample::EchoArgs),
    /// Istio's external authorizer sample: HTTP (8000) and Envoy ext_authz gRPC (9000),
    /// allowing requests with `x-ext-authz: allow`.
    ExtAuthz(weft_sample::ExtAuthzArgs),
    /// Load generator: closed loop or fixed rate (open loop, latency from the schedule);
    /// also fortio-style: `weft sample load -c 2 -qps 0 -n 20 URL`.
    Load(weft_sample::LoadArgs),
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct ControlArgs {
    #[command(subcommand)]
    sub: Option<ControlSub>,
    /// Directory of Istio YAML (watched; edits apply live). With Kubernetes as the source,
    /// optional (default: an empty `config` directory in --state-dir) and read beside it.
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Read Istio resources and the registry (Services, EndpointSlices, Pods, Nodes) from the
    /// Kubernetes cluster of this kubeconfig.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Read them from the cluster this runs in (its service account), or `$KUBECONFIG`.
    #[arg(long, conflicts_with = "kubeconfig")]
    kube: bool,
    /// The control plane's namespace on Kubernetes, where the ConfigMap `istio` (key `mesh`)
    /// holds the MeshConfig (instead of --mesh-config).
    #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
    kube_namespace: String,
    /// On Kubernetes: where the admission webhooks (sidecar injection at /inject, validation
    /// at /validate) listen, over TLS with a certificate from the control plane's CA (Istio
    /// 15017); empty: none.
    #[arg(long, default_value = "0.0.0.0:15017")]
    webhook_addr: String,
    /// The image the injected istio-init and istio-proxy containers run.
    #[arg(long, default_value = concat!("weft:", env!("CARGO_PKG_VERSION")))]
    proxy_image: String,
    /// The address injected proxies reach the control plane's TLS port at (default:
    /// istiod.<--kube-namespace>.svc:15012; its certificate is verified for
    /// istiod.<--kube-namespace>.svc with the CA root of ConfigMap istio-ca-root-cert).
    #[arg(long)]
    injected_control_plane: Option<String>,
    /// Another directory of Istio YAML read and watched with --config-dir (repeatable);
    /// `weft up` puts the services of the telemetry tools it starts there.
    #[arg(long, value_name = "DIR")]
    extra_config_dir: Vec<PathBuf>,
    /// Mesh config file (MeshConfig YAML).
    #[arg(long)]
    mesh_config: Option<PathBuf>,
    /// Where the CA root, its key and the credential key are kept.
    #[arg(long, default_value = "/var/lib/weft/control")]
    state_dir: PathBuf,
    /// Istio plug-in CA directory (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem).
    #[arg(long)]
    ca_dir: Option<PathBuf>,
    /// Extra CA certificates (PEM) to trust when fetching a RequestAuthentication's jwksUri
    /// over HTTPS, besides the system bundle and /cacerts/extra.pem.
    #[arg(long, value_name = "PEM")]
    jwks_ca: Option<PathBuf>,
    /// Plaintext xDS + CA address (Istio 15010).
    #[arg(long, default_value = "0.0.0.0:15010")]
    xds_addr: SocketAddr,
    /// TLS xDS + CA address (Istio 15012).
    #[arg(long, default_value = "0.0.0.0:15012")]
    xds_tls_addr: SocketAddr,
    /// Monitoring and debug address (Istio 15014).
    #[arg(long, default_value = "0.0.0.0:15014")]
    monitoring_addr: SocketAddr,
    /// Default workload certificate lifetime.
    #[arg(long, default_value = "24h")]
    cert_ttl: weft_api::Duration,
    /// istiod's ENABLE_AUTO_SNI: a SIMPLE or MUTUAL DestinationRule without `sni` sends the
    /// request's host as the SNI (Istio 1.14's default: off).
    #[arg(long, env = "ENABLE_AUTO_SNI", default_value_t = false, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    enable_auto_sni: bool,
    /// istiod's VERIFY_CERTIFICATE_AT_CLIENT: SIMPLE or MUTUAL origination without
    /// `caCertificates` verifies against the system's trust store (and, with ENABLE_AUTO_SNI
    /// and no `subjectAltNames`, the request's host). Istio 1.14's default: off.
    #[arg(long, env = "VERIFY_CERTIFICATE_AT_CLIENT", default_value_t = false, action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    verify_certificate_at_client: bool,
    /// Proxies that may have a push in flight at once (generated, not yet ACKed); bounds the
    /// memory a push to a large fleet takes (Istio: PILOT_PUSH_THROTTLE).
    #[arg(long, default_value_t = weft_xds::server::DEFAULT_PUSH_CONCURRENCY)]
    push_throttle: usize,
    /// Quiet time a change waits for before it is pushed (Istio: PILOT_DEBOUNCE_AFTER).
    #[arg(long, env = "PILOT_DEBOUNCE_AFTER", default_value = "100ms")]
    debounce_after: weft_api::Duration,
    /// Longest a change waits while more keep coming (Istio: PILOT_DEBOUNCE_MAX).
    #[arg(long, env = "PILOT_DEBOUNCE_MAX", default_value = "10s")]
    debounce_max: weft_api::Duration,
    /// Longest a change of endpoints alone waits while more keep coming, so that endpoint
    /// churn reaches proxies within a second.
    #[arg(long, default_value = "250ms")]
    debounce_max_endpoints: weft_api::Duration,
}

#[derive(Args, Debug)]
struct WaitArgs {
    /// The control plane's monitoring address, HOST:PORT (Istio 15014). Default: the control
    /// plane of the running `weft up` (reached from its node namespace, as root), otherwise
    /// 127.0.0.1:15014.
    #[arg(long)]
    control_plane: Option<String>,
    /// How long to wait.
    #[arg(long, default_value = "30s")]
    timeout: weft_api::Duration,
    /// The namespace (instead of NAME.NAMESPACE, for names with dots).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    /// The kind as istioctl names it: virtualservice (vs), destinationrule (dr),
    /// serviceentry (se), gateway (gw), sidecar, workloadentry (we), peerauthentication (pa),
    /// authorizationpolicy, requestauthentication, telemetry, proxyconfig.
    kind: String,
    /// NAME[.NAMESPACE] (namespace `default` if not given).
    name: String,
}

#[derive(Subcommand, Debug)]
enum ControlSub {
    /// Issue the credential a workload's proxy presents to get its certificate.
    Token {
        #[arg(long, default_value = "/var/lib/weft/control")]
        state_dir: PathBuf,
        /// NAMESPACE/NAME of the WorkloadEntry.
        #[arg(long)]
        workload: String,
    },
}

#[derive(Args, Debug)]
struct ProxyArgs {
    /// Control plane address, host:port (plaintext xDS + CA, Istio 15010).
    #[arg(long, env = "WEFT_CONTROL_PLANE", default_value = "127.0.0.1:15010")]
    control_plane: String,
    /// NAMESPACE/NAME of this proxy's WorkloadEntry.
    #[arg(long)]
    workload: String,
    /// File holding the credential from `weft control token`.
    #[arg(long)]
    token_file: PathBuf,
    /// This pod's IP (used in the node id).
    #[arg(long, default_value = "127.0.0.1")]
    pod_ip: String,
    /// The workload's service account (for telemetry; the certificate comes from the CA).
    #[arg(long, default_value = "default")]
    service_account: String,
    /// Workload labels, KEY=VALUE (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Requested certificate lifetime (pilot-agent's SECRET_TTL); renewed halfway through.
    #[arg(long, env = "SECRET_TTL", default_value = "24h")]
    cert_ttl: weft_api::Duration,
    /// Time to drain in-flight requests on SIGTERM (Istio terminationDrainDuration).
    #[arg(long, default_value = "5s")]
    termination_drain: weft_api::Duration,
    /// Data-path worker threads (Istio concurrency, default 2; 0: one per core).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Incremental xDS (delta ADS) instead of state of the world; Istio's `ISTIO_DELTA_XDS`,
    /// usually set mesh-wide in MeshConfig `defaultConfig.proxyMetadata`.
    /// Accepts what Istio's (Go's) boolean parsing does: true/false, 1/0, t/f in any case.
    #[arg(long, env = "ISTIO_DELTA_XDS", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    delta_xds: bool,
    /// The workload identity provider's SDS socket (SPIRE's agent, as Istio mounts it): when
    /// it is served at start, the certificate and trust bundle come from it over Envoy's SDS
    /// API and the control plane's CA is not used.
    #[arg(long, env = "WEFT_SDS_SOCKET", default_value = weft_identity::WORKLOAD_SPIFFE_UDS)]
    sds_socket: PathBuf,
    /// pilot-agent's DNS proxy on 127.0.0.1:15053 (Istio's `ISTIO_META_DNS_CAPTURE`): answers
    /// mesh names from the control plane's name table, forwards the rest.
    #[arg(long, env = "ISTIO_META_DNS_CAPTURE", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    dns_capture: bool,
    /// Addresses for ServiceEntries without any in the name table (Istio's
    /// `ISTIO_META_DNS_AUTO_ALLOCATE`).
    #[arg(long, env = "ISTIO_META_DNS_AUTO_ALLOCATE", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    dns_auto_allocate: bool,
    /// Envoy's `max_request_headers_kb`, where the control plane's HCM leaves it unset: a
    /// request whose headers are larger gets 431.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=8192))]
    max_request_headers_kb: u32,
    /// Envoy's `max_headers_count`: a request with more headers gets 431.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    max_headers_count: u32,
    /// Envoy's `request_headers_timeout`: how long a request's headers may take to arrive
    /// (0s: no limit of its own; the stream idle timeout bounds them, as in Envoy).
    #[arg(long, default_value = "0s")]
    request_headers_timeout: weft_api::Duration,
    /// Envoy's `stream_idle_timeout`: a request whose body or response head makes no progress
    /// for this long gets 408 (0s disables).
    #[arg(long, default_value = "5m")]
    stream_idle_timeout: weft_api::Duration,
    /// The control plane's CA root (PEM file): xDS and the CA then go over TLS, the control
    /// plane's certificate verified with it (Istio's 15012 with
    /// /var/run/secrets/istio/root-cert.pem, from ConfigMap istio-ca-root-cert).
    #[arg(long)]
    control_plane_root: Option<PathBuf>,
    /// The name the control plane's certificate is verified for (default: the host of
    /// --control-plane; istiod's is istiod.<namespace>.svc).
    #[arg(long)]
    control_plane_name: Option<String>,
    /// The app's own HTTP and TCP probes, run on the status port at
    /// `/app-health/<container>/<readyz|livez|startupz>`: the JSON Istio's injector writes
    /// into `ISTIO_KUBE_APP_PROBERS` when it rewrites a pod's probes.
    #[arg(long, env = "ISTIO_KUBE_APP_PROBERS", default_value = "")]
    app_probers: String,
    /// The app's own Prometheus annotations (`{"scrape": …, "port": …, "path": …}`), as Istio's
    /// injector writes them into `ISTIO_PROMETHEUS_ANNOTATIONS` when it points the pod's
    /// annotations at the status port: `/stats/prometheus` there then adds the app's metrics,
    /// scraped from localhost, after the proxy's.
    #[arg(long, env = "ISTIO_PROMETHEUS_ANNOTATIONS", default_value = "")]
    prometheus_annotations: String,
}

#[derive(Args, Debug)]
struct ProxyWaitArgs {
    /// The readiness URL (the sidecar's status port).
    #[arg(long, default_value = "http://localhost:15020/healthz/ready")]
    url: String,
    /// How long to wait.
    #[arg(long, default_value = "60s")]
    timeout: weft_api::Duration,
    /// How often to ask.
    #[arg(long, default_value = "500ms")]
    period: weft_api::Duration,
}

#[derive(Args, Debug)]
struct IptablesArgs {
    /// Remove the rules instead of installing them.
    #[arg(long)]
    cleanup: bool,
    /// Print the rules without applying them.
    #[arg(long)]
    dry_run: bool,
    #[arg(short = 'p', long, default_value_t = 15001)]
    proxy_port: u16,
    #[arg(short = 'z', long, default_value_t = 15006)]
    inbound_capture_port: u16,
    #[arg(short = 'u', long, default_value_t = 1337)]
    proxy_uid: u32,
    #[arg(short = 'g', long, default_value_t = 1337)]
    proxy_gid: u32,
    #[arg(short = 'b', long, default_value = "*")]
    inbound_ports: String,
    #[arg(short = 'd', long, default_value = "15090,15021,15020")]
    local_exclude_ports: String,
    #[arg(short = 'i', long, default_value = "*")]
    outbound_ip_ranges_include: String,
    #[arg(short = 'x', long, default_value = "")]
    outbound_ip_ranges_exclude: String,
    #[arg(short = 'q', long, default_value = "")]
    outbound_ports_include: String,
    #[arg(short = 'o', long, default_value = "")]
    outbound_ports_exclude: String,
    /// Send DNS to the pod's nameservers (its resolv.conf) to the proxy's DNS port 15053, as
    /// istio-iptables' --redirect-dns (Istio's `ISTIO_META_DNS_CAPTURE`).
    #[arg(long, env = "ISTIO_META_DNS_CAPTURE", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    redirect_dns: bool,
}

fn init_logging(filter: &str) -> anyhow::Result<()> {
    let filter =
        EnvFilter::try_new(filter).with_context(|| format!("bad --log filter {filter:?}"))?;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();
    weft_proxy::admin::set_log_level_hook(Box::new(move |level: Option<&str>| {
        if let Some(level) = level {
            let f = EnvFilter::try_new(level).map_err(|e| format!("bad level {level:?}: {e}"))?;
            handle.reload(f).map_err(|e| e.to_string())?;
        }
        handle
            .with_current(|f| f.to_string())
            .map_err(|e| e.to_string())
    }));
    Ok(())
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Install(a) => {
            print!("{}", weft_kube::install::manifests(&a.options()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Uninstall {
            install,
            kubeconfig,
        } => {
            init_logging(&cli.log)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let deleted = rt.block_on(async {
                let client = weft_kube::client(kubeconfig.as_deref()).await?;
                weft_kube::install::uninstall(client, &install.options()).await
            })?;
            for d in &deleted {
                println!("deleted {d}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            println!("weft {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { paths, mesh_config } => validate(&paths, mesh_config.as_deref()),
        Command::Sample(cmd) => sample(cmd, &cli.log),
        Command::Bench(BenchCommand::Xds(args)) => {
            init_logging(&cli.log)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let json = args.json;
            let report = rt.block_on(weft_bench::run_xds_load(args))?;
            print_report(&report, json)
        }
        Command::Up { dir, state_dir } => {
            init_logging(&cli.log)?;
            let weft = std::env::current_exe().context("cannot find this executable")?;
            let mut opts = weft_up::UpOptions::new(dir, weft);
            opts.state_dir = state_dir;
            opts.dashboard = Some(weft_up::up::DashboardFn(std::sync::Arc::new(
                |listen, control| {
                    Box::pin(async move {
                        let opts = weft_dashboard::Options { listen, control };
                        if let Err(e) = weft_dashboard::run(opts).await {
                            tracing::error!(error = %e, "the dashboard stopped");
                        }
                    })
                },
            )));
            weft_up::up(opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Down => {
            println!("{}", weft_up::down()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status => {
            print!("{}", weft_up::status()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec { pod, cmd } => {
            let never = weft_up::exec(&pod, &cmd)?;
            match never {}
        }
        Command::Iptables(a) => iptables(a),
        Command::Wait(a) => wait(a),
        Command::ProxyWait(a) => proxy_wait(a),
        Command::ProxyStatus(a) => crate::ops::proxy_status(a),
        Command::ProxyConfig(a) => crate::ops::proxy_config(a),
        Command::Analyze(a) => crate::ops::analyze(a),
        Command::Describe(c) => crate::ops::describe(c),
        Command::Why(a) => crate::ops::why(a),
        Command::Dashboard {
            control_plane,
            listen,
        } => {
            init_logging(&cli.log)?;
            println!("dashboard: the live service graph on http://{listen}/");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(weft_dashboard::run(weft_dashboard::Options {
                listen,
                control: control_plane,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Control(a) => {
            if let Some(ControlSub::Token {
                state_dir,
                workload,
            }) = a.sub
            {
                let (ns, name) = workload
                    .split_once('/')
                    .with_context(|| format!("--workload {workload:?} must be NAMESPACE/NAME"))?;
                let tokens = weft_identity::TokenAuthority::load_or_create(&state_dir)
                    .with_context(|| {
                        format!("cannot use the state directory {}", state_dir.display())
                    })?;
                println!("{}", tokens.issue(ns, name));
                return Ok(ExitCode::SUCCESS);
            }
            init_logging(&cli.log)?;
            let on_kube = a.kube || a.kubeconfig.is_some();
            let config_dir = match a.config_dir {
                Some(dir) => dir,
                None if on_kube => {
                    let dir = a.state_dir.join("config");
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("cannot create {}", dir.display()))?;
                    dir
                }
                None => bail!(
                    "--config-dir is required: the directory of Istio YAML to serve (or --kubeconfig / --kube for a cluster)"
                ),
            };
            let mut opts = weft_control::ControlOptions::new(config_dir);
            opts.mesh_config = a.mesh_config;
            opts.extra_config_dirs = a.extra_config_dir;
            opts.state_dir = a.state_dir;
            opts.plugin_ca_dir = a.ca_dir;
            opts.jwks_ca = a.jwks_ca;
            opts.xds_addr = a.xds_addr;
            opts.xds_tls_addr = a.xds_tls_addr;
            opts.monitoring_addr = a.monitoring_addr;
            opts.cert_ttl = a.cert_ttl.get();
            opts.push_throttle = a.push_throttle;
            opts.debounce = weft_control::debounce::Debounce {
                after: a.debounce_after.get(),
                max: a.debounce_max.get(),
                max_endpoints: a.debounce_max_endpoints.get(),
            };
            // The names istiod's certificates carry on Kubernetes (its Service's).
            let istiod = format!("istiod.{}.svc", a.kube_namespace);
            let istiod_names = vec![istiod.clone(), format!("{istiod}.cluster.local")];
            if on_kube {
                opts.tls_names = istiod_names.clone();
            }
            opts.features = weft_control::push::Features {
                enable_auto_sni: a.enable_auto_sni,
                verify_certificate_at_client: a.verify_certificate_at_client,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async {
                let source: Option<Arc<dyn weft_control::source::Source>> = if on_kube {
                    let client = weft_kube::client(a.kubeconfig.as_deref()).await?;
                    let mut source =
                        weft_kube::KubeSource::start(client.clone(), &a.kube_namespace).await?;
                    // The CA from the cluster's Secrets (cacerts, else istio-ca-secret), as
                    // istiod keeps it, unless --ca-dir names one.
                    if opts.plugin_ca_dir.is_none() {
                        use weft_control::source::Source as _;
                        let td = source.snapshot().mesh.map_or_else(
                            || "cluster.local".to_string(),
                            |m| m.trust_domain.clone(),
                        );
                        let material = weft_kube::cacerts::prepare(
                            &client,
                            &a.kube_namespace,
                            &opts.state_dir,
                            &td,
                        )
                        .await?;
                        if let weft_kube::cacerts::CaMaterial::Plugin(dir) = material {
                            opts.plugin_ca_dir = Some(dir);
                        }
                    }
                    if !a.webhook_addr.is_empty() {
                        let ns = &a.kube_namespace;
                        source = source.with_webhook(weft_kube::webhook::WebhookOptions {
                            addr: a.webhook_addr.parse().with_context(|| {
                                format!("--webhook-addr {:?} is not HOST:PORT", a.webhook_addr)
                            })?,
                            names: istiod_names
                                .iter()
                                .cloned()
                                .chain(["localhost".into(), "127.0.0.1".into()])
                                .collect(),
                            namespace: ns.clone(),
                            inject: weft_kube::inject::InjectOptions {
                                image: a.proxy_image.clone(),
                                control_plane: a
                                    .injected_control_plane
                                    .clone()
                                    .unwrap_or_else(|| format!("{istiod}:15012")),
                                control_plane_name: istiod.clone(),
                            },
                        });
                    }
                    Some(Arc::new(source))
                } else {
                    None
                };
                weft_control::run_with(opts, source, shutdown_signal()).await?;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Proxy(a) => {
            init_logging(&cli.log)?;
            let (ns, name) = a
                .workload
                .split_once('/')
                .with_context(|| format!("--workload {:?} must be NAMESPACE/NAME", a.workload))?;
            let mut opts =
                weft_proxy::ProxyOptions::new(a.control_plane, ns.to_string(), name.to_string());
            opts.token_file = Some(a.token_file);
            opts.pod_ip = a.pod_ip;
            opts.service_account = a.service_account;
            opts.labels = parse_labels(&a.labels)?;
            opts.trust_domain = a.trust_domain;
            opts.cert_ttl = a.cert_ttl.get();
            opts.termination_drain = a.termination_drain.get();
            opts.delta_xds = a.delta_xds;
            opts.sds_socket = a.sds_socket;
            opts.dns_capture = a.dns_capture;
            opts.dns_auto_allocate = a.dns_auto_allocate;
            opts.app_probers = weft_proxy::probe::parse(&a.app_probers)?;
            opts.app_metrics =
                weft_proxy::app_metrics::parse(&a.prometheus_annotations, opts.status_port)?;
            opts.control_plane_root = a.control_plane_root;
            opts.control_plane_name = a.control_plane_name;
            let nonzero = |d: std::time::Duration| (!d.is_zero()).then_some(d);
            opts.http_limits = weft_proxy::HttpLimits {
                max_request_headers_kb: a.max_request_headers_kb,
                max_headers_count: a.max_headers_count,
                request_headers_timeout: nonzero(a.request_headers_timeout.get()),
                stream_idle_timeout: nonzero(a.stream_idle_timeout.get()),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(match a.concurrency {
                    0 => std::thread::available_parallelism().map_or(1, usize::from),
                    n => n,
                })
                .thread_name("weft-worker")
                .enable_all()
                .build()?;
            rt.block_on(weft_proxy::run(opts))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn proxy_wait(a: ProxyWaitArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let start = std::time::Instant::now();
    let mut last = String::from("no answer");
    while start.elapsed() < a.timeout.get() {
        match rt.block_on(weft_up::status::get(&a.url)) {
            Some((200, _)) => {
                println!("the sidecar is ready ({} ms)", start.elapsed().as_millis());
                return Ok(ExitCode::SUCCESS);
            }
            Some((code, body)) => last = format!("{code} {}", body.trim()),
            None => last = "no answer".into(),
        }
        std::thread::sleep(a.period.get());
    }
    eprintln!(
        "the sidecar was not ready at {} within {}: last {last}",
        a.url, a.timeout
    );
    Ok(ExitCode::FAILURE)
}

fn sample(cmd: SampleCommand, log: &str) -> anyhow::Result<ExitCode> {
    init_logging(log)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    match cmd {
        SampleCommand::Bookinfo(args) => {
            rt.block_on(weft_sample::run_bookinfo(args))?;
            Ok(ExitCode::SUCCESS)
        }
        SampleCommand::Echo(args) => {
            rt.block_on(weft_sample::run_echo(args))?;
            Ok(ExitCode::SUCCESS)
        }
        SampleCommand::ExtAuthz(args) => {
            rt.block_on(weft_sample::run_ext_authz(args))?;
            Ok(ExitCode::SUCCESS)
        }
        SampleCommand::Load(args) => {
            let args = args.resolve()?;
            let json = args.json;
            let report = rt.block_on(weft_sample::run_load(args))?;
            print_report(&report, json)
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

fn parse_labels(labels: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--label {l:?} must be KEY=VALUE"))
        })
        .collect()
}

fn validate(paths: &[PathBuf], mesh: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let mut problems: Vec<String> = Vec::new();
    let mut notes: Vec<weft_api::Note> = Vec::new();
    let mut count = 0;
    for path in paths {
        if path.is_dir() {
            // A config directory, read as `weft control` and `weft up` read it: Weft's own
            // weft.yaml and mesh.yaml are not Istio resources.
            let dir_mesh = Some(path.join("mesh.yaml")).filter(|m| m.exists());
            let mut store = weft_control::store::ConfigStore::new(path.clone(), dir_mesh);
            let snap = store.load()?;
            count += snap.resources.len();
            let clean = snap.problems.is_empty();
            problems.extend(snap.problems);
            notes.extend(config_dir_notes(path));
            // weft.yaml refers to the WorkloadEntries, so check it once they parse.
            if clean
                && path.join(weft_up::spec::FILE).exists()
                && let Err(e) = weft_up::spec::plan(path, &snap.resources)
            {
                problems.push(e.to_string());
            }
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let parsed = weft_api::parse_documents_with_notes(&text, path);
            count += parsed.resources.len();
            problems.extend(parsed.problems.iter().map(ToString::to_string));
            problems.extend(
                weft_api::validate(&parsed.resources)
                    .iter()
                    .map(ToString::to_string),
            );
            notes.extend(parsed.notes);
        }
    }
    if let Some(m) = mesh {
        let text =
            std::fs::read_to_string(m).with_context(|| format!("cannot read {}", m.display()))?;
        if let Err(ps) = weft_api::parse_mesh_config(&text, m) {
            problems.extend(ps.iter().map(ToString::to_string));
        }
    }
    for n in &notes {
        println!("{n}");
    }
    for p in &problems {
        println!("{p}");
    }
    let warnings = notes.iter().filter(|n| n.is_warning()).count();
    let skipped = notes.len() - warnings;
    let mut also = Vec::new();
    if warnings > 0 {
        also.push(format!("{warnings} warning(s): kinds Weft does not apply"));
    }
    if skipped > 0 {
        also.push(format!("{skipped} note(s): not Istio resources, skipped"));
    }
    let also = if also.is_empty() {
        String::new()
    } else {
        format!(" ({})", also.join("; "))
    };
    if problems.is_empty() {
        eprintln!("{count} resources, no problems{also}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{} problem(s){also}", problems.len());
        Ok(ExitCode::from(1))
    }
}

/// The notes for a config directory: the documents `weft control` skips in the files its store
/// reads (not hidden files, not weft.yaml or mesh.yaml).
fn config_dir_notes(dir: &std::path::Path) -> Vec<weft_api::Note> {
    let hidden = |n: &weft_api::Note| {
        n.file
            .strip_prefix(dir)
            .unwrap_or(&n.file)
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
    };
    let weft_file = |n: &weft_api::Note| {
        matches!(
            n.file.file_name().and_then(|f| f.to_str()),
            Some(weft_control::WEFT_FILE | "mesh.yaml")
        )
    };
    weft_api::load_paths_with_notes(&[dir.to_path_buf()])
        .notes
        .into_iter()
        .filter(|n| !hidden(n) && !weft_file(n))
        .collect()
}

/// `weft wait`: polls the control plane's /debug/config_distribution.
fn wait(a: WaitArgs) -> anyhow::Result<ExitCode> {
    use weft_control::debug::wait::{WaitFor, wait};
    let (name, namespace) = match (a.namespace, a.name.rsplit_once('.')) {
        (Some(ns), _) => (a.name.clone(), ns),
        (None, Some((name, ns))) => (name.to_string(), ns.to_string()),
        (None, None) => (a.name.clone(), "default".to_string()),
    };
    let mut w = WaitFor {
        control_plane: String::new(),
        kind: a.kind,
        namespace,
        name,
        timeout: a.timeout.get(),
    };
    let running_up = weft_up::state::State::load()
        .ok()
        .flatten()
        .filter(|st| st.owner_alive());
    let result = match (a.control_plane, running_up) {
        (None, Some(st)) => {
            // `weft up` runs the control plane in its node namespace; ask from there.
            weft_up::up::require_root().context(
                "the running `weft up` mesh's control plane is reachable from its node namespace only: run `sudo weft wait …`, or pass --control-plane",
            )?;
            w.control_plane = format!("{}:15014", st.node_ip);
            weft_up::status::in_node_ns(move || Box::pin(async move { wait(&w).await }))?
        }
        (control_plane, _) => {
            w.control_plane = control_plane.unwrap_or_else(|| "127.0.0.1:15014".into());
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(wait(&w))
        }
    };
    match result {
        Ok(line) => {
            println!("{line}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("weft wait: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn iptables(a: IptablesArgs) -> anyhow::Result<ExitCode> {
    if a.cleanup {
        weft_proxy::iptables::cleanup()?;
        return Ok(ExitCode::SUCCESS);
    }
    let o = weft_proxy::iptables::CaptureOptions {
        proxy_port: a.proxy_port,
        inbound_port: a.inbound_capture_port,
        proxy_uid: a.proxy_uid,
        proxy_gid: a.proxy_gid,
        include_inbound_ports: a.inbound_ports,
        exclude_inbound_ports: a.local_exclude_ports,
        include_outbound_ranges: a.outbound_ip_ranges_include,
        exclude_outbound_ranges: a.outbound_ip_ranges_exclude,
        include_outbound_ports: a.outbound_ports_include,
        exclude_outbound_ports: a.outbound_ports_exclude,
        dns_servers: if a.redirect_dns {
            let conf = std::fs::read_to_string("/etc/resolv.conf")
                .context("--redirect-dns captures DNS to the nameservers of /etc/resolv.conf")?;
            weft_proxy::nameserver::upstreams_of(&conf)
                .into_iter()
                .map(|a| a.ip())
                .collect()
        } else {
            Vec::new()
        },
    };
    if a.dry_run {
        print!("{}", weft_proxy::iptables::rules(&o)?);
    } else {
        print!("{}", weft_proxy::iptables::install(&o)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a load report as JSON or as its text table.
fn print_report(
    report: &(impl serde::Serialize + std::fmt::Display),
    json: bool,
) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}
