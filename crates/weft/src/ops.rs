//! The operator tools' command line: istioctl's `proxy-status`, `proxy-config`, `describe` and
//! `analyze`, with its names, columns and flags, and `why` (`weft-ctl` does the work).

use std::process::ExitCode;

use clap::Args;
use weft_ctl::proxy_config::{Filter, Output};
use weft_ctl::{Addresses, Mesh, proxy_status};

/// Where the mesh is, when it is not the running `weft up`.
#[derive(Args, Debug, Clone, Default)]
pub struct Where {
    /// The control plane's monitoring/debug address, HOST:PORT (Istio 15014). Default: the
    /// running `weft up` mesh (as root), otherwise 127.0.0.1:15014.
    #[arg(long, global = true)]
    control_plane: Option<String>,
    /// A proxy's admin address, HOST:PORT (15000), instead of a `weft up` pod name.
    #[arg(long, global = true)]
    admin: Option<String>,
}

impl Where {
    fn mesh(&self) -> anyhow::Result<Mesh> {
        Ok(Mesh::find(&Addresses {
            control_plane: self.control_plane.clone(),
            admin: self.admin.clone(),
        })?)
    }
}

#[derive(Args, Debug)]
pub struct ProxyStatusArgs {
    /// A pod (`weft up` pod name, or NAME.NAMESPACE): compare what the control plane would
    /// send it now with what its proxy holds. With --admin, that proxy.
    pod: Option<String>,
    #[command(flatten)]
    at: Where,
}

#[derive(Args, Debug)]
pub struct ProxyConfigArgs {
    /// cluster, listener, route, endpoint, secret, log or all (istioctl's aliases work too).
    what: String,
    /// The pod (a `weft up` pod name, `NAME.NAMESPACE` accepted); not needed with --admin.
    pod: Option<String>,
    /// -o short (the table), json or yaml (the selected entries of the proxy's compiled
    /// config, as its admin `/config_dump` shows them).
    #[arg(short = 'o', long, default_value = "short")]
    output: String,
    /// Clusters: the FQDN (substring of the name).
    #[arg(long)]
    fqdn: Option<String>,
    /// Clusters: the port; listeners and endpoints: the port.
    #[arg(long)]
    port: Option<u32>,
    /// Clusters: the subset.
    #[arg(long)]
    subset: Option<String>,
    /// Clusters: inbound or outbound.
    #[arg(long)]
    direction: Option<String>,
    /// Listeners and endpoints: the address.
    #[arg(long)]
    address: Option<String>,
    /// Listeners: HTTP, TCP, HTTP+TCP.
    #[arg(long = "type")]
    listener_type: Option<String>,
    /// Routes: the route configuration's name.
    #[arg(long)]
    name: Option<String>,
    /// Endpoints: the cluster's full name.
    #[arg(long)]
    cluster: Option<String>,
    /// Endpoints: the health status (healthy).
    #[arg(long)]
    status: Option<String>,
    /// log: set the level (`debug`, `warning`, `weft_proxy::xds:trace`, comma-separated).
    #[arg(long)]
    level: Option<String>,
    #[command(flatten)]
    at: Where,
}

/// A pod named as istioctl users name it (`NAME` or `NAME.NAMESPACE`) as `weft up` knows it;
/// with direct addresses the name is passed on as given.
fn resolve_pod(pod: &str, mesh: &Mesh) -> anyhow::Result<String> {
    Ok(match mesh {
        Mesh::Up(_) => mesh.pod(pod)?.name.clone(),
        Mesh::Direct { .. } => pod.to_string(),
    })
}

pub fn proxy_status(a: ProxyStatusArgs) -> anyhow::Result<ExitCode> {
    let mesh = a.at.mesh()?;
    if a.pod.is_some() || a.at.admin.is_some() {
        let pod = a
            .pod
            .as_deref()
            .map(|p| resolve_pod(p, &mesh))
            .transpose()?;
        let (text, synced) = proxy_status::pod_diff(&mesh, pod.as_deref())?;
        print!("{text}");
        return Ok(if synced {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    let streams = proxy_status::streams(&mesh)?;
    let version = proxy_status::control_version(&mesh)?;
    print!(
        "{}",
        proxy_status::render(&streams, &mesh.control_addr(), &version)
    );
    Ok(ExitCode::SUCCESS)
}

pub fn proxy_config(a: ProxyConfigArgs) -> anyhow::Result<ExitCode> {
    let mesh = a.at.mesh()?;
    let output: Output = a.output.parse()?;
    let filter = Filter {
        fqdn: a.fqdn,
        port: a.port,
        subset: a.subset,
        direction: a.direction,
        address: a.address,
        listener_type: a.listener_type,
        name: a.name,
        cluster: a.cluster,
        status: a.status,
    };
    let pod = a
        .pod
        .as_deref()
        .map(|p| resolve_pod(p, &mesh))
        .transpose()?;
    let text = weft_ctl::proxy_config::run(
        &mesh,
        pod.as_deref(),
        &a.what,
        &filter,
        output,
        a.level.as_deref(),
    )?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// Files or directories of Istio YAML (and the Kubernetes resources beside them).
    /// Default: the running `weft up` mesh's directory.
    paths: Vec<std::path::PathBuf>,
    /// log (istioctl's lines), json or yaml.
    #[arg(short = 'o', long, default_value = "log")]
    output: String,
    /// Exit 79 when a message is at this level or above: Error, Warning or Info.
    #[arg(long, default_value = "Error")]
    failure_threshold: String,
    /// Print messages at this level or above.
    #[arg(long, default_value = "Info")]
    output_threshold: String,
    /// A MeshConfig file (its rootNamespace, …).
    #[arg(long = "meshConfigFile", alias = "mesh-config")]
    mesh_config: Option<std::path::PathBuf>,
}

pub fn analyze(a: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    use weft_ctl::analyze::{Format, Input, Level, analyze, report};
    let level = |s: &str| {
        Level::parse(s)
            .ok_or_else(|| anyhow::anyhow!("{s:?} is not a level: use Error, Warning or Info"))
    };
    let format = match a.output.as_str() {
        "log" => Format::Log,
        "json" => Format::Json,
        "yaml" => Format::Yaml,
        other => anyhow::bail!("output format {other:?} not supported: use log, json or yaml"),
    };
    let mut paths = a.paths;
    let mut mesh_config = a.mesh_config;
    if paths.is_empty() {
        let st = weft_up::state::State::load()?
            .filter(|s| s.owner_alive())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "name the files or directories to analyze (no `weft up` mesh is running)"
                )
            })?;
        let mesh = st.dir.join(weft_up::spec::MESH_FILE);
        if mesh_config.is_none() && mesh.exists() {
            mesh_config = Some(mesh);
        }
        paths.push(st.dir);
    }
    let input = Input::load(&paths, mesh_config.as_deref());
    let what = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let (stdout, stderr, code) = report(
        &analyze(&input),
        format,
        level(&a.failure_threshold)?,
        level(&a.output_threshold)?,
        &what,
    );
    print!("{stdout}");
    eprint!("{stderr}");
    Ok(ExitCode::from(code))
}

#[derive(clap::Subcommand, Debug)]
pub enum DescribeCommand {
    /// A pod: its services and ports, the DestinationRules, VirtualServices, RBAC policies,
    /// PeerAuthentications (effective mTLS per port), AuthorizationPolicies,
    /// RequestAuthentications and Telemetry that apply to it.
    #[command(visible_alias = "po")]
    Pod {
        pod: String,
        #[command(flatten)]
        at: Where,
    },
    /// A service: its ports, and the DestinationRule and VirtualService for its pods.
    #[command(visible_alias = "svc")]
    Service {
        /// NAME or NAME.NAMESPACE.
        service: String,
        #[command(flatten)]
        at: Where,
    },
}

pub fn describe(c: DescribeCommand) -> anyhow::Result<ExitCode> {
    let text = match c {
        DescribeCommand::Pod { pod, at } => {
            let mesh = at.mesh()?;
            let pod = resolve_pod(&pod, &mesh)?;
            weft_ctl::describe::pod(&mesh, &pod)?
        }
        DescribeCommand::Service { service, at } => {
            weft_ctl::describe::service(&at.mesh()?, &service)?
        }
    };
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct WhyArgs {
    /// The client pod (`weft up` pod name, or NAME.NAMESPACE).
    #[arg(long)]
    from: String,
    /// The request method.
    #[arg(short = 'X', long = "request", default_value = "GET")]
    method: String,
    /// A request header, `name: value` (repeatable), as curl's -H.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,
    /// Output: text, or json (each proxy's stages as they computed them).
    #[arg(short = 'o', long, default_value = "text")]
    output: String,
    /// `http://HOST[:PORT][/PATH]` or `tcp://HOST:PORT`, as the client's app would dial it.
    url: String,
}

pub fn why(a: WhyArgs) -> anyhow::Result<ExitCode> {
    let mesh = Mesh::find(&Addresses::default())?;
    let answer = weft_ctl::why::why(
        &mesh,
        &weft_ctl::why::Question {
            from: a.from,
            method: a.method,
            url: a.url,
            headers: a.headers,
        },
    )?;
    match a.output.as_str() {
        "text" => print!("{}", weft_ctl::why::render(&answer)),
        "json" => println!("{}", serde_json::to_string_pretty(&answer)?),
        other => anyhow::bail!("output format {other:?} not supported: use text or json"),
    }
    Ok(ExitCode::SUCCESS)
}
