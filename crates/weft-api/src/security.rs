//! `security.istio.io/v1beta1` resources.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::common::WorkloadSelector;

/// mTLS mode for inbound traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent (namespace, then mesh); PERMISSIVE at the top.
    #[default]
    Unset,
    /// Plaintext only.
    Disable,
    /// Both mTLS and plaintext.
    Permissive,
    /// mTLS only.
    Strict,
}

/// mTLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MutualTls {
    /// Mode.
    pub mode: MtlsMode,
}

/// Inbound mTLS policy for workloads.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PeerAuthentication {
    /// Workloads (namespace- or mesh-wide when unset).
    pub selector: Option<WorkloadSelector>,
    /// Default mTLS settings.
    pub mtls: Option<MutualTls>,
    /// Per workload (container) port overrides; only with a selector.
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

/// What an AuthorizationPolicy does when a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthorizationAction {
    /// Allow matching requests.
    #[default]
    Allow,
    /// Deny matching requests.
    Deny,
    /// Audit matching requests (no effect on the decision).
    Audit,
    /// Delegate to an external authorizer (`provider`).
    Custom,
}

/// Access control for workloads.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AuthorizationPolicy {
    /// Workloads (namespace- or mesh-wide when unset).
    pub selector: Option<WorkloadSelector>,
    /// Rules, OR'ed. No rules with ALLOW = allow nothing.
    pub rules: Vec<Rule>,
    /// Action.
    pub action: AuthorizationAction,
    /// External authorizer for CUSTOM.
    pub provider: Option<ExtensionProviderRef>,
}

/// Names a mesh extension provider.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ExtensionProviderRef {
    /// Provider name from `meshConfig.extensionProviders`.
    pub name: String,
}

/// One authorization rule: from AND to AND when.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Rule {
    /// Request sources, OR'ed.
    pub from: Vec<RuleFrom>,
    /// Request operations, OR'ed.
    pub to: Vec<RuleTo>,
    /// Extra conditions, AND'ed.
    pub when: Vec<Condition>,
}

/// A `from` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RuleFrom {
    /// The source.
    pub source: Option<Source>,
}

/// A `to` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RuleTo {
    /// The operation.
    pub operation: Option<Operation>,
}

/// Source attributes (fields AND'ed, values OR'ed).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Source {
    /// Peer identities `<trustDomain>/ns/<ns>/sa/<sa>`.
    pub principals: Vec<String>,
    /// Negated principals.
    pub not_principals: Vec<String>,
    /// JWT principals `<iss>/<sub>`.
    pub request_principals: Vec<String>,
    /// Negated request principals.
    pub not_request_principals: Vec<String>,
    /// Peer namespaces.
    pub namespaces: Vec<String>,
    /// Negated namespaces.
    pub not_namespaces: Vec<String>,
    /// Peer IPs / CIDRs.
    pub ip_blocks: Vec<String>,
    /// Negated IP blocks.
    pub not_ip_blocks: Vec<String>,
    /// Original client IPs (X-Forwarded-For / proxy protocol).
    pub remote_ip_blocks: Vec<String>,
    /// Negated remote IP blocks.
    pub not_remote_ip_blocks: Vec<String>,
}

/// Operation attributes (fields AND'ed, values OR'ed).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Operation {
    /// Hosts (HTTP only).
    pub hosts: Vec<String>,
    /// Negated hosts.
    pub not_hosts: Vec<String>,
    /// Destination ports as strings.
    pub ports: Vec<String>,
    /// Negated ports.
    pub not_ports: Vec<String>,
    /// Methods (HTTP only).
    pub methods: Vec<String>,
    /// Negated methods.
    pub not_methods: Vec<String>,
    /// Paths (HTTP only).
    pub paths: Vec<String>,
    /// Negated paths.
    pub not_paths: Vec<String>,
}

/// A `when` condition.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Condition {
    /// Attribute name, e.g. `request.headers[x-user]`, `source.ip`.
    pub key: String,
    /// Accepted values.
    pub values: Vec<String>,
    /// Rejected values.
    pub not_values: Vec<String>,
}

/// JWT validation for requests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RequestAuthentication {
    /// Workloads (namespace- or mesh-wide when unset).
    pub selector: Option<WorkloadSelector>,
    /// Accepted issuers.
    pub jwt_rules: Vec<JwtRule>,
}

/// One accepted JWT issuer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JwtRule {
    /// Issuer (`iss`), required.
    pub issuer: String,
    /// Accepted audiences (any when empty).
    pub audiences: Vec<String>,
    /// URL of the JWKS.
    pub jwks_uri: String,
    /// Inline JWKS JSON.
    pub jwks: String,
    /// Headers the token is read from.
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters the token is read from.
    pub from_params: Vec<String>,
    /// Header receiving the base64 payload on success.
    pub output_payload_to_header: String,
    /// Keep the token in the forwarded request.
    pub forward_original_token: bool,
}

/// A header carrying a JWT.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JwtHeader {
    /// Header name (required).
    pub name: String,
    /// Prefix before the token, e.g. `Bearer `.
    pub prefix: String,
}
