//! The load generator: closed loop (as fast as the connections allow) or open loop at a
//! fixed rate with latency measured from each request's scheduled send time (like wrk2 and
//! `oha -q`), over HTTP/1.1 or h2c. It also takes fortio's way of writing a load
//! (`weft sample load -c 2 -qps 0 -n 20 http://httpbin:8000/get`, for Istio's circuit-breaking
//! task): each of the `-c` connections is one worker with its own keep-alive connection,
//! reopened when the server closes it, and the report counts answers by code as fortio does.

mod report;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST};
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
    /// Target URL (plain HTTP), e.g. http://127.0.0.1:8080/productpage; it may also be given
    /// last, without --url, as fortio takes it.
    #[arg(long)]
    pub url: Option<String>,
    /// Requests per second across all connections; 0 sends as fast as possible (closed loop).
    /// fortio's `-qps` (a negative -qps also means as fast as possible).
    #[arg(long, visible_alias = "qps", default_value_t = 0.0)]
    pub rate: f64,
    /// Connections, each carrying one request at a time (fortio's `-c`).
    #[arg(long, short = 'c', default_value_t = 4)]
    pub connections: usize,
    /// How long to send (default 10s unless --requests is given; fortio's `-t`).
    #[arg(long, short = 'd', value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// How many requests to send (with --duration, whichever ends first; fortio's `-n`).
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
    /// Also report every INTERVAL while sending: one JSON line per interval on standard error,
    /// the report of the requests that finished in it (with `at_secs`, its end).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// The target URL and fortio-style flags: `-qps N`, `-c N`, `-n N`, `-t DURATION`,
    /// `-H NAME:VALUE`, `-timeout DURATION`, `-loglevel LEVEL` (ignored); from the first of
    /// them on, the other flags are read here too, with one dash or two.
    #[arg(value_name = "URL", allow_hyphen_values = true, num_args = 0..)]
    pub fortio: Vec<String>,
}

impl LoadArgs {
    /// Arguments for `url` with the command-line defaults.
    pub fn new(url: impl Into<String>) -> LoadArgs {
        LoadArgs {
            url: Some(url.into()),
            rate: 0.0,
            connections: 4,
            duration: None,
            requests: None,
            http2: false,
            headers: Vec::new(),
            method: "GET".to_string(),
            timeout: Duration::from_secs(10),
            json: false,
            interval: None,
            fortio: Vec::new(),
        }
    }

    /// Folds the fortio-style arguments (and a URL given last) into the fields; `fortio` is
    /// empty afterwards, and a target URL is set.
    pub fn resolve(mut self) -> Result<LoadArgs, SampleError> {
        let mut rest = std::mem::take(&mut self.fortio).into_iter();
        while let Some(arg) = rest.next() {
            if !arg.starts_with('-') || arg == "-" {
                if self.url.is_some() {
                    return Err(load_arg(&arg, "a second target URL; give one"));
                }
                self.url = Some(arg);
                continue;
            }
            let flag = arg.trim_start_matches('-');
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| rest.next())
                    .ok_or_else(|| load_arg(&arg, "needs a value"))
            };
            match name {
                "qps" | "rate" => {
                    let v = value()?;
                    let qps: f64 = v.parse().map_err(|_| {
                        load_arg(&v, "-qps takes a number; 0 is as fast as possible")
                    })?;
                    // fortio: -qps 0 or a negative -qps is as fast as possible.
                    self.rate = if qps < 0.0 { 0.0 } else { qps };
                }
                "c" | "connections" => {
                    let v = value()?;
                    self.connections = v
                        .parse()
                        .map_err(|_| load_arg(&v, "-c takes a number of connections"))?;
                }
                "n" | "requests" => {
                    let v = value()?;
                    self.requests = Some(
                        v.parse()
                            .map_err(|_| load_arg(&v, "-n takes a number of requests"))?,
                    );
                }
                "t" | "d" | "duration" => self.duration = Some(duration_arg(&value()?)?),
                "timeout" => self.timeout = duration_arg(&value()?)?,
                "H" | "header" => self.headers.push(value()?),
                "method" => self.method = value()?,
                "url" => {
                    if self.url.is_some() {
                        return Err(load_arg(&arg, "a second target URL; give one"));
                    }
                    self.url = Some(value()?);
                }
                "loglevel" => {
                    value()?;
                }
                "http2" => self.http2 = true,
                "json" => self.json = true,
                "allow-initial-errors" | "quiet" => {}
                _ => {
                    return Err(load_arg(
                        &arg,
                        "unknown flag; fortio-style flags are -qps, -c, -n, -t, -H, -timeout and -loglevel",
                    ));
                }
            }
        }
        if self.url.is_none() {
            return Err(SampleError::NoUrl);
        }
        Ok(self)
    }
}

fn load_arg(arg: &str, reason: &str) -> SampleError {
    SampleError::LoadArg {
        arg: arg.to_string(),
        reason: reason.to_string(),
    }
}

/// A fortio duration: `30s`, `1m`, `500ms`, or a plain number of seconds; more than zero.
fn duration_arg(v: &str) -> Result<Duration, SampleError> {
    let bad = || load_arg(v, "takes a duration such as 30s, 1m or 500ms");
    let d = match v.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => {
            Duration::try_from_secs_f64(secs).map_err(|_| bad())?
        }
        Ok(_) => return Err(bad()),
        Err(_) => humantime::parse_duration(v).map_err(|_| bad())?,
    };
    if d.is_zero() {
        return Err(bad());
    }
    Ok(d)
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
    let args = args.resolve()?;
    let url = args.url.clone().ok_or(SampleError::NoUrl)?;
    let target = Arc::new(target(&url, &args)?);
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
        url = %url,
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
    let window = args.interval.map(|_| Arc::new(Mutex::new(Stats::new())));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        workers.spawn(worker(
            target.clone(),
            schedule.clone(),
            args.timeout,
            window.clone(),
        ));
    }
    let (finished, done) = tokio::sync::oneshot::channel();
    let reporter = args.interval.zip(window).map(|(every, window)| {
        tokio::spawn(report_intervals(
            every,
            window,
            url.clone(),
            rate,
            args.connections,
            start,
            done,
        ))
    });
    let mut stats = Stats::new();
    while let Some(joined) = workers.join_next().await {
        let s = joined.map_err(|e| SampleError::Task {
            what: "load worker",
            reason: e.to_string(),
        })?;
        stats.merge(s);
    }
    if let Some(reporter) = reporter {
        let _ = finished.send(());
        let _ = reporter.await;
    }
    Ok(stats.report(url, rate, args.connections, start.elapsed()))
}

fn target(url: &str, args: &LoadArgs) -> Result<Target, SampleError> {
    let bad = |reason: String| SampleError::Url {
        url: url.to_string(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL".into()))?;
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

    /// Waits until a request can be sent; an error when the connection is gone.
    async fn ready(&mut self) -> Result<(), hyper::Error> {
        match self {
            Sender::H1(s) => s.ready().await,
            Sender::H2(s) => s.ready().await,
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

/// Sends one request on `conn` (connecting first if needed, counting the connections opened
/// in `stats`); the answer's status and body size. A connection the server closed is replaced
/// before the request is sent; one whose answer says `Connection: close` is not kept.
async fn send_one(
    t: &Target,
    conn: &mut Option<Sender>,
    stats: &mut Stats,
) -> Result<(u16, u64), Failure> {
    let other = |e: hyper::Error| (FailureKind::Other, e.to_string());
    let mut sender = match conn.take() {
        Some(s) if !s.is_closed() => s,
        _ => {
            let s = connect(t).await?;
            stats.connected();
            s
        }
    };
    if sender.ready().await.is_err() {
        // The server closed the idle connection: open another, as fortio does.
        sender = connect(t).await?;
        stats.connected();
        sender.ready().await.map_err(other)?;
    }
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
        Sender::H1(s) => s.send_request(req).await.map_err(other)?,
        Sender::H2(s) => s.send_request(req).await.map_err(other)?,
    };
    let status = resp.status().as_u16();
    let close = resp
        .headers()
        .get_all(CONNECTION)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let mut body = resp.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.map_err(other)?.data_ref() {
            bytes += data.len() as u64;
        }
    }
    if !close {
        *conn = Some(sender);
    }
    Ok((status, bytes))
}

/// Every `every`, the report of the requests that finished since the last one, as a JSON line
/// on standard error; once `done` fires, the last (partial) interval's.
async fn report_intervals(
    every: Duration,
    window: Arc<Mutex<Stats>>,
    url: String,
    rate: Option<f64>,
    connections: usize,
    start: Instant,
    mut done: tokio::sync::oneshot::Receiver<()>,
) {
    let mut last = Instant::now();
    let mut tick = tokio::time::interval_at(start + every, every);
    loop {
        let finished = tokio::select! {
            _ = tick.tick() => false,
            _ = &mut done => true,
        };
        eprintln!(
            "{}",
            interval_line(&window, &url, rate, connections, start, &mut last)
        );
        if finished {
            return;
        }
    }
}

/// The report of the requests in `window` since `last` (taken out of it), with `at_secs`.
fn interval_line(
    window: &Mutex<Stats>,
    url: &str,
    rate: Option<f64>,
    connections: usize,
    start: Instant,
    last: &mut Instant,
) -> serde_json::Value {
    let stats = match window.lock() {
        Ok(mut w) => std::mem::replace(&mut *w, Stats::new()),
        Err(p) => std::mem::replace(&mut *p.into_inner(), Stats::new()),
    };
    let now = Instant::now();
    let report = stats.report(url.to_string(), rate, connections, now - *last);
    *last = now;
    let mut line = serde_json::to_value(&report).unwrap_or_default();
    if let Some(obj) = line.as_object_mut() {
        obj.insert(
            "at_secs".into(),
            serde_json::json!((now - start).as_secs_f64()),
        );
    }
    line
}

/// Records into the worker's own tallies and, when reporting by interval, the shared window.
struct Tally {
    own: Stats,
    window: Option<Arc<Mutex<Stats>>>,
}

impl Tally {
    fn answer(&mut self, status: u16, latency: Duration, bytes: u64) {
        self.own.answer(status, latency, bytes);
        if let Some(w) = &self.window
            && let Ok(mut w) = w.lock()
        {
            w.answer(status, latency, bytes);
        }
    }

    fn failure(&mut self, kind: FailureKind, text: String) {
        if let Some(w) = &self.window
            && let Ok(mut w) = w.lock()
        {
            w.failure(kind, text.clone());
        }
        self.own.failure(kind, text);
    }
}

async fn worker(
    t: Arc<Target>,
    schedule: Arc<Schedule>,
    timeout: Duration,
    window: Option<Arc<Mutex<Stats>>>,
) -> Stats {
    let open_loop = schedule.rate.is_some();
    let mut tally = Tally {
        own: Stats::new(),
        window,
    };
    let mut conn: Option<Sender> = None;
    while let Some(at) = schedule.take() {
        if open_loop {
            tokio::time::sleep_until(at).await;
        }
        // Open loop: from the scheduled time, so waiting behind a slow answer counts.
        let started = if open_loop { at } else { Instant::now() };
        match tokio::time::timeout(timeout, send_one(&t, &mut conn, &mut tally.own)).await {
            Ok(Ok((status, bytes))) => tally.answer(status, started.elapsed(), bytes),
            Ok(Err((kind, text))) => {
                tally.failure(kind, text);
                if kind == FailureKind::Connect && !open_loop {
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                }
            }
            Err(_) => {
                conn = None;
                tally.failure(
                    FailureKind::Timeout,
                    format!("no answer within {timeout:?}"),
                );
            }
        }
    }
    tally.own
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
    async fn an_interval_reports_what_finished_in_it_and_starts_afresh() {
        let window = Mutex::new(Stats::new());
        {
            let mut w = window.lock().unwrap();
            w.answer(200, Duration::from_millis(2), 10);
            w.answer(503, Duration::from_millis(40), 0);
            w.failure(FailureKind::Connect, "connect: refused".into());
        }
        let start = Instant::now() - Duration::from_secs(10);
        let mut last = Instant::now() - Duration::from_secs(5);
        let line = interval_line(&window, "http://x/", Some(3.0), 1, start, &mut last);
        assert_eq!(line["total"], 3, "{line}");
        assert_eq!(line["statuses"]["503"], 1, "{line}");
        assert_eq!(line["errors"]["connect"], 1, "{line}");
        assert!(line["at_secs"].as_f64().unwrap() >= 10.0, "{line}");
        assert!(
            line["latency_ms"]["max"].as_f64().unwrap() >= 39.0,
            "{line}"
        );
        let next = interval_line(&window, "http://x/", Some(3.0), 1, start, &mut last);
        assert_eq!(next["total"], 0, "{next}");
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
        let t = target("http://127.0.0.1:8080/p?q=1", &a).unwrap();
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.port, 8080);
        assert_eq!(t.authority.as_str(), "reviews:9080");
        assert_eq!(t.path_and_query, "/p?q=1");
        assert!(t.headers.get(HOST).is_none());
        assert_eq!(t.headers["x-a"], "1");
        let t = target("http://[::1]", &LoadArgs::new("http://[::1]")).unwrap();
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

    fn parse(args: &[&str]) -> Result<LoadArgs, SampleError> {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            load: LoadArgs,
        }
        let cli = Cli::try_parse_from(std::iter::once("load").chain(args.iter().copied()))
            .map_err(|e| load_arg("", &e.to_string()))?;
        cli.load.resolve()
    }

    #[test]
    fn fortio_style_arguments() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            load: LoadArgs,
        }
        Cli::command().debug_assert();

        // Istio's circuit-breaking task, word for word (but the program name).
        let a = parse(&[
            "-c",
            "2",
            "-qps",
            "0",
            "-n",
            "20",
            "-loglevel",
            "Warning",
            "http://httpbin:8000/get",
        ])
        .unwrap();
        assert_eq!(a.url.as_deref(), Some("http://httpbin:8000/get"));
        assert_eq!((a.connections, a.requests, a.rate), (2, Some(20), 0.0));
        assert!(a.fortio.is_empty());

        let a = parse(&[
            "-c",
            "2",
            "-n",
            "20",
            "-qps",
            "0",
            "http://httpbin:8000/get",
        ])
        .unwrap();
        assert_eq!((a.connections, a.requests, a.rate), (2, Some(20), 0.0));

        let a = parse(&[
            "-qps",
            "5",
            "-c",
            "3",
            "-t",
            "2s",
            "-H",
            "end-user:jason",
            "-timeout=500ms",
            "--json",
            "http://x/",
        ])
        .unwrap();
        assert_eq!(a.rate, 5.0);
        assert_eq!(a.connections, 3);
        assert_eq!(a.duration, Some(Duration::from_secs(2)));
        assert_eq!(a.headers, vec!["end-user:jason"]);
        assert_eq!(a.timeout, Duration::from_millis(500));
        assert!(a.json);

        let a = parse(&["--qps", "10", "--url", "http://x/"]).unwrap();
        assert_eq!(a.rate, 10.0);
        let a = parse(&["-qps", "-1", "-t", "3", "http://x/"]).unwrap();
        assert_eq!(a.rate, 0.0);
        assert_eq!(a.duration, Some(Duration::from_secs(3)));

        let err = |args: &[&str]| parse(args).unwrap_err().to_string();
        assert!(err(&["-zz", "1", "http://x/"]).contains("unknown flag"));
        assert!(err(&["http://x/", "http://y/"]).contains("second target URL"));
        assert!(err(&["--url", "http://x/", "http://y/"]).contains("second target URL"));
        assert!(err(&["-qps", "fast", "http://x/"]).contains("-qps takes a number"));
        assert!(err(&["-qps", "1", "-c"]).contains("needs a value"));
        assert!(err(&["-qps", "1", "-t", "0", "http://x/"]).contains("takes a duration"));
        assert!(matches!(parse(&["-c", "2"]), Err(SampleError::NoUrl)));
    }

    #[tokio::test]
    async fn each_worker_keeps_its_connection_alive() {
        let s = echo().await;
        let r = run_load(
            parse(&[
                "-c",
                "2",
                "-qps",
                "0",
                "-n",
                "20",
                &format!("http://{}/get", s.http_addrs()[0]),
            ])
            .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(r.count(200), 20, "{r}");
        assert_eq!(r.sockets, 2, "{r}");
        assert!(r.to_string().contains("\nCode 200 : 20 (100.0 %)\n"), "{r}");
        assert!(
            r.to_string()
                .contains("Sockets used: 2 (for perfect keepalive, would be 2)"),
            "{r}"
        );
    }

    #[tokio::test]
    async fn connections_the_server_closes_are_reopened() {
        // Answers every request with a 503 and closes the connection (as an overloaded
        // server may): each request then needs a new socket, and none fails for it.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = s
                        .write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        let mut args = LoadArgs::new(format!("http://{addr}/get"));
        args.connections = 2;
        args.requests = Some(10);
        let r = run_load(args).await.unwrap();
        assert_eq!(r.count(503), 10, "{r}");
        assert_eq!(r.errors, ErrorCounts::default(), "{r}");
        assert_eq!(r.sockets, 10, "{r}");
        assert!(r.to_string().contains("\nCode 503 : 10 (100.0 %)\n"), "{r}");
    }
}
