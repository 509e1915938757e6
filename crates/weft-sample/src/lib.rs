#![forbid(unsafe_code)]
//! Built-in sample apps for `weft up`, so a one-machine mesh needs nothing else installed:
//!
//! - Istio's bookinfo ([`run_bookinfo`], `weft sample bookinfo productpage|details|reviews|ratings`):
//!   the same pages, JSON, calls, timeouts, retry, error messages and propagated headers as
//!   Istio's apps, so the istio.io traffic-management tasks read the same;
//! - an echo server ([`run_echo`], `weft sample echo`) serving HTTP/1.1 + h2c, gRPC
//!   (`weft.sample.v1.Echo` and `grpc.health.v1.Health`) and TCP echo, labelled with a pod,
//!   service and version, with httpbin's `/headers`, `/status/<code>` and `/delay/<s>`, and
//!   able to call upstream services to build call chains;
//! - Istio's external authorization sample ([`run_ext_authz`], `weft sample ext-authz`): an HTTP
//!   and an Envoy gRPC (`envoy.service.auth.v3`) authorizer allowing `x-ext-authz: allow`, for
//!   AuthorizationPolicy's CUSTOM action;
//! - a load generator ([`run_load`], `weft sample load`) with open-loop (fixed rate,
//!   coordinated-omission corrected) and closed-loop modes, taking fortio's `-c`, `-n` and
//!   `-qps` and reporting status codes as fortio does.

mod bookinfo;
mod chain;
mod echo;
mod error;
mod ext_authz;
mod load;
mod server;

/// Generated code of the sample gRPC API `weft.sample.v1` (server and client).
#[allow(missing_docs, clippy::all)]
pub mod proto {
    tonic::include_proto!("weft.sample.v1");
}

pub use bookinfo::{BookinfoApp, BookinfoArgs, BookinfoServer, run_bookinfo};
pub use chain::{PROPAGATED_HEADERS, UpstreamAnswer};
pub use echo::{EchoArgs, EchoServer, run_echo};
pub use error::SampleError;
pub use ext_authz::{
    ExtAuthzArgs, ExtAuthzServer, deny_body as ext_authz_deny_body, run_ext_authz,
};
pub use load::{ErrorCounts, LatencySummary, LoadArgs, LoadReport, run_load};
