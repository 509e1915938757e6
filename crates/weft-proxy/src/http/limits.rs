//! Envoy's limits on downstream HTTP, with Envoy's defaults: the size and count of a request's
//! headers (431 beyond them), how long the headers may take, the stream idle timeout (408 with
//! flag `SI`), and the premature-reset guard against HTTP/2 rapid reset (CVE-2023-44487): a
//! connection on which at least 500 streams closed, half of them reset by the client within a
//! second of opening, is closed.
//!
//! Each limit is the HCM's field when the control plane sets it, else the proxy's default
//! (`weft proxy --max-request-headers-kb …`), which is Envoy's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::ProxyError;

/// Envoy's `premature_reset_total_stream_count`.
pub const PREMATURE_RESET_STREAMS: u32 = 500;
/// Envoy's `premature_reset_min_stream_lifetime_seconds`.
pub const PREMATURE_RESET_LIFETIME: Duration = Duration::from_secs(1);

/// hyper's HTTP/1.1 header count limit when none is set.
const HYPER_MAX_HEADERS: u32 = 100;

/// The limits of one downstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// `max_request_headers_kb`: the request line and headers (HTTP/1.1) or the header list
    /// (HTTP/2), in KiB. Envoy's default 60; at most 8192.
    pub max_request_headers_kb: u32,
    /// `common_http_protocol_options.max_headers_count`. Envoy's default 100.
    pub max_headers_count: u32,
    /// `request_headers_timeout`: from the first byte of a request to the end of its headers.
    /// Envoy's default is none, and the stream idle timeout, which starts with the stream,
    /// bounds the headers then; so does Weft's.
    pub request_headers_timeout: Option<Duration>,
    /// `stream_idle_timeout`: a request whose body or response head has seen no progress for
    /// this long gets 408 (`SI`, `stream_idle_timeout`). Envoy's default 5 minutes.
    pub stream_idle_timeout: Option<Duration>,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_request_headers_kb: 60,
            max_headers_count: 100,
            request_headers_timeout: None,
            stream_idle_timeout: Some(Duration::from_secs(300)),
        }
    }
}

impl HttpLimits {
    /// How long a request's headers may take: `request_headers_timeout`, else the stream
    /// idle timeout.
    pub fn headers_timeout(&self) -> Option<Duration> {
        match (self.request_headers_timeout, self.stream_idle_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The header limits hyper's codec does not hold exactly: the size (Envoy's: keys and
    /// values summed) on every request, the count on HTTP/2 (HTTP/1.1's is the codec's). The
    /// response code details of a request over one, if it is.
    pub(crate) fn headers_refused(
        &self,
        version: http::Version,
        headers: &http::HeaderMap,
    ) -> Option<&'static str> {
        if version == http::Version::HTTP_2 && headers.len() > self.max_headers_count as usize {
            return Some("http2.too_many_headers");
        }
        let size: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        (size > self.max_request_headers_kb as usize * 1024).then_some("http1.headers_too_large")
    }

    /// Sets the limits on a connection builder.
    pub(crate) fn configure<E>(&self, builder: &mut hyper_util::server::conn::auto::Builder<E>) {
        let head = self.max_request_headers_kb as usize * 1024;
        let mut h1 = builder.http1();
        // hyper's read buffer holds the whole head; it takes no less than 8 KiB.
        h1.max_buf_size(head.max(8192))
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.headers_timeout());
        // hyper's own limit is Envoy's 100, with the headers parsed on the stack; any other
        // count puts them on the heap for every request.
        if self.max_headers_count != HYPER_MAX_HEADERS {
            h1.max_headers(self.max_headers_count as usize);
        }
        builder
            .http2()
            .max_header_list_size(u32::try_from(head).unwrap_or(u32::MAX));
    }
}

/// The limits an HCM sets (each unset field takes the proxy's default), and the counters they
/// feed, by Envoy's names.
#[derive(Debug, Clone)]
pub struct HcmLimits {
    max_request_headers_kb: Option<u32>,
    max_headers_count: Option<u32>,
    /// `Some(None)`: set to zero, disabled.
    request_headers_timeout: Option<Option<Duration>>,
    stream_idle_timeout: Option<Option<Duration>>,
    pub counters: Arc<Counters>,
}

/// `http.<stat_prefix>.…` counters of the limits.
#[derive(Debug)]
pub struct Counters {
    /// `downstream_cx_protocol_error`: a request the codec refused (malformed, smuggling
    /// attempts, headers over the limits).
    pub protocol_error: Arc<AtomicU64>,
    /// `downstream_rq_header_timeout`.
    pub header_timeout: Arc<AtomicU64>,
    /// `downstream_rq_idle_timeout`.
    pub idle_timeout: Arc<AtomicU64>,
    /// `downstream_rq_too_many_premature_resets`.
    pub premature_resets: Arc<AtomicU64>,
}

impl Counters {
    fn new(stat_prefix: &str) -> Self {
        let c =
            |name: &str| crate::snapshot::counter::counter(&format!("http.{stat_prefix}.{name}"));
        Counters {
            protocol_error: c("downstream_cx_protocol_error"),
            header_timeout: c("downstream_rq_header_timeout"),
            idle_timeout: c("downstream_rq_idle_timeout"),
            premature_resets: c("downstream_rq_too_many_premature_resets"),
        }
    }
}

impl HcmLimits {
    pub(crate) fn compile(h: &hcm::HttpConnectionManager, what: &str) -> Result<Self, ProxyError> {
        let kb = h.max_request_headers_kb.as_ref().map(|v| v.value);
        if let Some(kb) = kb
            && !(1..=8192).contains(&kb)
        {
            return Err(ProxyError::Config(format!(
                "{what}: max_request_headers_kb {kb} is out of range (1 to 8192, as Envoy's)"
            )));
        }
        let count = h
            .common_http_protocol_options
            .as_ref()
            .and_then(|o| o.max_headers_count.as_ref())
            .map(|v| v.value);
        if count == Some(0) {
            return Err(ProxyError::Config(format!(
                "{what}: common_http_protocol_options.max_headers_count must be at least 1"
            )));
        }
        let duration = |d: &Option<envoy_types::pb::google::protobuf::Duration>, field: &str| {
            d.as_ref()
                .map(|d| {
                    if d.seconds < 0 || d.nanos < 0 {
                        return Err(ProxyError::Config(format!(
                            "{what}: {field} must not be negative"
                        )));
                    }
                    let d = Duration::new(d.seconds as u64, d.nanos as u32);
                    Ok((!d.is_zero()).then_some(d))
                })
                .transpose()
        };
        Ok(HcmLimits {
            max_request_headers_kb: kb,
            max_headers_count: count,
            request_headers_timeout: duration(
                &h.request_headers_timeout,
                "request_headers_timeout",
            )?,
            stream_idle_timeout: duration(&h.stream_idle_timeout, "stream_idle_timeout")?,
            counters: Arc::new(Counters::new(&h.stat_prefix)),
        })
    }

    /// The limits in force: this HCM's, else `defaults`.
    pub fn effective(&self, defaults: &HttpLimits) -> HttpLimits {
        HttpLimits {
            max_request_headers_kb: self
                .max_request_headers_kb
                .unwrap_or(defaults.max_request_headers_kb),
            max_headers_count: self.max_headers_count.unwrap_or(defaults.max_headers_count),
            request_headers_timeout: self
                .request_headers_timeout
                .unwrap_or(defaults.request_headers_timeout),
            stream_idle_timeout: self
                .stream_idle_timeout
                .unwrap_or(defaults.stream_idle_timeout),
        }
    }
}

/// Resolves once `progress` has not moved for `timeout`. Checked four times per timeout, so
/// an idle stream is noticed within 1¼ timeouts; a request that ends sooner never wakes it.
/// `timer` is reset for each check: a connection's requests one after another reuse one timer,
/// which a later deadline only moves (no timer registered and removed per request).
pub(crate) async fn stream_idle(
    timeout: Duration,
    progress: &AtomicU64,
    mut timer: Pin<&mut tokio::time::Sleep>,
) {
    let tick = (timeout / 4).max(Duration::from_millis(10));
    let mut seen = progress.load(Ordering::Relaxed);
    let mut since = tokio::time::Instant::now();
    let mut next = since + tick;
    loop {
        timer.as_mut().reset(next);
        timer.as_mut().await;
        let now = tokio::time::Instant::now();
        let moved = progress.load(Ordering::Relaxed);
        if moved != seen {
            seen = moved;
            since = now;
        } else if now - since >= timeout {
            return;
        }
        next = now + tick;
    }
}

/// A connection's stream tally for the premature-reset guard.
#[derive(Debug, Default)]
pub(crate) struct Resets {
    closed: AtomicU32,
    premature: AtomicU32,
    tripped: tokio::sync::Notify,
}

impl Resets {
    /// Resolves when the connection has had too many premature resets.
    pub async fn tripped(&self) {
        self.tripped.notified().await
    }

    /// Whether the connection's closed streams trip the guard (Envoy's
    /// `maybeDrainDueToPrematureResets`).
    fn over(closed: u32, premature: u32) -> bool {
        closed >= PREMATURE_RESET_STREAMS && u64::from(premature) * 2 >= u64::from(closed)
    }

    /// Counts one stream, made when the request arrives (before its handler first runs, so a
    /// stream reset at once is counted too).
    pub fn stream(self: &Arc<Self>) -> StreamGuard {
        StreamGuard {
            resets: self.clone(),
            started: Instant::now(),
            answered: false,
        }
    }
}

/// One stream of a connection; a stream dropped before its response head, within
/// [`PREMATURE_RESET_LIFETIME`], was reset prematurely by the client.
pub(crate) struct StreamGuard {
    resets: Arc<Resets>,
    started: Instant,
    answered: bool,
}

impl StreamGuard {
    pub fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let r = &self.resets;
        let closed = r.closed.fetch_add(1, Ordering::Relaxed) + 1;
        let premature = if !self.answered && self.started.elapsed() < PREMATURE_RESET_LIFETIME {
            r.premature.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            r.premature.load(Ordering::Relaxed)
        };
        if Resets::over(closed, premature) {
            r.tripped.notify_one();
        }
    }
}

/// A downstream connection whose writes may be blocked (the client reads nothing) for at most
/// `limit` before the connection fails: a peer that floods frames needing an answer (SETTINGS,
/// PING) and never reads the answers, or a stalled reader, cannot hold it open. The limit is
/// the stream idle timeout: no progress on any stream for that long.
pub(crate) struct WriteStall<IO> {
    io: IO,
    limit: Option<Duration>,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<IO> WriteStall<IO> {
    pub fn new(io: IO, limit: Option<Duration>) -> Self {
        WriteStall {
            io,
            limit,
            timer: None,
        }
    }

    /// A write returned `Pending`: pending still, or an error once blocked for the limit.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let Some(limit) = self.limit else {
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client read nothing for {limit:?} (stream idle timeout)"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn done<T>(
        &mut self,
        r: Poll<std::io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.timer = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.stalled(cx),
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteStall<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteStall<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.done(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.done(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.done(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

    #[test]
    fn hcm_fields_override_the_defaults_and_zero_disables() {
        let h = hcm::HttpConnectionManager {
            stat_prefix: "t".into(),
            max_request_headers_kb: Some(UInt32Value { value: 8 }),
            stream_idle_timeout: Some(PbDuration {
                seconds: 0,
                nanos: 0,
            }),
            request_headers_timeout: Some(PbDuration {
                seconds: 2,
                nanos: 0,
            }),
            ..Default::default()
        };
        let l = HcmLimits::compile(&h, "l")
            .unwrap()
            .effective(&HttpLimits::default());
        assert_eq!(l.max_request_headers_kb, 8);
        assert_eq!(l.max_headers_count, 100);
        assert_eq!(l.stream_idle_timeout, None);
        assert_eq!(l.headers_timeout(), Some(Duration::from_secs(2)));
        // Unset: Envoy's defaults, the headers bounded by the stream idle timeout.
        let unset = hcm::HttpConnectionManager::default();
        let d = HcmLimits::compile(&unset, "l")
            .unwrap()
            .effective(&HttpLimits::default());
        assert_eq!(d, HttpLimits::default());
        assert_eq!(d.headers_timeout(), Some(Duration::from_secs(300)));
    }

    #[test]
    fn out_of_range_limits_are_refused_with_the_field() {
        let h = hcm::HttpConnectionManager {
            max_request_headers_kb: Some(UInt32Value { value: 9000 }),
            ..Default::default()
        };
        let e = HcmLimits::compile(&h, "listener x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_request_headers_kb 9000"), "{e}");
        let h = hcm::HttpConnectionManager {
            stream_idle_timeout: Some(PbDuration {
                seconds: -1,
                nanos: 0,
            }),
            ..Default::default()
        };
        let e = HcmLimits::compile(&h, "listener x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("stream_idle_timeout must not be negative"),
            "{e}"
        );
    }

    #[test]
    fn premature_resets_trip_at_half_of_500_streams() {
        assert!(!Resets::over(499, 499));
        assert!(Resets::over(500, 250));
        assert!(!Resets::over(500, 249));
        let r = Arc::new(Resets::default());
        // Answered streams never count as premature.
        for _ in 0..600 {
            let mut g = r.stream();
            g.answered();
        }
        for _ in 0..599 {
            drop(r.stream());
        }
        assert_eq!(r.premature.load(Ordering::Relaxed), 599);
        assert!(!Resets::over(1199, 599));
        drop(r.stream());
        let tripped = r.tripped();
        tokio::pin!(tripped);
        // The permit stored by notify_one is taken at once.
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(tripped.as_mut().poll(&mut cx).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn stream_idle_fires_only_after_a_quiet_timeout() {
        let progress = Arc::new(AtomicU64::new(0));
        let p = progress.clone();
        let start = tokio::time::Instant::now();
        let mover = tokio::spawn(async move {
            for i in 1..=10 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                p.store(i, Ordering::Relaxed);
            }
        });
        let timer = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        stream_idle(Duration::from_secs(2), &progress, timer).await;
        let waited = start.elapsed();
        // Moving every 0.5 s for 5 s, then quiet: fires 2 to 2.5 s after the last move.
        assert!(
            waited >= Duration::from_secs(7) && waited <= Duration::from_millis(7600),
            "{waited:?}"
        );
        mover.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_reused_by_a_connections_streams_times_each_from_its_own_start() {
        let progress = AtomicU64::new(0);
        let timeout = Duration::from_secs(2);
        let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
        // A stream that ends early leaves the timer set for its next check (0.5 s).
        let early = tokio::time::timeout(
            Duration::from_millis(100),
            stream_idle(timeout, &progress, timer.as_mut()),
        )
        .await;
        assert!(early.is_err(), "a quiet stream is not idle after 0.1 s");
        for idle_before in [Duration::ZERO, Duration::from_secs(10)] {
            // The next stream at once (its checks later than the one set), then one after the
            // connection idled past the timer's last deadline: each idle 2 s after its start.
            tokio::time::sleep(idle_before).await;
            let start = tokio::time::Instant::now();
            stream_idle(timeout, &progress, timer.as_mut()).await;
            let waited = start.elapsed();
            assert!(
                waited >= timeout && waited < timeout + Duration::from_millis(10),
                "{waited:?} after an idle {idle_before:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_blocked_for_the_limit_fails_and_progress_resets_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut peer) = tokio::io::duplex(1024);
        let mut io = WriteStall::new(client, Some(Duration::from_secs(2)));
        let chunk = vec![0u8; 512];
        // The peer reads 512 bytes a second: writes keep progressing past the limit.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                peer.read_exact(&mut buf).await.unwrap();
            }
            peer
        });
        for _ in 0..6 {
            io.write_all(&chunk).await.unwrap();
        }
        let _peer = reader.await.unwrap();
        // Now nobody reads: the write fails once blocked for 2 s.
        let start = tokio::time::Instant::now();
        let err = loop {
            if let Err(e) = io.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(
            start.elapsed() >= Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
    }
}
