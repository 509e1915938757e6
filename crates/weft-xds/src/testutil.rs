//! Test fixtures: a fake generator, tonic servers on 127.0.0.1 and a raw SotW client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::util::pack_any;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::Streaming;

use crate::pb::envoy::config::core::v3::Node;
use crate::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use crate::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use crate::server::{AdsServer, Generated, Generator, ProxyInfo};
use crate::types::{self, NamedResource, Subscription};

/// The mesh the fake generator serves.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub version: String,
    /// Cluster name → alt_stat_name (a content knob).
    pub clusters: BTreeMap<String, String>,
    /// Cluster name → priority of its single locality (a content knob).
    pub endpoints: BTreeMap<String, u32>,
    /// Listener name → stat prefix; each listener uses route config `route-<name>`.
    pub listeners: BTreeMap<String, String>,
    /// When set, generation fails with this message.
    pub fail: Option<String>,
}

impl World {
    pub fn v1() -> World {
        World {
            version: "v1".into(),
            clusters: [("a".into(), "a1".into()), ("b".into(), "b1".into())].into(),
            endpoints: [("a".into(), 0), ("b".into(), 0)].into(),
            listeners: [("l1".into(), "p1".into())].into(),
            fail: None,
        }
    }
}

/// A generator over a shared [`World`].
#[derive(Clone, Default)]
pub struct FakeGen {
    pub world: Arc<Mutex<World>>,
}

impl FakeGen {
    pub fn new(world: World) -> FakeGen {
        FakeGen {
            world: Arc::new(Mutex::new(world)),
        }
    }

    pub fn update(&self, f: impl FnOnce(&mut World)) {
        f(&mut self.world.lock().unwrap());
    }
}

impl Generator for FakeGen {
    fn generate(
        &self,
        _proxy: &ProxyInfo,
        type_url: &str,
        names: &Subscription,
    ) -> Result<Generated, String> {
        let w = self.world.lock().unwrap().clone();
        if let Some(msg) = w.fail {
            return Err(msg);
        }
        let named = |name: &String, resource| NamedResource::new(name.clone(), resource);
        let resources = match type_url {
            types::CLUSTER => w
                .clusters
                .iter()
                .map(|(n, alt)| {
                    named(
                        n,
                        pack_any(Cluster {
                            name: n.clone(),
                            alt_stat_name: alt.clone(),
                            ..Default::default()
                        }),
                    )
                })
                .collect(),
            types::ENDPOINT => w
                .endpoints
                .iter()
                .map(|(n, prio)| {
                    named(
                        n,
                        pack_any(ClusterLoadAssignment {
                            cluster_name: n.clone(),
                            endpoints: vec![LocalityLbEndpoints {
                                priority: *prio,
                                ..Default::default()
                            }],
                            ..Default::default()
                        }),
                    )
                })
                .collect(),
            types::LISTENER => w
                .listeners
                .iter()
                .map(|(n, prefix)| {
                    named(
                        n,
                        pack_any(Listener {
                            name: n.clone(),
                            stat_prefix: prefix.clone(),
                            ..Default::default()
                        }),
                    )
                })
                .collect(),
            types::ROUTE => w
                .listeners
                .keys()
                .map(|n| {
                    let name = format!("route-{n}");
                    named(
                        &name,
                        pack_any(RouteConfiguration {
                            name: name.clone(),
                            ..Default::default()
                        }),
                    )
                })
                .collect(),
            _ => Vec::new(),
        };
        // Deliberately ignore `names` for EDS/RDS: the server must filter.
        let _ = names;
        Ok(Generated {
            version: w.version,
            resources,
        })
    }
}

/// Serves `ads` on 127.0.0.1 in the current runtime.
pub async fn spawn_server(ads: &AdsServer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = ads.service();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

/// A server on its own runtime thread; stopping it drops every connection at once.
pub struct ThreadServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ThreadServer {
    pub fn start(bind: SocketAddr, ads: AdsServer) -> ThreadServer {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind(bind).await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let serve = tonic::transport::Server::builder()
                    .add_service(ads.service())
                    .serve_with_incoming(TcpListenerStream::new(listener));
                tokio::select! {
                    r = serve => r.unwrap(),
                    _ = stop_rx => {}
                }
            });
            rt.shutdown_background();
        });
        let addr = addr_rx.recv().unwrap();
        ThreadServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// A server over the [`World::v1`] fake, listening on loopback.
pub async fn setup() -> (FakeGen, AdsServer, SocketAddr) {
    let fake = FakeGen::new(World::v1());
    let ads = AdsServer::new(Arc::new(fake.clone()));
    let addr = spawn_server(&ads).await;
    (fake, ads, addr)
}

/// Pushes `version` for every type.
pub fn push_all(ads: &AdsServer, version: &str) {
    ads.push(crate::server::PushEvent {
        version: version.into(),
        types: None,
        ..Default::default()
    });
}

pub fn node(id: &str) -> Node {
    Node {
        id: id.into(),
        cluster: "test.default".into(),
        ..Default::default()
    }
}

const WAIT: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds (panics after 10 s).
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A hand-driven SotW stream.
pub struct RawSotw {
    pub tx: mpsc::UnboundedSender<DiscoveryRequest>,
    pub rx: Streaming<DiscoveryResponse>,
}

impl RawSotw {
    pub async fn connect(addr: SocketAddr, first: DiscoveryRequest) -> RawSotw {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(first).unwrap();
        let rx = client
            .stream_aggregated_resources(UnboundedReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        RawSotw { tx, rx }
    }

    pub fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).unwrap();
    }

    pub async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("timed out waiting for a response")
            .expect("stream failed")
            .expect("stream ended")
    }

    /// Asserts nothing arrives for 300 ms.
    pub async fn expect_silence(&mut self) {
        if let Ok(msg) = tokio::time::timeout(Duration::from_millis(300), self.rx.message()).await {
            panic!("expected no response, got {msg:?}");
        }
    }
}

/// A hand-driven delta stream.
pub struct RawDelta {
    pub tx: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
    pub rx: Streaming<DeltaDiscoveryResponse>,
}

impl RawDelta {
    pub async fn connect(addr: SocketAddr, first: DeltaDiscoveryRequest) -> RawDelta {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(first).unwrap();
        let rx = client
            .delta_aggregated_resources(UnboundedReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        RawDelta { tx, rx }
    }

    pub fn send(&self, req: DeltaDiscoveryRequest) {
        self.tx.send(req).unwrap();
    }

    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("timed out waiting for a response")
            .expect("stream failed")
            .expect("stream ended")
    }

    pub async fn expect_silence(&mut self) {
        if let Ok(msg) = tokio::time::timeout(Duration::from_millis(300), self.rx.message()).await {
            panic!("expected no response, got {msg:?}");
        }
    }
}

/// The status of the single connection of `ads`, for `type_url`.
pub fn type_status(ads: &AdsServer, type_url: &str) -> Option<crate::server::TypeStatus> {
    ads.sync_status()
        .first()
        .and_then(|c| c.types.get(type_url).cloned())
}

/// Names of packed CDS/EDS/LDS/RDS resources.
pub fn resource_names(resources: &[crate::pb::google::protobuf::Any]) -> Vec<String> {
    use prost::Message;
    resources
        .iter()
        .map(|a| match a.type_url.as_str() {
            types::CLUSTER => Cluster::decode(a.value.as_slice()).unwrap().name,
            types::ENDPOINT => {
                ClusterLoadAssignment::decode(a.value.as_slice())
                    .unwrap()
                    .cluster_name
            }
            types::LISTENER => Listener::decode(a.value.as_slice()).unwrap().name,
            types::ROUTE => RouteConfiguration::decode(a.value.as_slice()).unwrap().name,
            other => panic!("unexpected type {other}"),
        })
        .collect()
}

/// A server-side TLS stream that tonic can serve (tonic's TLS features are off).
pub struct TlsIo(pub tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsIo {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl tokio::io::AsyncRead for TlsIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Serves `ads` over TLS (self-signed certificate for `name`), requiring `authorization:
/// Bearer <token>`. Returns the address and the certificate to trust.
pub async fn spawn_tls_server(
    ads: &AdsServer,
    name: &str,
    token: &'static str,
) -> (SocketAddr, rustls_pki_types::CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (conn_tx, conn_rx) = mpsc::unbounded_channel::<std::io::Result<TlsIo>>();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let conn_tx = conn_tx.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = conn_tx.send(Ok(TlsIo(tls)));
                }
            });
        }
    });
    let expected = format!("Bearer {token}");
    let svc = tonic::service::interceptor::InterceptedService::new(
        ads.service(),
        move |req: tonic::Request<()>| {
            let ok = req
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                == Some(expected.as_str());
            if ok {
                Ok(req)
            } else {
                Err(tonic::Status::unauthenticated("bad token"))
            }
        },
    );
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(UnboundedReceiverStream::new(conn_rx))
            .await
            .unwrap();
    });
    (addr, cert)
}

/// A resource named `name` of the Cluster type whose encoded bytes are `value` (for tests that
/// look at bytes, not content).
pub fn raw_resource(name: &str, value: &[u8]) -> NamedResource {
    NamedResource::new(
        name,
        crate::pb::google::protobuf::Any {
            type_url: types::CLUSTER.into(),
            value: value.to_vec(),
        },
    )
}
