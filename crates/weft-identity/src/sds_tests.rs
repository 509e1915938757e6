//! The SDS client against a scripted SDS server on a unix socket: both validation-context
//! forms, ACK/NACK, rotation pushes, refusals and a server that goes away.

use std::pin::Pin;
use std::sync::Mutex;

use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::spiffe_cert_validator_config::TrustDomain;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use futures::Stream;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status, Streaming};

use super::*;
use crate::ca::CertificateAuthority;
use crate::spiffe::SpiffeId;
use crate::svid::generate_key_and_csr;

type Reply = Result<DiscoveryResponse, Status>;

/// A scripted SDS server: each stream first gets `refusals` errors (one per stream), then
/// every response put on `pushes`; it records every request.
struct Fake {
    pushes: Mutex<Option<mpsc::UnboundedReceiver<Reply>>>,
    requests: mpsc::UnboundedSender<DiscoveryRequest>,
    refusals: Mutex<u32>,
}

/// The gRPC service around a shared [`Fake`].
struct Service(Arc<Fake>);

#[tonic::async_trait]
impl SecretDiscoveryService for Service {
    type DeltaSecretsStream =
        Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;
    type StreamSecretsStream = Pin<Box<dyn Stream<Item = Reply> + Send>>;

    async fn delta_secrets(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented("delta"))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let fake = &self.0;
        {
            let mut r = fake.refusals.lock().unwrap();
            if *r > 0 {
                *r -= 1;
                return Err(Status::invalid_argument(
                    "workload is not authorized for the requested identities [\"ROOTCA\" \"default\"]",
                ));
            }
        }
        let mut incoming = request.into_inner();
        let requests = fake.requests.clone();
        tokio::spawn(async move {
            while let Ok(Some(req)) = incoming.message().await {
                let _ = requests.send(req);
            }
        });
        let pushes = fake
            .pushes
            .lock()
            .unwrap()
            .take()
            .expect("one stream at a time");
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(pushes),
        )))
    }

    async fn fetch_secrets(
        &self,
        _: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Err(Status::unimplemented("fetch"))
    }
}

/// Serves `fake` on `path` until `stop` flips.
fn serve(
    fake: Arc<Fake>,
    path: &Path,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(SecretDiscoveryServiceServer::new(Service(fake)))
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .unwrap();
    })
}

fn any(secret: Secret) -> Any {
    Any {
        type_url: SECRET_TYPE.into(),
        value: secret.encode_to_vec(),
    }
}

fn inline(text: String) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineBytes(text.into_bytes())),
        ..Default::default()
    })
}

/// `default` as a SPIRE agent sends it: the leaf alone and a PKCS#8 key.
fn cert_secret(ca: &CertificateAuthority, id: &str) -> Any {
    let (key, csr) = generate_key_and_csr().unwrap();
    let chain = ca
        .sign_csr(
            &csr,
            &SpiffeId::parse(id).unwrap(),
            Duration::from_secs(3600),
        )
        .unwrap();
    any(Secret {
        name: DEFAULT_CERT.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(chain[0].clone()),
            private_key: inline(crate::ca::pem_encode("PRIVATE KEY", key.secret_der())),
            ..Default::default()
        })),
    })
}

fn plain_roots(ca: &CertificateAuthority) -> Any {
    any(Secret {
        name: ROOT_CA.into(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: inline(ca.root_pem()),
                ..Default::default()
            },
        )),
    })
}

fn spiffe_roots(domains: &[(&str, &CertificateAuthority)]) -> Any {
    let config = SpiffeCertValidatorConfig {
        trust_domains: domains
            .iter()
            .map(|(name, ca)| TrustDomain {
                name: name.to_string(),
                trust_bundle: inline(ca.root_pem()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    any(Secret {
        name: ROOT_CA.into(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                custom_validator_config: Some(TypedExtensionConfig {
                    name: SPIFFE_VALIDATOR.into(),
                    typed_config: Some(Any {
                        type_url: SPIFFE_VALIDATOR_TYPE.into(),
                        value: config.encode_to_vec(),
                    }),
                }),
                ..Default::default()
            },
        )),
    })
}

fn response(version: &str, resources: Vec<Any>) -> Reply {
    Ok(DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: SECRET_TYPE.into(),
        nonce: format!("n{version}"),
        ..Default::default()
    })
}

const ID: &str = "spiffe://cluster.local/ns/default/sa/sleep";

async fn next_identity(rx: &mut watch::Receiver<Option<Arc<Identity>>>) -> Arc<Identity> {
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("an identity in time")
        .unwrap();
    rx.borrow_and_update().clone().unwrap()
}

async fn next_request(rx: &mut mpsc::UnboundedReceiver<DiscoveryRequest>) -> DiscoveryRequest {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a request in time")
        .unwrap()
}

#[tokio::test]
async fn follows_the_sds_server() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(&dir.path().join("a"), "cluster.local").unwrap();
    let other = CertificateAuthority::load_or_create(&dir.path().join("b"), "other.org").unwrap();
    let socket = dir.path().join("sds.sock");
    let (push_tx, push_rx) = mpsc::unbounded_channel();
    let (req_tx, mut requests) = mpsc::unbounded_channel();
    let fake = Arc::new(Fake {
        pushes: Mutex::new(Some(push_rx)),
        requests: req_tx,
        refusals: Mutex::new(1),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = serve(fake.clone(), &socket, stop_rx);
    assert!(is_served(&socket).await);
    assert!(!is_served(&dir.path().join("nothing.sock")).await);

    let (store, mut ids) = IdentityStore::new();
    let node = Node {
        id: "sidecar~10.0.0.1~sleep.default~default.svc.cluster.local".into(),
        ..Default::default()
    };
    let client = tokio::spawn(run(
        SdsConfig {
            socket: socket.clone(),
            node: node.clone(),
        },
        store.clone(),
    ));

    // The first stream is refused (no entry synced yet): the reason is kept, then a retry.
    let first = next_request(&mut requests).await;
    assert!(store.current().is_none());
    assert!(
        store.last_error().unwrap().contains("not authorized"),
        "{:?}",
        store.last_error()
    );
    assert_eq!(first.resource_names, vec![DEFAULT_CERT, ROOT_CA]);
    assert_eq!(first.type_url, SECRET_TYPE);
    assert_eq!(first.node.unwrap().id, node.id);
    assert!(first.response_nonce.is_empty());

    // A SPIRE agent's set: the leaf, and ROOTCA in the SPIFFE validator form.
    push_tx
        .send(response(
            "1",
            vec![
                cert_secret(&ca, ID),
                spiffe_roots(&[("cluster.local", &ca)]),
            ],
        ))
        .unwrap();
    let id1 = next_identity(&mut ids).await;
    assert_eq!(id1.svid.id.to_string(), ID);
    assert_eq!(
        id1.bundle.domains.keys().collect::<Vec<_>>(),
        ["cluster.local"]
    );
    assert!(store.last_error().is_none());
    let ack = next_request(&mut requests).await;
    assert_eq!(
        (ack.version_info.as_str(), ack.response_nonce.as_str()),
        ("1", "n1")
    );
    assert!(ack.error_detail.is_none() && ack.node.is_none());

    // Rotation with a federated domain: the whole set again.
    push_tx
        .send(response(
            "2",
            vec![
                cert_secret(&ca, ID),
                spiffe_roots(&[("cluster.local", &ca), ("other.org", &other)]),
            ],
        ))
        .unwrap();
    let id2 = next_identity(&mut ids).await;
    assert_ne!(id2.svid.chain[0], id1.svid.chain[0]);
    assert_eq!(id2.bundle.domains.len(), 2);
    assert_eq!(next_request(&mut requests).await.version_info, "2");

    // An unusable set is NACKed with the reason, and nothing changes.
    // (a certificate with another certificate's key)
    let mismatched = |a: Any, b: Any| {
        let (Ok(mut a), Ok(b)) = (
            Secret::decode(a.value.as_slice()),
            Secret::decode(b.value.as_slice()),
        ) else {
            panic!("secrets")
        };
        if let (Some(secret::Type::TlsCertificate(a)), Some(secret::Type::TlsCertificate(b))) =
            (&mut a.r#type, b.r#type)
        {
            a.private_key = b.private_key;
        }
        any(a)
    };
    let broken = mismatched(cert_secret(&ca, ID), cert_secret(&ca, ID));
    push_tx
        .send(response("3", vec![broken, plain_roots(&ca)]))
        .unwrap();
    let nack = next_request(&mut requests).await;
    assert_eq!(
        nack.version_info, "2",
        "a NACK carries the last accepted version"
    );
    assert_eq!(nack.response_nonce, "n3");
    let why = nack.error_detail.unwrap().message;
    assert!(
        why.contains("\"default\"") && why.contains("another key"),
        "{why}"
    );
    let mut truncated = cert_secret(&ca, ID);
    truncated.value.truncate(truncated.value.len() / 2);
    push_tx.send(response("3b", vec![truncated])).unwrap();
    let nack = next_request(&mut requests).await;
    assert_eq!(nack.version_info, "2");
    assert!(nack.error_detail.unwrap().message.contains("cannot decode"));
    assert!(!ids.has_changed().unwrap());
    assert_eq!(store.current().unwrap().svid.chain[0], id2.svid.chain[0]);

    // The plain trusted_ca form alone: a new bundle with the same certificate.
    push_tx.send(response("4", vec![plain_roots(&ca)])).unwrap();
    let id4 = next_identity(&mut ids).await;
    assert_eq!(id4.svid.chain[0], id2.svid.chain[0]);
    assert!(id4.bundle.domains.is_empty());
    assert_eq!(id4.bundle.roots, ca.roots());
    assert_eq!(next_request(&mut requests).await.version_info, "4");

    // The server goes away: the identity stays, and the client says why it has no stream.
    stop_tx.send_replace(true);
    drop(push_tx);
    server.await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while store.last_error().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the lost stream is noticed");
    assert_eq!(store.current().unwrap().svid.chain[0], id2.svid.chain[0]);

    // It comes back: the client reconnects and takes the new set.
    let (push_tx, push_rx) = mpsc::unbounded_channel();
    *fake.pushes.lock().unwrap() = Some(push_rx);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let _server = serve(fake.clone(), &socket, stop_rx);
    let again = next_request(&mut requests).await;
    assert!(again.node.is_some(), "a new stream starts with the node");
    push_tx
        .send(response("1", vec![cert_secret(&ca, ID), plain_roots(&ca)]))
        .unwrap();
    let id5 = next_identity(&mut ids).await;
    assert_ne!(id5.svid.chain[0], id2.svid.chain[0]);
    client.abort();
}

#[test]
fn rejects_what_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
    let mut held = Held::default();
    // The wrong kind under a known name.
    let swapped = any(Secret {
        name: DEFAULT_CERT.into(),
        r#type: Some(secret::Type::ValidationContext(Default::default())),
    });
    let err = apply(&response("1", vec![swapped]).unwrap(), &mut held).unwrap_err();
    let err = err.to_string();
    assert!(err.contains("not of the expected kind"), "{err}");
    // Another validator.
    let other = any(Secret {
        name: ROOT_CA.into(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                custom_validator_config: Some(TypedExtensionConfig {
                    name: "envoy.tls.cert_validator.default".into(),
                    typed_config: None,
                }),
                ..Default::default()
            },
        )),
    });
    let err = apply(&response("1", vec![other]).unwrap(), &mut held).unwrap_err();
    let err = err.to_string();
    assert!(err.contains("not supported"), "{err}");
    // A certificate alone is held but not published; unknown names are ignored.
    let fed = Secret {
        name: "spiffe://other.org".into(),
        r#type: None,
    };
    let got = apply(
        &response("1", vec![cert_secret(&ca, ID), any(fed)]).unwrap(),
        &mut held,
    );
    assert!(got.unwrap().is_none());
    assert!(held.svid.is_some());
    let got = apply(&response("2", vec![plain_roots(&ca)]).unwrap(), &mut held).unwrap();
    assert_eq!(got.unwrap().svid.id.to_string(), ID);
    // Nothing new: nothing to publish.
    assert!(
        apply(&response("3", vec![]).unwrap(), &mut held)
            .unwrap()
            .is_none()
    );
}
