//! Incremental (delta) ADS streams.
//!
//! Per type the stream tracks the client's subscription (wildcard flag plus explicit names) and
//! what the client holds: the resources sent to it, shared with the push that made them. The
//! client's own account (`initial_resource_versions`, per-resource versions that are content
//! hashes) seeds this on the first response. A response carries only resources that are new to
//! the client or changed, and `removed_resources` for resources that disappeared and for
//! explicitly subscribed names that do not exist. As on state-of-the-world streams, a push that
//! lists the names that may have changed (endpoints) regenerates only those, and the assignment
//! of a cluster whose definition changed is sent again (Envoy re-warms the cluster).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::Status;

use super::held::{self, changed, missing};
use super::wire::{DeltaResponse, Requests, Wire};
use super::{Conn, Pending, PushSlot, PushWatch, Shared, Stop, new_nonce};
use crate::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use crate::types::{self, NamedResource, Subscription};

type Tx = mpsc::Sender<Result<DeltaResponse, Status>>;

/// Per-type state of a delta stream.
struct DeltaType {
    wildcard: bool,
    names: Arc<BTreeSet<String>>,
    /// What the client holds of what it subscribes to, sorted by name.
    held: Vec<NamedResource>,
    /// The versions the client said it holds on its first request, until the first response
    /// reconciles them with `held`.
    initial: Option<HashMap<String, String>>,
    /// Explicit names already reported as not existing.
    absent_notified: BTreeSet<String>,
    sent_version: String,
    /// Responses not answered yet, oldest first: the nonce and the names the response added,
    /// changed or removed. A NACK marks those names unknown, so that the next response offers
    /// them again (the client applied nothing of a response it rejected).
    unanswered: VecDeque<(String, Vec<String>)>,
}

/// Responses a stream remembers as unanswered; older ones count as answered.
const MAX_UNANSWERED: usize = 16;

/// Type URL of the stand-in for a resource whose version at the client is unknown: its digest
/// matches no real resource, so the next diff sends the real one (or its removal).
const UNKNOWN: &str = "type.weft.dev/unknown";

impl DeltaType {
    fn subscription(&self) -> Subscription {
        if self.wildcard {
            Subscription::Wildcard
        } else {
            Subscription::Names(self.names.clone())
        }
    }

    fn covers(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// Marks `names` as held in an unknown version.
    fn forget(&mut self, names: &[String]) {
        for name in names {
            let unknown = NamedResource::new(
                name.clone(),
                crate::pb::google::protobuf::Any {
                    type_url: UNKNOWN.to_string(),
                    value: Vec::new(),
                },
            );
            match self.held.binary_search_by(|h| h.name().cmp(name)) {
                Ok(i) => self.held[i] = unknown,
                Err(i) => self.held.insert(i, unknown),
            }
        }
    }

    /// Explicitly subscribed names among `removed` are reported as not existing: not again.
    fn note_absent(&mut self, removed: &[String]) {
        for name in removed {
            if self.names.contains(name) {
                self.absent_notified.insert(name.clone());
            }
        }
    }

    /// What to send to a client that holds `self.held` (or its `initial` versions) so that it
    /// holds `out`, the whole current subscription: changed resources and removed names.
    fn diff(&mut self, out: &[NamedResource]) -> (Vec<NamedResource>, Vec<String>) {
        let (updates, mut removed) = match self.initial.take() {
            Some(initial) => {
                let updates: Vec<NamedResource> = out
                    .iter()
                    .filter(|r| initial.get(r.name()) != Some(&r.version()))
                    .cloned()
                    .collect();
                let mut removed: Vec<String> = initial
                    .into_keys()
                    .filter(|n| out.binary_search_by(|r| r.name().cmp(n)).is_err())
                    .collect();
                removed.sort();
                (updates, removed)
            }
            None => (changed(out, &self.held), missing(out, &self.held)),
        };
        self.absent(out, &mut removed);
        self.note_absent(&removed);
        (updates, removed)
    }

    /// Adds explicitly subscribed names that do not exist (once each) to `removed`.
    fn absent(&mut self, out: &[NamedResource], removed: &mut Vec<String>) {
        let exists = |n: &str| out.binary_search_by(|r| r.name().cmp(n)).is_ok();
        self.absent_notified.retain(|n| !exists(n));
        for name in self.names.iter() {
            if !exists(name) && !removed.contains(name) && self.absent_notified.insert(name.clone())
            {
                removed.push(name.clone());
            }
        }
    }
}

enum Event {
    Request(Box<Result<Option<DeltaDiscoveryRequest>, Status>>),
    Push(Option<Pending>),
    SlotExpired,
    Closed,
}

struct Delta {
    conn: Option<Conn>,
    tx: Tx,
    types: BTreeMap<String, DeltaType>,
    slot: PushSlot,
}

/// One response to send: the type, the push version, what changed, what was removed, and
/// what the client holds once it applies it.
struct Outgoing {
    type_url: String,
    version: String,
    updates: Vec<NamedResource>,
    removed: Vec<String>,
    held: Vec<NamedResource>,
}

/// Serves one delta stream until the client goes away or an error ends it.
pub(super) async fn run(
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    mut inbound: Requests<DeltaDiscoveryRequest>,
    tx: Tx,
) {
    let mut push = PushWatch::new(&shared);
    let mut s = Delta {
        conn: None,
        tx: tx.clone(),
        types: BTreeMap::new(),
        slot: PushSlot::new(&shared),
    };
    let result = loop {
        let registered = s.conn.is_some();
        let event = tokio::select! {
            msg = inbound.message() => Event::Request(Box::new(msg)),
            ev = push.changed(), if registered => Event::Push(ev),
            _ = s.slot.expired() => Event::SlotExpired,
            _ = tx.closed() => Event::Closed,
        };
        let step = match event {
            Event::Request(msg) => match *msg {
                Ok(Some(req)) => s.on_request(req, &shared, peer).await,
                Ok(None) => Err(Stop::Closed),
                Err(status) => {
                    tracing::debug!(error = %status, "delta xDS stream receive error");
                    Err(Stop::Closed)
                }
            },
            Event::Push(Some(pending)) => s.on_push(&pending).await,
            Event::SlotExpired => {
                s.slot.release();
                Ok(())
            }
            Event::Push(None) | Event::Closed => Err(Stop::Closed),
        };
        if let Err(stop) = step {
            break stop;
        }
    };
    if let Stop::Fail(status) = result {
        let _ = tx.send(Err(status)).await;
    }
}

impl Delta {
    async fn on_request(
        &mut self,
        req: DeltaDiscoveryRequest,
        shared: &Arc<Shared>,
        peer: Option<SocketAddr>,
    ) -> Result<(), Stop> {
        if self.conn.is_none() {
            self.conn = Some(Conn::register(shared, req.node.as_ref(), peer, true)?);
        }
        let Some(conn) = self.conn.as_ref() else {
            return Err(Stop::Closed);
        };
        let type_url = req.type_url.clone();
        if type_url.is_empty() {
            tracing::warn!(proxy = %conn.proxy.id, "delta xDS request without type_url ignored");
            return Ok(());
        }
        let first = !self.types.contains_key(&type_url);
        let t = self
            .types
            .entry(type_url.clone())
            .or_insert_with(|| DeltaType {
                // Legacy wildcard: a first request naming nothing subscribes to all of a
                // wildcard type; "*" does so explicitly.
                wildcard: types::is_wildcard_type(&type_url)
                    && req.resource_names_subscribe.is_empty(),
                names: Arc::default(),
                held: Vec::new(),
                initial: Some(req.initial_resource_versions.clone()),
                absent_notified: BTreeSet::new(),
                sent_version: String::new(),
                unanswered: VecDeque::new(),
            });

        if !req.response_nonce.is_empty() {
            match t
                .unanswered
                .iter()
                .position(|(n, _)| *n == req.response_nonce)
            {
                Some(i) => {
                    let latest = i + 1 == t.unanswered.len();
                    let answered = t.unanswered.drain(..=i).next_back();
                    if latest {
                        self.slot.answered(&type_url);
                    }
                    match &req.error_detail {
                        Some(err) => {
                            if let Some((_, touched)) = answered {
                                t.forget(&touched);
                            }
                            conn.record_nack(
                                &type_url,
                                &t.subscription(),
                                &t.sent_version,
                                &err.message,
                            )
                        }
                        None if latest => {
                            conn.record_ack(&type_url, &t.subscription(), &t.sent_version)
                        }
                        None => {}
                    }
                }
                None => tracing::debug!(
                    proxy = %conn.proxy.id,
                    type_url,
                    nonce = %req.response_nonce,
                    "delta xDS request with an unknown nonce; ACK/NACK ignored"
                ),
            }
        }

        // Subscription changes are deltas: apply them whatever the nonce, or they would be lost.
        let mut changed = false;
        for name in &req.resource_names_subscribe {
            if name == "*" {
                changed |= !t.wildcard;
                t.wildcard = true;
            } else if !t.names.contains(name) && Arc::make_mut(&mut t.names).insert(name.clone()) {
                changed = true;
            }
        }
        let mut unsubscribed = false;
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                unsubscribed |= t.wildcard;
                t.wildcard = false;
            } else if t.names.contains(name) && Arc::make_mut(&mut t.names).remove(name) {
                unsubscribed = true;
                t.absent_notified.remove(name);
            }
        }
        if unsubscribed {
            // The client drops what it no longer subscribes to.
            let (wildcard, names) = (t.wildcard, t.names.clone());
            t.held.retain(|r| wildcard || names.contains(r.name()));
        }
        if changed || unsubscribed {
            // Proxies alike subscribe to the same names: they share one copy.
            if let Subscription::Names(names) =
                shared.intern(Subscription::Names(std::mem::take(&mut t.names)))
            {
                t.names = names;
            }
        }
        if first || changed {
            self.respond(&type_url, first).await?;
        }
        Ok(())
    }

    /// Answers a new or changed subscription with everything the client lacks; with `force`,
    /// even if that is nothing (the first request: the client finishes warming).
    async fn respond(&mut self, type_url: &str, force: bool) -> Result<(), Stop> {
        self.slot.acquire().await;
        let (Some(conn), Some(t)) = (self.conn.as_ref(), self.types.get_mut(type_url)) else {
            return Err(Stop::Closed);
        };
        let out = conn.generate(type_url, &t.subscription())?;
        let (updates, removed) = t.diff(&out.resources);
        if updates.is_empty() && removed.is_empty() && !force {
            t.held = out.resources;
            self.slot.release_if_idle();
            return Ok(());
        }
        self.send(Outgoing {
            type_url: type_url.to_string(),
            version: out.version,
            updates,
            removed,
            held: out.resources,
        })
        .await
    }

    /// Regenerates what the push may have changed; a push slot is taken only when there is
    /// something to send.
    async fn on_push(&mut self, pending: &Pending) -> Result<(), Stop> {
        let Some(conn) = self.conn.as_ref() else {
            return Ok(());
        };
        let pending = &*pending.for_proxy(&conn.proxy.id);
        let mut to_send = Vec::new();
        // Clusters the client had, with another definition now: their assignments are sent
        // again (Cluster sorts before ClusterLoadAssignment, so it is looked at first).
        let mut rewarm: BTreeSet<String> = BTreeSet::new();
        for (type_url, t) in self.types.iter_mut() {
            if !pending.includes(type_url) {
                continue;
            }
            let rewarming = (type_url == types::ENDPOINT && !rewarm.is_empty()).then_some(&rewarm);
            let narrowed = if types::is_wildcard_type(type_url) {
                None
            } else {
                pending.changed.get(type_url.as_str())
            };
            if let Some(changed) = narrowed {
                // Only these names may have changed: regenerate the ones watched.
                let names = held::watched(changed, rewarming, |n| t.covers(n));
                if names.is_empty() {
                    continue;
                }
                let out = conn.generate(type_url, &Subscription::Names(Arc::new(names.clone())))?;
                let Some(g) = held::regenerate(&t.held, &names, &out.resources, rewarming) else {
                    continue;
                };
                t.note_absent(&g.removed);
                to_send.push(Outgoing {
                    type_url: type_url.clone(),
                    version: out.version,
                    updates: g.updates,
                    removed: g.removed,
                    held: g.held,
                });
                continue;
            }
            let out = conn.generate(type_url, &t.subscription())?;
            if let Some(rewarm) = rewarming {
                t.held.retain(|h| !rewarm.contains(h.name()));
            }
            let (updates, removed) = t.diff(&out.resources);
            if updates.is_empty() && removed.is_empty() {
                continue;
            }
            if type_url == types::CLUSTER {
                rewarm.extend(held::redefined(&updates, &t.held));
            }
            to_send.push(Outgoing {
                type_url: type_url.clone(),
                version: out.version,
                updates,
                removed,
                held: out.resources,
            });
        }
        if to_send.is_empty() {
            return Ok(());
        }
        self.slot.acquire().await;
        for out in to_send {
            self.send(out).await?;
        }
        self.slot.release_if_idle();
        Ok(())
    }

    /// Sends a response and records what the client holds once it applies it.
    async fn send(&mut self, out: Outgoing) -> Result<(), Stop> {
        let (Some(conn), Some(t)) = (self.conn.as_ref(), self.types.get_mut(&out.type_url)) else {
            return Err(Stop::Closed);
        };
        let nonce = new_nonce();
        let touched: Vec<String> = out
            .updates
            .iter()
            .map(|r| r.name().to_string())
            .chain(out.removed.iter().cloned())
            .collect();
        let resources = out
            .updates
            .into_iter()
            .map(|r| {
                let version = r.version();
                (r, version)
            })
            .collect();
        let resp = DeltaResponse {
            system_version_info: out.version.clone(),
            resources,
            type_url: out.type_url.clone(),
            removed_resources: out.removed,
            nonce: nonce.clone(),
        };
        let bytes = resp.encoded_len();
        if self.tx.capacity() == 0 {
            // The proxy is not reading: do not hold a push slot while waiting for it.
            self.slot.release();
        }
        self.tx.send(Ok(resp)).await.map_err(|_| Stop::Closed)?;
        self.slot.sent(&out.type_url);
        t.held = out.held;
        if t.unanswered.len() == MAX_UNANSWERED {
            t.unanswered.pop_front();
        }
        t.unanswered.push_back((nonce.clone(), touched));
        t.sent_version = out.version.clone();
        let sub = t.subscription();
        conn.record_sent(
            &out.type_url,
            &sub,
            &out.version,
            &nonce,
            t.held.len(),
            bytes,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::util::pack_any;

    use super::*;
    use crate::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
    use crate::pb::google::rpc;
    use crate::server::{AdsServer, PushEvent};
    use crate::testutil::{FakeGen, RawDelta, node, push_all, setup, type_status, wait_until};
    use crate::types::{CLUSTER, ENDPOINT};

    fn names(resp: &DeltaDiscoveryResponse) -> Vec<&str> {
        resp.resources.iter().map(|r| r.name.as_str()).collect()
    }

    fn sub(type_url: &str, subscribe: &[&str], unsubscribe: &[&str]) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// A stream with a wildcard CDS subscription whose first response is ACKed.
    async fn cds_wildcard_acked(node_id: &str) -> (FakeGen, AdsServer, RawDelta) {
        let (fake, ads, addr) = setup().await;
        let mut s = RawDelta::connect(
            addr,
            DeltaDiscoveryRequest {
                node: Some(node(node_id)),
                ..sub(CLUSTER, &[], &[])
            },
        )
        .await;
        let r = s.recv().await;
        s.send(ack(CLUSTER, &r.nonce));
        (fake, ads, s)
    }

    fn nack(type_url: &str, nonce: &str, message: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            error_detail: Some(rpc::Status {
                code: 3,
                message: message.into(),
                details: vec![],
            }),
            ..ack(type_url, nonce)
        }
    }

    fn ack(type_url: &str, nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn delta_subscribe_unsubscribe_and_removals() {
        let (fake, ads, addr) = setup().await;

        // The client already holds cluster a (current content) and a cluster that is gone.
        let mut s = reconnect_holding_a_and_gone(
            addr,
            &fake,
            "sidecar~10.0.0.2~p2.default~default.svc.cluster.local",
        )
        .await;
        let r = s.recv().await;
        assert_eq!(r.type_url, CLUSTER);
        assert_eq!(r.system_version_info, "v1");
        assert_eq!(names(&r), ["b"]);
        assert_eq!(r.removed_resources, ["gone"]);
        assert_eq!(r.resources[0].version.len(), 16);
        s.send(ack(CLUSTER, &r.nonce));
        wait_until("CDS ACK", || {
            type_status(&ads, CLUSTER).and_then(|t| t.last_acked_version) == Some("v1".into())
        })
        .await;
        assert!(ads.sync_status()[0].delta);

        // Explicit EDS names; a missing one is reported as removed (does not exist).
        s.send(sub(ENDPOINT, &["a", "missing"], &[]));
        let r = s.recv().await;
        assert_eq!(names(&r), ["a"]);
        assert_eq!(r.removed_resources, ["missing"]);
        s.send(ack(ENDPOINT, &r.nonce));
        s.send(sub(ENDPOINT, &["b"], &[]));
        let r = s.recv().await;
        assert_eq!(names(&r), ["b"]);
        assert!(r.removed_resources.is_empty());
        let eds_nonce = r.nonce.clone();
        // Unsubscribing needs no answer.
        s.send(sub(ENDPOINT, &[], &["a"]));
        s.expect_silence().await;

        // Only the subscribed resource that changed is pushed; CDS is unchanged.
        fake.update(|w| {
            w.version = "v2".into();
            w.endpoints.insert("a".into(), 1);
            w.endpoints.insert("b".into(), 2);
        });
        push_all(&ads, "v2");
        let r = s.recv().await;
        assert_eq!(r.type_url, ENDPOINT);
        assert_eq!(r.system_version_info, "v2");
        assert_eq!(names(&r), ["b"]);
        assert!(r.removed_resources.is_empty());
        assert_ne!(r.nonce, eds_nonce);
        s.expect_silence().await;

        // A removed cluster is announced in removed_resources.
        fake.update(|w| {
            w.version = "v3".into();
            w.clusters.remove("b");
        });
        ads.push(PushEvent {
            version: "v3".into(),
            types: Some(vec![CLUSTER.into()]),
            ..Default::default()
        });
        let r = s.recv().await;
        assert_eq!(r.type_url, CLUSTER);
        assert!(r.resources.is_empty());
        assert_eq!(r.removed_resources, ["b"]);

        // NACK recorded; nothing is resent at once. The client kept what it had, so the next
        // push offers the removal again (the NACK may have come from a passing inconsistency).
        s.send(nack(CLUSTER, &r.nonce, "cannot remove b"));
        wait_until("NACK", || {
            type_status(&ads, CLUSTER)
                .and_then(|t| t.last_nack)
                .is_some_and(|n| n.message == "cannot remove b" && n.version == "v3")
        })
        .await;
        assert_eq!(ads.stats().nacks_total, 1);
        s.expect_silence().await;
        assert_eq!(type_status(&ads, CLUSTER).unwrap().resources, 1);
        push_all(&ads, "v3");
        let r = s.recv().await;
        assert_eq!(
            (r.type_url.as_str(), r.removed_resources.as_slice()),
            (CLUSTER, ["b".to_string()].as_slice())
        );
        s.send(ack(CLUSTER, &r.nonce));
        push_all(&ads, "v3");
        s.expect_silence().await;

        // The missing name appears: sent once it exists.
        fake.update(|w| {
            w.endpoints.insert("missing".into(), 0);
        });
        push_all(&ads, "v4");
        let r = s.recv().await;
        assert_eq!(names(&r), ["missing"]);
    }

    #[tokio::test]
    async fn delta_wildcard_toggle() {
        let (fake, ads, addr) = setup().await;
        // Explicit name only (no legacy wildcard since a name is given).
        let mut s = RawDelta::connect(
            addr,
            DeltaDiscoveryRequest {
                node: Some(node("p3")),
                ..sub(CLUSTER, &["a"], &[])
            },
        )
        .await;
        let r = s.recv().await;
        assert_eq!(names(&r), ["a"]);
        s.send(sub(CLUSTER, &["*"], &[]));
        let r = s.recv().await;
        assert_eq!(names(&r), ["b"]);
        assert_eq!(
            type_status(&ads, CLUSTER).unwrap().subscription,
            Subscription::Wildcard
        );
        s.send(sub(CLUSTER, &[], &["*"]));
        s.expect_silence().await;
        // b is no longer held; a change to b is not sent, a change to a is.
        fake.update(|w| {
            w.clusters.insert("b".into(), "b2".into());
            w.clusters.insert("a".into(), "a2".into());
        });
        push_all(&ads, "v2");
        let r = s.recv().await;
        assert_eq!(names(&r), ["a"]);
        assert!(r.removed_resources.is_empty());
    }

    #[tokio::test]
    async fn delta_pushes_naming_assignments_and_changed_clusters() {
        let (fake, ads, mut s) = cds_wildcard_acked("p4").await;
        s.send(sub(ENDPOINT, &["a", "b"], &[]));
        let r = s.recv().await;
        assert_eq!(names(&r), ["a", "b"]);
        s.send(ack(ENDPOINT, &r.nonce));
        let hinted = |version: &str, names: &[&str]| PushEvent {
            version: version.into(),
            changed: [(
                ENDPOINT.to_string(),
                Arc::new(names.iter().map(|n| n.to_string()).collect()),
            )]
            .into(),
            ..Default::default()
        };

        // "b" changed and the push says so: only "b" is sent.
        fake.update(|w| {
            w.version = "v2".into();
            w.endpoints.insert("b".into(), 4);
        });
        ads.push(hinted("v2", &["b", "unwatched"]));
        let r = s.recv().await;
        assert_eq!(names(&r), ["b"]);
        s.send(ack(ENDPOINT, &r.nonce));
        // "b" is removed: announced.
        fake.update(|w| {
            w.version = "v3".into();
            w.endpoints.remove("b");
        });
        ads.push(hinted("v3", &["b"]));
        let r = s.recv().await;
        assert_eq!(r.type_url, ENDPOINT);
        assert!(r.resources.is_empty());
        assert_eq!(r.removed_resources, ["b"]);
        s.send(ack(ENDPOINT, &r.nonce));

        // Cluster "a" changes, its endpoints do not: Envoy warms "a" again and needs them.
        fake.update(|w| {
            w.version = "v4".into();
            w.clusters.insert("a".into(), "a2".into());
        });
        ads.push(hinted("v4", &[]));
        let r = s.recv().await;
        assert_eq!((r.type_url.as_str(), names(&r)), (CLUSTER, vec!["a"]));
        let r = s.recv().await;
        assert_eq!((r.type_url.as_str(), names(&r)), (ENDPOINT, vec!["a"]));
        s.expect_silence().await;
    }

    #[tokio::test]
    async fn a_nacked_response_is_offered_again_though_a_later_one_was_acked() {
        let (fake, ads, mut s) = cds_wildcard_acked("p5").await;
        // Two responses in flight: "a" changes, then "b".
        let mut responses = Vec::new();
        for (version, cluster) in [("v2", "a"), ("v3", "b")] {
            fake.update(|w| {
                w.version = version.into();
                w.clusters.insert(cluster.into(), format!("{cluster}2"));
            });
            push_all(&ads, version);
            let r = s.recv().await;
            assert_eq!(names(&r), [cluster]);
            responses.push(r);
        }
        let (r1, r2) = (&responses[0], &responses[1]);
        // The first is rejected, the second accepted: the client holds the new "b" and the
        // old "a", so the next push offers "a" again, and only "a".
        s.send(nack(CLUSTER, &r1.nonce, "a2 refused"));
        s.send(ack(CLUSTER, &r2.nonce));
        wait_until("ACK of the second", || {
            type_status(&ads, CLUSTER).and_then(|t| t.last_acked_version) == Some("v3".into())
        })
        .await;
        s.expect_silence().await;
        push_all(&ads, "v4");
        let r3 = s.recv().await;
        assert_eq!(names(&r3), ["a"]);
        assert!(r3.removed_resources.is_empty());
        s.send(ack(CLUSTER, &r3.nonce));
        push_all(&ads, "v5");
        s.expect_silence().await;
    }

    #[tokio::test]
    async fn a_nacked_first_response_after_reconnect_resends_its_removals() {
        let (fake, ads, addr) = setup().await;
        // The client comes back holding "a" as it is and a cluster that is gone.
        let mut s = reconnect_holding_a_and_gone(addr, &fake, "p6").await;
        let r = s.recv().await;
        assert_eq!(names(&r), ["b"]);
        assert_eq!(r.removed_resources, ["gone"]);
        s.send(nack(CLUSTER, &r.nonce, "b refused"));
        s.expect_silence().await;
        push_all(&ads, "v2");
        let r = s.recv().await;
        assert_eq!(names(&r), ["b"]);
        assert_eq!(r.removed_resources, ["gone"]);
    }

    /// A stream whose first (wildcard CDS) request says the client holds cluster "a" at its
    /// current content and a cluster "gone" that no longer exists.
    async fn reconnect_holding_a_and_gone(
        addr: std::net::SocketAddr,
        fake: &FakeGen,
        node_id: &str,
    ) -> RawDelta {
        RawDelta::connect(
            addr,
            DeltaDiscoveryRequest {
                node: Some(node(node_id)),
                initial_resource_versions: HashMap::from([
                    ("a".to_string(), fake_version(fake, "a")),
                    ("gone".to_string(), "x".to_string()),
                ]),
                ..sub(CLUSTER, &[], &[])
            },
        )
        .await
    }

    /// The per-resource version of cluster `name` in the fake world.
    fn fake_version(fake: &FakeGen, name: &str) -> String {
        let alt = fake.world.lock().unwrap().clusters[name].clone();
        crate::types::NamedResource::new(
            name,
            pack_any(Cluster {
                name: name.into(),
                alt_stat_name: alt,
                ..Default::default()
            }),
        )
        .version()
    }
}
