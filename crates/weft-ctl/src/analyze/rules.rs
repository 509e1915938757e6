//! Analyzers over VirtualServices and DestinationRules: IST0109 (mesh VirtualServices with the
//! same host), IST0131 (matches earlier rules make ineffective), IST0113 (a DestinationRule's
//! mTLS against the PeerAuthentication of the host's namespace), IST0128/IST0129 (TLS
//! origination without `caCertificates`).

use std::collections::BTreeMap;

use weft_api::networking::HttpMatchRequest;
use weft_api::{ClientTlsMode, Resource, Spec, StringMatch, VirtualService};

use super::{Input, Level, Message, Origin};

pub(super) fn run(input: &Input, out: &mut Vec<Message>) {
    conflicting_mesh_hosts(input, out);
    for r in &input.resources {
        match &r.spec {
            Spec::VirtualService(vs) => ineffective_matches(r, vs, out),
            Spec::DestinationRule(_) => {
                ca_certificates(r, out);
                mtls_conflict(input, r, out);
            }
            _ => {}
        }
    }
}

/// IST0109: `scope/fqdn` keys of mesh-bound VirtualServices shared by several of them.
fn conflicting_mesh_hosts(input: &Input, out: &mut Vec<Message>) {
    let mesh_bound: Vec<(&Resource, &VirtualService)> = input
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::VirtualService(vs)
                if vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh") =>
            {
                Some((r, vs))
            }
            _ => None,
        })
        .collect();
    let mut by_key: BTreeMap<String, Vec<(&Resource, usize)>> = BTreeMap::new();
    let mut public: Vec<(String, &Resource, usize)> = Vec::new();
    for (r, vs) in &mesh_bound {
        let scopes = weft_control::export::scopes(
            &vs.export_to,
            &input.mesh.default_virtual_service_export_to,
            &r.meta.namespace,
        );
        for (i, h) in vs.hosts.iter().enumerate() {
            let fqdn = weft_api::resolve_host(h, &r.meta.namespace, "cluster.local");
            for s in &scopes {
                by_key
                    .entry(format!("{s}/{fqdn}"))
                    .or_default()
                    .push((r, i));
                if s == "*" {
                    public.push((fqdn.clone(), r, i));
                }
            }
        }
    }
    for (key, list) in by_key.iter_mut() {
        if key.starts_with("*/") {
            continue;
        }
        let fqdn = key.split_once('/').map_or("", |(_, h)| h);
        for (h, r, i) in &public {
            if weft_api::host::matches(h, fqdn) && !list.iter().any(|(x, _)| std::ptr::eq(*x, *r)) {
                list.push((r, *i));
            }
        }
    }
    let mut reported = std::collections::BTreeSet::new();
    for (key, list) in &by_key {
        if list.len() < 2 {
            continue;
        }
        let names: Vec<String> = list
            .iter()
            .map(|(r, _)| format!("{}/{}", r.meta.namespace, r.meta.name))
            .collect();
        for (r, i) in list {
            if !reported.insert((r.meta.namespace.clone(), r.meta.name.clone())) {
                continue;
            }
            out.push(Message::new(
                "IST0109",
                Level::Error,
                format!(
                    "The VirtualServices {} associated with mesh gateway define the same host {key} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
                    names.join(",")
                ),
                &Origin::of(r),
                Some(&format!("spec.hosts[{i}]")),
            ));
        }
    }
}

fn quoted_or_index(name: &str, i: usize) -> String {
    if name.is_empty() {
        format!("#{i}")
    } else {
        format!("{name:?}")
    }
}

fn exact_or_prefix(m: Option<&StringMatch>) -> String {
    match m {
        Some(StringMatch { exact: Some(e), .. }) if !e.is_empty() => format!("exact:{e}"),
        Some(StringMatch {
            prefix: Some(p), ..
        }) if !p.is_empty() => format!("prefix:{p}"),
        _ => String::new(),
    }
}

/// istiod's `OverlappingMatchValidationForHTTPRoute`: a prefix match and what else it needs.
struct PrefixMatch {
    route: String,
    name: String,
    prefix: String,
    port: u32,
    method: String,
    authority: String,
    headers: BTreeMap<String, String>,
    query: BTreeMap<String, String>,
    without: BTreeMap<String, String>,
}

fn prefix_match(m: &HttpMatchRequest, route: String, name: String) -> Option<PrefixMatch> {
    let prefix = m.uri.as_ref()?.prefix.clone().filter(|p| !p.is_empty())?;
    let map = |h: &BTreeMap<String, StringMatch>| {
        h.iter()
            .map(|(k, v)| (k.clone(), exact_or_prefix(Some(v))))
            .collect()
    };
    let method = exact_or_prefix(m.method.as_ref());
    Some(PrefixMatch {
        route,
        name,
        prefix,
        port: m.port,
        method: if method.is_empty() {
            "exact:GET".into()
        } else {
            method
        },
        authority: exact_or_prefix(m.authority.as_ref()),
        headers: map(&m.headers),
        query: map(&m.query_params),
        without: map(&m.without_headers),
    })
}

/// istiod's `coveredValidation`: the earlier prefix match `a` takes every request `b` would.
fn covers(a: &PrefixMatch, b: &PrefixMatch) -> bool {
    let within = |x: &str, y: &str| x == y || x.starts_with(y);
    let maps = |x: &BTreeMap<String, String>, y: &BTreeMap<String, String>| {
        x.len() == y.len()
            && x.iter()
                .all(|(k, v)| y.get(k).is_some_and(|w| within(v, w)))
    };
    b.prefix.starts_with(&a.prefix)
        && a.port == b.port
        && within(&a.method, &b.method)
        && within(&a.authority, &b.authority)
        && maps(&a.headers, &b.headers)
        && maps(&a.query, &b.query)
        && maps(&a.without, &b.without)
}

/// IST0131 as istiod's validation finds it: a match identical to one of an earlier rule, or
/// a prefix match an earlier prefix match covers.
fn ineffective_matches(r: &Resource, vs: &VirtualService, out: &mut Vec<Message>) {
    let origin = Origin::of(r);
    let mut report = |rule: String, m: String, dup: String, field: String| {
        out.push(Message::new(
            "IST0131",
            Level::Info,
            format!(
                "VirtualService rule {rule} match {m} is not used (duplicate/overlapping match in rule {dup})."
            ),
            &origin,
            Some(&field),
        ));
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut prefixes = Vec::new();
    for (i, route) in vs.http.iter().enumerate() {
        for (j, m) in route.match_.iter().enumerate() {
            let mut unnamed = m.clone();
            unnamed.name.clear();
            let key = serde_json::to_string(&unnamed).unwrap_or_default();
            let rule = quoted_or_index(&route.name, i);
            let name = quoted_or_index(&m.name, j);
            if let Some(&dup) = seen.get(&key) {
                report(
                    rule,
                    name,
                    quoted_or_index(&vs.http[dup].name, dup),
                    format!("spec.http[{i}].match[{j}]"),
                );
                continue;
            }
            seen.insert(key, i);
            if let Some(p) = prefix_match(m, rule, name) {
                prefixes.push((p, i, j));
            }
        }
    }
    for (a, (pa, _, _)) in prefixes.iter().enumerate() {
        for (pb, i, j) in &prefixes[a + 1..] {
            if pb.prefix != pa.prefix && covers(pa, pb) {
                report(
                    pb.route.clone(),
                    format!("{} of prefix {}", pb.name, pb.prefix),
                    format!("{} of prefix {} on {}", pa.name, pa.prefix, pa.route),
                    format!("spec.http[{i}].match[{j}]"),
                );
            }
        }
    }
    let tcp: Vec<Vec<String>> = vs
        .tcp
        .iter()
        .map(|r| r.match_.iter().map(json).collect())
        .collect();
    for (i, j, dup) in l4_duplicates(&tcp) {
        report(
            format!("#{i}"),
            format!("#{j}"),
            format!("#{dup}"),
            format!("spec.tcp[{i}].match[{j}]"),
        );
    }
    let tls: Vec<Vec<String>> = vs
        .tls
        .iter()
        .map(|r| r.match_.iter().map(json).collect())
        .collect();
    for (i, j, dup) in l4_duplicates(&tls) {
        report(
            format!("#{i}"),
            format!("#{j}"),
            format!("#{dup}"),
            format!("spec.tls[{i}].match[{j}]"),
        );
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// (rule, match, earlier rule) for each TCP/TLS match identical to an earlier rule's.
fn l4_duplicates(rules: &[Vec<String>]) -> Vec<(usize, usize, usize)> {
    let mut seen: BTreeMap<&String, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        for (j, k) in rule.iter().enumerate() {
            match seen.get(k) {
                Some(&dup) => out.push((i, j, dup)),
                None => {
                    seen.insert(k, i);
                }
            }
        }
    }
    out
}

/// IST0128 / IST0129: SIMPLE or MUTUAL origination that verifies nothing.
fn ca_certificates(r: &Resource, out: &mut Vec<Message>) {
    let Spec::DestinationRule(dr) = &r.spec else {
        return;
    };
    let origin = Origin::of(r);
    let host = weft_api::resolve_host(&dr.host, &r.meta.namespace, "cluster.local");
    let unverified = |t: &weft_api::ClientTlsSettings| {
        matches!(t.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual)
            && t.ca_certificates.is_empty()
    };
    let mode = |m: ClientTlsMode| match m {
        ClientTlsMode::Simple => "SIMPLE",
        _ => "MUTUAL",
    };
    let id = format!("{}/{}", r.meta.namespace, r.meta.name);
    if let Some(tp) = &dr.traffic_policy {
        if let Some(t) = tp.tls.as_ref().filter(|t| unverified(t)) {
            out.push(Message::new(
                "IST0128",
                Level::Error,
                format!(
                    "DestinationRule {id} in namespace {} has TLS mode set to {} but no caCertificates are set to validate server identity for host: {host}",
                    r.meta.namespace,
                    mode(t.mode)
                ),
                &origin,
                Some("spec.trafficPolicy.tls.mode"),
            ));
        }
        for (i, pl) in tp.port_level_settings.iter().enumerate() {
            if let Some(t) = pl.tls.as_ref().filter(|t| unverified(t)) {
                let port = pl.port.as_ref().map_or(0, |p| p.number);
                out.push(Message::new(
                    "IST0129",
                    Level::Warning,
                    format!(
                        "DestinationRule {id} in namespace {} has TLS mode set to {} but no caCertificates are set to validate server identity for host: {host} at port number:{port}",
                        r.meta.namespace,
                        mode(t.mode)
                    ),
                    &origin,
                    Some(&format!("spec.trafficPolicy.portLevelSettings[{i}].tls.mode")),
                ));
            }
        }
    }
}

/// IST0113: a DestinationRule that turns mTLS off towards a namespace whose
/// PeerAuthentication requires it (STRICT), or on where it is DISABLEd; the requests fail.
/// (Istio 1.14 has the message but no analyzer for it since the v1alpha1 Policy went away;
/// Weft checks the namespace-wide PeerAuthentication, or the mesh-wide one in the root
/// namespace, of the DestinationRule's host.)
fn mtls_conflict(input: &Input, r: &Resource, out: &mut Vec<Message>) {
    use weft_api::security::MtlsMode;
    let Spec::DestinationRule(dr) = &r.spec else {
        return;
    };
    let Some(tls) = dr.traffic_policy.as_ref().and_then(|t| t.tls.as_ref()) else {
        return;
    };
    let wants_mtls = match tls.mode {
        ClientTlsMode::IstioMutual => true,
        ClientTlsMode::Disable => false,
        _ => return,
    };
    let host = weft_api::resolve_host(&dr.host, &r.meta.namespace, "cluster.local");
    // The host's namespace: `name.NS.svc.cluster.local`.
    let Some(ns) = host
        .strip_suffix(".svc.cluster.local")
        .and_then(|h| h.split_once('.'))
        .map(|(_, ns)| ns.to_string())
    else {
        return;
    };
    let root = input.mesh.root_namespace.as_str();
    let policy = |namespace: &str| {
        input.resources.iter().find_map(|p| match &p.spec {
            Spec::PeerAuthentication(pa)
                if p.meta.namespace == namespace && pa.selector.is_none() =>
            {
                let mode = pa.mtls.as_ref().map(|m| m.mode).unwrap_or(MtlsMode::Unset);
                (mode != MtlsMode::Unset).then_some((p, mode))
            }
            _ => None,
        })
    };
    let Some((pa, mode)) = policy(&ns).or_else(|| policy(root)) else {
        return;
    };
    let (conflict, said) = match (wants_mtls, mode) {
        (false, MtlsMode::Strict) => (true, "STRICT"),
        (true, MtlsMode::Disable) => (true, "DISABLE"),
        _ => (false, ""),
    };
    if conflict {
        out.push(Message::new(
            "IST0113",
            Level::Error,
            format!(
                "A DestinationRule and Policy are in conflict with regards to mTLS for host {host}. The DestinationRule \"{}/{}\" specifies that mTLS must be {wants_mtls} but the Policy object \"{}/{}\" specifies {said}.",
                r.meta.namespace, r.meta.name, pa.meta.namespace, pa.meta.name
            ),
            &Origin::of(r),
            Some("spec.trafficPolicy.tls.mode"),
        ));
    }
}
