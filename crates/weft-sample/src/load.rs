//! The load generator: closed loop (as fast as the connections allow) or open loop at a
//! fixed rate with latency measured from each request's scheduled send time (like wrk2 and
//! `oha -q`), over HTTP/1.1 or h2c.

mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info};

pub use report::{ErrorCounts, LatencySummary, LoadReport};
use report::{FailureKind, Stats};

use crate::error::{SampleError, describe_io};

/// Send time when neither `--duration` nor `--requests` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Pause after a failed connect in a closed loop, so a down target does not spin the CPU.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

/// Arguments of `weft sample load`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct LoadArgs {
    /// Target URL (plain HTTP), e.g. http://127.0.0.1:8080/productpage.
    #[arg(long)]
    pub url: String,
    /// Requests per second across all connections; 0 sends as fast as possible (closed loop).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Connections, each carrying one request at a time.
    #[arg(long, short = 'c', default_value_t = 4)]
    pub connections: usize,
    /// How long to send (default 10s unless --requests is given).
    #[arg(long, short = 'd', value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How many requests to send (with --duration, whichever ends first).
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,
    /// Speak HTTP/2 without TLS (h2c with prior knowledge).
    #[arg(long)]
    pub http2: bool,
    /// Request header NAME:VALUE (repeatable); a `host` header sets the authority.
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Request method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// Time limit for each request, connection setup included.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print the report as JSON (read by the caller; `run_load` only measures).
    #[arg(long)]
    pub json: bool,
}

impl LoadArgs {
    /// Arguments for `url` with the command-line defaults.
    pub fn new(url: impl Into<String>) -> LoadArgs {
        LoadArgs {
            url: url.into(),
            rate: 0.0,
            connections: 4,
            duration: None,
            requests: None,
            http2: false,
            headers: Vec::new(),
            method: "GET".to_string(),
            timeout: Duration::from_secs(10),
            json: false,
        }
    }
}

/// The checked request and where to send it.
struct Target {
    /// `host:port` to connect to.
    host: String,
    port: u16,
    /// The authority sent as Host / `:authority`.
    authority: Authority,
    path_and_query: String,
    method: Method,
    headers: HeaderMap,
    http2: bool,
}

/// Hands out request slots in order: when each may be sent, and when to stop.
struct Schedule {
    start: Instant,
    next: AtomicU64,
    rate: Option<f64>,
    end: Option<Instant>,
    limit: Option<u64>,
}

impl Schedule {
    /// The next request's send time, or `None` when the run is over.
    fn take(&self) -> Option<Instant> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if self.limit.is_some_and(|n| i >= n) {
            return None;
        }
        let at = match self.rate {
            Some(rate) => self.start + Duration::from_secs_f64(i as f64 / rate),
            None => Instant::now(),
        };
        if self.end.is_some_and(|end| at >= end) {
            return None;
        }
        Some(at)
    }
}

/// Sends load as `args` says and reports what came back. Failed requests are counted, not
/// returned as errors; only bad arguments are errors.
pub async fn run_load(args: LoadArgs) -> Result<LoadReport, SampleError> {
    let target = Arc::new(target(&args)?);
    if !args.rate.is_finite() || args.rate < 0.0 {
        return Err(SampleError::Rate(args.rate));
    }
    if args.connections == 0 {
        return Err(SampleError::Connections);
    }
    let rate = (args.rate > 0.0).then_some(args.rate);
    let duration = match (args.duration, args.requests) {
        (None, None) => Some(DEFAULT_DURATION),
        (d, _) => d,
    };
    info!(
        url = %args.url,
        rate = ?rate,
        connections = args.connections,
        duration = ?duration,
        requests = ?args.requests,
        http2 = args.http2,
        "sending load"
    );
    let start = Instant::now();
    let schedule = Arc::new(Schedule {
        start,
        next: AtomicU64::new(0),
        rate,
        end: duration.map(|d| start + d),
        limit: args.requests,
    });
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        workers.spawn(worker(target.clone(), schedule.clone(), args.timeout));
    }
    let mut stats = Stats::new();
    while let Some(joined) = workers.join_next().await {
        let s = joined.map_err(|e| SampleError::Task {
            what: "load worker",
            reason: e.to_string(),
        })?;
        stats.merge(s);
    }
    Ok(stats.report(args.url, rate, start.elapsed()))
}

fn target(args: &LoadArgs) -> Result<Target, SampleError> {
    let bad = |reason: String| SampleError::Url {
        url: args.url.clone(),
        reason,
    };
    let uri: Uri = args.url.parse().map_err(|_| bad("not a URL".into()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(s) => return Err(bad(format!("scheme {s:?} is not supported, only http"))),
        None => return Err(bad("missing http:// scheme".into())),
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| bad("missing host".into()))?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(80);
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let method = Method::from_bytes(args.method.as_bytes())
        .map_err(|_| SampleError::Method(args.method.clone()))?;
    let mut headers = HeaderMap::new();
    for h in &args.headers {
        let bad = || SampleError::Header(h.clone());
        let (name, value) = h.split_once(':').ok_or_else(bad)?;
        let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| bad())?;
        let value = HeaderValue::from_str(value.trim()).map_err(|_| bad())?;
        headers.append(name, value);
    }
    // A `host` header chooses the authority (virtual host) without changing where we connect.
    let authority = match headers.remove(HOST) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<Authority>().ok())
            .ok_or_else(|| SampleError::Header(format!("host:{v:?}")))?,
        None => authority,
    };
    Ok(Target {
        host,
        port,
        authority,
        path_and_query,
        method,
        headers,
        http2: args.http2,
    })
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

type Failure = (FailureKind, String);

async fn connect(t: &Target) -> Result<Sender, Failure> {
    let stream = TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| {
            (
                FailureKind::Connect,
                format!("connect {}:{}: {}", t.host, t.port, describe_io(&e)),
            )
        })?;
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let handshake = |e: hyper::Error| (FailureKind::Connect, format!("handshake: {e}"));
    if t.http2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "load connection ended");
            }
        });
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = http1::handshake(io).await.map_err(handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "load connection ended");
            }
        });
        Ok(Sender::H1(sender))
    }
}

/// Sends one request on `conn` (connecting first if needed); the answer's status and body size.
async fn send_one(t: &Target, conn: &mut Option<Sender>) -> Result<(u16, u64), Failure> {
    let mut sender = match conn.take() {
        Some(s) if !s.is_closed() => s,
        _ => connect(t).await?,
    };
    let other = |e: hyper::Error| (FailureKind::Other, e.to_string());
    let mut builder = Request::builder().method(t.method.clone());
    builder = if t.http2 {
        builder.uri(format!("http://{}{}", t.authority, t.path_and_query))
    } else {
        builder
            .uri(t.path_and_query.as_str())
            .header(HOST, t.authority.as_str())
    };
    let mut req = builder
        .body(Empty::new())
        .map_err(|e| (FailureKind::Other, e.to_string()))?;
    req.headers_mut().extend(t.headers.clone());
    let resp = match &mut sender {
        Sender::H1(s) => {
            s.ready().await.map_err(other)?;
            s.send_request(req).await.map_err(other)?
        }
        Sender::H2(s) => {
            s.ready().await.map_err(other)?;
            s.send_request(req).await.map_err(other)?
        }
    };
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.map_err(other)?.data_ref() {
            bytes += data.len() as u64;
        }
    }
    *conn = Some(sender);
    Ok((status, bytes))
}

async fn worker(t: Arc<Target>, schedule: Arc<Schedule>, timeout: Duration) -> Stats {
    let open_loop = schedule.rate.is_some();
    let mut stats = Stats::new();
    let mut conn: Option<Sender> = None;
    while let Some(at) = schedule.take() {
        if open_loop {
            tokio::time::sleep_until(at).await;
        }
        // Open loop: from the scheduled time, so waiting behind a slow answer counts.
        let started = if open_loop { at } else { Instant::now() };
        match tokio::time::timeout(timeout, send_one(&t, &mut conn)).await {
            Ok(Ok((status, bytes))) => stats.answer(status, started.elapsed(), bytes),
            Ok(Err((kind, text))) => {
                stats.failure(kind, text);
                if kind == FailureKind::Connect && !open_loop {
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                }
            }
            Err(_) => {
                conn = None;
                stats.failure(
                    FailureKind::Timeout,
                    format!("no answer within {timeout:?}"),
                );
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::EchoServer;
    use crate::echo::testing::base;

    async fn echo() -> EchoServer {
        EchoServer::bind(base()).await.unwrap()
    }

    #[tokio::test]
    async fn closed_loop_counts_every_answer() {
        let s = echo().await;
        let mut args = LoadArgs::new(format!("http://{}/", s.http_addrs()[0]));
        args.requests = Some(200);
        let r = run_load(args).await.unwrap();
        assert_eq!(r.total, 200, "{r}");
        assert_eq!(r.count(200), 200, "{r}");
        assert_eq!(r.errors, ErrorCounts::default());
        assert!(r.bytes > 0);
        assert!(r.latency_ms.max > 0.0);
        assert_eq!(r.target_rate, None);
    }

    #[tokio::test]
    async fn closed_loop_over_h2c_with_headers() {
        let s = echo().await;
        let mut args = LoadArgs::new(format!("http://{}/headers", s.http_addrs()[0]));
        args.requests = Some(50);
        args.http2 = true;
        args.connections = 2;
        args.headers = vec!["end-user: jason".into(), "host:reviews:9080".into()];
        let r = run_load(args).await.unwrap();
        assert_eq!(r.count(200), 50, "{r}");
    }

    #[tokio::test]
    async fn open_loop_achieves_about_the_rate() {
        let s = echo().await;
        let mut args = LoadArgs::new(format!("http://{}/", s.http_addrs()[0]));
        args.rate = 50.0;
        args.duration = Some(Duration::from_secs(1));
        let r = run_load(args).await.unwrap();
        // The schedule holds exactly rate × duration slots; timing is only loosely checked.
        assert_eq!(r.total, 50, "{r}");
        assert_eq!(r.count(200), 50, "{r}");
        assert!(r.rate >= 25.0, "{r}");
        assert_eq!(r.target_rate, Some(50.0));
        assert!(r.duration_secs >= 0.9, "{r}");
    }

    #[tokio::test]
    async fn open_loop_latency_counts_queueing_behind_slow_answers() {
        let s = echo().await;
        // One connection, 100ms answers, a request scheduled every 50ms: the schedule falls
        // behind, and the last of 10 requests waits ~0.5s before it can even be sent.
        let mut args = LoadArgs::new(format!("http://{}/delay/100ms", s.http_addrs()[0]));
        args.rate = 20.0;
        args.connections = 1;
        args.requests = Some(10);
        let r = run_load(args).await.unwrap();
        assert_eq!(r.count(200), 10, "{r}");
        assert!(r.latency_ms.p50 >= 100.0, "{r}");
        assert!(r.latency_ms.max >= 400.0, "{r}");
    }

    #[tokio::test]
    async fn status_codes_are_counted() {
        let s = echo().await;
        let mut args = LoadArgs::new(format!("http://{}/status/503", s.http_addrs()[0]));
        args.requests = Some(20);
        let r = run_load(args).await.unwrap();
        assert_eq!(r.count(503), 20, "{r}");
        assert!(r.to_string().starts_with("503: 20 |"), "{r}");
    }

    #[tokio::test]
    async fn timeouts_and_connect_errors_are_counted() {
        let s = echo().await;
        let mut args = LoadArgs::new(format!("http://{}/delay/2s", s.http_addrs()[0]));
        args.requests = Some(2);
        args.connections = 2;
        args.timeout = Duration::from_millis(100);
        let r = run_load(args).await.unwrap();
        assert_eq!(r.errors.timeout, 2, "{r}");
        assert_eq!(r.answered(), 0);

        let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let mut args = LoadArgs::new(format!("http://{addr}/"));
        args.requests = Some(3);
        args.connections = 1;
        let r = run_load(args).await.unwrap();
        assert_eq!(r.errors.connect, 3, "{r}");
        assert!(
            r.last_error
                .as_deref()
                .unwrap()
                .contains("connection refused"),
            "{r}"
        );
    }

    #[tokio::test]
    async fn bad_arguments_are_errors() {
        let bad = |f: fn(&mut LoadArgs)| {
            let mut a = LoadArgs::new("http://127.0.0.1:1/");
            f(&mut a);
            a
        };
        assert!(matches!(
            run_load(LoadArgs::new("https://x/")).await,
            Err(SampleError::Url { .. })
        ));
        assert!(matches!(
            run_load(LoadArgs::new("x:80")).await,
            Err(SampleError::Url { .. })
        ));
        assert!(matches!(
            run_load(bad(|a| a.headers = vec!["no-colon".into()])).await,
            Err(SampleError::Header(_))
        ));
        assert!(matches!(
            run_load(bad(|a| a.method = "GE T".into())).await,
            Err(SampleError::Method(_))
        ));
        assert!(matches!(
            run_load(bad(|a| a.rate = -1.0)).await,
            Err(SampleError::Rate(_))
        ));
        assert!(matches!(
            run_load(bad(|a| a.connections = 0)).await,
            Err(SampleError::Connections)
        ));
    }

    #[test]
    fn host_header_sets_the_authority() {
        let mut a = LoadArgs::new("http://127.0.0.1:8080/p?q=1");
        a.headers = vec!["Host: reviews:9080".into(), "x-a:1".into()];
        let t = target(&a).unwrap();
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, 8080);
        assert_eq!(t.authority.as_str(), "reviews:9080");
        assert_eq!(t.path_and_query, "/p?q=1");
        assert!(t.headers.get(HOST).is_none());
        assert_eq!(t.headers["x-a"], "1");
        let t = target(&LoadArgs::new("http://[::1]")).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        assert_eq!(t.path_and_query, "/");
    }

    #[test]
    fn clap_defaults_match_new() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            load: LoadArgs,
        }
        let cli = Cli::try_parse_from(["load", "--url", "http://a/"]).unwrap();
        assert_eq!(cli.load, LoadArgs::new("http://a/"));
        let cli = Cli::try_parse_from([
            "load",
            "--url",
            "http://a/",
            "--rate",
            "100",
            "-c",
            "8",
            "--duration",
            "5s",
            "-H",
            "a:b",
            "--header",
            "c:d",
            "--http2",
            "--json",
        ])
        .unwrap();
        assert_eq!(cli.load.rate, 100.0);
        assert_eq!(cli.load.connections, 8);
        assert_eq!(cli.load.duration, Some(Duration::from_secs(5)));
        assert_eq!(cli.load.headers, vec!["a:b", "c:d"]);
        assert!(cli.load.http2 && cli.load.json);
    }
}
