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

pin_project_lite::pin_project! {
    /// A request body on its way upstream: the downstream's, streamed; or held in memory
    /// (so that a retry or a mirror can send it again), with what followed the held part
    /// when the body was larger than the buffer limit.
    #[project = RequestBodyProj]
    pub enum RequestBody {
        Stream { #[pin] body: Incoming },
        Held { data: Option<Bytes>, trailers: Option<http::HeaderMap>, #[pin] rest: Option<Incoming> },
    }
}

impl RequestBody {
    /// A copy of a held body (None for a streamed one or one whose tail is streamed).
    pub fn try_clone(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Held {
                data,
                trailers,
                rest: None,
            } => Some(RequestBody::Held {
                data: data.clone(),
                trailers: trailers.clone(),
                rest: None,
            }),
            _ => None,
        }
    }

    /// Reads up to `limit` bytes of `body` into memory. The result can be re-sent (see
    /// [`RequestBody::try_clone`]) when the whole body fit.
    pub async fn hold(mut body: Incoming, limit: usize) -> Result<RequestBody, hyper::Error> {
        use http_body_util::BodyExt;
        let mut buf = bytes::BytesMut::new();
        let mut trailers = None;
        if body.is_end_stream() {
            return Ok(RequestBody::Held {
                data: None,
                trailers: None,
                rest: None,
            });
        }
        while buf.len() <= limit {
            match body.frame().await {
                None => break,
                Some(Err(e)) => return Err(e),
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => buf.extend_from_slice(&d),
                    Err(f) => {
                        trailers = f.into_trailers().ok();
                        break;
                    }
                },
            }
            if body.is_end_stream() {
                break;
            }
        }
        let ended = trailers.is_some() || body.is_end_stream();
        Ok(RequestBody::Held {
            data: (!buf.is_empty()).then(|| buf.freeze()),
            trailers,
            rest: (!ended).then_some(body),
        })
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
            RequestBodyProj::Held {
                data,
                trailers,
                rest,
            } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                if let Some(r) = rest.as_pin_mut() {
                    return r.poll_frame(cx);
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Stream { body } => body.is_end_stream(),
            RequestBody::Held {
                data,
                trailers,
                rest,
            } => {
                data.is_none()
                    && trailers.is_none()
                    && rest.as_ref().is_none_or(|r| r.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Stream { body } => body.size_hint(),
            RequestBody::Held {
                data, rest: None, ..
            } => SizeHint::with_exact(data.as_ref().map(|d| d.len() as u64).unwrap_or(0)),
            RequestBody::Held { .. } => SizeHint::default(),
        }
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
