//! State-of-the-world ADS streams.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use prost::Message;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::{Conn, Output, PushWatch, ResumeType, Shared, Stop, new_nonce};
use crate::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use crate::types::{Digest, Subscription};

type Tx = mpsc::Sender<Result<DiscoveryResponse, Status>>;

/// Per-type state of a stream.
struct Watched {
    sub: Subscription,
    /// Nonce of the last response sent on this stream (None: nothing sent yet).
    nonce: Option<String>,
    sent_version: String,
    sent_hash: Option<Digest>,
    acked: Option<(String, Digest)>,
}

struct Sotw {
    conn: Option<Conn>,
    tx: Tx,
    watched: BTreeMap<String, Watched>,
    resume: HashMap<String, ResumeType>,
}

enum Event {
    Request(Box<Result<Option<DiscoveryRequest>, Status>>),
    Push(Option<Option<BTreeSet<String>>>),
    Closed,
}

/// Serves one SotW stream until the client goes away or an error ends it.
pub(super) async fn run(
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: Tx,
) {
    let mut push = PushWatch::new(&shared);
    let mut s = Sotw {
        conn: None,
        tx: tx.clone(),
        watched: BTreeMap::new(),
        resume: HashMap::new(),
    };
    let result = loop {
        let registered = s.conn.is_some();
        let event = tokio::select! {
            msg = inbound.message() => Event::Request(Box::new(msg)),
            ev = push.changed(), if registered => Event::Push(ev),
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
            Event::Push(Some(types)) => s.on_push(types.as_ref()).await,
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
                .iter()
                .filter_map(|(t, w)| {
                    w.acked.as_ref().map(|(version, hash)| {
                        (
                            t.clone(),
                            ResumeType {
                                version: version.clone(),
                                hash: *hash,
                                subscription: w.sub.clone(),
                            },
                        )
                    })
                })
                .collect();
            conn.store_resume(acked);
        }
    }
}

impl Sotw {
    async fn on_request(
        &mut self,
        req: DiscoveryRequest,
        shared: &Arc<Shared>,
        peer: Option<SocketAddr>,
    ) -> Result<(), Stop> {
        if self.conn.is_none() {
            let conn = Conn::register(shared, req.node.as_ref(), peer, false)?;
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
        let sub = Subscription::from_names(&type_url, &req.resource_names);
        let Some(w) = self.watched.get_mut(&type_url) else {
            return self.subscribe(&type_url, sub, &req.version_info).await;
        };
        if req.response_nonce.is_empty() {
            // The client (re)starts the subscription for this type.
            return self.subscribe(&type_url, sub, &req.version_info).await;
        }
        let Some(nonce) = w.nonce.as_deref() else {
            // Nothing sent on this stream yet (content resumed from a previous stream); the nonce
            // belongs to an older stream. Only a change of names needs an answer.
            if sub != w.sub {
                return self.subscribe(&type_url, sub, "").await;
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
        if let Some(err) = &req.error_detail {
            // NACK: keep the content as sent, do not resend it; a later change will be pushed.
            conn.record_nack(&type_url, &w.sub, &w.sent_version, &err.message);
            return Ok(());
        }
        if req.version_info == w.sent_version {
            if let Some(hash) = w.sent_hash {
                w.acked = Some((w.sent_version.clone(), hash));
            }
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
            return self.subscribe(&type_url, sub, "").await;
        }
        Ok(())
    }

    /// A new or changed subscription: always answered, except after a reconnect where the client
    /// already holds exactly the current content under the version it reports.
    async fn subscribe(
        &mut self,
        type_url: &str,
        sub: Subscription,
        client_version: &str,
    ) -> Result<(), Stop> {
        let Some(conn) = self.conn.as_ref() else {
            return Err(Stop::Closed);
        };
        let out = conn.generate(type_url, &sub)?;
        let resumed = self.resume.remove(type_url).filter(|r| {
            !client_version.is_empty()
                && r.version == client_version
                && r.hash == out.hash
                && r.subscription == sub
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
                    sent_hash: Some(r.hash),
                    acked: Some((r.version, r.hash)),
                },
            );
            return Ok(());
        }
        let acked = self.watched.get(type_url).and_then(|w| w.acked.clone());
        self.watched.insert(
            type_url.to_string(),
            Watched {
                sub,
                nonce: None,
                sent_version: String::new(),
                sent_hash: None,
                acked,
            },
        );
        self.send(type_url, out).await
    }

    async fn on_push(&mut self, types: Option<&BTreeSet<String>>) -> Result<(), Stop> {
        let Some(conn) = self.conn.as_ref() else {
            return Ok(());
        };
        let mut to_send = Vec::new();
        for (type_url, w) in &self.watched {
            if types.is_some_and(|t| !t.contains(type_url)) {
                continue;
            }
            let out = conn.generate(type_url, &w.sub)?;
            if w.sent_hash == Some(out.hash) {
                continue;
            }
            to_send.push((type_url.clone(), out));
        }
        for (type_url, out) in to_send {
            self.send(&type_url, out).await?;
        }
        Ok(())
    }

    async fn send(&mut self, type_url: &str, out: Output) -> Result<(), Stop> {
        let (Some(conn), Some(w)) = (self.conn.as_ref(), self.watched.get_mut(type_url)) else {
            return Err(Stop::Closed);
        };
        let nonce = new_nonce();
        let count = out.resources.len();
        let resp = DiscoveryResponse {
            version_info: out.version.clone(),
            resources: out.resources.into_iter().map(|r| r.resource).collect(),
            type_url: type_url.to_string(),
            nonce: nonce.clone(),
            ..Default::default()
        };
        let bytes = resp.encoded_len();
        self.tx.send(Ok(resp)).await.map_err(|_| Stop::Closed)?;
        w.nonce = Some(nonce.clone());
        w.sent_version = out.version.clone();
        w.sent_hash = Some(out.hash);
        conn.record_sent(type_url, &w.sub, &out.version, &nonce, count, bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pb::google::rpc;
    use crate::server::{AdsServer, PushEvent};
    use crate::testutil::{
        FakeGen, RawSotw, World, node, resource_names, spawn_server, type_status, wait_until,
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

    async fn setup() -> (FakeGen, AdsServer, std::net::SocketAddr) {
        let fake = FakeGen::new(World::v1());
        let ads = AdsServer::new(Arc::new(fake.clone()));
        let addr = spawn_server(&ads).await;
        (fake, ads, addr)
    }

    fn push_all(ads: &AdsServer, version: &str) {
        ads.push(PushEvent {
            version: version.into(),
            types: None,
        });
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
        assert_eq!(
            eds_status.subscription,
            Subscription::Names(["a".to_string()].into())
        );
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
        // Changed names on a current nonce: a resubscription, answered.
        s.send(req(ENDPOINT, &["a", "b"], "v2", &r2.nonce));
        let r3 = s.recv().await;
        assert_eq!(resource_names(&r3.resources), ["a", "b"]);
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
        });
        s.expect_silence().await;
        ads.push(PushEvent {
            version: "v2".into(),
            types: Some(vec![CLUSTER.into()]),
        });
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
