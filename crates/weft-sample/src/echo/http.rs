//! The echo server's HTTP/1.1 + h2c (prior knowledge) listener.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::debug;

use super::{EchoState, header_map};
use crate::chain::UpstreamAnswer;
use crate::error::SampleError;
use crate::server::{self, AccessLog, Body, empty, json, protocol, text};

/// Longest `/delay/<duration>`.
const MAX_DELAY: Duration = Duration::from_secs(60);
/// Largest request body read (and discarded) before answering.
const MAX_REQUEST_BODY: usize = 16 << 20;

/// Accepts connections until `stop` flips, then drains them for up to `drain`.
pub(super) async fn serve(
    listener: TcpListener,
    state: Arc<EchoState>,
    log: AccessLog,
    stop: watch::Receiver<bool>,
    drain: Duration,
) -> Result<(), SampleError> {
    let handler = move |req| handle(state.clone(), req);
    server::serve(listener, handler, log, stop, drain).await
}

/// The echo answer.
#[derive(Serialize)]
struct Echo<'a> {
    pod: &'a str,
    service: &'a str,
    version: &'a str,
    method: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<&'a str>,
    host: &'a str,
    protocol: &'static str,
    headers: BTreeMap<String, String>,
    upstream: Vec<UpstreamAnswer>,
}

async fn handle(state: Arc<EchoState>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    // Read the request body so HTTP/1.1 keep-alive works; its content is not echoed.
    if let Err(e) = Limited::new(body, MAX_REQUEST_BODY).collect().await {
        debug!(error = %e, "request body not read");
    }
    let path = parts.uri.path();
    debug!(method = %parts.method, path, version = ?parts.version, "request");

    let mut status = StatusCode::OK;
    let mut upstream = Vec::new();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    } else if path == "/headers" {
        let body = serde_json::json!({ "headers": header_map(&parts.headers) });
        return json(StatusCode::OK, &body);
    } else if let Some(code) = path.strip_prefix("/status/") {
        match parse_status(code) {
            Ok(s) => status = s,
            Err(msg) => return error(msg),
        }
    } else if let Some(d) = path.strip_prefix("/delay/") {
        match parse_delay(d) {
            Ok(d) => tokio::time::sleep(d).await,
            Err(msg) => return error(msg),
        }
    } else if state.chain.applies(path) {
        upstream = state.chain.call_all(&parts.headers).await;
        if state.chain.fail_on_error() && upstream.iter().any(UpstreamAnswer::failed) {
            status = StatusCode::SERVICE_UNAVAILABLE;
        }
    }

    let host = server::host(&parts.headers, &parts.uri).unwrap_or("");
    let labels = &state.labels;
    let echo = Echo {
        pod: &labels.pod,
        service: &labels.service,
        version: &labels.version,
        method: parts.method.as_str(),
        path,
        query: parts.uri.query(),
        host,
        protocol: protocol(parts.version),
        headers: header_map(&parts.headers),
        upstream,
    };
    if matches!(
        status,
        StatusCode::NO_CONTENT | StatusCode::RESET_CONTENT | StatusCode::NOT_MODIFIED
    ) {
        return empty(status);
    }
    json(status, &echo)
}

/// `/status/<code>`: a final status, 200..=599.
fn parse_status(code: &str) -> Result<StatusCode, String> {
    code.parse::<u16>()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("bad status {code:?}: use a code from 200 to 599, e.g. /status/503"))
}

/// `/delay/<duration>`: `2s`, `500ms`, or a plain number of seconds; at most 60s.
fn parse_delay(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "bad delay {text:?}: use e.g. /delay/2s, /delay/500ms or /delay/1.5 (seconds), at most 60s"
        )
    };
    let d = match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => {
            Duration::try_from_secs_f64(secs).map_err(|_| bad())?
        }
        Ok(_) => return Err(bad()),
        Err(_) => humantime::parse_duration(text).map_err(|_| bad())?,
    };
    if d > MAX_DELAY {
        return Err(bad());
    }
    Ok(d)
}

fn error(msg: String) -> Response<Body> {
    json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({ "error": msg }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::testing::{base, get, get_json};
    use crate::echo::{EchoArgs, EchoServer};
    use std::time::Instant;

    async fn server(args: EchoArgs) -> EchoServer {
        EchoServer::bind(args).await.unwrap()
    }

    #[tokio::test]
    async fn http1_echo_reports_request_and_labels() {
        let s = server(EchoArgs {
            service: "reviews".into(),
            version: "v2".into(),
            ..base()
        })
        .await;
        let addr = s.http_addrs()[0];
        let (status, v) = get_json(addr, "/some/path?x=1", &[("x-test", "yes")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["pod"], "echo-v1-abc");
        assert_eq!(v["service"], "reviews");
        assert_eq!(v["version"], "v2");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/some/path");
        assert_eq!(v["query"], "x=1");
        assert_eq!(v["host"], addr.to_string());
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["headers"]["x-test"], "yes");
        assert_eq!(v["upstream"], serde_json::json!([]));
    }

    #[tokio::test]
    async fn h2c_echo_reports_http2() {
        let s = server(base()).await;
        let addr = s.http_addrs()[0];
        let (status, body) = get(true, addr, "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["protocol"], "HTTP/2");
        assert_eq!(v["host"], addr.to_string());
    }

    #[tokio::test]
    async fn status_endpoint_sets_the_status() {
        let s = server(base()).await;
        let addr = s.http_addrs()[0];
        let (status, v) = get_json(addr, "/status/418", &[]).await;
        assert_eq!(status.as_u16(), 418);
        assert_eq!(v["path"], "/status/418");
        let (status, _) = get(false, addr, "/status/204", &[]).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, v) = get_json(addr, "/status/99", &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(v["error"].as_str().unwrap().contains("200 to 599"));
    }

    #[tokio::test]
    async fn delay_endpoint_waits() {
        let s = server(base()).await;
        let addr = s.http_addrs()[0];
        let start = Instant::now();
        let (status, _) = get(false, addr, "/delay/100ms", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(start.elapsed() >= Duration::from_millis(100));
        let (status, _) = get(false, addr, "/delay/61s", &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn headers_and_healthz() {
        let s = server(base()).await;
        let addr = s.http_addrs()[0];
        let (status, v) = get_json(addr, "/headers", &[("end-user", "jason")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["headers"]["end-user"], "jason");
        assert!(v.get("pod").is_none());
        let (status, body) = get(false, addr, "/healthz", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"ok");
    }

    #[tokio::test]
    async fn every_http_port_serves() {
        let s = server(EchoArgs {
            http_ports: vec![0, 0],
            ..base()
        })
        .await;
        assert_eq!(s.http_addrs().len(), 2);
        for a in s.http_addrs() {
            assert_eq!(get(false, *a, "/", &[]).await.0, StatusCode::OK);
        }
    }

    #[tokio::test]
    async fn requests_are_logged_with_their_host() {
        // As the mirroring task reads it: the mirrored copy's host ends in -shadow.
        let (log, lines) = AccessLog::memory("httpbin");
        let s = EchoServer::bind_with_log(base(), log).await.unwrap();
        let addr = s.http_addrs()[0];
        get(
            false,
            addr,
            "/headers",
            &[("host", "httpbin-shadow:8000"), ("x-request-id", "r-9")],
        )
        .await;
        get(true, addr, "/status/503", &[]).await;
        let lines = lines.lock().unwrap().clone();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].starts_with(
                "httpbin GET /headers HTTP/1.1 200 host=httpbin-shadow:8000 end-user=- x-request-id=r-9 "
            ),
            "{lines:?}"
        );
        assert!(
            lines[1].starts_with(&format!("httpbin GET /status/503 HTTP/2 503 host={addr} ")),
            "{lines:?}"
        );
    }

    #[test]
    fn delays_parse() {
        assert_eq!(parse_delay("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_delay("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_delay("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_delay("60").unwrap(), Duration::from_secs(60));
        // httpbin's /delay/<n> is in seconds.
        assert_eq!(parse_delay("3").unwrap(), Duration::from_secs(3));
        assert!(parse_delay("61").is_err());
        assert!(parse_delay("-1").is_err());
        assert!(parse_delay("soon").is_err());
        assert!(parse_delay("NaN").is_err());
    }
}
