//! The config generator: a fleet of ServiceEntries and WorkloadEntries written as Istio YAML into
//! a control plane's config directory, and the edits the load test makes there afterwards.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::error::BenchError;

/// Prefix of every file the benchmark writes into a config directory.
pub const FILE_PREFIX: &str = "bench-";
/// Resources per fleet file.
pub const RESOURCES_PER_FILE: usize = 100;
/// The HTTP port of every generated service.
pub const HTTP_PORT: u16 = 8080;
/// The TCP port of every generated service.
pub const TCP_PORT: u16 = 9000;
/// Service VIPs: 10.96.0.0/12.
const VIP_BASE: u32 = u32::from_be_bytes([10, 96, 0, 0]);
const VIP_SPACE: u32 = 1 << 20;
/// Workload addresses: 10.128.0.0/9.
const WORKLOAD_BASE: u32 = u32::from_be_bytes([10, 128, 0, 0]);
const WORKLOAD_SPACE: u32 = 1 << 23;

/// One generated ServiceEntry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetService {
    /// Resource name and `app` label of its workloads (`svc-<i>`).
    pub name: String,
    /// Namespace (`bench-<i mod namespaces>`).
    pub namespace: String,
    /// Host name (`svc-<i>.bench-<k>.svc.cluster.local`).
    pub host: String,
    /// The VIP, from 10.96.0.0/12.
    pub vip: Ipv4Addr,
}

impl FleetService {
    /// Istio's outbound cluster name for one of the service's ports.
    pub fn cluster_name(&self, port: u16) -> String {
        outbound_cluster(port, &self.host)
    }
}

/// One generated WorkloadEntry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetWorkload {
    /// Resource name (`svc-<i>-<j>`).
    pub name: String,
    /// Namespace (the service's).
    pub namespace: String,
    /// Address, from 10.128.0.0/9.
    pub address: Ipv4Addr,
    /// Service account (the service's name).
    pub service_account: String,
    /// Index of its service in [`FleetLayout::services`].
    pub service: usize,
}

impl FleetWorkload {
    /// Istio's sidecar node id for a proxy serving this workload.
    pub fn node_id(&self) -> String {
        node_id(self.address, &self.name, &self.namespace)
    }
}

/// What [`write_fleet`] wrote.
#[derive(Debug, Clone)]
pub struct FleetLayout {
    /// The config directory.
    pub dir: PathBuf,
    /// The fleet files, in the order written.
    pub files: Vec<PathBuf>,
    /// The services, by index.
    pub services: Vec<FleetService>,
    /// The workloads: for each service in turn, its endpoints.
    pub workloads: Vec<FleetWorkload>,
}

impl FleetLayout {
    /// Number of resources written (ServiceEntries plus WorkloadEntries).
    pub fn resource_count(&self) -> usize {
        self.services.len() + self.workloads.len()
    }
}

/// Istio's outbound cluster name `outbound|<port>||<host>`.
pub(crate) fn outbound_cluster(port: u16, host: &str) -> String {
    format!("outbound|{port}||{host}")
}

/// Istio's sidecar node id `sidecar~<ip>~<name>.<ns>~<ns>.svc.cluster.local`.
pub(crate) fn node_id(ip: Ipv4Addr, name: &str, namespace: &str) -> String {
    format!("sidecar~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local")
}

/// Namespace of the `index`-th service.
pub(crate) fn namespace_name(index: usize) -> String {
    format!("bench-{index}")
}

/// A ServiceEntry as Istio YAML: MESH_INTERNAL, STATIC, HTTP 8080 and TCP 9000, selecting
/// workloads by `app`.
pub(crate) fn service_entry_yaml(name: &str, namespace: &str, host: &str, vip: Ipv4Addr) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\n\
         kind: ServiceEntry\n\
         metadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  \
           hosts: [{host}]\n  \
           addresses: [{vip}]\n  \
           location: MESH_INTERNAL\n  \
           resolution: STATIC\n  \
           ports:\n  \
           - {{number: {HTTP_PORT}, name: http, protocol: HTTP}}\n  \
           - {{number: {TCP_PORT}, name: tcp, protocol: TCP}}\n  \
           workloadSelector: {{labels: {{app: {name}}}}}\n"
    )
}

/// A WorkloadEntry as Istio YAML.
pub(crate) fn workload_entry_yaml(
    name: &str,
    namespace: &str,
    address: Ipv4Addr,
    app: &str,
    version: &str,
    service_account: &str,
) -> String {
    format!(
        "apiVersion: networking.istio.io/v1beta1\n\
         kind: WorkloadEntry\n\
         metadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  \
           address: {address}\n  \
           labels: {{app: {app}, version: {version}}}\n  \
           serviceAccount: {service_account}\n"
    )
}

/// Joins YAML documents into one stream.
pub(crate) fn join_documents(docs: &[String]) -> String {
    docs.join("---\n")
}

/// Writes `content` to `path` through a hidden temporary file and a rename, so the control
/// plane never reads half a file. Leaves the file alone when it already has this content and
/// returns whether it wrote.
pub(crate) fn write_atomic(path: &Path, content: &str) -> Result<bool, BenchError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    std::fs::write(&tmp, content).map_err(|source| BenchError::Io {
        action: "write",
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| BenchError::Io {
        action: "rename",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(true)
}

/// Removes the benchmark's files in `dir` that are not in `keep`.
pub(crate) fn remove_stale(dir: &Path, keep: &[PathBuf]) -> Result<(), BenchError> {
    let entries = std::fs::read_dir(dir).map_err(|source| BenchError::Io {
        action: "read directory",
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with(FILE_PREFIX) && name.ends_with(".yaml")
            || name.starts_with(&format!(".{FILE_PREFIX}")) && name.ends_with(".tmp");
        let path = entry.path();
        if ours && !keep.contains(&path) {
            std::fs::remove_file(&path).map_err(|source| BenchError::Io {
                action: "remove",
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

fn ipv4(base: u32, offset: usize) -> Ipv4Addr {
    // Callers check that `offset` fits the range, so this cannot overflow.
    Ipv4Addr::from(base + offset as u32)
}

/// Writes a fleet into `dir` (created if missing): `services` ServiceEntries (MESH_INTERNAL,
/// STATIC, HTTP 8080 and TCP 9000, `workloadSelector` by `app`, VIPs from 10.96.0.0/12) over
/// `namespaces` namespaces, each with `endpoints_per_service` WorkloadEntries (addresses from
/// 10.128.0.0/9, one service account per service), 100 resources per file named
/// `bench-fleet-NNNN.yaml`. Files are replaced atomically and left alone when unchanged; other
/// `bench-*.yaml` files in `dir` (from an earlier run) are removed, nothing else is touched.
pub fn write_fleet(
    dir: &Path,
    services: usize,
    endpoints_per_service: usize,
    namespaces: usize,
) -> Result<FleetLayout, BenchError> {
    let (layout, docs) = plan_fleet(dir, services, endpoints_per_service, namespaces)?;
    std::fs::create_dir_all(dir).map_err(|source| BenchError::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })?;
    remove_stale(dir, &layout.files)?;
    for (path, chunk) in layout.files.iter().zip(docs.chunks(RESOURCES_PER_FILE)) {
        write_atomic(path, &join_documents(chunk))?;
    }
    tracing::info!(
        dir = %dir.display(),
        services,
        workloads = layout.workloads.len(),
        files = layout.files.len(),
        "fleet written"
    );
    Ok(layout)
}

/// The fleet [`write_fleet`] writes (its files named, not written) and its YAML documents.
pub(crate) fn plan_fleet(
    dir: &Path,
    services: usize,
    endpoints_per_service: usize,
    namespaces: usize,
) -> Result<(FleetLayout, Vec<String>), BenchError> {
    if services == 0 || endpoints_per_service == 0 || namespaces == 0 {
        return Err(BenchError::InvalidArgs(
            "--services, --endpoints-per-service and --namespaces must be at least 1".into(),
        ));
    }
    if services >= VIP_SPACE as usize - 1 {
        return Err(BenchError::InvalidArgs(format!(
            "--services {services} does not fit the VIP range 10.96.0.0/12; use fewer than {}",
            VIP_SPACE - 1
        )));
    }
    if services.saturating_mul(endpoints_per_service) >= WORKLOAD_SPACE as usize - 1 {
        return Err(BenchError::InvalidArgs(format!(
            "--services × --endpoints-per-service = {} does not fit the workload range \
             10.128.0.0/9; use fewer than {} workloads",
            services.saturating_mul(endpoints_per_service),
            WORKLOAD_SPACE - 1
        )));
    }
    let mut layout = FleetLayout {
        dir: dir.to_path_buf(),
        files: Vec::new(),
        services: Vec::with_capacity(services),
        workloads: Vec::with_capacity(services * endpoints_per_service),
    };
    let mut docs: Vec<String> = Vec::with_capacity(services * (endpoints_per_service + 1));
    for i in 0..services {
        let namespace = namespace_name(i % namespaces);
        let name = format!("svc-{i}");
        let host = format!("{name}.{namespace}.svc.cluster.local");
        let vip = ipv4(VIP_BASE, i + 1);
        docs.push(service_entry_yaml(&name, &namespace, &host, vip));
        for j in 0..endpoints_per_service {
            let w = FleetWorkload {
                name: format!("{name}-{j}"),
                namespace: namespace.clone(),
                address: ipv4(WORKLOAD_BASE, i * endpoints_per_service + j + 1),
                service_account: name.clone(),
                service: i,
            };
            docs.push(workload_entry_yaml(
                &w.name,
                &w.namespace,
                w.address,
                &name,
                &format!("v{j}"),
                &w.service_account,
            ));
            layout.workloads.push(w);
        }
        layout.services.push(FleetService {
            name,
            namespace,
            host,
            vip,
        });
    }
    layout.files = (0..docs.len().div_ceil(RESOURCES_PER_FILE))
        .map(|n| dir.join(format!("{FILE_PREFIX}fleet-{n:04}.yaml")))
        .collect();
    Ok((layout, docs))
}

#[cfg(test)]
mod tests {
    use weft_api::Kind;

    use super::*;

    #[test]
    fn fleet_parses_without_problems_and_has_the_right_counts() {
        let dir = tempfile::tempdir().unwrap();
        // A stale file from an earlier run goes away; other files stay.
        std::fs::write(dir.path().join("bench-change-0007.yaml"), "x: [").unwrap();
        std::fs::write(dir.path().join("mine.yaml"), "").unwrap();
        let layout = write_fleet(dir.path(), 250, 3, 7).unwrap();
        assert_eq!(layout.services.len(), 250);
        assert_eq!(layout.workloads.len(), 750);
        assert_eq!(layout.resource_count(), 1000);
        assert_eq!(layout.files.len(), 10);
        assert!(!dir.path().join("bench-change-0007.yaml").exists());
        assert!(dir.path().join("mine.yaml").exists());

        let mut services = 0;
        let mut workloads = 0;
        let mut namespaces = std::collections::BTreeSet::new();
        for file in &layout.files {
            let text = std::fs::read_to_string(file).unwrap();
            let (resources, problems) = weft_api::parse_documents(&text, file);
            assert!(problems.is_empty(), "{}: {problems:?}", file.display());
            assert!(resources.len() <= RESOURCES_PER_FILE);
            for r in &resources {
                namespaces.insert(r.meta.namespace.clone());
                match r.kind() {
                    Kind::ServiceEntry => services += 1,
                    Kind::WorkloadEntry => workloads += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!((services, workloads), (250, 750));
        assert_eq!(namespaces.len(), 7);

        let s = &layout.services[8];
        assert_eq!(s.namespace, "bench-1");
        assert_eq!(s.host, "svc-8.bench-1.svc.cluster.local");
        assert_eq!(s.vip, Ipv4Addr::new(10, 96, 0, 9));
        assert_eq!(
            s.cluster_name(HTTP_PORT),
            "outbound|8080||svc-8.bench-1.svc.cluster.local"
        );
        let w = &layout.workloads[25];
        assert_eq!((w.name.as_str(), w.service), ("svc-8-1", 8));
        assert_eq!(
            w.node_id(),
            "sidecar~10.128.0.26~svc-8-1.bench-1~bench-1.svc.cluster.local"
        );

        // Rewriting the same fleet changes nothing on disk.
        let before = std::fs::metadata(&layout.files[0])
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_fleet(dir.path(), 250, 3, 7).unwrap();
        let after = std::fs::metadata(&layout.files[0])
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn invalid_sizes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            write_fleet(dir.path(), 0, 2, 1),
            Err(BenchError::InvalidArgs(_))
        ));
        assert!(matches!(
            write_fleet(dir.path(), 5_000_000, 2, 1),
            Err(BenchError::InvalidArgs(_))
        ));
    }
}
