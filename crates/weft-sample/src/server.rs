//! What every sample HTTP server shares: the accept loop (HTTP/1.1 + h2c, graceful drain),
//! the one-line-per-request access log, response helpers and the shutdown signal.

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
#[cfg(test)]
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::error::SampleError;

/// Every sample server answers with a complete body.
pub(crate) type Body = Full<Bytes>;

/// Request headers shown in the access log, after the host.
const LOGGED_HEADERS: &[&str] = &["end-user", "x-request-id"];

/// Where the access log goes.
#[derive(Clone)]
enum Sink {
    Off,
    Stdout,
    #[cfg(test)]
    Memory(Arc<Mutex<Vec<String>>>),
}

/// One line per request served:
/// `<app> <METHOD> <path?query> <HTTP/x> <status> host=<host> end-user=<v> x-request-id=<v> <ms>ms`,
/// with `-` for a missing value and whitespace or control characters in values shown as `_`.
#[derive(Clone)]
pub(crate) struct AccessLog {
    app: Arc<str>,
    sink: Sink,
}

impl AccessLog {
    /// Lines go to stdout (the pod log).
    pub(crate) fn stdout(app: &str) -> AccessLog {
        AccessLog {
            app: Arc::from(app),
            sink: Sink::Stdout,
        }
    }

    /// No access log.
    pub(crate) fn off() -> AccessLog {
        AccessLog {
            app: Arc::from(""),
            sink: Sink::Off,
        }
    }

    /// Lines are kept in memory, for tests.
    #[cfg(test)]
    pub(crate) fn memory(app: &str) -> (AccessLog, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let log = AccessLog {
            app: Arc::from(app),
            sink: Sink::Memory(lines.clone()),
        };
        (log, lines)
    }

    fn enabled(&self) -> bool {
        !matches!(self.sink, Sink::Off)
    }

    fn write(&self, line: String) {
        match &self.sink {
            Sink::Off => {}
            Sink::Stdout => {
                // A closed stdout must not take the server down: the line is dropped.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            #[cfg(test)]
            Sink::Memory(lines) => {
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        }
    }
}

/// What the access log needs of a request, taken before the handler consumes it.
struct RequestLine {
    method: String,
    target: String,
    version: Version,
    host: String,
    headers: Vec<String>,
}

impl RequestLine {
    fn of<B>(req: &Request<B>) -> RequestLine {
        let target = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
        RequestLine {
            method: req.method().as_str().to_string(),
            target: clean(&target),
            version: req.version(),
            host: clean(host(req.headers(), req.uri()).unwrap_or("-")),
            headers: LOGGED_HEADERS
                .iter()
                .map(|name| {
                    let v = req
                        .headers()
                        .get(*name)
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                    format!("{name}={}", clean(v.as_deref().unwrap_or("-")))
                })
                .collect(),
        }
    }

    fn render(&self, app: &str, status: StatusCode, elapsed: Duration) -> String {
        format!(
            "{app} {} {} {} {} host={} {} {:.1}ms",
            self.method,
            self.target,
            protocol(self.version),
            status.as_u16(),
            self.host,
            self.headers.join(" "),
            elapsed.as_secs_f64() * 1000.0
        )
    }
}

/// The request's Host header, else its URI authority (HTTP/2 `:authority`).
pub(crate) fn host<'a>(headers: &'a HeaderMap, uri: &'a http::Uri) -> Option<&'a str> {
    headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
}

/// A log field: empty becomes `-`, whitespace and control characters become `_`.
fn clean(v: &str) -> String {
    if v.is_empty() {
        return "-".to_string();
    }
    v.chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The protocol as HTTP writes it.
pub(crate) fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Accepts connections (HTTP/1.1 or h2c by prior knowledge) until `stop` flips, answering
/// each request with `handler` and logging it to `log`; then drains open connections for up
/// to `drain`.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    log: AccessLog,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
) -> Result<(), SampleError>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    let log = log.clone();
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let log = log.clone();
                        async move {
                            let start = Instant::now();
                            let line = log.enabled().then(|| RequestLine::of(&req));
                            let resp = handler(req).await;
                            if let Some(line) = line {
                                log.write(line.render(&log.app, resp.status(), start.elapsed()));
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), svc)
                        .into_owned();
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            debug!(%peer, error = %e, "http connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    // Usually out of file descriptors; back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            ?drain,
            "http connections still open after the drain timeout; closing them"
        );
    }
    Ok(())
}

/// A future that completes on SIGTERM or ctrl-c.
pub(crate) fn shutdown_signal() -> Result<impl Future<Output = ()>, SampleError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|source| SampleError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    })
}

/// A listener task's outcome, a panic or cancellation included.
pub(crate) fn flatten(
    joined: Result<Result<(), SampleError>, tokio::task::JoinError>,
    what: &'static str,
) -> Result<(), SampleError> {
    match joined {
        Ok(r) => r,
        Err(e) => Err(SampleError::Task {
            what,
            reason: e.to_string(),
        }),
    }
}

/// Binds a listener on `ip` for each port; a failure names `flag`.
pub(crate) async fn bind_all(
    ip: IpAddr,
    ports: &[u16],
    flag: &'static str,
) -> Result<Vec<TcpListener>, SampleError> {
    let mut out = Vec::with_capacity(ports.len());
    for &port in ports {
        let addr = SocketAddr::new(ip, port);
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| SampleError::Bind { addr, flag, source })?;
        out.push(l);
    }
    Ok(out)
}

/// `--pod`, else `$HOSTNAME`, else /etc/hostname, else "unknown".
pub(crate) fn resolve_pod(pod: Option<&str>) -> String {
    if let Some(p) = pod.filter(|p| !p.is_empty()) {
        return p.to_string();
    }
    if let Ok(h) = std::env::var("HOSTNAME")
        && !h.is_empty()
    {
        return h;
    }
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// A pretty JSON answer.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            respond(status, "application/json", Bytes::from(bytes))
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {e}"),
        ),
    }
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from(body.to_string()),
    )
}

/// An HTML answer.
pub(crate) fn html(status: StatusCode, body: String) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", Bytes::from(body))
}

/// An answer without a body.
pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// An answer with a body of the given type.
pub(crate) fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_show_host_and_headers() {
        let req = Request::get("/productpage?u=test")
            .header(HOST, "productpage:9080")
            .header("end-user", "jason")
            .body(())
            .unwrap();
        let line = RequestLine::of(&req).render(
            "productpage",
            StatusCode::OK,
            Duration::from_micros(1500),
        );
        assert_eq!(
            line,
            "productpage GET /productpage?u=test HTTP/1.1 200 host=productpage:9080 end-user=jason x-request-id=- 1.5ms"
        );
    }

    #[test]
    fn h2_authority_is_the_host_and_values_are_cleaned() {
        let req = Request::get("http://httpbin-shadow:8000/headers")
            .version(Version::HTTP_2)
            .header("end-user", "a b\tc")
            .header("x-request-id", "")
            .body(())
            .unwrap();
        let line = RequestLine::of(&req).render("httpbin", StatusCode::OK, Duration::ZERO);
        assert_eq!(
            line,
            "httpbin GET /headers HTTP/2 200 host=httpbin-shadow:8000 end-user=a_b_c x-request-id=- 0.0ms"
        );
    }
}
