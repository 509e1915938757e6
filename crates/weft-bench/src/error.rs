//! Errors of the benchmarks.

use std::path::PathBuf;

/// What can stop a benchmark run; each message says what the operator can do about it.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A command-line value is out of range or inconsistent with another.
    #[error("invalid benchmark arguments: {0}")]
    InvalidArgs(String),
    /// Reading or writing a file of the config directory failed.
    #[error(
        "cannot {action} {path}: {source}; check that the config directory exists and is writable"
    )]
    Io {
        /// What was being done ("write", "rename", "remove", "read directory").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The control plane address cannot be used for ADS.
    #[error("invalid --control-plane {addr:?}: {source}")]
    ControlPlaneAddress {
        /// The address given.
        addr: String,
        /// Why the xDS client refused it.
        #[source]
        source: weft_xds::XdsError,
    },
    /// The control plane never served the fleet that was written to its config directory.
    #[error(
        "the control plane at {addr} did not serve the fleet written to {dir} within {seconds} s \
         (last stream error: {last_error}); check that `weft control` is running with \
         --config-dir {dir} and listens on {addr}"
    )]
    ConfigNotServed {
        /// The control plane address.
        addr: String,
        /// The config directory the fleet was written to.
        dir: PathBuf,
        /// How long the benchmark waited.
        seconds: u64,
        /// The probe client's last stream error, or "none".
        last_error: String,
    },
    /// Not every simulated proxy received its initial configuration in time.
    #[error(
        "only {synced} of {total} proxies received their initial config (CDS, EDS, LDS, RDS) within \
         {seconds} s; the control plane is overloaded or unreachable: try fewer --proxies or \
         --services, or a longer --timeout-seconds"
    )]
    SyncTimeout {
        /// Proxies that synced.
        synced: usize,
        /// Proxies started.
        total: usize,
        /// How long the benchmark waited.
        seconds: u64,
    },
    /// The process given with --control-pid cannot be read.
    #[error(
        "cannot read /proc/{pid}: {source}; pass the pid of the running `weft control` with \
         --control-pid, or leave it out"
    )]
    ControlPid {
        /// The pid given.
        pid: u32,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An API server request of the Kubernetes fleet failed.
    #[error(
        "cannot {what}: {source}; check that --kubeconfig names a running cluster whose user may \
         create namespaces, nodes, services, service accounts and pods (and their status)"
    )]
    Kube {
        /// What was being done.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The report could not be rendered as JSON.
    #[error("cannot render the report as JSON: {0}")]
    Json(#[from] serde_json::Error),
}
