#![forbid(unsafe_code)]
//! `weft control`, Weft's istiod: the config store (Istio YAML from a directory), the service
//! registry (ServiceEntry + WorkloadEntry), the push context, the Istio → Envoy translation
//! (sidecar and proxyless-gRPC forms), the CA front end and the debug endpoints.

pub mod authn;
pub mod authz;
pub mod ca;
pub mod debounce;
pub mod debug;
pub mod destination;
pub mod envoy;
pub mod error;
pub mod export;
pub mod generator;
pub mod grpcgen;
pub mod jwks;
pub mod jwt;
pub mod push;
pub mod registry;
pub mod server;
pub mod sidecar;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod virtual_service;

pub use error::ControlError;
pub use server::{ControlOptions, run, run_with};

/// Weft's own file in a config directory (pods for `weft up`); not an Istio resource.
pub const WEFT_FILE: &str = "weft.yaml";
