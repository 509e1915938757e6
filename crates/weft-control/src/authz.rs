//! AuthorizationPolicy → Envoy RBAC and ext_authz filters for a sidecar's inbound chains, as
//! istiod 1.14 builds them (`pilot/pkg/model/authorization.go`, `pilot/pkg/security/authz/
//! builder`, `…/model`, `…/matcher`, `pilot/pkg/security/trustdomain`).
//!
//! Selection: the policies of the root namespace, then of the proxy's namespace, whose
//! `selector.matchLabels` is a subset of the workload's labels, bucketed by action in config
//! order. Output per workload: the CUSTOM filters (shadow RBAC + ext_authz) and the local RBAC
//! filters (AUDIT → `LOG`, DENY, ALLOW), for HTTP (inside the HCM) and TCP (network filters).
//! The result is built once per push for each (namespace, labels).

mod extauthz;
mod matcher;
mod model;
#[cfg(test)]
mod tests;
mod trust_domain;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as http_rbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3 as net_rbac;
use envoy_types::pb::google::protobuf;
use prost::{Message, Name};
use weft_api::security::{AuthorizationAction, AuthorizationPolicy};
use weft_api::{MeshConfig, Problem, Resource, Spec};

pub use extauthz::{DENY_ALL_POLICY, ProviderError};

use crate::envoy;
use crate::registry::Registry;

/// The annotation that puts a policy in dry-run (shadow) mode.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";
pub const HTTP_RBAC_FILTER: &str = "envoy.filters.http.rbac";
pub const HTTP_EXT_AUTHZ_FILTER: &str = "envoy.filters.http.ext_authz";
pub const NETWORK_RBAC_FILTER: &str = "envoy.filters.network.rbac";
pub const NETWORK_EXT_AUTHZ_FILTER: &str = "envoy.filters.network.ext_authz";
const TCP_STAT_PREFIX: &str = "tcp.";
const DRY_RUN_ALLOW_PREFIX: &str = "istio_dry_run_allow_";
const DRY_RUN_DENY_PREFIX: &str = "istio_dry_run_deny_";

/// Why one rule value cannot be translated (a rule or a value is then skipped, per action).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    #[error("{0:?} is HTTP only")]
    HttpOnly(String),
    #[error("unknown attribute {0}")]
    UnknownAttribute(String),
    #[error("invalid ip address or cidr range: {0}")]
    Cidr(String),
    #[error("invalid port {0}")]
    Port(String),
    #[error("expecting format [<NAME>], but found {0}")]
    Brackets(String),
}

/// One AuthorizationPolicy, as the builder reads it.
#[derive(Debug)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    pub spec: AuthorizationPolicy,
    pub dry_run: bool,
}

/// The policies that apply to one workload, by action, in config order.
#[derive(Debug, Default)]
pub struct Selected {
    pub custom: Vec<Arc<Policy>>,
    pub deny: Vec<Arc<Policy>>,
    pub allow: Vec<Arc<Policy>>,
    pub audit: Vec<Arc<Policy>>,
}

impl Selected {
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty()
            && self.deny.is_empty()
            && self.allow.is_empty()
            && self.audit.is_empty()
    }
}

/// The authorization filters of one workload's inbound chains.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AuthzFilters {
    /// CUSTOM: shadow RBAC + ext_authz, or the deny-all RBAC; first in the HCM.
    pub custom_http: Vec<hcm::HttpFilter>,
    /// AUDIT (`LOG`), DENY and ALLOW RBAC filters; after the JWT filters.
    pub http: Vec<hcm::HttpFilter>,
    /// CUSTOM on TCP chains: network shadow RBAC + network ext_authz (gRPC providers only), or
    /// the deny-all network RBAC.
    pub custom_tcp: Vec<listener::Filter>,
    /// AUDIT, DENY and ALLOW network RBAC filters.
    pub tcp: Vec<listener::Filter>,
}

type CacheKey = (String, BTreeMap<String, String>);

/// The AuthorizationPolicies of a push, the resolved ext-authz providers and the filters built
/// so far for each (namespace, labels).
#[derive(Debug)]
pub struct Index {
    root_namespace: String,
    trust_domains: Vec<String>,
    by_namespace: HashMap<String, Vec<Arc<Policy>>>,
    providers: extauthz::Providers,
    problems: Vec<Problem>,
    built: Mutex<HashMap<CacheKey, Arc<AuthzFilters>>>,
}

fn problem(r: &Resource, field: &str, message: String) -> Problem {
    r.problem(field, message)
}

impl Index {
    /// Indexes the AuthorizationPolicies of `resources` and resolves the mesh's ext-authz
    /// providers; what the builder would only find out per workload (a CUSTOM policy naming an
    /// unknown or broken provider, workloads selected by CUSTOM policies of different providers,
    /// a dry-run annotation that is not a boolean) is reported as problems.
    pub fn build(resources: &[Resource], mesh: &MeshConfig, registry: &Registry) -> Index {
        let mut by_namespace: HashMap<String, Vec<Arc<Policy>>> = HashMap::new();
        let mut problems = Vec::new();
        let mut sources: HashMap<(String, String), &Resource> = HashMap::new();
        for r in resources {
            let Spec::AuthorizationPolicy(ap) = &r.spec else {
                continue;
            };
            let dry_run = match r.meta.annotations.get(DRY_RUN_ANNOTATION) {
                None => false,
                Some(v) => weft_api::go_bool(v).unwrap_or_else(|| {
                    problems.push(problem(
                        r,
                        &format!("metadata.annotations[{DRY_RUN_ANNOTATION}]"),
                        format!(
                            "failed to parse the value {v:?} as a boolean; the policy is enforced"
                        ),
                    ));
                    false
                }),
            };
            sources.insert((r.meta.namespace.clone(), r.meta.name.clone()), r);
            by_namespace
                .entry(r.meta.namespace.clone())
                .or_default()
                .push(Arc::new(Policy {
                    namespace: r.meta.namespace.clone(),
                    name: r.meta.name.clone(),
                    spec: ap.clone(),
                    dry_run,
                }));
        }
        let index = Index {
            root_namespace: mesh.root_namespace.clone(),
            trust_domains: mesh
                .trust_domains()
                .into_iter()
                .map(str::to_string)
                .collect(),
            by_namespace,
            providers: extauthz::Providers::resolve(mesh, registry),
            problems: Vec::new(),
            built: Mutex::default(),
        };
        // CUSTOM policies whose provider cannot be used on any workload.
        for p in index.by_namespace.values().flatten() {
            if p.spec.action != AuthorizationAction::Custom {
                continue;
            }
            let name = p.spec.provider.as_ref().map_or("", |x| x.name.as_str());
            if let (Err(e), Some(r)) = (
                index.providers.pick(&[name]),
                sources.get(&(p.namespace.clone(), p.name.clone())),
            ) {
                problems.push(problem(
                    r,
                    "spec.provider.name",
                    format!("{e}; the selected workloads deny every request ({DENY_ALL_POLICY})"),
                ));
            }
        }
        // Workloads selected by CUSTOM policies naming different providers.
        let any_custom = index
            .by_namespace
            .values()
            .flatten()
            .any(|p| p.spec.action == AuthorizationAction::Custom);
        let mut seen = std::collections::BTreeSet::new();
        for w in registry.workloads.values().filter(|_| any_custom) {
            let sel = index.select(&w.namespace, &w.labels);
            let providers: Vec<&str> = sel
                .custom
                .iter()
                .map(|p| p.spec.provider.as_ref().map_or("", |x| x.name.as_str()))
                .collect();
            if let Err(e @ ProviderError::Multiple(_)) = index.providers.pick(&providers) {
                let policies: Vec<String> = sel
                    .custom
                    .iter()
                    .map(|p| format!("{}/{}", p.namespace, p.name))
                    .collect();
                for p in &sel.custom[1..] {
                    let key = (p.namespace.clone(), p.name.clone());
                    if !seen.insert((key.clone(), policies.clone())) {
                        continue;
                    }
                    if let Some(r) = sources.get(&key) {
                        problems.push(problem(
                            r,
                            "spec.provider.name",
                            format!(
                                "workload {}/{} is selected by CUSTOM policies [{}]: {e}; it denies \
                                 every request ({DENY_ALL_POLICY})",
                                w.namespace,
                                w.name,
                                policies.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
        for p in &problems {
            tracing::error!(problem = %p, "authorization policy cannot be applied as written");
        }
        Index { problems, ..index }
    }

    /// Problems found while indexing (shown at `/debug/config_errors`).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// `ListAuthorizationPolicies(namespace, labels)`.
    pub fn select(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Selected {
        let mut out = Selected::default();
        let mut namespaces = vec![self.root_namespace.as_str()];
        if namespace != self.root_namespace {
            namespaces.push(namespace);
        }
        for ns in namespaces {
            for p in self.by_namespace.get(ns).into_iter().flatten() {
                let applies =
                    p.spec.selector.as_ref().is_none_or(|s| {
                        s.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
                    });
                if !applies {
                    continue;
                }
                let bucket = match p.spec.action {
                    AuthorizationAction::Allow => &mut out.allow,
                    AuthorizationAction::Deny => &mut out.deny,
                    AuthorizationAction::Audit => &mut out.audit,
                    AuthorizationAction::Custom => &mut out.custom,
                };
                bucket.push(p.clone());
            }
        }
        out
    }

    /// The filters of a workload, built once per push for each (namespace, labels).
    pub fn filters(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Arc<AuthzFilters> {
        let key = (namespace.to_string(), labels.clone());
        let mut built = match self.built.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        built
            .entry(key)
            .or_insert_with(|| Arc::new(self.build_filters(&self.select(namespace, labels))))
            .clone()
    }

    /// The builder: CUSTOM filters and the AUDIT, DENY, ALLOW RBAC filters.
    pub fn build_filters(&self, sel: &Selected) -> AuthzFilters {
        let mut out = AuthzFilters::default();
        if sel.is_empty() {
            return out;
        }
        if !sel.custom.is_empty() {
            self.build_custom(&sel.custom, &mut out);
        }
        for (policies, action) in [
            (&sel.audit, rbac::rbac::Action::Log),
            (&sel.deny, rbac::rbac::Action::Deny),
            (&sel.allow, rbac::rbac::Action::Allow),
        ] {
            if policies.is_empty() {
                continue;
            }
            let (rules, shadow) = self.rbac(policies, action, false, false);
            let prefix = shadow_prefix(shadow.as_ref());
            let cfg = http_rbac::Rbac {
                shadow_rules_stat_prefix: prefix.into(),
                ..Default::default()
            };
            out.http.push(http_filter(
                HTTP_RBAC_FILTER,
                rbac_any(&cfg, rules.as_ref(), shadow.as_ref()),
            ));
            let (rules, shadow) = self.rbac(policies, action, true, false);
            let prefix = shadow_prefix(shadow.as_ref());
            let cfg = net_rbac::Rbac {
                stat_prefix: TCP_STAT_PREFIX.into(),
                shadow_rules_stat_prefix: prefix.into(),
                ..Default::default()
            };
            out.tcp.push(network_filter(
                NETWORK_RBAC_FILTER,
                rbac_any(&cfg, rules.as_ref(), shadow.as_ref()),
            ));
        }
        out
    }

    fn build_custom(&self, policies: &[Arc<Policy>], out: &mut AuthzFilters) {
        let names: Vec<&str> = policies
            .iter()
            .map(|p| p.spec.provider.as_ref().map_or("", |x| x.name.as_str()))
            .collect();
        let ext = match self.providers.pick(&names) {
            Ok(ext) => ext,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "CUSTOM authorization cannot be applied; the workload denies every request"
                );
                let deny_all = rbac::Rbac {
                    action: rbac::rbac::Action::Deny as i32,
                    policies: [(
                        DENY_ALL_POLICY.to_string(),
                        rbac::Policy {
                            permissions: vec![model::permission_any()],
                            principals: vec![model::principal_any()],
                            ..Default::default()
                        },
                    )]
                    .into(),
                    ..Default::default()
                };
                out.custom_http.push(http_filter(
                    HTTP_RBAC_FILTER,
                    rbac_any(&http_rbac::Rbac::default(), Some(&deny_all), None),
                ));
                let cfg = net_rbac::Rbac {
                    stat_prefix: TCP_STAT_PREFIX.into(),
                    ..Default::default()
                };
                out.custom_tcp.push(network_filter(
                    NETWORK_RBAC_FILTER,
                    rbac_any(&cfg, Some(&deny_all), None),
                ));
                return;
            }
        };
        // CUSTOM rules are built as DENY (HTTP-only conditions broaden them on TCP) into the
        // shadow rules: the RBAC filter only records which one matched, ext_authz acts on it.
        let (rules, _dry_run) = self.rbac(policies, rbac::rbac::Action::Deny, false, true);
        let cfg = http_rbac::Rbac {
            shadow_rules_stat_prefix: extauthz::SHADOW_PREFIX.into(),
            ..Default::default()
        };
        out.custom_http.push(http_filter(
            HTTP_RBAC_FILTER,
            rbac_any(&cfg, None, rules.as_ref()),
        ));
        out.custom_http
            .push(http_filter(HTTP_EXT_AUTHZ_FILTER, envoy::any(&ext.http)));
        if let Some(tcp) = &ext.tcp {
            let (rules, _dry_run) = self.rbac(policies, rbac::rbac::Action::Deny, true, true);
            let cfg = net_rbac::Rbac {
                stat_prefix: TCP_STAT_PREFIX.into(),
                shadow_rules_stat_prefix: extauthz::SHADOW_PREFIX.into(),
                ..Default::default()
            };
            out.custom_tcp.push(network_filter(
                NETWORK_RBAC_FILTER,
                rbac_any(&cfg, None, rules.as_ref()),
            ));
            out.custom_tcp
                .push(network_filter(NETWORK_EXT_AUTHZ_FILTER, envoy::any(tcp)));
        }
    }

    /// `build(policies, action, forTCP)`: the enforced and the dry-run RBAC of one action
    /// (each `None` when no policy is in that mode).
    fn rbac(
        &self,
        policies: &[Arc<Policy>],
        action: rbac::rbac::Action,
        for_tcp: bool,
        custom: bool,
    ) -> (Option<rbac::Rbac>, Option<rbac::Rbac>) {
        let empty = || rbac::Rbac {
            action: action as i32,
            ..Default::default()
        };
        let (mut enforce, mut shadow) = (None, None);
        for p in policies {
            let target = if p.dry_run { &mut shadow } else { &mut enforce };
            let target = target.get_or_insert_with(empty);
            for (i, rule) in p.spec.rules.iter().enumerate() {
                let name = policy_name(&p.namespace, &p.name, i, custom);
                let mut m = match model::Model::new(rule) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(policy = %name, error = %e, "skipped invalid rule");
                        continue;
                    }
                };
                m.migrate_trust_domain(&self.trust_domains);
                match m.generate(for_tcp, action) {
                    Ok(policy) => {
                        target.policies.insert(name, policy);
                    }
                    Err(e) => {
                        tracing::debug!(policy = %name, error = %e, tcp = for_tcp, "skipped rule");
                    }
                }
            }
            if p.spec.rules.is_empty() {
                target
                    .policies
                    .insert(policy_name(&p.namespace, &p.name, 0, custom), match_never());
            }
        }
        (enforce, shadow)
    }
}

/// `ns[<ns>]-policy[<name>]-rule[<i>]`, prefixed `istio-ext-authz-` for CUSTOM.
pub fn policy_name(namespace: &str, name: &str, rule: usize, custom: bool) -> String {
    let prefix = if custom {
        format!("{}-", extauthz::MATCH_PREFIX)
    } else {
        String::new()
    };
    format!("{prefix}ns[{namespace}]-policy[{name}]-rule[{rule}]")
}

/// `rbacPolicyMatchNever`: what a policy without rules becomes.
fn match_never() -> rbac::Policy {
    rbac::Policy {
        permissions: vec![rbac::Permission {
            rule: Some(rbac::permission::Rule::NotRule(Box::new(
                model::permission_any(),
            ))),
        }],
        principals: vec![rbac::Principal {
            identifier: Some(rbac::principal::Identifier::NotId(Box::new(
                model::principal_any(),
            ))),
        }],
        ..Default::default()
    }
}

/// `shadowRuleStatPrefix`: from the action of the dry-run rules, ALLOW's when there are none.
fn shadow_prefix(shadow: Option<&rbac::Rbac>) -> &'static str {
    match shadow.map_or(rbac::rbac::Action::Allow as i32, |s| s.action) {
        a if a == rbac::rbac::Action::Allow as i32 => DRY_RUN_ALLOW_PREFIX,
        a if a == rbac::rbac::Action::Deny as i32 => DRY_RUN_DENY_PREFIX,
        _ => "",
    }
}

fn http_filter(name: &str, cfg: protobuf::Any) -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: name.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(cfg)),
        ..Default::default()
    }
}

fn network_filter(name: &str, cfg: protobuf::Any) -> listener::Filter {
    listener::Filter {
        name: name.into(),
        config_type: Some(listener::filter::ConfigType::TypedConfig(cfg)),
    }
}

/// `envoy.config.rbac.v3.RBAC` with its policies map written in name order, so that equal
/// configs encode to equal bytes (a `HashMap` iterates in a random order; unstable bytes would
/// look like a change to the xDS server on every push).
#[derive(Clone, PartialEq, Message)]
struct SortedRbac {
    #[prost(int32, tag = "1")]
    action: i32,
    #[prost(message, repeated, tag = "2")]
    policies: Vec<PolicyEntry>,
}

/// One `map<string, Policy>` entry (wire-identical to the map's entry message).
#[derive(Clone, PartialEq, Message)]
struct PolicyEntry {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<rbac::Policy>,
}

/// `rules` (1) and `shadow_rules` (2), the same tags in the HTTP and the network RBAC filter.
#[derive(Clone, PartialEq, Message)]
struct RbacRules {
    #[prost(message, optional, tag = "1")]
    rules: Option<SortedRbac>,
    #[prost(message, optional, tag = "2")]
    shadow_rules: Option<SortedRbac>,
}

fn sorted(r: &rbac::Rbac) -> SortedRbac {
    let mut policies: Vec<PolicyEntry> = r
        .policies
        .iter()
        .map(|(k, v)| PolicyEntry {
            key: k.clone(),
            value: Some(v.clone()),
        })
        .collect();
    policies.sort_by(|a, b| a.key.cmp(&b.key));
    SortedRbac {
        action: r.action,
        policies,
    }
}

/// The filter config `cfg` (without rules) with `rules` and `shadow_rules` appended in a stable
/// encoding (protobuf merges fields that appear later in the stream).
fn rbac_any<T: Message + Name>(
    cfg: &T,
    rules: Option<&rbac::Rbac>,
    shadow: Option<&rbac::Rbac>,
) -> protobuf::Any {
    let mut value = RbacRules {
        rules: rules.map(sorted),
        shadow_rules: shadow.map(sorted),
    }
    .encode_to_vec();
    value.extend(cfg.encode_to_vec());
    protobuf::Any {
        type_url: T::type_url(),
        value,
    }
}
