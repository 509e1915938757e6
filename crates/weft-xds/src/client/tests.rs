use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::server::{AdsServer, PushEvent};
use crate::testutil::{
    FakeGen, ThreadServer, World, node, push_all, resource_names, setup, spawn_tls_server,
    type_status, wait_until,
};
use crate::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE, Subscription};

#[derive(Default)]
struct HState {
    /// (type, version, names) of every response.
    log: Vec<(String, String, Vec<String>)>,
    /// `removed` of every response.
    removed: Vec<Vec<String>>,
    clusters: Vec<String>,
    listeners: Vec<String>,
    reject: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct TestHandler(Arc<Mutex<HState>>);

impl TestHandler {
    fn count(&self, type_url: &str) -> usize {
        let st = self.0.lock().unwrap();
        st.log.iter().filter(|(t, _, _)| t == type_url).count()
    }
    fn log_len(&self) -> usize {
        self.0.lock().unwrap().log.len()
    }
    /// Makes the handler reject responses of `type_url` with `message`.
    fn reject(&self, type_url: &str, message: &str) {
        let mut st = self.0.lock().unwrap();
        st.reject.insert(type_url.into(), message.into());
    }
}

/// A v1 server on a thread of its own, so that it can be stopped and started again.
fn thread_setup() -> (AdsServer, ThreadServer) {
    let ads = AdsServer::new(Arc::new(FakeGen::new(World::v1())));
    let server = ThreadServer::start("127.0.0.1:0".parse().unwrap(), ads.clone());
    (ads, server)
}

/// A new control plane on `addr` whose world is v1 but for cluster "a", at version v7.
fn restart_at_v7(addr: std::net::SocketAddr) -> ThreadServer {
    let fake = FakeGen::new(World {
        version: "v7".into(),
        ..World::v1()
    });
    fake.update(|w| {
        w.clusters.insert("a".into(), "a7".into());
    });
    ThreadServer::start(addr, AdsServer::new(Arc::new(fake)))
}

/// Waits until the server recorded a NACK of `type_url` at v1 with `message`.
async fn nack_recorded(ads: &AdsServer, type_url: &str, message: &str) {
    wait_until("NACK recorded by the server", || {
        type_status(ads, type_url)
            .and_then(|t| t.last_nack)
            .is_some_and(|n| n.message == message && n.version == "v1")
    })
    .await;
}

impl Handler for TestHandler {
    fn on_response(&mut self, type_url: &str, update: Update) -> Result<(), String> {
        let names = resource_names(&update.resources);
        let mut st = self.0.lock().unwrap();
        st.log
            .push((type_url.to_string(), update.version.clone(), names.clone()));
        st.removed.push(update.removed.clone());
        if let Some(msg) = st.reject.get(type_url) {
            return Err(msg.clone());
        }
        let held = match type_url {
            CLUSTER => &mut st.clusters,
            LISTENER => &mut st.listeners,
            _ => return Ok(()),
        };
        if update.full_state {
            held.clear();
        }
        held.extend(names);
        held.retain(|n| !update.removed.contains(n));
        held.sort();
        held.dedup();
        Ok(())
    }

    fn subscriptions(&self) -> Vec<(String, Vec<String>)> {
        let st = self.0.lock().unwrap();
        // Deliberately out of order: the client sorts them as Envoy does.
        vec![
            (
                ROUTE.into(),
                st.listeners.iter().map(|l| format!("route-{l}")).collect(),
            ),
            (LISTENER.into(), vec![]),
            (ENDPOINT.into(), st.clusters.clone()),
            (CLUSTER.into(), vec![]),
        ]
    }
}

fn config(endpoint: String) -> AdsClientConfig {
    AdsClientConfig {
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        ..AdsClientConfig::new(
            endpoint,
            node("sidecar~10.0.0.9~c.default~default.svc.cluster.local"),
        )
    }
}

fn start_client(
    cfg: AdsClientConfig,
    handler: &TestHandler,
) -> (watch::Receiver<ClientState>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(ClientState::default());
    let h = handler.clone();
    let task = tokio::spawn(async move {
        let _ = run_ads_client(cfg, h, tx).await;
    });
    (rx, task)
}

/// Adds cluster "c" with an assignment at v2, pushes, and waits for the client to ACK CDS and
/// EDS at v2.
async fn add_cluster_c(fake: &FakeGen, ads: &AdsServer, state: &watch::Receiver<ClientState>) {
    fake.update(|w| {
        w.version = "v2".into();
        w.clusters.insert("c".into(), "c1".into());
        w.endpoints.insert("c".into(), 0);
    });
    push_all(ads, "v2");
    wait_until("CDS and EDS at v2", || {
        let s = state.borrow();
        s.acked.get(CLUSTER).map(String::as_str) == Some("v2")
            && s.acked.get(ENDPOINT).map(String::as_str) == Some("v2")
    })
    .await;
}

fn all_acked(state: &watch::Receiver<ClientState>, version: &str) -> bool {
    let s = state.borrow();
    [CLUSTER, ENDPOINT, LISTENER, ROUTE]
        .iter()
        .all(|t| s.acked.get(*t).map(String::as_str) == Some(version))
}

#[tokio::test]
async fn client_follows_cds_with_eds_acks_and_gets_pushes() {
    let (fake, ads, addr) = setup().await;
    let handler = TestHandler::default();
    let (state, task) = start_client(config(format!("http://{addr}")), &handler);
    wait_until("all types ACKed at v1", || all_acked(&state, "v1")).await;
    assert!(state.borrow().connected);
    {
        let st = handler.0.lock().unwrap();
        assert_eq!(st.log[0].0, CLUSTER, "CDS is requested first");
        let eds = st.log.iter().find(|(t, _, _)| t == ENDPOINT).unwrap();
        assert_eq!(eds.2, ["a", "b"]);
        let rds = st.log.iter().find(|(t, _, _)| t == ROUTE).unwrap();
        assert_eq!(rds.2, ["route-l1"]);
    }
    wait_until("server sees the ACKs", || {
        [CLUSTER, ENDPOINT, LISTENER, ROUTE]
            .iter()
            .all(|t| type_status(&ads, t).and_then(|s| s.last_acked_version) == Some("v1".into()))
    })
    .await;
    assert_eq!(
        type_status(&ads, ENDPOINT).unwrap().subscription,
        Subscription::names(["a", "b"])
    );

    // A new cluster: CDS and then EDS (for the new name) at v2; LDS/RDS are unchanged.
    add_cluster_c(&fake, &ads, &state).await;
    {
        let st = handler.0.lock().unwrap();
        // EDS is not a state-of-the-world type: only the new assignment is sent.
        let eds = st.log.iter().rev().find(|(t, _, _)| t == ENDPOINT).unwrap();
        assert_eq!(eds.2, ["c"]);
    }
    assert_eq!(handler.count(LISTENER), 1);
    assert_eq!(state.borrow().acked[LISTENER], "v1");

    // Identical content under a new version: nothing is sent.
    let before = (handler.log_len(), ads.stats());
    fake.update(|w| w.version = "v3".into());
    push_all(&ads, "v3");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((handler.log_len(), ads.stats()), before);
    task.abort();
}

#[tokio::test]
async fn client_nacks_rejected_config() {
    let (fake, ads, addr) = setup().await;
    let handler = TestHandler::default();
    handler.reject(LISTENER, "listener l1: unknown filter");
    let (state, task) = start_client(config(format!("http://{addr}")), &handler);
    nack_recorded(&ads, LISTENER, "listener l1: unknown filter").await;
    wait_until("CDS and EDS ACKed", || {
        let s = state.borrow();
        s.acked.contains_key(CLUSTER) && s.acked.contains_key(ENDPOINT)
    })
    .await;
    assert!(!state.borrow().acked.contains_key(LISTENER));
    assert_eq!(
        type_status(&ads, LISTENER).unwrap().last_acked_version,
        None
    );
    // No listener accepted, so no route names to ask for.
    assert_eq!(handler.count(ROUTE), 0);
    assert_eq!(ads.stats().nacks_total, 1);

    // The server does not resend the rejected content.
    push_all(&ads, "v1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handler.count(LISTENER), 1);

    // Fixed content is pushed and accepted.
    handler.0.lock().unwrap().reject.clear();
    fake.update(|w| {
        w.version = "v2".into();
        w.listeners.insert("l1".into(), "fixed".into());
    });
    ads.push(PushEvent {
        version: "v2".into(),
        types: Some(vec![LISTENER.into()]),
        ..Default::default()
    });
    wait_until("LDS ACKed at v2 and RDS requested", || {
        let s = state.borrow();
        s.acked.get(LISTENER).map(String::as_str) == Some("v2") && s.acked.contains_key(ROUTE)
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn client_reconnects_and_resubscribes_after_server_restart() {
    let (ads, server) = thread_setup();
    let addr = server.addr;
    let handler = TestHandler::default();
    let (state, task) = start_client(config(format!("http://{addr}")), &handler);
    wait_until("synced at v1", || all_acked(&state, "v1")).await;
    wait_until("server recorded ACKs", || {
        type_status(&ads, ROUTE)
            .and_then(|t| t.last_acked_version)
            .is_some()
    })
    .await;

    server.stop();
    wait_until("client notices", || {
        let s = state.borrow();
        !s.connected && s.last_error.is_some()
    })
    .await;
    let responses = handler.log_len();

    // Same control plane state: the client resubscribes with its ACKed versions and the
    // server has nothing new to send.
    let server = ThreadServer::start(addr, ads.clone());
    wait_until("resubscribed", || {
        state.borrow().connected
            && [CLUSTER, ENDPOINT, LISTENER, ROUTE].iter().all(|t| {
                type_status(&ads, t).and_then(|s| s.last_acked_version) == Some("v1".into())
            })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(handler.log_len(), responses);
    assert_eq!(
        type_status(&ads, ENDPOINT).unwrap().subscription,
        Subscription::names(["a", "b"])
    );
    server.stop();

    // A new control plane with new content: full resync.
    let server = restart_at_v7(addr);
    wait_until("CDS at v7", || {
        state.borrow().acked.get(CLUSTER).map(String::as_str) == Some("v7")
    })
    .await;
    assert!(state.borrow().connected);
    // EDS/LDS/RDS content is unchanged but a new server has no record of it: resent.
    wait_until("all at v7", || all_acked(&state, "v7")).await;
    task.abort();
    server.stop();
}

#[tokio::test]
async fn client_over_tls_with_token() {
    let fake = FakeGen::new(World::v1());
    let ads = AdsServer::new(Arc::new(fake));
    let (addr, cert) = spawn_tls_server(&ads, "istiod.istio-system.svc", "s3cret").await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = Arc::new(tls);

    // Wrong token: the server refuses; the client keeps retrying and reports why.
    let handler = TestHandler::default();
    let bad = AdsClientConfig {
        tls: Some(tls.clone().into()),
        tls_server_name: Some("istiod.istio-system.svc".into()),
        auth_token: Some("wrong".into()),
        ..config(format!("https://{addr}"))
    };
    let (state, task) = start_client(bad, &handler);
    wait_until("unauthenticated error", || {
        state
            .borrow()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("bad token"))
    })
    .await;
    task.abort();

    let good = AdsClientConfig {
        tls: Some(tls.into()),
        tls_server_name: Some("istiod.istio-system.svc".into()),
        auth_token: Some("s3cret".into()),
        ..config(format!("https://{addr}"))
    };
    let (state, task) = start_client(good, &handler);
    wait_until("synced over TLS", || all_acked(&state, "v1")).await;
    task.abort();
}

/// A config read at each dial: the first dials fail on what it says (no root yet), a later one
/// takes the root that has appeared since, without restarting the client.
#[tokio::test]
async fn tls_config_is_read_again_at_each_dial() {
    let fake = FakeGen::new(World::v1());
    let ads = AdsServer::new(Arc::new(fake));
    let (addr, cert) = spawn_tls_server(&ads, "istiod.istio-system.svc", "s3cret").await;
    let root = Arc::new(std::sync::Mutex::new(None));
    let read = {
        let root = root.clone();
        move || -> Result<Arc<rustls::ClientConfig>, String> {
            let Some(cert) = root.lock().unwrap().clone() else {
                return Err("root-cert.pem holds no certificate yet".into());
            };
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cert).map_err(|e| e.to_string())?;
            Ok(Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth(),
            ))
        }
    };
    let handler = TestHandler::default();
    let cfg = AdsClientConfig {
        tls: Some(crate::transport::TlsConfig::PerDial(Arc::new(read))),
        tls_server_name: Some("istiod.istio-system.svc".into()),
        auth_token: Some("s3cret".into()),
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_millis(100),
        ..config(format!("https://{addr}"))
    };
    let (state, task) = start_client(cfg, &handler);
    wait_until("the dial refused for want of a root", || {
        state
            .borrow()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("holds no certificate yet"))
    })
    .await;
    assert!(!state.borrow().connected);
    *root.lock().unwrap() = Some(cert);
    wait_until("synced with the root read at a later dial", || {
        all_acked(&state, "v1")
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn invalid_config_is_reported() {
    let (tx, _rx) = watch::channel(ClientState::default());
    let err = run_ads_client(config("not a uri".into()), TestHandler::default(), tx)
        .await
        .unwrap_err();
    assert!(matches!(err, XdsError::InvalidEndpoint { .. }));
    let (tx, _rx) = watch::channel(ClientState::default());
    let cfg = AdsClientConfig {
        auth_token: Some("bad\ntoken".into()),
        ..config("http://127.0.0.1:1".into())
    };
    let err = run_ads_client(cfg, TestHandler::default(), tx)
        .await
        .unwrap_err();
    assert!(matches!(err, XdsError::InvalidToken));
}

#[test]
fn backoff_grows_with_jitter_and_resets() {
    let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
    let d: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
    let bounds = [100, 200, 400, 800, 1000, 1000];
    for (d, hi) in d.iter().zip(bounds) {
        assert!(*d >= Duration::from_millis(hi / 2) && *d <= Duration::from_millis(hi));
    }
    b.reset();
    assert!(b.next_delay() <= Duration::from_millis(100));
}

fn delta_config(endpoint: String) -> AdsClientConfig {
    AdsClientConfig {
        delta: true,
        ..config(endpoint)
    }
}

/// The (type, names) of every response after the first `from`.
fn log_since(handler: &TestHandler, from: usize) -> Vec<(String, Vec<String>)> {
    let st = handler.0.lock().unwrap();
    st.log[from..]
        .iter()
        .map(|(t, _, names)| (t.clone(), names.clone()))
        .collect()
}

#[tokio::test]
async fn delta_client_subscribes_follows_cds_and_receives_only_changes() {
    let (fake, ads, addr) = setup().await;
    let handler = TestHandler::default();
    let (state, task) = start_client(delta_config(format!("http://{addr}")), &handler);
    wait_until("all types ACKed at v1", || all_acked(&state, "v1")).await;
    assert!(state.borrow().delta);
    assert!(ads.sync_status()[0].delta, "the server sees a delta stream");
    {
        let st = handler.0.lock().unwrap();
        assert_eq!(st.log[0].0, CLUSTER, "CDS is requested first");
        assert_eq!(st.clusters, ["a", "b"]);
        let eds = st.log.iter().find(|(t, _, _)| t == ENDPOINT).unwrap();
        assert_eq!(eds.2, ["a", "b"]);
        let rds = st.log.iter().find(|(t, _, _)| t == ROUTE).unwrap();
        assert_eq!(rds.2, ["route-l1"]);
    }
    wait_until("server sees the ACKs and the EDS names", || {
        type_status(&ads, ENDPOINT).and_then(|s| s.last_acked_version) == Some("v1".into())
            && type_status(&ads, ENDPOINT).unwrap().subscription == Subscription::names(["a", "b"])
    })
    .await;
    assert_eq!(
        type_status(&ads, CLUSTER).unwrap().subscription,
        Subscription::Wildcard
    );

    // A new cluster: only it is sent, by CDS and then by EDS; nothing else is resent.
    let seen = handler.log_len();
    add_cluster_c(&fake, &ads, &state).await;
    assert_eq!(
        log_since(&handler, seen),
        [
            (CLUSTER.to_string(), vec!["c".to_string()]),
            (ENDPOINT.to_string(), vec!["c".to_string()]),
        ]
    );
    assert_eq!(handler.0.lock().unwrap().clusters, ["a", "b", "c"]);

    // A removed cluster is announced as removed, and its assignment is unsubscribed.
    let seen = handler.log_len();
    fake.update(|w| {
        w.version = "v3".into();
        w.clusters.remove("b");
        w.endpoints.remove("b");
    });
    push_all(&ads, "v3");
    wait_until("EDS subscription follows the removal", || {
        type_status(&ads, ENDPOINT).map(|s| s.subscription) == Some(Subscription::names(["a", "c"]))
    })
    .await;
    {
        let st = handler.0.lock().unwrap();
        assert_eq!(st.clusters, ["a", "c"]);
        assert_eq!(st.log[seen].0, CLUSTER);
        assert!(st.log[seen].2.is_empty());
        assert_eq!(st.removed[seen], ["b"]);
    }
    task.abort();
}

#[tokio::test]
async fn delta_client_nacks_and_resumes_with_what_it_holds() {
    let (ads, server) = thread_setup();
    let addr = server.addr;
    let handler = TestHandler::default();
    handler.reject(ROUTE, "route-l1: unknown cluster");
    let (state, task) = start_client(delta_config(format!("http://{addr}")), &handler);
    nack_recorded(&ads, ROUTE, "route-l1: unknown cluster").await;
    assert!(!state.borrow().acked.contains_key(ROUTE));
    handler.0.lock().unwrap().reject.clear();
    wait_until("CDS, EDS, LDS ACKed", || {
        [CLUSTER, ENDPOINT, LISTENER]
            .iter()
            .all(|t| type_status(&ads, t).and_then(|s| s.last_acked_version) == Some("v1".into()))
    })
    .await;

    // A new control plane whose only difference is cluster a: the client offers the versions
    // it holds, so only cluster a comes again (and the rejected route table, which it does not
    // hold). Types with nothing new get an empty response.
    server.stop();
    wait_until("client notices", || !state.borrow().connected).await;
    let seen = handler.log_len();
    let server = restart_at_v7(addr);
    wait_until("all at v7", || all_acked(&state, "v7")).await;
    let mut got = log_since(&handler, seen);
    got.sort();
    assert_eq!(
        got,
        [
            (CLUSTER.to_string(), vec!["a".to_string()]),
            (ENDPOINT.to_string(), vec![]),
            (LISTENER.to_string(), vec![]),
            (ROUTE.to_string(), vec!["route-l1".to_string()]),
        ]
    );
    assert_eq!(handler.0.lock().unwrap().clusters, ["a", "b"]);
    task.abort();
    server.stop();
}

#[test]
fn a_status_is_described_by_its_message_and_causes_without_repeats() {
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }
    let cause = E(
        "error reading a body from connection",
        Some(Box::new(E("stream closed because of a broken pipe", None))),
    );
    let status = tonic::Status::from_error(Box::new(cause));
    let text = describe(&status);
    assert_eq!(
        text.matches("error reading a body from connection").count(),
        1,
        "{text}"
    );
    assert!(
        text.ends_with("stream closed because of a broken pipe"),
        "{text}"
    );
    assert_eq!(describe(&tonic::Status::unknown("")), "Unknown");
}
