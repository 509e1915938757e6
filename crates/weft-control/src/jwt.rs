//! RequestAuthentication → `envoy.filters.http.jwt_authn` + `istio_authn` for a sidecar's
//! inbound HCMs, as istiod 1.14 builds them (`model/authentication.go`,
//! `security/authn/v1beta1/policy_applier.go`).
//!
//! - Selection: RequestAuthentications of the proxy's namespace, then of the root namespace,
//!   whose selector is a subset of the workload's labels (no selector: all workloads).
//! - All their `jwtRules` concatenated and sorted by issuer (stable; not deduplicated).
//! - Provider `origins-<i>` per rule with the JWKS inline (the rule's `jwks`, or the keys the
//!   control plane fetched from `jwksUri`, or istiod's fake JWKS until the first fetch).
//! - One rule on prefix `/` requiring, for a single provider, `any[origins-0, allow_missing]`,
//!   for several `any[origins-0, …, origins-n-1, all[any[origins-i, allow_missing]…]]`; CORS
//!   preflights bypass it.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3 as jwt;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf;
use weft_api::security::JwtRule;
use weft_api::{Resource, Spec};
use weft_xds::istio;

use crate::envoy;
use crate::push::PushContext;
use crate::sidecar::ProxyView;

/// Envoy's JWT filter name.
pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";

/// One jwtRule and the RequestAuthentication it comes from.
#[derive(Debug, Clone, Copy)]
pub struct RuleRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// Index in the resource's `jwtRules`.
    pub index: usize,
    pub rule: &'a JwtRule,
}

/// The jwtRules that apply to a workload in `namespace` with `labels`, sorted by issuer.
pub fn rules_for<'a>(
    resources: &'a [Resource],
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<RuleRef<'a>> {
    let mut namespaces = vec![namespace];
    if namespace != root_namespace {
        namespaces.push(root_namespace);
    }
    let mut out = Vec::new();
    for ns in namespaces {
        for r in resources {
            let Spec::RequestAuthentication(ra) = &r.spec else {
                continue;
            };
            if r.meta.namespace != ns {
                continue;
            }
            let selects = ra
                .selector
                .as_ref()
                .is_none_or(|s| s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)));
            if !selects {
                continue;
            }
            out.extend(
                ra.jwt_rules
                    .iter()
                    .enumerate()
                    .map(|(index, rule)| RuleRef {
                        namespace: &r.meta.namespace,
                        name: &r.meta.name,
                        index,
                        rule,
                    }),
            );
        }
    }
    out.sort_by(|a, b| a.rule.issuer.cmp(&b.rule.issuer));
    out
}

fn provider_name(i: usize) -> String {
    format!("origins-{i}")
}

fn require(t: jwt::jwt_requirement::RequiresType) -> jwt::JwtRequirement {
    jwt::JwtRequirement {
        requires_type: Some(t),
    }
}

fn provider(name: String) -> jwt::JwtRequirement {
    require(jwt::jwt_requirement::RequiresType::ProviderName(name))
}

fn any_of(requirements: Vec<jwt::JwtRequirement>) -> jwt::JwtRequirement {
    require(jwt::jwt_requirement::RequiresType::RequiresAny(
        jwt::JwtRequirementOrList { requirements },
    ))
}

/// `convertToEnvoyJwtConfig`: the JwtAuthentication of `rules` (already issuer-sorted), with
/// `jwks(rule)` giving the inline key set of each.
pub fn jwt_authentication(
    rules: &[RuleRef],
    mut jwks: impl FnMut(&JwtRule) -> String,
) -> Option<jwt::JwtAuthentication> {
    if rules.is_empty() {
        return None;
    }
    let mut providers = std::collections::HashMap::new();
    let mut inner_and = Vec::new();
    let mut outer_or = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let rule = r.rule;
        let p = jwt::JwtProvider {
            issuer: rule.issuer.clone(),
            audiences: rule.audiences.clone(),
            forward: rule.forward_original_token,
            forward_payload_header: rule.output_payload_to_header.clone(),
            payload_in_metadata: rule.issuer.clone(),
            from_headers: rule
                .from_headers
                .iter()
                .map(|h| jwt::JwtHeader {
                    name: h.name.clone(),
                    value_prefix: h.prefix.clone(),
                })
                .collect(),
            from_params: rule.from_params.clone(),
            jwks_source_specifier: Some(jwt::jwt_provider::JwksSourceSpecifier::LocalJwks(
                core::DataSource {
                    specifier: Some(core::data_source::Specifier::InlineString(jwks(rule))),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        providers.insert(provider_name(i), p);
        inner_and.push(any_of(vec![
            provider(provider_name(i)),
            require(jwt::jwt_requirement::RequiresType::AllowMissing(
                protobuf::Empty {},
            )),
        ]));
        outer_or.push(provider(provider_name(i)));
    }
    let requires = if inner_and.len() == 1 {
        inner_and.remove(0)
    } else {
        outer_or.push(require(jwt::jwt_requirement::RequiresType::RequiresAll(
            jwt::JwtRequirementAndList {
                requirements: inner_and,
            },
        )));
        any_of(outer_or)
    };
    Some(jwt::JwtAuthentication {
        providers,
        rules: vec![jwt::RequirementRule {
            r#match: Some(route::RouteMatch {
                path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(jwt::requirement_rule::RequirementType::Requires(requires)),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    })
}

/// `AuthNFilter(forSidecar)`: the istio_authn config naming the issuers in rule order.
pub fn authn_filter_config(rules: &[RuleRef], for_sidecar: bool) -> istio::FilterConfig {
    istio::FilterConfig {
        policy: Some(istio::Policy {
            origins: rules
                .iter()
                .map(|r| istio::OriginAuthenticationMethod {
                    jwt: Some(istio::Jwt {
                        issuer: r.rule.issuer.clone(),
                        ..Default::default()
                    }),
                })
                .collect(),
            origin_is_optional: true,
            principal_binding: istio::PrincipalBinding::UseOrigin as i32,
            ..Default::default()
        }),
        skip_validate_trust_domain: true,
        disable_clear_route_cache: for_sidecar,
        ..Default::default()
    }
}

/// The JWKS to inline for a rule: its own, or what the resolver holds for its jwksUri.
pub fn inline_jwks(push: &PushContext, rule: &JwtRule) -> String {
    if !rule.jwks.is_empty() {
        return rule.jwks.clone();
    }
    push.jwks.jwks_for(&rule.issuer, &rule.jwks_uri)
}

/// The request-authentication HTTP filters of the proxy's inbound HCMs (jwt_authn then
/// istio_authn), placed between the CUSTOM authorization filters and the AUDIT/DENY/ALLOW RBAC
/// filters (Istio's order); empty when no RequestAuthentication selects the proxy.
pub fn http_filters(view: &ProxyView) -> Vec<hcm::HttpFilter> {
    let labels = view.labels();
    let rules = rules_for(
        &view.push.resources,
        view.push.root_namespace(),
        &view.node.namespace,
        &labels,
    );
    let Some(cfg) = jwt_authentication(&rules, |rule| inline_jwks(view.push, rule)) else {
        return Vec::new();
    };
    let authn = authn_filter_config(&rules, true);
    vec![
        hcm::HttpFilter {
            name: JWT_FILTER.into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(envoy::any(&cfg))),
            ..Default::default()
        },
        hcm::HttpFilter {
            name: istio::AUTHN_FILTER_NAME.into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(envoy::any(
                &authn,
            ))),
            ..Default::default()
        },
    ]
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
