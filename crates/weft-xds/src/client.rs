//! The sidecar's ADS client, state of the world or incremental (delta).
//!
//! [`run_ads_client`] keeps one ADS stream to the control plane open forever: it sends the
//! handler's subscriptions (CDS, EDS, LDS, RDS order, as Envoy), hands every response to the
//! [`Handler`], ACKs or NACKs it, follows subscription changes, and on any failure reconnects with
//! exponential backoff and jitter. On reconnecting it resubscribes with what it holds: the last
//! ACKed version per type (state of the world) or the version of every resource it holds
//! (`initial_resource_versions`, delta), so an unchanged control plane sends nothing again. The
//! handler keeps its state across reconnects, so the proxy serves its last good configuration
//! while the control plane is away.

mod delta;
mod sotw;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use http::HeaderValue;
use http_body_util::StreamBody;
use prost::Message;
use rand::Rng;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::codegen::Service;
use tonic::transport::Channel;

use crate::error::XdsError;
use crate::pb::envoy::config::core::v3::Node;
use crate::pb::google::protobuf::Any;
use crate::pb::google::rpc;
use crate::server::{MAX_MESSAGE_SIZE, Messages};
use crate::transport::{self, TlsConnector};
use crate::types;

/// gRPC status code `INVALID_ARGUMENT`, sent in NACKs.
const INVALID_ARGUMENT: i32 = 3;

/// One response's worth of one type, as the handler applies it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Update {
    /// `version_info` (state of the world) or `system_version_info` (delta).
    pub version: String,
    /// Resources added or changed; with `full_state`, every resource of the type.
    pub resources: Vec<Any>,
    /// Names the control plane removed (delta only).
    pub removed: Vec<String>,
    /// `resources` is the whole set (state-of-the-world LDS and CDS): what is not in it is gone.
    /// Otherwise what the response leaves out stays as it was, unless named in `removed`.
    pub full_state: bool,
}

impl Update {
    /// A state-of-the-world response: the whole set for LDS and CDS, the resources that
    /// changed for the other types.
    pub fn state_of_the_world(type_url: &str, version: String, resources: Vec<Any>) -> Self {
        Update {
            version,
            resources,
            removed: Vec::new(),
            full_state: types::is_wildcard_type(type_url),
        }
    }

    /// A delta response: what changed and what was removed.
    pub fn delta(version: String, resources: Vec<Any>, removed: Vec<String>) -> Self {
        Update {
            version,
            resources,
            removed,
            full_state: false,
        }
    }

    /// Applies this response to a handler's map of one type, given its resources decoded and
    /// named: a full state replaces the map; otherwise what it names as removed goes and what
    /// it carries is added or replaced.
    pub fn merge_into<T>(
        &self,
        map: &mut BTreeMap<String, T>,
        decoded: impl IntoIterator<Item = (String, T)>,
    ) {
        if self.full_state {
            map.clear();
        }
        for name in &self.removed {
            map.remove(name);
        }
        map.extend(decoded);
    }
}

/// Receives configuration from the control plane. Implemented by the proxy.
pub trait Handler: Send + 'static {
    /// Applies a response. `Err(message)` rejects it: the client NACKs with the message and the
    /// previous configuration stays in force.
    fn on_response(&mut self, type_url: &str, update: Update) -> Result<(), String>;

    /// Current subscriptions: `(type_url, names)`; empty names mean all resources of a wildcard
    /// type (LDS, CDS). Non-wildcard types (EDS, RDS, SDS) with no names are not requested yet.
    fn subscriptions(&self) -> Vec<(String, Vec<String>)>;
}

/// Settings of the ADS client.
#[derive(Clone, Debug)]
pub struct AdsClientConfig {
    /// Control plane address, `http://host:port` (or `https://host:port` with `tls`).
    pub endpoint: String,
    /// Node sent on the first request of each stream.
    pub node: Node,
    /// TLS client config (aws-lc-rs provider), fixed or read at each dial; `None` for
    /// plaintext.
    pub tls: Option<transport::TlsConfig>,
    /// Name verified in the server certificate (and sent as SNI); default: the endpoint's host.
    pub tls_server_name: Option<String>,
    /// Bearer token sent as `authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Use incremental xDS (`DeltaAggregatedResources`, Istio's `ISTIO_DELTA_XDS`) instead of
    /// state of the world.
    pub delta: bool,
}

impl AdsClientConfig {
    /// Plaintext, unauthenticated, state-of-the-world config with backoff from 500 ms up to 30 s.
    pub fn new(endpoint: impl Into<String>, node: Node) -> Self {
        AdsClientConfig {
            endpoint: endpoint.into(),
            node,
            tls: None,
            tls_server_name: None,
            auth_token: None,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            delta: false,
        }
    }
}

/// Connection state published by [`run_ads_client`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClientState {
    /// A stream to the control plane is open.
    pub connected: bool,
    /// Why the last stream ended (kept after reconnecting).
    pub last_error: Option<String>,
    /// Last ACKed version per type URL.
    pub acked: BTreeMap<String, String>,
    /// The stream is incremental (delta xDS).
    pub delta: bool,
}

/// Runs the ADS client forever. Returns only if the configuration is unusable (bad endpoint,
/// TLS server name or token); connection problems are retried.
pub async fn run_ads_client<H: Handler>(
    config: AdsClientConfig,
    mut handler: H,
    status: watch::Sender<ClientState>,
) -> Result<Infallible, XdsError> {
    transport::endpoint(&config.endpoint)?;
    let tls = config
        .tls
        .clone()
        .map(|c| transport::tls_connector(c, config.tls_server_name.as_deref()))
        .transpose()?;
    let token = config
        .auth_token
        .as_ref()
        .map(|t| {
            HeaderValue::try_from(format!("Bearer {}", t.trim()))
                .map_err(|_| XdsError::InvalidToken)
        })
        .transpose()?;
    status.send_modify(|s| s.delta = config.delta);
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut memory = Memory::default();
    loop {
        let mut session = Session {
            handler: &mut handler,
            memory: &mut memory,
            status: &status,
            got_response: false,
        };
        let result = match connect(&config, tls.clone(), token.clone()).await {
            Ok(client) if config.delta => session.delta(client, &config).await,
            Ok(client) => session.sotw(client, &config).await,
            Err(e) => Err(e),
        };
        let err = match result {
            Ok(never) => match never {},
            Err(e) => e,
        };
        let got_response = session.got_response;
        status.send_modify(|s| {
            s.connected = false;
            s.last_error = Some(err.to_string());
        });
        if got_response {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tracing::warn!(
            endpoint = %config.endpoint,
            error = %err,
            retry_in_ms = delay.as_millis() as u64,
            "ADS stream to the control plane ended; keeping the last configuration and reconnecting"
        );
        tokio::time::sleep(delay).await;
    }
}

/// The ADS methods' paths.
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// A connection to the control plane that opens ADS streams by hand rather than through
/// tonic's generated client, whose per-stream decode buffer stays as large as the largest
/// response (megabytes at a thousand services): responses are read with the server's decoder,
/// which lets its buffer go once drained.
struct Client {
    channel: Channel,
    token: Option<HeaderValue>,
}

impl Client {
    /// Opens a bidirectional stream on `path` that sends what `requests` yields.
    async fn open<Req, Resp>(
        &mut self,
        path: &'static str,
        requests: mpsc::UnboundedReceiver<Req>,
    ) -> Result<Responses<Resp>, XdsError>
    where
        Req: Message + Send + 'static,
        Resp: Message + Default,
    {
        let frames = UnboundedReceiverStream::new(requests)
            .map(|m| Ok::<_, tonic::Status>(http_body::Frame::data(grpc_frame(&m))));
        let mut req = http::Request::new(tonic::body::Body::new(StreamBody::new(frames)));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = http::Uri::from_static(path);
        let headers = req.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        if let Some(token) = &self.token {
            headers.insert(http::header::AUTHORIZATION, token.clone());
        }
        std::future::poll_fn(|cx| self.channel.poll_ready(cx))
            .await
            .map_err(unavailable)?;
        let resp = self.channel.call(req).await.map_err(unavailable)?;
        if resp.status() != http::StatusCode::OK {
            return Err(tonic::Status::unavailable(format!(
                "the control plane answered HTTP {} to {path}",
                resp.status()
            ))
            .into());
        }
        // A call refused at once carries its status in the headers.
        if let Some(status) = tonic::Status::from_header_map(resp.headers())
            && status.code() != tonic::Code::Ok
        {
            return Err(status.into());
        }
        Ok(Responses(Messages::responses(
            resp.into_body(),
            MAX_MESSAGE_SIZE,
        )))
    }
}

fn unavailable(e: impl std::fmt::Display) -> XdsError {
    tonic::Status::unavailable(e.to_string()).into()
}

/// A message with its 5-byte gRPC prefix (uncompressed).
fn grpc_frame<M: Message>(m: &M) -> Bytes {
    let len = m.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    // The buffer has room for the whole message, so encoding cannot fail.
    let _ = m.encode(&mut buf);
    buf.freeze()
}

/// The responses of an ADS stream.
struct Responses<U>(Messages<U>);

impl<U: Message + Default> Responses<U> {
    /// The next response; an error when the stream ends, with the server's status if it sent
    /// one.
    async fn message(&mut self) -> Result<U, XdsError> {
        match self.0.message().await {
            Ok(Some(m)) => Ok(m),
            Err(status) if self.0.broke() => Err(XdsError::StreamBroken(describe(&status))),
            Err(status) => Err(XdsError::BadResponse(describe(&status))),
            Ok(None) => match self.0.trailers().and_then(tonic::Status::from_header_map) {
                Some(status) if status.code() != tonic::Code::Ok => Err(status.into()),
                _ => Err(XdsError::StreamClosed),
            },
        }
    }
}

/// A status's message, or what caused it when it has none (a broken body's status carries the
/// transport error as its source).
fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        // Transport errors often repeat their cause's text in their own.
        let part = e.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        source = e.source();
    }
    if text.is_empty() {
        format!("{:?}", status.code())
    } else {
        text
    }
}

/// Connects to the control plane.
async fn connect(
    config: &AdsClientConfig,
    tls: Option<TlsConnector>,
    token: Option<HeaderValue>,
) -> Result<Client, XdsError> {
    let channel = transport::connect_channel(&config.endpoint, tls).await?;
    Ok(Client { channel, token })
}

/// Exponential backoff with jitter (each delay uniform in [d/2, d]).
struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        let base = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let hi = base.as_millis() as u64;
        let ms = rand::rng().random_range(hi / 2..=hi);
        Duration::from_millis(ms)
    }
}

/// What the client remembers across streams.
#[derive(Default)]
struct Memory {
    /// Last ACKed version per type.
    acked: BTreeMap<String, String>,
    /// Delta only: per type, the version of every resource the handler accepted and holds.
    held: BTreeMap<String, BTreeMap<String, String>>,
}

impl Memory {
    /// The last version of `type_url` the client ACKed; empty if none.
    fn acked_version(&self, type_url: &str) -> String {
        self.acked.get(type_url).cloned().unwrap_or_default()
    }
}

/// One stream's worth of state; the memory and the handler outlive it.
struct Session<'a, H> {
    handler: &'a mut H,
    memory: &'a mut Memory,
    status: &'a watch::Sender<ClientState>,
    got_response: bool,
}

impl<H: Handler> Session<'_, H> {
    /// Records an accepted response's version.
    fn acked(&mut self, type_url: &str, version: &str) {
        self.memory
            .acked
            .insert(type_url.to_string(), version.to_string());
        let acked = self.memory.acked.clone();
        self.status.send_modify(|s| s.acked = acked);
    }

    fn established(&self, config: &AdsClientConfig) {
        self.status.send_modify(|s| s.connected = true);
        tracing::info!(
            endpoint = %config.endpoint,
            delta = config.delta,
            "ADS stream to the control plane established"
        );
    }
}

/// Subscriptions sorted in Envoy's order, names sorted and deduplicated.
fn ordered_subscriptions<H: Handler>(handler: &H) -> Vec<(String, Vec<String>)> {
    let mut subs: Vec<(String, Vec<String>)> = handler
        .subscriptions()
        .into_iter()
        .map(|(t, mut names)| {
            names.sort();
            names.dedup();
            (t, names)
        })
        .collect();
    subs.sort_by_key(|(t, _)| types::subscription_rank(t));
    subs
}

/// The `error_detail` of a NACK.
fn nack_status(message: String) -> Option<rpc::Status> {
    Some(rpc::Status {
        code: INVALID_ARGUMENT,
        message,
        details: Vec::new(),
    })
}
