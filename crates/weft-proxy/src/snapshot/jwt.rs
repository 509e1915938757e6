//! Envoy's `envoy.filters.http.jwt_authn` (`JwtAuthentication`) and Istio's `istio_authn`
//! (`FilterConfig`) compiled for the data path: providers with their token locations (Envoy's
//! defaults `Authorization: Bearer …` and `?access_token=` when none is set), parsed key sets,
//! the requirement tree and the rules that pick it by path. The runtime is `http/jwt.rs`.
//!
//! Not supported (the filter fails to compile, so the listener is refused rather than run
//! open): `requirement_map`/`requirement_name`, `filter_state_rules`,
//! `extract_only_without_validation`, rule matches other than `prefix`/`path`. A provider with
//! `remote_jwks` (the proxy makes no outbound calls) fails every token with
//! `Jwks remote fetch is failed`; an unusable local JWKS fails them with
//! `Jwks doesn't have any valid public key`, as Envoy does.

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3 as xjwt;
use envoy_types::pb::google::protobuf;
use http::HeaderName;
use prost::Message;
use weft_identity::jwt::{Audiences, CLOCK_SKEW_SECONDS, Jwks, JwtStatus};

use crate::error::ProxyError;

pub const JWT_AUTHN: &str = "envoy.filters.http.jwt_authn";
pub const JWT_AUTHN_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
pub use weft_xds::istio::{AUTHN_FILTER_NAME as ISTIO_AUTHN, AUTHN_FILTER_TYPE_URL};

/// A header a token is read from, and the issuers that declared it.
#[derive(Debug, Clone)]
pub struct HeaderLocation {
    pub name: HeaderName,
    /// `value_prefix` (e.g. `Bearer `); empty: the whole value is the token.
    pub prefix: String,
    pub issuers: Vec<String>,
}

/// A query parameter a token is read from, and the issuers that declared it.
#[derive(Debug, Clone)]
pub struct ParamLocation {
    pub name: String,
    pub issuers: Vec<String>,
}

/// Token locations (Envoy's extractor), headers first then parameters, each in name order.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    pub headers: Vec<HeaderLocation>,
    pub params: Vec<ParamLocation>,
}

impl Locations {
    fn add_header(&mut self, issuer: &str, name: HeaderName, prefix: &str) {
        match self
            .headers
            .iter_mut()
            .find(|h| h.name == name && h.prefix == prefix)
        {
            Some(h) => h.issuers.push(issuer.to_string()),
            None => self.headers.push(HeaderLocation {
                name,
                prefix: prefix.to_string(),
                issuers: vec![issuer.to_string()],
            }),
        }
    }

    fn add_param(&mut self, issuer: &str, name: &str) {
        match self.params.iter_mut().find(|p| p.name == name) {
            Some(p) => p.issuers.push(issuer.to_string()),
            None => self.params.push(ParamLocation {
                name: name.to_string(),
                issuers: vec![issuer.to_string()],
            }),
        }
    }

    fn add_provider(&mut self, p: &xjwt::JwtProvider, what: &str) -> Result<(), ProxyError> {
        for h in &p.from_headers {
            self.add_header(&p.issuer, header_name(&h.name, what)?, &h.value_prefix);
        }
        for name in &p.from_params {
            self.add_param(&p.issuer, name);
        }
        if p.from_headers.is_empty() && p.from_params.is_empty() && p.from_cookies.is_empty() {
            self.add_header(&p.issuer, http::header::AUTHORIZATION, "Bearer ");
            self.add_param(&p.issuer, "access_token");
        }
        Ok(())
    }

    fn sort(&mut self) {
        // Envoy keeps both in std::maps (header key = name + prefix).
        self.headers
            .sort_by(|a, b| (a.name.as_str(), &a.prefix).cmp(&(b.name.as_str(), &b.prefix)));
        self.params.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

fn header_name(name: &str, what: &str) -> Result<HeaderName, ProxyError> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| ProxyError::Config(format!("{what}: jwt_authn: bad header name {name:?}")))
}

/// One `JwtProvider`.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    /// The issuer its tokens must carry (empty: any).
    pub issuer: String,
    pub audiences: Audiences,
    pub locations: Locations,
    /// Keep the token in the request (otherwise its header is removed on success).
    pub forward: bool,
    /// `forward_payload_header`: set to the token's base64url payload on success.
    pub payload_header: Option<HeaderName>,
    /// `payload_in_metadata`: the key of the verified payload in the request's metadata.
    pub payload_in_metadata: Option<Arc<str>>,
    /// The key set, or the status every token of this provider fails with.
    pub jwks: Result<Arc<Jwks>, JwtStatus>,
    pub clock_skew: u64,
}

impl Provider {
    /// Whether a token from a location declared by `issuers` may carry `iss`.
    pub fn issuer_matches(&self, iss: &str) -> bool {
        self.issuer.is_empty() || self.issuer == iss
    }
}

/// A `JwtRequirement`.
#[derive(Debug, Clone)]
pub enum Requirement {
    /// A provider (index in [`JwtAuthn::providers`]), with audiences overriding its own.
    Provider(usize, Option<Audiences>),
    Any(Vec<Requirement>),
    All(Vec<Requirement>),
    /// Tokens at any provider's location must verify; no token passes.
    AllowMissing,
    /// Tokens are verified (and used when good) but never fail the request.
    AllowMissingOrFailed,
}

/// How a rule selects requests.
#[derive(Debug, Clone)]
pub enum RuleMatch {
    Prefix(String, bool),
    Path(String, bool),
}

impl RuleMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            RuleMatch::Prefix(p, true) => path.starts_with(p.as_str()),
            RuleMatch::Prefix(p, false) => path
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
            RuleMatch::Path(p, true) => path == p,
            RuleMatch::Path(p, false) => path.eq_ignore_ascii_case(p),
        }
    }
}

/// A `RequirementRule`: the first whose match selects the request decides; `None` means the
/// request is not verified.
#[derive(Debug, Clone)]
pub struct Rule {
    pub matcher: RuleMatch,
    pub requires: Option<Requirement>,
}

/// The compiled `JwtAuthentication`.
#[derive(Debug, Clone)]
pub struct JwtAuthn {
    /// Providers sorted by name.
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    pub bypass_cors_preflight: bool,
    /// Every provider's locations (what `allow_missing` looks at).
    pub all_locations: Locations,
    /// Every provider's `forward_payload_header`, removed from requests before verifying.
    pub payload_headers: Vec<HeaderName>,
}

impl JwtAuthn {
    /// The first provider for `iss` (Envoy's `findByIssuer`).
    pub fn provider_for_issuer(&self, iss: &str) -> Option<usize> {
        self.providers
            .iter()
            .position(|p| p.issuer == iss)
            .or_else(|| self.providers.iter().position(|p| p.issuer.is_empty()))
    }
}

fn jwks_of(p: &xjwt::JwtProvider, what: &str) -> Result<Result<Arc<Jwks>, JwtStatus>, ProxyError> {
    use core::data_source::Specifier as S;
    use xjwt::jwt_provider::JwksSourceSpecifier as J;
    let text = match &p.jwks_source_specifier {
        Some(J::RemoteJwks(_)) => return Ok(Err(JwtStatus::JwksFetchFail)),
        Some(J::LocalJwks(ds)) => match &ds.specifier {
            Some(S::InlineString(s)) => s.clone(),
            Some(S::InlineBytes(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(S::Filename(f)) => match std::fs::read_to_string(f) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(provider = %p.issuer, file = %f, error = %e, "cannot read the local JWKS");
                    return Ok(Err(JwtStatus::JwksNoValidKeys));
                }
            },
            _ => {
                return Err(ProxyError::Config(format!(
                    "{what}: jwt_authn provider {:?}: local_jwks needs inline_string, inline_bytes or filename",
                    p.issuer
                )));
            }
        },
        None => {
            return Err(ProxyError::Config(format!(
                "{what}: jwt_authn provider {:?} has no JWKS source",
                p.issuer
            )));
        }
    };
    Ok(match Jwks::parse(&text) {
        Ok(j) => Ok(Arc::new(j)),
        Err(status) => {
            tracing::warn!(issuer = %p.issuer, %status, "invalid inline JWKS: every token of this issuer fails");
            Err(JwtStatus::JwksNoValidKeys)
        }
    })
}

fn requirement(
    r: &xjwt::JwtRequirement,
    by_name: &HashMap<&str, usize>,
    what: &str,
) -> Result<Requirement, ProxyError> {
    use xjwt::jwt_requirement::RequiresType as R;
    let provider = |name: &str| {
        by_name.get(name).copied().ok_or_else(|| {
            ProxyError::Config(format!(
                "{what}: jwt_authn requirement names unknown provider {name:?}"
            ))
        })
    };
    Ok(match &r.requires_type {
        Some(R::ProviderName(n)) => Requirement::Provider(provider(n)?, None),
        Some(R::ProviderAndAudiences(pa)) => Requirement::Provider(
            provider(&pa.provider_name)?,
            Some(Audiences::new(&pa.audiences)),
        ),
        Some(R::RequiresAny(l)) => Requirement::Any(
            l.requirements
                .iter()
                .map(|r| requirement(r, by_name, what))
                .collect::<Result<_, _>>()?,
        ),
        Some(R::RequiresAll(l)) => Requirement::All(
            l.requirements
                .iter()
                .map(|r| requirement(r, by_name, what))
                .collect::<Result<_, _>>()?,
        ),
        Some(R::AllowMissing(_)) => Requirement::AllowMissing,
        Some(R::AllowMissingOrFailed(_)) => Requirement::AllowMissingOrFailed,
        Some(R::ExtractOnlyWithoutValidation(_)) => {
            return Err(ProxyError::Config(format!(
                "{what}: jwt_authn extract_only_without_validation is not supported"
            )));
        }
        None => {
            return Err(ProxyError::Config(format!(
                "{what}: jwt_authn requirement is empty"
            )));
        }
    })
}

fn rule(
    r: &xjwt::RequirementRule,
    by_name: &HashMap<&str, usize>,
    what: &str,
) -> Result<Rule, ProxyError> {
    use route::route_match::PathSpecifier as P;
    let m = r
        .r#match
        .as_ref()
        .ok_or_else(|| ProxyError::Config(format!("{what}: jwt_authn rule without match")))?;
    if !m.headers.is_empty() || !m.query_parameters.is_empty() || m.runtime_fraction.is_some() {
        return Err(ProxyError::Config(format!(
            "{what}: jwt_authn rules match on the path only (prefix or path)"
        )));
    }
    let case = m.case_sensitive.as_ref().is_none_or(|b| b.value);
    let matcher = match &m.path_specifier {
        Some(P::Prefix(p)) => RuleMatch::Prefix(p.clone(), case),
        Some(P::Path(p)) => RuleMatch::Path(p.clone(), case),
        _ => {
            return Err(ProxyError::Config(format!(
                "{what}: jwt_authn rules match on the path only (prefix or path)"
            )));
        }
    };
    use xjwt::requirement_rule::RequirementType as T;
    let requires = match &r.requirement_type {
        Some(T::Requires(req)) => Some(requirement(req, by_name, what)?),
        Some(T::RequirementName(n)) => {
            return Err(ProxyError::Config(format!(
                "{what}: jwt_authn requirement_name {n:?} (requirement_map) is not supported"
            )));
        }
        None => None,
    };
    Ok(Rule { matcher, requires })
}

/// Compiles the `typed_config` of an `envoy.filters.http.jwt_authn` filter.
pub fn compile_jwt_authn(any: &protobuf::Any, what: &str) -> Result<JwtAuthn, ProxyError> {
    let cfg = xjwt::JwtAuthentication::decode(any.value.as_slice())
        .map_err(|e| ProxyError::Config(format!("{what}: jwt_authn config: {e}")))?;
    compile(&cfg, what)
}

/// Compiles a decoded `JwtAuthentication`.
pub fn compile(cfg: &xjwt::JwtAuthentication, what: &str) -> Result<JwtAuthn, ProxyError> {
    if cfg.filter_state_rules.is_some() || !cfg.requirement_map.is_empty() {
        return Err(ProxyError::Config(format!(
            "{what}: jwt_authn filter_state_rules and requirement_map are not supported"
        )));
    }
    let mut names: Vec<&String> = cfg.providers.keys().collect();
    names.sort();
    let mut providers = Vec::new();
    let mut all = Locations::default();
    let mut payload_headers = Vec::new();
    for name in names {
        let p = &cfg.providers[name];
        if !p.from_cookies.is_empty() {
            return Err(ProxyError::Config(format!(
                "{what}: jwt_authn provider {name}: from_cookies is not supported"
            )));
        }
        let mut locations = Locations::default();
        locations.add_provider(p, what)?;
        locations.sort();
        all.add_provider(p, what)?;
        let payload_header = if p.forward_payload_header.is_empty() {
            None
        } else {
            let h = header_name(&p.forward_payload_header, what)?;
            payload_headers.push(h.clone());
            Some(h)
        };
        providers.push(Provider {
            name: name.clone(),
            issuer: p.issuer.clone(),
            audiences: Audiences::new(&p.audiences),
            locations,
            forward: p.forward,
            payload_header,
            payload_in_metadata: (!p.payload_in_metadata.is_empty())
                .then(|| Arc::from(p.payload_in_metadata.as_str())),
            jwks: jwks_of(p, what)?,
            clock_skew: if p.clock_skew_seconds > 0 {
                u64::from(p.clock_skew_seconds)
            } else {
                CLOCK_SKEW_SECONDS
            },
        });
    }
    all.sort();
    let by_name: HashMap<&str, usize> = providers
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let rules = cfg
        .rules
        .iter()
        .map(|r| rule(r, &by_name, what))
        .collect::<Result<_, _>>()?;
    Ok(JwtAuthn {
        providers,
        rules,
        bypass_cors_preflight: cfg.bypass_cors_preflight,
        all_locations: all,
        payload_headers,
    })
}

/// Istio's `istio_authn` filter: the JWT issuers whose verified payload becomes the request's
/// authentication (`request.auth.*`), first match in this order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IstioAuthn {
    pub issuers: Vec<String>,
}

/// Compiles the `typed_config` of an `istio_authn` filter.
pub fn compile_istio_authn(any: &protobuf::Any, what: &str) -> Result<IstioAuthn, ProxyError> {
    let cfg = weft_xds::istio::FilterConfig::decode(any.value.as_slice())
        .map_err(|e| ProxyError::Config(format!("{what}: istio_authn config: {e}")))?;
    Ok(IstioAuthn {
        issuers: cfg
            .policy
            .into_iter()
            .flat_map(|p| p.origins)
            .filter_map(|o| o.jwt.map(|j| j.issuer))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::DataSource;

    fn provider(issuer: &str) -> xjwt::JwtProvider {
        xjwt::JwtProvider {
            issuer: issuer.into(),
            jwks_source_specifier: Some(xjwt::jwt_provider::JwksSourceSpecifier::LocalJwks(
                DataSource {
                    specifier: Some(core::data_source::Specifier::InlineString(
                        r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.into(),
                    )),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_locations_and_merges_shared_ones() {
        let mut a = provider("iss-a");
        a.forward_payload_header = "X-Jwt-Payload".into();
        let mut b = provider("iss-b");
        b.from_headers = vec![xjwt::JwtHeader {
            name: "x-jwt".into(),
            value_prefix: String::new(),
        }];
        let mut c = provider("iss-c");
        c.jwks_source_specifier = Some(xjwt::jwt_provider::JwksSourceSpecifier::RemoteJwks(
            Default::default(),
        ));
        let cfg = xjwt::JwtAuthentication {
            providers: [("p-a", a), ("p-b", b), ("p-c", c)]
                .into_iter()
                .map(|(n, p)| (n.to_string(), p))
                .collect(),
            ..Default::default()
        };
        let f = compile(&cfg, "test").expect("compiles");
        assert_eq!(f.providers[0].locations.headers[0].name, "authorization");
        assert_eq!(f.providers[0].locations.headers[0].prefix, "Bearer ");
        assert_eq!(f.providers[0].locations.params[0].name, "access_token");
        assert_eq!(f.providers[1].locations.params.len(), 0);
        let auth = &f.all_locations.headers[0];
        assert_eq!(auth.name, "authorization");
        assert_eq!(auth.issuers, ["iss-a", "iss-c"]);
        assert_eq!(f.all_locations.headers[1].name, "x-jwt");
        assert_eq!(f.payload_headers, ["x-jwt-payload"]);
        assert!(f.providers[0].jwks.is_ok());
        assert_eq!(
            f.providers[2].jwks.as_ref().err(),
            Some(&JwtStatus::JwksFetchFail)
        );
        assert_eq!(f.providers[0].clock_skew, 60);
    }

    #[test]
    fn an_unusable_jwks_fails_tokens_not_the_config() {
        let mut p = provider("iss");
        p.jwks_source_specifier = Some(xjwt::jwt_provider::JwksSourceSpecifier::LocalJwks(
            DataSource {
                specifier: Some(core::data_source::Specifier::InlineString("{}".into())),
                ..Default::default()
            },
        ));
        let cfg = xjwt::JwtAuthentication {
            providers: [("p".to_string(), p)].into_iter().collect(),
            ..Default::default()
        };
        let f = compile(&cfg, "test").expect("compiles");
        assert_eq!(
            f.providers[0].jwks.as_ref().err(),
            Some(&JwtStatus::JwksNoValidKeys)
        );
    }

    #[test]
    fn unsupported_shapes_are_refused() {
        let mut cfg = xjwt::JwtAuthentication {
            providers: [("p".to_string(), provider("iss"))].into_iter().collect(),
            rules: vec![xjwt::RequirementRule {
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                requirement_type: Some(xjwt::requirement_rule::RequirementType::Requires(
                    xjwt::JwtRequirement {
                        requires_type: Some(xjwt::jwt_requirement::RequiresType::ProviderName(
                            "nope".into(),
                        )),
                    },
                )),
            }],
            ..Default::default()
        };
        let err = compile(&cfg, "l")
            .expect_err("unknown provider")
            .to_string();
        assert!(err.contains("unknown provider \"nope\""), "{err}");
        cfg.rules[0].requirement_type = Some(
            xjwt::requirement_rule::RequirementType::RequirementName("x".into()),
        );
        assert!(compile(&cfg, "l").is_err());
        cfg.rules[0].requirement_type = None;
        cfg.rules[0].r#match = Some(route::RouteMatch {
            path_specifier: Some(route::route_match::PathSpecifier::SafeRegex(
                Default::default(),
            )),
            ..Default::default()
        });
        assert!(compile(&cfg, "l").is_err());
    }

    #[test]
    fn istio_authn_keeps_the_origin_order() {
        use weft_xds::istio;
        let cfg = istio::FilterConfig {
            policy: Some(istio::Policy {
                origins: ["b", "a"]
                    .iter()
                    .map(|i| istio::OriginAuthenticationMethod {
                        jwt: Some(istio::Jwt {
                            issuer: i.to_string(),
                            ..Default::default()
                        }),
                    })
                    .collect(),
                origin_is_optional: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let any = protobuf::Any {
            type_url: AUTHN_FILTER_TYPE_URL.into(),
            value: cfg.encode_to_vec(),
        };
        let f = compile_istio_authn(&any, "t").expect("compiles");
        assert_eq!(f.issuers, ["b", "a"]);
    }
}
