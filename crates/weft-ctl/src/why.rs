//! `weft why --from POD [-X METHOD] [-H 'k: v'] URL` (or `tcp://HOST:PORT`): what the sidecars
//! would do with a request, with no traffic sent. The host is resolved as the client pod's app
//! resolves it (the pod's hosts file); the client's proxy explains the outbound side (`POST
//! /why` on its admin port: its own listener, chain, route and cluster selection on its current
//! snapshot), and when it forwards to a pod of the mesh, that pod's proxy explains the inbound
//! side with the client's SPIFFE identity as the peer, as the mTLS handshake would present it.

use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weft_up::state::PodState;

use crate::error::CtlError;
use crate::target::Mesh;

/// What to explain.
#[derive(Debug, Clone)]
pub struct Question {
    /// The client pod.
    pub from: String,
    pub method: String,
    /// `http://HOST[:PORT][/PATH]` or `tcp://HOST:PORT`.
    pub url: String,
    /// `-H 'name: value'`.
    pub headers: Vec<String>,
}

/// One stage of a proxy's explanation (the proxy's `/why` answer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub stage: String,
    pub decision: String,
    #[serde(default)]
    pub details: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointView {
    pub address: String,
    pub weight: u32,
    pub health: String,
    pub tls: String,
    #[serde(default)]
    pub mtls: bool,
}

/// A proxy's explanation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Explanation {
    pub steps: Vec<Step>,
    pub outcome: String,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub clusters: Vec<(String, u32)>,
    #[serde(default)]
    pub endpoints: Vec<EndpointView>,
}

/// One side: the pod whose proxy explained, and its explanation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Side {
    pub pod: String,
    pub direction: &'static str,
    pub explanation: Explanation,
}

/// The whole answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Answer {
    /// `GET http://reviews:9080/ (10.96.0.12:9080)`.
    pub request: String,
    pub client: Side,
    /// The server pod's inbound side, when the request reaches a pod of the mesh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<Side>,
    /// The end result in one line.
    pub verdict: String,
}

/// A parsed URL.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    tcp: bool,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, CtlError> {
    let bad = |why: &str| {
        CtlError::Usage(format!(
            "{url:?}: {why}; give http://HOST[:PORT]/PATH or tcp://HOST:PORT"
        ))
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    let tcp = match uri.scheme_str() {
        Some("http") => false,
        Some("tcp") => true,
        Some("https") => {
            return Err(bad(
                "the app's own TLS is opaque to its sidecar (ask about tcp://HOST:443, or about http:// when the sidecar originates TLS)",
            ));
        }
        _ => return Err(bad("the scheme must be http or tcp")),
    };
    let host = uri.host().ok_or_else(|| bad("no host"))?.to_string();
    let port = match (uri.port_u16(), tcp) {
        (Some(p), _) => p,
        (None, false) => 80,
        (None, true) => return Err(bad("a tcp:// target needs a port")),
    };
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    Ok(Target {
        tcp,
        host,
        port,
        path,
    })
}

/// `name: value` headers as curl's `-H` takes them.
fn parse_headers(headers: &[String]) -> Result<Vec<(String, String)>, CtlError> {
    headers
        .iter()
        .map(|h| {
            let (k, v) = h.split_once(':').ok_or_else(|| {
                CtlError::Usage(format!("header {h:?}: write it as 'name: value'"))
            })?;
            let k = k.trim();
            if k.is_empty() || http::HeaderName::from_bytes(k.as_bytes()).is_err() {
                return Err(CtlError::Usage(format!(
                    "header {h:?}: {k:?} is not a header name"
                )));
            }
            Ok((k.to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect()
}

/// The address `host` has in a hosts file's text (`IP name name…` lines).
fn lookup_hosts(text: &str, host: &str) -> Option<IpAddr> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .find_map(|l| {
            let mut words = l.split_whitespace();
            let ip: IpAddr = words.next()?.parse().ok()?;
            words.any(|w| w.eq_ignore_ascii_case(host)).then_some(ip)
        })
}

/// Resolves `host` as the app in `pod` would: an address as it is, a name from the pod's
/// hosts file.
fn resolve(pod: &PodState, host: &str) -> Result<IpAddr, CtlError> {
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    let path = weft_up::net::hosts_path(&pod.ns);
    let text = std::fs::read_to_string(&path).map_err(|e| CtlError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    lookup_hosts(&text, host).ok_or_else(|| {
        CtlError::Usage(format!(
            "{host:?} does not resolve in pod {} (not in {}): use a service name of the mesh or an address",
            pod.name,
            path.display()
        ))
    })
}

fn ask(mesh: &Mesh, pod: &str, probe: &serde_json::Value) -> Result<Explanation, CtlError> {
    let body = serde_json::to_vec(probe).map_err(|e| CtlError::Usage(e.to_string()))?;
    let a = mesh.admin_with(Some(pod), http::Method::POST, "/why", Bytes::from(body))?;
    if a.status != 200 {
        return Err(CtlError::Status {
            what: format!("{pod}'s proxy (/why)"),
            status: a.status,
            body: a.text(),
        });
    }
    serde_json::from_slice(&a.body).map_err(|e| CtlError::Decode {
        what: format!("{pod}'s /why answer"),
        reason: e.to_string(),
    })
}

/// Asks the client's proxy, then the server's.
pub fn why(mesh: &Mesh, q: &Question) -> Result<Answer, CtlError> {
    mesh.require_up("why")?;
    let client = mesh.pod(&q.from)?.clone();
    if !client.sidecar {
        return Err(CtlError::NoSidecar(client.name));
    }
    let target = parse_url(&q.url)?;
    let headers = parse_headers(&q.headers)?;
    let ip = resolve(&client, &target.host)?;
    let dst = SocketAddr::new(ip, target.port);
    // What curl sends as Host: the port only when it is not the scheme's.
    let authority = if target.port == 80 {
        target.host.clone()
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let method = q.method.to_ascii_uppercase();
    let outbound = ask(
        mesh,
        &client.name,
        &serde_json::json!({
            "direction": "outbound",
            "dst": dst,
            "tcp": target.tcp,
            "method": method,
            "authority": authority,
            "path": target.path,
            "headers": headers,
        }),
    )?;
    let request = if target.tcp {
        format!("tcp://{}:{} ({dst})", target.host, target.port)
    } else {
        format!("{method} http://{authority}{} ({dst})", target.path)
    };
    // Where the connection goes next: the first endpoint of the chosen cluster, or the
    // original destination for passthrough.
    let next = match outbound.outcome.as_str() {
        "forwarded" => outbound
            .endpoints
            .first()
            .map(|e| (e.address.clone(), e.mtls)),
        "passthrough" => Some((dst.to_string(), false)),
        _ => None,
    };
    let mut server = None;
    let verdict = match next {
        None => match outbound.status {
            Some(s) => format!("{} answers {s} itself ({})", client.name, outbound.outcome),
            None => format!("{}: {}", client.name, outbound.outcome),
        },
        Some((addr, mtls)) => {
            let pod = addr.parse::<SocketAddr>().ok().and_then(|a| {
                mesh.pods()
                    .iter()
                    .find(|p| IpAddr::V4(p.ip) == a.ip())
                    .cloned()
            });
            match pod {
                Some(p) if p.sidecar => {
                    let inbound = ask(
                        mesh,
                        &p.name,
                        &serde_json::json!({
                            "direction": "inbound",
                            "dst": addr,
                            "tcp": target.tcp,
                            "method": method,
                            "authority": authority,
                            "path": target.path,
                            "headers": headers,
                            "principal": if mtls { client.identity.clone() } else { None },
                            "source": SocketAddr::new(IpAddr::V4(client.ip), 0),
                        }),
                    )?;
                    let v = match (inbound.outcome.as_str(), inbound.status) {
                        ("forwarded" | "passthrough", _) => {
                            let others = outbound.endpoints.len().saturating_sub(1);
                            if others == 0 {
                                format!("reaches {}'s app at {addr}", p.name)
                            } else {
                                // The balancer picks one; the first stands for the others.
                                format!(
                                    "reaches {}'s app at {addr} (or one of {others} other endpoint(s) of the cluster)",
                                    p.name
                                )
                            }
                        }
                        (o, Some(s)) => format!("{} answers {s} ({o})", p.name),
                        (o, None) => format!("{}: {o}", p.name),
                    };
                    server = Some(Side {
                        pod: p.name.clone(),
                        direction: "inbound",
                        explanation: inbound,
                    });
                    v
                }
                Some(p) => format!("reaches {} at {addr} (no sidecar)", p.name),
                None => format!("leaves the mesh to {addr}"),
            }
        }
    };
    Ok(Answer {
        request,
        client: Side {
            pod: client.name.clone(),
            direction: "outbound",
            explanation: outbound,
        },
        server,
        verdict,
    })
}

fn render_side(out: &mut String, side: &Side) {
    let _ = writeln!(out, "{} ({}):", side.pod, side.direction);
    let width = side
        .explanation
        .steps
        .iter()
        .map(|s| s.stage.len())
        .max()
        .unwrap_or(0);
    for s in &side.explanation.steps {
        let _ = writeln!(out, "  {:width$}  {}", s.stage, s.decision);
        for d in &s.details {
            let _ = writeln!(out, "  {:width$}    {d}", "");
        }
    }
    for e in &side.explanation.endpoints {
        let _ = writeln!(
            out,
            "  {:width$}  {} ({}, weight {}): {}",
            "endpoint", e.address, e.health, e.weight, e.tls
        );
    }
}

/// The answer as text: each side's stages, then the verdict.
pub fn render(a: &Answer) -> String {
    let mut out = format!("{}\n", a.request);
    render_side(&mut out, &a.client);
    if let Some(s) = &a.server {
        render_side(&mut out, s);
    }
    let _ = writeln!(out, "=> {}", a.verdict);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_curl_reads_them() {
        assert_eq!(
            parse_url("http://reviews:9080/reviews/0?x=1").expect("url"),
            Target {
                tcp: false,
                host: "reviews".into(),
                port: 9080,
                path: "/reviews/0?x=1".into()
            }
        );
        let t = parse_url("http://details").expect("url");
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        assert!(parse_url("tcp://db:5432").expect("tcp").tcp);
        for bad in ["tcp://db", "https://x/", "ftp://x/", "not a url"] {
            assert!(
                matches!(parse_url(bad), Err(CtlError::Usage(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn headers_and_hosts() {
        assert_eq!(
            parse_headers(&["End-User: jason".into()]).expect("header"),
            vec![("end-user".to_string(), "jason".to_string())]
        );
        assert!(parse_headers(&["no colon".into()]).is_err());
        assert!(parse_headers(&[": v".into()]).is_err());
        let hosts = "# weft up\n10.42.0.1 node\n10.96.0.3 reviews reviews.default reviews.default.svc.cluster.local\n";
        assert_eq!(
            lookup_hosts(hosts, "reviews.default"),
            Some("10.96.0.3".parse().expect("ip"))
        );
        assert_eq!(lookup_hosts(hosts, "ratings"), None);
    }

    #[test]
    fn rendering_lists_each_stage_and_the_verdict() {
        let side = |pod: &str, direction, steps: Vec<Step>| Side {
            pod: pod.into(),
            direction,
            explanation: Explanation {
                steps,
                outcome: "forwarded".into(),
                status: None,
                clusters: vec![],
                endpoints: vec![],
            },
        };
        let a = Answer {
            request: "GET http://reviews:9080/ (10.96.0.3:9080)".into(),
            client: side(
                "productpage",
                "outbound",
                vec![Step {
                    stage: "route".into(),
                    decision: "virtual host reviews...".into(),
                    details: vec!["r0 does not match".into()],
                }],
            ),
            server: Some(side("reviews-v2", "inbound", vec![])),
            verdict: "reaches reviews-v2's app at 10.42.0.13:9080".into(),
        };
        assert_eq!(
            render(&a),
            "GET http://reviews:9080/ (10.96.0.3:9080)\nproductpage (outbound):\n  route  virtual host reviews...\n           r0 does not match\nreviews-v2 (inbound):\n=> reaches reviews-v2's app at 10.42.0.13:9080\n"
        );
    }
}
