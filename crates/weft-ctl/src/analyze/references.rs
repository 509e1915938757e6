//! IST0101 ReferencedResourceNotFound for VirtualServices: destination and mirror hosts (and
//! their ports) that no ServiceEntry or Kubernetes Service defines, subsets no DestinationRule
//! defines for the host, gateways that do not exist.

use std::collections::{BTreeMap, BTreeSet};

use weft_api::{Destination, Spec, VirtualService};

use super::{Input, Level, Message, Origin};

const SUFFIX: &str = "cluster.local";

/// The services the analyzers know: `scope/fqdn` (scope `*` or a namespace) → ports.
pub(super) struct Services {
    hosts: BTreeMap<String, BTreeSet<u32>>,
    wildcards: Vec<(String, String, BTreeSet<u32>)>,
}

impl Services {
    pub(super) fn build(input: &Input) -> Services {
        let mut hosts: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        let mut wildcards = Vec::new();
        for r in &input.resources {
            let Spec::ServiceEntry(se) = &r.spec else {
                continue;
            };
            let scopes = weft_control::export::scopes(
                &se.export_to,
                &input.mesh.default_service_export_to,
                &r.meta.namespace,
            );
            let ports: BTreeSet<u32> = se.ports.iter().map(|p| p.number).collect();
            for h in &se.hosts {
                let fqdn = weft_api::resolve_host(h, &r.meta.namespace, SUFFIX);
                for s in &scopes {
                    if fqdn.starts_with('*') {
                        wildcards.push((s.clone(), fqdn.clone(), ports.clone()));
                    } else {
                        hosts
                            .entry(format!("{s}/{fqdn}"))
                            .or_default()
                            .extend(ports.iter().copied());
                    }
                }
            }
        }
        for o in input.objects("Service") {
            let fqdn = format!("{}.{}.svc.{SUFFIX}", o.meta.name, o.meta.namespace);
            let scope = o
                .meta
                .annotations
                .get("networking.istio.io/exportTo")
                .cloned()
                .unwrap_or_else(|| "*".into());
            let ports: BTreeSet<u32> = o.body["spec"]["ports"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| p["port"].as_u64().map(|n| n as u32))
                        .collect()
                })
                .unwrap_or_default();
            for s in scope.split(',').map(str::trim) {
                let s = if s == "." {
                    o.meta.namespace.as_str()
                } else {
                    s
                };
                hosts
                    .entry(format!("{s}/{fqdn}"))
                    .or_default()
                    .extend(&ports);
            }
        }
        Services { hosts, wildcards }
    }

    /// The ports of the service `fqdn` as seen from `namespace` (empty set: known, no ports
    /// declared); `None` when there is no such service.
    pub(super) fn lookup(&self, namespace: &str, fqdn: &str) -> Option<&BTreeSet<u32>> {
        self.hosts
            .get(&format!("{namespace}/{fqdn}"))
            .or_else(|| self.hosts.get(&format!("*/{fqdn}")))
            .or_else(|| {
                self.wildcards
                    .iter()
                    .find(|(s, w, _)| (s == "*" || s == namespace) && fqdn.ends_with(&w[1..]))
                    .map(|(_, _, p)| p)
            })
    }
}

/// (namespace, name) of each Gateway.
fn gateways(input: &Input) -> BTreeSet<(String, String)> {
    input
        .resources
        .iter()
        .filter(|r| matches!(r.spec, Spec::Gateway(_)))
        .map(|r| (r.meta.namespace.clone(), r.meta.name.clone()))
        .collect()
}

/// Subsets per DestinationRule host (resolved).
fn subsets(input: &Input) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &input.resources {
        if let Spec::DestinationRule(dr) = &r.spec {
            out.entry(weft_api::resolve_host(&dr.host, &r.meta.namespace, SUFFIX))
                .or_default()
                .extend(dr.subsets.iter().map(|s| s.name.clone()));
        }
    }
    out
}

struct Ctx<'a> {
    services: &'a Services,
    subsets: &'a BTreeMap<String, BTreeSet<String>>,
    origin: &'a Origin,
    namespace: &'a str,
}

impl Ctx<'_> {
    fn destination(&self, d: &Destination, field: &str, mirror: bool, out: &mut Vec<Message>) {
        let fqdn = weft_api::resolve_host(&d.host, self.namespace, SUFFIX);
        let what = if mirror { "mirror host" } else { "host" };
        let Some(ports) = self.services.lookup(self.namespace, &fqdn) else {
            out.push(Message::new(
                "IST0101",
                Level::Error,
                format!("Referenced {what} not found: {:?}", d.host),
                self.origin,
                Some(&format!("{field}.host")),
            ));
            return;
        };
        if let Some(p) = &d.port
            && !ports.is_empty()
            && !ports.contains(&p.number)
        {
            out.push(Message::new(
                "IST0101",
                Level::Error,
                format!(
                    "Referenced host:port not found: \"{}:{}\"",
                    d.host, p.number
                ),
                self.origin,
                Some(&format!("{field}.port")),
            ));
        }
        if !d.subset.is_empty()
            && !self
                .subsets
                .get(&fqdn)
                .is_some_and(|s| s.contains(&d.subset))
        {
            let what = if mirror { "mirror" } else { "host" };
            out.push(Message::new(
                "IST0101",
                Level::Error,
                format!(
                    "Referenced {what}+subset in destinationrule not found: \"{}+{}\"",
                    d.host, d.subset
                ),
                self.origin,
                Some(&format!("{field}.subset")),
            ));
        }
    }

    fn virtual_service(&self, vs: &VirtualService, out: &mut Vec<Message>) {
        for (i, r) in vs.tcp.iter().enumerate() {
            for (j, d) in r.route.iter().enumerate() {
                if let Some(d) = &d.destination {
                    self.destination(
                        d,
                        &format!("spec.tcp[{i}].route[{j}].destination"),
                        false,
                        out,
                    );
                }
            }
        }
        for (i, r) in vs.tls.iter().enumerate() {
            for (j, d) in r.route.iter().enumerate() {
                if let Some(d) = &d.destination {
                    self.destination(
                        d,
                        &format!("spec.tls[{i}].route[{j}].destination"),
                        false,
                        out,
                    );
                }
            }
        }
        for (i, r) in vs.http.iter().enumerate() {
            for (j, d) in r.route.iter().enumerate() {
                if let Some(d) = &d.destination {
                    self.destination(
                        d,
                        &format!("spec.http[{i}].route[{j}].destination"),
                        false,
                        out,
                    );
                }
            }
            if let Some(m) = &r.mirror {
                self.destination(m, &format!("spec.http[{i}].mirror"), true, out);
            }
        }
    }
}

pub(super) fn run(input: &Input, out: &mut Vec<Message>) {
    let known_gateways = gateways(input);
    let services = Services::build(input);
    let subsets = subsets(input);
    for r in &input.resources {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        let origin = Origin::of(r);
        Ctx {
            services: &services,
            subsets: &subsets,
            origin: &origin,
            namespace: &r.meta.namespace,
        }
        .virtual_service(vs, out);
        for (i, g) in vs.gateways.iter().enumerate() {
            if g == "mesh" {
                continue;
            }
            let (ns, name) = g
                .split_once('/')
                .map_or((r.meta.namespace.as_str(), g.as_str()), |(n, g)| (n, g));
            if !known_gateways.contains(&(ns.to_string(), name.to_string())) {
                out.push(Message::new(
                    "IST0101",
                    Level::Error,
                    format!("Referenced gateway not found: {g:?}"),
                    &origin,
                    Some(&format!("spec.gateways[{i}]")),
                ));
            }
        }
    }
}
