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
mod tests {
    use super::*;
    use weft_xds::pb::google::protobuf::Any;

    fn res(name: &str, content: &str) -> NamedResource {
        NamedResource::new(
            name,
            Any {
                type_url: "test".into(),
                value: content.as_bytes().to_vec(),
            },
        )
    }

    fn names(n: &[&str]) -> Subscription {
        Subscription::Names(Arc::new(n.iter().map(|s| s.to_string()).collect()))
    }

    fn seen<'a>(sent: Option<&'a str>, acked: Option<&'a str>) -> Seen<'a> {
        Seen {
            sent,
            acked,
            nacked: None,
        }
    }

    fn sync(t: &Tracker, type_url: &str, seen: &Seen<'_>, since: u64) -> TypeSync {
        t.type_sync("p", type_url, seen, since)
    }

    #[test]
    fn labels_parse_and_order() {
        assert_eq!(
            Label::parse("1700000000/7"),
            Some(Label { push: 7, sub: 0 })
        );
        assert_eq!(
            Label::parse("1700000000/7.2"),
            Some(Label { push: 7, sub: 2 })
        );
        assert_eq!(Label::parse("3"), Some(Label { push: 3, sub: 0 }));
        assert_eq!(Label::parse("v1"), None);
        assert!(Label::parse("1/7.2") > Label::parse("2/7"));
        assert!(Label::parse("1/10") > Label::parse("9/9.5"));
    }

    #[test]
    fn a_push_that_leaves_a_type_unchanged_counts_as_applied() {
        let t = Tracker::default();
        let v = t.record(
            "p",
            types::CLUSTER,
            &Subscription::Wildcard,
            "s/1".into(),
            &[res("a", "1")],
        );
        assert_eq!(v, "s/1");
        assert_eq!(
            sync(&t, types::CLUSTER, &seen(Some("s/1"), Some("s/1")), 1),
            TypeSync::Synced
        );
        // Push 2 before the stream processed it: waiting.
        assert!(matches!(
            sync(&t, types::CLUSTER, &seen(Some("s/1"), Some("s/1")), 2),
            TypeSync::Waiting(_)
        ));
        // Push 2 generates the same clusters: nothing is sent, and the proxy has push 2.
        let v = t.record(
            "p",
            types::CLUSTER,
            &Subscription::Wildcard,
            "s/2".into(),
            &[res("a", "1")],
        );
        assert_eq!(v, "s/2");
        assert_eq!(
            sync(&t, types::CLUSTER, &seen(Some("s/1"), Some("s/1")), 2),
            TypeSync::Synced
        );
        // Push 3 changes them: until the proxy ACKs s/3 it lacks push 3 (the response may
        // not even be sent yet).
        t.record(
            "p",
            types::CLUSTER,
            &Subscription::Wildcard,
            "s/3".into(),
            &[res("a", "2")],
        );
        assert!(matches!(
            sync(&t, types::CLUSTER, &seen(Some("s/1"), Some("s/1")), 3),
            TypeSync::Waiting(_)
        ));
        assert!(matches!(
            sync(&t, types::CLUSTER, &seen(Some("s/3"), Some("s/1")), 3),
            TypeSync::Waiting(_)
        ));
        assert_eq!(
            sync(&t, types::CLUSTER, &seen(Some("s/3"), Some("s/3")), 3),
            TypeSync::Synced
        );
        // Another proxy, another type: nothing known.
        assert!(matches!(
            t.type_sync("q", types::CLUSTER, &seen(None, None), 1),
            TypeSync::Waiting(_)
        ));
        assert!(matches!(
            sync(&t, types::LISTENER, &seen(None, None), 1),
            TypeSync::Waiting(_)
        ));
    }

    #[test]
    fn an_endpoints_only_push_counts_as_applied_where_it_regenerated_nothing() {
        let t = Tracker::default();
        t.pushed(1, true);
        t.record(
            "p",
            types::CLUSTER,
            &Subscription::Wildcard,
            "s/1".into(),
            &[res("a", "1")],
        );
        let acked = seen(Some("s/1"), Some("s/1"));
        // Pushes 2 and 3 moved endpoints only: the clusters of push 1 are those of push 3.
        t.pushed(2, false);
        t.pushed(3, false);
        assert_eq!(sync(&t, types::CLUSTER, &acked, 3), TypeSync::Synced);
        // Push 4 is a full one: waiting until the stream generated it.
        t.pushed(4, true);
        assert!(matches!(
            sync(&t, types::CLUSTER, &acked, 4),
            TypeSync::Waiting(_)
        ));
    }

    #[test]
    fn generations_within_one_push_get_versions_of_their_own() {
        let t = Tracker::default();
        assert_eq!(
            t.record(
                "p",
                types::ROUTE,
                &names(&["80"]),
                "s/4".into(),
                &[res("80", "x")]
            ),
            "s/4"
        );
        // New listeners: the proxy asks for another route table within push 4.
        let both = [res("80", "x"), res("90", "y")];
        assert_eq!(
            t.record(
                "p",
                types::ROUTE,
                &names(&["80", "90"]),
                "s/4".into(),
                &both
            ),
            "s/4.1"
        );
        // Its first response ACKed, the second still in flight: not applied.
        assert!(matches!(
            sync(&t, types::ROUTE, &seen(Some("s/4.1"), Some("s/4")), 4),
            TypeSync::Waiting(_)
        ));
        assert_eq!(
            sync(&t, types::ROUTE, &seen(Some("s/4.1"), Some("s/4.1")), 4),
            TypeSync::Synced
        );
        // Fewer names later (nothing sent): what it holds still covers them.
        assert_eq!(
            t.record("p", types::ROUTE, &names(&["90"]), "s/4".into(), &both),
            "s/4.2"
        );
        assert_eq!(
            sync(&t, types::ROUTE, &seen(Some("s/4.1"), Some("s/4.1")), 4),
            TypeSync::Synced
        );
        // The generator's extra names are not what the proxy subscribed.
        assert_eq!(
            t.record("p", types::ROUTE, &names(&["90"]), "s/5".into(), &both),
            "s/5"
        );
        assert_eq!(
            sync(&t, types::ROUTE, &seen(Some("s/4.1"), Some("s/4.1")), 5),
            TypeSync::Synced
        );
        // A stream still on an older push does not move the labels back.
        assert_eq!(
            t.record("p", types::ROUTE, &names(&["90"]), "s/4".into(), &both),
            "s/4"
        );
    }

    #[test]
    fn a_rejected_current_config_is_final_an_older_one_is_not() {
        let t = Tracker::default();
        t.record(
            "p",
            types::LISTENER,
            &Subscription::Wildcard,
            "s/1".into(),
            &[res("l", "1")],
        );
        t.record(
            "p",
            types::LISTENER,
            &Subscription::Wildcard,
            "s/2".into(),
            &[res("l", "bad")],
        );
        let nack = Seen {
            sent: Some("s/2"),
            acked: Some("s/1"),
            nacked: Some(("s/2", "bad listener")),
        };
        match sync(&t, types::LISTENER, &nack, 2) {
            TypeSync::Rejected(m) => {
                assert!(m.contains("s/2") && m.contains("bad listener"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // Push 3 fixes it; until it is sent the old NACK is not the last word.
        t.record(
            "p",
            types::LISTENER,
            &Subscription::Wildcard,
            "s/3".into(),
            &[res("l", "good")],
        );
        assert!(matches!(
            sync(&t, types::LISTENER, &nack, 3),
            TypeSync::Waiting(_)
        ));
        let fixed = Seen {
            sent: Some("s/3"),
            acked: Some("s/3"),
            nacked: Some(("s/2", "bad listener")),
        };
        assert_eq!(sync(&t, types::LISTENER, &fixed, 3), TypeSync::Synced);
    }

    #[test]
    fn old_contents_are_forgotten_but_unchanged_pushes_cost_nothing() {
        let t = Tracker::default();
        t.record(
            "p",
            types::CLUSTER,
            &Subscription::Wildcard,
            "s/1".into(),
            &[res("a", "1")],
        );
        for n in 2..100 {
            t.record(
                "p",
                types::CLUSTER,
                &Subscription::Wildcard,
                format!("s/{n}"),
                &[res("a", "1")],
            );
        }
        assert_eq!(
            sync(&t, types::CLUSTER, &seen(Some("s/1"), Some("s/1")), 99),
            TypeSync::Synced
        );
        for n in 100..120 {
            t.record(
                "p",
                types::CLUSTER,
                &Subscription::Wildcard,
                format!("s/{n}"),
                &[res("a", &n.to_string())],
            );
        }
        match sync(&t, types::CLUSTER, &seen(Some("s/1"), Some("s/1")), 119) {
            TypeSync::Waiting(m) => assert!(m.contains("no longer known"), "{m}"),
            other => panic!("{other:?}"),
        }
        t.retain_connected(&HashSet::new());
        assert_eq!(lock(&t.proxies).len(), 1, "recently heard of");
    }

    #[test]
    fn kinds_as_istioctl_names_them() {
        for (name, kind) in [
            ("virtualservice", Kind::VirtualService),
            ("VirtualService", Kind::VirtualService),
            ("virtualservices", Kind::VirtualService),
            ("vs", Kind::VirtualService),
            ("dr", Kind::DestinationRule),
            ("destinationrule", Kind::DestinationRule),
            ("se", Kind::ServiceEntry),
            ("serviceentries", Kind::ServiceEntry),
            ("gw", Kind::Gateway),
            ("sidecar", Kind::Sidecar),
            (
                "networking.istio.io/v1beta1/VirtualService",
                Kind::VirtualService,
            ),
            ("peerauthentication", Kind::PeerAuthentication),
            ("authorizationpolicies", Kind::AuthorizationPolicy),
            ("telemetries", Kind::Telemetry),
        ] {
            assert_eq!(parse_kind(name), Some(kind), "{name}");
        }
        assert_eq!(parse_kind("envoyfilter"), None);
        assert_eq!(
            parse_resource("VirtualService/default/reviews"),
            Some(("VirtualService".into(), "default".into(), "reviews".into()))
        );
        assert_eq!(parse_resource("default/reviews"), None);
    }

    fn vs(name: &str, host: &str, line: usize) -> Resource {
        let text = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: [{host}]\n  http:\n  - route: [{{destination: {{host: {host}}}}}]\n"
        );
        let (mut rs, problems) = weft_api::parse_documents(&text, std::path::Path::new("vs.yaml"));
        assert!(problems.is_empty(), "{problems:?}");
        let mut r = rs.remove(0);
        r.source.line = line;
        r
    }

    fn snapshot(resources: Vec<Resource>, fingerprint: u64) -> Snapshot {
        Snapshot {
            resources: Arc::new(resources),
            fingerprint,
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_resource_is_in_force_from_the_push_that_brought_its_content() {
        let first = Applied::first(
            &snapshot(vec![vs("a", "x", 1), vs("b", "y", 9)], 1),
            1,
            "s/1",
        );
        let key = |n: &str| DocKey::new("VirtualService", "default", n);
        assert_eq!(first.since[&key("a")].push, 1);
        // b changes, a stays.
        let second = first.next(
            &snapshot(vec![vs("a", "x", 1), vs("b", "z", 9)], 2),
            Some((2, "s/2")),
        );
        assert_eq!(second.since[&key("a")].push, 1);
        assert_eq!(second.since[&key("b")].push, 2);
        assert_eq!(second.since[&key("b")].version, "s/2");
        // A reload that changed nothing keeps everything.
        let third = second.next(&snapshot(vec![vs("a", "x", 1), vs("b", "z", 9)], 3), None);
        assert_eq!(third.since, second.since);
        assert_eq!(third.fingerprint, 3);

        let t = Tracker::default();
        let d = |applied: &Applied, disk: u64, kind: &str, name: &str| {
            distribution(applied, disk, kind, "default", name, &[], &t)
        };
        assert_eq!(d(&third, 4, "vs", "a").state, State::Loading);
        let a = d(&third, 3, "vs", "a");
        assert_eq!(a.state, State::Applied, "no proxies: nothing to wait for");
        assert_eq!(a.version.as_deref(), Some("s/1"));
        assert_eq!(a.resource, "VirtualService default/a");
        assert_eq!(a.source.as_deref(), Some("vs.yaml:1"));
        assert_eq!(
            d(&third, 3, "virtualservice", "nope").state,
            State::NotFound
        );
        assert_eq!(d(&third, 3, "envoyfilter", "a").state, State::UnknownKind);
    }

    #[test]
    fn refused_and_skipped_resources_are_final() {
        let key = DocKey::new("VirtualService", "default", "a");
        let mut snap = snapshot(vec![vs("a", "x", 1)], 1);
        snap.refused.insert(
            PathBuf::from("vs.yaml"),
            RefusedFile {
                problems: vec!["vs.yaml:3: VirtualService default/b: spec.http: bad".into()],
                documents: vec![DocKey::new("VirtualService", "default", "b")],
            },
        );
        snap.notes.push(Note {
            file: PathBuf::from("f.yaml"),
            line: 2,
            api_version: "networking.istio.io/v1alpha3".into(),
            kind: "EnvoyFilter".into(),
            namespace: Some("istio-system".into()),
            name: Some("f".into()),
            skip: weft_api::Skip::UnsupportedIstio,
        });
        let applied = Applied::first(&snap, 1, "s/1");
        let t = Tracker::default();
        let d =
            |kind: &str, ns: &str, name: &str| distribution(&applied, 1, kind, ns, name, &[], &t);
        // b is named by the problem; a is in force from the same (refused) file.
        let b = d("vs", "default", "b");
        assert_eq!(b.state, State::Rejected);
        assert!(b.errors[0].contains("spec.http"), "{b:?}");
        let a = d("vs", "default", "a");
        assert_eq!(a.state, State::Rejected);
        assert!(
            a.message
                .as_deref()
                .is_some_and(|m| m.contains("last good content")),
            "{a:?}"
        );
        let f = d("envoyfilter", "istio-system", "f");
        assert_eq!(f.state, State::Skipped);
        assert!(f.errors[0].contains("not supported by Weft"), "{f:?}");
        assert!(f.state.is_final() && a.state.is_final() && !State::NotFound.is_final());

        let mut snap = snapshot(vec![vs("a", "x", 1)], 1);
        snap.flagged
            .push((key, "vs.yaml:1: VirtualService default/a: duplicate".into()));
        let applied = Applied::first(&snap, 1, "s/1");
        let a = distribution(&applied, 1, "vs", "default", "a", &[], &t);
        assert_eq!(a.state, State::Rejected);
    }
}
