//! The ADS server (state of the world and delta) that the control plane feeds through a
//! [`Generator`].
//!
//! Each gRPC stream runs in its own task. The first request carries the proxy's `Node`; from then
//! on the stream answers subscriptions, records ACKs and NACKs by nonce, ignores stale nonces and
//! regenerates its subscribed types on every [`AdsServer::push`], sending only types (SotW) or
//! resources (delta) whose content changed.

mod delta;
mod held;
mod request;
mod sotw;
mod wire;

pub use wire::{AdsService, Messages, Requests};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use crate::pb::envoy::config::core::v3::Node;
use crate::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use crate::pb::google::protobuf::{Struct, Value, value::Kind};
use crate::types::{self, NamedResource, Subscription};
use wire::{DeltaResponse, SotwResponse};

/// Largest gRPC message accepted or sent (64 MiB), as istiod allows for big meshes.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
/// Responses queued per stream before the stream task waits for the client to read.
const RESPONSE_QUEUE: usize = 16;
/// How long a disconnected proxy's ACKed state is kept so a reconnect can skip unchanged content.
const RESUME_TTL: Duration = Duration::from_secs(600);
/// Streams that may have a push in flight at once (Istio's `PILOT_PUSH_THROTTLE`).
pub const DEFAULT_PUSH_CONCURRENCY: usize = 100;
/// Longest a stream holds its push slot waiting for the proxy to ACK or NACK what it was sent.
const PUSH_SLOT_TIMEOUT: Duration = Duration::from_secs(5);

/// The proxy at the other end of a stream, taken from the first request's `Node`.
#[derive(Clone, Debug, Serialize)]
pub struct ProxyInfo {
    /// `Node.id` (Istio: `sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local`).
    pub id: String,
    /// `Node.cluster`.
    pub cluster: String,
    /// `Node.metadata` as JSON (`null` when absent).
    pub metadata: serde_json::Value,
    /// Remote address of the connection, when known.
    pub peer_addr: Option<SocketAddr>,
    /// Server-assigned id of this stream.
    pub conn_id: u64,
}

impl ProxyInfo {
    /// Builds the proxy info of a stream from its `Node`.
    pub fn from_node(node: &Node, peer_addr: Option<SocketAddr>, conn_id: u64) -> Self {
        ProxyInfo {
            id: node.id.clone(),
            cluster: node.cluster.clone(),
            metadata: node
                .metadata
                .as_ref()
                .map_or(serde_json::Value::Null, struct_to_json),
            peer_addr,
            conn_id,
        }
    }
}

/// Converts a `google.protobuf.Struct` into a JSON object.
pub fn struct_to_json(s: &Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &Value) -> serde_json::Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n)
            .map_or(serde_json::Value::Null, serde_json::Value::Number),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
    }
}

/// Resources generated for one proxy and type.
#[derive(Clone, Debug, Default)]
pub struct Generated {
    /// Version sent as `version_info` / `system_version_info` (the push version).
    pub version: String,
    /// The resources; the server sorts them by name and drops names outside the subscription.
    pub resources: Vec<NamedResource>,
}

/// Per type URL: the version and the packed resources (see [`AdsServer::would_send`]).
pub type GeneratedByType = BTreeMap<String, (String, Vec<crate::pb::google::protobuf::Any>)>;

/// Produces xDS resources for a proxy. Implemented by the control plane.
pub trait Generator: Send + Sync + 'static {
    /// Generates the resources of `type_url` that `names` covers for `proxy`. Return `Ok` with no
    /// resources for types you do not serve; an `Err` ends the proxy's stream (it reconnects).
    fn generate(
        &self,
        proxy: &ProxyInfo,
        type_url: &str,
        names: &Subscription,
    ) -> Result<Generated, String>;
}

/// A configuration change to deliver to every connected proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushEvent {
    /// Version of the new configuration (for logs; the generator's version is what is sent).
    pub version: String,
    /// Type URLs that may have changed; `None` means all.
    pub types: Option<Vec<String>>,
    /// For types that are not state of the world (EDS, RDS, …): the only resource names that
    /// may have changed. Streams regenerate just those of them they watch (istiod's incremental
    /// EDS). A type not listed may have changed anywhere.
    pub changed: BTreeMap<String, Arc<BTreeSet<String>>>,
    /// Proxies that regenerate every type whatever `types` and `changed` say, by the
    /// `<pod>.<namespace>` part of their node id (`sidecar~ip~<pod>.<namespace>~…`): those whose
    /// own workload changed in an endpoints-only push.
    pub full_for: Arc<BTreeSet<String>>,
}

/// Pushes as stream tasks see them: the newest `seq` and the last [`PUSH_HISTORY`] events, so
/// that a stream that was busy while several went out handles what they changed together (and
/// everything only when it fell further behind).
#[derive(Clone, Debug, Default)]
struct PushState {
    seq: u64,
    /// (seq, event), oldest first.
    events: std::collections::VecDeque<(u64, Arc<PushEvent>)>,
}

/// Pushes remembered for streams that fall behind.
const PUSH_HISTORY: usize = 64;

/// What a stream has to regenerate after a push.
#[derive(Clone, Debug, Default)]
struct Pending {
    /// Types to regenerate (`None`: all).
    types: Option<BTreeSet<String>>,
    /// Per type, the only names that may have changed.
    changed: BTreeMap<String, Arc<BTreeSet<String>>>,
    /// Proxies for which everything is pending (see [`PushEvent::full_for`]).
    full_for: Arc<BTreeSet<String>>,
}

impl Pending {
    fn includes(&self, type_url: &str) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(type_url))
    }

    /// What `events` may have changed together: the union of their types, names and proxies
    /// (a type is limited to names only when every event that has it is).
    fn merged(events: &[Arc<PushEvent>]) -> Pending {
        let mut types: Option<BTreeSet<String>> = Some(BTreeSet::new());
        let mut changed: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
        let mut full_for: BTreeSet<String> = BTreeSet::new();
        for ev in events {
            match (&mut types, &ev.types) {
                (Some(all), Some(t)) => all.extend(t.iter().cloned()),
                _ => types = None,
            }
            full_for.extend(ev.full_for.iter().cloned());
            let seen_types: Vec<String> = match &ev.types {
                Some(t) => t.clone(),
                None => KNOWN_TYPES
                    .iter()
                    .map(|t| t.to_string())
                    .chain(changed.keys().cloned())
                    .chain(ev.changed.keys().cloned())
                    .collect(),
            };
            for t in seen_types {
                let entry = changed
                    .entry(t.clone())
                    .or_insert_with(|| Some(BTreeSet::new()));
                match (entry.as_mut(), ev.changed.get(&t)) {
                    (Some(names), Some(n)) => names.extend(n.iter().cloned()),
                    _ => *entry = None,
                }
            }
        }
        if events.len() == 1 {
            let ev = &events[0];
            return Pending {
                types: ev.types.as_ref().map(|t| t.iter().cloned().collect()),
                changed: ev.changed.clone(),
                full_for: ev.full_for.clone(),
            };
        }
        Pending {
            types,
            changed: changed
                .into_iter()
                .filter_map(|(t, names)| Some((t, Arc::new(names?))))
                .collect(),
            full_for: Arc::new(full_for),
        }
    }

    /// What is pending for the proxy `id`: everything when the push names its workload.
    fn for_proxy(&self, id: &str) -> std::borrow::Cow<'_, Pending> {
        let workload = id.split('~').nth(2).unwrap_or_default();
        if self.full_for.contains(workload) {
            std::borrow::Cow::Owned(Pending::default())
        } else {
            std::borrow::Cow::Borrowed(self)
        }
    }
}

/// Where a stream stands for one type URL.
#[derive(Clone, Debug, Serialize)]
pub struct TypeStatus {
    /// What the proxy subscribed to.
    pub subscription: Subscription,
    /// Last response sent.
    pub last_sent: Option<SentStatus>,
    /// Last version the proxy ACKed.
    pub last_acked_version: Option<String>,
    /// Last NACK received.
    pub last_nack: Option<NackStatus>,
    /// Resources the proxy holds for this type (as of the last response).
    pub resources: usize,
}

/// A response sent on a stream.
#[derive(Clone, Debug, Serialize)]
pub struct SentStatus {
    /// `version_info` of the response.
    pub version: String,
    /// Its nonce.
    pub nonce: String,
    /// When it was sent.
    pub at: DateTime<Utc>,
}

/// A response rejected by the proxy.
#[derive(Clone, Debug, Serialize)]
pub struct NackStatus {
    /// The rejected version.
    pub version: String,
    /// The proxy's error message.
    pub message: String,
    /// When the NACK arrived.
    pub at: DateTime<Utc>,
}

/// Sync state of one connected stream (served at `/debug/syncz`).
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionStatus {
    /// Proxy id (`Node.id`).
    pub proxy_id: String,
    /// `Node.cluster`.
    pub cluster: String,
    /// Stream id.
    pub conn_id: u64,
    /// Remote address.
    pub peer_addr: Option<SocketAddr>,
    /// When the stream's first request arrived.
    pub connected_at: DateTime<Utc>,
    /// Whether the stream uses the delta protocol.
    pub delta: bool,
    /// `Node.user_agent_name`/`user_agent_version` (`weft/0.1.0`, `envoy/1.22.2`), empty when
    /// the proxy sends none.
    pub user_agent: String,
    /// `Node.metadata` as JSON.
    pub metadata: serde_json::Value,
    /// State per type URL.
    pub types: BTreeMap<String, TypeStatus>,
}

/// Server counters for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServerStats {
    /// Streams connected now.
    pub connections: u64,
    /// Responses sent, per type URL.
    pub pushes_total: BTreeMap<String, u64>,
    /// NACKs received.
    pub nacks_total: u64,
    /// Encoded bytes of the responses sent.
    pub bytes_sent: u64,
}

const KNOWN_TYPES: [&str; 5] = [
    types::CLUSTER,
    types::ENDPOINT,
    types::LISTENER,
    types::ROUTE,
    types::SECRET,
];

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    pushes: [AtomicU64; KNOWN_TYPES.len()],
    pushes_other: Mutex<BTreeMap<String, u64>>,
    nacks: AtomicU64,
    bytes_sent: AtomicU64,
}

/// ACKed state of a type kept across a reconnect of the same proxy.
#[derive(Clone, Debug)]
struct ResumeType {
    version: String,
    /// What the proxy held (sorted by name).
    held: Vec<NamedResource>,
    subscription: Subscription,
}

struct ResumeEntry {
    types: HashMap<String, ResumeType>,
    stored_at: Instant,
}

struct Shared {
    generator: Arc<dyn Generator>,
    push_tx: watch::Sender<PushState>,
    connections: Mutex<BTreeMap<u64, Arc<Mutex<ConnectionStatus>>>>,
    next_conn_id: AtomicU64,
    counters: Counters,
    resume: Mutex<HashMap<String, ResumeEntry>>,
    /// Subscriptions by content hash: proxies that watch the same names (every sidecar of a
    /// namespace, typically) share one copy of the list.
    subscriptions: Mutex<Interned>,
    /// Push slots: a stream holds one from generating a response until the proxy answers it,
    /// which bounds the responses encoded and in flight at once (memory) across the fleet.
    push_slots: Arc<Semaphore>,
}

impl Shared {
    /// The shared copy of `sub` (see [`Shared::subscriptions`]).
    fn intern(&self, sub: Subscription) -> Subscription {
        use std::hash::{Hash, Hasher};
        let Subscription::Names(set) = sub else {
            return sub;
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        set.hash(&mut h);
        let key = h.finish();
        let mut interned = lock(&self.subscriptions);
        if let Some(existing) = interned.map.get(&key).and_then(std::sync::Weak::upgrade)
            && *existing == *set
        {
            return Subscription::Names(existing);
        }
        // Entries of subscriptions no stream holds any more are swept when the table has
        // doubled since the last sweep, not on every insert.
        if interned.map.len() >= interned.sweep_at {
            interned.map.retain(|_, w| w.strong_count() > 0);
            interned.sweep_at = (interned.map.len() * 2).max(1024);
        }
        interned.map.insert(key, Arc::downgrade(&set));
        Subscription::Names(set)
    }
}

/// Interned subscriptions by content hash.
struct Interned {
    map: HashMap<u64, std::sync::Weak<BTreeSet<String>>>,
    sweep_at: usize,
}

impl Default for Interned {
    fn default() -> Self {
        Interned {
            map: HashMap::new(),
            sweep_at: 1024,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The ADS server. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct AdsServer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for AdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsServer")
            .field("connections", &lock(&self.shared.connections).len())
            .finish_non_exhaustive()
    }
}

impl AdsServer {
    /// Creates a server that takes resources from `generator`, with
    /// [`DEFAULT_PUSH_CONCURRENCY`] push slots.
    pub fn new(generator: Arc<dyn Generator>) -> Self {
        Self::with_push_concurrency(generator, DEFAULT_PUSH_CONCURRENCY)
    }

    /// Creates a server where at most `concurrency` streams (at least 1) have a response
    /// generated and not yet answered by their proxy at any time.
    pub fn with_push_concurrency(generator: Arc<dyn Generator>, concurrency: usize) -> Self {
        let (push_tx, _) = watch::channel(PushState::default());
        AdsServer {
            shared: Arc::new(Shared {
                generator,
                push_tx,
                connections: Mutex::new(BTreeMap::new()),
                next_conn_id: AtomicU64::new(1),
                counters: Counters::default(),
                resume: Mutex::new(HashMap::new()),
                subscriptions: Mutex::default(),
                push_slots: Arc::new(Semaphore::new(concurrency.max(1))),
            }),
        }
    }

    /// Notifies every connected stream. Streams coalesce: a slow stream handles the pushes it
    /// missed at once (what any of them may have changed).
    pub fn push(&self, event: PushEvent) {
        tracing::debug!(version = %event.version, types = ?event.types, "xDS push");
        self.shared.push_tx.send_modify(|s| {
            s.seq += 1;
            s.events.push_back((s.seq, Arc::new(event)));
            if s.events.len() > PUSH_HISTORY {
                s.events.pop_front();
            }
        });
    }

    /// The tonic service, with 64 MiB message limits.
    pub fn service(&self) -> AdsService<AdsServer> {
        AdsService::new(self.clone(), MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE)
    }

    /// Sync state of every connected stream, ordered by connection id.
    pub fn sync_status(&self) -> Vec<ConnectionStatus> {
        let conns: Vec<_> = lock(&self.shared.connections).values().cloned().collect();
        conns.iter().map(|c| lock(c).clone()).collect()
    }

    /// The proxy ids of the connected streams (cheaper than [`Self::sync_status`]: no copy of
    /// each stream's metadata and type states).
    pub fn connected_ids(&self) -> Vec<String> {
        let conns: Vec<_> = lock(&self.shared.connections).values().cloned().collect();
        conns.iter().map(|c| lock(c).proxy_id.clone()).collect()
    }

    /// What the control plane would send now to the connected proxy `proxy_id` (its newest
    /// stream), per xDS type it subscribed to (LDS, RDS, CDS, EDS): the version and the resources, as a push would
    /// (`None` when no such proxy is connected). Istio's `/debug/config_dump?proxyID=`.
    pub fn would_send(&self, proxy_id: &str) -> Option<Result<GeneratedByType, String>> {
        let conns: Vec<_> = lock(&self.shared.connections).values().cloned().collect();
        let status = conns
            .iter()
            .filter_map(|c| {
                let c = lock(c);
                (c.proxy_id == proxy_id).then(|| c.clone())
            })
            .max_by_key(|c| c.conn_id)?;
        let proxy = ProxyInfo {
            id: status.proxy_id.clone(),
            cluster: status.cluster.clone(),
            metadata: status.metadata.clone(),
            peer_addr: status.peer_addr,
            conn_id: status.conn_id,
        };
        let mut out = BTreeMap::new();
        let dumped = [
            types::LISTENER,
            types::ROUTE,
            types::CLUSTER,
            types::ENDPOINT,
        ];
        for (type_url, t) in &status.types {
            if !dumped.contains(&type_url.as_str()) {
                continue;
            }
            match self
                .shared
                .generator
                .generate(&proxy, type_url, &t.subscription)
            {
                Ok(g) => {
                    let resources = types::normalize(g.resources, &t.subscription)
                        .iter()
                        .map(|r| r.resource().clone())
                        .collect();
                    out.insert(type_url.clone(), (g.version, resources));
                }
                Err(e) => return Some(Err(e)),
            }
        }
        Some(Ok(out))
    }

    /// Counters for metrics.
    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.counters;
        let mut pushes_total = lock(&c.pushes_other).clone();
        for (i, t) in KNOWN_TYPES.iter().enumerate() {
            pushes_total.insert((*t).to_string(), c.pushes[i].load(Ordering::Relaxed));
        }
        ServerStats {
            connections: c.connections.load(Ordering::Relaxed),
            pushes_total,
            nacks_total: c.nacks.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
        }
    }
}

impl wire::AdsHandler for AdsServer {
    type SotwStream = ReceiverStream<Result<SotwResponse, Status>>;
    type DeltaStream = ReceiverStream<Result<DeltaResponse, Status>>;

    fn sotw(&self, request: Request<wire::Requests<request::SotwRequest>>) -> Self::SotwStream {
        let peer = request.remote_addr();
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
        tokio::spawn(sotw::run(
            self.shared.clone(),
            peer,
            request.into_inner(),
            tx,
        ));
        ReceiverStream::new(rx)
    }

    fn delta(&self, request: Request<wire::Requests<DeltaDiscoveryRequest>>) -> Self::DeltaStream {
        let peer = request.remote_addr();
        let (tx, rx) = mpsc::channel(RESPONSE_QUEUE);
        tokio::spawn(delta::run(
            self.shared.clone(),
            peer,
            request.into_inner(),
            tx,
        ));
        ReceiverStream::new(rx)
    }
}

/// Why a stream task stops.
enum Stop {
    /// The client went away or closed its side.
    Closed,
    /// The stream fails with this status.
    Fail(Status),
}

impl From<Status> for Stop {
    fn from(s: Status) -> Self {
        Stop::Fail(s)
    }
}

/// A stream's view of pushes.
struct PushWatch {
    rx: watch::Receiver<PushState>,
    last_seq: u64,
}

impl PushWatch {
    fn new(shared: &Shared) -> Self {
        let mut rx = shared.push_tx.subscribe();
        let last_seq = rx.borrow_and_update().seq;
        PushWatch { rx, last_seq }
    }

    /// Waits for the next push; returns what to regenerate: what the pushes since the last
    /// call may have changed (everything when they are no longer all remembered).
    async fn changed(&mut self) -> Option<Pending> {
        self.rx.changed().await.ok()?;
        let (seq, missed): (u64, Option<Vec<Arc<PushEvent>>>) = {
            let state = self.rx.borrow_and_update();
            let missed: Vec<Arc<PushEvent>> = state
                .events
                .iter()
                .filter(|(n, _)| *n > self.last_seq)
                .map(|(_, e)| e.clone())
                .collect();
            let complete = missed.len() as u64 == state.seq - self.last_seq;
            (state.seq, complete.then_some(missed))
        };
        self.last_seq = seq;
        Some(missed.map_or_else(Pending::default, |events| Pending::merged(&events)))
    }
}

/// A stream's hold on one of the server's push slots, kept from generating a response until the
/// proxy answers every response sent meanwhile (or [`PUSH_SLOT_TIMEOUT`] passes): a bound on the
/// responses generated, encoded and in flight at once across the fleet.
struct PushSlot {
    slots: Arc<Semaphore>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Types with a response the proxy has not answered yet.
    awaiting: BTreeSet<String>,
    deadline: Option<tokio::time::Instant>,
}

impl PushSlot {
    fn new(shared: &Shared) -> Self {
        PushSlot {
            slots: shared.push_slots.clone(),
            permit: None,
            awaiting: BTreeSet::new(),
            deadline: None,
        }
    }

    /// Waits for a slot unless this stream holds one.
    async fn acquire(&mut self) {
        if self.permit.is_none() {
            // The semaphore is never closed, so this only waits.
            self.permit = self.slots.clone().acquire_owned().await.ok();
            self.deadline = Some(tokio::time::Instant::now() + PUSH_SLOT_TIMEOUT);
        }
    }

    /// A response of `type_url` went out under the slot.
    fn sent(&mut self, type_url: &str) {
        if self.permit.is_some() {
            self.awaiting.insert(type_url.to_string());
        }
    }

    /// The proxy ACKed or NACKed the latest response of `type_url`.
    fn answered(&mut self, type_url: &str) {
        self.awaiting.remove(type_url);
        self.release_if_idle();
    }

    fn release_if_idle(&mut self) {
        if self.awaiting.is_empty() {
            self.release();
        }
    }

    fn release(&mut self) {
        self.permit = None;
        self.awaiting.clear();
        self.deadline = None;
    }

    /// Resolves when the slot has been held too long (never while no slot is held).
    async fn expired(&self) {
        match self.deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    }
}

fn user_agent(node: &Node) -> String {
    use crate::pb::envoy::config::core::v3::node::UserAgentVersionType as V;
    let version = match &node.user_agent_version_type {
        Some(V::UserAgentVersion(v)) => v.clone(),
        Some(V::UserAgentBuildVersion(b)) => b
            .version
            .as_ref()
            .map(|v| format!("{}.{}.{}", v.major_number, v.minor_number, v.patch))
            .unwrap_or_default(),
        None => String::new(),
    };
    match (node.user_agent_name.as_str(), version.as_str()) {
        ("", _) => String::new(),
        (name, "") => name.to_string(),
        (name, v) => format!("{name}/{v}"),
    }
}

/// A registered connection: status entry, stats and connect/disconnect logs.
struct Conn {
    shared: Arc<Shared>,
    proxy: ProxyInfo,
    status: Arc<Mutex<ConnectionStatus>>,
}

/// Output of [`Conn::generate`]: resources sorted by name, only those subscribed.
struct Output {
    version: String,
    resources: Vec<NamedResource>,
}

impl Conn {
    /// Registers a stream whose first request carried `node`.
    fn register(
        shared: &Arc<Shared>,
        node: Option<&Node>,
        peer: Option<SocketAddr>,
        delta: bool,
    ) -> Result<Conn, Status> {
        let node = node.ok_or_else(|| {
            Status::invalid_argument("the first discovery request of a stream must carry the node")
        })?;
        if node.id.is_empty() {
            return Err(Status::invalid_argument(
                "the node id is empty; set it (Istio form: sidecar~IP~POD.NS~NS.svc.cluster.local)",
            ));
        }
        let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let proxy = ProxyInfo::from_node(node, peer, conn_id);
        let status = Arc::new(Mutex::new(ConnectionStatus {
            proxy_id: proxy.id.clone(),
            cluster: proxy.cluster.clone(),
            conn_id,
            peer_addr: peer,
            connected_at: Utc::now(),
            delta,
            user_agent: user_agent(node),
            metadata: proxy.metadata.clone(),
            types: BTreeMap::new(),
        }));
        lock(&shared.connections).insert(conn_id, status.clone());
        shared.counters.connections.fetch_add(1, Ordering::Relaxed);
        tracing::info!(proxy = %proxy.id, conn_id, peer = ?peer, delta, "xDS stream connected");
        Ok(Conn {
            shared: shared.clone(),
            proxy,
            status,
        })
    }

    /// Runs the generator; a failure ends the stream.
    fn generate(&self, type_url: &str, sub: &Subscription) -> Result<Output, Status> {
        let g = self
            .shared
            .generator
            .generate(&self.proxy, type_url, sub)
            .map_err(|msg| {
                tracing::warn!(proxy = %self.proxy.id, type_url, error = %msg, "xDS generation failed; closing the stream");
                Status::internal(format!(
                    "generating {} for {} failed: {msg}",
                    types::short_name(type_url),
                    self.proxy.id
                ))
            })?;
        Ok(Output {
            version: g.version,
            resources: types::normalize(g.resources, sub),
        })
    }

    fn with_type(&self, type_url: &str, sub: &Subscription, f: impl FnOnce(&mut TypeStatus)) {
        let mut st = lock(&self.status);
        if let Some(entry) = st.types.get_mut(type_url) {
            entry.subscription = sub.clone();
            f(entry);
            return;
        }
        let mut entry = TypeStatus {
            subscription: sub.clone(),
            last_sent: None,
            last_acked_version: None,
            last_nack: None,
            resources: 0,
        };
        f(&mut entry);
        st.types.insert(type_url.to_string(), entry);
    }

    fn record_sent(
        &self,
        type_url: &str,
        sub: &Subscription,
        version: &str,
        nonce: &str,
        resources: usize,
        bytes: usize,
    ) {
        self.with_type(type_url, sub, |t| {
            t.last_sent = Some(SentStatus {
                version: version.to_string(),
                nonce: nonce.to_string(),
                at: Utc::now(),
            });
            t.resources = resources;
        });
        let c = &self.shared.counters;
        match KNOWN_TYPES.iter().position(|t| *t == type_url) {
            Some(i) => {
                c.pushes[i].fetch_add(1, Ordering::Relaxed);
            }
            None => {
                *lock(&c.pushes_other)
                    .entry(type_url.to_string())
                    .or_default() += 1
            }
        }
        c.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
        tracing::debug!(proxy = %self.proxy.id, type_url, version, nonce, resources, bytes, "xDS response sent");
    }

    fn record_ack(&self, type_url: &str, sub: &Subscription, version: &str) {
        tracing::debug!(proxy = %self.proxy.id, type_url, version, "xDS ACK");
        self.with_type(type_url, sub, |t| {
            t.last_acked_version = Some(version.to_string());
        });
    }

    fn record_nack(&self, type_url: &str, sub: &Subscription, version: &str, message: &str) {
        tracing::warn!(
            proxy = %self.proxy.id,
            type_url,
            version,
            error = %message,
            "xDS NACK: the proxy rejected the configuration"
        );
        self.shared.counters.nacks.fetch_add(1, Ordering::Relaxed);
        self.with_type(type_url, sub, |t| {
            t.last_nack = Some(NackStatus {
                version: version.to_string(),
                message: message.to_string(),
                at: Utc::now(),
            });
        });
    }

    /// Takes the ACKed state a previous stream of this proxy left (if recent).
    fn take_resume(&self) -> HashMap<String, ResumeType> {
        let mut resume = lock(&self.shared.resume);
        resume.retain(|_, e| e.stored_at.elapsed() < RESUME_TTL);
        resume
            .remove(&self.proxy.id)
            .map(|e| e.types)
            .unwrap_or_default()
    }

    /// Stores ACKed state for a later reconnect of this proxy.
    fn store_resume(&self, types: HashMap<String, ResumeType>) {
        if types.is_empty() {
            return;
        }
        let mut resume = lock(&self.shared.resume);
        resume.retain(|_, e| e.stored_at.elapsed() < RESUME_TTL);
        resume.insert(
            self.proxy.id.clone(),
            ResumeEntry {
                types,
                stored_at: Instant::now(),
            },
        );
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        lock(&self.shared.connections).remove(&self.proxy.conn_id);
        self.shared
            .counters
            .connections
            .fetch_sub(1, Ordering::Relaxed);
        tracing::info!(proxy = %self.proxy.id, conn_id = self.proxy.conn_id, "xDS stream disconnected");
    }
}

fn new_nonce() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::google::protobuf::ListValue;

    fn event(types: Option<&[&str]>, eds: Option<&[&str]>, full_for: &[&str]) -> Arc<PushEvent> {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        Arc::new(PushEvent {
            version: String::new(),
            types: types.map(|t| t.iter().map(|s| s.to_string()).collect()),
            changed: eds
                .map(|n| [(types::ENDPOINT.to_string(), Arc::new(set(n)))].into())
                .unwrap_or_default(),
            full_for: Arc::new(set(full_for)),
        })
    }

    #[test]
    fn missed_pushes_merge_into_what_any_of_them_changed() {
        let eds = [types::ENDPOINT];
        // Two endpoint pushes: their assignments and workloads together.
        let p = Pending::merged(&[
            event(Some(&eds), Some(&["a"]), &["w1.ns"]),
            event(Some(&eds), Some(&["b"]), &[]),
        ]);
        assert!(p.includes(types::ENDPOINT) && !p.includes(types::CLUSTER));
        assert_eq!(
            p.changed[types::ENDPOINT].iter().collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(p.full_for.iter().collect::<Vec<_>>(), ["w1.ns"]);
        // With a full push among them (its assignments named too): every type, the named
        // assignments only.
        let p = Pending::merged(&[
            event(Some(&eds), Some(&["a"]), &[]),
            event(None, Some(&["c"]), &[]),
        ]);
        assert!(p.includes(types::CLUSTER) && p.includes(types::LISTENER));
        assert_eq!(
            p.changed[types::ENDPOINT].iter().collect::<Vec<_>>(),
            ["a", "c"]
        );
        assert!(!p.changed.contains_key(types::CLUSTER));
        // A push that does not limit the assignments it changed: all of them.
        let p = Pending::merged(&[event(Some(&eds), Some(&["a"]), &[]), event(None, None, &[])]);
        assert!(!p.changed.contains_key(types::ENDPOINT));
        assert!(p.types.is_none());
    }

    #[test]
    fn node_metadata_to_json() {
        let mut fields = HashMap::new();
        fields.insert(
            "NAMESPACE".to_string(),
            Value {
                kind: Some(Kind::StringValue("default".into())),
            },
        );
        fields.insert(
            "PORTS".to_string(),
            Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: vec![Value {
                        kind: Some(Kind::NumberValue(8080.0)),
                    }],
                })),
            },
        );
        fields.insert(
            "GENERATOR".to_string(),
            Value {
                kind: Some(Kind::NullValue(0)),
            },
        );
        let node = Node {
            id: "sidecar~10.0.0.1~a.default~default.svc.cluster.local".into(),
            cluster: "a.default".into(),
            metadata: Some(Struct { fields }),
            ..Default::default()
        };
        let p = ProxyInfo::from_node(&node, None, 7);
        assert_eq!(
            p.metadata,
            serde_json::json!({"NAMESPACE": "default", "PORTS": [8080.0], "GENERATOR": null})
        );
        assert_eq!(p.cluster, "a.default");
        assert_eq!(p.conn_id, 7);
        let empty = ProxyInfo::from_node(&Node::default(), None, 1);
        assert!(empty.metadata.is_null());
    }
}
