//! `weft.yaml`: how `weft up` runs the workloads of a directory of Istio YAML. It is Weft's own
//! small file beside the Istio resources (which stay plain Istio YAML): which pods to start and
//! the command of each pod's app.
//!
//! ```yaml
//! subnet: 10.42.0.0/24          # the pods' network; the node (control plane) takes .1
//! pods:
//! - workload: default/details   # a WorkloadEntry of the directory: its address is the pod IP,
//!   command: [weft, sample, echo, --http-port, "9080"]   # `weft` is this binary
//!   user: nobody                # the app's user (never 1337, the proxy's)
//!   env: {GREETING: hello}
//! - name: sleep                 # a pod outside the mesh: no WorkloadEntry, no sidecar
//!   address: 10.42.0.50
//!   sidecar: false
//!   command: [sleep, infinity]
//! telemetry: {prometheus: true, jaeger: true, collector: true}   # see telemetry.rs
//! spire: {enabled: true}        # SPIRE issues the identities; see spire.rs
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use weft_api::{Resource, Spec};

use crate::error::UpError;

/// The name of Weft's file in a `weft up` directory.
pub const FILE: &str = weft_control::WEFT_FILE;
/// The mesh config file `weft up` passes to the control plane when present.
pub const MESH_FILE: &str = "mesh.yaml";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WeftFile {
    #[serde(default = "default_subnet")]
    pub subnet: ipnet::Ipv4Net,
    #[serde(default)]
    pub pods: Vec<PodEntry>,
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetryFile,
    #[serde(default)]
    pub spire: crate::spire::SpireFile,
}

fn default_subnet() -> ipnet::Ipv4Net {
    ipnet::Ipv4Net::new(Ipv4Addr::new(10, 42, 0, 0), 24).unwrap_or_default()
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PodEntry {
    /// `NAMESPACE/NAME` of the WorkloadEntry this pod runs.
    pub workload: Option<String>,
    /// Pod name (default: the WorkloadEntry's name).
    pub name: Option<String>,
    /// Pod IP for pods without a WorkloadEntry.
    pub address: Option<IpAddr>,
    #[serde(default = "default_true")]
    pub sidecar: bool,
    #[serde(default)]
    pub command: Vec<String>,
    pub user: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A pod, resolved against the Istio resources.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub name: String,
    pub ip: Ipv4Addr,
    /// (namespace, name) of its WorkloadEntry.
    pub workload: Option<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    pub namespace: String,
    pub sidecar: bool,
    pub command: Vec<String>,
    pub user: String,
    pub env: BTreeMap<String, String>,
}

/// The resolved plan of a `weft up` directory.
#[derive(Debug, Clone)]
pub struct Plan {
    pub dir: PathBuf,
    pub subnet: ipnet::Ipv4Net,
    pub node_ip: Ipv4Addr,
    pub pods: Vec<Pod>,
    pub mesh_file: Option<PathBuf>,
    /// The telemetry tools to run (their pods are in `pods` too).
    pub tools: Vec<crate::telemetry::Tool>,
    /// Tools switched on but not installed.
    pub notices: Vec<String>,
    /// SPIRE's programs, when SPIRE issues the identities.
    pub spire: Option<crate::spire::Binaries>,
}

fn err(file: &Path, field: String, message: impl Into<String>) -> UpError {
    UpError::Spec {
        file: file.to_path_buf(),
        field,
        message: message.into(),
    }
}

/// Reads `weft.yaml` and resolves its pods against the directory's WorkloadEntries.
pub fn plan(dir: &Path, resources: &[Resource]) -> Result<Plan, UpError> {
    let file = dir.join(FILE);
    let text = std::fs::read_to_string(&file).map_err(|source| UpError::Read {
        path: file.clone(),
        source,
    })?;
    let weft: WeftFile =
        serde_saphyr::from_str(&text).map_err(|e| err(&file, String::new(), e.to_string()))?;
    let node_ip = weft
        .subnet
        .hosts()
        .next()
        .ok_or_else(|| err(&file, "subnet".into(), "the subnet has no host addresses"))?;
    let mut pods = Vec::new();
    for (i, entry) in weft.pods.iter().enumerate() {
        let field = |f: &str| format!("pods[{i}].{f}");
        let (workload, name, ip, labels, sa, ns) = match &entry.workload {
            Some(w) => {
                let (ns, name) = w.split_once('/').ok_or_else(|| {
                    err(
                        &file,
                        field("workload"),
                        format!("{w:?} must be NAMESPACE/NAME"),
                    )
                })?;
                let we = resources
                    .iter()
                    .find_map(|r| match &r.spec {
                        Spec::WorkloadEntry(we) if r.meta.namespace == ns && r.meta.name == name => Some(we),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        err(
                            &file,
                            field("workload"),
                            format!("no WorkloadEntry {ns}/{name} in the directory; add one with the pod's address"),
                        )
                    })?;
                let ip: Ipv4Addr = we.address.parse().map_err(|_| {
                    err(
                        &file,
                        field("workload"),
                        format!("WorkloadEntry {ns}/{name} has address {:?}; weft up needs an IPv4 address", we.address),
                    )
                })?;
                let sa = if we.service_account.is_empty() {
                    "default".to_string()
                } else {
                    we.service_account.clone()
                };
                (
                    Some((ns.to_string(), name.to_string())),
                    entry.name.clone().unwrap_or_else(|| name.to_string()),
                    ip,
                    we.labels.clone(),
                    sa,
                    ns.to_string(),
                )
            }
            None => {
                let name = entry.name.clone().ok_or_else(|| {
                    err(
                        &file,
                        field("name"),
                        "a pod without a workload needs a name",
                    )
                })?;
                let ip = match entry.address {
                    Some(IpAddr::V4(ip)) => ip,
                    _ => {
                        return Err(err(
                            &file,
                            field("address"),
                            "a pod without a workload needs an IPv4 address",
                        ));
                    }
                };
                if entry.sidecar {
                    return Err(err(
                        &file,
                        field("sidecar"),
                        "a sidecar needs a WorkloadEntry (its identity); set workload, or sidecar: false",
                    ));
                }
                (
                    None,
                    name,
                    ip,
                    BTreeMap::new(),
                    "default".to_string(),
                    "default".to_string(),
                )
            }
        };
        if !weft.subnet.contains(&ip)
            || ip == node_ip
            || ip == weft.subnet.network()
            || ip == weft.subnet.broadcast()
        {
            return Err(err(
                &file,
                field("address"),
                format!(
                    "pod address {ip} must be a host address in subnet {} other than {node_ip}",
                    weft.subnet
                ),
            ));
        }
        if name.is_empty()
            || name.len() > 40
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(err(
                &file,
                field("name"),
                format!("pod name {name:?} must be 1-40 letters, digits or '-'"),
            ));
        }
        if pods.iter().any(|p: &Pod| p.name == name) {
            return Err(err(
                &file,
                field("name"),
                format!("two pods are named {name:?}"),
            ));
        }
        if pods.iter().any(|p: &Pod| p.ip == ip) {
            return Err(err(
                &file,
                field("address"),
                format!("two pods have the address {ip}"),
            ));
        }
        let user = entry.user.clone().unwrap_or_else(|| "nobody".into());
        if user == "1337" {
            return Err(err(
                &file,
                field("user"),
                "uid 1337 is the proxy's and is not captured; choose another user",
            ));
        }
        pods.push(Pod {
            name,
            ip,
            workload,
            labels,
            service_account: sa,
            namespace: ns,
            sidecar: entry.sidecar,
            command: entry.command.clone(),
            user,
            env: entry.env.clone(),
        });
    }
    let mut taken: Vec<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
    taken.push(node_ip);
    let (tools, notices) = crate::telemetry::resolve(&weft.telemetry, &file, weft.subnet, &taken)?;
    for t in &tools {
        let name = t.kind.pod().to_string();
        if pods.iter().any(|p| p.name == name) {
            return Err(err(
                &file,
                format!("telemetry.{}", t.kind.key()),
                format!("a pod is already named {name:?}, the name of this tool's pod; rename it"),
            ));
        }
        pods.push(Pod {
            name,
            ip: t.ip,
            workload: None,
            labels: BTreeMap::from([("app".to_string(), t.kind.app().to_string())]),
            service_account: "default".into(),
            namespace: "istio-system".into(),
            sidecar: false,
            command: t.command(),
            user: "nobody".into(),
            env: t.env(),
        });
    }
    let mesh_file = Some(dir.join(MESH_FILE)).filter(|p| p.exists());
    let spire = crate::spire::resolve(&weft.spire, &file)?;
    Ok(Plan {
        dir: dir.to_path_buf(),
        subnet: weft.subnet,
        node_ip,
        pods,
        mesh_file,
        tools,
        notices,
        spire,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(yaml: &str) -> Vec<Resource> {
        let (r, p) = weft_api::parse_documents(yaml, Path::new("r.yaml"));
        assert!(p.is_empty(), "{p:?}");
        r
    }

    const WE: &str = "apiVersion: networking.istio.io/v1beta1\nkind: WorkloadEntry\nmetadata: {name: details, namespace: default}\nspec: {address: 10.42.0.11, serviceAccount: bookinfo-details, labels: {app: details}}\n";

    #[test]
    fn pods_resolve_against_workload_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(FILE),
            "pods:\n- workload: default/details\n  command: [weft, sample, echo]\n- name: sleep\n  address: 10.42.0.50\n  sidecar: false\n  command: [sleep, infinity]\n",
        )
        .unwrap();
        let p = plan(dir.path(), &resources(WE)).unwrap();
        assert_eq!(p.node_ip, Ipv4Addr::new(10, 42, 0, 1));
        assert_eq!(p.pods.len(), 2);
        assert_eq!(p.pods[0].name, "details");
        assert_eq!(p.pods[0].ip, Ipv4Addr::new(10, 42, 0, 11));
        assert_eq!(p.pods[0].service_account, "bookinfo-details");
        assert!(p.pods[0].sidecar);
        assert_eq!(p.pods[0].user, "nobody");
        assert!(!p.pods[1].sidecar);
    }

    #[test]
    fn mistakes_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "pods:\n- workload: default/nope\n",
                "pods[0].workload",
                "no WorkloadEntry default/nope",
            ),
            (
                "pods:\n- name: x\n  address: 10.42.0.9\n",
                "pods[0].sidecar",
                "needs a WorkloadEntry",
            ),
            (
                "pods:\n- name: x\n  address: 10.99.0.9\n  sidecar: false\n",
                "pods[0].address",
                "subnet",
            ),
            (
                "pods:\n- workload: default/details\n  comand: [x]\n",
                "",
                "comand",
            ),
        ];
        for (text, field, msg) in cases {
            std::fs::write(dir.path().join(FILE), text).unwrap();
            let e = plan(dir.path(), &resources(WE)).unwrap_err().to_string();
            assert!(
                e.contains("weft.yaml") && e.contains(field) && e.contains(msg),
                "{text}: {e}"
            );
        }
    }
}
