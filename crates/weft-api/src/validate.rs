//! Semantic validation: per-resource checks modelled on Istio 1.14's
//! `pkg/config/validation`, and cross-resource checks over a whole configuration set.

mod checks;
mod mesh;
mod networking;
mod security;
mod telemetry;
mod traffic;
mod virtual_service;

use std::collections::BTreeMap;

use crate::meta::{Kind, ObjectMeta, Resource, Spec};
use crate::problem::{FieldPath, Problem};

pub(crate) use checks::{validate_namespace_name, validate_object_name};
pub(crate) use mesh::validate_mesh_config;

/// Problems collected while validating one document, keyed by field path.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub items: Vec<(FieldPath, String)>,
}

impl Report {
    /// Records a problem at `path`.
    pub fn err(&mut self, path: &FieldPath, msg: impl Into<String>) {
        self.items.push((path.clone(), msg.into()));
    }

    /// Records the error of `res`, if any, at `path`.
    pub fn check(&mut self, path: &FieldPath, res: Result<(), String>) {
        if let Err(e) = res {
            self.err(path, e);
        }
    }
}

/// Validates one spec; paths are rooted at the document (`spec.…`, `metadata.…`).
pub(crate) fn validate_spec(spec: &Spec, meta: &ObjectMeta) -> Report {
    let mut r = Report::default();
    let p = FieldPath::root().key("spec");
    let ns = meta.namespace.as_str();
    match spec {
        Spec::ServiceEntry(se) => networking::validate_service_entry(&mut r, &p, se, ns),
        Spec::WorkloadEntry(we) => networking::validate_workload_entry(&mut r, &p, we),
        Spec::VirtualService(vs) => virtual_service::validate_virtual_service(&mut r, &p, vs, ns),
        Spec::DestinationRule(dr) => traffic::validate_destination_rule(&mut r, &p, dr, ns),
        Spec::Sidecar(sc) => networking::validate_sidecar(&mut r, &p, sc),
        Spec::Gateway(gw) => networking::validate_gateway(&mut r, &p, gw, &meta.name),
        Spec::PeerAuthentication(pa) => security::validate_peer_authentication(&mut r, &p, pa),
        Spec::AuthorizationPolicy(ap) => security::validate_authorization_policy(&mut r, &p, ap),
        Spec::RequestAuthentication(ra) => {
            security::validate_request_authentication(&mut r, &p, ra)
        }
        Spec::Telemetry(t) => telemetry::validate_telemetry(&mut r, &p, t),
        Spec::ProxyConfig(pc) => networking::validate_proxy_config(&mut r, &p, pc),
    }
    r
}

/// True when a namespace-scoped policy applies to the whole namespace (no selector).
fn selectorless(spec: &Spec) -> Option<bool> {
    let empty =
        |m: Option<&crate::common::WorkloadSelector>| m.is_none_or(|s| s.match_labels.is_empty());
    match spec {
        Spec::PeerAuthentication(pa) => Some(empty(pa.selector.as_ref())),
        Spec::Telemetry(t) => Some(empty(t.selector.as_ref())),
        Spec::ProxyConfig(pc) => Some(empty(pc.selector.as_ref())),
        Spec::Sidecar(sc) => Some(
            sc.workload_selector
                .as_ref()
                .is_none_or(|s| s.labels.is_empty()),
        ),
        _ => None,
    }
}

fn problem_for(res: &Resource, field: &str, message: String) -> Problem {
    Problem {
        file: res.source.file.clone(),
        line: res.source.line,
        kind: Some(res.kind().to_string()),
        namespace: Some(res.meta.namespace.clone()),
        name: Some(res.meta.name.clone()),
        field: field.to_owned(),
        message,
    }
}

/// Cross-resource checks over a complete configuration set:
/// - each kind/namespace/name appears once;
/// - at most one selector-less PeerAuthentication, Telemetry, ProxyConfig and Sidecar per
///   namespace (Istio would silently pick the oldest one).
///
/// Problems point at the later duplicate and name the first definition.
pub fn validate(resources: &[Resource]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen: BTreeMap<(Kind, &str, &str), &Resource> = BTreeMap::new();
    let mut ns_wide: BTreeMap<(Kind, &str), &Resource> = BTreeMap::new();
    for res in resources {
        let key = (
            res.kind(),
            res.meta.namespace.as_str(),
            res.meta.name.as_str(),
        );
        if let Some(first) = seen.get(&key) {
            problems.push(problem_for(
                res,
                "metadata.name",
                format!(
                    "duplicate {} {}/{}; first defined at {}:{}; rename or remove one of them",
                    res.kind(),
                    res.meta.namespace,
                    res.meta.name,
                    first.source.file.display(),
                    first.source.line
                ),
            ));
            continue;
        }
        seen.insert(key, res);
        if selectorless(&res.spec) == Some(true) {
            let nkey = (res.kind(), res.meta.namespace.as_str());
            if let Some(first) = ns_wide.get(&nkey) {
                let what = if res.kind() == Kind::Sidecar {
                    "workloadSelector"
                } else {
                    "selector"
                };
                problems.push(problem_for(
                    res,
                    "spec",
                    format!(
                        "namespace {} already has a {} without {what} ({} at {}:{}); only one may apply namespace-wide, add a {what} to one of them",
                        res.meta.namespace,
                        res.kind(),
                        first.meta.name,
                        first.source.file.display(),
                        first.source.line
                    ),
                ));
            } else {
                ns_wide.insert(nkey, res);
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests;
