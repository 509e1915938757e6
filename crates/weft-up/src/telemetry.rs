//! `weft.yaml`'s `telemetry:` switch: Prometheus, Jaeger and an OpenTelemetry Collector started
//! beside the mesh, each in a pod of its own (no sidecar), with what makes the mesh use them —
//! the services of their ports (a ServiceEntry and a WorkloadEntry in `istio-system`, in a
//! directory the control plane reads with the user's), MeshConfig providers added to the
//! user's `mesh.yaml` (`zipkin`, `otel-tracing`, `otel`, with tracing and access logging on by
//! default where the user's config leaves them unset, sampling 100% as Istio's demo profile),
//! and a scrape config of every sidecar and the control plane. Their web UIs are forwarded to
//! the host's loopback, so a browser on this machine opens them.
//!
//! ```yaml
//! telemetry:
//!   prometheus: true     # `prometheus` on PATH (Debian's package)
//!   jaeger: true         # $WEFT_JAEGER, else `jaeger` on PATH
//!   collector: true      # $WEFT_OTELCOL, else `otelcol-contrib` or `otelcol` on PATH
//!   binaries: {jaeger: /opt/jaeger/jaeger}   # optional: where a tool is
//! ```

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::UpError;

/// Where `weft up` writes the tools' config and data.
pub const DIR: &str = "/run/weft/telemetry";

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TelemetryFile {
    #[serde(default)]
    pub prometheus: bool,
    #[serde(default)]
    pub jaeger: bool,
    #[serde(default)]
    pub collector: bool,
    #[serde(default)]
    pub binaries: Binaries,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Binaries {
    pub prometheus: Option<PathBuf>,
    pub jaeger: Option<PathBuf>,
    pub collector: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Prometheus,
    Jaeger,
    Collector,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Prometheus, Kind::Jaeger, Kind::Collector];

    /// The `telemetry:` key, and the pod's name.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Prometheus => "prometheus",
            Kind::Jaeger => "jaeger",
            Kind::Collector => "collector",
        }
    }

    pub fn pod(self) -> &'static str {
        match self {
            Kind::Prometheus => "prometheus",
            Kind::Jaeger => "jaeger",
            Kind::Collector => "otel-collector",
        }
    }

    /// Its pod's `app` label, the selector of its services.
    pub fn app(self) -> &'static str {
        match self {
            Kind::Collector => "opentelemetry-collector",
            k => k.pod(),
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::Prometheus => "Prometheus",
            Kind::Jaeger => "Jaeger",
            Kind::Collector => "OpenTelemetry Collector",
        }
    }

    /// The environment variable (scripts/peers' output) and the PATH names tried, in order.
    fn search(self) -> (Option<&'static str>, &'static [&'static str]) {
        match self {
            Kind::Prometheus => (None, &["prometheus"]),
            Kind::Jaeger => (Some("WEFT_JAEGER"), &["jaeger", "jaeger-all-in-one"]),
            Kind::Collector => (Some("WEFT_OTELCOL"), &["otelcol-contrib", "otelcol"]),
        }
    }

    /// The port of its web UI, forwarded to the host's loopback.
    pub fn ui_port(self) -> Option<u16> {
        match self {
            Kind::Prometheus => Some(9090),
            Kind::Jaeger => Some(16686),
            Kind::Collector => None,
        }
    }
}

/// A tool `weft up` runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub kind: Kind,
    pub binary: PathBuf,
    pub ip: Ipv4Addr,
}

impl Tool {
    /// Its config and data directory (owned by `nobody`, the user it runs as).
    pub fn dir(&self) -> PathBuf {
        Path::new(DIR).join(self.kind.pod())
    }

    /// The collector's output: the access logs it received, as OTLP JSON lines.
    pub fn collector_output(&self) -> PathBuf {
        self.dir().join("logs.json")
    }

    /// Its command line.
    pub fn command(&self) -> Vec<String> {
        let bin = self.binary.to_string_lossy().into_owned();
        let dir = self.dir();
        match self.kind {
            Kind::Prometheus => vec![
                bin,
                format!("--config.file={}", dir.join("prometheus.yml").display()),
                format!("--storage.tsdb.path={}", dir.join("data").display()),
                "--web.listen-address=0.0.0.0:9090".into(),
            ],
            Kind::Jaeger => vec![bin],
            Kind::Collector => vec![
                bin,
                format!("--config=file:{}", dir.join("otelcol.yaml").display()),
            ],
        }
    }

    pub fn env(&self) -> std::collections::BTreeMap<String, String> {
        let mut env = std::collections::BTreeMap::new();
        if self.kind == Kind::Jaeger {
            env.insert("JAEGER_LISTEN_HOST".into(), "0.0.0.0".into());
        }
        env
    }
}

/// Finds a tool's binary: the `binaries:` entry (which must exist), else its environment
/// variable, else PATH. None: not installed.
fn find(kind: Kind, given: Option<&PathBuf>, file: &Path) -> Result<Option<PathBuf>, UpError> {
    let (var, names) = kind.search();
    crate::procs::find_binary(
        given,
        var,
        names,
        file,
        &format!("telemetry.binaries.{}", kind.key()),
    )
}

/// The tools of a `telemetry:` section, each at a free address from the top of the subnet;
/// and a notice for each one switched on but not installed (the mesh runs without it).
pub fn resolve(
    t: &TelemetryFile,
    file: &Path,
    subnet: ipnet::Ipv4Net,
    taken: &[Ipv4Addr],
) -> Result<(Vec<Tool>, Vec<String>), UpError> {
    let mut tools = Vec::new();
    let mut notices = Vec::new();
    let mut free = subnet.hosts().rev().filter(|ip| !taken.contains(ip));
    for kind in Kind::ALL {
        let (on, given) = match kind {
            Kind::Prometheus => (t.prometheus, t.binaries.prometheus.as_ref()),
            Kind::Jaeger => (t.jaeger, t.binaries.jaeger.as_ref()),
            Kind::Collector => (t.collector, t.binaries.collector.as_ref()),
        };
        if !on {
            continue;
        }
        let Some(binary) = find(kind, given, file)? else {
            let (var, names) = kind.search();
            notices.push(format!(
                "telemetry.{}: {} is not installed (looked for {}{} on PATH); the mesh runs without \
                 it. {}",
                kind.key(),
                kind.title(),
                var.map(|v| format!("${v}, then ")).unwrap_or_default(),
                names.join(", "),
                match kind {
                    Kind::Prometheus => "Install it with `apt-get install prometheus`.",
                    _ => "Build it with scripts/peers, or set telemetry.binaries.",
                }
            ));
            continue;
        };
        let ip = free.next().ok_or_else(|| UpError::Spec {
            file: file.to_path_buf(),
            field: format!("telemetry.{}", kind.key()),
            message: format!(
                "no free address left in subnet {subnet} for the {} pod",
                kind.title()
            ),
        })?;
        tools.push(Tool { kind, binary, ip });
    }
    Ok((tools, notices))
}

fn find_tool(tools: &[Tool], kind: Kind) -> Option<&Tool> {
    tools.iter().find(|t| t.kind == kind)
}

/// The services of the tools' ports, in `istio-system`: Jaeger as `zipkin` (9411, Zipkin
/// JSON) and `jaeger-collector` (4317, OTLP), the collector as `opentelemetry-collector`
/// (4317), Prometheus as `prometheus` (9090); none has a sidecar.
pub fn services_yaml(tools: &[Tool]) -> String {
    let mut out = String::from("# Generated by weft up for its telemetry tools; do not edit.\n");
    let mut entry = |host: &str, port: u32, port_name: &str, protocol: &str, app: &str| {
        let _ = write!(
            out,
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {host}, namespace: istio-system}}\nspec:\n  hosts: [{host}.istio-system.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports:\n  - {{number: {port}, name: {port_name}, protocol: {protocol}}}\n  workloadSelector: {{labels: {{app: {app}}}}}\n"
        );
    };
    if find_tool(tools, Kind::Jaeger).is_some() {
        entry("zipkin", 9411, "http-zipkin", "HTTP", "jaeger");
        entry("jaeger-collector", 4317, "grpc-otlp", "GRPC", "jaeger");
        entry("tracing", 16686, "http-query", "HTTP", "jaeger");
    }
    if find_tool(tools, Kind::Collector).is_some() {
        entry(
            "opentelemetry-collector",
            4317,
            "grpc-otlp",
            "GRPC",
            "opentelemetry-collector",
        );
    }
    if find_tool(tools, Kind::Prometheus).is_some() {
        entry("prometheus", 9090, "http", "HTTP", "prometheus");
    }
    for t in tools {
        let app = t.kind.app();
        let _ = write!(
            out,
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {app}\n  namespace: istio-system\n  annotations: {{sidecar.istio.io/inject: \"false\"}}\nspec:\n  address: {}\n  labels: {{app: {app}}}\n",
            t.ip
        );
    }
    out
}

/// The user's MeshConfig (YAML text, or none) with the tools' providers added: `zipkin` and
/// `otel-tracing` (Jaeger), `otel` (the collector). Where the user's config leaves them unset,
/// `defaultProviders.tracing` becomes `[otel-tracing]` with `defaultConfig.tracing.sampling`
/// 100, and `defaultProviders.accessLogging` becomes `[otel]` (unless `accessLogFile` is set).
/// A provider name the user already has keeps the user's. Text that is not a YAML mapping is
/// returned as it is, so the control plane reports its problems.
pub fn merged_mesh(user: Option<&str>, tools: &[Tool]) -> String {
    let mut mesh = match user.map(serde_saphyr::from_str::<Value>) {
        None => json!({}),
        Some(Ok(Value::Null)) => json!({}),
        Some(Ok(v @ Value::Object(_))) => v,
        Some(_) => return user.unwrap_or_default().to_string(),
    };
    let Some(m) = mesh.as_object_mut() else {
        return user.unwrap_or_default().to_string();
    };
    let jaeger = find_tool(tools, Kind::Jaeger).is_some();
    let collector = find_tool(tools, Kind::Collector).is_some();
    let mut ours = Vec::new();
    if jaeger {
        ours.push(json!({"name": "zipkin", "zipkin": {"service": "zipkin.istio-system.svc.cluster.local", "port": 9411}}));
        ours.push(json!({"name": "otel-tracing", "opentelemetry": {"service": "jaeger-collector.istio-system.svc.cluster.local", "port": 4317}}));
    }
    if collector {
        ours.push(json!({"name": "otel", "envoyOtelAls": {"service": "opentelemetry-collector.istio-system.svc.cluster.local", "port": 4317}}));
    }
    let providers = m.entry("extensionProviders").or_insert_with(|| json!([]));
    if let Some(list) = providers.as_array_mut() {
        for p in ours {
            if !list.iter().any(|q| q.get("name") == p.get("name")) {
                list.push(p);
            }
        }
    }
    let access_log_file = m
        .get("accessLogFile")
        .and_then(Value::as_str)
        .is_some_and(|f| !f.is_empty());
    if let Some(defaults) = m
        .entry("defaultProviders")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    {
        if jaeger && !defaults.contains_key("tracing") {
            defaults.insert("tracing".into(), json!(["otel-tracing"]));
        }
        if collector && !access_log_file && !defaults.contains_key("accessLogging") {
            defaults.insert("accessLogging".into(), json!(["otel"]));
        }
    }
    if jaeger
        && let Some(tracing) = m
            .entry("defaultConfig")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(|d| d.entry("tracing").or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
    {
        tracing.entry("sampling").or_insert(json!(100));
    }
    let mut text = String::from(
        "# Generated by weft up: the directory's mesh.yaml with the providers of its telemetry tools.\n",
    );
    text.push_str(&serde_json::to_string_pretty(&mesh).unwrap_or_default());
    text.push('\n');
    text
}

/// Prometheus' config: the control plane (`istiod`, :15014) and every sidecar (`envoy-stats`,
/// :15090/stats/prometheus), labelled with the pod and namespace, every 5 s.
pub fn prometheus_config(node_ip: Ipv4Addr, sidecars: &[(String, String, Ipv4Addr)]) -> String {
    let mut out = format!(
        "# Generated by weft up.\nglobal: {{scrape_interval: 5s, evaluation_interval: 5s}}\nscrape_configs:\n- job_name: istiod\n  static_configs:\n  - targets: [\"{node_ip}:15014\"]\n- job_name: envoy-stats\n  metrics_path: /stats/prometheus\n  static_configs:\n"
    );
    for (pod, namespace, ip) in sidecars {
        let _ = writeln!(
            out,
            "  - targets: [\"{ip}:15090\"]\n    labels: {{pod: {pod}, namespace: {namespace}}}"
        );
    }
    out
}

/// The collector's config: OTLP over gRPC and HTTP in, logs and traces out to a file.
pub fn collector_config(output: &Path) -> String {
    format!(
        "# Generated by weft up.\nreceivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 0.0.0.0:4317\n      http:\n        endpoint: 0.0.0.0:4318\nexporters:\n  file:\n    path: {}\n    format: json\n    flush_interval: 1s\nservice:\n  telemetry:\n    metrics:\n      level: none\n  pipelines:\n    logs:\n      receivers: [otlp]\n      exporters: [file]\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n",
        output.display()
    )
}

/// Writes what the tools need (config, data directories owned by `nobody`) under [`DIR`]:
/// returns the extra config directory and the mesh config file for the control plane.
pub fn prepare(
    tools: &[Tool],
    user_mesh: Option<&Path>,
    node_ip: Ipv4Addr,
    sidecars: &[(String, String, Ipv4Addr)],
) -> Result<(PathBuf, PathBuf), UpError> {
    let root = Path::new(DIR);
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    let config = root.join("config");
    std::fs::create_dir_all(&config)?;
    std::fs::write(config.join("services.yaml"), services_yaml(tools))?;
    let mesh = root.join("mesh.yaml");
    write_mesh(tools, user_mesh, &mesh)?;
    let nobody = crate::procs::ids("nobody")?;
    for t in tools {
        let dir = t.dir();
        std::fs::create_dir_all(&dir)?;
        match t.kind {
            Kind::Prometheus => {
                std::fs::write(
                    dir.join("prometheus.yml"),
                    prometheus_config(node_ip, sidecars),
                )?;
                std::fs::create_dir_all(dir.join("data"))?;
            }
            Kind::Collector => {
                std::fs::write(
                    dir.join("otelcol.yaml"),
                    collector_config(&t.collector_output()),
                )?;
            }
            Kind::Jaeger => {}
        }
        chown_tree(&dir, nobody)?;
    }
    Ok((config, mesh))
}

/// (Re)writes the merged mesh config; true when its content changed.
pub fn write_mesh(tools: &[Tool], user_mesh: Option<&Path>, out: &Path) -> Result<bool, UpError> {
    let user = match user_mesh.filter(|p| p.exists()) {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|source| UpError::Read {
            path: p.to_path_buf(),
            source,
        })?),
        None => None,
    };
    let text = merged_mesh(user.as_deref(), tools);
    if std::fs::read_to_string(out).ok().as_deref() == Some(text.as_str()) {
        return Ok(false);
    }
    let tmp = out.with_extension("yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, out)?;
    Ok(true)
}

fn chown_tree(dir: &Path, (uid, gid): (u32, u32)) -> Result<(), UpError> {
    let own = |p: &Path| {
        rustix::fs::chown(
            p,
            Some(rustix::process::Uid::from_raw(uid)),
            Some(rustix::process::Gid::from_raw(gid)),
        )
        .map_err(std::io::Error::from)
    };
    own(dir)?;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            chown_tree(&e.path(), (uid, gid))?;
        } else {
            own(&e.path())?;
        }
    }
    Ok(())
}

/// What `weft up` prints about a tool once it runs: where to open it.
pub fn announce(t: &Tool, forwarded: Option<std::net::SocketAddr>) -> String {
    match (t.kind, forwarded) {
        (Kind::Prometheus, Some(a)) => format!(
            "Prometheus: http://{a} (scrapes every sidecar and the control plane; try \
             sum(rate(istio_requests_total[1m])) by (destination_service))"
        ),
        (Kind::Jaeger, Some(a)) => format!(
            "Jaeger: http://{a} (traces of every request, tracing provider otel-tracing at \
             100% unless mesh.yaml says otherwise)"
        ),
        (Kind::Collector, _) => format!(
            "OpenTelemetry Collector: {}:4317; the access logs it receives (provider otel) are \
             in {}",
            t.ip,
            t.collector_output().display()
        ),
        (k, None) => format!(
            "{}: http://{}:{} inside the mesh network (the host port could not be opened)",
            k.title(),
            t.ip,
            k.ui_port().unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<Tool> {
        Kind::ALL
            .iter()
            .enumerate()
            .map(|(i, &kind)| Tool {
                kind,
                binary: PathBuf::from("/bin/true"),
                ip: Ipv4Addr::new(10, 42, 0, 254 - i as u8),
            })
            .collect()
    }

    #[test]
    fn the_mesh_config_gains_providers_and_defaults_without_losing_the_users() {
        let user = "accessLogFile: /dev/stdout\nextensionProviders:\n- name: otel\n  envoyOtelAls: {service: mine.ns.svc.cluster.local, port: 4317}\ndefaultConfig:\n  tracing: {sampling: 5}\n";
        let text = merged_mesh(Some(user), &tools());
        let m: Value = serde_saphyr::from_str(&text).unwrap();
        let names: Vec<&str> = m["extensionProviders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["otel", "zipkin", "otel-tracing"]);
        assert_eq!(
            m["extensionProviders"][0]["envoyOtelAls"]["service"],
            "mine.ns.svc.cluster.local"
        );
        assert_eq!(m["defaultProviders"]["tracing"], json!(["otel-tracing"]));
        // accessLogFile is set: the user's legacy log stays the default.
        assert!(m["defaultProviders"].get("accessLogging").is_none());
        assert_eq!(m["defaultConfig"]["tracing"]["sampling"], 5);
        assert_eq!(m["accessLogFile"], "/dev/stdout");
        // It parses as a MeshConfig.
        weft_api::parse_mesh_config(&text, Path::new("mesh.yaml")).expect("valid MeshConfig");

        let none = merged_mesh(None, &tools());
        let m: Value = serde_saphyr::from_str(&none).unwrap();
        assert_eq!(m["defaultProviders"]["accessLogging"], json!(["otel"]));
        assert_eq!(m["defaultConfig"]["tracing"]["sampling"], 100);
        let parsed = weft_api::parse_mesh_config(&none, Path::new("mesh.yaml")).unwrap();
        assert_eq!(parsed.default_providers.tracing, ["otel-tracing"]);

        // Not a mapping: passed on as it is, for the control plane to name the problem.
        assert_eq!(merged_mesh(Some("- a\n- b\n"), &tools()), "- a\n- b\n");
    }

    #[test]
    fn the_services_parse_and_point_at_the_tools() {
        let yaml = services_yaml(&tools());
        let (resources, problems) = weft_api::parse_documents(&yaml, Path::new("services.yaml"));
        assert!(problems.is_empty(), "{problems:?}");
        let reg =
            weft_control::registry::Registry::build(&resources, weft_control::push::DOMAIN_SUFFIX);
        for (host, port) in [
            ("zipkin.istio-system.svc.cluster.local", 9411),
            ("jaeger-collector.istio-system.svc.cluster.local", 4317),
            (
                "opentelemetry-collector.istio-system.svc.cluster.local",
                4317,
            ),
        ] {
            assert!(reg.lookup_cluster(host, port).is_ok(), "{host}:{port}");
        }
    }

    #[test]
    fn tools_take_free_addresses_from_the_top_and_missing_ones_are_noticed() {
        let subnet: ipnet::Ipv4Net = "10.42.0.0/24".parse().unwrap();
        let t = TelemetryFile {
            prometheus: true,
            jaeger: true,
            collector: false,
            binaries: Binaries {
                prometheus: Some(PathBuf::from("/bin/true")),
                jaeger: Some(PathBuf::from("/bin/sh")),
                collector: None,
            },
        };
        let (tools, notices) = resolve(
            &t,
            Path::new("weft.yaml"),
            subnet,
            &[Ipv4Addr::new(10, 42, 0, 254)],
        )
        .unwrap();
        assert!(notices.is_empty());
        assert_eq!(tools[0].ip, Ipv4Addr::new(10, 42, 0, 253));
        assert_eq!(tools[1].ip, Ipv4Addr::new(10, 42, 0, 252));
        let bad = TelemetryFile {
            jaeger: true,
            binaries: Binaries {
                jaeger: Some(PathBuf::from("/nonexistent/jaeger")),
                ..Binaries::default()
            },
            ..TelemetryFile::default()
        };
        let e = resolve(&bad, Path::new("weft.yaml"), subnet, &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("telemetry.binaries.jaeger") && e.contains("/nonexistent/jaeger"),
            "{e}"
        );
    }

    #[test]
    fn prometheus_scrapes_the_control_plane_and_each_sidecar() {
        let c = prometheus_config(
            Ipv4Addr::new(10, 42, 0, 1),
            &[(
                "details".into(),
                "default".into(),
                Ipv4Addr::new(10, 42, 0, 11),
            )],
        );
        assert!(c.contains("targets: [\"10.42.0.1:15014\"]"), "{c}");
        assert!(c.contains("targets: [\"10.42.0.11:15090\"]"), "{c}");
        assert!(c.contains("pod: details"), "{c}");
    }
}
