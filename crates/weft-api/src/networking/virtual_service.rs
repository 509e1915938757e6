//! VirtualService (`networking.istio.io`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::{Destination, HttpRetry, Percent, StringMatch};
use crate::duration::Duration;

/// Routing rules for traffic addressed to a set of hosts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VirtualService {
    /// Destination hosts the rules apply to (empty for a delegate VirtualService).
    pub hosts: Vec<String>,
    /// Gateways and sidecars (`mesh`) the rules apply to; default `["mesh"]`.
    pub gateways: Vec<String>,
    /// Ordered HTTP routes (first match wins).
    pub http: Vec<HttpRoute>,
    /// Ordered TLS passthrough routes.
    pub tls: Vec<TlsRoute>,
    /// Ordered TCP routes.
    pub tcp: Vec<TcpRoute>,
    /// Namespaces this VirtualService is visible in (`.`, `*` or names).
    pub export_to: Vec<String>,
}

/// One HTTP routing rule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRoute {
    /// Route name (appears in access logs).
    pub name: String,
    /// Match conditions, OR'ed; empty matches everything.
    #[serde(rename = "match")]
    pub match_: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    pub route: Vec<HttpRouteDestination>,
    /// Redirect instead of forwarding.
    pub redirect: Option<HttpRedirect>,
    /// Delegate to another VirtualService.
    pub delegate: Option<Delegate>,
    /// Rewrite URI / authority before forwarding.
    pub rewrite: Option<HttpRewrite>,
    /// Request timeout (disabled when unset).
    pub timeout: Option<Duration>,
    /// Retry policy (Istio default retry when unset).
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    pub fault: Option<HttpFaultInjection>,
    /// Mirror traffic to this destination.
    pub mirror: Option<Destination>,
    /// Deprecated integer mirror percentage.
    pub mirror_percent: Option<u32>,
    /// Share of traffic mirrored (default 100 when mirror is set).
    pub mirror_percentage: Option<Percent>,
    /// CORS policy.
    pub cors_policy: Option<CorsPolicy>,
    /// Header manipulation.
    pub headers: Option<Headers>,
}

/// Delegation target of an HTTP route.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Delegate {
    /// Delegate VirtualService name.
    pub name: String,
    /// Its namespace (default: the delegating resource's namespace).
    pub namespace: String,
}

/// Request and response header operations.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Headers {
    /// Operations on the request.
    pub request: Option<HeaderOperations>,
    /// Operations on the response.
    pub response: Option<HeaderOperations>,
}

/// Set / add / remove header operations.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HeaderOperations {
    /// Overwrite headers.
    pub set: BTreeMap<String, String>,
    /// Append headers.
    pub add: BTreeMap<String, String>,
    /// Remove headers.
    pub remove: Vec<String>,
}

/// A TLS (SNI) route.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsRoute {
    /// Match conditions (required).
    #[serde(rename = "match")]
    pub match_: Vec<TlsMatchAttributes>,
    /// Weighted destinations.
    pub route: Vec<RouteDestination>,
}

/// A TCP route.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpRoute {
    /// Match conditions.
    #[serde(rename = "match")]
    pub match_: Vec<L4MatchAttributes>,
    /// Weighted destinations.
    pub route: Vec<RouteDestination>,
}

/// HTTP request match conditions (all AND'ed).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpMatchRequest {
    /// Match name (concatenated with the route name in logs).
    pub name: String,
    /// URI path match.
    pub uri: Option<StringMatch>,
    /// URI scheme match.
    pub scheme: Option<StringMatch>,
    /// HTTP method match.
    pub method: Option<StringMatch>,
    /// Authority / Host match.
    pub authority: Option<StringMatch>,
    /// Header matches (lowercase keys); an empty matcher checks presence.
    pub headers: BTreeMap<String, StringMatch>,
    /// Destination port.
    pub port: u32,
    /// Labels of the calling workload.
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to (overrides the VirtualService's gateways).
    pub gateways: Vec<String>,
    /// Query parameter matches.
    pub query_params: BTreeMap<String, StringMatch>,
    /// Case-insensitive URI match.
    pub ignore_uri_case: bool,
    /// Headers that must not match.
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Namespace of the calling workload.
    pub source_namespace: String,
}

/// A weighted HTTP destination.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRouteDestination {
    /// Where to send traffic (required).
    pub destination: Option<Destination>,
    /// Relative weight (0..=100; sum 100 with several destinations).
    pub weight: i32,
    /// Header manipulation for this destination.
    pub headers: Option<Headers>,
}

/// A weighted L4 destination.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RouteDestination {
    /// Where to send traffic (required).
    pub destination: Option<Destination>,
    /// Relative weight (0..=100; sum 100 with several destinations).
    pub weight: i32,
}

/// L4 connection match conditions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct L4MatchAttributes {
    /// Destination IPs / CIDRs.
    pub destination_subnets: Vec<String>,
    /// Destination port.
    pub port: u32,
    /// Source IP / CIDR (reserved for future use in Istio).
    pub source_subnet: String,
    /// Labels of the calling workload.
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to.
    pub gateways: Vec<String>,
    /// Namespace of the calling workload.
    pub source_namespace: String,
}

/// TLS connection match conditions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsMatchAttributes {
    /// SNI values to match (required; wildcards allowed).
    pub sni_hosts: Vec<String>,
    /// Destination IPs / CIDRs.
    pub destination_subnets: Vec<String>,
    /// Destination port.
    pub port: u32,
    /// Labels of the calling workload.
    pub source_labels: BTreeMap<String, String>,
    /// Gateways this match applies to.
    pub gateways: Vec<String>,
    /// Namespace of the calling workload.
    pub source_namespace: String,
}

/// How a redirect picks its port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    /// 80 for http, 443 for https.
    #[default]
    FromProtocolDefault,
    /// Keep the request's port.
    FromRequestPort,
}

/// HTTP redirect response.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRedirect {
    /// Replacement path.
    pub uri: String,
    /// Replacement authority.
    pub authority: String,
    /// Explicit redirect port (oneof with `derivePort`).
    pub port: Option<u32>,
    /// Derived redirect port (oneof with `port`).
    pub derive_port: Option<RedirectPortSelection>,
    /// Replacement scheme (`http` or `https`).
    pub scheme: String,
    /// Status code (default 301).
    pub redirect_code: u32,
}

/// URI / authority rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRewrite {
    /// Replacement for the matched URI part.
    pub uri: String,
    /// Replacement authority.
    pub authority: String,
}

/// CORS policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CorsPolicy {
    /// Deprecated exact origins.
    pub allow_origin: Vec<String>,
    /// Allowed origins.
    pub allow_origins: Vec<StringMatch>,
    /// Allowed methods.
    pub allow_methods: Vec<String>,
    /// Allowed request headers.
    pub allow_headers: Vec<String>,
    /// Headers browsers may read.
    pub expose_headers: Vec<String>,
    /// Preflight cache time.
    pub max_age: Option<Duration>,
    /// Allow credentials.
    pub allow_credentials: Option<bool>,
}

/// Fault injection.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpFaultInjection {
    /// Delay requests.
    pub delay: Option<FaultDelay>,
    /// Abort requests.
    pub abort: Option<FaultAbort>,
}

/// Delay fault.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultDelay {
    /// Deprecated integer percentage.
    pub percent: i32,
    /// Fixed delay (oneof with `exponentialDelay`).
    pub fixed_delay: Option<Duration>,
    /// Exponential delay (not supported by Istio).
    pub exponential_delay: Option<Duration>,
    /// Share of requests delayed.
    pub percentage: Option<Percent>,
}

/// Abort fault.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultAbort {
    /// HTTP status to return (200..=599).
    pub http_status: Option<i32>,
    /// gRPC status (not supported by Istio 1.14).
    pub grpc_status: Option<String>,
    /// HTTP/2 error (not supported by Istio 1.14).
    pub http2_error: Option<String>,
    /// Share of requests aborted.
    pub percentage: Option<Percent>,
}
