//! Config distribution: from which push a resource's current content is in force, and whether
//! every connected proxy has applied that push (`/debug/config_distribution`, which
//! `weft wait` polls; Istio's `istioctl x wait` asks istiod the same).
//!
//! Versions. Each push is versioned `<secs>/<n>`, `n` counting pushes from 1 (the first load);
//! they are ordered by `n`. A resource is in force from the push that first carried its current
//! content ([`Applied`]).
//!
//! What a proxy holds. The ADS server sends a type to a proxy only when its content for that
//! proxy changed, so the version a proxy ACKed can stay older than the latest push while the
//! proxy is up to date. [`Tracked`] wraps the generator and remembers per proxy and type (LDS,
//! CDS, RDS) what each generation produced. A proxy has applied push `n` for a type when its
//! stream generated the type at push `n` or later, the last response it was sent is ACKed, and
//! the content of that ACKed version equals the latest generated. Within one push a proxy can be
//! sent a type twice (RDS names following new listeners): the second and later generations of
//! the same push get versions of their own, `<secs>/<n>.<k>`, so each ACK names what it
//! accepted.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weft_api::{Kind, Note, Resource, Source};
use weft_xds::types::{self, NamedResource, Subscription};
use weft_xds::{ConnectionStatus, Generated, Generator, ProxyInfo, TypeStatus};

use crate::store::{DocKey, RefusedFile, Snapshot};

/// The types whose ACKs tell that a proxy applied a push.
pub const TRACKED: [&str; 3] = [types::LISTENER, types::CLUSTER, types::ROUTE];

/// Contents remembered per proxy and type (each kept from its first generation until the next
/// different one).
const MAX_RUNS: usize = 8;

/// How long a disconnected proxy's record is kept (the ADS server's resume window).
const KEEP_DISCONNECTED: Duration = Duration::from_secs(600);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A response version: the push `n` and, for later generations within that push, `k`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Label {
    pub push: u64,
    pub sub: u64,
}

impl Label {
    /// Parses `<secs>/<n>` or `<secs>/<n>.<k>` (also without `<secs>/`).
    pub fn parse(version: &str) -> Option<Label> {
        let tail = version.rsplit_once('/').map_or(version, |(_, t)| t);
        let (push, sub) = match tail.split_once('.') {
            Some((p, k)) => (p, k.parse().ok()?),
            None => (tail, 0),
        };
        Some(Label {
            push: push.parse().ok()?,
            sub,
        })
    }
}

/// The push number of a push version (`<secs>/<n>`).
pub fn push_number(version: &str) -> Option<u64> {
    Label::parse(version).map(|l| l.push)
}

/// What was generated for one proxy and type.
#[derive(Default)]
struct TypeTrack {
    /// The latest label issued.
    last: Option<Label>,
    /// Contents (sorted by name), each with the label of its first generation, oldest first.
    runs: VecDeque<(Label, Vec<NamedResource>)>,
}

impl TypeTrack {
    /// The content generated under `label`, if still remembered.
    fn content_at(&self, label: Label) -> Option<&[NamedResource]> {
        self.runs
            .iter()
            .rev()
            .find(|(from, _)| *from <= label)
            .map(|(_, c)| c.as_slice())
    }

    fn latest(&self) -> Option<&[NamedResource]> {
        self.runs.back().map(|(_, c)| c.as_slice())
    }
}

struct ProxyTrack {
    types: HashMap<&'static str, TypeTrack>,
    touched: Instant,
}

/// Per proxy (node id) and type, the labels issued and the contents generated.
#[derive(Default)]
pub struct Tracker {
    proxies: Mutex<HashMap<String, Arc<Mutex<ProxyTrack>>>>,
    /// The newest pushes that regenerated LDS, CDS and RDS for every proxy (all but
    /// endpoints-only pushes, which regenerate them only for the proxies of the workloads that
    /// changed).
    full: Mutex<std::collections::BTreeSet<u64>>,
}

/// Full pushes remembered (older ones are long superseded by the proxies' generations).
const FULL_PUSHES_KEPT: usize = 1024;

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("proxies", &lock(&self.proxies).len())
            .finish()
    }
}

/// Sorted by name, first of duplicate names, only what `sub` covers (as the ADS server sends).
fn normalized(resources: &[NamedResource], sub: &Subscription) -> Vec<NamedResource> {
    let mut out: Vec<NamedResource> = resources
        .iter()
        .filter(|r| sub.contains(r.name()))
        .cloned()
        .collect();
    out.sort_by(|a, b| a.name().cmp(b.name()));
    out.dedup_by(|a, b| a.name() == b.name());
    out
}

/// Whether `held` has every resource of `current` with the same content.
fn covers(held: &[NamedResource], current: &[NamedResource]) -> bool {
    current.iter().all(|r| {
        held.binary_search_by(|h| h.name().cmp(r.name()))
            .is_ok_and(|i| held[i].same(r))
    })
}

impl Tracker {
    /// Records what was generated for `proxy` and returns the version to send it under.
    pub fn record(
        &self,
        proxy: &str,
        type_url: &'static str,
        sub: &Subscription,
        version: String,
        resources: &[NamedResource],
    ) -> String {
        let Some(mut label) = Label::parse(&version) else {
            return version;
        };
        let entry = {
            let mut map = lock(&self.proxies);
            match map.get(proxy) {
                Some(e) => e.clone(),
                None => {
                    let e = Arc::new(Mutex::new(ProxyTrack {
                        types: HashMap::new(),
                        touched: Instant::now(),
                    }));
                    map.insert(proxy.to_string(), e.clone());
                    e
                }
            }
        };
        let mut p = lock(&entry);
        p.touched = Instant::now();
        let t = p.types.entry(type_url).or_default();
        match t.last {
            // Another stream of the same proxy still on an older push: sent as it is.
            Some(last) if last.push > label.push => return version,
            Some(last) if last.push == label.push => label.sub = last.sub + 1,
            _ => {}
        }
        t.last = Some(label);
        let content = normalized(resources, sub);
        if t.runs.back().is_none_or(|(_, c)| *c != content) {
            t.runs.push_back((label, content));
            if t.runs.len() > MAX_RUNS {
                t.runs.pop_front();
            }
        }
        if label.sub == 0 {
            version
        } else {
            format!("{version}.{}", label.sub)
        }
    }

    /// Push `n` went out: `full`, or for endpoints only.
    pub fn pushed(&self, n: u64, full: bool) {
        if full {
            let mut f = lock(&self.full);
            f.insert(n);
            while f.len() > FULL_PUSHES_KEPT {
                f.pop_first();
            }
        }
    }

    /// The push whose LDS, CDS and RDS a proxy that applied push `n` holds: the newest full push
    /// up to `n` (endpoints-only pushes after it regenerated them only for their workloads'
    /// proxies, which then count from `n` themselves).
    fn regenerated_at(&self, n: u64) -> u64 {
        lock(&self.full)
            .range(..=n)
            .next_back()
            .copied()
            .unwrap_or(n)
    }

    /// Proxies with a record.
    pub fn len(&self) -> usize {
        lock(&self.proxies).len()
    }

    /// Whether no proxy has a record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets proxies that are not connected and were not heard of for a while.
    pub fn retain_connected(&self, connected: &HashSet<String>) {
        lock(&self.proxies).retain(|id, p| {
            connected.contains(id) || lock(p).touched.elapsed() < KEEP_DISCONNECTED
        });
    }

    /// Where a proxy stands for one type, given the stream's account of it.
    fn type_sync(&self, proxy: &str, type_url: &str, seen: &Seen<'_>, since: u64) -> TypeSync {
        let entry = lock(&self.proxies).get(proxy).cloned();
        let Some(entry) = entry else {
            return TypeSync::Waiting("nothing generated for it yet".into());
        };
        let p = lock(&entry);
        match p.types.get(type_url) {
            Some(t) => t.sync(seen, self.regenerated_at(since)),
            None => TypeSync::Waiting("nothing generated for it yet".into()),
        }
    }
}

/// A stream's account of one type: versions sent, ACKed and rejected.
#[derive(Clone, Debug, Default)]
pub struct Seen<'a> {
    pub sent: Option<&'a str>,
    pub acked: Option<&'a str>,
    /// Version and message of the last NACK.
    pub nacked: Option<(&'a str, &'a str)>,
}

impl<'a> From<&'a TypeStatus> for Seen<'a> {
    fn from(t: &'a TypeStatus) -> Self {
        Seen {
            sent: t.last_sent.as_ref().map(|s| s.version.as_str()),
            acked: t.last_acked_version.as_deref(),
            nacked: t
                .last_nack
                .as_ref()
                .map(|n| (n.version.as_str(), n.message.as_str())),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TypeSync {
    Synced,
    Waiting(String),
    Rejected(String),
}

impl TypeTrack {
    fn sync(&self, seen: &Seen<'_>, since: u64) -> TypeSync {
        let (Some(last), Some(current)) = (self.last, self.latest()) else {
            return TypeSync::Waiting("nothing generated for it yet".into());
        };
        if last.push < since {
            return TypeSync::Waiting(format!(
                "push {since} not processed yet (latest: push {})",
                last.push
            ));
        }
        if let Some((version, message)) = seen.nacked
            && seen.sent == Some(version)
        {
            // The latest response was rejected: final if it carried the current content.
            let current_rejected = Label::parse(version)
                .and_then(|l| self.content_at(l))
                .is_some_and(|c| covers(c, current));
            return if current_rejected {
                TypeSync::Rejected(format!("rejected version {version}: {message}"))
            } else {
                TypeSync::Waiting(format!(
                    "rejected version {version} ({message}); a newer one is on its way"
                ))
            };
        }
        let Some(acked) = seen.acked else {
            return TypeSync::Waiting(match seen.sent {
                Some(v) => format!("version {v} sent, not ACKed yet"),
                None => "nothing ACKed yet".into(),
            });
        };
        if let Some(sent) = seen.sent
            && sent != acked
        {
            return TypeSync::Waiting(format!("version {sent} sent, not ACKed yet"));
        }
        match Label::parse(acked).and_then(|l| self.content_at(l)) {
            Some(held) if covers(held, current) => TypeSync::Synced,
            Some(_) => TypeSync::Waiting(format!("ACKed {acked}; a newer content is on its way")),
            None => TypeSync::Waiting(format!("ACKed {acked}, which is no longer known")),
        }
    }
}

/// The generator the ADS server runs: the mesh generator, with every LDS, CDS and RDS
/// generation recorded in the [`Tracker`] (and versioned by it).
pub struct Tracked<G> {
    pub inner: Arc<G>,
    pub tracker: Arc<Tracker>,
}

impl<G: Generator> Generator for Tracked<G> {
    fn generate(
        &self,
        proxy: &ProxyInfo,
        type_url: &str,
        names: &Subscription,
    ) -> Result<Generated, String> {
        let mut g = self.inner.generate(proxy, type_url, names)?;
        if let Some(&t) = TRACKED.iter().find(|t| **t == type_url) {
            g.version = self
                .tracker
                .record(&proxy.id, t, names, g.version, &g.resources);
        }
        Ok(g)
    }
}

/// From which push a resource's current content is in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Since {
    pub push: u64,
    pub version: String,
    pub source: Source,
}

/// The config as last loaded, published after each load (and its push).
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// [`Snapshot::fingerprint`] of the load.
    pub fingerprint: u64,
    pub resources: Arc<Vec<Resource>>,
    pub since: HashMap<DocKey, Since>,
    pub refused: BTreeMap<PathBuf, RefusedFile>,
    pub flagged: Vec<(DocKey, String)>,
    pub notes: Vec<Note>,
}

impl Applied {
    /// The first load, in force from push `push` (`version`).
    pub fn first(snap: &Snapshot, push: u64, version: &str) -> Self {
        Applied::default().next(snap, Some((push, version)))
    }

    /// The state after a load; `pushed` is the push it made, `None` when the resources and the
    /// mesh config did not change.
    pub fn next(&self, snap: &Snapshot, pushed: Option<(u64, &str)>) -> Self {
        let since = match pushed {
            None => self.since.clone(),
            Some((push, version)) => {
                let before: HashMap<DocKey, &Resource> =
                    self.resources.iter().map(|r| (DocKey::of(r), r)).collect();
                let mut since = HashMap::new();
                for r in snap.resources.iter() {
                    let key = DocKey::of(r);
                    if since.contains_key(&key) {
                        continue;
                    }
                    let kept = (before.get(&key) == Some(&r))
                        .then(|| self.since.get(&key).cloned())
                        .flatten();
                    let s = kept.unwrap_or_else(|| Since {
                        push,
                        version: version.to_string(),
                        source: r.source.clone(),
                    });
                    since.insert(key, s);
                }
                since
            }
        };
        Applied {
            fingerprint: snap.fingerprint,
            resources: snap.resources.clone(),
            since,
            refused: snap.refused.clone(),
            flagged: snap.flagged.clone(),
            notes: snap.notes.clone(),
        }
    }
}

/// Where a resource stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// A config file changed on disk since the control plane last read the directory.
    Loading,
    /// No such resource in the config the control plane serves.
    NotFound,
    /// Not a kind Weft applies.
    UnknownKind,
    /// Read but not applied (a kind Istio applies and Weft does not).
    Skipped,
    /// Its latest content was refused (by the config store, or by a proxy): see `errors`.
    Rejected,
    /// In force; not every proxy has applied it yet.
    Distributing,
    /// In force and applied by every connected proxy.
    Applied,
}

impl State {
    /// Whether waiting longer can change the answer.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::UnknownKind | State::Skipped | State::Rejected | State::Applied
        )
    }
}

/// One proxy's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxySync {
    /// Node id.
    pub proxy: String,
    pub synced: bool,
    /// What it still lacks, per type (`LDS: version … sent, not ACKed yet`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<String>,
    /// What it rejected of the current config.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<String>,
}

/// The answer of `/debug/config_distribution?resource=KIND/NAMESPACE/NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distribution {
    /// `Kind namespace/name`.
    pub resource: String,
    pub state: State,
    /// The push version from which its current content is in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Where its content in force comes from (`file:line`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Why it was refused (state `rejected`, `skipped`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// More about the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Connected proxies (state `distributing`, `applied`, or `rejected` by a proxy).
    #[serde(default)]
    pub proxies: Vec<ProxySync>,
}

/// Kinds by the names `istioctl` and `kubectl` accept: the kind, its plural and short names,
/// any case, optionally `group/version/Kind`.
pub fn parse_kind(name: &str) -> Option<Kind> {
    let name = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    let short = match name.as_str() {
        "vs" => Some(Kind::VirtualService),
        "dr" => Some(Kind::DestinationRule),
        "se" => Some(Kind::ServiceEntry),
        "we" => Some(Kind::WorkloadEntry),
        "gw" => Some(Kind::Gateway),
        "pa" => Some(Kind::PeerAuthentication),
        "ap" => Some(Kind::AuthorizationPolicy),
        "ra" => Some(Kind::RequestAuthentication),
        _ => None,
    };
    short.or_else(|| {
        Kind::ALL.into_iter().find(|k| {
            let kind = k.as_str().to_ascii_lowercase();
            let plural = match kind.strip_suffix('y') {
                Some(stem) => format!("{stem}ies"),
                None => format!("{kind}s"),
            };
            name == kind || name == plural
        })
    })
}

/// Splits `KIND/NAMESPACE/NAME` (the `resource` query parameter).
pub fn parse_resource(resource: &str) -> Option<(String, String, String)> {
    let mut parts = resource.rsplitn(3, '/');
    let name = parts.next()?;
    let namespace = parts.next()?;
    let kind = parts.next()?;
    if kind.is_empty() || namespace.is_empty() || name.is_empty() {
        return None;
    }
    Some((kind.to_string(), namespace.to_string(), name.to_string()))
}

/// Where `kind/namespace/name` stands: `disk` is [`crate::store::fingerprint`] of the config
/// files now, `conns` the ADS server's streams.
pub fn distribution(
    applied: &Applied,
    disk: u64,
    kind: &str,
    namespace: &str,
    name: &str,
    conns: &[ConnectionStatus],
    tracker: &Tracker,
) -> Distribution {
    let known = parse_kind(kind);
    let key = DocKey::new(known.map_or(kind, |k| k.as_str()), namespace, name);
    let mut d = Distribution {
        resource: key.to_string(),
        state: State::NotFound,
        version: None,
        source: None,
        errors: Vec::new(),
        message: None,
        proxies: Vec::new(),
    };
    if disk != applied.fingerprint {
        d.state = State::Loading;
        d.message = Some(
            "the config files changed since the control plane last read them; it reloads after 100 ms without changes"
                .into(),
        );
        return d;
    }
    if known.is_none() {
        let note = applied.notes.iter().find(|n| {
            n.kind.eq_ignore_ascii_case(kind)
                && n.name.as_deref() == Some(name)
                && n.namespace.as_deref().unwrap_or("default") == namespace
        });
        match note {
            Some(n) => {
                d.resource = format!("{} {namespace}/{name}", n.kind);
                d.state = State::Skipped;
                d.errors.push(n.to_string());
            }
            None => {
                d.state = State::UnknownKind;
                let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                d.message = Some(format!(
                    "Weft applies no kind {kind:?}; it applies {}",
                    kinds.join(", ")
                ));
            }
        }
        return d;
    }
    let flagged: Vec<String> = applied
        .flagged
        .iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, p)| p.clone())
        .collect();
    if !flagged.is_empty() {
        d.state = State::Rejected;
        d.errors = flagged;
        return d;
    }
    let since = applied.since.get(&key);
    for (file, refused) in &applied.refused {
        let in_force_from_file = since.is_some_and(|s| s.source.file == *file);
        if refused.documents.contains(&key) || in_force_from_file {
            d.state = State::Rejected;
            d.errors = refused.problems.clone();
            d.message = Some(match since {
                Some(s) => format!(
                    "{} was not applied; the last good content of {key} stays in force (version {})",
                    file.display(),
                    s.version
                ),
                None => format!("{} was not applied", file.display()),
            });
            return d;
        }
    }
    let Some(since) = since else {
        let mut message = format!("no {key} in the config the control plane serves");
        let unnamed: Vec<&str> = applied
            .refused
            .values()
            .filter(|r| r.documents.is_empty())
            .flat_map(|r| r.problems.iter().map(String::as_str))
            .collect();
        if !unnamed.is_empty() {
            message.push_str("; files not applied: ");
            message.push_str(&unnamed.join("; "));
        }
        d.message = Some(message);
        return d;
    };
    d.version = Some(since.version.clone());
    d.source = Some(format!(
        "{}:{}",
        since.source.file.display(),
        since.source.line
    ));
    d.proxies = proxies_sync(conns, tracker, since.push);
    d.state = if d.proxies.iter().any(|p| !p.rejected.is_empty()) {
        d.errors = d
            .proxies
            .iter()
            .flat_map(|p| p.rejected.iter().map(move |r| format!("{}: {r}", p.proxy)))
            .collect();
        State::Rejected
    } else if d.proxies.iter().all(|p| p.synced) {
        State::Applied
    } else {
        State::Distributing
    };
    d
}

/// Every connected proxy (its newest stream) against push `since`.
pub fn proxies_sync(conns: &[ConnectionStatus], tracker: &Tracker, since: u64) -> Vec<ProxySync> {
    let mut newest: BTreeMap<&str, &ConnectionStatus> = BTreeMap::new();
    for c in conns {
        let slot = newest.entry(c.proxy_id.as_str()).or_insert(c);
        if c.conn_id > slot.conn_id {
            *slot = c;
        }
    }
    newest
        .into_values()
        .map(|c| {
            let mut p = ProxySync {
                proxy: c.proxy_id.clone(),
                synced: false,
                waiting: Vec::new(),
                rejected: Vec::new(),
            };
            if !c.types.contains_key(types::LISTENER) {
                p.waiting.push("LDS: not subscribed yet".into());
            }
            for t in TRACKED {
                let Some(status) = c.types.get(t) else {
                    continue;
                };
                let line = |s: String| format!("{}: {s}", types::short_name(t));
                match tracker.type_sync(&c.proxy_id, t, &Seen::from(status), since) {
                    TypeSync::Synced => {}
                    TypeSync::Waiting(s) => p.waiting.push(line(s)),
                    TypeSync::Rejected(s) => p.rejected.push(line(s)),
                }
            }
            p.synced = p.waiting.is_empty() && p.rejected.is_empty();
            p
        })
        .collect()
}

#[cfg(test)]
mod tests;
