//! Incremental (delta) ADS streams.
//!
//! Per type the stream tracks the client's subscription (wildcard flag plus explicit names) and
//! the version of every resource the client holds (seeded from `initial_resource_versions`).
//! Each response carries only resources whose per-resource version (a content hash) differs from
//! what the client holds, plus `removed_resources` for resources that disappeared and for
//! explicitly subscribed names that do not exist.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::Status;

use super::wire::Requests;

use super::wire::{DeltaResponse, Wire};
use super::{Conn, Pending, PushSlot, PushWatch, Shared, Stop, new_nonce};
use crate::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use crate::types::{self, Subscription};

type Tx = mpsc::Sender<Result<DeltaResponse, Status>>;

/// Per-type state of a delta stream.
struct DeltaType {
    wildcard: bool,
    names: Arc<BTreeSet<String>>,
    /// Resource name → version the client holds.
    client: BTreeMap<String, String>,
    /// Explicit names already reported as not existing.
    absent_notified: BTreeSet<String>,
    nonce: Option<String>,
    sent_version: String,
}

impl DeltaType {
    fn subscription(&self) -> Subscription {
        if self.wildcard {
            Subscription::Wildcard
        } else {
            Subscription::Names(self.names.clone())
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
                client: req
                    .initial_resource_versions
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                absent_notified: BTreeSet::new(),
                nonce: None,
                sent_version: String::new(),
            });

        if !req.response_nonce.is_empty() {
            if t.nonce.as_deref() == Some(req.response_nonce.as_str()) {
                self.slot.answered(&type_url);
                match &req.error_detail {
                    Some(err) => conn.record_nack(
                        &type_url,
                        &t.subscription(),
                        &t.sent_version,
                        &err.message,
                    ),
                    None => conn.record_ack(&type_url, &t.subscription(), &t.sent_version),
                }
            } else {
                tracing::debug!(
                    proxy = %conn.proxy.id,
                    type_url,
                    nonce = %req.response_nonce,
                    "delta xDS request with a stale nonce; ACK/NACK ignored"
                );
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
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                if t.wildcard {
                    t.wildcard = false;
                    changed = true;
                    // The client drops what it held only through the wildcard.
                    let names = &t.names;
                    t.client.retain(|n, _| names.contains(n));
                }
            } else if t.names.contains(name) && Arc::make_mut(&mut t.names).remove(name) {
                changed = true;
                t.absent_notified.remove(name);
                if !t.wildcard {
                    t.client.remove(name);
                }
            }
        }
        if first || changed {
            self.respond(&type_url, first).await?;
        }
        Ok(())
    }

    /// Regenerates every pending type in full (per-resource versions find what changed).
    async fn on_push(&mut self, pending: &Pending) -> Result<(), Stop> {
        let type_urls: Vec<String> = self
            .types
            .keys()
            .filter(|t| pending.includes(t))
            .cloned()
            .collect();
        for type_url in type_urls {
            self.respond(&type_url, false).await?;
        }
        self.slot.release_if_idle();
        Ok(())
    }

    /// Sends what changed for `type_url` since the client's known state; with `force`, sends a
    /// response even if nothing changed (first request: lets the client finish warming).
    async fn respond(&mut self, type_url: &str, force: bool) -> Result<(), Stop> {
        self.slot.acquire().await;
        let (Some(conn), Some(t)) = (self.conn.as_ref(), self.types.get_mut(type_url)) else {
            return Err(Stop::Closed);
        };
        let sub = t.subscription();
        let out = conn.generate(type_url, &sub)?;
        let mut present = HashSet::new();
        let mut updates = Vec::new();
        for r in out.resources {
            let version = r.version();
            present.insert(r.name().to_string());
            if t.client.get(r.name()) != Some(&version) {
                updates.push((r, version));
            }
        }
        let mut removed: Vec<String> = t
            .client
            .keys()
            .filter(|n| !present.contains(*n))
            .cloned()
            .collect();
        for name in t.names.iter() {
            if !present.contains(name)
                && !t.client.contains_key(name)
                && t.absent_notified.insert(name.clone())
            {
                removed.push(name.clone());
            }
        }
        t.absent_notified.retain(|n| !present.contains(n));
        if updates.is_empty() && removed.is_empty() && !force {
            self.slot.release_if_idle();
            return Ok(());
        }
        for (r, version) in &updates {
            t.client.insert(r.name().to_string(), version.clone());
        }
        for name in &removed {
            t.client.remove(name);
        }
        let nonce = new_nonce();
        let resp = DeltaResponse {
            system_version_info: out.version.clone(),
            resources: updates,
            type_url: type_url.to_string(),
            removed_resources: removed,
            nonce: nonce.clone(),
        };
        let bytes = resp.encoded_len();
        self.tx.send(Ok(resp)).await.map_err(|_| Stop::Closed)?;
        self.slot.sent(type_url);
        t.nonce = Some(nonce.clone());
        t.sent_version = out.version.clone();
        conn.record_sent(type_url, &sub, &out.version, &nonce, t.client.len(), bytes);
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
    use crate::testutil::{FakeGen, RawDelta, World, node, spawn_server, type_status, wait_until};
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

    fn ack(type_url: &str, nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn delta_subscribe_unsubscribe_and_removals() {
        let fake = FakeGen::new(World::v1());
        let ads = AdsServer::new(Arc::new(fake.clone()));
        let addr = spawn_server(&ads).await;

        // The client already holds cluster a (current content) and a cluster that is gone.
        let a_version = crate::types::NamedResource::new(
            "a",
            pack_any(Cluster {
                name: "a".into(),
                alt_stat_name: "a1".into(),
                ..Default::default()
            }),
        )
        .version();
        let mut s = RawDelta::connect(
            addr,
            DeltaDiscoveryRequest {
                node: Some(node(
                    "sidecar~10.0.0.2~p2.default~default.svc.cluster.local",
                )),
                initial_resource_versions: HashMap::from([
                    ("a".to_string(), a_version),
                    ("gone".to_string(), "x".to_string()),
                ]),
                ..sub(CLUSTER, &[], &[])
            },
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
        ads.push(PushEvent {
            version: "v2".into(),
            types: None,
            ..Default::default()
        });
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

        // NACK recorded; identical content is not resent.
        s.send(DeltaDiscoveryRequest {
            error_detail: Some(rpc::Status {
                code: 3,
                message: "cannot remove b".into(),
                details: vec![],
            }),
            ..ack(CLUSTER, &r.nonce)
        });
        wait_until("NACK", || {
            type_status(&ads, CLUSTER)
                .and_then(|t| t.last_nack)
                .is_some_and(|n| n.message == "cannot remove b" && n.version == "v3")
        })
        .await;
        assert_eq!(ads.stats().nacks_total, 1);
        ads.push(PushEvent {
            version: "v3".into(),
            types: None,
            ..Default::default()
        });
        s.expect_silence().await;
        assert_eq!(type_status(&ads, CLUSTER).unwrap().resources, 1);

        // The missing name appears: sent once it exists.
        fake.update(|w| {
            w.endpoints.insert("missing".into(), 0);
        });
        ads.push(PushEvent {
            version: "v4".into(),
            types: None,
            ..Default::default()
        });
        let r = s.recv().await;
        assert_eq!(names(&r), ["missing"]);
    }

    #[tokio::test]
    async fn delta_wildcard_toggle() {
        let fake = FakeGen::new(World::v1());
        let ads = AdsServer::new(Arc::new(fake.clone()));
        let addr = spawn_server(&ads).await;
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
        ads.push(PushEvent {
            version: "v2".into(),
            types: None,
            ..Default::default()
        });
        let r = s.recv().await;
        assert_eq!(names(&r), ["a"]);
        assert!(r.removed_resources.is_empty());
    }
}
