//! `weft why`: what this proxy would do with a request or connection, computed without sending
//! anything by the data path's own selection code on the snapshot in force (listener hand-off,
//! filter-chain selection, network and HTTP RBAC, virtual host and route matching, route
//! policies, clusters and their endpoints' health and TLS). Served on the admin port as
//! `POST /why` with a [`Probe`]; `weft why` asks the client's proxy (outbound) and then the
//! server's (inbound) and prints both.

use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::snapshot::filter::{AbortWith, HttpFilter};
use crate::snapshot::rbac::{Action as RbacAction, Attrs, Engine, HttpAttrs};
use crate::snapshot::{
    Action, Chain, ClusterKind, Listener, NetworkFilter, RequestInfo, RouteRef, RouteTable,
    Snapshot,
};

/// A request (or a TCP connection) to explain.
#[derive(Debug, Clone, Deserialize)]
pub struct Probe {
    /// `outbound`: the app of this pod connects to `dst`; `inbound`: a client connects to this
    /// pod's `dst`.
    pub direction: String,
    pub dst: SocketAddr,
    /// A TCP connection rather than an HTTP request.
    #[serde(default)]
    pub tcp: bool,
    #[serde(default = "get")]
    pub method: String,
    /// The Host header (outbound default: the URL's host and port).
    #[serde(default)]
    pub authority: String,
    #[serde(default = "slash")]
    pub path: String,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Inbound: the client's SPIFFE ID when it comes over the mesh's mTLS.
    #[serde(default)]
    pub principal: Option<String>,
    /// Inbound: the client's address.
    #[serde(default)]
    pub source: Option<SocketAddr>,
}

fn get() -> String {
    "GET".into()
}

fn slash() -> String {
    "/".into()
}

/// One stage of the explanation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Step {
    pub stage: String,
    pub decision: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

/// An endpoint the request may go to.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EndpointView {
    pub address: String,
    pub weight: u32,
    /// `healthy`, or `ejected` (outlier detection).
    pub health: String,
    /// `mTLS SNI … expecting …`, `TLS …`, or `plaintext`.
    pub tls: String,
    /// Whether the connection is the mesh's mutual TLS (ISTIO_MUTUAL).
    pub mtls: bool,
}

/// What the proxy does.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Explanation {
    pub steps: Vec<Step>,
    /// `forwarded` (to the clusters below), `answered` (locally, with `status`), `denied`,
    /// `no route`, `no listener`, `passthrough`.
    pub outcome: String,
    /// Local answer's status (fault abort, redirect, direct response, RBAC deny, no route).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Candidate clusters with their weights.
    pub clusters: Vec<(String, u32)>,
    /// The endpoints of the (first) cluster.
    pub endpoints: Vec<EndpointView>,
}

impl Explanation {
    fn step(&mut self, stage: &str, decision: String, details: Vec<String>) {
        self.steps.push(Step {
            stage: stage.to_string(),
            decision,
            details,
        });
    }
}

fn chain_match(c: &Chain) -> String {
    let m = &c.matcher;
    let mut d = Vec::new();
    if let Some(p) = m.destination_port {
        d.push(format!("port {p}"));
    }
    if !m.prefix_ranges.is_empty() {
        d.push(format!(
            "addresses {}",
            m.prefix_ranges
                .iter()
                .map(|(ip, l)| format!("{ip}/{l}"))
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if let Some(t) = &m.transport {
        d.push(format!("transport {t}"));
    }
    if !m.alpns.is_empty() {
        d.push(format!("ALPN {}", m.alpns.join(",")));
    }
    if !m.server_names.is_empty() {
        d.push(format!("SNI {}", m.server_names.join(",")));
    }
    if d.is_empty() {
        "any connection".into()
    } else {
        d.join(", ")
    }
}

fn percent(f: &crate::snapshot::filter::Fraction) -> String {
    format!("{}%", f64::from(f.0) / 10_000.0)
}

fn engine_decision(e: &Engine, a: &Attrs) -> (bool, String) {
    let d = e.evaluate(a);
    let what = match (e.action, d.policy) {
        (RbacAction::Allow, Some(p)) => format!("allowed: ALLOW policy {p} matches"),
        (RbacAction::Allow, None) if e.is_empty() => {
            "denied: an ALLOW filter with no policies allows nothing".into()
        }
        (RbacAction::Allow, None) => {
            format!("denied: none of the {} ALLOW policies matches", e.len())
        }
        (RbacAction::Deny, Some(p)) => format!("denied: DENY policy {p} matches"),
        (RbacAction::Deny, None) => {
            format!("allowed: none of the {} DENY policies matches", e.len())
        }
        (RbacAction::Log, Some(p)) => format!("audited: AUDIT policy {p} matches"),
        (RbacAction::Log, None) => "not audited: no AUDIT policy matches".into(),
    };
    (d.allowed, what)
}

fn listener_for<'s>(
    snap: &'s Snapshot,
    probe: &Probe,
    out: &mut Explanation,
) -> Option<&'s Arc<Listener>> {
    if probe.direction == "inbound" {
        let l = snap.listener("virtualInbound");
        out.step(
            "listener",
            match l {
                Some(_) => "virtualInbound (15006): the connection was captured inbound".into(),
                None => "no virtualInbound listener: inbound traffic is not captured".into(),
            },
            vec![],
        );
        return l;
    }
    match snap.outbound_listener(probe.dst) {
        Some(l) => {
            out.step(
                "listener",
                format!(
                    "{}: virtualOutbound (15001) hands the connection to {dst} over",
                    l.name,
                    dst = probe.dst
                ),
                vec![],
            );
            Some(l)
        }
        None => {
            let l = snap.listener("virtualOutbound");
            out.step(
                "listener",
                format!(
                    "virtualOutbound (15001) itself: no listener for {} or 0.0.0.0:{}",
                    probe.dst,
                    probe.dst.port()
                ),
                vec![],
            );
            l
        }
    }
}

/// Explains `probe` on `snap`.
pub fn explain(snap: &Snapshot, probe: &Probe) -> Explanation {
    let mut out = Explanation::default();
    let Some(listener) = listener_for(snap, probe, &mut out) else {
        out.outcome = "no listener".into();
        return out;
    };
    let inbound = probe.direction == "inbound";
    let mtls = inbound && probe.principal.is_some();
    let (transport, alpns): (&str, Vec<String>) = match (mtls, probe.tcp) {
        (true, false) => ("tls", vec!["istio-http/1.1".into(), "istio".into()]),
        (true, true) => ("tls", vec!["istio-peer-exchange".into(), "istio".into()]),
        (false, false) => ("raw_buffer", vec!["http/1.1".into()]),
        (false, true) => ("raw_buffer", vec![]),
    };
    let Some(chain) = listener.select(probe.dst, None, transport, &alpns) else {
        out.step(
            "filter chain",
            format!(
                "none of {}'s {} chains matches ({transport}{}): the connection is closed",
                listener.name,
                listener.chains.len(),
                if alpns.is_empty() {
                    String::new()
                } else {
                    format!(", ALPN {}", alpns.join(","))
                }
            ),
            vec![],
        );
        out.outcome = "no filter chain".into();
        return out;
    };
    out.step(
        "filter chain",
        format!(
            "{} ({})",
            if chain.name.is_empty() {
                "(unnamed)"
            } else {
                &chain.name
            },
            chain_match(chain)
        ),
        vec![if chain.tls.is_some() {
            format!(
                "terminates TLS: the client must present a mesh certificate{}",
                probe
                    .principal
                    .as_ref()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            )
        } else {
            "plaintext".into()
        }],
    );
    let headers = probe_headers(probe);
    let peer = probe
        .source
        .unwrap_or_else(|| SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0));
    // As the data path has it from the peer certificate: the whole SPIFFE URI.
    let principal = probe.principal.as_deref();
    let authority = if probe.authority.is_empty() {
        probe.dst.to_string()
    } else {
        probe.authority.clone()
    };
    for f in &chain.rbac {
        let attrs = Attrs {
            local: probe.dst,
            peer,
            remote_ip: peer.ip(),
            principal,
            sni: "",
            http: None,
            sec: None,
        };
        if let Some(e) = &f.enforce {
            let (allowed, what) = engine_decision(e, &attrs);
            out.step("network RBAC", what, vec![]);
            if !allowed {
                out.outcome = "denied".into();
                return out;
            }
        }
    }
    match &chain.filter {
        NetworkFilter::Tcp(t) => {
            let clusters: Vec<(String, u32)> = if t.weighted.len() > 1 {
                t.weighted
                    .iter()
                    .map(|(c, w)| (c.to_string(), *w))
                    .collect()
            } else {
                vec![(t.cluster.to_string(), 100)]
            };
            out.step(
                "tcp proxy",
                format!(
                    "to {}",
                    clusters
                        .iter()
                        .map(|(c, w)| if clusters.len() > 1 {
                            format!("{c} ({w})")
                        } else {
                            c.clone()
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                t.access_log
                    .iter()
                    .map(|a| format!("access log: {}", a.describe()))
                    .collect(),
            );
            out.clusters = clusters;
        }
        NetworkFilter::Http(hcm) => {
            let table: Option<Arc<RouteTable>> = match &hcm.routes {
                RouteRef::Inline(t) => Some(t.clone()),
                RouteRef::Rds(name) => snap.routes.get(name).cloned(),
            };
            let info = RequestInfo {
                method: &probe.method,
                authority: &authority,
                scheme: "http",
                path: &probe.path,
                headers: &headers,
            };
            let route_name = table.as_ref().map(|t| t.name.clone()).unwrap_or_default();
            let vhost = table.as_ref().and_then(|t| t.vhost(&authority));
            let route = vhost.and_then(|vh| vh.routes.iter().position(|r| r.matches(&info)));
            // The HTTP filters, in order, as the connection manager runs them: jwt_authn
            // verifies the token with the keys the proxy holds, istio_authn derives
            // request.auth from it, and RBAC decides on what they found.
            let mut sec = crate::authn::SecurityCtx::default();
            let mut parts = probe_parts(probe, &headers);
            for f in &hcm.filters {
                let attrs = Attrs {
                    local: probe.dst,
                    peer,
                    remote_ip: peer.ip(),
                    principal,
                    sni: "",
                    // The headers as the earlier filters left them (jwt_authn removes the
                    // token unless forwardOriginalToken, and may add payload headers).
                    http: Some(HttpAttrs {
                        method: &probe.method,
                        authority: &authority,
                        scheme: "http",
                        path: &probe.path,
                        headers: &parts.headers,
                    }),
                    sec: Some(&sec),
                };
                match f {
                    HttpFilter::Rbac(r) => {
                        if let Some(e) = &r.enforce {
                            let (allowed, what) = engine_decision(e, &attrs);
                            out.step("RBAC", what, vec![]);
                            if !allowed {
                                out.outcome = "denied".into();
                                out.status = Some(403);
                                return out;
                            }
                        }
                        if let Some(e) = &r.shadow {
                            let (_, what) = engine_decision(e, &attrs);
                            out.step("RBAC (shadow, not enforced)", what, vec![]);
                        }
                    }
                    HttpFilter::JwtAuthn(j) => {
                        match crate::http::jwt::authenticate(j, &mut parts, &mut sec) {
                            Err(denied) => {
                                out.step(
                                    "JWT",
                                    format!("denied: {}", denied.body.trim()),
                                    vec![denied.details.clone()],
                                );
                                out.outcome = "denied".into();
                                out.status = Some(denied.status.as_u16());
                                return out;
                            }
                            Ok(()) => out.step(
                                "JWT",
                                if sec.jwt_payloads.is_empty() {
                                    "no token to verify: the request goes on without one".into()
                                } else {
                                    format!(
                                        "token verified (issuer {})",
                                        sec.jwt_payloads
                                            .iter()
                                            .map(|(i, _)| i.to_string())
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    )
                                },
                                vec![],
                            ),
                        }
                    }
                    HttpFilter::IstioAuthn(a) => {
                        crate::http::jwt::istio_authn(a, &mut sec);
                        if let Some(p) = sec.auth.as_ref().and_then(|a| a.principal.as_ref()) {
                            out.step("request principal", p.clone(), vec![]);
                        }
                    }
                    HttpFilter::ExtAuthz(_) => out.step(
                        "ext_authz",
                        "the external authorizer is asked (not by `why`): its answer decides"
                            .into(),
                        vec![],
                    ),
                    _ => {}
                }
            }
            let Some(vh) = vhost else {
                out.step(
                    "route",
                    format!(
                        "route table {route_name:?} has no virtual host for {authority:?}: 404"
                    ),
                    vec![],
                );
                out.outcome = "no route".into();
                out.status = Some(404);
                return out;
            };
            let skipped: Vec<String> = vh
                .routes
                .iter()
                .take(route.unwrap_or(vh.routes.len()))
                .enumerate()
                .map(|(i, r)| {
                    format!(
                        "route {} does not match: {}",
                        route_label(i, r),
                        r.mismatch(&info).unwrap_or_default()
                    )
                })
                .collect();
            let Some(route) = route.map(|i| &vh.routes[i]) else {
                out.step(
                    "route",
                    format!(
                        "virtual host {} in route table {route_name:?}: no route matches: 404",
                        vh.name
                    ),
                    skipped,
                );
                out.outcome = "no route".into();
                out.status = Some(404);
                return out;
            };
            out.step(
                "route",
                format!(
                    "virtual host {} in route table {route_name:?}, route {}",
                    vh.name,
                    route_label(skipped.len(), route)
                ),
                skipped,
            );
            let mut policy = Vec::new();
            if !route.timeout.is_zero() {
                policy.push(format!("timeout {:?}", route.timeout));
            }
            if let Some(r) = &route.retry {
                policy.push(format!(
                    "retries: {} on {}{}{}",
                    r.num_retries,
                    r.on.conditions(),
                    if r.status_codes.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (status {})",
                            r.status_codes
                                .iter()
                                .map(u16::to_string)
                                .collect::<Vec<_>>()
                                .join(",")
                        )
                    },
                    r.per_try_timeout
                        .map(|t| format!(", {t:?} per try"))
                        .unwrap_or_default()
                ));
            }
            for (c, f) in &route.mirrors {
                policy.push(format!("mirrored to {c} ({})", percent(f)));
            }
            if let Some(p) = &route.prefix_rewrite {
                policy.push(format!("path rewritten to {p}"));
            }
            if let Some(h) = &route.host_rewrite {
                policy.push(format!("authority rewritten to {h}"));
            }
            if !policy.is_empty() {
                out.step("route policy", policy.join("; "), vec![]);
            }
            if let Some(fault) = &route.per_filter.fault {
                if let Some((d, f)) = &fault.delay {
                    out.step(
                        "fault",
                        format!("delay {d:?} for {} of requests", percent(f)),
                        vec![],
                    );
                }
                if let Some((a, f)) = &fault.abort {
                    let status = match a {
                        AbortWith::Http(s) => *s,
                        AbortWith::Grpc(_) => 200,
                    };
                    out.step(
                        "fault",
                        format!(
                            "abort with {} for {} of requests",
                            match a {
                                AbortWith::Http(s) => format!("HTTP {s}"),
                                AbortWith::Grpc(g) => format!("gRPC status {g}"),
                            },
                            percent(f)
                        ),
                        vec![],
                    );
                    if f.0 >= crate::snapshot::filter::Fraction::ALL.0 {
                        out.outcome = "answered".into();
                        out.status = Some(status);
                        return out;
                    }
                }
            }
            match &route.action {
                Action::Cluster(c) => out.clusters = vec![(c.to_string(), 100)],
                Action::Weighted(ws) => {
                    out.clusters = ws
                        .iter()
                        .map(|w| (w.cluster.to_string(), w.weight))
                        .collect()
                }
                Action::Direct { status, .. } => {
                    out.step("answer", format!("direct response {status}"), vec![]);
                    out.outcome = "answered".into();
                    out.status = Some(*status);
                    return out;
                }
                Action::Redirect(r) => {
                    out.step(
                        "answer",
                        format!(
                            "redirect {} to {}{}{}",
                            r.status,
                            r.host.clone().unwrap_or_default(),
                            r.port.map(|p| format!(":{p}")).unwrap_or_default(),
                            r.path.clone().unwrap_or_default()
                        ),
                        vec![],
                    );
                    out.outcome = "answered".into();
                    out.status = Some(r.status);
                    return out;
                }
            }
            let mut telemetry: Vec<String> = hcm
                .access_log
                .iter()
                .map(|a| format!("access log: {}", a.describe()))
                .collect();
            if hcm.tracing.is_some() {
                telemetry.push("a span is reported (tracing configured)".into());
            }
            telemetry.push(format!(
                "istio_requests_total with reporter={}",
                if inbound { "destination" } else { "source" }
            ));
            out.step(
                "forward",
                out.clusters
                    .iter()
                    .map(|(c, w)| {
                        if out.clusters.len() > 1 {
                            format!("{c} (weight {w})")
                        } else {
                            c.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                telemetry,
            );
        }
    }
    out.outcome = "forwarded".into();
    if let Some((first, _)) = out.clusters.first().cloned() {
        cluster(snap, &first, &mut out);
    }
    out
}

fn cluster(snap: &Snapshot, name: &str, out: &mut Explanation) {
    let Some(c) = snap.clusters.get(name) else {
        out.step("cluster", format!("{name} is not known: 503 (NC)"), vec![]);
        out.outcome = "no cluster".into();
        out.status = Some(503);
        return;
    };
    if c.kind == ClusterKind::OriginalDst {
        out.step(
            "cluster",
            format!("{name}: to the connection's original destination"),
            vec![],
        );
        if c.fallthrough.is_some() {
            out.outcome = "passthrough".into();
        }
        return;
    }
    out.endpoints = c
        .endpoints
        .iter()
        .map(|e| EndpointView {
            address: e.addr.to_string(),
            weight: e.weight,
            health: if c.outlier.is_some() && e.host.ejected() {
                "ejected".into()
            } else {
                "healthy".into()
            },
            mtls: e
                .tls
                .as_ref()
                .or(c.default_tls.as_ref())
                .is_some_and(|t| t.sni.starts_with("outbound_.")),
            tls: match e.tls.as_ref().or(c.default_tls.as_ref()) {
                Some(t) if t.sni.starts_with("outbound_.") => format!(
                    "mTLS (ISTIO_MUTUAL), SNI {}, expecting {}",
                    t.sni,
                    if t.sans.is_empty() {
                        "any mesh identity".to_string()
                    } else {
                        t.sans.join(" or ")
                    }
                ),
                Some(t) => format!("TLS, SNI {}", t.sni),
                None => "plaintext".into(),
            },
        })
        .collect();
    let healthy = out
        .endpoints
        .iter()
        .filter(|e| e.health == "healthy")
        .count();
    out.step(
        "cluster",
        format!(
            "{name}: {} endpoint(s), {healthy} healthy; {:?} load balancing",
            out.endpoints.len(),
            c.lb
        ),
        vec![],
    );
    if out.endpoints.is_empty() {
        out.outcome = "no healthy upstream".into();
        out.status = Some(503);
    }
}

/// A route as the explanation names it: `#N` in its virtual host, and its name when it has one.
fn route_label(index: usize, r: &crate::snapshot::Route) -> String {
    if r.name.is_empty() {
        format!("#{index}")
    } else {
        format!("#{index} {}", r.name)
    }
}

/// The request as the HTTP filters see it.
fn probe_parts(p: &Probe, headers: &http::HeaderMap) -> http::request::Parts {
    let mut req = http::Request::new(());
    *req.method_mut() = http::Method::from_bytes(p.method.as_bytes()).unwrap_or_default();
    *req.uri_mut() = p.path.parse().unwrap_or_default();
    *req.headers_mut() = headers.clone();
    req.into_parts().0
}

fn probe_headers(p: &Probe) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    for (k, v) in &p.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.trim().as_bytes()),
            http::HeaderValue::from_str(v.trim()),
        ) {
            h.append(k, v);
        }
    }
    h
}
