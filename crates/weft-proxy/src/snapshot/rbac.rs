//! Envoy's RBAC (`envoy.config.rbac.v3.RBAC`) compiled into matchers, and the RBAC filters
//! built on it: `envoy.filters.http.rbac` in the HCM and `envoy.filters.network.rbac` before the
//! TCP proxy. Semantics are Envoy's: an ALLOW engine allows when a policy matches, a DENY engine
//! denies when one does, a LOG engine never denies and only records whether one did; a policy
//! matches when one of its permissions and one of its principals do; the reported policy is the
//! first matching one in name order (Envoy keeps them in a `std::map`).
//!
//! What Weft cannot evaluate fails closed, per policy: such a policy is dropped from an ALLOW
//! engine (it never allows), matches everything in a DENY engine (it always denies) and is left
//! out of a LOG engine, with a warning. Malformed input (a bad regex, CIDR or header name) is a
//! configuration error and refuses the resource, as Envoy's NACK.

mod matcher;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as http_rbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3 as net_rbac;
use envoy_types::pb::google::protobuf;
use prost::Message;

use crate::authn::{SecurityCtx, ShadowResult};
use crate::error::ProxyError;
pub use matcher::Cidr;
use matcher::{Perm, Princ};

pub const HTTP_RBAC_TYPE: &str = "envoy.extensions.filters.http.rbac.v3.RBAC";
pub const NETWORK_RBAC_TYPE: &str = "envoy.extensions.filters.network.rbac.v3.RBAC";

#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    /// Weft cannot evaluate it: the policy fails closed.
    #[error("{0} is not supported")]
    Unsupported(String),
    /// Malformed: the resource is refused.
    #[error("{0}")]
    Invalid(String),
}

/// What the matchers look at. HTTP attributes are absent on a TCP connection (headers never
/// match there, as Envoy's network filter sees an empty header map).
pub struct Attrs<'a> {
    /// The downstream local address: the original destination (`destination_ip`/`_port`).
    pub local: SocketAddr,
    /// The TCP peer (`direct_remote_ip`, `source_ip`).
    pub peer: SocketAddr,
    /// The client (`remote_ip`): on HTTP the last `x-forwarded-for` address, else the peer.
    pub remote_ip: IpAddr,
    /// The peer certificate's SPIFFE ID (mTLS only).
    pub principal: Option<&'a str>,
    /// The downstream SNI, "" without one.
    pub sni: &'a str,
    pub http: Option<HttpAttrs<'a>>,
    /// The request's security metadata (jwt_authn, istio_authn, earlier RBAC shadow results).
    pub sec: Option<&'a SecurityCtx>,
}

pub struct HttpAttrs<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    pub scheme: &'a str,
    /// `:path`, with the query.
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Log,
}

#[derive(Debug)]
struct Policy {
    name: Arc<str>,
    permissions: Vec<Perm>,
    principals: Vec<Princ>,
}

impl Policy {
    fn matches(&self, a: &Attrs) -> bool {
        self.permissions.iter().any(|p| p.matches(a))
            && self.principals.iter().any(|p| p.matches(a))
    }
}

/// One compiled `RBAC`: its action and its policies in name order.
#[derive(Debug)]
pub struct Engine {
    pub action: Action,
    policies: Vec<Policy>,
    /// Policies that could not be compiled as written, and what was done with them.
    pub warnings: Vec<String>,
}

/// An engine's verdict: whether the request may go on, and the first matching policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'e> {
    pub allowed: bool,
    pub policy: Option<&'e Arc<str>>,
}

impl Engine {
    pub fn compile(r: &rbac::Rbac, what: &str) -> Result<Engine, ProxyError> {
        use rbac::rbac::Action as A;
        let action = match A::try_from(r.action) {
            Ok(A::Allow) => Action::Allow,
            Ok(A::Deny) => Action::Deny,
            Ok(A::Log) => Action::Log,
            Err(_) => {
                return Err(ProxyError::Config(format!(
                    "{what}: unknown RBAC action {}",
                    r.action
                )));
            }
        };
        let mut names: Vec<&String> = r.policies.keys().collect();
        names.sort();
        let mut policies = Vec::with_capacity(names.len());
        let mut warnings = Vec::new();
        for name in names {
            let p = &r.policies[name];
            let pwhat = format!("{what}: policy {name}");
            match compile_policy(p, &pwhat) {
                Ok((permissions, principals)) => policies.push(Policy {
                    name: name.as_str().into(),
                    permissions,
                    principals,
                }),
                Err(RbacError::Invalid(e)) => return Err(ProxyError::Config(e)),
                Err(RbacError::Unsupported(e)) => {
                    let done = match action {
                        Action::Allow => "dropped: it allows nothing",
                        Action::Deny => "it denies every request",
                        Action::Log => "ignored",
                    };
                    let w = format!("{e}; policy {done} (fail closed)");
                    tracing::warn!(target: "rbac", "{w}");
                    warnings.push(w);
                    if action == Action::Deny {
                        policies.push(Policy {
                            name: name.as_str().into(),
                            permissions: vec![Perm::Any],
                            principals: vec![Princ::Any],
                        });
                    }
                }
            }
        }
        Ok(Engine {
            action,
            policies,
            warnings,
        })
    }

    /// The first matching policy, in name order.
    pub fn matched(&self, a: &Attrs) -> Option<&Arc<str>> {
        self.policies.iter().find(|p| p.matches(a)).map(|p| &p.name)
    }

    pub fn evaluate(&self, a: &Attrs) -> Decision<'_> {
        let policy = self.matched(a);
        let allowed = match self.action {
            Action::Allow => policy.is_some(),
            Action::Deny => policy.is_none(),
            Action::Log => true,
        };
        Decision { allowed, policy }
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

fn compile_policy(p: &rbac::Policy, what: &str) -> Result<(Vec<Perm>, Vec<Princ>), RbacError> {
    if p.condition.is_some() || p.checked_condition.is_some() || p.cel_config.is_some() {
        return Err(RbacError::Unsupported(format!("{what}: CEL condition")));
    }
    if p.permissions.is_empty() || p.principals.is_empty() {
        return Err(RbacError::Unsupported(format!(
            "{what}: a policy without permissions or principals"
        )));
    }
    let perms = p
        .permissions
        .iter()
        .enumerate()
        .map(|(i, x)| Perm::compile(x, &format!("{what}: permissions[{i}]")))
        .collect::<Result<_, _>>()?;
    let princs = p
        .principals
        .iter()
        .enumerate()
        .map(|(i, x)| Princ::compile(x, &format!("{what}: principals[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok((perms, princs))
}

/// Envoy's RBAC filter counters (`<prefix>rbac.allowed`, `<prefix>rbac.<shadow prefix>shadow_denied`…).
#[derive(Debug)]
pub struct RbacStats {
    pub allowed: Arc<AtomicU64>,
    pub denied: Arc<AtomicU64>,
    pub shadow_allowed: Arc<AtomicU64>,
    pub shadow_denied: Arc<AtomicU64>,
    pub logged: Arc<AtomicU64>,
    pub not_logged: Arc<AtomicU64>,
}

impl RbacStats {
    /// `prefix` ends with a dot (`http.inbound_0.0.0.0_80.`, `tcp.`) or is empty.
    pub fn new(prefix: &str, shadow_prefix: &str) -> RbacStats {
        let c = |name: &str| super::counter::counter(&format!("{prefix}rbac.{name}"));
        RbacStats {
            allowed: c("allowed"),
            denied: c("denied"),
            shadow_allowed: c(&format!("{shadow_prefix}shadow_allowed")),
            shadow_denied: c(&format!("{shadow_prefix}shadow_denied")),
            logged: c("logged"),
            not_logged: c("not_logged"),
        }
    }
}

/// An RBAC filter (HTTP or network): the enforced rules, the shadow (dry-run) rules and where
/// their results go.
#[derive(Debug)]
pub struct RbacFilter {
    /// None: nothing enforced (Envoy: `rules` unset).
    pub enforce: Option<Engine>,
    pub shadow: Option<Engine>,
    pub shadow_prefix: Arc<str>,
    pub stats: RbacStats,
}

/// What one RBAC filter decided about a request or connection.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// The shadow engine's result (dynamic metadata under the filter's name).
    pub shadow: Option<ShadowResult>,
    /// A LOG engine's verdict (`access_log_hint`).
    pub log_hint: Option<bool>,
    /// Denied: the response code details (`rbac_access_denied_matched_policy[<id>]`).
    pub denied: Option<String>,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Envoy's `responseDetail`: whitespace in the policy id becomes `_`.
pub fn deny_details(policy: Option<&str>) -> String {
    let id: String = policy
        .unwrap_or("none")
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    format!("rbac_access_denied_matched_policy[{id}]")
}

impl RbacFilter {
    fn compile(
        rules: Option<&rbac::Rbac>,
        shadow: Option<&rbac::Rbac>,
        shadow_prefix: &str,
        stats_prefix: &str,
        what: &str,
    ) -> Result<RbacFilter, ProxyError> {
        Ok(RbacFilter {
            enforce: rules
                .map(|r| Engine::compile(r, &format!("{what}: rules")))
                .transpose()?,
            shadow: shadow
                .map(|r| Engine::compile(r, &format!("{what}: shadow_rules")))
                .transpose()?,
            shadow_prefix: shadow_prefix.into(),
            stats: RbacStats::new(stats_prefix, shadow_prefix),
        })
    }

    /// `envoy.filters.http.rbac` in an HCM whose stats prefix is `http.<stat_prefix>.`.
    pub fn http(
        any: &protobuf::Any,
        hcm_stat_prefix: &str,
        what: &str,
    ) -> Result<RbacFilter, ProxyError> {
        let r = http_rbac::Rbac::decode(any.value.as_slice())
            .map_err(|e| ProxyError::Config(format!("{what}: {e}")))?;
        if r.matcher.is_some() || r.shadow_matcher.is_some() {
            return Err(ProxyError::Config(format!(
                "{what}: the RBAC matcher API is not supported (use rules); refused"
            )));
        }
        let prefix = format!("http.{hcm_stat_prefix}.{}", r.rules_stat_prefix);
        RbacFilter::compile(
            r.rules.as_ref(),
            r.shadow_rules.as_ref(),
            &r.shadow_rules_stat_prefix,
            &prefix,
            what,
        )
    }

    /// `envoy.filters.network.rbac`.
    pub fn network(any: &protobuf::Any, what: &str) -> Result<RbacFilter, ProxyError> {
        let r = net_rbac::Rbac::decode(any.value.as_slice())
            .map_err(|e| ProxyError::Config(format!("{what}: {e}")))?;
        if r.matcher.is_some() || r.shadow_matcher.is_some() {
            return Err(ProxyError::Config(format!(
                "{what}: the RBAC matcher API is not supported (use rules); refused"
            )));
        }
        let mut prefix = r.stat_prefix.clone();
        if !prefix.is_empty() && !prefix.ends_with('.') {
            prefix.push('.');
        }
        RbacFilter::compile(
            r.rules.as_ref(),
            r.shadow_rules.as_ref(),
            &r.shadow_rules_stat_prefix,
            &prefix,
            what,
        )
    }

    /// Runs the shadow engine, then the enforced one, counting and logging as Envoy does.
    pub fn check(&self, a: &Attrs) -> Outcome {
        let mut out = Outcome::default();
        if let Some(shadow) = &self.shadow {
            let d = shadow.evaluate(a);
            let id = d.policy.map_or("none", |p| &**p);
            if d.allowed {
                bump(&self.stats.shadow_allowed);
                tracing::debug!(target: "rbac", "shadow allowed, matched policy {id}");
            } else {
                bump(&self.stats.shadow_denied);
                tracing::debug!(target: "rbac", "shadow denied, matched policy {id}");
            }
            out.shadow = Some(ShadowResult {
                prefix: self.shadow_prefix.clone(),
                policy: d.policy.cloned(),
                allowed: d.allowed,
            });
        }
        if let Some(engine) = &self.enforce {
            let d = engine.evaluate(a);
            let id = d.policy.map_or("none", |p| &**p);
            if engine.action == Action::Log {
                out.log_hint = Some(d.policy.is_some());
                bump(if d.policy.is_some() {
                    &self.stats.logged
                } else {
                    &self.stats.not_logged
                });
            }
            if d.allowed {
                bump(&self.stats.allowed);
                tracing::debug!(target: "rbac", "enforced allowed, matched policy {id}");
            } else {
                bump(&self.stats.denied);
                tracing::debug!(target: "rbac", "enforced denied, matched policy {id}");
                out.denied = Some(deny_details(d.policy.map(|p| &**p)));
            }
        }
        out
    }

    /// Every warning of both engines.
    pub fn warnings(&self) -> impl Iterator<Item = &String> {
        self.enforce
            .iter()
            .chain(self.shadow.iter())
            .flat_map(|e| e.warnings.iter())
    }
}
