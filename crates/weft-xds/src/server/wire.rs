//! The ADS service on the wire: responses encoded straight from the shared resources.
//!
//! `envoy-types`' generated service sends `DiscoveryResponse { resources: Vec<Any> }`, which
//! would make every stream deep-copy every resource it sends before encoding it. This service
//! has the same gRPC methods and the same bytes on the wire, but its responses hold
//! [`NamedResource`]s (shared, reference counted) and are written into tonic's buffer once.

use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic_prost::ProstDecoder;

use crate::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use crate::pb::google::protobuf::Any;
use crate::types::NamedResource;

/// gRPC name of the service (the same as Envoy's).
pub const SERVICE_NAME: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// A message this module knows how to write.
pub(crate) trait Wire {
    /// Encoded length in bytes.
    fn encoded_len(&self) -> usize;
    /// Writes the message's fields.
    fn encode_raw(&self, buf: &mut impl BufMut);
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
/// per-resource version.
#[derive(Debug)]
pub(crate) struct DeltaResponse {
    pub system_version_info: String,
    pub resources: Vec<NamedResource>,
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

fn put_bytes(tag: u32, b: &[u8], buf: &mut impl BufMut) {
    if !b.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(b.len() as u64, buf);
        buf.put_slice(b);
    }
}

/// Length of a nested message field whose body is `len` bytes (always written, even if empty).
fn message_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_message_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

fn any_len(a: &Any) -> usize {
    string_len(1, &a.type_url)
        + if a.value.is_empty() {
            0
        } else {
            key_len(2) + encoded_len_varint(a.value.len() as u64) + a.value.len()
        }
}

fn put_any(tag: u32, a: &Any, buf: &mut impl BufMut) {
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

    fn encode_raw(&self, buf: &mut impl BufMut) {
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
                .map(|r| message_len(2, delta_resource_len(r, &r.version())))
                .sum::<usize>()
            + string_len(4, &self.type_url)
            + self
                .removed_resources
                .iter()
                .map(|n| message_len(6, n.len()))
                .sum::<usize>()
            + string_len(5, &self.nonce)
    }

    fn encode_raw(&self, buf: &mut impl BufMut) {
        put_bytes(1, self.system_version_info.as_bytes(), buf);
        for r in &self.resources {
            let version = r.version();
            put_message_header(2, delta_resource_len(r, &version), buf);
            put_bytes(1, version.as_bytes(), buf);
            put_any(2, r.resource(), buf);
            put_bytes(3, r.name().as_bytes(), buf);
        }
        put_bytes(4, self.type_url.as_bytes(), buf);
        put_bytes(5, self.nonce.as_bytes(), buf);
        for n in &self.removed_resources {
            // Repeated strings are written even when empty.
            put_message_header(6, n.len(), buf);
            buf.put_slice(n.as_bytes());
        }
    }
}

/// Writes [`Wire`] messages into tonic's buffer.
pub(crate) struct WireEncoder<T>(PhantomData<T>);

impl<T: Wire> Encoder for WireEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode_raw(dst);
        Ok(())
    }
}

/// Codec of one ADS method: requests decoded by prost, responses written by [`Wire`].
pub(crate) struct AdsCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for AdsCodec<T, U> {
    fn default() -> Self {
        AdsCodec(PhantomData)
    }
}

impl<T, U> Codec for AdsCodec<T, U>
where
    T: Wire + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = WireEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        WireEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(ProstDecoder::default())
    }
}

/// prost's decoder for the requests.
pub(crate) struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(src)
    }
}

/// What serves the two ADS methods' streams.
pub(crate) trait AdsHandler: Send + Sync + 'static {
    type SotwStream: tokio_stream::Stream<Item = Result<SotwResponse, Status>> + Send + 'static;
    type DeltaStream: tokio_stream::Stream<Item = Result<DeltaResponse, Status>> + Send + 'static;

    fn sotw(&self, request: tonic::Request<tonic::Streaming<DiscoveryRequest>>)
    -> Self::SotwStream;
    fn delta(
        &self,
        request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Self::DeltaStream;
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

struct SotwMethod<H>(Arc<H>);

impl<H: AdsHandler> StreamingService<DiscoveryRequest> for SotwMethod<H> {
    type Response = SotwResponse;
    type ResponseStream = H::SotwStream;
    type Future = BoxFuture<tonic::Response<H::SotwStream>, Status>;

    fn call(
        &mut self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Self::Future {
        let stream = self.0.sotw(request);
        Box::pin(async move { Ok(tonic::Response::new(stream)) })
    }
}

struct DeltaMethod<H>(Arc<H>);

impl<H: AdsHandler> StreamingService<DeltaDiscoveryRequest> for DeltaMethod<H> {
    type Response = DeltaResponse;
    type ResponseStream = H::DeltaStream;
    type Future = BoxFuture<tonic::Response<H::DeltaStream>, Status>;

    fn call(
        &mut self,
        request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Self::Future {
        let stream = self.0.delta(request);
        Box::pin(async move { Ok(tonic::Response::new(stream)) })
    }
}

impl<H, B> tonic::codegen::Service<http::Request<B>> for AdsService<H>
where
    H: AdsHandler,
    B: Body + Send + 'static,
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
        let (max_decoding, max_encoding) = (Some(self.max_decoding), Some(self.max_encoding));
        match req.uri().path() {
            SOTW_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(AdsCodec::<SotwResponse, DiscoveryRequest>::default())
                    .apply_max_message_size_config(max_decoding, max_encoding);
                Ok(grpc.streaming(SotwMethod(handler), req).await)
            }),
            DELTA_PATH => Box::pin(async move {
                let mut grpc =
                    Grpc::new(AdsCodec::<DeltaResponse, DeltaDiscoveryRequest>::default())
                        .apply_max_message_size_config(max_decoding, max_encoding);
                Ok(grpc.streaming(DeltaMethod(handler), req).await)
            }),
            _ => Box::pin(async move {
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
                Ok(response)
            }),
        }
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
        NamedResource::new(
            name,
            Any {
                type_url: CLUSTER.into(),
                value: value.to_vec(),
            },
        )
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
        let resources = vec![res("a", b"\x0a\x01a"), res("b", &[1u8; 200])];
        let ours = DeltaResponse {
            system_version_info: "v2".into(),
            resources: resources.clone(),
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
}
