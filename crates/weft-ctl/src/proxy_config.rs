//! `weft proxy-config cluster|listener|route|endpoint|secret|log|all`: istioctl's summaries of
//! what one proxy holds, computed as istioctl computes them from Envoy's config dump (here the
//! proxy's `/config_dump?format=proto`), its `/clusters` and `/certs`.

mod summary;

use serde_json::{Value, json};
use weft_xds::dump::Resources;

use crate::error::CtlError;
use crate::table;
use crate::target::Mesh;

pub use summary::{
    istio_config, listener_rows, parse_cluster_name, render_config, route_domains, route_match,
};

/// istioctl's `-o`: the summary table, or the selected entries as JSON or YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Short,
    Json,
    Yaml,
}

impl std::str::FromStr for Output {
    type Err = CtlError;
    fn from_str(s: &str) -> Result<Self, CtlError> {
        match s {
            "short" => Ok(Output::Short),
            "json" => Ok(Output::Json),
            "yaml" => Ok(Output::Yaml),
            other => Err(CtlError::Usage(format!(
                "output format {other:?} not supported: use short, json or yaml"
            ))),
        }
    }
}

/// The filters istioctl's proxy-config subcommands take (each applies where istioctl applies it).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub fqdn: Option<String>,
    pub port: Option<u32>,
    pub subset: Option<String>,
    pub direction: Option<String>,
    pub address: Option<String>,
    pub listener_type: Option<String>,
    pub name: Option<String>,
    pub cluster: Option<String>,
    pub status: Option<String>,
}

impl Filter {
    /// istioctl's cluster filters: substring tests on the cluster name.
    fn cluster(&self, name: &str) -> bool {
        self.fqdn.as_ref().is_none_or(|f| name.contains(f.as_str()))
            && self
                .direction
                .as_ref()
                .is_none_or(|d| name.contains(d.as_str()))
            && self
                .subset
                .as_ref()
                .is_none_or(|s| name.contains(s.as_str()))
            && self.port.is_none_or(|p| name.contains(&format!("|{p}|")))
    }
}

/// What `-o json|yaml` prints: the compiled entries from the proxy's `/config_dump` whose
/// names were selected.
fn structured(entries: Vec<Value>, output: Output) -> Result<String, CtlError> {
    let v = Value::Array(entries);
    match output {
        Output::Yaml => serde_saphyr::to_string(&v).map_err(|e| CtlError::Decode {
            what: "the selection".into(),
            reason: e.to_string(),
        }),
        _ => Ok(serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"),
    }
}

fn compiled_section(mesh: &Mesh, pod: Option<&str>, section: &str) -> Result<Vec<Value>, CtlError> {
    let body = mesh.admin_ok(pod, "/config_dump")?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| CtlError::Decode {
        what: "the proxy's /config_dump".into(),
        reason: e.to_string(),
    })?;
    Ok(v[section].as_array().cloned().unwrap_or_default())
}

fn selected(entries: Vec<Value>, names: &[String]) -> Vec<Value> {
    entries
        .into_iter()
        .filter(|e| {
            e["name"]
                .as_str()
                .is_some_and(|n| names.iter().any(|x| x == n))
        })
        .collect()
}

/// The proxy's xDS resources.
pub fn resources(mesh: &Mesh, pod: Option<&str>) -> Result<Resources, CtlError> {
    Ok(Resources::from_config_dump(
        &mesh.admin_ok(pod, "/config_dump?format=proto")?,
    )?)
}

/// `proxy-config cluster`.
pub fn clusters(res: &Resources, f: &Filter) -> (String, Vec<String>) {
    use weft_xds::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
    let mut rows: Vec<(Vec<String>, String)> = Vec::new();
    for (name, c) in &res.clusters {
        if !f.cluster(name) {
            continue;
        }
        let kind = match &c.cluster_discovery_type {
            Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t)
                .map(|t| t.as_str_name().to_string())
                .unwrap_or_default(),
            Some(ClusterDiscoveryType::ClusterType(_)) => String::new(),
            None => "STATIC".to_string(),
        };
        let rule = c
            .metadata
            .as_ref()
            .and_then(summary::istio_config)
            .map(|p| render_config(&p))
            .unwrap_or_default();
        let row = match parse_cluster_name(name) {
            Some((direction, port, subset, fqdn)) => vec![
                fqdn.to_string(),
                port.to_string(),
                if subset.is_empty() { "-" } else { subset }.to_string(),
                direction.to_string(),
                kind,
                rule,
            ],
            None => vec![name.clone(), "-".into(), "-".into(), "-".into(), kind, rule],
        };
        rows.push((row, name.clone()));
    }
    rows.sort_by(|(a, _), (b, _)| {
        (&a[0], &a[2], a[1].parse::<u32>().unwrap_or(0), &a[3]).cmp(&(
            &b[0],
            &b[2],
            b[1].parse::<u32>().unwrap_or(0),
            &b[3],
        ))
    });
    let names = rows.iter().map(|(_, n)| n.clone()).collect();
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(r, _)| r).collect();
    (
        table::render(
            &[
                "SERVICE FQDN",
                "PORT",
                "SUBSET",
                "DIRECTION",
                "TYPE",
                "DESTINATION RULE",
            ],
            &rows,
            5,
        ),
        names,
    )
}

/// `proxy-config listener` (verbose: a row per filter chain).
pub fn listeners(res: &Resources, f: &Filter) -> (String, Vec<String>) {
    // (port, address, name, rows)
    type Entry = (u32, String, String, Vec<(String, String)>);
    let mut all: Vec<Entry> = Vec::new();
    for (name, l) in &res.listeners {
        let (addr, port) = summary::listener_address(l);
        if f.address
            .as_ref()
            .is_some_and(|a| !a.eq_ignore_ascii_case(&addr))
            || f.port.is_some_and(|p| p != port)
        {
            continue;
        }
        let chains = listener_rows(l);
        if let Some(t) = &f.listener_type {
            let kind = summary::listener_type(l);
            if !t.eq_ignore_ascii_case(kind) {
                continue;
            }
        }
        all.push((port, addr, name.clone(), chains));
    }
    all.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let mut rows = Vec::new();
    for (port, addr, _, mut chains) in all.clone() {
        chains.sort_by(|a, b| b.1.cmp(&a.1));
        for (m, d) in chains {
            rows.push(vec![addr.clone(), port.to_string(), m, d]);
        }
    }
    let names = all.into_iter().map(|x| x.2).collect();
    (
        table::render(&["ADDRESS", "PORT", "MATCH", "DESTINATION"], &rows, 1),
        names,
    )
}

/// `proxy-config route`.
pub fn routes(res: &Resources, f: &Filter) -> (String, Vec<String>) {
    let mut configs: Vec<_> = res
        .routes
        .values()
        .filter(|r| f.name.as_ref().is_none_or(|n| n == &r.name))
        .collect();
    configs.sort_by(
        |a, b| match (a.name.parse::<u32>(), b.name.parse::<u32>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            _ => a.name.cmp(&b.name),
        },
    );
    let mut rows = Vec::new();
    for rc in &configs {
        for vh in &rc.virtual_hosts {
            for r in &vh.routes {
                if summary::is_passthrough(r) {
                    continue;
                }
                let vs = r
                    .metadata
                    .as_ref()
                    .and_then(summary::istio_config)
                    .map(|p| render_config(&p))
                    .unwrap_or_default();
                rows.push(vec![
                    rc.name.clone(),
                    route_domains(&vh.domains),
                    r.r#match.as_ref().map(route_match).unwrap_or_default(),
                    vs,
                ]);
            }
            if vh.routes.is_empty() {
                rows.push(vec![
                    rc.name.clone(),
                    route_domains(&vh.domains),
                    "/*".into(),
                    "404".into(),
                ]);
            }
        }
    }
    let names = configs.iter().map(|r| r.name.clone()).collect();
    (
        table::render(&["NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"], &rows, 5),
        names,
    )
}

/// One host of the proxy's `/clusters`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStatus {
    pub cluster: String,
    pub address: String,
    pub port: u16,
    pub failed_outlier_check: bool,
    pub weight: u32,
}

/// Reads Envoy's `/clusters` text (`<cluster>::<host>::<stat>::<value>`).
pub fn parse_clusters_text(text: &str) -> Vec<HostStatus> {
    let mut out: Vec<HostStatus> = Vec::new();
    let mut index: std::collections::HashMap<(&str, std::net::SocketAddr), usize> =
        std::collections::HashMap::new();
    for line in text.lines() {
        let Some((cluster, rest)) = line.split_once("::") else {
            continue;
        };
        let Some((rest, value)) = rest.rsplit_once("::") else {
            continue;
        };
        let Some((host, stat)) = rest.rsplit_once("::") else {
            continue;
        };
        let Ok(addr) = host.parse::<std::net::SocketAddr>() else {
            continue;
        };
        let idx = *index.entry((cluster, addr)).or_insert_with(|| {
            out.push(HostStatus {
                cluster: cluster.to_string(),
                address: addr.ip().to_string(),
                port: addr.port(),
                failed_outlier_check: false,
                weight: 1,
            });
            out.len() - 1
        });
        match stat {
            "health_flags" => {
                out[idx].failed_outlier_check = value.contains("/failed_outlier_check")
            }
            "weight" => out[idx].weight = value.parse().unwrap_or(1),
            _ => {}
        }
    }
    out
}

/// `proxy-config endpoint`: ENDPOINT, STATUS, OUTLIER CHECK, CLUSTER.
pub fn endpoints(hosts: &[HostStatus], f: &Filter) -> (String, Vec<HostStatus>) {
    let mut sel: Vec<HostStatus> = hosts
        .iter()
        .filter(|h| {
            f.address
                .as_ref()
                .is_none_or(|a| a.eq_ignore_ascii_case(&h.address))
                && f.port.is_none_or(|p| p == u32::from(h.port))
                && f.cluster
                    .as_ref()
                    .is_none_or(|c| c.eq_ignore_ascii_case(&h.cluster))
                && f.status
                    .as_ref()
                    .is_none_or(|s| s.eq_ignore_ascii_case("HEALTHY"))
        })
        .cloned()
        .collect();
    sel.sort_by(|a, b| (&a.address, a.port, &a.cluster).cmp(&(&b.address, b.port, &b.cluster)));
    let rows: Vec<Vec<String>> = sel
        .iter()
        .map(|h| {
            vec![
                if h.port == 0 {
                    h.address.clone()
                } else if h.address.contains(':') {
                    format!("[{}]:{}", h.address, h.port)
                } else {
                    format!("{}:{}", h.address, h.port)
                },
                // The EDS health: Weft's control plane sends ready endpoints only.
                "HEALTHY".into(),
                if h.failed_outlier_check {
                    "FAILED"
                } else {
                    "OK"
                }
                .into(),
                h.cluster.clone(),
            ]
        })
        .collect();
    (
        table::render(
            &["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"],
            &rows,
            5,
        ),
        sel,
    )
}

/// The proxy's `/certs`.
fn certs(mesh: &Mesh, pod: Option<&str>) -> Result<Value, CtlError> {
    serde_json::from_slice(&mesh.admin_ok(pod, "/certs")?).map_err(|e| CtlError::Decode {
        what: "the proxy's /certs".into(),
        reason: e.to_string(),
    })
}

/// Envoy's hex serial number in decimal, as istioctl 1.14 prints it (`-` when not hex).
fn decimal_serial(hex: &str) -> String {
    num_bigint::BigUint::parse_bytes(hex.as_bytes(), 16)
        .map_or_else(|| "-".into(), |n| n.to_string())
}

/// `proxy-config secret` from the proxy's `/certs`: `default` (the workload chain) and
/// `ROOTCA` (the first trusted root).
pub fn secrets(certs: &Value) -> String {
    let Some(c) = certs["certificates"].as_array().and_then(|a| a.first()) else {
        return "No active or warming secrets found.\n".into();
    };
    let row = |name: &str, kind: &str, cert: Option<&Value>| -> Vec<String> {
        match cert.filter(|c| c.get("error").is_none()) {
            Some(c) => vec![
                name.into(),
                kind.into(),
                "ACTIVE".into(),
                "true".into(),
                decimal_serial(c["serial_number"].as_str().unwrap_or_default()),
                c["expiration_time"].as_str().unwrap_or_default().into(),
                c["valid_from"].as_str().unwrap_or_default().into(),
            ],
            None => vec![
                name.into(),
                String::new(),
                "ACTIVE".into(),
                "false".into(),
                String::new(),
                String::new(),
                String::new(),
            ],
        }
    };
    let rows = vec![
        row(
            "default",
            "Cert Chain",
            c["cert_chain"].as_array().and_then(|a| a.first()),
        ),
        row(
            "ROOTCA",
            "CA",
            c["ca_cert"].as_array().and_then(|a| a.first()),
        ),
    ];
    table::render(
        &[
            "RESOURCE NAME",
            "TYPE",
            "STATUS",
            "VALID CERT",
            "SERIAL NUMBER",
            "NOT AFTER",
            "NOT BEFORE",
        ],
        &rows,
        5,
    )
}

/// istioctl's `--level` (`debug`, `weft_proxy::xds:trace`, `info,weft_proxy=debug`) as the
/// proxy's tracing filter.
pub fn log_filter(level: &str) -> Result<String, CtlError> {
    const LEVELS: [(&str, &str); 7] = [
        ("trace", "trace"),
        ("debug", "debug"),
        ("info", "info"),
        ("warning", "warn"),
        ("warn", "warn"),
        ("error", "error"),
        ("off", "off"),
    ];
    let level_of = |l: &str| {
        let l = if l == "critical" { "error" } else { l };
        LEVELS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(l))
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| {
                CtlError::Usage(format!(
                    "unrecognized logging level: {l} (use trace, debug, info, warning, error, critical or off)"
                ))
            })
    };
    let mut out = Vec::new();
    for item in level.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let split = item
            .rsplit_once('=')
            .or_else(|| item.rsplit_once(':').filter(|(n, _)| !n.ends_with(':')));
        match split {
            None => out.push(level_of(item)?),
            Some((name, l)) => out.push(format!("{name}={}", level_of(l)?)),
        }
    }
    if out.is_empty() {
        return Err(CtlError::Usage("--level needs a level".into()));
    }
    Ok(out.join(","))
}

/// Runs one `proxy-config` subcommand and returns what to print.
pub fn run(
    mesh: &Mesh,
    pod: Option<&str>,
    what: &str,
    f: &Filter,
    output: Output,
    level: Option<&str>,
) -> Result<String, CtlError> {
    match what {
        "cluster" | "clusters" | "c" => {
            let (text, names) = clusters(&resources(mesh, pod)?, f);
            pick(mesh, pod, "clusters", text, &names, output)
        }
        "listener" | "listeners" | "l" => {
            let (text, names) = listeners(&resources(mesh, pod)?, f);
            pick(mesh, pod, "listeners", text, &names, output)
        }
        "route" | "routes" | "r" => {
            let (text, names) = routes(&resources(mesh, pod)?, f);
            pick(mesh, pod, "routes", text, &names, output)
        }
        "endpoint" | "endpoints" | "ep" => {
            let text = String::from_utf8_lossy(&mesh.admin_ok(pod, "/clusters")?).into_owned();
            let (table, sel) = endpoints(&parse_clusters_text(&text), f);
            match output {
                Output::Short => Ok(table),
                o => structured(
                    sel.iter()
                        .map(|h| {
                            json!({"cluster": h.cluster, "address": h.address, "port": h.port,
                                "health_status": {"eds_health_status": "HEALTHY",
                                    "failed_outlier_check": h.failed_outlier_check},
                                "weight": h.weight})
                        })
                        .collect(),
                    o,
                ),
            }
        }
        "secret" | "secrets" | "s" => {
            let certs = certs(mesh, pod)?;
            match output {
                Output::Short => Ok(secrets(&certs)),
                o => structured(vec![certs], o),
            }
        }
        "log" => {
            let path = match level {
                Some(l) => format!("/logging?level={}", log_filter(l)?),
                None => "/logging".into(),
            };
            let method = if level.is_some() {
                http::Method::POST
            } else {
                http::Method::GET
            };
            let a = mesh.admin(pod, method, &path)?;
            if a.status != 200 {
                return Err(CtlError::Status {
                    what: "the proxy's /logging".into(),
                    status: a.status,
                    body: a.text(),
                });
            }
            Ok(a.text())
        }
        "all" => {
            let res = resources(mesh, pod)?;
            if output != Output::Short {
                let body = mesh.admin_ok(pod, "/config_dump")?;
                let v: Value = serde_json::from_slice(&body).map_err(|e| CtlError::Decode {
                    what: "the proxy's /config_dump".into(),
                    reason: e.to_string(),
                })?;
                return structured(vec![v], output);
            }
            let certs = certs(mesh, pod)?;
            Ok(format!(
                "{}\n{}\n{}\n{}",
                clusters(&res, f).0,
                listeners(&res, f).0,
                routes(&res, f).0,
                secrets(&certs)
            ))
        }
        other => Err(CtlError::Usage(format!(
            "unknown proxy-config type {other:?}: use cluster, listener, route, endpoint, secret, log or all"
        ))),
    }
}

fn pick(
    mesh: &Mesh,
    pod: Option<&str>,
    section: &str,
    text: String,
    names: &[String],
    output: Output,
) -> Result<String, CtlError> {
    match output {
        Output::Short => Ok(text),
        o => structured(selected(compiled_section(mesh, pod, section)?, names), o),
    }
}

#[cfg(test)]
mod tests;
