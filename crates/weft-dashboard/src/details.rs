//! What the page shows when a service is clicked: its pods with their identities, the
//! VirtualServices and DestinationRules for its host, and the policies on its pods; and the
//! config in force with its validation errors. Built from the control plane's
//! `/debug/configz` and `/debug/registryz` through the same selection as `weft describe`.

use std::collections::BTreeMap;

use serde::Serialize;
use weft_api::{Resource, Spec};
use weft_ctl::describe::World;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Pod {
    pub address: String,
    pub workload: String,
    pub identity: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Named {
    pub kind: String,
    /// `name.namespace`.
    pub name: String,
    /// One line per route, subset or rule.
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServiceDetails {
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub ports: Vec<String>,
    pub pods: Vec<Pod>,
    pub routing: Vec<Named>,
    pub policies: Vec<Named>,
}

fn name_of(r: &Resource) -> String {
    format!("{}.{}", r.meta.name, r.meta.namespace)
}

fn weight(w: impl std::fmt::Display, n: usize) -> String {
    if n > 1 {
        format!(" ({w}%)")
    } else {
        String::new()
    }
}

/// `exact "jason"`, `prefix "/api"`, `regex "v[12]"`.
fn string_match(m: &weft_api::StringMatch) -> String {
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(e), _, _) => format!("exact {e:?}"),
        (_, Some(p), _) => format!("prefix {p:?}"),
        (_, _, Some(r)) => format!("regex {r:?}"),
        _ => "any".into(),
    }
}

/// A VirtualService's HTTP and TCP routes, one line each.
fn routes(vs: &weft_api::VirtualService) -> Vec<String> {
    let mut out = Vec::new();
    for r in &vs.http {
        let when: Vec<String> = r
            .match_
            .iter()
            .map(|m| {
                let mut parts = Vec::new();
                if let Some(u) = &m.uri {
                    parts.push(format!("uri {}", string_match(u)));
                }
                for (k, v) in &m.headers {
                    parts.push(format!("header {k} {}", string_match(v)));
                }
                parts.join(" and ")
            })
            .filter(|p| !p.is_empty())
            .collect();
        let to: Vec<String> = r
            .route
            .iter()
            .filter_map(|d| {
                let dest = d.destination.as_ref()?;
                let subset = if dest.subset.is_empty() {
                    String::new()
                } else {
                    format!(" subset {}", dest.subset)
                };
                Some(format!(
                    "{}{subset}{}",
                    dest.host,
                    weight(d.weight, r.route.len())
                ))
            })
            .collect();
        let mut line = if when.is_empty() {
            "all requests".to_string()
        } else {
            format!("when {}", when.join(" or "))
        };
        if let Some(f) = &r.fault {
            line.push_str(&format!(
                ": fault {}",
                serde_json::to_string(f).unwrap_or_default()
            ));
        }
        if !to.is_empty() {
            line.push_str(&format!(" → {}", to.join(", ")));
        }
        out.push(line);
    }
    for r in &vs.tcp {
        let to: Vec<String> = r
            .route
            .iter()
            .filter_map(|d| d.destination.as_ref().map(|x| x.host.clone()))
            .collect();
        out.push(format!("TCP → {}", to.join(", ")));
    }
    out
}

/// The details of service `name` in `namespace`; None when the registry has no such service.
pub fn service(
    world: &World,
    trust_domain: &str,
    name: &str,
    namespace: &str,
) -> Option<ServiceDetails> {
    let svc = world
        .services
        .iter()
        .find(|s| s.name == name && s.namespace == namespace)?;
    let pods: Vec<Pod> = svc
        .endpoints
        .iter()
        .map(|e| Pod {
            address: e.address.clone(),
            workload: e.workload.clone().unwrap_or_else(|| "-".into()),
            identity: e
                .service_account
                .as_ref()
                .map(|sa| format!("spiffe://{trust_domain}/ns/{}/sa/{sa}", e.namespace))
                .unwrap_or_else(|| "-".into()),
            labels: e.labels.clone(),
        })
        .collect();
    let mut routing = Vec::new();
    for r in &world.resources {
        match &r.spec {
            Spec::VirtualService(vs)
                if vs.hosts.iter().any(|h| {
                    weft_api::resolve_host(h, &r.meta.namespace, "cluster.local") == svc.hostname
                }) =>
            {
                routing.push(Named {
                    kind: "VirtualService".into(),
                    name: name_of(r),
                    lines: routes(vs),
                });
            }
            Spec::DestinationRule(dr)
                if weft_api::resolve_host(&dr.host, &r.meta.namespace, "cluster.local")
                    == svc.hostname =>
            {
                let mut lines: Vec<String> = dr
                    .subsets
                    .iter()
                    .map(|s| {
                        let labels: Vec<String> =
                            s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        format!("subset {} ({})", s.name, labels.join(","))
                    })
                    .collect();
                if let Some(tls) = dr.traffic_policy.as_ref().and_then(|t| t.tls.as_ref()) {
                    lines.push(format!(
                        "TLS {}",
                        serde_json::to_value(tls.mode)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default()
                    ));
                }
                routing.push(Named {
                    kind: "DestinationRule".into(),
                    name: name_of(r),
                    lines,
                });
            }
            _ => {}
        }
    }
    // The policies on any of its pods, once each.
    let mut policies: Vec<Named> = Vec::new();
    for e in &svc.endpoints {
        for r in world.policies_for(&e.namespace, &e.labels) {
            let entry = Named {
                kind: r.spec.kind().as_str().to_string(),
                name: name_of(r),
                lines: match &r.spec {
                    Spec::AuthorizationPolicy(p) => vec![
                        serde_json::to_value(p.action)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .unwrap_or_default(),
                    ],
                    Spec::PeerAuthentication(p) => p
                        .mtls
                        .as_ref()
                        .and_then(|m| serde_json::to_value(m.mode).ok())
                        .and_then(|v| v.as_str().map(|m| format!("mTLS {m}")))
                        .into_iter()
                        .collect(),
                    _ => vec![],
                },
            };
            if !policies
                .iter()
                .any(|p| p.kind == entry.kind && p.name == entry.name)
            {
                policies.push(entry);
            }
        }
    }
    Some(ServiceDetails {
        name: svc.name.clone(),
        namespace: svc.namespace.clone(),
        hostname: svc.hostname.clone(),
        ports: svc
            .ports
            .iter()
            .map(|p| format!("{} {}", p.name, p.number))
            .collect(),
        pods,
        routing,
        policies,
    })
}

/// The config in force: each resource as `Kind namespace/name`.
pub fn resources(world: &World) -> Vec<String> {
    world
        .resources
        .iter()
        .map(|r| {
            format!(
                "{} {}/{}",
                r.spec.kind().as_str(),
                r.meta.namespace,
                r.meta.name
            )
        })
        .collect()
}
