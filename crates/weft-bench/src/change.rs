//! The config changes the load test times, and the endpoint churn: what file each writes and how
//! a simulated proxy shows that it received it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::fleet::{
    FILE_PREFIX, FleetLayout, HTTP_PORT, namespace_name, outbound_cluster, service_entry_yaml,
    workload_entry_yaml,
};
use crate::kube::PodSpec;
use crate::proxy::{CDS, EDS, ProxyRecord, Watches};

/// Addresses of WorkloadEntries added by changes: 10.80.0.0/16.
const EXTRA_BASE: u32 = u32::from_be_bytes([10, 80, 0, 0]);
/// Addresses of the workloads of services added by changes: 10.81.0.0/16.
const NEW_WORKLOAD_BASE: u32 = u32::from_be_bytes([10, 81, 0, 0]);
/// VIPs of services added by changes: 10.112.0.0/16.
const NEW_VIP_BASE: u32 = u32::from_be_bytes([10, 112, 0, 0]);
/// Addresses of the churned workload, one per write: 10.64.0.0/16.
const CHURN_BASE: u32 = u32::from_be_bytes([10, 64, 0, 0]);
/// Most changes or churn writes one run can make (the address ranges above).
pub(crate) const MAX_WRITES: usize = 65_000;

fn addr(base: u32, n: usize) -> Ipv4Addr {
    Ipv4Addr::from(base + 1 + (n % MAX_WRITES) as u32)
}

/// How a proxy shows that it has a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The watched EDS cluster lists this address.
    EdsHas { cluster: u32, address: String },
    /// The watched EDS cluster no longer lists this address.
    EdsLacks { cluster: u32, address: String },
    /// The watched CDS cluster exists.
    CdsHas { cluster: u32 },
}

impl Probe {
    /// Index of the xDS type the change is timed on.
    pub(crate) fn type_index(&self) -> usize {
        match self {
            Probe::EdsHas { .. } | Probe::EdsLacks { .. } => EDS,
            Probe::CdsHas { .. } => CDS,
        }
    }

    /// When the proxy received the change, if it did (only updates at or after `since` count).
    pub(crate) fn seen(&self, rec: &ProxyRecord, since: Duration) -> Option<Duration> {
        match self {
            Probe::EdsHas { cluster, address } => {
                rec.first_eds(*cluster, since, |a| a.iter().any(|x| x == address))
            }
            Probe::EdsLacks { cluster, address } => {
                rec.first_eds(*cluster, since, |a| !a.iter().any(|x| x == address))
            }
            Probe::CdsHas { cluster } => rec.cds_seen.get(cluster).copied().filter(|t| *t >= since),
        }
    }
}

/// One timed change: write `content` to `file` (or, on Kubernetes, make `kube`), then wait for
/// `probe` at every proxy.
#[derive(Debug, Clone)]
pub(crate) struct PlannedChange {
    pub description: String,
    pub file: PathBuf,
    pub content: String,
    pub kube: KubeChange,
    pub probe: Probe,
}

/// The same change in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KubeChange {
    /// A pod written (created, or relabelled when it exists).
    Pod(PodSpec),
    /// A Service (and its ServiceAccount) with one pod.
    Service {
        name: String,
        namespace: String,
        pod: PodSpec,
    },
}

fn pod_spec(
    name: &str,
    namespace: &str,
    address: Ipv4Addr,
    app: &str,
    version: &str,
    sa: &str,
) -> PodSpec {
    PodSpec {
        name: name.into(),
        namespace: namespace.into(),
        address: address.to_string(),
        app: app.into(),
        version: version.into(),
        service_account: sa.into(),
    }
}

/// A workload as a WorkloadEntry (YAML for the directory) and as a pod (for a cluster).
fn workload(
    name: &str,
    namespace: &str,
    address: Ipv4Addr,
    app: &str,
    version: &str,
    sa: &str,
) -> (String, PodSpec) {
    (
        workload_entry_yaml(name, namespace, address, app, version, sa),
        pod_spec(name, namespace, address, app, version, sa),
    )
}

/// The service an added WorkloadEntry joins.
fn extra_service(k: usize, services: usize) -> usize {
    (k.wrapping_mul(7919) + 1) % services
}

fn change_file(layout: &FleetLayout, k: usize) -> PathBuf {
    layout.dir.join(format!("{FILE_PREFIX}change-{k:04}.yaml"))
}

/// `count` changes, cycling through: add a WorkloadEntry to a service (EDS); add a
/// ServiceEntry with one workload (CDS, then LDS, RDS and EDS); move the WorkloadEntry added two
/// changes earlier to another service of its namespace by changing its `app` label (EDS).
pub(crate) fn plan(
    layout: &FleetLayout,
    namespaces: usize,
    count: usize,
    watches: &mut Watches,
) -> Vec<PlannedChange> {
    let m = layout.services.len();
    let mut out = Vec::with_capacity(count);
    for k in 0..count {
        let change = match k % 3 {
            0 => {
                let svc = &layout.services[extra_service(k, m)];
                let name = format!("bench-extra-{k}");
                let address = addr(EXTRA_BASE, k);
                let (content, pod) = workload(
                    &name,
                    &svc.namespace,
                    address,
                    &svc.name,
                    "extra",
                    &svc.name,
                );
                PlannedChange {
                    description: format!(
                        "add WorkloadEntry {}/{name} to {}",
                        svc.namespace, svc.name
                    ),
                    file: change_file(layout, k),
                    content,
                    kube: KubeChange::Pod(pod),
                    probe: Probe::EdsHas {
                        cluster: watches.eds(svc.cluster_name(HTTP_PORT)),
                        address: address.to_string(),
                    },
                }
            }
            1 => {
                let namespace = namespace_name(k % namespaces);
                let name = format!("bench-new-{k}");
                let host = format!("{name}.{namespace}.svc.cluster.local");
                let (workload, pod) = workload(
                    &format!("{name}-0"),
                    &namespace,
                    addr(NEW_WORKLOAD_BASE, k),
                    &name,
                    "v0",
                    &name,
                );
                PlannedChange {
                    description: format!("add ServiceEntry {namespace}/{name} with one workload"),
                    file: change_file(layout, k),
                    content: format!(
                        "{}---\n{workload}",
                        service_entry_yaml(&name, &namespace, &host, addr(NEW_VIP_BASE, k))
                    ),
                    kube: KubeChange::Service {
                        name: name.clone(),
                        namespace: namespace.clone(),
                        pod,
                    },
                    probe: Probe::CdsHas {
                        cluster: watches.cds(outbound_cluster(HTTP_PORT, &host)),
                    },
                }
            }
            _ => {
                // Relabel the WorkloadEntry added by change k - 2 (k % 3 == 2, so k >= 2).
                let j = k - 2;
                let from = extra_service(j, m);
                let svc = &layout.services[from];
                let name = format!("bench-extra-{j}");
                let address = addr(EXTRA_BASE, j);
                let to = (from + namespaces) % m;
                let target = &layout.services[to];
                let (app, probe, what) = if to != from && target.namespace == svc.namespace {
                    (
                        target.name.clone(),
                        Probe::EdsHas {
                            cluster: watches.eds(target.cluster_name(HTTP_PORT)),
                            address: address.to_string(),
                        },
                        target.name.clone(),
                    )
                } else {
                    (
                        "bench-retired".to_string(),
                        Probe::EdsLacks {
                            cluster: watches.eds(svc.cluster_name(HTTP_PORT)),
                            address: address.to_string(),
                        },
                        "no service".to_string(),
                    )
                };
                let (content, pod) =
                    workload(&name, &svc.namespace, address, &app, "extra", &svc.name);
                PlannedChange {
                    description: format!(
                        "relabel {}/{name}: app {} → {what}",
                        svc.namespace, svc.name
                    ),
                    file: change_file(layout, j),
                    content,
                    kube: KubeChange::Pod(pod),
                    probe,
                }
            }
        };
        out.push(change);
    }
    out
}

/// The churned workload: one WorkloadEntry of the first service whose address changes with
/// every write.
#[derive(Debug, Clone)]
pub(crate) struct Churn {
    pub file: PathBuf,
    /// The watched EDS cluster (the first service's HTTP port).
    pub cluster: u32,
    namespace: String,
    app: String,
}

impl Churn {
    pub(crate) fn new(layout: &FleetLayout, watches: &mut Watches) -> Self {
        let svc = &layout.services[0];
        Churn {
            file: layout.dir.join(format!("{FILE_PREFIX}churn.yaml")),
            cluster: watches.eds(svc.cluster_name(HTTP_PORT)),
            namespace: svc.namespace.clone(),
            app: svc.name.clone(),
        }
    }

    /// The workload's address after write `seq` (0: the initial one).
    pub(crate) fn address(seq: usize) -> String {
        addr(CHURN_BASE, seq).to_string()
    }

    /// The write number an address of the churned workload stands for.
    pub(crate) fn seq_of(address: &str) -> Option<usize> {
        let ip: Ipv4Addr = address.parse().ok()?;
        let n = u32::from(ip).checked_sub(CHURN_BASE + 1)?;
        (n < MAX_WRITES as u32).then_some(n as usize)
    }

    /// The newest write among the addresses of the churn cluster.
    pub(crate) fn newest(addresses: &[String]) -> Option<usize> {
        addresses.iter().filter_map(|a| Self::seq_of(a)).max()
    }

    /// The churned workload's pod for write `seq` (a new pod each time: a pod's address is
    /// fixed), and the one it replaces.
    pub(crate) fn pod(&self, seq: usize) -> (PodSpec, Option<String>) {
        let pod = pod_spec(
            &format!("bench-churn-{seq}"),
            &self.namespace,
            addr(CHURN_BASE, seq),
            &self.app,
            "churn",
            &self.app,
        );
        (pod, seq.checked_sub(1).map(|p| format!("bench-churn-{p}")))
    }

    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The file content for write `seq`.
    pub(crate) fn content(&self, seq: usize) -> String {
        workload_entry_yaml(
            "bench-churn",
            &self.namespace,
            addr(CHURN_BASE, seq),
            &self.app,
            "churn",
            &self.app,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::write_fleet;

    #[test]
    fn planned_changes_and_churn_are_valid_istio_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let layout = write_fleet(dir.path(), 30, 2, 4).unwrap();
        let mut w = Watches::default();
        let churn = Churn::new(&layout, &mut w);
        let changes = plan(&layout, 4, 6, &mut w);
        assert_eq!(changes.len(), 6);
        assert!(matches!(changes[0].probe, Probe::EdsHas { .. }));
        assert!(matches!(changes[1].probe, Probe::CdsHas { .. }));
        assert!(matches!(changes[2].probe, Probe::EdsHas { .. }));
        // The relabel rewrites the file of the WorkloadEntry it moves.
        assert_eq!(changes[2].file, changes[0].file);
        assert!(changes[2].description.contains("bench-extra-0"));
        assert_eq!(changes[1].probe.type_index(), CDS);
        for c in &changes {
            let (res, problems) = weft_api::parse_documents(&c.content, &c.file);
            assert!(problems.is_empty(), "{}: {problems:?}", c.description);
            assert!(!res.is_empty());
        }
        let text = churn.content(17);
        let (res, problems) = weft_api::parse_documents(&text, &churn.file);
        assert!(problems.is_empty() && res.len() == 1, "{problems:?}");
        assert_eq!(Churn::address(17), "10.64.0.18");
        assert_eq!(Churn::seq_of("10.64.0.18"), Some(17));
        assert_eq!(Churn::seq_of("10.128.0.1"), None);
        assert_eq!(
            Churn::newest(&["10.128.0.1".into(), "10.64.0.3".into()]),
            Some(2)
        );
        // The churn cluster and the first service's watches share an index when they coincide.
        assert_eq!(
            w.eds[churn.cluster as usize],
            layout.services[0].cluster_name(8080)
        );
    }
}
