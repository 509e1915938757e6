//! Bodies on the data path: request bodies counted on their way upstream, and response bodies
//! that are either the upstream's (counted) or a local reply, carrying a completion guard that
//! records telemetry when the body ends or is dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

pin_project_lite::pin_project! {
    /// A body that adds the size of each data frame to a shared counter.
    pub struct Counted<B> {
        #[pin]
        inner: B,
        bytes: Arc<AtomicU64>,
    }
}

impl<B> Counted<B> {
    pub fn new(inner: B, bytes: Arc<AtomicU64>) -> Self {
        Counted { inner, bytes }
    }
}

impl<B: Body<Data = Bytes>> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r
            && let Some(d) = f.data_ref()
        {
            this.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A copy of a request body taken while it streams upstream (Envoy's retry buffer): complete
/// bodies up to a limit can be sent again, to a retry or a mirror; a larger one, or one whose
/// stream failed, cannot.
pub struct Tee {
    capture: std::sync::Mutex<Capture>,
    limit: usize,
    /// True once the capture is over (complete or given up); `ended` wakes who waits for it.
    /// (Not a `watch` channel: that allocates eight `Notify`s for every request with a retry
    /// policy, which is Istio's default.)
    over: std::sync::atomic::AtomicBool,
    ended: tokio::sync::Notify,
}

#[derive(Default)]
struct Capture {
    frames: Vec<Bytes>,
    trailers: Option<http::HeaderMap>,
    size: usize,
    overflow: bool,
    complete: bool,
}

impl Tee {
    pub fn new(limit: usize) -> Arc<Tee> {
        Arc::new(Tee {
            capture: std::sync::Mutex::default(),
            limit,
            over: std::sync::atomic::AtomicBool::new(false),
            ended: tokio::sync::Notify::new(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Capture) -> T) -> T {
        let mut c = match self.capture.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        f(&mut c)
    }

    fn data(&self, d: &Bytes) {
        // Over the limit with this frame: the capture is given up (signalled once).
        let overflowed = self.with(|c| {
            if c.overflow {
                return false;
            }
            c.size += d.len();
            if c.size > self.limit {
                c.overflow = true;
                c.frames = Vec::new();
                true
            } else {
                c.frames.push(d.clone());
                false
            }
        });
        if overflowed {
            self.signal_over();
        }
    }

    fn trailers(&self, t: &http::HeaderMap) {
        self.with(|c| c.trailers = Some(t.clone()));
    }

    /// The body ended (`complete`) or was given up (an error, or dropped before its end).
    fn end(&self, complete: bool) {
        self.with(|c| {
            if complete {
                c.complete = true;
            } else if !c.complete {
                c.overflow = true;
            }
        });
        self.signal_over();
    }

    fn signal_over(&self) {
        if !self.over.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.ended.notify_waiters();
        }
    }

    /// The whole body again, when it was captured complete.
    pub fn replay(&self) -> Option<RequestBody> {
        self.with(|c| {
            (c.complete && !c.overflow).then(|| {
                let data = match c.frames.len() {
                    0 => None,
                    1 => Some(c.frames[0].clone()),
                    _ => Some(Bytes::from(c.frames.concat())),
                };
                RequestBody::Held {
                    data,
                    trailers: c.trailers.clone(),
                }
            })
        })
    }

    /// Waits until the capture is over; then [`Tee::replay`].
    pub async fn finished(&self) -> Option<RequestBody> {
        let ended = self.ended.notified();
        tokio::pin!(ended);
        // Registered before the flag is read, so a signal in between is not missed.
        ended.as_mut().enable();
        if !self.over.load(std::sync::atomic::Ordering::Acquire) {
            ended.await;
        }
        self.replay()
    }
}

/// Where a retry's body comes from: nothing to send (the request had no body, so no copy is
/// taken), the [`Tee`] that copies the body as it streams, or nowhere (no retry can go).
#[derive(Clone, Copy)]
pub enum Replay<'a> {
    Empty,
    Tee(&'a Tee),
    Never,
}

impl Replay<'_> {
    /// Whether another attempt may have a body at all (a tee's is known only once it ends).
    pub fn possible(&self) -> bool {
        !matches!(self, Replay::Never)
    }

    /// The body for another attempt, when there can be one.
    pub fn body(self) -> Option<RequestBody> {
        match self {
            Replay::Empty => Some(RequestBody::Held {
                data: None,
                trailers: None,
            }),
            Replay::Tee(t) => t.replay(),
            Replay::Never => None,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body on its way upstream: the downstream's, streamed (and copied into a
    /// [`Tee`] when it may be sent again), or a captured copy being sent again.
    #[project = RequestBodyProj]
    pub enum RequestBody {
        Stream { #[pin] body: Incoming },
        Teed { #[pin] body: Incoming, tee: TeeGuard },
        Held { data: Option<Bytes>, trailers: Option<http::HeaderMap> },
    }
}

impl RequestBody {
    /// The downstream body, streamed and captured into `tee`.
    pub fn teed(body: Incoming, tee: Arc<Tee>) -> RequestBody {
        if body.is_end_stream() {
            tee.end(true);
        }
        RequestBody::Teed {
            body,
            tee: TeeGuard(tee),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            RequestBodyProj::Stream { body } => body.poll_frame(cx),
            RequestBodyProj::Teed { mut body, tee } => {
                let tee = &tee.0;
                let r = body.as_mut().poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            tee.data(d);
                        } else if let Some(t) = f.trailers_ref() {
                            tee.trailers(t);
                        }
                        // hyper stops polling a body whose known length is complete.
                        if body.is_end_stream() {
                            tee.end(true);
                        }
                    }
                    Poll::Ready(None) => tee.end(true),
                    Poll::Ready(Some(Err(_))) => tee.end(false),
                    Poll::Pending => {}
                }
                r
            }
            RequestBodyProj::Held { data, trailers } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Stream { body } | RequestBody::Teed { body, .. } => body.is_end_stream(),
            RequestBody::Held { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Stream { body } | RequestBody::Teed { body, .. } => body.size_hint(),
            RequestBody::Held {
                data,
                trailers: None,
            } => SizeHint::with_exact(data.as_ref().map(|d| d.len() as u64).unwrap_or(0)),
            RequestBody::Held { .. } => SizeHint::default(),
        }
    }
}

/// The body's hold on its [`Tee`]: a body dropped before its end ends the capture, so that
/// nothing waits for it.
pub struct TeeGuard(Arc<Tee>);

impl Drop for TeeGuard {
    fn drop(&mut self) {
        self.0.end(false);
    }
}

/// The request body sent upstream.
pub type UpstreamBody = Counted<RequestBody>;

/// How a response body ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ending {
    pub bytes: u64,
    /// The body ended cleanly (not dropped half way).
    pub finished: bool,
    /// `grpc-status` from the trailers.
    pub grpc_status: Option<u32>,
}

/// Runs once when the response is over (its body ended or was dropped).
pub trait Completion: Send + Sync + 'static {
    fn complete(self: Box<Self>, ending: Ending);
}

pin_project_lite::pin_project! {
    /// The response body sent downstream.
    pub struct ResponseBody {
        #[pin]
        kind: Kind,
        ending: Ending,
        done: Option<Box<dyn Completion>>,
    }

    impl PinnedDrop for ResponseBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(done) = this.done.take() {
                done.complete(*this.ending);
            }
        }
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind {
        Upstream { #[pin] body: Incoming },
        Local { body: Option<Bytes> },
    }
}

impl ResponseBody {
    pub fn upstream(body: Incoming, done: Option<Box<dyn Completion>>) -> Self {
        ResponseBody {
            kind: Kind::Upstream { body },
            ending: Ending::default(),
            done,
        }
    }

    pub fn local(body: impl Into<Bytes>, done: Option<Box<dyn Completion>>) -> Self {
        let b: Bytes = body.into();
        ResponseBody {
            kind: Kind::Local {
                body: (!b.is_empty()).then_some(b),
            },
            ending: Ending::default(),
            done,
        }
    }

    pub fn set_completion(&mut self, done: Box<dyn Completion>) {
        self.done = Some(done);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let (r, ended) = match this.kind.project() {
            KindProj::Upstream { mut body } => {
                let r = body.as_mut().poll_frame(cx);
                // hyper stops polling once a body with a known length is complete, so the
                // end is noticed here, not only on `None`: the upstream connection then goes
                // back to its pool.
                (r, body.is_end_stream())
            }
            KindProj::Local { body } => {
                let r = Poll::Ready(body.take().map(|b| Ok(Frame::data(b))));
                (r, body.is_none())
            }
        };
        if ended {
            this.ending.finished = true;
        }
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.ending.bytes += d.len() as u64;
                } else if let Some(t) = f.trailers_ref() {
                    this.ending.grpc_status = t
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|s| s.parse().ok());
                }
            }
            Poll::Ready(None) => this.ending.finished = true,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body } => body.is_end_stream(),
            Kind::Local { body } => body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body } => body.size_hint(),
            Kind::Local { body } => {
                SizeHint::with_exact(body.as_ref().map(|b| b.len() as u64).unwrap_or(0))
            }
        }
    }
}

#[cfg(test)]
mod tee_tests {
    use super::*;

    async fn collect(b: RequestBody) -> Vec<u8> {
        use http_body_util::BodyExt;
        b.collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_complete_body_within_the_limit_replays() {
        let tee = Tee::new(10);
        assert!(tee.replay().is_none(), "nothing before the end");
        tee.data(&Bytes::from_static(b"hello"));
        tee.data(&Bytes::from_static(b"world"));
        tee.end(true);
        assert_eq!(collect(tee.replay().unwrap()).await, b"helloworld");
        assert_eq!(collect(tee.finished().await.unwrap()).await, b"helloworld");
        // A guard dropped after the end leaves the capture usable.
        drop(TeeGuard(tee.clone()));
        assert!(tee.replay().is_some());
    }

    #[tokio::test]
    async fn larger_or_unfinished_bodies_do_not_replay() {
        let big = Tee::new(4);
        big.data(&Bytes::from_static(b"hello"));
        big.end(true);
        assert!(big.replay().is_none());
        let cut = Tee::new(100);
        cut.data(&Bytes::from_static(b"par"));
        let waiter = tokio::spawn({
            let cut = cut.clone();
            async move { cut.finished().await.is_none() }
        });
        drop(TeeGuard(cut.clone()));
        assert!(waiter.await.unwrap(), "a mirror waiting for it is released");
    }
}
