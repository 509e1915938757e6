//! `weft describe pod POD` / `weft describe service SVC`: istioctl's `x describe`, from the
//! control plane's config in force (`/debug/configz`) and registry (`/debug/registryz`) and
//! the pod's own proxy (which DestinationRule and VirtualService its clusters and routes came
//! from, its RBAC policies), plus what istioctl leaves out: the AuthorizationPolicies and
//! Telemetry that select the pod and the mTLS mode on each of its ports.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use serde::Deserialize;
use weft_api::{DestinationRule, Resource, Spec, VirtualService};
use weft_xds::dump::Resources;

use crate::error::CtlError;
use crate::proxy_config::{istio_config as summary_istio_config, render_config};
use crate::target::Mesh;

type Labels = BTreeMap<String, String>;

/// A service as the control plane's registry has it.
#[derive(Debug, Clone, Deserialize)]
pub struct Service {
    pub hostname: String,
    pub namespace: String,
    pub name: String,
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServicePort {
    pub number: u16,
    pub name: String,
    pub target_port: Option<u16>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Endpoint {
    pub address: String,
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
    #[serde(default)]
    pub labels: Labels,
    pub namespace: String,
    pub workload: Option<String>,
    pub service_account: Option<String>,
}

/// The config in force and the registry, from the control plane.
pub struct World {
    pub resources: Vec<Resource>,
    pub services: Vec<Service>,
    pub root_namespace: String,
}

impl World {
    pub fn fetch(mesh: &Mesh) -> Result<World, CtlError> {
        World::from_json(
            &mesh.control_ok("/debug/configz")?,
            &mesh.control_ok("/debug/registryz")?,
        )
    }

    /// From the control plane's `/debug/configz` and `/debug/registryz` answers.
    pub fn from_json(configz: &[u8], registryz: &[u8]) -> Result<World, CtlError> {
        let decode = |what: &str, e: String| CtlError::Decode {
            what: format!("the control plane's {what}"),
            reason: e,
        };
        let configz: serde_json::Value =
            serde_json::from_slice(configz).map_err(|e| decode("/debug/configz", e.to_string()))?;
        let mut resources = Vec::new();
        for mut r in configz["resources"].as_array().cloned().unwrap_or_default() {
            let source = r
                .as_object_mut()
                .and_then(|o| o.remove("source"))
                .unwrap_or_default();
            let file = source["file"].as_str().unwrap_or("configz").to_string();
            // JSON is YAML: the resource goes through the same parser as the files did.
            let (mut parsed, problems) =
                weft_api::parse_documents(&r.to_string(), Path::new(&file));
            if let Some(p) = problems.first() {
                return Err(decode("/debug/configz", p.to_string()));
            }
            for p in &mut parsed {
                p.source.line = source["line"].as_u64().unwrap_or(0) as usize;
            }
            resources.extend(parsed);
        }
        #[derive(Deserialize)]
        struct Registry {
            services: Vec<Service>,
        }
        let registry: Registry = serde_json::from_slice(registryz)
            .map_err(|e| decode("/debug/registryz", e.to_string()))?;
        Ok(World {
            resources,
            services: registry.services,
            root_namespace: configz["mesh"]["rootNamespace"]
                .as_str()
                .unwrap_or("istio-system")
                .to_string(),
        })
    }

    /// The AuthorizationPolicies, PeerAuthentications, RequestAuthentications and Telemetry
    /// resources that apply to a workload in `namespace` with `labels`, as the control plane
    /// selects them.
    pub fn policies_for<'a>(&'a self, namespace: &str, labels: &Labels) -> Vec<&'a Resource> {
        let mut out = Vec::new();
        let chain = weft_control::authn::PolicyChain::for_workload(
            &self.resources,
            &self.root_namespace,
            namespace,
            labels,
        );
        out.extend(self.applied_peer_authentications(&chain));
        for kind in ["AuthorizationPolicy", "RequestAuthentication", "Telemetry"] {
            out.extend(self.selecting(namespace, labels, kind));
        }
        out
    }

    /// The resources of the PeerAuthentications in force in `chain` (mesh-wide first).
    fn applied_peer_authentications<'a>(
        &'a self,
        chain: &weft_control::authn::PolicyChain<'a>,
    ) -> impl Iterator<Item = &'a Resource> {
        chain.applied().filter_map(|pa| {
            self.resources
                .iter()
                .find(|r| matches!(&r.spec, Spec::PeerAuthentication(x) if std::ptr::eq(x, pa)))
        })
    }

    fn named<'a>(&'a self, kind: &str, name_ns: &str) -> Option<&'a Resource> {
        self.resources.iter().find(|r| {
            r.spec.kind().as_str() == kind
                && format!("{}.{}", r.meta.name, r.meta.namespace) == name_ns
        })
    }

    /// Resources of a policy kind that apply to a workload, as the control plane selects them:
    /// AuthorizationPolicy and RequestAuthentication from the root namespace and the
    /// workload's, without a selector or with one its labels match; Telemetry mesh-wide from
    /// the root namespace without a selector, and the workload namespace's.
    fn selecting<'a>(&'a self, namespace: &str, labels: &Labels, kind: &str) -> Vec<&'a Resource> {
        let root = self.root_namespace.as_str();
        self.resources
            .iter()
            .filter(|r| {
                if r.spec.kind().as_str() != kind {
                    return false;
                }
                let sel = policy_selector(&r.spec).filter(|s| !s.is_empty());
                let matches = sel.is_none_or(|s| selects(s, labels));
                let ns = r.meta.namespace.as_str();
                match &r.spec {
                    Spec::Telemetry(_) => {
                        (ns == root && sel.is_none()) || (ns == namespace && matches)
                    }
                    _ => (ns == root || ns == namespace) && matches,
                }
            })
            .collect()
    }
}

/// The workload selector of a policy kind (None: the whole namespace).
fn policy_selector(spec: &Spec) -> Option<&Labels> {
    let sel = match spec {
        Spec::PeerAuthentication(p) => p.selector.as_ref(),
        Spec::AuthorizationPolicy(p) => p.selector.as_ref(),
        Spec::RequestAuthentication(p) => p.selector.as_ref(),
        Spec::Telemetry(p) => p.selector.as_ref(),
        _ => None,
    };
    sel.map(|s| &s.match_labels)
}

/// istioctl's `kname`: the name alone in the namespace being described, else `name.namespace`.
fn kname(r: &Resource, here: &str) -> String {
    if r.meta.namespace == here {
        r.meta.name.clone()
    } else {
        format!("{}.{}", r.meta.name, r.meta.namespace)
    }
}

fn selects(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// istioctl's DestinationRule block for one pod (or the pods of a service).
fn destination_rule(
    out: &mut String,
    dr_res: &Resource,
    dr: &DestinationRule,
    pods: &[&Labels],
    here: &str,
) {
    let _ = writeln!(
        out,
        "DestinationRule: {} for {:?}",
        kname(dr_res, here),
        dr.host
    );
    let (matching, other): (Vec<_>, Vec<_>) = dr
        .subsets
        .iter()
        .partition(|s| pods.iter().any(|l| selects(&s.labels, l)));
    let names = |v: &[&weft_api::networking::Subset]| {
        v.iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
            .join(",")
    };
    if !dr.subsets.is_empty() {
        if matching.is_empty() {
            let _ = writeln!(
                out,
                "  WARNING POD DOES NOT MATCH ANY SUBSETS.  (Non matching subsets {})",
                names(&other)
            );
        } else {
            let _ = writeln!(out, "   Matching subsets: {}", names(&matching));
            if !other.is_empty() {
                let _ = writeln!(out, "      (Non-matching subsets {})", names(&other));
            }
        }
    }
    match &dr.traffic_policy {
        None => {
            let _ = writeln!(out, "   No Traffic Policy");
        }
        Some(tp) => {
            if let Some(tls) = &tp.tls {
                let _ = writeln!(
                    out,
                    "   Traffic Policy TLS Mode: {}",
                    serde_json::to_value(tls.mode)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                );
            }
            let mut parts = Vec::new();
            if tp.load_balancer.is_some() {
                parts.push("load balancer");
            }
            if tp.connection_pool.is_some() {
                parts.push("connection pool");
            }
            if tp.outlier_detection.is_some() {
                parts.push("outlier detection");
            }
            if !tp.port_level_settings.is_empty() {
                parts.push("port level settings");
            }
            if !parts.is_empty() {
                let _ = writeln!(out, "   {}", parts.join("/"));
            }
        }
    }
}

/// istioctl's VirtualService block: the routes that reach these pods (weights, matches) and
/// the ones that do not.
fn virtual_service(
    out: &mut String,
    vs_res: &Resource,
    vs: &VirtualService,
    svc: &Service,
    subsets: &[String],
    dr_subsets: Option<(&str, &[String])>,
) {
    let _ = writeln!(out, "VirtualService: {}", kname(vs_res, &svc.namespace));
    let mut facts = Vec::new();
    let mut misses = Vec::new();
    let mut elsewhere = 0;
    let mut reached_any = vs.http.is_empty();
    for r in &vs.http {
        let matches: Vec<String> = r
            .match_
            .iter()
            .map(|m| {
                let mut s = match &m.uri {
                    Some(u) if u.exact.is_some() => u.exact.clone().unwrap_or_default(),
                    Some(u) if u.prefix.is_some() => {
                        format!("{}*", u.prefix.clone().unwrap_or_default())
                    }
                    Some(u) => format!("regex {}", u.regex.clone().unwrap_or_default()),
                    None => String::new(),
                };
                if m.ignore_uri_case {
                    s.push_str(" uncased");
                }
                if !m.headers.is_empty() {
                    let h: Vec<String> = m
                        .headers
                        .iter()
                        .map(|(k, v)| {
                            format!(
                                "{k}={}",
                                v.exact
                                    .clone()
                                    .or(v.prefix.clone())
                                    .or(v.regex.clone())
                                    .unwrap_or_default()
                            )
                        })
                        .collect();
                    s.push_str(&format!(" when headers are {}", h.join("; ")));
                }
                s.trim().to_string()
            })
            .collect();
        let described = if matches.is_empty() {
            "everything".to_string()
        } else {
            matches.join(", ")
        };
        let mut reached = false;
        for d in r
            .route
            .iter()
            .filter_map(|d| d.destination.as_ref().map(|x| (d.weight, x)))
        {
            let (weight, dest) = d;
            let fqdn = weft_api::resolve_host(&dest.host, &vs_res.meta.namespace, "cluster.local");
            if fqdn != svc.hostname {
                elsewhere += 1;
                continue;
            }
            if dest.subset.is_empty() || subsets.contains(&dest.subset) {
                reached = true;
                if weight > 0 {
                    facts.push(format!("Weight {weight}%"));
                }
            } else {
                match dr_subsets {
                    None => misses.push(format!(
                        "Warning: Route to subset {} but NO DESTINATION RULE defining subsets!",
                        dest.subset
                    )),
                    Some((dr_name, known)) if !known.contains(&dest.subset) => {
                        misses.push(format!(
                            "Warning: Route to UNKNOWN subset {}; check DestinationRule {dr_name}",
                            dest.subset
                        ))
                    }
                    Some(_) => misses.push(format!(
                        "Route to non-matching subset {} for ({described})",
                        dest.subset
                    )),
                }
            }
        }
        if reached {
            reached_any = true;
            let mut line = Vec::new();
            if let Some(f) = &r.fault {
                line.push(format!(
                    "Fault injection {}",
                    serde_json::to_string(f).unwrap_or_default()
                ));
            }
            if !matches.is_empty() {
                line.push(matches.join(", "));
            }
            if !line.is_empty() {
                facts.push(line.join(", "));
            }
        }
    }
    for f in &facts {
        let _ = writeln!(out, "   {f}");
    }
    if !reached_any && !misses.is_empty() {
        let _ = writeln!(
            out,
            "   WARNING: No destinations match pod subsets (checked {} HTTP routes)",
            vs.http.len()
        );
    } else if reached_any && elsewhere + misses.len() > 0 {
        let _ = writeln!(
            out,
            "   {} additional destination(s) that will not reach this pod",
            elsewhere + misses.len()
        );
    }
    for m in &misses {
        let _ = writeln!(out, "      {m}");
    }
    if reached_any && facts.is_empty() && misses.is_empty() && elsewhere == 0 {
        if !vs.http.is_empty() {
            let _ = writeln!(out, "   {} HTTP route(s)", vs.http.len());
        }
        if !vs.tcp.is_empty() {
            let _ = writeln!(out, "   {} TCP route(s)", vs.tcp.len());
        }
    }
}

/// The RBAC policy names on the proxy's inbound HTTP chains.
fn rbac_policies(dump: &Resources) -> Vec<String> {
    use prost::Message;
    use weft_xds::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
    use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_filter,
    };
    let mut out = Vec::new();
    let Some(l) = dump.listeners.get("virtualInbound") else {
        return out;
    };
    for chain in &l.filter_chains {
        for f in &chain.filters {
            let Some(weft_xds::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) =
                &f.config_type
            else {
                continue;
            };
            let Ok(hcm) = HttpConnectionManager::decode(a.value.as_slice()) else {
                continue;
            };
            for hf in hcm
                .http_filters
                .iter()
                .filter(|h| h.name == "envoy.filters.http.rbac")
            {
                let Some(http_filter::ConfigType::TypedConfig(a)) = &hf.config_type else {
                    continue;
                };
                if let Ok(rbac) = Rbac::decode(a.value.as_slice()) {
                    for name in rbac.rules.iter().flat_map(|r| r.policies.keys()) {
                        if !out.contains(name) {
                            out.push(name.clone());
                        }
                    }
                }
            }
        }
        if !out.is_empty() {
            break;
        }
    }
    out.sort();
    out
}

/// The DestinationRule and VirtualService the proxy's config for `svc`:`port` came from.
fn references(dump: &Resources, svc: &Service, port: u16) -> (Option<String>, Option<String>) {
    let dr = dump
        .clusters
        .iter()
        .find(|(n, _)| {
            n.starts_with(&format!("outbound|{port}|"))
                && n.ends_with(&format!("|{}", svc.hostname))
        })
        .and_then(|(_, c)| c.metadata.as_ref())
        .and_then(summary_istio_config)
        .filter(|p| p.contains("/destination-rule/"))
        .map(|p| render_config(&p));
    // The outbound route config of the port (`9080`, or `http.9080` for an HTTP port on a
    // Gateway/Sidecar-scoped config), as istioctl looks it up.
    let port_route = port.to_string();
    let http_route = format!("http.{port}");
    let vs = dump.routes.values().find_map(|rc| {
        if rc.name != port_route && rc.name != http_route {
            return None;
        }
        rc.virtual_hosts
            .iter()
            .filter(|vh| vh.domains.iter().any(|d| d == &svc.hostname))
            .flat_map(|vh| &vh.routes)
            .find_map(|r| r.metadata.as_ref().and_then(summary_istio_config))
            .filter(|p| p.contains("/virtual-service/"))
            .map(|p| render_config(&p))
    });
    (dr, vs)
}

fn service_block(
    out: &mut String,
    world: &World,
    dump: &Resources,
    svc: &Service,
    pods: &[&Endpoint],
) {
    let _ = writeln!(out, "Service: {}", svc.name);
    for p in &svc.ports {
        let target = pods
            .first()
            .and_then(|e| e.ports.get(&p.name).copied())
            .or(p.target_port)
            .unwrap_or(p.number);
        let protocol = weft_api::protocol_for_port(None, &p.name, u32::from(p.number));
        let shown = if p.name.is_empty() {
            "auto-detect".to_string()
        } else {
            protocol.as_str().to_string()
        };
        let _ = writeln!(
            out,
            "   Port: {} {}/{shown} targets pod port {target}",
            p.name, p.number
        );
    }
    let labels: Vec<&Labels> = pods.iter().map(|e| &e.labels).collect();
    for p in &svc.ports {
        let prefix = if svc.ports.len() > 1 {
            format!("{} ", p.number)
        } else {
            String::new()
        };
        let (dr_ref, vs_ref) = references(dump, svc, p.number);
        let mut dr_subsets: Option<(String, Vec<String>)> = None;
        let mut matching = Vec::new();
        let mut block = String::new();
        if let Some(name) = &dr_ref {
            match world.named("DestinationRule", name) {
                Some(r) => {
                    if let Spec::DestinationRule(dr) = &r.spec {
                        destination_rule(&mut block, r, dr, &labels, &svc.namespace);
                        dr_subsets = Some((
                            name.clone(),
                            dr.subsets.iter().map(|s| s.name.clone()).collect(),
                        ));
                        matching = dr
                            .subsets
                            .iter()
                            .filter(|s| labels.iter().any(|l| selects(&s.labels, l)))
                            .map(|s| s.name.clone())
                            .collect();
                    }
                }
                None => {
                    let _ = writeln!(
                        block,
                        "WARNING: Proxy is stale; it references to non-existent destination rule {name}"
                    );
                }
            }
        }
        if let Some(name) = &vs_ref {
            match world.named("VirtualService", name) {
                Some(r) => {
                    if let Spec::VirtualService(vs) = &r.spec {
                        let dr = dr_subsets.as_ref().map(|(n, s)| (n.as_str(), s.as_slice()));
                        virtual_service(&mut block, r, vs, svc, &matching, dr);
                    }
                }
                None => {
                    let _ = writeln!(
                        block,
                        "WARNING: Proxy is stale; it references to non-existent virtual service {name}"
                    );
                }
            }
        }
        for line in block.lines() {
            let _ = writeln!(out, "{prefix}{line}");
        }
    }
}

/// Effective mTLS as istiod composes it (the control plane's own precedence: workload, then
/// namespace, then mesh-wide; UNSET inherits; PERMISSIVE by default), and the workload
/// policy's port-level modes.
fn peer_authentication(
    out: &mut String,
    world: &World,
    namespace: &str,
    labels: &Labels,
    ports: &[u16],
) {
    let chain = weft_control::authn::PolicyChain::for_workload(
        &world.resources,
        &world.root_namespace,
        namespace,
        labels,
    );
    let _ = writeln!(out, "Effective PeerAuthentication:");
    let _ = writeln!(
        out,
        "   Workload mTLS mode: {}",
        chain.workload_mode().as_str()
    );
    let port_level: Vec<u32> = chain
        .workload_policy()
        .map(|pa| pa.port_level_mtls.keys().copied().collect())
        .unwrap_or_default();
    if !port_level.is_empty() {
        let _ = writeln!(out, "   Port Level mTLS mode:");
        for p in &port_level {
            let mode = u16::try_from(*p).map_or(chain.workload_mode(), |p| chain.port_mode(p));
            let _ = writeln!(out, "      {p}: {}", mode.as_str());
        }
    }
    // Weft's addition: the mode on every port the workload serves.
    if !ports.is_empty() {
        let each: Vec<String> = ports
            .iter()
            .map(|p| format!("{p} {}", chain.port_mode(*p).as_str()))
            .collect();
        let _ = writeln!(out, "   Ports: {}", each.join(", "));
    }
    let names: Vec<String> = world
        .applied_peer_authentications(&chain)
        .map(|r| format!("{}.{}", r.meta.name, r.meta.namespace))
        .collect();
    if !names.is_empty() {
        let _ = writeln!(out, "Applied PeerAuthentication:");
        let _ = writeln!(out, "   {}", names.join(", "));
    }
}

/// `weft describe pod POD`.
pub fn pod(mesh: &Mesh, pod: &str) -> Result<String, CtlError> {
    mesh.require_up("describe pod")?;
    let state = mesh.pod(pod)?.clone();
    let world = World::fetch(mesh)?;
    let ip = state.ip.to_string();
    let services: Vec<(&Service, &Endpoint)> = world
        .services
        .iter()
        .filter_map(|s| s.endpoints.iter().find(|e| e.address == ip).map(|e| (s, e)))
        .collect();
    let mut out = String::new();
    let _ = writeln!(out, "Pod: {}", state.name);
    let mut ports: Vec<u16> = Vec::new();
    for (s, e) in &services {
        for p in &s.ports {
            let n = e
                .ports
                .get(&p.name)
                .copied()
                .or(p.target_port)
                .unwrap_or(p.number);
            if !ports.contains(&n) {
                ports.push(n);
            }
        }
    }
    let app = services
        .first()
        .and_then(|(_, e)| e.workload.clone())
        .unwrap_or_else(|| state.name.clone());
    let mut shown: Vec<String> = ports.iter().map(|p| format!("{p} ({app})")).collect();
    if state.sidecar {
        shown.push("15090 (istio-proxy)".into());
    }
    if shown.is_empty() {
        let _ = writeln!(out, "   Pod does not expose ports");
    } else {
        let _ = writeln!(out, "   Pod Ports: {}", shown.join(", "));
    }
    if !state.sidecar {
        let _ = writeln!(
            out,
            "WARNING: {} is not part of mesh; no Istio sidecar",
            state.name
        );
        return Ok(out);
    }
    let Some((_, me)) = services.first() else {
        let _ = writeln!(
            out,
            "Warning: No Kubernetes Services select pod {}",
            state.name
        );
        return Ok(out);
    };
    let labels = me.labels.clone();
    let namespace = me.namespace.clone();
    if !labels.contains_key("app") {
        let _ = writeln!(
            out,
            "Suggestion: add 'app' label to pod for Istio telemetry."
        );
    }
    if !labels.contains_key("version") {
        let _ = writeln!(
            out,
            "Suggestion: add 'version' label to pod for Istio telemetry."
        );
    }
    // The identity the pod was started with (its trust domain and service account).
    if let Some(id) = &state.identity {
        let _ = writeln!(out, "   Identity: {id}");
    }
    let dump = Resources::from_config_dump(
        &mesh.admin_ok(Some(&state.name), "/config_dump?format=proto")?,
    )?;
    for (s, e) in &services {
        let _ = writeln!(out, "--------------------");
        service_block(&mut out, &world, &dump, s, &[*e]);
    }
    let rbac = rbac_policies(&dump);
    if !rbac.is_empty() {
        let _ = writeln!(out, "RBAC policies: {}", rbac.join(", "));
    }
    let _ = writeln!(out, "--------------------");
    peer_authentication(&mut out, &world, &namespace, &labels, &ports);
    // Weft's additions: the other policies that select the pod.
    let listed = |kind: &str, rs: Vec<&Resource>, extra: &dyn Fn(&Resource) -> String| -> String {
        if rs.is_empty() {
            return String::new();
        }
        let names: Vec<String> = rs
            .iter()
            .map(|r| format!("{}.{}{}", r.meta.name, r.meta.namespace, extra(r)))
            .collect();
        format!("Applied {kind}:\n   {}\n", names.join(", "))
    };
    out.push_str(&listed(
        "AuthorizationPolicy",
        world.selecting(&namespace, &labels, "AuthorizationPolicy"),
        &|r| match &r.spec {
            Spec::AuthorizationPolicy(p) => format!(
                " ({})",
                serde_json::to_value(p.action)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            ),
            _ => String::new(),
        },
    ));
    out.push_str(&listed(
        "RequestAuthentication",
        world.selecting(&namespace, &labels, "RequestAuthentication"),
        &|_| String::new(),
    ));
    out.push_str(&listed(
        "Telemetry",
        world.selecting(&namespace, &labels, "Telemetry"),
        &|_| String::new(),
    ));
    Ok(out)
}

/// `weft describe service SVC` (`NAME` or `NAME.NAMESPACE`).
pub fn service(mesh: &Mesh, name: &str) -> Result<String, CtlError> {
    mesh.require_up("describe service")?;
    let world = World::fetch(mesh)?;
    let (short, ns) = name.split_once('.').unwrap_or((name, "default"));
    let svc = world
        .services
        .iter()
        .find(|s| s.name == short && s.namespace == ns)
        .ok_or_else(|| CtlError::Usage(format!("service {short}.{ns} is not in the registry")))?;
    let pods: Vec<&Endpoint> = svc.endpoints.iter().collect();
    let mut out = String::new();
    if pods.is_empty() {
        let _ = writeln!(out, "Service \"{short}.{ns}\" has no pods.");
        return Ok(out);
    }
    let first = mesh
        .pods()
        .iter()
        .find(|p| p.sidecar && pods.iter().any(|e| e.address == p.ip.to_string()));
    let Some(first) = first else {
        let _ = writeln!(
            out,
            "Service \"{short}.{ns}\" has no Istio pods.  ({} pods in service).",
            pods.len()
        );
        return Ok(out);
    };
    let dump = Resources::from_config_dump(
        &mesh.admin_ok(Some(&first.name), "/config_dump?format=proto")?,
    )?;
    service_block(&mut out, &world, &dump, svc, &pods);
    Ok(out)
}
