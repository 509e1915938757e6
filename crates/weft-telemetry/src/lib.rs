#![forbid(unsafe_code)]
//! Istio-compatible telemetry for the Weft proxy: the standard `istio_*` Prometheus metrics,
//! Envoy/Istio access-log formats with a non-blocking sink, and the peer metadata exchange
//! header (`x-envoy-peer-metadata`).

pub mod accesslog;
mod error;
pub mod labels;
pub mod metrics;
pub mod overrides;
pub mod peer;

pub use accesslog::{
    AccessLogEntry, AccessLogSink, CelFilter, CelInput, CompiledFormat, CompiledJsonFormat,
    HttpProtocol, format_custom, format_json, format_text,
};
pub use error::TelemetryError;
pub use labels::{
    Label, Parties, PeerInfo, Protocol, Reporter, RequestLabels, SecurityPolicy, ServiceInfo,
    TcpLabels, canonical_revision, canonical_service,
};
pub use metrics::{Metrics, RequestHandle, TcpHandle};
pub use peer::{NodeMetadata, decode_peer_header, encode_peer_header};
