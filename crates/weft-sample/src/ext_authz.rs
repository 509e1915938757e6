//! Istio's external authorization sample (`samples/extauthz`), for AuthorizationPolicy's
//! CUSTOM action: an HTTP authorizer and an Envoy `envoy.service.auth.v3.Authorization/Check`
//! gRPC authorizer in one process, with the same decisions, headers, bodies and log lines.
//!
//! - HTTP: allows a request carrying `x-ext-authz: allow` (200), denies anything else (403 with
//!   ``denied by ext_authz for not found header `x-ext-authz: allow` in the request``).
//! - gRPC: with an `x-ext-authz` header, allows when it is `allow`; without one, allows a
//!   source principal ending in `/sa/<--allow-service-account>`.
//!
//! Both answer with `x-ext-authz-check-result: allowed|denied`, `x-ext-authz-check-received`
//! (what was checked) and `x-ext-authz-additional-header-override`, and log
//! `[HTTP][allowed]: …` / `[gRPCv3][denied]: …` lines on stdout.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{
    CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse, check_response,
};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode as EnvoyStatus};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use http::{HeaderValue as HttpHeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::error::SampleError;
use crate::server::{AccessLog, Body, bind_all, flatten, respond, serve, shutdown_signal};

const CHECK_HEADER: &str = "x-ext-authz";
const ALLOWED_VALUE: &str = "allow";
const RESULT_HEADER: &str = "x-ext-authz-check-result";
const RECEIVED_HEADER: &str = "x-ext-authz-check-received";
const OVERRIDE_HEADER: &str = "x-ext-authz-additional-header-override";
const OVERRIDE_GRPC_VALUE: &str = "grpc-additional-header-override-value";
const ALLOWED: &str = "allowed";
const DENIED: &str = "denied";
/// What the sample puts in place of a check longer than this.
const MAX_ECHOED: usize = 60_000;

/// The body of a denial, as Istio's sample words it.
pub fn deny_body() -> String {
    format!(
        "denied by ext_authz for not found header `{CHECK_HEADER}: {ALLOWED_VALUE}` in the request"
    )
}

/// Arguments of `weft sample ext-authz`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct ExtAuthzArgs {
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub address: IpAddr,
    /// Port of the HTTP authorizer (0 picks a free port).
    #[arg(long = "http-port", default_value_t = 8000)]
    pub http_port: u16,
    /// Port of the gRPC authorizer (envoy.service.auth.v3.Authorization).
    #[arg(long = "grpc-port", default_value_t = 9000)]
    pub grpc_port: u16,
    /// The service account a gRPC check without `x-ext-authz` is allowed from.
    #[arg(long = "allow-service-account", default_value = "a")]
    pub allow_service_account: String,
}

fn too_long(s: String) -> String {
    if s.len() > MAX_ECHOED {
        "<too-long>".to_string()
    } else {
        s
    }
}

/// A header value as HTTP allows it (control characters shown as `_`).
fn header_value(s: &str) -> HttpHeaderValue {
    HttpHeaderValue::from_str(s).unwrap_or_else(|_| {
        let cleaned: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        HttpHeaderValue::from_str(&cleaned).unwrap_or(HttpHeaderValue::from_static("-"))
    })
}

/// The HTTP authorizer's answer to one check request.
async fn check_http(req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(parts.uri.host())
        .unwrap_or_default();
    let mut headers = String::from("map[");
    let mut names: Vec<&str> = parts.headers.keys().map(|k| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    for (i, name) in names.iter().enumerate() {
        let values: Vec<&str> = parts
            .headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if i > 0 {
            headers.push(' ');
        }
        let _ = write!(headers, "{name}:[{}]", values.join(" "));
    }
    headers.push(']');
    let line = format!(
        "{} {host}{}, headers: {headers}, body: [{}]",
        parts.method,
        parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        too_long(String::from_utf8_lossy(&body).into_owned())
    );
    let allow = parts
        .headers
        .get(CHECK_HEADER)
        .is_some_and(|v| v.as_bytes() == ALLOWED_VALUE.as_bytes());
    let (status, result, body) = if allow {
        (StatusCode::OK, ALLOWED, Bytes::new())
    } else {
        (StatusCode::FORBIDDEN, DENIED, Bytes::from(deny_body()))
    };
    println!("[HTTP][{result}]: {line}");
    let mut resp = respond(status, "text/plain; charset=utf-8", body);
    let h = resp.headers_mut();
    h.insert(RESULT_HEADER, HttpHeaderValue::from_static(result));
    h.insert(
        OVERRIDE_HEADER,
        parts
            .headers
            .get(OVERRIDE_HEADER)
            .cloned()
            .unwrap_or(HttpHeaderValue::from_static("")),
    );
    h.insert(RECEIVED_HEADER, header_value(&line));
    resp
}

/// The gRPC authorizer (Envoy's v3 external authorization API).
struct GrpcAuthorizer {
    allow_service_account: String,
}

fn header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl GrpcAuthorizer {
    fn decide(&self, request: &CheckRequest) -> bool {
        let attrs = request.attributes.as_ref();
        let http = attrs
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        match http.and_then(|h| h.headers.get(CHECK_HEADER)) {
            Some(v) => v == ALLOWED_VALUE,
            None => attrs.and_then(|a| a.source.as_ref()).is_some_and(|s| {
                s.principal
                    .ends_with(&format!("/sa/{}", self.allow_service_account))
            }),
        }
    }

    fn answer(&self, request: &CheckRequest) -> CheckResponse {
        let allow = self.decide(request);
        let received = too_long(format!("{:?}", request.attributes));
        let http = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let (host, path) = http.map_or(("", ""), |h| (h.host.as_str(), h.path.as_str()));
        let result = if allow { ALLOWED } else { DENIED };
        println!("[gRPCv3][{result}]: {host}{path}, attributes: {received}");
        let headers = vec![
            header(RESULT_HEADER, result),
            header(RECEIVED_HEADER, &received),
            header(OVERRIDE_HEADER, OVERRIDE_GRPC_VALUE),
        ];
        if allow {
            CheckResponse {
                status: Some(RpcStatus {
                    code: tonic::Code::Ok as i32,
                    ..Default::default()
                }),
                http_response: Some(check_response::HttpResponse::OkResponse(OkHttpResponse {
                    headers,
                    ..Default::default()
                })),
                ..Default::default()
            }
        } else {
            CheckResponse {
                status: Some(RpcStatus {
                    code: tonic::Code::PermissionDenied as i32,
                    ..Default::default()
                }),
                http_response: Some(check_response::HttpResponse::DeniedResponse(
                    DeniedHttpResponse {
                        status: Some(HttpStatus {
                            code: EnvoyStatus::Forbidden as i32,
                        }),
                        headers,
                        body: deny_body(),
                    },
                )),
                ..Default::default()
            }
        }
    }
}

#[tonic::async_trait]
impl Authorization for GrpcAuthorizer {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.answer(request.get_ref())))
    }
}

/// The two authorizers, bound.
pub struct ExtAuthzServer {
    http: TcpListener,
    grpc: TcpListener,
    allow_service_account: String,
}

impl ExtAuthzServer {
    pub async fn bind(args: ExtAuthzArgs) -> Result<ExtAuthzServer, SampleError> {
        let mut http = bind_all(args.address, &[args.http_port], "--http-port").await?;
        let mut grpc = bind_all(args.address, &[args.grpc_port], "--grpc-port").await?;
        let (Some(http), Some(grpc)) = (http.pop(), grpc.pop()) else {
            return Err(SampleError::Task {
                what: "ext-authz listeners",
                reason: "no listener was bound".into(),
            });
        };
        Ok(ExtAuthzServer {
            http,
            grpc,
            allow_service_account: args.allow_service_account,
        })
    }

    /// The HTTP and gRPC listeners' addresses.
    pub fn addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (self.http.local_addr().ok(), self.grpc.local_addr().ok())
    }

    /// Serves until `stop` flips.
    pub async fn run(self, stop: watch::Receiver<bool>) -> Result<(), SampleError> {
        let grpc_addr = self.grpc.local_addr().map_err(|e| SampleError::Task {
            what: "grpc listener",
            reason: e.to_string(),
        })?;
        let mut grpc_stop = stop.clone();
        let authorizer = GrpcAuthorizer {
            allow_service_account: self.allow_service_account,
        };
        let grpc = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(AuthorizationServer::new(authorizer))
                .serve_with_incoming_shutdown(TcpListenerStream::new(self.grpc), async move {
                    let _ = grpc_stop.changed().await;
                })
                .await
                .map_err(|source| SampleError::Grpc {
                    addr: grpc_addr,
                    source,
                })
        });
        let http = tokio::spawn(serve(
            self.http,
            check_http,
            AccessLog::off(),
            stop,
            Duration::from_secs(1),
        ));
        flatten(http.await, "ext-authz http listener")?;
        flatten(grpc.await, "ext-authz grpc listener")
    }
}

/// `weft sample ext-authz`: serves until SIGTERM or ctrl-c.
pub async fn run_ext_authz(args: ExtAuthzArgs) -> Result<(), SampleError> {
    let server = ExtAuthzServer::bind(args).await?;
    let (http, grpc) = server.addrs();
    tracing::info!(?http, ?grpc, "ext-authz sample serving");
    let (tx, rx) = watch::channel(false);
    let signal = shutdown_signal()?;
    tokio::spawn(async move {
        signal.await;
        let _ = tx.send(true);
    });
    server.run(rx).await
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{
        HttpRequest, Peer, Request as AttrRequest,
    };
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;

    use super::*;

    fn check(headers: &[(&str, &str)], principal: &str) -> CheckRequest {
        CheckRequest {
            attributes: Some(AttributeContext {
                source: Some(Peer {
                    principal: principal.into(),
                    ..Default::default()
                }),
                request: Some(AttrRequest {
                    http: Some(HttpRequest {
                        host: "httpbin:8000".into(),
                        path: "/headers".into(),
                        headers: headers
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    #[tokio::test]
    async fn both_authorizers_decide_as_istios_sample() {
        let server = ExtAuthzServer::bind(ExtAuthzArgs {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            http_port: 0,
            grpc_port: 0,
            allow_service_account: "sleep".into(),
        })
        .await
        .unwrap();
        let (Some(http_addr), Some(grpc_addr)) = server.addrs() else {
            panic!("not bound");
        };
        let (tx, rx) = watch::channel(false);
        let running = tokio::spawn(server.run(rx));

        // HTTP: allowed only with x-ext-authz: allow.
        let get = |value: Option<&'static str>| async move {
            let stream = tokio::net::TcpStream::connect(http_addr).await.unwrap();
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut req = Request::get("/check/headers").header("host", "httpbin:8000");
            if let Some(v) = value {
                req = req.header(CHECK_HEADER, v);
            }
            let resp = send
                .send_request(req.body(http_body_util::Empty::<Bytes>::new()).unwrap())
                .await
                .unwrap();
            let status = resp.status();
            let result = resp.headers()[RESULT_HEADER].to_str().unwrap().to_string();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, result, String::from_utf8_lossy(&body).into_owned())
        };
        assert_eq!(
            get(Some("allow")).await,
            (StatusCode::OK, ALLOWED.to_string(), String::new())
        );
        assert_eq!(
            get(Some("deny")).await,
            (StatusCode::FORBIDDEN, DENIED.to_string(), deny_body())
        );
        assert_eq!(get(None).await.0, StatusCode::FORBIDDEN);

        // gRPC: the header decides when present, else the source's service account.
        let mut client = AuthorizationClient::connect(format!("http://{grpc_addr}"))
            .await
            .unwrap();
        let code = |r: &CheckResponse| r.status.as_ref().map_or(-1, |s| s.code);
        let ok = client
            .check(check(&[("x-ext-authz", "allow")], ""))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&ok), 0);
        let Some(check_response::HttpResponse::OkResponse(okr)) = &ok.http_response else {
            panic!("{ok:?}");
        };
        assert!(okr.headers.iter().any(|h| {
            h.header
                .as_ref()
                .is_some_and(|h| h.key == RESULT_HEADER && h.value == ALLOWED)
        }));
        let denied = client
            .check(check(
                &[("x-ext-authz", "deny")],
                "spiffe://cluster.local/ns/foo/sa/sleep",
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&denied), tonic::Code::PermissionDenied as i32);
        let Some(check_response::HttpResponse::DeniedResponse(d)) = &denied.http_response else {
            panic!("{denied:?}");
        };
        assert_eq!(d.body, deny_body());
        assert_eq!(d.status.as_ref().map(|s| s.code), Some(403));
        let by_account = client
            .check(check(&[], "spiffe://cluster.local/ns/foo/sa/sleep"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&by_account), 0);
        let other = client
            .check(check(&[], "spiffe://cluster.local/ns/foo/sa/other"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code(&other), tonic::Code::PermissionDenied as i32);

        tx.send(true).unwrap();
        running.await.unwrap().unwrap();
    }
}
