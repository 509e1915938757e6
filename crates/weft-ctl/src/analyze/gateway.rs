//! Gateway analyzers: IST0101 for a selector no workload matches, IST0104 for a server port
//! the selected workloads' Services do not expose, IST0145 for Gateways on the same workloads
//! and port with overlapping hosts.

use std::collections::{BTreeMap, BTreeSet};

use weft_api::Spec;

use super::{Input, Level, Message, Origin};

type Labels = BTreeMap<String, String>;

fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// istioctl's selector string: sorted `k=v` joined by `,`.
fn selector_string(selector: &Labels) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn labels_of(v: &serde_json::Value) -> Labels {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The workloads (namespace, labels): Pods, Deployments' pod templates, WorkloadEntries and
/// ServiceEntries' inline endpoints.
pub(super) fn workloads(input: &Input) -> Vec<(String, Labels)> {
    let mut out: Vec<(String, Labels)> = input
        .objects("Pod")
        .map(|o| (o.meta.namespace.clone(), o.meta.labels.clone()))
        .collect();
    out.extend(input.objects("Deployment").map(|o| {
        (
            o.meta.namespace.clone(),
            labels_of(&o.body["spec"]["template"]["metadata"]["labels"]),
        )
    }));
    for r in &input.resources {
        match &r.spec {
            Spec::WorkloadEntry(we) => out.push((r.meta.namespace.clone(), we.labels.clone())),
            Spec::ServiceEntry(se) => out.extend(
                se.endpoints
                    .iter()
                    .map(|e| (r.meta.namespace.clone(), e.labels.clone())),
            ),
            _ => {}
        }
    }
    out
}

pub(super) fn run(input: &Input, out: &mut Vec<Message>) {
    let workloads = workloads(input);
    // "<selector>~<port>" → gateway → hosts, for IST0145.
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for r in &input.resources {
        let Spec::Gateway(gw) = &r.spec else {
            continue;
        };
        let origin = Origin::of(r);
        let selected: Vec<&(String, Labels)> = workloads
            .iter()
            .filter(|(_, l)| selects(&gw.selector, l))
            .collect();
        if selected.is_empty() {
            out.push(Message::new(
                "IST0101",
                Level::Error,
                format!(
                    "Referenced selector not found: {:?}",
                    selector_string(&gw.selector)
                ),
                &origin,
                Some("spec.selector"),
            ));
        } else {
            // The TCP ports of the Services (in the workloads' namespaces) that select them.
            let mut ports = BTreeSet::new();
            for svc in input.objects("Service") {
                let sel = labels_of(&svc.body["spec"]["selector"]);
                if sel.is_empty()
                    || !selected
                        .iter()
                        .any(|(ns, l)| *ns == svc.meta.namespace && selects(&sel, l))
                {
                    continue;
                }
                for p in svc.body["spec"]["ports"].as_array().into_iter().flatten() {
                    if p["protocol"].as_str().unwrap_or("TCP") == "TCP"
                        && let Some(n) = p["port"].as_u64()
                    {
                        ports.insert(n as u32);
                    }
                }
            }
            for (i, s) in gw.servers.iter().enumerate() {
                let Some(port) = &s.port else { continue };
                if !ports.contains(&port.number) {
                    out.push(Message::new(
                        "IST0104",
                        Level::Warning,
                        format!(
                            "The gateway refers to a port that is not exposed on the workload (pod selector {}; port {})",
                            selector_string(&gw.selector),
                            port.number
                        ),
                        &origin,
                        Some(&format!("spec.servers[{i}].port")),
                    ));
                }
            }
        }
        for s in &gw.servers {
            let Some(port) = &s.port else { continue };
            groups
                .entry(format!("{}~{}", selector_string(&gw.selector), port.number))
                .or_default()
                .entry(format!("{}/{}", r.meta.namespace, r.meta.name))
                .or_default()
                .extend(s.hosts.iter().cloned());
        }
    }
    for r in &input.resources {
        let Spec::Gateway(gw) = &r.spec else {
            continue;
        };
        let me = format!("{}/{}", r.meta.namespace, r.meta.name);
        for (i, s) in gw.servers.iter().enumerate() {
            let Some(port) = &s.port else { continue };
            let key = format!("{}~{}", selector_string(&gw.selector), port.number);
            let Some(group) = groups.get(&key) else {
                continue;
            };
            let conflicts: Vec<&String> = group
                .iter()
                .filter(|(name, hosts)| {
                    **name != me
                        && hosts.iter().any(|h| {
                            s.hosts.iter().any(|mine| {
                                let strip =
                                    |x: &str| x.split_once('/').map_or(x, |(_, h)| h).to_string();
                                weft_api::host::matches(&strip(h), &strip(mine))
                            })
                        })
                })
                .map(|(name, _)| name)
                .collect();
            if !conflicts.is_empty() {
                out.push(Message::new(
                    "IST0145",
                    Level::Error,
                    format!(
                        "Conflict with gateways {} (workload selector {}, port {}, hosts {}).",
                        conflicts
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        selector_string(&gw.selector),
                        port.number,
                        s.hosts.join(",")
                    ),
                    &Origin::of(r),
                    Some(&format!("spec.servers[{i}]")),
                ));
            }
        }
    }
}
