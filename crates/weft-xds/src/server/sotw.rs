//! State-of-the-world ADS streams.
//!
//! Listener and Cluster responses carry the whole set (xDS: the client drops what a response
//! leaves out); for the other types a response carries only the resources that are new to the
//! client or changed, as the xDS protocol allows and istiod does, so an endpoint change sends one
//! ClusterLoadAssignment, not every one the proxy watches.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::Status;

use super::wire::Requests;

use super::held::{self, changed, same_set};
use super::request::SotwRequest;
use super::wire::{SotwResponse, Wire};
use super::{Conn, Pending, PushSlot, PushWatch, ResumeType, Shared, Stop, new_nonce};
use crate::types::{self, NamedResource, Subscription};

type Tx = mpsc::Sender<Result<SotwResponse, Status>>;

/// Per-type state of a stream.
struct Watched {
    sub: Subscription,
    /// Nonce of the last response sent on this stream (None: nothing sent yet).
    nonce: Option<String>,
    sent_version: String,
    /// What the client holds, as far as this stream knows: the resources sent (sorted by name,
    /// only subscribed names).
    held: Vec<NamedResource>,
    /// Version of the last response the client ACKed, if it ACKed the latest one sent.
    acked: Option<String>,
    /// What the client held before the response it has not answered yet: a NACK puts it back,
    /// so that rejected resources are offered again with the next change.
    before_unanswered: Option<Vec<NamedResource>>,
}

struct Sotw {
    conn: Option<Conn>,
    tx: Tx,
    watched: BTreeMap<String, Watched>,
    resume: HashMap<String, ResumeType>,
    slot: PushSlot,
}

enum Event {
    Request(Box<Result<Option<SotwRequest>, Status>>),
    Push(Option<Pending>),
    SlotExpired,
    Closed,
}

/// Serves one SotW stream until the client goes away or an error ends it.
pub(super) async fn run(
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    mut inbound: Requests<SotwRequest>,
    tx: Tx,
) {
    let mut push = PushWatch::new(&shared);
    let mut s = Sotw {
        conn: None,
        tx: tx.clone(),
        watched: BTreeMap::new(),
        resume: HashMap::new(),
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
                    tracing::debug!(error = %status, "xDS stream receive error");
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
        // The client may already be gone; nothing more to do then.
        let _ = tx.send(Err(status)).await;
    }
}

impl Drop for Sotw {
    /// Keeps the ACKed state for a reconnect of the same proxy, however the task ends.
    fn drop(&mut self) {
        if let Some(conn) = &self.conn {
            let acked = self
                .watched
                .iter_mut()
                .filter_map(|(t, w)| {
                    let version = w.acked.clone()?;
                    Some((
                        t.clone(),
                        ResumeType {
                            version,
                            held: std::mem::take(&mut w.held),
                            subscription: w.sub.clone(),
                        },
                    ))
                })
                .collect();
            conn.store_resume(acked);
        }
    }
}

impl Sotw {
    async fn on_request(
        &mut self,
        req: SotwRequest,
        shared: &Arc<Shared>,
        peer: Option<SocketAddr>,
    ) -> Result<(), Stop> {
        if self.conn.is_none() {
            let node = req.node().map_err(|e| {
                Status::invalid_argument(format!("the request's node cannot be decoded: {e}"))
            })?;
            let conn = Conn::register(shared, node.as_ref(), peer, false)?;
            self.resume = conn.take_resume();
            self.conn = Some(conn);
        }
        let Some(conn) = self.conn.as_ref() else {
            return Err(Stop::Closed);
        };
        let type_url = req.type_url.clone();
        if type_url.is_empty() {
            tracing::warn!(proxy = %conn.proxy.id, "xDS request without type_url ignored");
            return Ok(());
        }
        let sub = match self.watched.get(&type_url) {
            Some(w) if w.sub.same_as_names(&type_url, req.raw_names()) => w.sub.clone(),
            _ => {
                let names = req.names().map_err(|e| {
                    Status::invalid_argument(format!(
                        "{} request refused: {e}",
                        types::short_name(&type_url)
                    ))
                })?;
                shared.intern(Subscription::from_owned_names(&type_url, names))
            }
        };
        let Some(w) = self.watched.get_mut(&type_url) else {
            return self.subscribe(&type_url, sub, &req.version_info).await;
        };
        if req.response_nonce.is_empty() {
            // The client (re)starts the subscription for this type.
            w.held.clear();
            return self.subscribe(&type_url, sub, &req.version_info).await;
        }
        let Some(nonce) = w.nonce.as_deref() else {
            // Nothing sent on this stream yet (content resumed from a previous stream); the nonce
            // belongs to an older stream. Only a change of names needs an answer.
            if sub != w.sub {
                return self.resubscribe(&type_url, sub).await;
            }
            return Ok(());
        };
        if req.response_nonce != nonce {
            tracing::debug!(
                proxy = %conn.proxy.id,
                type_url,
                nonce = %req.response_nonce,
                "xDS request with a stale nonce ignored"
            );
            return Ok(());
        }
        self.slot.answered(&type_url);
        if let Some(err) = &req.error_detail {
            // NACK: nothing is resent now (the same content would be refused again). Listener
            // and Cluster responses are whole, so the next change resends everything anyway;
            // for the other types the client keeps what it had, and the next change or
            // subscription of the type offers the rejected resources again.
            if let Some(before) = w.before_unanswered.take()
                && !types::is_wildcard_type(&type_url)
            {
                w.held = before;
            }
            w.acked = None;
            conn.record_nack(&type_url, &w.sub, &w.sent_version, &err.message);
            return Ok(());
        }
        w.before_unanswered = None;
        if req.version_info == w.sent_version {
            w.acked = Some(w.sent_version.clone());
            conn.record_ack(&type_url, &w.sub, &w.sent_version);
        } else {
            // The client still runs an older version: this follows a NACK (e.g. it changes
            // names after rejecting), so it is not an ACK of what was sent.
            tracing::debug!(
                proxy = %conn.proxy.id,
                type_url,
                version = %req.version_info,
                "xDS request after a NACK; not recorded as an ACK"
            );
        }
        if sub != w.sub {
            return self.resubscribe(&type_url, sub).await;
        }
        Ok(())
    }

    /// A new or restarted subscription: always answered with everything subscribed, except
    /// after a reconnect where the client already holds exactly the current content under the
    /// version it reports.
    async fn subscribe(
        &mut self,
        type_url: &str,
        sub: Subscription,
        client_version: &str,
    ) -> Result<(), Stop> {
        self.slot.acquire().await;
        let Some(conn) = self.conn.as_ref() else {
            return Err(Stop::Closed);
        };
        let out = conn.generate(type_url, &sub)?;
        let resumed = self.resume.remove(type_url).filter(|r| {
            !client_version.is_empty()
                && r.version == client_version
                && r.subscription == sub
                && same_set(&r.held, &out.resources)
        });
        if let Some(r) = resumed {
            tracing::debug!(proxy = %conn.proxy.id, type_url, version = %r.version, "xDS content unchanged since reconnect; not resent");
            conn.with_type(type_url, &sub, |t| {
                t.resources = out.resources.len();
            });
            conn.record_ack(type_url, &sub, &r.version);
            self.watched.insert(
                type_url.to_string(),
                Watched {
                    sub,
                    nonce: None,
                    sent_version: r.version.clone(),
                    held: r.held,
                    acked: Some(r.version),
                    before_unanswered: None,
                },
            );
            self.slot.release_if_idle();
            return Ok(());
        }
        self.watched.insert(
            type_url.to_string(),
            Watched {
                sub,
                nonce: None,
                sent_version: String::new(),
                held: Vec::new(),
                acked: None,
                before_unanswered: None,
            },
        );
        let resources = out.resources.clone();
        self.send(type_url, out.version, resources, out.resources)
            .await
    }

    /// Changed names on a live subscription: the whole set for Listener and Cluster, otherwise
    /// what the client does not hold yet (new names, changed content).
    async fn resubscribe(&mut self, type_url: &str, sub: Subscription) -> Result<(), Stop> {
        self.slot.acquire().await;
        let (Some(conn), Some(w)) = (self.conn.as_ref(), self.watched.get_mut(type_url)) else {
            return Err(Stop::Closed);
        };
        w.sub = sub;
        let out = conn.generate(type_url, &w.sub)?;
        let resources = if types::is_wildcard_type(type_url) {
            out.resources.clone()
        } else {
            changed(&out.resources, &w.held)
        };
        if resources.is_empty() && !types::is_wildcard_type(type_url) {
            w.held = out.resources;
            conn.with_type(type_url, &w.sub, |t| t.resources = w.held.len());
            self.slot.release_if_idle();
            return Ok(());
        }
        self.send(type_url, out.version, resources, out.resources)
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
        // Envoy warms a cluster whose definition changed again and waits for its assignment
        // (istiod resends assignments on such pushes): the assignments of clusters sent changed
        // are resent even if their own content is the same. (Cluster sorts before
        // ClusterLoadAssignment, so it is looked at first.)
        let mut rewarm: BTreeSet<String> = BTreeSet::new();
        for (type_url, w) in &self.watched {
            if !pending.includes(type_url) {
                continue;
            }
            let wildcard_type = types::is_wildcard_type(type_url);
            let rewarming = (type_url == types::ENDPOINT && !rewarm.is_empty()).then_some(&rewarm);
            if !wildcard_type && let Some(changed) = pending.changed.get(type_url.as_str()) {
                // Only these names may have changed: regenerate the ones watched.
                let names = held::watched(changed, rewarming, |n| w.sub.contains(n));
                if names.is_empty() {
                    continue;
                }
                let out = conn.generate(type_url, &Subscription::Names(Arc::new(names.clone())))?;
                // A removal alone is not announced (state of the world: the client keeps an
                // assignment until no cluster refers to it).
                match held::regenerate(&w.held, &names, &out.resources, rewarming) {
                    Some(g) if !g.updates.is_empty() => {
                        to_send.push((type_url.clone(), out.version, g.updates, g.held));
                    }
                    _ => {}
                }
                continue;
            }
            let out = conn.generate(type_url, &w.sub)?;
            let resources = if wildcard_type {
                if same_set(&out.resources, &w.held) {
                    continue;
                }
                if type_url == types::CLUSTER {
                    // Clusters the client had, with another definition now.
                    rewarm.extend(held::redefined(&changed(&out.resources, &w.held), &w.held));
                }
                out.resources.clone()
            } else {
                let c = held::changed_except(&out.resources, &w.held, rewarming);
                if c.is_empty() {
                    continue;
                }
                c
            };
            to_send.push((type_url.clone(), out.version, resources, out.resources));
        }
        if to_send.is_empty() {
            return Ok(());
        }
        self.slot.acquire().await;
        for (type_url, version, resources, held) in to_send {
            self.send(&type_url, version, resources, held).await?;
        }
        self.slot.release_if_idle();
        Ok(())
    }

    /// Sends `resources` under `version` and records that the client now holds `held`.
    async fn send(
        &mut self,
        type_url: &str,
        version: String,
        resources: Vec<NamedResource>,
        held: Vec<NamedResource>,
    ) -> Result<(), Stop> {
        let (Some(conn), Some(w)) = (self.conn.as_ref(), self.watched.get_mut(type_url)) else {
            return Err(Stop::Closed);
        };
        let nonce = new_nonce();
        let resp = SotwResponse {
            version_info: version.clone(),
            resources,
            type_url: type_url.to_string(),
            nonce: nonce.clone(),
        };
        let bytes = resp.encoded_len();
        let count = resp.resources.len();
        if self.tx.capacity() == 0 {
            // The proxy is not reading: do not hold a push slot while waiting for it.
            self.slot.release();
        }
        self.tx.send(Ok(resp)).await.map_err(|_| Stop::Closed)?;
        self.slot.sent(type_url);
        w.nonce = Some(nonce.clone());
        let before = std::mem::replace(&mut w.held, held);
        // With responses unanswered, the client holds at least what it held before the first.
        if w.before_unanswered.is_none() {
            w.before_unanswered = Some(before);
        }
        w.acked = None;
        let held = w.held.len();
        conn.record_sent(type_url, &w.sub, &version, &nonce, held, bytes);
        w.sent_version = version;
        tracing::trace!(proxy = %conn.proxy.id, type_url, sent = count, held, "xDS response queued");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use crate::pb::google::rpc;
    use crate::server::{AdsServer, PushEvent};
    use crate::testutil::{
        FakeGen, RawSotw, World, node, push_all, resource_names, setup, spawn_server, type_status,
        wait_until,
    };
    use crate::types::{CLUSTER, ENDPOINT, LISTENER};

    fn req(type_url: &str, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn first(type_url: &str, names: &[&str], version: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            node: Some(node(
                "sidecar~10.0.0.1~p1.default~default.svc.cluster.local",
            )),
            ..req(type_url, names, version, "")
        }
    }

    /// A stream that subscribed to all clusters and to assignments "a" and "b", and ACKed
    /// both; returns it with the EDS response.
    async fn clusters_and_endpoints_acked(
        addr: std::net::SocketAddr,
    ) -> (
        RawSotw,
        crate::pb::envoy::service::discovery::v3::DiscoveryResponse,
    ) {
        let mut s = RawSotw::connect(addr, first(CLUSTER, &[], "")).await;
        let cds = s.recv().await;
        s.send(req(CLUSTER, &[], "v1", &cds.nonce));
        s.send(req(ENDPOINT, &["a", "b"], "", ""));
        let eds = s.recv().await;
        s.send(req(ENDPOINT, &["a", "b"], "v1", &eds.nonce));
        (s, eds)
    }

    #[tokio::test]
    async fn subscribe_ack_filter_and_status() {
        let (fake, ads, addr) = setup().await;
        let mut s = RawSotw::connect(addr, first(CLUSTER, &[], "")).await;
        let cds = s.recv().await;
        assert_eq!(cds.type_url, CLUSTER);
        assert_eq!(cds.version_info, "v1");
        assert!(!cds.nonce.is_empty());
        assert_eq!(resource_names(&cds.resources), ["a", "b"]);
        s.send(req(CLUSTER, &[], "v1", &cds.nonce));
        // EDS returns only the named resources although the generator yields all.
        s.send(req(ENDPOINT, &["a"], "", ""));
        let eds = s.recv().await;
        assert_eq!(eds.type_url, ENDPOINT);
        assert_eq!(resource_names(&eds.resources), ["a"]);
        assert_ne!(eds.nonce, cds.nonce);
        s.send(req(ENDPOINT, &["a"], "v1", &eds.nonce));
        wait_until("EDS ACK", || {
            type_status(&ads, ENDPOINT).and_then(|t| t.last_acked_version) == Some("v1".into())
        })
        .await;
        let conns = ads.sync_status();
        assert_eq!(conns.len(), 1);
        let c = &conns[0];
        assert_eq!(
            c.proxy_id,
            "sidecar~10.0.0.1~p1.default~default.svc.cluster.local"
        );
        assert!(!c.delta);
        assert!(c.peer_addr.is_some());
        let eds_status = &c.types[ENDPOINT];
        assert_eq!(eds_status.subscription, Subscription::names(["a"]));
        assert_eq!(eds_status.resources, 1);
        assert_eq!(eds_status.last_sent.as_ref().unwrap().nonce, eds.nonce);
        assert_eq!(c.types[CLUSTER].last_acked_version.as_deref(), Some("v1"));
        let json = serde_json::to_value(&conns).unwrap();
        assert_eq!(json[0]["types"][CLUSTER]["subscription"], "wildcard");

        // A wildcard type with no resources still gets an (empty) answer.
        fake.update(|w| w.listeners.clear());
        s.send(req(LISTENER, &[], "", ""));
        let lds = s.recv().await;
        assert_eq!(lds.type_url, LISTENER);
        assert!(lds.resources.is_empty());

        let stats = ads.stats();
        assert_eq!(stats.connections, 1);
        assert_eq!(stats.pushes_total[CLUSTER], 1);
        assert_eq!(stats.pushes_total[ENDPOINT], 1);
        assert_eq!(stats.pushes_total[LISTENER], 1);
        assert!(stats.bytes_sent > 0);

        drop(s);
        wait_until("disconnect cleanup", || {
            ads.sync_status().is_empty() && ads.stats().connections == 0
        })
        .await;
    }

    #[tokio::test]
    async fn stale_nonce_is_ignored() {
        let (fake, ads, addr) = setup().await;
        let mut s = RawSotw::connect(addr, first(ENDPOINT, &["a"], "")).await;
        let r1 = s.recv().await;
        fake.update(|w| {
            w.version = "v2".into();
            w.endpoints.insert("a".into(), 5);
        });
        push_all(&ads, "v2");
        let r2 = s.recv().await;
        assert_eq!(r2.version_info, "v2");
        // ACK of the older response, with new names: stale, so neither ACK nor subscription.
        s.send(req(ENDPOINT, &["a", "b"], "v1", &r1.nonce));
        s.expect_silence().await;
        assert_eq!(
            type_status(&ads, ENDPOINT).unwrap().last_acked_version,
            None
        );
        // ACK of the latest response with the same names: recorded, nothing sent.
        s.send(req(ENDPOINT, &["a"], "v2", &r2.nonce));
        s.expect_silence().await;
        assert_eq!(
            type_status(&ads, ENDPOINT).unwrap().last_acked_version,
            Some("v2".into())
        );
        // Changed names on a current nonce: a resubscription, answered with what the client
        // does not hold yet.
        s.send(req(ENDPOINT, &["a", "b"], "v2", &r2.nonce));
        let r3 = s.recv().await;
        assert_eq!(resource_names(&r3.resources), ["b"]);
    }

    #[tokio::test]
    async fn nack_is_recorded_and_not_resent() {
        let (fake, ads, addr) = setup().await;
        let mut s = RawSotw::connect(addr, first(CLUSTER, &[], "")).await;
        let r1 = s.recv().await;
        s.send(DiscoveryRequest {
            error_detail: Some(rpc::Status {
                code: 3,
                message: "cluster a: bad lb policy".into(),
                details: vec![],
            }),
            ..req(CLUSTER, &[], "", &r1.nonce)
        });
        wait_until("NACK recorded", || {
            type_status(&ads, CLUSTER)
                .and_then(|t| t.last_nack)
                .is_some_and(|n| n.message == "cluster a: bad lb policy" && n.version == "v1")
        })
        .await;
        assert_eq!(type_status(&ads, CLUSTER).unwrap().last_acked_version, None);
        assert_eq!(ads.stats().nacks_total, 1);
        // Same content under a new push version: not resent.
        fake.update(|w| w.version = "v2".into());
        push_all(&ads, "v2");
        s.expect_silence().await;
        // Changed content is pushed.
        fake.update(|w| {
            w.version = "v3".into();
            w.clusters.insert("a".into(), "fixed".into());
        });
        push_all(&ads, "v3");
        let r2 = s.recv().await;
        assert_eq!(r2.version_info, "v3");
        s.send(req(CLUSTER, &[], "v3", &r2.nonce));
        wait_until("ACK after fix", || {
            type_status(&ads, CLUSTER).and_then(|t| t.last_acked_version) == Some("v3".into())
        })
        .await;
    }

    #[tokio::test]
    async fn request_after_nack_is_not_an_ack_but_resubscribes() {
        let (_fake, ads, addr) = setup().await;
        let mut s = RawSotw::connect(addr, first(ENDPOINT, &["a"], "")).await;
        let r1 = s.recv().await;
        s.send(DiscoveryRequest {
            error_detail: Some(rpc::Status {
                code: 3,
                message: "bad endpoints".into(),
                details: vec![],
            }),
            ..req(ENDPOINT, &["a"], "", &r1.nonce)
        });
        s.send(req(ENDPOINT, &["a", "b"], "", &r1.nonce));
        // The new name is answered, and the rejected "a" is offered again with it.
        let r2 = s.recv().await;
        assert_eq!(resource_names(&r2.resources), ["a", "b"]);
        let st = type_status(&ads, ENDPOINT).unwrap();
        assert_eq!(st.last_acked_version, None);
        assert_eq!(st.last_nack.unwrap().message, "bad endpoints");
    }

    #[tokio::test]
    async fn push_respects_type_filter() {
        let (fake, ads, addr) = setup().await;
        let mut s = RawSotw::connect(addr, first(CLUSTER, &[], "")).await;
        let r1 = s.recv().await;
        s.send(req(CLUSTER, &[], "v1", &r1.nonce));
        fake.update(|w| {
            w.version = "v2".into();
            w.clusters.insert("c".into(), "c1".into());
        });
        ads.push(PushEvent {
            version: "v2".into(),
            types: Some(vec![LISTENER.into()]),
            ..Default::default()
        });
        s.expect_silence().await;
        ads.push(PushEvent {
            version: "v2".into(),
            types: Some(vec![CLUSTER.into()]),
            ..Default::default()
        });
        let r2 = s.recv().await;
        assert_eq!(resource_names(&r2.resources), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn push_regenerates_everything_for_the_proxies_it_names() {
        let (fake, ads, addr) = setup().await;
        let mut s = RawSotw::connect(addr, first(CLUSTER, &[], "")).await;
        let r1 = s.recv().await;
        s.send(req(CLUSTER, &[], "v1", &r1.nonce));
        fake.update(|w| {
            w.version = "v2".into();
            w.clusters.insert("c".into(), "c1".into());
        });
        // An endpoints-only push naming another proxy's workload: nothing for this one.
        let endpoints_only = |full_for: &[&str]| PushEvent {
            version: "v2".into(),
            types: Some(vec![ENDPOINT.into()]),
            full_for: Arc::new(full_for.iter().map(|w| w.to_string()).collect()),
            ..Default::default()
        };
        ads.push(endpoints_only(&["p2.default"]));
        s.expect_silence().await;
        // Naming this proxy's (`p1.default`), its clusters are regenerated.
        ads.push(endpoints_only(&["p1.default"]));
        let r2 = s.recv().await;
        assert_eq!(resource_names(&r2.resources), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn reconnect_with_acked_version_skips_unchanged_content() {
        let (fake, ads, addr) = setup().await;
        let mut s = RawSotw::connect(addr, first(CLUSTER, &[], "")).await;
        let r1 = s.recv().await;
        s.send(req(CLUSTER, &[], "v1", &r1.nonce));
        wait_until("ACK", || {
            type_status(&ads, CLUSTER)
                .and_then(|t| t.last_acked_version)
                .is_some()
        })
        .await;
        drop(s);
        wait_until("disconnect", || ads.sync_status().is_empty()).await;

        // Same proxy, same version, same content: nothing to send.
        let mut s = RawSotw::connect(addr, first(CLUSTER, &[], "v1")).await;
        s.expect_silence().await;
        assert_eq!(
            type_status(&ads, CLUSTER).unwrap().last_acked_version,
            Some("v1".into())
        );
        // A later change still reaches it.
        fake.update(|w| {
            w.version = "v2".into();
            w.clusters.remove("b");
        });
        push_all(&ads, "v2");
        let r2 = s.recv().await;
        assert_eq!(resource_names(&r2.resources), ["a"]);
        drop(s);
        wait_until("disconnect", || ads.sync_status().is_empty()).await;

        // A client reporting a version it never ACKed here gets the content.
        let mut s = RawSotw::connect(addr, first(CLUSTER, &[], "v0")).await;
        let r3 = s.recv().await;
        assert_eq!(r3.version_info, "v2");
    }

    #[tokio::test]
    async fn endpoint_pushes_carry_only_changed_assignments_and_clusters_the_whole_set() {
        let (fake, ads, addr) = setup().await;
        let (mut s, eds) = clusters_and_endpoints_acked(addr).await;
        assert_eq!(resource_names(&eds.resources), ["a", "b"]);
        // One assignment changes and a cluster is added: EDS carries "b" only, CDS every
        // cluster.
        fake.update(|w| {
            w.version = "v2".into();
            w.endpoints.insert("b".into(), 7);
            w.clusters.insert("c".into(), "c1".into());
        });
        push_all(&ads, "v2");
        let mut got = BTreeMap::new();
        for _ in 0..2 {
            let r = s.recv().await;
            got.insert(r.type_url.clone(), resource_names(&r.resources));
            s.send(req(
                &r.type_url,
                if r.type_url == ENDPOINT {
                    &["a", "b"]
                } else {
                    &[]
                },
                "v2",
                &r.nonce,
            ));
        }
        assert_eq!(got[ENDPOINT], ["b"]);
        assert_eq!(got[CLUSTER], ["a", "b", "c"]);
        // The server counts what the client holds, not what the last response carried.
        wait_until("EDS ACK", || {
            type_status(&ads, ENDPOINT).and_then(|t| t.last_acked_version) == Some("v2".into())
        })
        .await;
        assert_eq!(type_status(&ads, ENDPOINT).unwrap().resources, 2);
        // Nothing changed: nothing is sent.
        fake.update(|w| w.version = "v3".into());
        push_all(&ads, "v3");
        s.expect_silence().await;
    }

    #[tokio::test]
    async fn a_push_naming_changed_assignments_regenerates_only_those() {
        let (fake, ads, addr) = setup().await;
        let mut s = RawSotw::connect(addr, first(ENDPOINT, &["a", "b"], "")).await;
        let r1 = s.recv().await;
        s.send(req(ENDPOINT, &["a", "b"], "v1", &r1.nonce));
        let hinted = |names: &[&str]| PushEvent {
            version: "v2".into(),
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
        ads.push(hinted(&["b", "unwatched"]));
        let r2 = s.recv().await;
        assert_eq!(resource_names(&r2.resources), ["b"]);
        s.send(req(ENDPOINT, &["a", "b"], "v2", &r2.nonce));
        // A change the push does not name is not looked at.
        fake.update(|w| {
            w.version = "v3".into();
            w.endpoints.insert("a".into(), 9);
        });
        ads.push(hinted(&["b"]));
        s.expect_silence().await;
        // "b" is removed: nothing to send; a full push then finds "a".
        fake.update(|w| {
            w.version = "v4".into();
            w.endpoints.remove("b");
        });
        ads.push(hinted(&["b"]));
        s.expect_silence().await;
        push_all(&ads, "v4");
        let r3 = s.recv().await;
        assert_eq!(resource_names(&r3.resources), ["a"]);
        s.send(req(ENDPOINT, &["a", "b"], "v4", &r3.nonce));
        wait_until("ACK", || {
            type_status(&ads, ENDPOINT).and_then(|t| t.last_acked_version) == Some("v4".into())
        })
        .await;
        assert_eq!(type_status(&ads, ENDPOINT).unwrap().resources, 1);
    }

    #[tokio::test]
    async fn a_changed_cluster_gets_its_assignment_again() {
        let (fake, ads, addr) = setup().await;
        let (mut s, _) = clusters_and_endpoints_acked(addr).await;
        // Cluster "a" changes, its endpoints do not: Envoy warms "a" again and needs them.
        fake.update(|w| {
            w.version = "v2".into();
            w.clusters.insert("a".into(), "a2".into());
        });
        ads.push(PushEvent {
            version: "v2".into(),
            changed: [(ENDPOINT.to_string(), Arc::new(BTreeSet::new()))].into(),
            ..Default::default()
        });
        let mut got = BTreeMap::new();
        for _ in 0..2 {
            let r = s.recv().await;
            got.insert(r.type_url.clone(), resource_names(&r.resources));
        }
        assert_eq!(got[CLUSTER], ["a", "b"]);
        assert_eq!(got[ENDPOINT], ["a"]);
    }

    #[tokio::test]
    async fn push_slots_bound_streams_waiting_for_answers() {
        let fake = FakeGen::new(World::v1());
        let ads = AdsServer::with_push_concurrency(Arc::new(fake.clone()), 1);
        let addr = spawn_server(&ads).await;
        let mut a = RawSotw::connect(addr, first(CLUSTER, &[], "")).await;
        let ra = a.recv().await;
        // The first stream holds the only slot until it answers: the second waits.
        let mut b = RawSotw::connect(
            addr,
            DiscoveryRequest {
                node: Some(node(
                    "sidecar~10.0.0.2~p2.default~default.svc.cluster.local",
                )),
                ..req(CLUSTER, &[], "", "")
            },
        )
        .await;
        b.expect_silence().await;
        a.send(req(CLUSTER, &[], "v1", &ra.nonce));
        let rb = b.recv().await;
        assert_eq!(resource_names(&rb.resources), ["a", "b"]);
    }

    #[tokio::test]
    async fn first_request_without_node_is_rejected() {
        let (_fake, _ads, addr) = setup().await;
        let mut s = RawSotw::connect(addr, req(CLUSTER, &[], "", "")).await;
        let err = s.rx.message().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn generator_failure_ends_the_stream() {
        let (fake, ads, addr) = setup().await;
        fake.update(|w| w.fail = Some("no push context yet".into()));
        let mut s = RawSotw::connect(addr, first(CLUSTER, &[], "")).await;
        let err = s.rx.message().await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        assert!(err.message().contains("no push context yet"));
        wait_until("cleanup", || ads.sync_status().is_empty()).await;
    }
}
