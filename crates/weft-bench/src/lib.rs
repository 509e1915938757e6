#![forbid(unsafe_code)]
//! Weft's benchmarks. `weft bench xds` measures `weft control` at scale as Istio's pilot-load
//! does: it writes a fleet of ServiceEntries and WorkloadEntries into the control plane's config
//! directory ([`write_fleet`]), runs a fleet of simulated sidecars as ADS clients
//! ([`run_xds_load`]) and reports initial sync time, change convergence, churn lag, bytes pushed
//! and the control plane's CPU and memory ([`XdsLoadReport`]). With `--kubeconfig` the same
//! fleet is a cluster's Services and Pods instead, made through the API server (kube.rs).

mod change;
pub mod error;
pub mod fleet;
mod kube;
mod lite;
mod procstat;
mod proxy;
pub mod report;
pub mod xds;

pub use error::BenchError;
pub use fleet::{FleetLayout, FleetService, FleetWorkload, write_fleet};
pub use report::{
    ChangeResult, ChurnResult, InitialSync, Percentiles, PhaseCpu, ProcessUsage, TypeCounts,
    XdsLoadReport,
};
pub use xds::{XdsLoadArgs, run_xds_load};
