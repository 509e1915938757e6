//! One AuthorizationPolicy rule → one Envoy `rbac.v3.Policy`, as istiod 1.14's
//! `pilot/pkg/security/authz/model` (`New`, `MigrateTrustDomain`, `Generate`, `checkError`):
//! values OR'ed, fields AND'ed, `from` entries OR'ed (one principal each), `to` entries OR'ed
//! (one permission each), `when` conditions AND'ed into every principal or permission.

use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use weft_api::security::Rule;

use super::AuthzError;
use super::matcher;

/// The dynamic-metadata namespace `istio_authn` writes request authentication into.
pub const AUTHN_FILTER: &str = "istio_authn";
const ATTR_REQUEST_CLAIMS: &str = "request.auth.claims";
const ATTR_REQUEST_HEADERS: &str = "request.headers";
const ATTR_ENVOY_FILTER: &str = "experimental.envoy.filters.";

/// Conditions on the permission (destination) side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermissionKind {
    Host,
    Method,
    Path,
    DestinationPort,
    DestinationIp,
    Sni,
    EnvoyFilter,
}

/// Conditions on the principal (source) side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrincipalKind {
    SourcePrincipal,
    RequestAuth,
    SourceNamespace,
    RemoteIp,
    SourceIp,
    RequestHeader,
    RequestClaim,
}

#[derive(Debug, Clone)]
struct Cond<K> {
    key: String,
    kind: K,
    values: Vec<String>,
    not_values: Vec<String>,
}

fn cond<K>(kind: K, key: &str, values: &[String], not_values: &[String]) -> Option<Cond<K>> {
    (!values.is_empty() || !not_values.is_empty()).then(|| Cond {
        key: key.to_string(),
        kind,
        values: values.to_vec(),
        not_values: not_values.to_vec(),
    })
}

/// A rule, its conditions sorted into Envoy's permission and principal sides.
#[derive(Debug, Clone)]
pub struct Model {
    permissions: Vec<Vec<Cond<PermissionKind>>>,
    principals: Vec<Vec<Cond<PrincipalKind>>>,
}

impl Model {
    /// `New(rule)`: fails on a `when` key istiod does not know.
    pub fn new(rule: &Rule) -> Result<Model, AuthzError> {
        let mut base_permission = Vec::new();
        let mut base_principal = Vec::new();
        for w in &rule.when {
            let k = w.key.as_str();
            let (v, nv) = (&w.values, &w.not_values);
            use PermissionKind as P;
            use PrincipalKind as Q;
            let perm = |kind| cond(kind, k, v, nv);
            let prin = |kind| cond(kind, k, v, nv);
            match k {
                "destination.ip" => base_permission.extend(perm(P::DestinationIp)),
                "destination.port" => base_permission.extend(perm(P::DestinationPort)),
                "connection.sni" => base_permission.extend(perm(P::Sni)),
                _ if k.starts_with(ATTR_ENVOY_FILTER) => {
                    base_permission.extend(perm(P::EnvoyFilter))
                }
                "source.ip" => base_principal.extend(prin(Q::SourceIp)),
                "remote.ip" => base_principal.extend(prin(Q::RemoteIp)),
                "source.namespace" => base_principal.extend(prin(Q::SourceNamespace)),
                "source.principal" => base_principal.extend(prin(Q::SourcePrincipal)),
                "request.auth.principal" | "request.auth.audiences" | "request.auth.presenter" => {
                    base_principal.extend(prin(Q::RequestAuth))
                }
                _ if k.starts_with(ATTR_REQUEST_HEADERS) => {
                    base_principal.extend(prin(Q::RequestHeader))
                }
                _ if k.starts_with(ATTR_REQUEST_CLAIMS) => {
                    base_principal.extend(prin(Q::RequestClaim))
                }
                _ => return Err(AuthzError::UnknownAttribute(k.to_string())),
            }
        }

        let mut principals = Vec::new();
        for from in &rule.from {
            let mut front = Vec::new();
            if let Some(s) = &from.source {
                use PrincipalKind as Q;
                front.extend(cond(
                    Q::SourcePrincipal,
                    "source.principal",
                    &s.principals,
                    &s.not_principals,
                ));
                front.extend(cond(
                    Q::RequestAuth,
                    "request.auth.principal",
                    &s.request_principals,
                    &s.not_request_principals,
                ));
                front.extend(cond(
                    Q::SourceNamespace,
                    "source.namespace",
                    &s.namespaces,
                    &s.not_namespaces,
                ));
                front.extend(cond(
                    Q::RemoteIp,
                    "remote.ip",
                    &s.remote_ip_blocks,
                    &s.not_remote_ip_blocks,
                ));
                front.extend(cond(
                    Q::SourceIp,
                    "source.ip",
                    &s.ip_blocks,
                    &s.not_ip_blocks,
                ));
            }
            front.extend(base_principal.iter().cloned());
            principals.push(front);
        }
        if rule.from.is_empty() {
            principals.push(base_principal);
        }

        let mut permissions = Vec::new();
        for to in &rule.to {
            let mut front = Vec::new();
            if let Some(o) = &to.operation {
                use PermissionKind as P;
                front.extend(cond(P::Host, ":authority", &o.hosts, &o.not_hosts));
                front.extend(cond(P::Method, ":method", &o.methods, &o.not_methods));
                front.extend(cond(P::Path, "path-matcher", &o.paths, &o.not_paths));
                front.extend(cond(
                    P::DestinationPort,
                    "destination.port",
                    &o.ports,
                    &o.not_ports,
                ));
            }
            front.extend(base_permission.iter().cloned());
            permissions.push(front);
        }
        if rule.to.is_empty() {
            permissions.push(base_permission);
        }
        Ok(Model {
            permissions,
            principals,
        })
    }

    /// `MigrateTrustDomain`: every `source.principal` value (and not-value) is expanded to the
    /// trust domain and its aliases.
    pub fn migrate_trust_domain(&mut self, trust_domains: &[String]) {
        for list in &mut self.principals {
            for c in list.iter_mut() {
                if c.kind == PrincipalKind::SourcePrincipal {
                    c.values = super::trust_domain::expand(&c.values, trust_domains);
                    c.not_values = super::trust_domain::expand(&c.not_values, trust_domains);
                }
            }
        }
    }

    /// `Generate(forTCP, action)`. An error skips the whole rule; only ALLOW returns errors
    /// from the conditions (`checkError`), DENY, AUDIT and CUSTOM drop the offending value.
    pub fn generate(
        &self,
        for_tcp: bool,
        action: rbac::rbac::Action,
    ) -> Result<rbac::Policy, AuthzError> {
        let mut permissions = Vec::new();
        for list in &self.permissions {
            let mut and = Vec::new();
            for c in list {
                and.extend(permission_of(c, for_tcp, action)?);
            }
            if and.is_empty() {
                and.push(permission_any());
            }
            permissions.push(rbac::Permission {
                rule: Some(rbac::permission::Rule::AndRules(rbac::permission::Set {
                    rules: and,
                })),
            });
        }
        let mut principals = Vec::new();
        for list in &self.principals {
            let mut and = Vec::new();
            for c in list {
                and.extend(principal_of(c, for_tcp, action)?);
            }
            if and.is_empty() {
                and.push(principal_any());
            }
            principals.push(rbac::Principal {
                identifier: Some(rbac::principal::Identifier::AndIds(rbac::principal::Set {
                    ids: and,
                })),
            });
        }
        Ok(rbac::Policy {
            permissions,
            principals,
            ..Default::default()
        })
    }
}

pub fn permission_any() -> rbac::Permission {
    rbac::Permission {
        rule: Some(rbac::permission::Rule::Any(true)),
    }
}

pub fn principal_any() -> rbac::Principal {
    rbac::Principal {
        identifier: Some(rbac::principal::Identifier::Any(true)),
    }
}

/// `checkError`: ALLOW keeps the error (the rule is skipped); the other actions ignore it.
fn check<T>(action: rbac::rbac::Action, r: Result<T, AuthzError>) -> Result<Option<T>, AuthzError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if action == rbac::rbac::Action::Allow => Err(e),
        Err(e) => {
            tracing::trace!(error = %e, "authorization value dropped");
            Ok(None)
        }
    }
}

fn permission_of(
    c: &Cond<PermissionKind>,
    for_tcp: bool,
    action: rbac::rbac::Action,
) -> Result<Vec<rbac::Permission>, AuthzError> {
    use rbac::permission::Rule;
    let one = |v: &str| permission_value(c.kind, &c.key, v, for_tcp);
    let mut out = Vec::new();
    let mut or = Vec::new();
    for v in &c.values {
        or.extend(check(action, one(v))?);
    }
    if !or.is_empty() {
        out.push(rbac::Permission {
            rule: Some(Rule::OrRules(rbac::permission::Set { rules: or })),
        });
    }
    let mut or = Vec::new();
    for v in &c.not_values {
        or.extend(check(action, one(v))?);
    }
    if !or.is_empty() {
        out.push(rbac::Permission {
            rule: Some(Rule::NotRule(Box::new(rbac::Permission {
                rule: Some(Rule::OrRules(rbac::permission::Set { rules: or })),
            }))),
        });
    }
    Ok(out)
}

fn principal_of(
    c: &Cond<PrincipalKind>,
    for_tcp: bool,
    action: rbac::rbac::Action,
) -> Result<Vec<rbac::Principal>, AuthzError> {
    use rbac::principal::Identifier;
    let one = |v: &str| principal_value(c.kind, &c.key, v, for_tcp);
    let mut out = Vec::new();
    let mut or = Vec::new();
    for v in &c.values {
        or.extend(check(action, one(v))?);
    }
    if !or.is_empty() {
        out.push(rbac::Principal {
            identifier: Some(Identifier::OrIds(rbac::principal::Set { ids: or })),
        });
    }
    let mut or = Vec::new();
    for v in &c.not_values {
        or.extend(check(action, one(v))?);
    }
    if !or.is_empty() {
        out.push(rbac::Principal {
            identifier: Some(Identifier::NotId(Box::new(rbac::Principal {
                identifier: Some(Identifier::OrIds(rbac::principal::Set { ids: or })),
            }))),
        });
    }
    Ok(out)
}

fn http_only(key: &str, for_tcp: bool) -> Result<(), AuthzError> {
    if for_tcp {
        return Err(AuthzError::HttpOnly(key.to_string()));
    }
    Ok(())
}

// Istio 1.14 emits `metadata` (deprecated in later Envoy APIs for `sourced_metadata`).
#[allow(deprecated)]
fn permission_value(
    kind: PermissionKind,
    key: &str,
    v: &str,
    for_tcp: bool,
) -> Result<rbac::Permission, AuthzError> {
    use rbac::permission::Rule;
    let rule = match kind {
        PermissionKind::Host => {
            http_only(key, for_tcp)?;
            Rule::Header(matcher::host(":authority", v))
        }
        PermissionKind::Method => {
            http_only(key, for_tcp)?;
            Rule::Header(matcher::header(":method", v))
        }
        PermissionKind::Path => {
            http_only(key, for_tcp)?;
            Rule::UrlPath(matcher::path(v))
        }
        PermissionKind::DestinationPort => Rule::DestinationPort(port(v)?),
        PermissionKind::DestinationIp => Rule::DestinationIp(matcher::cidr(v)?),
        PermissionKind::Sni => Rule::RequestedServerName(matcher::string(v)),
        PermissionKind::EnvoyFilter => {
            // "experimental.envoy.filters.a.b[c]" ⇒ filter "envoy.filters.a.b", key "c".
            let trimmed = key.strip_prefix("experimental.").unwrap_or(key);
            let trimmed = trimmed.strip_suffix(']').unwrap_or(trimmed);
            let (filter, path) = trimmed
                .split_once('[')
                .ok_or_else(|| AuthzError::Brackets(key.to_string()))?;
            if v.starts_with('[') && v.ends_with(']') {
                let inner = v.trim_matches(|c| c == '[' || c == ']');
                Rule::Metadata(matcher::metadata_list(
                    filter,
                    &[path],
                    matcher::string(inner),
                ))
            } else {
                Rule::Metadata(matcher::metadata_string(filter, path, matcher::string(v)))
            }
        }
    };
    Ok(rbac::Permission { rule: Some(rule) })
}

#[allow(deprecated)]
fn principal_value(
    kind: PrincipalKind,
    key: &str,
    v: &str,
    for_tcp: bool,
) -> Result<rbac::Principal, AuthzError> {
    use rbac::principal::Identifier;
    let authenticated = |m| {
        Identifier::Authenticated(rbac::principal::Authenticated {
            principal_name: Some(m),
        })
    };
    let id = match kind {
        PrincipalKind::SourcePrincipal => {
            authenticated(matcher::string_with_prefix(v, "spiffe://"))
        }
        PrincipalKind::SourceNamespace => authenticated(matcher::regex(&format!(
            ".*/ns/{}/.*",
            v.replace('*', ".*")
        ))),
        PrincipalKind::SourceIp => Identifier::DirectRemoteIp(matcher::cidr(v)?),
        PrincipalKind::RemoteIp => Identifier::RemoteIp(matcher::cidr(v)?),
        PrincipalKind::RequestAuth => {
            http_only(key, for_tcp)?;
            Identifier::Metadata(matcher::metadata_string(
                AUTHN_FILTER,
                key,
                matcher::string(v),
            ))
        }
        PrincipalKind::RequestHeader => {
            http_only(key, for_tcp)?;
            let name = matcher::name_in_brackets(&key[ATTR_REQUEST_HEADERS.len()..])?;
            Identifier::Header(matcher::header(name, v))
        }
        PrincipalKind::RequestClaim => {
            http_only(key, for_tcp)?;
            let claims = matcher::names_in_nested_brackets(&key[ATTR_REQUEST_CLAIMS.len()..])?;
            let mut keys = vec![ATTR_REQUEST_CLAIMS];
            keys.extend(claims);
            Identifier::Metadata(matcher::metadata_list(
                AUTHN_FILTER,
                &keys,
                matcher::string(v),
            ))
        }
    };
    Ok(rbac::Principal {
        identifier: Some(id),
    })
}

/// `convertToPort`: a decimal u32 no larger than 65535.
fn port(v: &str) -> Result<u32, AuthzError> {
    v.parse::<u32>()
        .ok()
        .filter(|p| *p <= 65535 && !v.starts_with('+'))
        .ok_or_else(|| AuthzError::Port(v.to_string()))
}
