//! CUSTOM action: MeshConfig `extensionProviders` (`envoyExtAuthzHttp`, `envoyExtAuthzGrpc`)
//! resolved into Envoy `ext_authz` configs, as istiod 1.14's `builder/extauthz.go`
//! (`processExtensionProvider`, `getExtAuthz`) and `extensionproviders/cluster_lookup.go`.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3 as http_ext;
use envoy_types::pb::envoy::extensions::filters::network::ext_authz::v3 as net_ext;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use weft_api::MeshConfig;
use weft_api::mesh::{
    EnvoyExtAuthzGrpcProvider, EnvoyExtAuthzHttpProvider, ExtAuthzRequestBody, Provider,
};

use crate::envoy;
use crate::registry::Registry;

/// Prefix of the CUSTOM policy ids and of the value the ext_authz filter looks for.
pub const MATCH_PREFIX: &str = "istio-ext-authz";
/// `shadow_rules_stat_prefix` of the RBAC filter that triggers ext_authz.
pub const SHADOW_PREFIX: &str = "istio_ext_authz_";
const EFFECTIVE_POLICY_ID: &str = "shadow_effective_policy_id";
/// The policy of the deny-all RBAC a bad CUSTOM configuration turns into.
pub const DENY_ALL_POLICY: &str = "default-deny-all-due-to-bad-CUSTOM-action";
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Why a CUSTOM configuration cannot be applied (the workload then denies everything).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("no provider specified in authorization policy")]
    NoProvider,
    #[error("only 1 provider can be used per workload, found multiple providers: [{}]", .0.join(" "))]
    Multiple(Vec<String>),
    #[error("available providers are [{}] but found {name:?}", available.join(" "))]
    Unknown {
        name: String,
        available: Vec<String>,
    },
    #[error("found errors in provider {name}: {reasons}")]
    Invalid { name: String, reasons: String },
}

/// The ext_authz filter configs of one provider (`tcp` only for gRPC providers).
#[derive(Debug, Clone, PartialEq)]
pub struct ExtAuthz {
    pub http: http_ext::ExtAuthz,
    pub tcp: Option<net_ext::ExtAuthz>,
}

/// The ext-authz providers of the mesh, each built or with what is wrong with it.
#[derive(Debug, Default)]
pub struct Providers(BTreeMap<String, Result<Arc<ExtAuthz>, String>>);

impl Providers {
    /// `processExtensionProvider`: builds every envoyExtAuthz* provider of the mesh config.
    pub fn resolve(mesh: &MeshConfig, registry: &Registry) -> Providers {
        let mut out: BTreeMap<String, Result<Arc<ExtAuthz>, String>> = BTreeMap::new();
        for (i, p) in mesh.extension_providers.iter().enumerate() {
            let mut errs = Vec::new();
            if p.name.is_empty() {
                errs.push(format!(
                    "extension provider name must not be empty, found empty at index: {i}"
                ));
            } else if out.contains_key(&p.name) {
                errs.push(format!(
                    "extension provider name must be unique, found duplicate: {}",
                    p.name
                ));
            }
            let built = match &p.provider {
                Provider::EnvoyExtAuthzHttp(h) => build_http(registry, h),
                Provider::EnvoyExtAuthzGrpc(g) => build_grpc(registry, g),
                _ => continue,
            };
            let built = match built {
                Ok(b) if errs.is_empty() => Ok(Arc::new(b)),
                Ok(_) => Err(errs.join("; ")),
                Err(e) => {
                    errs.push(format!(
                        "failed to parse extension provider {:?}: {}",
                        p.name,
                        e.join("; ")
                    ));
                    Err(errs.join("; "))
                }
            };
            out.insert(p.name.clone(), built);
        }
        Providers(out)
    }

    /// `getExtAuthz`: the providers named by the CUSTOM policies of one workload must be one,
    /// known and valid.
    pub fn pick(&self, names: &[&str]) -> Result<Arc<ExtAuthz>, ProviderError> {
        let Some(first) = names.first() else {
            return Err(ProviderError::NoProvider);
        };
        if names.iter().any(|n| n != first) {
            return Err(ProviderError::Multiple(
                names.iter().map(|s| s.to_string()).collect(),
            ));
        }
        match self.0.get(*first) {
            None => Err(ProviderError::Unknown {
                name: first.to_string(),
                available: self.0.keys().cloned().collect(),
            }),
            Some(Err(e)) => Err(ProviderError::Invalid {
                name: first.to_string(),
                reasons: e.clone(),
            }),
            Some(Ok(x)) => Ok(x.clone()),
        }
    }
}

fn parse_port(port: u32) -> Result<u32, String> {
    if (1..=65535).contains(&port) {
        Ok(port)
    } else {
        Err(format!(
            "port must be in the range [1, 65535], found: {port}"
        ))
    }
}

/// `parseStatusOnError`: empty ⇒ unset (Envoy's 403); otherwise a code of Envoy's StatusCode enum.
fn parse_status(
    status: &str,
) -> Result<Option<envoy_types::pb::envoy::r#type::v3::HttpStatus>, String> {
    if status.is_empty() {
        return Ok(None);
    }
    let code: i32 = status
        .parse()
        .map_err(|e| format!("invalid statusOnError {status:?}: {e}"))?;
    if envoy_types::pb::envoy::r#type::v3::StatusCode::try_from(code).is_err() {
        return Err(format!(
            "unsupported statusOnError {status}, supported values are Envoy's HTTP status codes"
        ));
    }
    Ok(Some(envoy_types::pb::envoy::r#type::v3::HttpStatus {
        code,
    }))
}

fn timeout(t: Option<&weft_api::Duration>) -> envoy_types::pb::google::protobuf::Duration {
    envoy::duration(t.map(|d| d.get()).unwrap_or(DEFAULT_TIMEOUT))
}

fn with_body(b: Option<&ExtAuthzRequestBody>) -> Option<http_ext::BufferSettings> {
    b.map(|b| http_ext::BufferSettings {
        max_request_bytes: b.max_request_bytes,
        allow_partial_message: b.allow_partial_message,
        pack_as_bytes: b.pack_as_bytes,
    })
}

/// `generateHeaders`: `*x` ⇒ suffix, `x*` ⇒ prefix, else exact; all case-insensitive.
fn headers(list: &[String]) -> Option<matcher::ListStringMatcher> {
    use matcher::string_matcher::MatchPattern;
    if list.is_empty() {
        return None;
    }
    let patterns = list
        .iter()
        .map(|h| {
            let p = if let Some(rest) = h.strip_prefix('*') {
                MatchPattern::Suffix(rest.to_string())
            } else if let Some(rest) = h.strip_suffix('*') {
                MatchPattern::Prefix(rest.to_string())
            } else {
                MatchPattern::Exact(h.clone())
            };
            matcher::StringMatcher {
                match_pattern: Some(p),
                ignore_case: true,
            }
        })
        .collect();
    Some(matcher::ListStringMatcher { patterns })
}

/// `generateFilterMatcher`: call the authorizer only when the shadow RBAC of the CUSTOM rules
/// matched (its effective policy id starts with `istio-ext-authz`).
pub fn filter_enabled(rbac_filter: &str) -> matcher::MetadataMatcher {
    super::matcher::metadata_string(
        rbac_filter,
        &format!("{SHADOW_PREFIX}{EFFECTIVE_POLICY_ID}"),
        matcher::StringMatcher {
            match_pattern: Some(matcher::string_matcher::MatchPattern::Prefix(
                MATCH_PREFIX.into(),
            )),
            ignore_case: false,
        },
    )
}

/// A provider's service hostname, its cluster and its `statusOnError`.
type Checked = (
    String,
    String,
    Option<envoy_types::pb::envoy::r#type::v3::HttpStatus>,
);

/// What both provider kinds check: the port, the service (its hostname and cluster) and
/// `statusOnError`; the errors found, and the values when all three are good.
fn check_common(
    registry: &Registry,
    service: &str,
    port: u32,
    status_on_error: &str,
) -> (Vec<String>, Option<Checked>) {
    let mut errs = Vec::new();
    let port_ok = parse_port(port).map_err(|e| errs.push(e)).is_ok();
    let target = registry
        .lookup_cluster(service, port)
        .map_err(|e| errs.push(e))
        .ok();
    let status = parse_status(status_on_error).map_err(|e| errs.push(e)).ok();
    match (port_ok, target, status) {
        (true, Some((host, cluster)), Some(status)) => (errs, Some((host, cluster, status))),
        _ => (errs, None),
    }
}

// Istio 1.14 writes `authorization_request.allowed_headers` (deprecated in later Envoy APIs).
#[allow(deprecated)]
fn build_http(registry: &Registry, c: &EnvoyExtAuthzHttpProvider) -> Result<ExtAuthz, Vec<String>> {
    let (mut errs, checked) = check_common(registry, &c.service, c.port, &c.status_on_error);
    if !c.path_prefix.is_empty() && !c.path_prefix.starts_with('/') {
        errs.push(format!(
            "pathPrefix must begin with `/`, found: {:?}",
            c.path_prefix
        ));
    }
    for (field, values) in [
        (
            "IncludeRequestHeadersInCheck",
            &c.include_request_headers_in_check,
        ),
        ("IncludeHeadersInCheck", &c.include_headers_in_check),
        (
            "HeadersToDownstreamOnDeny",
            &c.headers_to_downstream_on_deny,
        ),
        (
            "HeadersToDownstreamOnAllow",
            &c.headers_to_downstream_on_allow,
        ),
        ("HeadersToUpstreamOnAllow", &c.headers_to_upstream_on_allow),
    ] {
        if values.iter().any(|v| v == "*") {
            errs.push(format!(
                "a single wildcard (\"*\") is not supported, change it to either prefix or suffix match: {field}"
            ));
        }
    }
    let (Some((hostname, cluster, status)), true) = (checked, errs.is_empty()) else {
        return Err(errs);
    };
    let mut service = http_ext::HttpService {
        path_prefix: c.path_prefix.clone(),
        server_uri: Some(core::HttpUri {
            uri: format!("http://{hostname}"),
            timeout: Some(timeout(c.timeout.as_ref())),
            http_upstream_type: Some(core::http_uri::HttpUpstreamType::Cluster(cluster)),
        }),
        ..Default::default()
    };
    // includeHeadersInCheck is the deprecated form, used only without includeRequestHeadersInCheck.
    let allowed = headers(&c.include_request_headers_in_check)
        .or_else(|| headers(&c.include_headers_in_check));
    // A BTreeMap iterates sorted by key, as istiod sorts them.
    let to_add: Vec<core::HeaderValue> = c
        .include_additional_headers_in_check
        .iter()
        .map(|(k, v)| core::HeaderValue {
            key: k.clone(),
            value: v.clone(),
            ..Default::default()
        })
        .collect();
    if allowed.is_some() || !to_add.is_empty() {
        service.authorization_request = Some(http_ext::AuthorizationRequest {
            allowed_headers: allowed,
            headers_to_add: to_add,
        });
    }
    if !c.headers_to_upstream_on_allow.is_empty()
        || !c.headers_to_downstream_on_deny.is_empty()
        || !c.headers_to_downstream_on_allow.is_empty()
    {
        service.authorization_response = Some(http_ext::AuthorizationResponse {
            allowed_upstream_headers: headers(&c.headers_to_upstream_on_allow),
            allowed_client_headers: headers(&c.headers_to_downstream_on_deny),
            allowed_client_headers_on_success: headers(&c.headers_to_downstream_on_allow),
            ..Default::default()
        });
    }
    let http = http_ext::ExtAuthz {
        status_on_error: status,
        failure_mode_allow: c.fail_open,
        transport_api_version: core::ApiVersion::V3 as i32,
        services: Some(http_ext::ext_authz::Services::HttpService(service)),
        filter_enabled_metadata: Some(filter_enabled("envoy.filters.http.rbac")),
        with_request_body: with_body(c.include_request_body_in_check.as_ref()),
        ..Default::default()
    };
    Ok(ExtAuthz { http, tcp: None })
}

fn build_grpc(registry: &Registry, c: &EnvoyExtAuthzGrpcProvider) -> Result<ExtAuthz, Vec<String>> {
    let (errs, checked) = check_common(registry, &c.service, c.port, &c.status_on_error);
    let Some((_, cluster, status)) = checked else {
        return Err(errs);
    };
    // `|` is not valid in a gRPC authority.
    let authority = cluster.replace('|', "_.");
    let grpc = core::GrpcService {
        target_specifier: Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(
            core::grpc_service::EnvoyGrpc {
                cluster_name: cluster,
                authority,
                ..Default::default()
            },
        )),
        timeout: Some(timeout(c.timeout.as_ref())),
        ..Default::default()
    };
    let http = http_ext::ExtAuthz {
        status_on_error: status,
        failure_mode_allow: c.fail_open,
        services: Some(http_ext::ext_authz::Services::GrpcService(grpc.clone())),
        filter_enabled_metadata: Some(filter_enabled("envoy.filters.http.rbac")),
        transport_api_version: core::ApiVersion::V3 as i32,
        with_request_body: with_body(c.include_request_body_in_check.as_ref()),
        ..Default::default()
    };
    let tcp = net_ext::ExtAuthz {
        stat_prefix: "tcp.".into(),
        failure_mode_allow: c.fail_open,
        transport_api_version: core::ApiVersion::V3 as i32,
        grpc_service: Some(grpc),
        filter_enabled_metadata: Some(filter_enabled("envoy.filters.network.rbac")),
        ..Default::default()
    };
    Ok(ExtAuthz {
        http,
        tcp: Some(tcp),
    })
}
