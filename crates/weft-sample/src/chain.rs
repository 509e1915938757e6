//! Call chains: an echo server that calls its upstreams for each request and folds their
//! answers into its own; and what every sample app calling another shares (the propagated
//! headers, the HTTP client, a timed GET), used by the bookinfo apps too.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tracing::debug;

use crate::error::SampleError;

/// Headers an application must copy from its inbound request to its outbound calls so that
/// traces join up and routing on user identity works: the list of Istio's bookinfo apps
/// (reviews' list, plus the single `b3` header).
pub const PROPAGATED_HEADERS: &[&str] = &[
    "x-request-id",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "sw8",
    "end-user",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
];

/// Largest upstream body folded into an answer.
const MAX_UPSTREAM_BODY: usize = 4 << 20;

/// One upstream call's outcome, as reported in the echo answer's `upstream` list.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpstreamAnswer {
    /// The upstream URL as configured.
    pub url: String,
    /// The HTTP status, or 0 when no answer came.
    pub status: u16,
    /// The answer's body: parsed JSON when it is JSON, else the text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// Why no (complete) answer came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl UpstreamAnswer {
    /// No answer, or a 5xx answer.
    pub fn failed(&self) -> bool {
        self.status == 0 || self.status >= 500
    }
}

struct Upstream {
    url: String,
    uri: Uri,
}

/// The configured upstreams and how to call them.
pub(crate) struct Chain {
    upstreams: Vec<Upstream>,
    paths: Vec<String>,
    timeout: Duration,
    fail_on_error: bool,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Chain {
    /// Checks `--upstream` and `--chain-path` values.
    pub(crate) fn new(
        urls: &[String],
        paths: &[String],
        timeout: Duration,
        fail_on_error: bool,
    ) -> Result<Chain, SampleError> {
        let upstreams = urls
            .iter()
            .map(|u| {
                parse_upstream(u).map(|uri| Upstream {
                    url: u.clone(),
                    uri,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(p) = paths.iter().find(|p| !p.starts_with('/')) {
            return Err(SampleError::ChainPath(p.clone()));
        }
        Ok(Chain {
            upstreams,
            paths: paths.to_vec(),
            timeout,
            fail_on_error,
            client: client(timeout, true),
        })
    }

    /// How many upstreams are configured.
    pub(crate) fn len(&self) -> usize {
        self.upstreams.len()
    }

    /// Whether a request to `path` (not a special endpoint) calls the upstreams.
    pub(crate) fn applies(&self, path: &str) -> bool {
        !self.upstreams.is_empty()
            && (self.paths.is_empty() || self.paths.iter().any(|p| path.starts_with(p.as_str())))
    }

    /// Whether a failed upstream turns the answer into a 503.
    pub(crate) fn fail_on_error(&self) -> bool {
        self.fail_on_error
    }

    /// Calls every upstream in order, forwarding the propagated headers of `inbound`.
    pub(crate) async fn call_all(&self, inbound: &HeaderMap) -> Vec<UpstreamAnswer> {
        let forwarded = forward_headers(inbound);
        let mut out = Vec::with_capacity(self.upstreams.len());
        for u in &self.upstreams {
            let answer = match get(&self.client, u.uri.clone(), &forwarded, self.timeout).await {
                Ok((status, body)) => UpstreamAnswer {
                    url: u.url.clone(),
                    status: status.as_u16(),
                    body: Some(body_value(&body)),
                    error: None,
                },
                Err(error) => UpstreamAnswer {
                    url: u.url.clone(),
                    status: 0,
                    body: None,
                    error: Some(error),
                },
            };
            debug!(url = %u.url, status = answer.status, error = ?answer.error, "upstream call");
            out.push(answer);
        }
        out
    }
}

/// The headers of `inbound` an application copies to its outbound calls
/// ([`PROPAGATED_HEADERS`]).
pub(crate) fn forward_headers(inbound: &HeaderMap) -> HeaderMap {
    let mut forwarded = HeaderMap::new();
    for name in PROPAGATED_HEADERS {
        for v in inbound.get_all(*name) {
            forwarded.append(*name, v.clone());
        }
    }
    forwarded
}

/// The HTTP client the sample apps call upstreams with (connect time limited to `timeout`;
/// with `pool` false every call opens its own connection, like bookinfo's apps).
pub(crate) fn client(timeout: Duration, pool: bool) -> Client<HttpConnector, Empty<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(timeout));
    let mut builder = Client::builder(TokioExecutor::new());
    if !pool {
        builder.pool_max_idle_per_host(0);
    }
    builder.build(connector)
}

/// GETs `uri` with `headers`; the status and the body, or why there is no complete answer
/// within `timeout`.
pub(crate) async fn get(
    client: &Client<HttpConnector, Empty<Bytes>>,
    uri: Uri,
    headers: &HeaderMap,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), String> {
    let call = async {
        let mut req = Request::get(uri)
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        *req.headers_mut() = headers.clone();
        let resp = client.request(req).await.map_err(client_error)?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_UPSTREAM_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

/// The most useful text of a legacy-client error (its source chain).
fn client_error(e: hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        text.push_str(": ");
        text.push_str(&s.to_string());
        src = s.source();
    }
    text
}

fn body_value(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn parse_upstream(url: &str) -> Result<Uri, SampleError> {
    parse_http_url(url).map_err(|reason| SampleError::Upstream {
        url: url.to_string(),
        reason,
    })
}

/// A plain-HTTP URL with a host; `http://details:9080` gets the path `/`.
pub(crate) fn parse_http_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|_| "not a URL".to_string())?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(s) => return Err(format!("scheme {s:?} is not supported, only http")),
        None => return Err("missing http:// scheme".to_string()),
    }
    if uri.authority().is_none() {
        return Err("missing host".to_string());
    }
    if uri.path_and_query().is_none() {
        let mut parts = uri.into_parts();
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        return Uri::from_parts(parts).map_err(|_| "not a URL".to_string());
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_checked() {
        assert_eq!(
            parse_upstream("http://details:9080").unwrap().to_string(),
            "http://details:9080/"
        );
        assert_eq!(
            parse_upstream("http://reviews:9080/reviews/0")
                .unwrap()
                .path(),
            "/reviews/0"
        );
        let e = parse_upstream("https://x/").unwrap_err().to_string();
        assert!(e.contains("only http"), "{e}");
        let e = parse_upstream("details:9080").unwrap_err().to_string();
        assert!(e.contains("invalid --upstream \"details:9080\""), "{e}");
        assert!(parse_upstream("/just/a/path").is_err());
    }

    #[tokio::test]
    async fn chain_paths_select_requests() {
        let t = Duration::from_secs(1);
        let none = Chain::new(&[], &[], t, false).unwrap();
        assert!(!none.applies("/"));
        let all = Chain::new(&["http://a/".into()], &[], t, false).unwrap();
        assert!(all.applies("/anything"));
        let some = Chain::new(&["http://a/".into()], &["/productpage".into()], t, true).unwrap();
        assert!(some.applies("/productpage"));
        assert!(!some.applies("/"));
        assert!(some.fail_on_error());
        assert!(matches!(
            Chain::new(&[], &["productpage".into()], t, false),
            Err(SampleError::ChainPath(_))
        ));
    }

    #[test]
    fn bodies_fold_as_json_or_text() {
        assert_eq!(body_value(br#"{"a":1}"#), serde_json::json!({"a": 1}));
        assert_eq!(body_value(b"plain"), serde_json::json!("plain"));
    }

    #[test]
    fn failure_is_no_answer_or_5xx() {
        let a = |status| UpstreamAnswer {
            url: "u".into(),
            status,
            body: None,
            error: None,
        };
        assert!(a(0).failed());
        assert!(a(503).failed());
        assert!(!a(404).failed());
        assert!(!a(200).failed());
    }

    mod end_to_end {
        use crate::echo::testing::{base, get_json};
        use crate::echo::{EchoArgs, EchoServer};
        use http::StatusCode;
        use std::time::Duration;

        async fn front(upstreams: Vec<String>, fail: bool) -> EchoServer {
            EchoServer::bind(EchoArgs {
                service: "productpage".into(),
                upstreams,
                fail_on_upstream_error: fail,
                upstream_timeout: Duration::from_secs(2),
                ..base()
            })
            .await
            .unwrap()
        }

        #[tokio::test]
        async fn upstream_answer_is_folded_in_with_propagated_headers() {
            let details = EchoServer::bind(EchoArgs {
                service: "details".into(),
                pod: Some("details-v1-0".into()),
                ..base()
            })
            .await
            .unwrap();
            let up = format!("http://{}/details/0", details.http_addrs()[0]);
            let a = front(vec![up.clone()], false).await;
            let (status, v) = get_json(
                a.http_addrs()[0],
                "/productpage",
                &[
                    ("x-request-id", "req-42"),
                    ("end-user", "jason"),
                    ("x-not-propagated", "1"),
                ],
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            let list = v["upstream"].as_array().unwrap();
            assert_eq!(list.len(), 1);
            assert_eq!(list[0]["url"], up.as_str());
            assert_eq!(list[0]["status"], 200);
            let body = &list[0]["body"];
            assert_eq!(body["service"], "details");
            assert_eq!(body["pod"], "details-v1-0");
            assert_eq!(body["path"], "/details/0");
            assert_eq!(body["headers"]["x-request-id"], "req-42");
            assert_eq!(body["headers"]["end-user"], "jason");
            assert!(body["headers"].get("x-not-propagated").is_none());
            // Special endpoints do not call upstreams.
            let (_, v) = get_json(a.http_addrs()[0], "/status/201", &[]).await;
            assert_eq!(v["upstream"], serde_json::json!([]));
        }

        async fn down_url() -> String {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            drop(l);
            format!("http://{addr}/ratings")
        }

        #[tokio::test]
        async fn upstream_down_is_recorded_and_answer_stays_200() {
            let down = down_url().await;
            let a = front(vec![down.clone()], false).await;
            let (status, v) = get_json(a.http_addrs()[0], "/", &[]).await;
            assert_eq!(status, StatusCode::OK);
            let u = &v["upstream"][0];
            assert_eq!(u["url"], down.as_str());
            assert_eq!(u["status"], 0);
            assert!(!u["error"].as_str().unwrap().is_empty());
            assert!(u.get("body").is_none());
        }

        #[tokio::test]
        async fn upstream_down_gives_503_when_asked() {
            let a = front(vec![down_url().await], true).await;
            let (status, v) = get_json(a.http_addrs()[0], "/", &[]).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(v["upstream"][0]["status"], 0);
        }

        #[tokio::test]
        async fn upstream_5xx_fails_and_timeouts_are_recorded() {
            let b = EchoServer::bind(base()).await.unwrap();
            let b = b.http_addrs()[0];
            let slow = format!("http://{b}/delay/5s");
            let a = EchoServer::bind(EchoArgs {
                upstreams: vec![format!("http://{b}/status/503"), slow],
                fail_on_upstream_error: true,
                upstream_timeout: Duration::from_millis(200),
                ..base()
            })
            .await
            .unwrap();
            let (status, v) = get_json(a.http_addrs()[0], "/", &[]).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(v["upstream"][0]["status"], 503);
            assert_eq!(v["upstream"][1]["status"], 0);
            assert!(
                v["upstream"][1]["error"]
                    .as_str()
                    .unwrap()
                    .contains("timed out")
            );
        }
    }
}
