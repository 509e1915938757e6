#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! Istio 1.14 configuration for Weft: typed resource specs (networking, security,
//! telemetry), the mesh config, YAML loading with file/line/field-path problems, and
//! validation modelled on Istio's `pkg/config/validation`.
//!
//! Entry points: [`parse_documents`], [`load_paths`] (and their `_with_notes` forms, which
//! also name the documents read but not applied), [`parse_mesh_config`], [`validate`];
//! helpers [`resolve_host`] and [`protocol_for_port`].

pub mod common;
pub mod duration;
pub mod host;
mod load;
pub mod mesh;
pub mod meta;
pub mod networking;
mod node;
pub mod note;
pub mod problem;
pub mod protocol;
pub mod security;
pub mod telemetry;
mod validate;

pub use common::{
    ClientTlsMode, ClientTlsSettings, Destination, HttpRetry, LocalityLoadBalancerSetting,
    NetworkingWorkloadSelector, Percent, Port, PortSelector, ServerTlsMode, ServerTlsProtocol,
    ServerTlsSettings, StringMatch, StringMatcher, TcpKeepalive, WorkloadSelector,
};
pub use duration::{Duration, DurationError};
pub use host::resolve_host;
pub use load::{
    Object, Parsed, field_line, load_paths, load_paths_with_notes, parse_documents,
    parse_documents_with_notes, parse_mesh_config,
};
pub use mesh::{MeshConfig, MeshProxyConfig};
pub use meta::{Kind, ObjectMeta, Resource, Source, Spec, go_bool};
pub use networking::{
    DestinationRule, Gateway, ProxyConfig, ServiceEntry, Sidecar, VirtualService, WorkloadEntry,
};
pub use note::{Note, Skip};
pub use problem::Problem;
pub use protocol::{Protocol, protocol_for_port};
pub use security::{AuthorizationPolicy, PeerAuthentication, RequestAuthentication};
pub use telemetry::Telemetry;
pub use validate::validate;
