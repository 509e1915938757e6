//! `networking.istio.io` resources (v1alpha3 and v1beta1 share one schema).

mod destination_rule;
mod gateway;
mod proxy_config;
mod service_entry;
mod sidecar;
mod virtual_service;

pub use destination_rule::*;
pub use gateway::*;
pub use proxy_config::*;
pub use service_entry::*;
pub use sidecar::*;
pub use virtual_service::*;
