//! Envoy's external authorization filters (`envoy.filters.http.ext_authz`,
//! `envoy.filters.network.ext_authz`), compiled: which service to ask (an HTTP authorizer or
//! `envoy.service.auth.v3.Authorization/Check` over gRPC, both through a cluster of the
//! snapshot), what to send and keep, what to do when it cannot be asked, and when to ask at all
//! (`filter_enabled_metadata`: Istio's CUSTOM policies ask only when their shadow RBAC rules
//! matched). The calls are made in `http/extauthz.rs`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::filters::http::ext_authz::v3 as http_ext;
use envoy_types::pb::envoy::extensions::filters::network::ext_authz::v3 as net_ext;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use http::{HeaderName, HeaderValue, StatusCode};
use prost::Message;

use super::route::StrMatch;
use crate::error::ProxyError;

pub const HTTP_EXT_AUTHZ_TYPE: &str = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
pub const NETWORK_EXT_AUTHZ_TYPE: &str = "envoy.extensions.filters.network.ext_authz.v3.ExtAuthz";

/// Envoy's default timeout of an authorization call.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
/// The RBAC metadata key whose value gates the call (`<prefix>shadow_effective_policy_id`).
const EFFECTIVE_POLICY_ID: &str = "shadow_effective_policy_id";

/// One ext_authz filter.
#[derive(Debug)]
pub struct ExtAuthz {
    pub service: Service,
    /// `failure_mode_allow`: let the request through when the authorizer cannot be asked (or,
    /// over HTTP, answers 5xx).
    pub fail_open: bool,
    /// What a request gets when the authorizer cannot be asked (Envoy's 403 by default).
    pub status_on_error: StatusCode,
    /// Ask only when an RBAC shadow engine recorded a matching policy id.
    pub enabled_by: Option<EnabledBy>,
    pub stats: Stats,
}

/// `filter_enabled_metadata` in the one shape Istio writes: the RBAC filter's shadow effective
/// policy id under a stat prefix, matched as a string.
#[derive(Debug)]
pub struct EnabledBy {
    /// The RBAC filter's `shadow_rules_stat_prefix` (`istio_ext_authz_`).
    pub shadow_prefix: String,
    pub policy: StrMatch,
}

/// Envoy's ext_authz counters: `<prefix>ext_authz.{ok,denied,error,failure_mode_allowed,disabled}`.
#[derive(Debug)]
pub struct Stats {
    pub ok: Arc<AtomicU64>,
    pub denied: Arc<AtomicU64>,
    pub error: Arc<AtomicU64>,
    pub failure_mode_allowed: Arc<AtomicU64>,
    pub disabled: Arc<AtomicU64>,
}

impl Stats {
    fn new(prefix: &str) -> Stats {
        let c = |name: &str| super::counter::counter(&format!("{prefix}ext_authz.{name}"));
        Stats {
            ok: c("ok"),
            denied: c("denied"),
            error: c("error"),
            failure_mode_allowed: c("failure_mode_allowed"),
            disabled: c("disabled"),
        }
    }
}

#[derive(Debug)]
pub enum Service {
    Http(HttpService),
    Grpc(GrpcService),
}

impl Service {
    pub fn cluster(&self) -> &Arc<str> {
        match self {
            Service::Http(h) => &h.cluster,
            Service::Grpc(g) => &g.cluster,
        }
    }

    pub fn timeout(&self) -> Duration {
        match self {
            Service::Http(h) => h.timeout,
            Service::Grpc(g) => g.timeout,
        }
    }
}

/// `envoy_grpc`: the Authorization service behind a cluster.
#[derive(Debug)]
pub struct GrpcService {
    pub cluster: Arc<str>,
    /// `:authority` of the calls (the cluster name when unset, as Envoy does).
    pub authority: String,
    pub timeout: Duration,
}

/// A set of header names, as a `ListStringMatcher`.
#[derive(Debug, Default)]
pub struct HeaderNames(Vec<StrMatch>);

impl HeaderNames {
    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|m| m.matches(name))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn compile(l: Option<&matcher::ListStringMatcher>, what: &str) -> Result<Self, ProxyError> {
        let patterns = l.map(|l| l.patterns.as_slice()).unwrap_or_default();
        Ok(HeaderNames(
            patterns
                .iter()
                .map(|p| StrMatch::compile(p, what))
                .collect::<Result<_, _>>()?,
        ))
    }
}

/// `http_service`: an HTTP authorizer behind a cluster. The check is the request's head
/// (method, path under `path_prefix`, the allowed headers) without its body; 200 allows, 5xx is
/// an error, anything else is the denial the client gets.
#[derive(Debug)]
pub struct HttpService {
    pub cluster: Arc<str>,
    pub path_prefix: String,
    pub timeout: Duration,
    /// Request headers sent to the authorizer besides `authorization`, `:method`, `:path` and
    /// `host`, which always go (`authorization_request.allowed_headers`).
    pub request_headers: HeaderNames,
    /// Headers the check carries in any case (`authorization_request.headers_to_add`).
    pub headers_to_add: Vec<(HeaderName, HeaderValue)>,
    /// Authorizer headers that replace the request's on an allow (`allowed_upstream_headers`).
    pub upstream: HeaderNames,
    /// Authorizer headers appended to the request's on an allow
    /// (`allowed_upstream_headers_to_append`).
    pub upstream_append: HeaderNames,
    /// Authorizer headers the client gets with a denial: all but `host` when unset, else these
    /// and `:status`, `content-length`, `www-authenticate`, `location`
    /// (`allowed_client_headers`).
    pub client_on_deny: Option<HeaderNames>,
    /// Authorizer headers added to the response on an allow (`allowed_client_headers_on_success`).
    pub client_on_allow: HeaderNames,
}

impl HttpService {
    /// Whether the authorizer's denial header `name` goes to the client.
    pub fn to_client_on_deny(&self, name: &str) -> bool {
        match &self.client_on_deny {
            None => name != "host",
            Some(l) => {
                matches!(
                    name,
                    "content-length" | "www-authenticate" | "location" | ":status"
                ) || l.matches(name)
            }
        }
    }

    /// Whether request header `name` goes into the check.
    pub fn in_check(&self, name: &str) -> bool {
        matches!(name, "authorization" | "host" | ":authority")
            || self.request_headers.matches(name)
    }
}

fn duration(d: Option<&envoy_types::pb::google::protobuf::Duration>) -> Duration {
    match d {
        Some(d) => Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32),
        None => DEFAULT_TIMEOUT,
    }
}

fn grpc_service(g: &core::GrpcService, what: &str) -> Result<GrpcService, ProxyError> {
    use core::grpc_service::TargetSpecifier;
    match &g.target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(e)) if !e.cluster_name.is_empty() => Ok(GrpcService {
            cluster: e.cluster_name.as_str().into(),
            authority: if e.authority.is_empty() {
                e.cluster_name.clone()
            } else {
                e.authority.clone()
            },
            timeout: duration(g.timeout.as_ref()),
        }),
        Some(TargetSpecifier::EnvoyGrpc(_)) => Err(ProxyError::Config(format!(
            "{what}: grpc_service.envoy_grpc needs a cluster_name"
        ))),
        _ => Err(ProxyError::Config(format!(
            "{what}: grpc_service: only envoy_grpc (a cluster) is supported; refused"
        ))),
    }
}

fn enabled_by(
    m: Option<&matcher::MetadataMatcher>,
    rbac_filter: &str,
    what: &str,
) -> Result<Option<EnabledBy>, ProxyError> {
    let Some(m) = m else { return Ok(None) };
    let bad = || {
        ProxyError::Config(format!(
            "{what}: filter_enabled_metadata: only a string match on the {rbac_filter} filter's \
             <prefix>{EFFECTIVE_POLICY_ID} is supported; refused (fail closed)"
        ))
    };
    use matcher::metadata_matcher::path_segment::Segment;
    use matcher::value_matcher::MatchPattern;
    if m.filter != rbac_filter || m.invert || m.path.len() != 1 {
        return Err(bad());
    }
    let Some(Segment::Key(key)) = &m.path[0].segment else {
        return Err(bad());
    };
    let Some(prefix) = key.strip_suffix(EFFECTIVE_POLICY_ID) else {
        return Err(bad());
    };
    let Some(MatchPattern::StringMatch(s)) =
        m.value.as_ref().and_then(|v| v.match_pattern.as_ref())
    else {
        return Err(bad());
    };
    Ok(Some(EnabledBy {
        shadow_prefix: prefix.to_string(),
        policy: StrMatch::compile(s, what)?,
    }))
}

fn status_on_error(
    s: Option<&envoy_types::pb::envoy::r#type::v3::HttpStatus>,
    what: &str,
) -> Result<StatusCode, ProxyError> {
    match s {
        None => Ok(StatusCode::FORBIDDEN),
        Some(s) if s.code == 0 => Ok(StatusCode::FORBIDDEN),
        Some(s) => u16::try_from(s.code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| {
                ProxyError::Config(format!(
                    "{what}: status_on_error {} is no HTTP status",
                    s.code
                ))
            }),
    }
}

/// `envoy.filters.http.ext_authz`; its counters are `http.<hcm_stat_prefix>.ext_authz.*`.
// Istio 1.14 writes `authorization_request.allowed_headers` (deprecated in later Envoy APIs).
#[allow(deprecated)]
pub fn compile_http(
    any: &envoy_types::pb::google::protobuf::Any,
    hcm_stat_prefix: &str,
    what: &str,
) -> Result<ExtAuthz, ProxyError> {
    let c = http_ext::ExtAuthz::decode(any.value.as_slice())
        .map_err(|e| ProxyError::Config(format!("{what}: ext_authz config: {e}")))?;
    if c.with_request_body.is_some() {
        return Err(ProxyError::Config(format!(
            "{what}: with_request_body (includeRequestBodyInCheck) is not supported by this proxy; \
             remove it from the extension provider (refused, fail closed)"
        )));
    }
    if c.filter_enabled.is_some() || c.deny_at_disable.is_some() {
        return Err(ProxyError::Config(format!(
            "{what}: filter_enabled/deny_at_disable (runtime sampling) is not supported; refused"
        )));
    }
    let service = match &c.services {
        Some(http_ext::ext_authz::Services::GrpcService(g)) => {
            Service::Grpc(grpc_service(g, what)?)
        }
        Some(http_ext::ext_authz::Services::HttpService(h)) => {
            let uri = h.server_uri.as_ref();
            let cluster = match uri.and_then(|u| u.http_upstream_type.as_ref()) {
                Some(core::http_uri::HttpUpstreamType::Cluster(c)) if !c.is_empty() => c.clone(),
                _ => {
                    return Err(ProxyError::Config(format!(
                        "{what}: http_service.server_uri needs a cluster"
                    )));
                }
            };
            let req = h.authorization_request.as_ref();
            let resp = h.authorization_response.as_ref();
            let mut headers_to_add = Vec::new();
            for hv in req.map(|r| r.headers_to_add.as_slice()).unwrap_or_default() {
                let name = HeaderName::from_bytes(hv.key.as_bytes()).map_err(|_| {
                    ProxyError::Config(format!("{what}: headers_to_add: bad name {:?}", hv.key))
                })?;
                let value = HeaderValue::from_str(&hv.value).map_err(|_| {
                    ProxyError::Config(format!("{what}: headers_to_add: bad value for {}", hv.key))
                })?;
                headers_to_add.push((name, value));
            }
            let client_on_deny = resp
                .and_then(|r| r.allowed_client_headers.as_ref())
                .filter(|l| !l.patterns.is_empty());
            Service::Http(HttpService {
                cluster: cluster.into(),
                path_prefix: h.path_prefix.clone(),
                timeout: duration(uri.and_then(|u| u.timeout.as_ref())),
                request_headers: HeaderNames::compile(
                    req.and_then(|r| r.allowed_headers.as_ref()),
                    what,
                )?,
                headers_to_add,
                upstream: HeaderNames::compile(
                    resp.and_then(|r| r.allowed_upstream_headers.as_ref()),
                    what,
                )?,
                upstream_append: HeaderNames::compile(
                    resp.and_then(|r| r.allowed_upstream_headers_to_append.as_ref()),
                    what,
                )?,
                client_on_deny: match client_on_deny {
                    Some(l) => Some(HeaderNames::compile(Some(l), what)?),
                    None => None,
                },
                client_on_allow: HeaderNames::compile(
                    resp.and_then(|r| r.allowed_client_headers_on_success.as_ref()),
                    what,
                )?,
            })
        }
        None => {
            return Err(ProxyError::Config(format!(
                "{what}: ext_authz needs a grpc_service or an http_service"
            )));
        }
    };
    let prefix = if c.stat_prefix.is_empty() {
        format!("http.{hcm_stat_prefix}.")
    } else {
        format!("http.{hcm_stat_prefix}.{}.", c.stat_prefix)
    };
    Ok(ExtAuthz {
        service,
        fail_open: c.failure_mode_allow,
        status_on_error: status_on_error(c.status_on_error.as_ref(), what)?,
        enabled_by: enabled_by(
            c.filter_enabled_metadata.as_ref(),
            "envoy.filters.http.rbac",
            what,
        )?,
        stats: Stats::new(&prefix),
    })
}

/// `envoy.filters.network.ext_authz` (gRPC only, as Envoy).
pub fn compile_network(
    any: &envoy_types::pb::google::protobuf::Any,
    what: &str,
) -> Result<ExtAuthz, ProxyError> {
    let c = net_ext::ExtAuthz::decode(any.value.as_slice())
        .map_err(|e| ProxyError::Config(format!("{what}: ext_authz config: {e}")))?;
    let Some(g) = &c.grpc_service else {
        return Err(ProxyError::Config(format!(
            "{what}: network ext_authz needs a grpc_service"
        )));
    };
    Ok(ExtAuthz {
        service: Service::Grpc(grpc_service(g, what)?),
        fail_open: c.failure_mode_allow,
        status_on_error: StatusCode::FORBIDDEN,
        enabled_by: enabled_by(
            c.filter_enabled_metadata.as_ref(),
            "envoy.filters.network.rbac",
            what,
        )?,
        stats: Stats::new(&format!("{}ext_authz.", c.stat_prefix)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any<M: Message>(type_name: &str, m: &M) -> envoy_types::pb::google::protobuf::Any {
        envoy_types::pb::google::protobuf::Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value: m.encode_to_vec(),
        }
    }

    fn exact(s: &str) -> matcher::StringMatcher {
        matcher::StringMatcher {
            match_pattern: Some(matcher::string_matcher::MatchPattern::Exact(s.into())),
            ignore_case: true,
        }
    }

    fn istio_gate(filter: &str) -> matcher::MetadataMatcher {
        use matcher::metadata_matcher::{PathSegment, path_segment::Segment};
        matcher::MetadataMatcher {
            filter: filter.into(),
            path: vec![PathSegment {
                segment: Some(Segment::Key(
                    "istio_ext_authz_shadow_effective_policy_id".into(),
                )),
            }],
            value: Some(matcher::ValueMatcher {
                match_pattern: Some(matcher::value_matcher::MatchPattern::StringMatch(
                    matcher::StringMatcher {
                        match_pattern: Some(matcher::string_matcher::MatchPattern::Prefix(
                            "istio-ext-authz".into(),
                        )),
                        ignore_case: false,
                    },
                )),
            }),
            invert: false,
        }
    }

    #[allow(deprecated)]
    fn http_provider() -> http_ext::ExtAuthz {
        http_ext::ExtAuthz {
            failure_mode_allow: true,
            status_on_error: Some(envoy_types::pb::envoy::r#type::v3::HttpStatus { code: 503 }),
            filter_enabled_metadata: Some(istio_gate("envoy.filters.http.rbac")),
            services: Some(http_ext::ext_authz::Services::HttpService(
                http_ext::HttpService {
                    path_prefix: "/check".into(),
                    server_uri: Some(core::HttpUri {
                        uri: "http://ext-authz.foo.svc.cluster.local".into(),
                        timeout: Some(envoy_types::pb::google::protobuf::Duration {
                            seconds: 2,
                            nanos: 0,
                        }),
                        http_upstream_type: Some(core::http_uri::HttpUpstreamType::Cluster(
                            "outbound|8000||ext-authz.foo.svc.cluster.local".into(),
                        )),
                    }),
                    authorization_request: Some(http_ext::AuthorizationRequest {
                        allowed_headers: Some(matcher::ListStringMatcher {
                            patterns: vec![exact("x-ext-authz")],
                        }),
                        headers_to_add: vec![core::HeaderValue {
                            key: "x-added".into(),
                            value: "yes".into(),
                            ..Default::default()
                        }],
                    }),
                    authorization_response: Some(http_ext::AuthorizationResponse {
                        allowed_upstream_headers: Some(matcher::ListStringMatcher {
                            patterns: vec![exact("x-ext-authz-check-result")],
                        }),
                        allowed_client_headers: Some(matcher::ListStringMatcher {
                            patterns: vec![exact("x-ext-authz-check-result")],
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }
    }

    #[test]
    fn an_http_provider_compiles_as_istio_writes_it() {
        let e = compile_http(
            &any(HTTP_EXT_AUTHZ_TYPE, &http_provider()),
            "inbound_0.0.0.0_8000",
            "t",
        )
        .unwrap();
        assert!(e.fail_open);
        assert_eq!(e.status_on_error, StatusCode::SERVICE_UNAVAILABLE);
        let gate = e.enabled_by.as_ref().unwrap();
        assert_eq!(gate.shadow_prefix, "istio_ext_authz_");
        assert!(
            gate.policy
                .matches("istio-ext-authz-ns[foo]-policy[ext-authz]-rule[0]")
        );
        assert!(!gate.policy.matches("ns[foo]-policy[other]"));
        let Service::Http(h) = &e.service else {
            panic!("not http")
        };
        assert_eq!(
            &*h.cluster,
            "outbound|8000||ext-authz.foo.svc.cluster.local"
        );
        assert_eq!(h.timeout, Duration::from_secs(2));
        assert!(h.in_check("x-ext-authz") && h.in_check("authorization") && h.in_check("host"));
        assert!(!h.in_check("cookie"));
        assert_eq!(h.headers_to_add.len(), 1);
        assert!(h.upstream.matches("x-ext-authz-check-result"));
        assert!(h.to_client_on_deny("x-ext-authz-check-result") && h.to_client_on_deny("location"));
        assert!(!h.to_client_on_deny("x-other"));
        assert!(h.client_on_allow.is_empty());
    }

    #[test]
    fn unsupported_shapes_are_refused() {
        let mut body = http_provider();
        body.with_request_body = Some(http_ext::BufferSettings {
            max_request_bytes: 10,
            ..Default::default()
        });
        let err = compile_http(&any(HTTP_EXT_AUTHZ_TYPE, &body), "", "listener x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("listener x") && err.contains("includeRequestBodyInCheck"),
            "{err}"
        );

        let mut gate = http_provider();
        gate.filter_enabled_metadata = Some(istio_gate("envoy.filters.http.jwt_authn"));
        assert!(compile_http(&any(HTTP_EXT_AUTHZ_TYPE, &gate), "", "x").is_err());

        let none = net_ext::ExtAuthz::default();
        assert!(compile_network(&any(NETWORK_EXT_AUTHZ_TYPE, &none), "x").is_err());
    }

    #[test]
    fn a_grpc_provider_defaults_its_authority_to_the_cluster() {
        let c = net_ext::ExtAuthz {
            stat_prefix: "tcp.".into(),
            grpc_service: Some(core::GrpcService {
                target_specifier: Some(core::grpc_service::TargetSpecifier::EnvoyGrpc(
                    core::grpc_service::EnvoyGrpc {
                        cluster_name: "outbound|9000||ext-authz.foo.svc.cluster.local".into(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            filter_enabled_metadata: Some(istio_gate("envoy.filters.network.rbac")),
            ..Default::default()
        };
        let e = compile_network(&any(NETWORK_EXT_AUTHZ_TYPE, &c), "x").unwrap();
        let Service::Grpc(g) = &e.service else {
            panic!("not grpc")
        };
        assert_eq!(
            g.authority,
            "outbound|9000||ext-authz.foo.svc.cluster.local"
        );
        assert_eq!(g.timeout, DEFAULT_TIMEOUT);
        assert!(!e.fail_open);
        assert_eq!(e.status_on_error, StatusCode::FORBIDDEN);
    }
}
