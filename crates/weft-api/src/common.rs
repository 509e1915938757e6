//! Types shared by several Istio resources.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// `istio.type.v1beta1.WorkloadSelector`: selects pods by labels (`selector:` in security,
/// telemetry and ProxyConfig resources, `workloadSelector:` in DestinationRule).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadSelector {
    /// Labels a workload must carry (all must match).
    pub match_labels: BTreeMap<String, String>,
}

/// `networking.v1alpha3.WorkloadSelector`: `workloadSelector: {labels}` in ServiceEntry and Sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NetworkingWorkloadSelector {
    /// Labels a workload must carry (all must match).
    pub labels: BTreeMap<String, String>,
}

/// A string matcher: at most one of `exact`, `prefix`, `regex` (RE2 syntax).
///
/// An empty matcher (`{}`) is only meaningful in header maps, where it checks presence.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StringMatch {
    /// Exact string match.
    pub exact: Option<String>,
    /// Prefix match.
    pub prefix: Option<String>,
    /// RE2 regular expression match (whole string).
    pub regex: Option<String>,
}

/// The one match a [`StringMatch`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StringMatcher<'a> {
    /// Exact match.
    Exact(&'a str),
    /// Prefix match.
    Prefix(&'a str),
    /// RE2 regular expression.
    Regex(&'a str),
}

impl StringMatch {
    /// The configured match, or `None` for an empty (presence) matcher. When several are set
    /// (rejected by validation) the first of exact, prefix, regex wins.
    pub fn matcher(&self) -> Option<StringMatcher<'_>> {
        if let Some(s) = &self.exact {
            Some(StringMatcher::Exact(s))
        } else if let Some(s) = &self.prefix {
            Some(StringMatcher::Prefix(s))
        } else {
            self.regex.as_deref().map(StringMatcher::Regex)
        }
    }

    /// How many of exact/prefix/regex are set.
    pub fn count_set(&self) -> usize {
        [&self.exact, &self.prefix, &self.regex]
            .iter()
            .filter(|o| o.is_some())
            .count()
    }
}

/// Selects a destination port by number.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PortSelector {
    /// Port number.
    pub number: u32,
}

/// A percentage in 0..=100 (`{value: 50.0}`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Percent {
    /// The percentage.
    pub value: f64,
}

/// A service port (`networking.v1alpha3.Port`) used by Gateway, ServiceEntry and Sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Port {
    /// Port number (1..=65535; 0 only for Unix-socket Sidecar listeners).
    pub number: u32,
    /// Protocol: HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP, TLS, REDIS, MYSQL (case-insensitive).
    pub protocol: String,
    /// Port name (DNS label).
    pub name: String,
    /// Endpoint port traffic is sent to, when different from `number`.
    pub target_port: u32,
}

/// A routing destination: service host, optional subset and port.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Destination {
    /// Service host (short name, FQDN or wildcard-free registry name).
    pub host: String,
    /// DestinationRule subset name.
    pub subset: String,
    /// Port on the destination service.
    pub port: Option<PortSelector>,
}

/// TLS mode a client (sidecar) uses towards upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Plaintext.
    #[default]
    Disable,
    /// TLS, verifying the server.
    Simple,
    /// TLS with a client certificate.
    Mutual,
    /// Istio mTLS with workload certificates.
    IstioMutual,
}

/// `ClientTLSSettings`: upstream TLS configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClientTlsSettings {
    /// TLS mode.
    pub mode: ClientTlsMode,
    /// Client certificate file (MUTUAL).
    pub client_certificate: String,
    /// Client private key file (MUTUAL).
    pub private_key: String,
    /// CA bundle file used to verify the server.
    pub ca_certificates: String,
    /// Secret holding the credentials (gateway / sidecar SDS).
    pub credential_name: String,
    /// Accepted server SANs.
    pub subject_alt_names: Vec<String>,
    /// SNI to present.
    pub sni: String,
    /// Skip server certificate verification.
    pub insecure_skip_verify: Option<bool>,
}

/// Server-side TLS mode for Gateway servers and Sidecar ingress listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Forward the TLS stream by SNI without terminating it.
    #[default]
    Passthrough,
    /// Terminate TLS.
    Simple,
    /// Terminate TLS and require a client certificate.
    Mutual,
    /// SNI-based passthrough to the mesh service named by the SNI (no VirtualService needed).
    AutoPassthrough,
    /// Istio mTLS with workload certificates.
    IstioMutual,
}

/// TLS protocol versions for server TLS settings (ordered oldest to newest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub enum ServerTlsProtocol {
    /// Let the proxy choose.
    #[default]
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    /// TLS 1.0.
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    /// TLS 1.1.
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

/// `ServerTLSSettings`: downstream TLS configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerTlsSettings {
    /// Redirect plaintext HTTP to HTTPS with a 301.
    pub https_redirect: bool,
    /// TLS mode.
    pub mode: ServerTlsMode,
    /// Server certificate file.
    pub server_certificate: String,
    /// Server private key file.
    pub private_key: String,
    /// CA bundle file for client certificates.
    pub ca_certificates: String,
    /// Secret holding the credentials.
    pub credential_name: String,
    /// Accepted client SANs.
    pub subject_alt_names: Vec<String>,
    /// Accepted client certificate SPKI hashes (base64 SHA-256).
    pub verify_certificate_spki: Vec<String>,
    /// Accepted client certificate hashes (hex SHA-256).
    pub verify_certificate_hash: Vec<String>,
    /// Minimum TLS version.
    pub min_protocol_version: ServerTlsProtocol,
    /// Maximum TLS version.
    pub max_protocol_version: ServerTlsProtocol,
    /// Cipher suites (OpenSSL names).
    pub cipher_suites: Vec<String>,
}

/// TCP keepalive settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dropped.
    pub probes: u32,
    /// Idle time before probes start.
    pub time: Option<Duration>,
    /// Interval between probes.
    pub interval: Option<Duration>,
}

/// Locality-weighted load balancing settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocalityLoadBalancerSetting {
    /// Explicit traffic distribution per source locality.
    pub distribute: Vec<LocalityDistribute>,
    /// Region failover pairs.
    pub failover: Vec<LocalityFailover>,
    /// Ordered endpoint labels used for failover priority.
    pub failover_priority: Vec<String>,
    /// Enables locality load balancing.
    pub enabled: Option<bool>,
}

/// Traffic distribution from one locality.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocalityDistribute {
    /// Source locality `region/zone/subzone` (trailing `*` allowed).
    pub from: String,
    /// Destination locality → weight (weights sum to 100).
    pub to: BTreeMap<String, u32>,
}

/// Region failover pair.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocalityFailover {
    /// Source region.
    pub from: String,
    /// Region to fail over to.
    pub to: String,
}

/// HTTP retry policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRetry {
    /// Number of retries (0 disables retries).
    pub attempts: i32,
    /// Timeout per attempt.
    pub per_try_timeout: Option<Duration>,
    /// Comma-separated Envoy retry conditions and/or status codes.
    pub retry_on: String,
    /// Retry to other localities.
    pub retry_remote_localities: Option<bool>,
}
