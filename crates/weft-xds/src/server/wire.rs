//! The ADS service on the wire: responses encoded straight from the shared resources.
//!
//! `envoy-types`' generated service sends `DiscoveryResponse { resources: Vec<Any> }`, which
//! would make every stream deep-copy every resource it sends before encoding it, and tonic encodes
//! each message whole into a per-stream buffer that then keeps the size of the largest response
//! (a megabyte of clusters, per proxy, for as long as the stream lives). This service has the
//! same gRPC methods and the same bytes on the wire, but its responses hold [`NamedResource`]s
//! (shared, reference counted) and are written out in chunks of at most [`CHUNK`] bytes as
//! HTTP/2 takes them, so a stream holds little more than what is in flight.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tokio_stream::Stream;
use tonic::Status;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;

use super::request::SotwRequest;
use crate::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use crate::pb::google::protobuf::Any;
use crate::types::NamedResource;

/// gRPC name of the service (the same as Envoy's).
pub const SERVICE_NAME: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Largest piece of a response handed to HTTP/2 at once (a single resource larger than this is
/// a piece of its own).
pub(crate) const CHUNK: usize = 64 * 1024;

/// Where encoded bytes go.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Collects an encoding as a queue of pieces of about [`CHUNK`] bytes, each its own allocation.
#[derive(Default)]
pub(crate) struct Chunks {
    current: BytesMut,
    done: VecDeque<Bytes>,
}

impl Chunks {
    fn cut(&mut self) {
        if !self.current.is_empty() {
            let full = std::mem::take(&mut self.current);
            self.done.push_back(full.freeze());
        }
    }
}

impl Sink for Chunks {
    fn put(&mut self, bytes: &[u8]) {
        if self.current.is_empty() {
            self.current.reserve(CHUNK.max(bytes.len()));
        }
        self.current.extend_from_slice(bytes);
        if self.current.len() >= CHUNK {
            self.cut();
        }
    }
}

/// A message this module knows how to write.
pub(crate) trait Wire {
    /// Encoded length in bytes.
    fn encoded_len(&self) -> usize;
    /// Writes the message's fields.
    fn encode_raw(&self, buf: &mut impl Sink);
}

fn put_varint(v: u64, buf: &mut impl Sink) {
    let mut scratch = [0u8; 10];
    let mut rest = &mut scratch[..];
    encode_varint(v, &mut rest);
    let n = 10 - rest.len();
    buf.put(&scratch[..n]);
}

fn put_key(tag: u32, buf: &mut impl Sink) {
    let mut scratch = [0u8; 10];
    let mut rest = &mut scratch[..];
    encode_key(tag, WireType::LengthDelimited, &mut rest);
    let n = 10 - rest.len();
    buf.put(&scratch[..n]);
}

/// `envoy.service.discovery.v3.DiscoveryResponse`.
#[derive(Debug)]
pub(crate) struct SotwResponse {
    pub version_info: String,
    pub resources: Vec<NamedResource>,
    pub type_url: String,
    pub nonce: String,
}

/// `envoy.service.discovery.v3.DeltaDiscoveryResponse`; each resource is sent with its name and
/// its per-resource version ([`NamedResource::version`], computed once by the stream).
#[derive(Debug)]
pub(crate) struct DeltaResponse {
    pub system_version_info: String,
    pub resources: Vec<(NamedResource, String)>,
    pub type_url: String,
    pub removed_resources: Vec<String>,
    pub nonce: String,
}

fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        key_len(tag) + encoded_len_varint(s.len() as u64) + s.len()
    }
}

fn put_bytes(tag: u32, b: &[u8], buf: &mut impl Sink) {
    if !b.is_empty() {
        put_key(tag, buf);
        put_varint(b.len() as u64, buf);
        buf.put(b);
    }
}

/// Length of a nested message field whose body is `len` bytes (always written, even if empty).
fn message_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_message_header(tag: u32, len: usize, buf: &mut impl Sink) {
    put_key(tag, buf);
    put_varint(len as u64, buf);
}

fn any_len(a: &Any) -> usize {
    string_len(1, &a.type_url)
        + if a.value.is_empty() {
            0
        } else {
            key_len(2) + encoded_len_varint(a.value.len() as u64) + a.value.len()
        }
}

fn put_any(tag: u32, a: &Any, buf: &mut impl Sink) {
    put_message_header(tag, any_len(a), buf);
    put_bytes(1, a.type_url.as_bytes(), buf);
    put_bytes(2, &a.value, buf);
}

impl Wire for SotwResponse {
    fn encoded_len(&self) -> usize {
        string_len(1, &self.version_info)
            + self
                .resources
                .iter()
                .map(|r| message_len(2, any_len(r.resource())))
                .sum::<usize>()
            + string_len(4, &self.type_url)
            + string_len(5, &self.nonce)
    }

    fn encode_raw(&self, buf: &mut impl Sink) {
        put_bytes(1, self.version_info.as_bytes(), buf);
        for r in &self.resources {
            put_any(2, r.resource(), buf);
        }
        put_bytes(4, self.type_url.as_bytes(), buf);
        put_bytes(5, self.nonce.as_bytes(), buf);
    }
}

/// `envoy.service.discovery.v3.Resource` body: name (3), version (1), resource (2).
fn delta_resource_len(r: &NamedResource, version: &str) -> usize {
    string_len(3, r.name()) + string_len(1, version) + message_len(2, any_len(r.resource()))
}

impl Wire for DeltaResponse {
    fn encoded_len(&self) -> usize {
        string_len(1, &self.system_version_info)
            + self
                .resources
                .iter()
                .map(|(r, version)| message_len(2, delta_resource_len(r, version)))
                .sum::<usize>()
            + string_len(4, &self.type_url)
            + self
                .removed_resources
                .iter()
                .map(|n| message_len(6, n.len()))
                .sum::<usize>()
            + string_len(5, &self.nonce)
    }

    fn encode_raw(&self, buf: &mut impl Sink) {
        put_bytes(1, self.system_version_info.as_bytes(), buf);
        for (r, version) in &self.resources {
            put_message_header(2, delta_resource_len(r, version), buf);
            put_bytes(1, version.as_bytes(), buf);
            put_any(2, r.resource(), buf);
            put_bytes(3, r.name().as_bytes(), buf);
        }
        put_bytes(4, self.type_url.as_bytes(), buf);
        put_bytes(5, self.nonce.as_bytes(), buf);
        for n in &self.removed_resources {
            // Repeated strings are written even when empty.
            put_message_header(6, n.len(), buf);
            buf.put(n.as_bytes());
        }
    }
}

/// The messages of one gRPC stream, decoded from an HTTP/2 body (gRPC frames: a 5-byte prefix,
/// then the message; compression is not offered, so none is accepted): a stream's requests on
/// the server, its responses on the client. The buffer is let go whenever it is drained: an
/// Envoy request names every assignment it watches (~100 KiB a request at a thousand services)
/// and a response carries every cluster (megabytes), and a buffer kept at that size per stream
/// would cost ~100 MB per thousand proxies on the server and megabytes per proxy.
pub struct Messages<U> {
    body: tonic::body::Body,
    buf: BytesMut,
    max_message: usize,
    /// "request" or "response", for errors.
    what: &'static str,
    trailers: Option<http::HeaderMap>,
    /// The last error came from the body itself (the connection broke), not from its content.
    broke: bool,
    _message: std::marker::PhantomData<fn() -> U>,
}

/// The requests of a stream, as the server reads them.
pub type Requests<U> = Messages<U>;

impl<U: prost::Message + Default> Messages<U> {
    /// A server's view of a request body.
    pub(crate) fn new(body: tonic::body::Body, max_message: usize) -> Self {
        Self::of(body, max_message, "request")
    }

    /// A client's view of a response body.
    pub(crate) fn responses(body: tonic::body::Body, max_message: usize) -> Self {
        Self::of(body, max_message, "response")
    }

    fn of(body: tonic::body::Body, max_message: usize, what: &'static str) -> Self {
        Messages {
            body,
            buf: BytesMut::new(),
            max_message,
            what,
            trailers: None,
            broke: false,
            _message: std::marker::PhantomData,
        }
    }

    /// Whether the last error was the body breaking (the peer went away) rather than what it
    /// sent (too large, compressed, undecodable).
    pub(crate) fn broke(&self) -> bool {
        self.broke
    }

    /// The trailers, once the body has ended with them.
    pub(crate) fn trailers(&self) -> Option<&http::HeaderMap> {
        self.trailers.as_ref()
    }

    /// The next message; `None` when the other side closed the stream.
    pub async fn message(&mut self) -> Result<Option<U>, Status> {
        use http_body_util::BodyExt;
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if self.buf[0] != 0 {
                    return Err(Status::unimplemented(format!(
                        "compressed {}s are not supported: send grpc-encoding identity",
                        self.what
                    )));
                }
                if len > self.max_message {
                    return Err(Status::resource_exhausted(format!(
                        "the {} is {len} bytes, over the limit of {}",
                        self.what, self.max_message
                    )));
                }
                if self.buf.len() >= 5 + len {
                    let _prefix = self.buf.split_to(5);
                    let message = self.buf.split_to(len).freeze();
                    if self.buf.is_empty() {
                        self.buf = BytesMut::new();
                    }
                    return U::decode(message).map(Some).map_err(|e| {
                        Status::internal(format!("cannot decode the {}: {e}", self.what))
                    });
                }
                // Room for the whole message at once rather than growing by doubling, up to
                // 1 MiB ahead of the data (a 5-byte header alone must not claim 64 MiB).
                self.buf.reserve((5 + len - self.buf.len()).min(1 << 20));
            }
            match self.body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => self.trailers = frame.into_trailers().ok(),
                },
                Some(Err(e)) => {
                    self.broke = true;
                    return Err(e);
                }
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    return Err(Status::internal(format!(
                        "the {} stream ended inside a message",
                        self.what
                    )));
                }
            }
        }
    }
}

/// The body of a streaming gRPC response: each message as its 5-byte gRPC prefix and fields,
/// in pieces of about [`CHUNK`] bytes produced as HTTP/2 asks for them, then the trailers
/// (`grpc-status` of the error that ended the stream, or OK).
pub(crate) struct ResponseBody<S> {
    source: S,
    pending: VecDeque<Bytes>,
    max_message: usize,
    ended: bool,
}

impl<S> ResponseBody<S> {
    pub(crate) fn new(source: S, max_message: usize) -> Self {
        ResponseBody {
            source,
            pending: VecDeque::new(),
            max_message,
            ended: false,
        }
    }
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    if status.add_header(&mut map).is_err() {
        map.insert(Status::GRPC_STATUS, (tonic::Code::Internal as i32).into());
    }
    map
}

impl<S, M> Body for ResponseBody<S>
where
    S: Stream<Item = Result<M, Status>> + Unpin,
    M: Wire,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(piece) = this.pending.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let status = match ready!(Pin::new(&mut this.source).poll_next(cx)) {
            Some(Ok(msg)) => {
                let len = msg.encoded_len();
                if len <= this.max_message
                    && let Ok(prefix) = u32::try_from(len)
                {
                    let mut chunks = Chunks::default();
                    chunks.put(&[0]);
                    chunks.put(&prefix.to_be_bytes());
                    msg.encode_raw(&mut chunks);
                    chunks.cut();
                    this.pending = chunks.done;
                    return match this.pending.pop_front() {
                        Some(piece) => Poll::Ready(Some(Ok(Frame::data(piece)))),
                        None => Poll::Ready(None),
                    };
                }
                Status::resource_exhausted(format!(
                    "the response is {len} bytes, over the limit of {}",
                    this.max_message
                ))
            }
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        this.ended = true;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(&status)))))
    }
}

/// What serves the two ADS methods' streams.
pub(crate) trait AdsHandler: Send + Sync + 'static {
    type SotwStream: Stream<Item = Result<SotwResponse, Status>> + Unpin + Send + 'static;
    type DeltaStream: Stream<Item = Result<DeltaResponse, Status>> + Unpin + Send + 'static;

    fn sotw(&self, request: tonic::Request<Requests<SotwRequest>>) -> Self::SotwStream;
    fn delta(&self, request: tonic::Request<Requests<DeltaDiscoveryRequest>>) -> Self::DeltaStream;
}

/// The tonic service (`envoy.service.discovery.v3.AggregatedDiscoveryService`).
pub struct AdsService<H> {
    handler: Arc<H>,
    max_decoding: usize,
    max_encoding: usize,
}

impl<H> AdsService<H> {
    pub(crate) fn new(handler: H, max_decoding: usize, max_encoding: usize) -> Self {
        AdsService {
            handler: Arc::new(handler),
            max_decoding,
            max_encoding,
        }
    }
}

impl<H> Clone for AdsService<H> {
    fn clone(&self) -> Self {
        AdsService {
            handler: self.handler.clone(),
            max_decoding: self.max_decoding,
            max_encoding: self.max_encoding,
        }
    }
}

impl<H> NamedService for AdsService<H> {
    const NAME: &'static str = SERVICE_NAME;
}

/// Decodes the request stream of `req` and answers with `respond`'s response stream.
fn stream<B, U, S, M>(
    req: http::Request<B>,
    max_decoding: usize,
    max_encoding: usize,
    respond: impl FnOnce(tonic::Request<Requests<U>>) -> S,
) -> http::Response<tonic::body::Body>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    U: prost::Message + Default + Send + 'static,
    S: Stream<Item = Result<M, Status>> + Unpin + Send + 'static,
    M: Wire + Send + 'static,
{
    let (parts, body) = req.into_parts();
    let requests = Requests::new(tonic::body::Body::new(body), max_decoding);
    let request = tonic::Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        requests,
    );
    let body = ResponseBody::new(respond(request), max_encoding);
    let mut response = http::Response::new(tonic::body::Body::new(body));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    response
}

impl<H, B> tonic::codegen::Service<http::Request<B>> for AdsService<H>
where
    H: AdsHandler,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let handler = self.handler.clone();
        let (max_decoding, max_encoding) = (self.max_decoding, self.max_encoding);
        let response = match req.uri().path() {
            SOTW_PATH => stream(req, max_decoding, max_encoding, |r| handler.sotw(r)),
            DELTA_PATH => stream(req, max_decoding, max_encoding, |r| handler.delta(r)),
            _ => {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                response
            }
        };
        Box::pin(async move { Ok(response) })
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource,
    };
    use crate::types::{CLUSTER, ENDPOINT};

    fn res(name: &str, value: &[u8]) -> NamedResource {
        crate::testutil::raw_resource(name, value)
    }

    fn encode(w: &impl Wire) -> Vec<u8> {
        let mut buf = Vec::new();
        w.encode_raw(&mut buf);
        assert_eq!(buf.len(), w.encoded_len(), "encoded_len disagrees");
        buf
    }

    #[test]
    fn sotw_response_is_what_prost_encodes() {
        let resources = vec![res("a", b"\x0a\x01a"), res("b", b""), res("c", &[7u8; 300])];
        let ours = SotwResponse {
            version_info: "v1".into(),
            resources: resources.clone(),
            type_url: CLUSTER.into(),
            nonce: "n".into(),
        };
        let theirs = DiscoveryResponse {
            version_info: "v1".into(),
            resources: resources.iter().map(|r| r.resource().clone()).collect(),
            type_url: CLUSTER.into(),
            nonce: "n".into(),
            ..Default::default()
        };
        assert_eq!(encode(&ours), theirs.encode_to_vec());
        let empty = SotwResponse {
            version_info: String::new(),
            resources: Vec::new(),
            type_url: ENDPOINT.into(),
            nonce: String::new(),
        };
        assert_eq!(
            DiscoveryResponse::decode(encode(&empty).as_slice()).unwrap(),
            DiscoveryResponse {
                type_url: ENDPOINT.into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn delta_response_is_what_prost_encodes() {
        let resources = [res("a", b"\x0a\x01a"), res("b", &[1u8; 200])];
        let ours = DeltaResponse {
            system_version_info: "v2".into(),
            resources: resources.iter().map(|r| (r.clone(), r.version())).collect(),
            type_url: CLUSTER.into(),
            removed_resources: vec!["gone".into(), String::new()],
            nonce: "n2".into(),
        };
        let theirs = DeltaDiscoveryResponse {
            system_version_info: "v2".into(),
            resources: resources
                .iter()
                .map(|r| Resource {
                    name: r.name().to_string(),
                    version: r.version(),
                    resource: Some(r.resource().clone()),
                    ..Default::default()
                })
                .collect(),
            type_url: CLUSTER.into(),
            removed_resources: vec!["gone".into(), String::new()],
            nonce: "n2".into(),
            ..Default::default()
        };
        // Field order differs from prost's (tag order) for nothing but the nested resource, so
        // compare decoded.
        let bytes = encode(&ours);
        assert_eq!(
            DeltaDiscoveryResponse::decode(bytes.as_slice()).unwrap(),
            theirs
        );
        assert_eq!(bytes.len(), theirs.encoded_len());
    }

    #[tokio::test]
    async fn response_body_is_grpc_framed_in_bounded_pieces_then_trailers() {
        use http_body_util::BodyExt;
        let big = vec![9u8; 3 * CHUNK];
        let resources: Vec<_> = (0..40)
            .map(|i| res(&format!("r{i:02}"), &[i as u8; 5000]))
            .chain([res("zz-big", &big)])
            .collect();
        let msg = SotwResponse {
            version_info: "v1".into(),
            resources: resources.clone(),
            type_url: CLUSTER.into(),
            nonce: "n".into(),
        };
        let expected = DiscoveryResponse {
            version_info: "v1".into(),
            resources: resources.iter().map(|r| r.resource().clone()).collect(),
            type_url: CLUSTER.into(),
            nonce: "n".into(),
            ..Default::default()
        }
        .encode_to_vec();
        let source = tokio_stream::iter(vec![Ok(msg), Err(Status::internal("generation failed"))]);
        let mut body = ResponseBody::new(source, usize::MAX);
        let mut data = Vec::new();
        let mut pieces = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            if let Some(d) = frame.data_ref() {
                pieces.push(d.len());
                data.extend_from_slice(d);
            } else {
                trailers = frame.into_trailers().ok();
            }
        }
        assert_eq!(data[0], 0, "not compressed");
        assert_eq!(
            u32::from_be_bytes(data[1..5].try_into().unwrap()) as usize,
            expected.len()
        );
        assert_eq!(&data[5..], expected.as_slice());
        // Pieces stay near CHUNK; only the piece with the big resource is larger.
        assert!(pieces.len() > 3, "{pieces:?}");
        assert_eq!(
            pieces.iter().filter(|&&n| n > CHUNK + 5100).count(),
            1,
            "{pieces:?}"
        );
        let t = trailers.expect("trailers");
        assert_eq!(t["grpc-status"], "13");
        // Percent-encoded, as gRPC sends messages.
        assert_eq!(t["grpc-message"], "generation%20failed");

        // A message over the limit ends the stream with RESOURCE_EXHAUSTED.
        let source = tokio_stream::iter(vec![Ok::<_, Status>(SotwResponse {
            version_info: String::new(),
            resources,
            type_url: CLUSTER.into(),
            nonce: String::new(),
        })]);
        let mut body = ResponseBody::new(source, 1000);
        let frame = body.frame().await.unwrap().unwrap();
        let t = frame.into_trailers().unwrap();
        assert_eq!(t["grpc-status"], "8");
        assert!(body.frame().await.is_none());
    }

    fn request_body(pieces: Vec<Vec<u8>>) -> tonic::body::Body {
        let frames = pieces
            .into_iter()
            .map(|p| Ok::<_, Status>(Frame::data(Bytes::from(p))));
        tonic::body::Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
    }

    fn framed(msg: &impl prost::Message) -> Vec<u8> {
        let body = msg.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[tokio::test]
    async fn requests_are_decoded_across_and_within_frames() {
        use crate::pb::envoy::service::discovery::v3::DiscoveryRequest;
        let a = DiscoveryRequest {
            type_url: CLUSTER.into(),
            resource_names: (0..3000).map(|i| format!("outbound|80||svc-{i}")).collect(),
            ..Default::default()
        };
        let b = DiscoveryRequest {
            type_url: ENDPOINT.into(),
            response_nonce: "n1".into(),
            ..Default::default()
        };
        // `a` split over three frames; `b` and `b` again in one frame.
        let fa = framed(&a);
        let third = fa.len() / 3;
        let mut two_b = framed(&b);
        two_b.extend(framed(&b));
        let pieces = vec![
            fa[..third].to_vec(),
            fa[third..2 * third].to_vec(),
            fa[2 * third..].to_vec(),
            two_b,
        ];
        let mut r = Requests::<DiscoveryRequest>::new(request_body(pieces), usize::MAX);
        assert_eq!(r.message().await.unwrap(), Some(a));
        assert_eq!(r.buf.capacity(), 0, "the buffer is let go once drained");
        assert_eq!(r.message().await.unwrap(), Some(b.clone()));
        assert_eq!(r.message().await.unwrap(), Some(b.clone()));
        assert_eq!(r.message().await.unwrap(), None);

        // A message cut short by the end of the stream, a compressed one, and one over the limit.
        let fb = framed(&b);
        let mut r = Requests::<DiscoveryRequest>::new(
            request_body(vec![fb[..fb.len() - 1].to_vec()]),
            usize::MAX,
        );
        assert_eq!(r.message().await.unwrap_err().code(), tonic::Code::Internal);
        let mut compressed = framed(&b);
        compressed[0] = 1;
        let mut r = Requests::<DiscoveryRequest>::new(request_body(vec![compressed]), usize::MAX);
        assert_eq!(
            r.message().await.unwrap_err().code(),
            tonic::Code::Unimplemented
        );
        let mut r = Requests::<DiscoveryRequest>::new(request_body(vec![framed(&b)]), 3);
        assert_eq!(
            r.message().await.unwrap_err().code(),
            tonic::Code::ResourceExhausted
        );
    }

    #[tokio::test]
    async fn responses_end_with_the_servers_trailers() {
        use crate::pb::envoy::service::discovery::v3::DiscoveryResponse;
        let m = DiscoveryResponse {
            version_info: "v1".into(),
            ..Default::default()
        };
        let body = || {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("16"));
            trailers.insert("grpc-message", http::HeaderValue::from_static("bad token"));
            let frames = vec![
                Ok::<_, Status>(Frame::data(Bytes::from(framed(&m)))),
                Ok(Frame::trailers(trailers)),
            ];
            tonic::body::Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
        };
        // Over the limit: the error names a response.
        let mut r = Messages::<DiscoveryResponse>::responses(body(), 2);
        let err = r.message().await.unwrap_err();
        assert!(err.message().contains("the response is"), "{err}");
        let mut r = Messages::<DiscoveryResponse>::responses(body(), usize::MAX);
        assert_eq!(r.message().await.unwrap(), Some(m.clone()));
        assert_eq!(r.message().await.unwrap(), None);
        let status = tonic::Status::from_header_map(r.trailers().unwrap()).unwrap();
        assert_eq!(
            (status.code(), status.message()),
            (tonic::Code::Unauthenticated, "bad token")
        );
    }
}
