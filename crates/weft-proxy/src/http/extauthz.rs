//! The external authorization calls (Envoy's `ext_authz`, Istio's CUSTOM action), made through
//! the proxy's own upstream pools to a cluster of the snapshot (mTLS to a sidecar'd authorizer
//! as any other call): the HTTP authorizer gets the request's head, the gRPC one an
//! `envoy.service.auth.v3.Authorization/Check` (tonic's client over [`ClusterChannel`]). A
//! denial is the authorizer's answer with flag `UAEX`; an authorizer that cannot be asked (down,
//! timed out, 5xx over HTTP) gets `status_on_error` unless the filter fails open.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::service::auth::v3::attribute_context;
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, check_response};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Version};

use super::Local;
use super::authz::FilterCtx;
use super::grpc::{ClusterChannel, call};
use super::router::Decorations;
use crate::Proxy;
use crate::authn::SecurityCtx;
use crate::conn::ConnInfo;
use crate::snapshot::Cluster;
use crate::snapshot::extauthz::{ExtAuthz, GrpcService, HttpService, Service};
use crate::snapshot::filter::HeaderOps;

const HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";

/// What the authorizer said.
#[derive(Debug, Default)]
struct Allowed {
    /// Set on the request, replacing.
    set: Vec<(HeaderName, HeaderValue)>,
    /// Appended to the request's.
    append: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
    /// Added to the response (name, value, replace).
    response: Vec<(HeaderName, HeaderValue, bool)>,
}

#[derive(Debug)]
enum Verdict {
    Allow(Allowed),
    Deny {
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: String,
    },
    /// The authorizer could not be asked; why.
    Error(String),
}

/// Whether the filter asks for this request: with `filter_enabled_metadata`, only when the
/// RBAC shadow engine it names recorded a matching policy.
fn enabled(f: &ExtAuthz, sec: &SecurityCtx) -> bool {
    match &f.enabled_by {
        None => true,
        Some(g) => sec
            .shadow_policy(&g.shadow_prefix)
            .is_some_and(|p| g.policy.matches(p)),
    }
}

impl FilterCtx<'_> {
    /// `envoy.filters.http.ext_authz` on one request.
    pub(super) async fn ext_authz(
        &mut self,
        f: &ExtAuthz,
        parts: &mut Parts,
        deco: &mut Decorations,
    ) -> Result<(), Local> {
        if !enabled(f, &self.sec) {
            f.stats.disabled.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let cluster = self.snap.clusters.get(&**f.service.cluster()).cloned();
        let verdict = match (cluster, &f.service) {
            (None, _) => Verdict::Error(format!("cluster {} does not exist", f.service.cluster())),
            (Some(c), Service::Http(h)) => {
                let call = http_check(h, self.proxy, self.conn, &c, parts, self.authority);
                timed(f, call).await
            }
            (Some(c), Service::Grpc(g)) => {
                let req = check_request(
                    self.conn,
                    super::own_uri(self.proxy).unwrap_or_default(),
                    Some(HttpView {
                        parts,
                        authority: self.authority,
                        scheme: self.scheme,
                    }),
                );
                let call = grpc_check(g, self.proxy, self.conn, &c, req);
                timed(f, call).await
            }
        };
        match verdict {
            Verdict::Allow(a) => {
                f.stats.ok.fetch_add(1, Ordering::Relaxed);
                for name in &a.remove {
                    parts.headers.remove(name);
                }
                for (name, value) in a.set {
                    parts.headers.insert(name, value);
                }
                for (name, value) in a.append {
                    parts.headers.append(name, value);
                }
                if !a.response.is_empty() {
                    deco.headers.push(HeaderOps {
                        add: a.response,
                        remove: Vec::new(),
                    });
                }
                Ok(())
            }
            Verdict::Deny {
                status,
                headers,
                body,
            } => {
                f.stats.denied.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target: "ext_authz", %status, "request denied by the external authorizer");
                Err(Local {
                    status,
                    flags: "UAEX",
                    details: Cow::Borrowed("ext_authz_denied"),
                    body,
                    headers,
                    grpc_status: None,
                })
            }
            Verdict::Error(why) => failed(f, &why).map_err(|status| Local {
                status,
                flags: "UAEX",
                details: Cow::Borrowed("ext_authz_error"),
                body: String::new(),
                headers: Vec::new(),
                grpc_status: None,
            }),
        }
    }
}

/// An authorizer that could not be asked: Ok when the filter fails open, else the status.
fn failed(f: &ExtAuthz, why: &str) -> Result<(), StatusCode> {
    f.stats.error.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(target: "ext_authz", cluster = %f.service.cluster(), error = %why, fail_open = f.fail_open, "the external authorizer could not be asked");
    if f.fail_open {
        f.stats.failure_mode_allowed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    } else {
        Err(f.status_on_error)
    }
}

/// The call under the filter's timeout (none when it is zero, as Envoy reads a zero timeout).
async fn timed(f: &ExtAuthz, call: impl Future<Output = Verdict>) -> Verdict {
    if f.service.timeout().is_zero() {
        return call.await;
    }
    match tokio::time::timeout(f.service.timeout(), call).await {
        Ok(v) => v,
        Err(_) => Verdict::Error(format!("no answer within {:?}", f.service.timeout())),
    }
}

/// The network ext_authz filter's verdict on a connection (`shadow`: what the chain's RBAC
/// shadow engines recorded): None to go on, else the termination details.
pub(crate) async fn check_connection(
    f: &ExtAuthz,
    conn: &ConnInfo,
    sec: &SecurityCtx,
    proxy: &Arc<Proxy>,
) -> Option<&'static str> {
    if !enabled(f, sec) {
        f.stats.disabled.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let Service::Grpc(g) = &f.service else {
        return failed(f, "a network ext_authz filter needs a gRPC authorizer")
            .err()
            .map(|_| "ext_authz_error");
    };
    let snap = proxy.snapshot.load_full();
    let verdict = match snap.clusters.get(&*g.cluster) {
        None => Verdict::Error(format!("cluster {} does not exist", g.cluster)),
        Some(c) => {
            let conn = Arc::new(conn.clone());
            let req = check_request(&conn, super::own_uri(proxy).unwrap_or_default(), None);
            timed(f, grpc_check(g, proxy, &conn, c, req)).await
        }
    };
    match verdict {
        Verdict::Allow(_) => {
            f.stats.ok.fetch_add(1, Ordering::Relaxed);
            None
        }
        Verdict::Deny { .. } => {
            f.stats.denied.fetch_add(1, Ordering::Relaxed);
            Some("ext_authz_denied")
        }
        Verdict::Error(why) => failed(f, &why).err().map(|_| "ext_authz_error"),
    }
}

/// The HTTP request as the check describes it.
struct HttpView<'a> {
    parts: &'a Parts,
    authority: &'a str,
    scheme: &'a str,
}

fn peer(addr: SocketAddr, principal: String) -> attribute_context::Peer {
    attribute_context::Peer {
        address: Some(core::Address {
            address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                address: addr.ip().to_string(),
                port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                    addr.port(),
                ))),
                ..Default::default()
            })),
        }),
        principal,
        ..Default::default()
    }
}

/// Envoy's `CheckRequest`: source and destination (address, SPIFFE ID) and, for HTTP, the
/// request's head with its headers (repeated ones joined by `,`, pseudo-headers included).
fn check_request(conn: &ConnInfo, own: String, http: Option<HttpView<'_>>) -> CheckRequest {
    let request = http.map(|v| {
        let mut headers: HashMap<String, String> = HashMap::new();
        for (name, value) in &v.parts.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            headers
                .entry(name.as_str().to_string())
                .and_modify(|e| {
                    e.push(',');
                    e.push_str(&value);
                })
                .or_insert_with(|| value.into_owned());
        }
        let path = v.parts.uri.path_and_query().map_or("/", |p| p.as_str());
        headers.insert(":authority".into(), v.authority.into());
        headers.insert(":method".into(), v.parts.method.as_str().into());
        headers.insert(":path".into(), path.into());
        headers.insert(":scheme".into(), v.scheme.into());
        let size = v
            .parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|l| l.to_str().ok()?.parse::<i64>().ok())
            .unwrap_or(-1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        attribute_context::Request {
            time: Some(envoy_types::pb::google::protobuf::Timestamp {
                seconds: now.as_secs() as i64,
                nanos: now.subsec_nanos() as i32,
            }),
            http: Some(attribute_context::HttpRequest {
                id: headers.get("x-request-id").cloned().unwrap_or_default(),
                method: v.parts.method.as_str().into(),
                path: path.into(),
                host: v.authority.into(),
                scheme: v.scheme.into(),
                protocol: match v.parts.version {
                    Version::HTTP_2 => "HTTP/2",
                    Version::HTTP_10 => "HTTP/1.0",
                    _ => "HTTP/1.1",
                }
                .into(),
                size,
                headers,
                ..Default::default()
            }),
        }
    });
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(peer(
                conn.remote,
                conn.peer_principal.as_deref().unwrap_or("").to_string(),
            )),
            destination: Some(peer(conn.original_dst, own)),
            request,
            ..Default::default()
        }),
    }
}

fn header_list<'a>(
    h: &'a HeaderMap,
    keep: impl Fn(&str) -> bool + 'a,
) -> impl Iterator<Item = (HeaderName, HeaderValue)> + 'a {
    h.iter()
        .filter(move |(n, _)| keep(n.as_str()))
        .map(|(n, v)| (n.clone(), v.clone()))
}

/// The HTTP authorizer: the request's method, `path_prefix` + path, `host`, `authorization`
/// and the allowed headers, no body.
async fn http_check(
    h: &HttpService,
    proxy: &Arc<Proxy>,
    conn: &Arc<ConnInfo>,
    cluster: &Arc<Cluster>,
    parts: &Parts,
    authority: &str,
) -> Verdict {
    let path = format!(
        "{}{}",
        h.path_prefix,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = match path.parse() {
        Ok(u) => u,
        Err(_) => return Verdict::Error(format!("bad check path {path:?}")),
    };
    let headers = req.headers_mut();
    for (name, value) in &parts.headers {
        if name != http::header::CONTENT_LENGTH
            && name != http::header::HOST
            && h.in_check(name.as_str())
        {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Ok(v) = HeaderValue::from_str(authority) {
        headers.insert(http::header::HOST, v);
    }
    for (name, value) in &h.headers_to_add {
        headers.insert(name.clone(), value.clone());
    }
    super::strip_hop_by_hop(headers);
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    let (check, ()) = req.into_parts();
    let h2 = cluster.protocol.h2_for(Version::HTTP_11);
    let (head, answer) = match call(proxy, conn, cluster, h2, authority, check, None).await {
        Ok(a) => a,
        Err(e) => return Verdict::Error(e),
    };
    let status = head.status;
    if status.is_server_error() {
        return Verdict::Error(format!("the authorizer answered {status}"));
    }
    if status == StatusCode::OK {
        let remove = head
            .headers
            .get_all(HEADERS_TO_REMOVE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        let h_ = &head.headers;
        let not_meta = |n: &str| n != HEADERS_TO_REMOVE;
        return Verdict::Allow(Allowed {
            set: header_list(h_, |n| not_meta(n) && h.upstream.matches(n)).collect(),
            append: header_list(h_, |n| not_meta(n) && h.upstream_append.matches(n)).collect(),
            remove,
            response: header_list(h_, |n| not_meta(n) && h.client_on_allow.matches(n))
                .map(|(n, v)| (n, v, false))
                .collect(),
        });
    }
    Verdict::Deny {
        status,
        headers: header_list(&head.headers, |n| !framing(n) && h.to_client_on_deny(n)).collect(),
        body: String::from_utf8_lossy(&answer.to_bytes()).into_owned(),
    }
}

/// Headers of the message framing: a denial is the proxy's own reply, and frames itself.
fn framing(name: &str) -> bool {
    matches!(
        name,
        "content-length" | "transfer-encoding" | "connection" | "keep-alive" | "upgrade" | "te"
    )
}

/// `HeaderValueOption`s of a gRPC answer: (name, value, append).
fn options(list: &[core::HeaderValueOption]) -> Vec<(HeaderName, HeaderValue, bool)> {
    list.iter()
        .filter_map(|o| {
            let h = o.header.as_ref()?;
            let name = HeaderName::from_bytes(h.key.as_bytes()).ok()?;
            let value = HeaderValue::from_str(&h.value).ok()?;
            #[allow(deprecated)]
            let append = o.append.as_ref().is_some_and(|b| b.value);
            Some((name, value, append))
        })
        .collect()
}

/// The gRPC authorizer: `Authorization/Check`; status OK allows.
async fn grpc_check(
    g: &GrpcService,
    proxy: &Arc<Proxy>,
    conn: &Arc<ConnInfo>,
    cluster: &Arc<Cluster>,
    req: CheckRequest,
) -> Verdict {
    let channel = ClusterChannel {
        proxy: proxy.clone(),
        conn: conn.clone(),
        cluster: cluster.clone(),
        authority: g.authority.as_str().into(),
    };
    let answer = match AuthorizationClient::new(channel).check(req).await {
        Ok(a) => a.into_inner(),
        Err(status) => return Verdict::Error(format!("Check failed: {status}")),
    };
    let code = answer.status.as_ref().map_or(0, |s| s.code);
    match answer.http_response {
        _ if code == 0 => {
            let mut allowed = Allowed::default();
            if let Some(check_response::HttpResponse::OkResponse(ok)) = &answer.http_response {
                for (name, value, append) in options(&ok.headers) {
                    if append {
                        allowed.append.push((name, value));
                    } else {
                        allowed.set.push((name, value));
                    }
                }
                allowed.remove = ok
                    .headers_to_remove
                    .iter()
                    .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                    .collect();
                allowed.response = options(&ok.response_headers_to_add)
                    .into_iter()
                    .map(|(n, v, append)| (n, v, !append))
                    .collect();
            }
            Verdict::Allow(allowed)
        }
        Some(check_response::HttpResponse::DeniedResponse(d)) => Verdict::Deny {
            status: d
                .status
                .as_ref()
                .and_then(|s| u16::try_from(s.code).ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::FORBIDDEN),
            headers: options(&d.headers)
                .into_iter()
                .filter(|(n, _, _)| !framing(n.as_str()))
                .map(|(n, v, _)| (n, v))
                .collect(),
            body: d.body,
        },
        _ => Verdict::Deny {
            status: StatusCode::FORBIDDEN,
            headers: Vec::new(),
            body: String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_describes_the_request_as_envoy_does() {
        let conn = ConnInfo {
            direction: crate::snapshot::Direction::Inbound,
            original_dst: "10.0.0.2:8000".parse().unwrap(),
            remote: "10.0.0.1:40000".parse().unwrap(),
            peer_principal: Some("spiffe://cluster.local/ns/foo/sa/sleep".into()),
            peer_cert: None,
            sni: None,
            alpn: None,
        };
        let (parts, ()) = Request::builder()
            .method("POST")
            .uri("/headers?x=1")
            .header("x-ext-authz", "allow")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .header("content-length", "12")
            .body(())
            .unwrap()
            .into_parts();
        let req = check_request(
            &conn,
            "spiffe://cluster.local/ns/foo/sa/httpbin".into(),
            Some(HttpView {
                parts: &parts,
                authority: "httpbin:8000",
                scheme: "http",
            }),
        );
        let a = req.attributes.unwrap();
        assert_eq!(
            a.source.as_ref().unwrap().principal,
            "spiffe://cluster.local/ns/foo/sa/sleep"
        );
        assert_eq!(
            a.destination.as_ref().unwrap().principal,
            "spiffe://cluster.local/ns/foo/sa/httpbin"
        );
        let http = a.request.unwrap().http.unwrap();
        assert_eq!(
            (http.method.as_str(), http.path.as_str(), http.host.as_str()),
            ("POST", "/headers?x=1", "httpbin:8000")
        );
        assert_eq!(http.size, 12);
        assert_eq!(http.headers["x-ext-authz"], "allow");
        assert_eq!(http.headers["x-multi"], "a,b");
        assert_eq!(http.headers[":path"], "/headers?x=1");
        assert_eq!(http.protocol, "HTTP/1.1");
    }

    #[test]
    fn grpc_header_options_set_unless_told_to_append() {
        #[allow(deprecated)]
        let list = vec![
            core::HeaderValueOption {
                header: Some(core::HeaderValue {
                    key: "x-set".into(),
                    value: "1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            core::HeaderValueOption {
                header: Some(core::HeaderValue {
                    key: "x-add".into(),
                    value: "2".into(),
                    ..Default::default()
                }),
                append: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
                ..Default::default()
            },
        ];
        let o = options(&list);
        assert_eq!(o.len(), 2);
        assert!(!o[0].2 && o[1].2);
    }
}
