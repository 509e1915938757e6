//! The sidecar's ADS client (state of the world).
//!
//! [`run_ads_client`] keeps one ADS stream to the control plane open forever: it sends the
//! handler's subscriptions (CDS, EDS, LDS, RDS order, as Envoy), hands every response to the
//! [`Handler`], ACKs or NACKs it, follows subscription changes, and on any failure reconnects with
//! exponential backoff and jitter, resending its subscriptions with the last ACKed versions. The
//! handler keeps its state across reconnects, so the proxy serves its last good configuration
//! while the control plane is away.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::metadata::{Ascii, MetadataValue};

use crate::error::XdsError;
use crate::pb::envoy::config::core::v3::Node;
use crate::pb::envoy::service::discovery::v3::DiscoveryRequest;
use crate::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use crate::pb::google::protobuf::Any;
use crate::pb::google::rpc;
use crate::server::MAX_MESSAGE_SIZE;
use crate::transport::{self, TlsConnector};
use crate::types;

/// gRPC status code `INVALID_ARGUMENT`, sent in NACKs.
const INVALID_ARGUMENT: i32 = 3;

/// Receives configuration from the control plane. Implemented by the proxy.
pub trait Handler: Send + 'static {
    /// Applies a response. `Err(message)` rejects it: the client NACKs with the message and the
    /// previous configuration stays in force.
    fn on_response(
        &mut self,
        type_url: &str,
        version: &str,
        resources: Vec<Any>,
    ) -> Result<(), String>;

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
    /// TLS client config (aws-lc-rs provider); `None` for plaintext.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Name verified in the server certificate (and sent as SNI); default: the endpoint's host.
    pub tls_server_name: Option<String>,
    /// Bearer token sent as `authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
}

impl AdsClientConfig {
    /// Plaintext, unauthenticated config with backoff from 500 ms up to 30 s.
    pub fn new(endpoint: impl Into<String>, node: Node) -> Self {
        AdsClientConfig {
            endpoint: endpoint.into(),
            node,
            tls: None,
            tls_server_name: None,
            auth_token: None,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
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
            MetadataValue::try_from(format!("Bearer {}", t.trim()))
                .map_err(|_| XdsError::InvalidToken)
        })
        .transpose()?;
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let mut session = Session {
            handler: &mut handler,
            acked: &mut acked,
            status: &status,
            got_response: false,
        };
        let err = session.run(&config, tls.clone(), token.clone()).await;
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

/// One stream's worth of state; `acked` and the handler outlive it.
struct Session<'a, H> {
    handler: &'a mut H,
    acked: &'a mut BTreeMap<String, String>,
    status: &'a watch::Sender<ClientState>,
    got_response: bool,
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

impl<H: Handler> Session<'_, H> {
    async fn run(
        &mut self,
        config: &AdsClientConfig,
        tls: Option<TlsConnector>,
        token: Option<MetadataValue<Ascii>>,
    ) -> XdsError {
        match self.stream(config, tls, token).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn stream(
        &mut self,
        config: &AdsClientConfig,
        tls: Option<TlsConnector>,
        token: Option<MetadataValue<Ascii>>,
    ) -> Result<Infallible, XdsError> {
        let channel = transport::connect_channel(&config.endpoint, tls).await?;
        let mut client = AggregatedDiscoveryServiceClient::with_interceptor(
            channel,
            move |mut req: tonic::Request<()>| {
                if let Some(t) = &token {
                    req.metadata_mut().insert("authorization", t.clone());
                }
                Ok(req)
            },
        )
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE);

        let (req_tx, req_rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
        // Names last requested per type on this stream, and the last nonce received per type.
        let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut nonces: BTreeMap<String, String> = BTreeMap::new();
        let mut node = Some(config.node.clone());
        for (type_url, names) in ordered_subscriptions(&*self.handler) {
            if names.is_empty() && !types::is_wildcard_type(&type_url) {
                continue;
            }
            let req = DiscoveryRequest {
                version_info: self.acked.get(&type_url).cloned().unwrap_or_default(),
                node: node.take(),
                resource_names: names.clone(),
                type_url: type_url.clone(),
                ..Default::default()
            };
            tracing::debug!(
                type_url = types::short_name(&type_url),
                ?names,
                "ADS subscribe"
            );
            // The receiver lives until the call below returns; a send cannot fail before.
            let _ = req_tx.send(req);
            sent.insert(type_url, names);
        }
        let response = client
            .stream_aggregated_resources(UnboundedReceiverStream::new(req_rx))
            .await?;
        let mut inbound = response.into_inner();
        self.status.send_modify(|s| s.connected = true);
        tracing::info!(endpoint = %config.endpoint, "ADS stream to the control plane established");

        loop {
            let resp = match inbound.message().await? {
                Some(resp) => resp,
                None => return Err(XdsError::StreamClosed),
            };
            self.got_response = true;
            let type_url = resp.type_url.clone();
            nonces.insert(type_url.clone(), resp.nonce.clone());
            let count = resp.resources.len();
            let result = self
                .handler
                .on_response(&type_url, &resp.version_info, resp.resources);
            let names = sent.get(&type_url).cloned().unwrap_or_default();
            let reply = match result {
                Ok(()) => {
                    tracing::debug!(
                        type_url = types::short_name(&type_url),
                        version = %resp.version_info,
                        resources = count,
                        "ADS response applied; ACK"
                    );
                    self.acked
                        .insert(type_url.clone(), resp.version_info.clone());
                    let acked = self.acked.clone();
                    self.status.send_modify(|s| s.acked = acked);
                    DiscoveryRequest {
                        version_info: resp.version_info.clone(),
                        resource_names: names,
                        type_url: type_url.clone(),
                        response_nonce: resp.nonce.clone(),
                        ..Default::default()
                    }
                }
                Err(message) => {
                    tracing::warn!(
                        type_url = types::short_name(&type_url),
                        version = %resp.version_info,
                        error = %message,
                        "ADS response rejected; NACK, keeping the previous configuration"
                    );
                    DiscoveryRequest {
                        version_info: self.acked.get(&type_url).cloned().unwrap_or_default(),
                        resource_names: names,
                        type_url: type_url.clone(),
                        response_nonce: resp.nonce.clone(),
                        error_detail: Some(rpc::Status {
                            code: INVALID_ARGUMENT,
                            message,
                            details: Vec::new(),
                        }),
                        ..Default::default()
                    }
                }
            };
            req_tx.send(reply).map_err(|_| XdsError::StreamClosed)?;

            // Follow subscription changes (e.g. EDS for the clusters CDS named).
            let subs = ordered_subscriptions(&*self.handler);
            for (type_url, names) in &subs {
                if sent.get(type_url) == Some(names) {
                    continue;
                }
                if names.is_empty()
                    && !types::is_wildcard_type(type_url)
                    && !sent.contains_key(type_url)
                {
                    continue;
                }
                tracing::debug!(
                    type_url = types::short_name(type_url),
                    ?names,
                    "ADS subscription changed"
                );
                let req = DiscoveryRequest {
                    version_info: self.acked.get(type_url).cloned().unwrap_or_default(),
                    resource_names: names.clone(),
                    type_url: type_url.clone(),
                    response_nonce: nonces.get(type_url).cloned().unwrap_or_default(),
                    ..Default::default()
                };
                req_tx.send(req).map_err(|_| XdsError::StreamClosed)?;
                sent.insert(type_url.clone(), names.clone());
            }
            // Non-wildcard types no longer wanted at all: unsubscribe from every name.
            let dropped: Vec<String> = sent
                .iter()
                .filter(|(t, names)| {
                    !names.is_empty()
                        && !types::is_wildcard_type(t)
                        && !subs.iter().any(|(s, _)| s == *t)
                })
                .map(|(t, _)| t.clone())
                .collect();
            for type_url in dropped {
                let req = DiscoveryRequest {
                    version_info: self.acked.get(&type_url).cloned().unwrap_or_default(),
                    type_url: type_url.clone(),
                    response_nonce: nonces.get(&type_url).cloned().unwrap_or_default(),
                    ..Default::default()
                };
                req_tx.send(req).map_err(|_| XdsError::StreamClosed)?;
                sent.insert(type_url, Vec::new());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::server::{AdsServer, PushEvent};
    use crate::testutil::{
        FakeGen, ThreadServer, World, node, resource_names, spawn_server, spawn_tls_server,
        type_status, wait_until,
    };
    use crate::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE, Subscription};

    #[derive(Default)]
    struct HState {
        /// (type, version, names) of every response.
        log: Vec<(String, String, Vec<String>)>,
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
    }

    impl Handler for TestHandler {
        fn on_response(
            &mut self,
            type_url: &str,
            version: &str,
            resources: Vec<Any>,
        ) -> Result<(), String> {
            let names = resource_names(&resources);
            let mut st = self.0.lock().unwrap();
            st.log
                .push((type_url.to_string(), version.to_string(), names.clone()));
            if let Some(msg) = st.reject.get(type_url) {
                return Err(msg.clone());
            }
            match type_url {
                CLUSTER => st.clusters = names,
                LISTENER => st.listeners = names,
                _ => {}
            }
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

    fn all_acked(state: &watch::Receiver<ClientState>, version: &str) -> bool {
        let s = state.borrow();
        [CLUSTER, ENDPOINT, LISTENER, ROUTE]
            .iter()
            .all(|t| s.acked.get(*t).map(String::as_str) == Some(version))
    }

    #[tokio::test]
    async fn client_follows_cds_with_eds_acks_and_gets_pushes() {
        let fake = FakeGen::new(World::v1());
        let ads = AdsServer::new(Arc::new(fake.clone()));
        let addr = spawn_server(&ads).await;
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
            [CLUSTER, ENDPOINT, LISTENER, ROUTE].iter().all(|t| {
                type_status(&ads, t).and_then(|s| s.last_acked_version) == Some("v1".into())
            })
        })
        .await;
        assert_eq!(
            type_status(&ads, ENDPOINT).unwrap().subscription,
            Subscription::names(["a", "b"])
        );

        // A new cluster: CDS and then EDS (for the new name) at v2; LDS/RDS are unchanged.
        fake.update(|w| {
            w.version = "v2".into();
            w.clusters.insert("c".into(), "c1".into());
            w.endpoints.insert("c".into(), 0);
        });
        ads.push(PushEvent {
            version: "v2".into(),
            types: None,
            ..Default::default()
        });
        wait_until("CDS and EDS at v2", || {
            let s = state.borrow();
            s.acked.get(CLUSTER).map(String::as_str) == Some("v2")
                && s.acked.get(ENDPOINT).map(String::as_str) == Some("v2")
        })
        .await;
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
        ads.push(PushEvent {
            version: "v3".into(),
            types: None,
            ..Default::default()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!((handler.log_len(), ads.stats()), before);
        task.abort();
    }

    #[tokio::test]
    async fn client_nacks_rejected_config() {
        let fake = FakeGen::new(World::v1());
        let ads = AdsServer::new(Arc::new(fake.clone()));
        let addr = spawn_server(&ads).await;
        let handler = TestHandler::default();
        handler
            .0
            .lock()
            .unwrap()
            .reject
            .insert(LISTENER.into(), "listener l1: unknown filter".into());
        let (state, task) = start_client(config(format!("http://{addr}")), &handler);
        wait_until("NACK recorded by the server", || {
            type_status(&ads, LISTENER)
                .and_then(|t| t.last_nack)
                .is_some_and(|n| n.message == "listener l1: unknown filter" && n.version == "v1")
        })
        .await;
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
        ads.push(PushEvent {
            version: "v1".into(),
            types: None,
            ..Default::default()
        });
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
        let fake = FakeGen::new(World::v1());
        let ads = AdsServer::new(Arc::new(fake.clone()));
        let server = ThreadServer::start("127.0.0.1:0".parse().unwrap(), ads.clone());
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
        let fake2 = FakeGen::new(World {
            version: "v7".into(),
            ..World::v1()
        });
        fake2.update(|w| {
            w.clusters.insert("a".into(), "a7".into());
        });
        let ads2 = AdsServer::new(Arc::new(fake2));
        let server = ThreadServer::start(addr, ads2.clone());
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
            tls: Some(tls.clone()),
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
            tls: Some(tls),
            tls_server_name: Some("istiod.istio-system.svc".into()),
            auth_token: Some("s3cret".into()),
            ..config(format!("https://{addr}"))
        };
        let (state, task) = start_client(good, &handler);
        wait_until("synced over TLS", || all_acked(&state, "v1")).await;
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
}
