//! Envoy xDS v3 transport for Weft: the ADS server the control plane feeds with generated
//! resources ([`AdsServer`]) and the ADS client the sidecar proxy uses ([`run_ads_client`]).
//!
//! Protobuf types come from `envoy-types`, re-exported as [`pb`] so every crate uses one path.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod dump;
pub mod error;
pub mod istio;
pub mod server;
pub mod transport;
pub mod types;

#[cfg(test)]
mod testutil;

pub use envoy_types::pb;

pub use client::{AdsClientConfig, ClientState, Handler, run_ads_client};
pub use error::XdsError;
pub use server::{
    AdsServer, ConnectionStatus, Generated, Generator, NackStatus, ProxyInfo, PushEvent,
    SentStatus, ServerStats, TypeStatus,
};
pub use transport::{TlsConnector, UnixConnector, connect_channel, connect_unix, tls_connector};
pub use types::{NamedResource, Subscription};
