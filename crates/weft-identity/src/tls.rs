//! rustls configurations for mesh mTLS with SPIFFE peer authentication.
//!
//! * [`LiveIdentity`] holds the current [`Identity`] in an `ArcSwapOption`; it is the
//!   certificate resolver of both sides, so a rotation takes effect on the next handshake
//!   without rebuilding configs or touching established connections.
//! * [`SpiffeServerVerifier`] (client side) and [`SpiffeClientVerifier`] (server side) verify
//!   the peer chain against the current trust bundle with webpki and then check the peer's
//!   URI SAN; no DNS-name verification happens anywhere in the mesh.
//! * [`serving_cert_for_control_plane`] / [`root_client_config`] cover the control plane's
//!   own TLS port (xDS + CA, Istio 15012), verified by DNS name against the CA root.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rcgen::{ExtendedKeyUsagePurpose, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    CipherSuite, ClientConfig, RootCertStore, ServerConfig, SignatureScheme, SupportedCipherSuite,
};
use rustls_pki_types::{CertificateDer, TrustAnchor};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ca::CertificateAuthority;
use crate::error::IdentityError;
use crate::manager::Identity;
use crate::spiffe::SpiffeId;
use crate::svid::{parse_cert, spiffe_uris};
use verifier::other_error;

mod origination;
mod stream;
mod verifier;

pub use origination::{OriginationOptions, origination_client_config};
pub use stream::{TlsConnInfo, TlsServerStream};
pub use verifier::{SpiffeClientVerifier, SpiffeServerVerifier};

/// Minimum TLS version accepted by a server (`meshMTLS.minProtocolVersion`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (Istio's default, `TLS_AUTO`/`TLSV1_2`).
    #[default]
    V1_2,
    /// TLS 1.3 only (`TLSV1_3`).
    V1_3,
}

/// Options of the inbound (server) mTLS config.
#[derive(Clone, Debug, Default)]
pub struct ServerTlsOptions {
    /// Lowest TLS version accepted; the highest is always 1.3.
    pub min_version: TlsVersion,
    /// ALPN protocols offered, in preference order.
    pub alpn: Vec<Vec<u8>>,
    /// Accepted client trust domains (mesh trust domain + aliases); empty accepts any SPIFFE
    /// ID that chains to the bundle (Istio without trust domain aliases).
    pub trust_domains: Vec<String>,
}

/// Options of the outbound (client) mTLS config.
#[derive(Clone, Debug, Default)]
pub struct ClientTlsOptions {
    /// Accepted server SPIFFE IDs (`spiffe://td/ns/x/sa/y`, exact match); empty accepts any.
    pub expected_ids: Vec<String>,
    /// ALPN protocols offered, in preference order.
    pub alpn: Vec<Vec<u8>>,
    /// When `expected_ids` is empty: accepted server trust domains (empty: any that chains
    /// to the bundle).
    pub trust_domains: Vec<String>,
}

/// The aws-lc-rs provider with Istio's inbound cipher list for TLS 1.2 (ECDHE-ECDSA/RSA
/// AES-GCM) and all TLS 1.3 suites.
fn mesh_server_provider() -> CryptoProvider {
    const TLS12_ALLOWED: [CipherSuite; 4] = [
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ];
    let mut provider = envoy_ordered_provider();
    provider.cipher_suites.retain(|s| match s {
        SupportedCipherSuite::Tls13(_) => true,
        SupportedCipherSuite::Tls12(_) => TLS12_ALLOWED.contains(&s.suite()),
    });
    provider
}

/// The aws-lc-rs provider with the TLS 1.3 suites in BoringSSL's order, as Envoy has them:
/// AES-128-GCM first (the suite every TLS 1.3 peer implements and, with AES hardware, the
/// cheapest: its key schedule runs on SHA-256 rather than SHA-384), then AES-256-GCM, then
/// ChaCha20-Poly1305. rustls lists AES-256 first.
fn envoy_ordered_provider() -> CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        _ => 3,
    });
    provider
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(envoy_ordered_provider())
}

struct Loaded {
    identity: Arc<Identity>,
    certified: Arc<CertifiedKey>,
    anchors: Anchors,
}

/// Trust anchors of the current bundle: all of them, and per trust domain when the bundle
/// comes in the SPIFFE validator's form.
#[derive(Clone)]
pub(crate) struct Anchors {
    pub(crate) all: Arc<Vec<TrustAnchor<'static>>>,
    pub(crate) domains: Arc<std::collections::BTreeMap<String, Vec<TrustAnchor<'static>>>>,
}

fn trust_anchors(
    roots: &[CertificateDer<'static>],
) -> Result<Vec<TrustAnchor<'static>>, IdentityError> {
    roots
        .iter()
        .map(|r| {
            webpki::anchor_from_trusted_cert(r)
                .map(|a| a.to_owned())
                .map_err(|e| {
                    IdentityError::InvalidCertificate(format!("unusable trust bundle root: {e}"))
                })
        })
        .collect()
}

/// Checks that an identity can serve handshakes (its key and chain load, its roots are usable
/// trust anchors), as [`LiveIdentity::set`] will need: an SDS client checks before it ACKs.
pub fn check_identity(identity: &Identity) -> Result<(), IdentityError> {
    load(Arc::new(identity.clone()), &provider()).map(|_| ())
}

fn load(identity: Arc<Identity>, provider: &Arc<CryptoProvider>) -> Result<Loaded, IdentityError> {
    let certified = CertifiedKey::from_der(
        identity.svid.chain.clone(),
        identity.svid.key.clone_key(),
        provider,
    )?;
    let all = trust_anchors(&identity.bundle.roots)?;
    let domains = identity
        .bundle
        .domains
        .iter()
        .map(|(td, roots)| Ok((td.clone(), trust_anchors(roots)?)))
        .collect::<Result<_, IdentityError>>()?;
    Ok(Loaded {
        identity,
        certified: Arc::new(certified),
        anchors: Anchors {
            all: Arc::new(all),
            domains: Arc::new(domains),
        },
    })
}

/// The current workload identity, swapped atomically on rotation; certificate resolver for
/// mesh client and server configs.
pub struct LiveIdentity {
    current: ArcSwapOption<Loaded>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for LiveIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cur = self.current.load();
        f.debug_struct("LiveIdentity")
            .field("id", &cur.as_ref().map(|l| l.identity.svid.id.to_string()))
            .finish()
    }
}

impl Default for LiveIdentity {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveIdentity {
    /// No identity yet: handshakes fail until [`LiveIdentity::set`] is called.
    pub fn new() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            provider: provider(),
        }
    }

    /// Makes `identity` the current one for new handshakes.
    pub fn set(&self, identity: Arc<Identity>) -> Result<(), IdentityError> {
        let loaded = load(identity, &self.provider)?;
        self.current.store(Some(Arc::new(loaded)));
        Ok(())
    }

    /// Forgets the identity (new handshakes fail).
    pub fn clear(&self) {
        self.current.store(None);
    }

    /// The current identity, if any.
    pub fn identity(&self) -> Option<Arc<Identity>> {
        self.current.load().as_ref().map(|l| l.identity.clone())
    }

    fn certified(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|l| l.certified.clone())
    }

    fn anchors(&self) -> Result<Anchors, rustls::Error> {
        self.current
            .load()
            .as_ref()
            .map(|l| l.anchors.clone())
            .ok_or_else(|| other_error(IdentityError::NoIdentity))
    }

    /// Spawns a task that follows an identity channel (e.g. from
    /// [`IdentityManager::spawn`](crate::IdentityManager::spawn)) until it closes.
    pub fn watch_into(
        self: &Arc<Self>,
        mut rx: watch::Receiver<Option<Arc<Identity>>>,
    ) -> JoinHandle<()> {
        let live = self.clone();
        tokio::spawn(async move {
            loop {
                let next = rx.borrow_and_update().clone();
                match next {
                    Some(identity) => {
                        let id = identity.svid.id.clone();
                        if let Err(error) = live.set(identity) {
                            tracing::error!(%id, %error, "cannot use the new workload certificate; keeping the previous one");
                        }
                    }
                    None => live.clear(),
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
    }
}

impl ResolvesServerCert for LiveIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let cert = self.certified();
        if cert.is_none() {
            tracing::warn!("refusing an mTLS handshake: no workload certificate yet");
        }
        cert
    }
}

impl ResolvesClientCert for LiveIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.certified()
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}

/// Inbound mTLS config: TLS `min_version`..1.3, client certificate required and verified by
/// SPIFFE trust domain, Istio's TLS 1.2 cipher list, certificate from `live`.
pub fn server_config(
    live: Arc<LiveIdentity>,
    opts: ServerTlsOptions,
) -> Result<Arc<ServerConfig>, IdentityError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match opts.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let verifier = Arc::new(SpiffeClientVerifier::new(live.clone(), opts.trust_domains));
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(mesh_server_provider()))
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(live);
    cfg.alpn_protocols = opts.alpn;
    // The server's order decides, as BoringSSL's does for Envoy: OpenSSL and rustls clients
    // list AES-256 first.
    cfg.ignore_client_order = true;
    Ok(Arc::new(cfg))
}

/// Outbound mTLS config: TLS 1.2–1.3, server verified by SPIFFE ID (no DNS name check),
/// client certificate from `live`, session resumption on.
pub fn client_config(
    live: Arc<LiveIdentity>,
    opts: ClientTlsOptions,
) -> Result<Arc<ClientConfig>, IdentityError> {
    let verifier = Arc::new(SpiffeServerVerifier::new(
        live.clone(),
        opts.expected_ids,
        opts.trust_domains,
    ));
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(live);
    cfg.alpn_protocols = opts.alpn;
    Ok(Arc::new(cfg))
}

/// The peer's Istio-form SPIFFE ID from its certificate chain (leaf first), after a handshake.
pub fn peer_spiffe_id(certs: &[CertificateDer<'_>]) -> Option<SpiffeId> {
    let leaf = parse_cert(certs.first()?.as_ref()).ok()?;
    spiffe_uris(&leaf)
        .into_iter()
        .find_map(|u| SpiffeId::parse(u).ok())
}

/// Issues a serving certificate for the control plane's own TLS port (xDS + CA, 15012) from
/// its CA: DNS SANs (IP SANs for names that parse as IP addresses), server+client auth.
/// Returns (`[leaf, intermediates…, root]` PEMs, PKCS#8 key PEM).
pub fn serving_cert_for_control_plane(
    ca: &CertificateAuthority,
    dns_names: &[String],
    ttl: Duration,
) -> Result<(Vec<String>, String), IdentityError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let sans = dns_names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => rcgen::string::Ia5String::try_from(n.as_str()).map(SanType::DnsName),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = ca.issue(
        &key,
        sans,
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        ttl,
    )?;
    Ok((ca.with_chain(leaf), key.serialize_pem()))
}

/// Client config trusting only `roots` (standard webpki verification with DNS name), for
/// talking to the control plane's TLS port. ALPN `h2` (gRPC).
pub fn root_client_config(
    roots: &[CertificateDer<'static>],
) -> Result<Arc<ClientConfig>, IdentityError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::IdentityStore;
    use crate::svid::{TrustBundle, generate_key_and_csr};
    use rustls_pki_types::PrivateKeyDer;
    use rustls_pki_types::ServerName;
    use rustls_pki_types::pem::PemObject;
    use std::io;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::mpsc;
    use tokio_rustls::{TlsAcceptor, TlsConnector};
    use tonic::transport::server::Connected;

    const SERVER_ID: &str = "spiffe://cluster.local/ns/foo/sa/httpbin";
    const CLIENT_ID: &str = "spiffe://cluster.local/ns/foo/sa/sleep";
    const SNI: &str = "outbound_.8000_._.httpbin.foo.svc.cluster.local";

    fn new_ca() -> (CertificateAuthority, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::load_or_create(dir.path(), "cluster.local").unwrap();
        (ca, dir)
    }

    fn identity(ca: &CertificateAuthority, id: &str) -> Arc<Identity> {
        let (key, csr) = generate_key_and_csr().unwrap();
        let chain = ca
            .sign_csr(
                &csr,
                &SpiffeId::parse(id).unwrap(),
                Duration::from_secs(3600),
            )
            .unwrap();
        Arc::new(Identity::from_chain_pems(&chain, key).unwrap())
    }

    fn live(identity: Arc<Identity>) -> Arc<LiveIdentity> {
        let live = Arc::new(LiveIdentity::new());
        live.set(identity).unwrap();
        live
    }

    type Accepted = Result<Option<SpiffeId>, String>;

    /// An mTLS echo server; reports each accepted handshake (peer ID) or its error.
    async fn echo_server(
        cfg: Arc<ServerConfig>,
    ) -> (SocketAddr, mpsc::UnboundedReceiver<Accepted>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let acceptor = TlsAcceptor::from(cfg);
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let conn = match acceptor.accept(tcp).await {
                        Ok(c) => TlsServerStream(c),
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let info = conn.connect_info();
                    assert!(info.remote_addr.is_some());
                    let id = info.peer_certs.as_deref().and_then(|c| peer_spiffe_id(c));
                    let _ = tx.send(Ok(id));
                    let (mut r, mut w) = tokio::io::split(conn);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        (addr, rx)
    }

    type ClientConn = tokio_rustls::client::TlsStream<TcpStream>;

    /// Connects and does one echo round trip (so a TLS 1.3 client learns whether the server
    /// accepted its certificate).
    async fn connect(cfg: Arc<ClientConfig>, addr: SocketAddr) -> io::Result<ClientConn> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from(SNI).unwrap();
        let mut conn = TlsConnector::from(cfg).connect(name, tcp).await?;
        roundtrip(&mut conn).await?;
        Ok(conn)
    }

    async fn roundtrip(conn: &mut ClientConn) -> io::Result<()> {
        conn.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(())
    }

    fn server_leaf(conn: &ClientConn) -> CertificateDer<'static> {
        conn.get_ref().1.peer_certificates().unwrap()[0].clone()
    }

    #[tokio::test]
    async fn mtls_handshake_authenticates_both_sides() {
        let (ca, _d) = new_ca();
        let server_live = live(identity(&ca, SERVER_ID));
        let client_live = live(identity(&ca, CLIENT_ID));
        let scfg = server_config(
            server_live.clone(),
            ServerTlsOptions {
                alpn: vec![b"istio-peer-exchange".to_vec(), b"istio".to_vec()],
                trust_domains: vec!["cluster.local".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let (addr, mut accepted) = echo_server(scfg).await;

        let ccfg = client_config(
            client_live.clone(),
            ClientTlsOptions {
                expected_ids: vec![SERVER_ID.into()],
                alpn: vec![b"istio".to_vec()],
                ..Default::default()
            },
        )
        .unwrap();
        let conn = connect(ccfg, addr).await.unwrap();
        let (_, session) = conn.get_ref();
        assert_eq!(session.alpn_protocol(), Some(&b"istio"[..]));
        assert_eq!(
            peer_spiffe_id(session.peer_certificates().unwrap())
                .unwrap()
                .to_string(),
            SERVER_ID
        );
        // The server learns the client's principal.
        let seen = accepted.recv().await.unwrap().unwrap().unwrap();
        assert_eq!(seen.to_string(), CLIENT_ID);
        assert_eq!(seen.principal(), "cluster.local/ns/foo/sa/sleep");

        // Empty expected list: any ID from the bundle is fine.
        let any = client_config(client_live.clone(), ClientTlsOptions::default()).unwrap();
        connect(any, addr).await.unwrap();
        // Empty expected list restricted to another trust domain: refused.
        let other_td = client_config(
            client_live,
            ClientTlsOptions {
                trust_domains: vec!["example.org".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert!(connect(other_td, addr).await.is_err());
    }

    #[tokio::test]
    async fn wrong_expected_server_id_is_rejected() {
        let (ca, _d) = new_ca();
        let scfg =
            server_config(live(identity(&ca, SERVER_ID)), ServerTlsOptions::default()).unwrap();
        let (addr, _accepted) = echo_server(scfg).await;
        let ccfg = client_config(
            live(identity(&ca, CLIENT_ID)),
            ClientTlsOptions {
                expected_ids: vec!["spiffe://cluster.local/ns/foo/sa/other".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let err = connect(ccfg, addr).await.unwrap_err();
        assert!(err.to_string().contains("ns/foo/sa/other"), "{err}");
    }

    #[tokio::test]
    async fn server_requires_a_valid_client_certificate_in_its_trust_domains() {
        let (ca, _d) = new_ca();
        let server_live = live(identity(&ca, SERVER_ID));
        let scfg = server_config(
            server_live.clone(),
            ServerTlsOptions {
                trust_domains: vec!["cluster.local".into(), "old.example".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let (addr, mut accepted) = echo_server(scfg).await;

        // No client certificate.
        let verifier = Arc::new(SpiffeServerVerifier::new(
            server_live.clone(),
            vec![],
            vec![],
        ));
        let no_cert = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        assert!(connect(Arc::new(no_cert), addr).await.is_err());
        let err = accepted.recv().await.unwrap().unwrap_err();
        assert!(err.contains("no certificates"), "{err}");

        // A client of a trust domain that is neither the mesh's nor an alias.
        let foreign = live(identity(&ca, "spiffe://evil.example/ns/foo/sa/sleep"));
        let ccfg = client_config(foreign, ClientTlsOptions::default()).unwrap();
        assert!(connect(ccfg, addr).await.is_err());
        let err = accepted.recv().await.unwrap().unwrap_err();
        assert!(err.contains("trust domain"), "{err}");

        // An alias trust domain is accepted.
        let alias = live(identity(&ca, "spiffe://old.example/ns/foo/sa/sleep"));
        let ccfg = client_config(alias, ClientTlsOptions::default()).unwrap();
        connect(ccfg, addr).await.unwrap();
        let seen = accepted.recv().await.unwrap().unwrap().unwrap();
        assert_eq!(seen.trust_domain, "old.example");

        // A certificate from another CA (the client still trusts ours).
        let (other_ca, _d2) = new_ca();
        let stranger = identity(&other_ca, CLIENT_ID);
        let mixed = Arc::new(Identity {
            svid: stranger.svid.clone(),
            bundle: TrustBundle {
                roots: ca.roots().to_vec(),
                ..TrustBundle::default()
            },
        });
        let ccfg = client_config(live(mixed), ClientTlsOptions::default()).unwrap();
        assert!(connect(ccfg, addr).await.is_err());
        let err = accepted.recv().await.unwrap().unwrap_err();
        // Both roots are named O=cluster.local, so webpki finds ours and the signature fails.
        assert!(
            err.contains("UnknownIssuer") || err.contains("BadSignature"),
            "{err}"
        );
    }

    /// Per-domain bundles (the SPIFFE validator as a SPIRE agent sends it): a peer from a
    /// domain the bundle does not list is refused whatever the roots, and accepted, with
    /// its own domain's roots, once that domain is federated.
    #[tokio::test]
    async fn per_domain_bundles_admit_federated_domains_only() {
        let (ca, _d) = new_ca();
        let dir = tempfile::tempdir().unwrap();
        let other = CertificateAuthority::load_or_create(dir.path(), "other.org").unwrap();
        let with_domains = |svid: &Identity, domains: &[(&str, &CertificateAuthority)]| {
            let pems: Vec<(String, String)> = domains
                .iter()
                .map(|(td, ca)| (td.to_string(), ca.root_pem()))
                .collect();
            Arc::new(Identity {
                svid: svid.svid.clone(),
                bundle: TrustBundle::from_domain_pems(
                    pems.iter().map(|(td, pem)| (td.as_str(), pem.as_str())),
                )
                .unwrap(),
            })
        };
        let server_id = identity(&ca, SERVER_ID);
        let server_live = live(with_domains(&server_id, &[("cluster.local", &ca)]));
        let scfg = server_config(
            server_live.clone(),
            ServerTlsOptions {
                trust_domains: vec!["cluster.local".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let (addr, mut accepted) = echo_server(scfg).await;
        let stranger = identity(&other, "spiffe://other.org/ns/foo/sa/sleep");
        let client = live(with_domains(
            &stranger,
            &[("other.org", &other), ("cluster.local", &ca)],
        ));
        let ccfg = client_config(
            client.clone(),
            ClientTlsOptions {
                expected_ids: vec![SERVER_ID.into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert!(connect(ccfg.clone(), addr).await.is_err());
        let err = accepted.recv().await.unwrap().unwrap_err();
        assert!(
            err.contains("other.org") && err.contains("federate"),
            "{err}"
        );

        // Federated: the server's bundle lists other.org, so its client is accepted even
        // though the server's own trust domains are only cluster.local.
        server_live
            .set(with_domains(
                &server_id,
                &[("cluster.local", &ca), ("other.org", &other)],
            ))
            .unwrap();
        connect(ccfg, addr).await.unwrap();
        let seen = accepted.recv().await.unwrap().unwrap().unwrap();
        assert_eq!(seen.trust_domain, "other.org");

        // A certificate from other.org's CA claiming cluster.local is checked against
        // cluster.local's roots, and fails.
        let forged = identity(&other, CLIENT_ID);
        let forged_live = live(with_domains(
            &forged,
            &[("other.org", &other), ("cluster.local", &ca)],
        ));
        let ccfg = client_config(forged_live, ClientTlsOptions::default()).unwrap();
        assert!(connect(ccfg, addr).await.is_err());
        let err = accepted.recv().await.unwrap().unwrap_err();
        assert!(
            err.contains("UnknownIssuer") || err.contains("BadSignature"),
            "{err}"
        );
    }

    /// A certificate with a second SPIFFE ID beside the peer's own is refused: with a
    /// federated domain, its CA could otherwise claim a local identity next to its own.
    #[tokio::test]
    async fn a_peer_with_two_spiffe_ids_is_refused() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let identity = |uris: &[&str]| {
            let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.subject_alt_names = uris
                .iter()
                .map(|u| SanType::URI((*u).try_into().unwrap()))
                .collect();
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ];
            let leaf = params.signed_by(&leaf_key, &issuer).unwrap();
            Arc::new(Identity {
                svid: crate::svid::Svid {
                    id: SpiffeId::parse(uris[0]).unwrap(),
                    chain: vec![leaf.der().clone()],
                    key: Arc::new(PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap()),
                    not_before: std::time::SystemTime::now(),
                    not_after: std::time::SystemTime::now() + Duration::from_secs(3600),
                },
                bundle: TrustBundle {
                    roots: vec![ca_cert.der().clone()],
                    ..TrustBundle::default()
                },
            })
        };
        let scfg =
            server_config(live(identity(&[SERVER_ID])), ServerTlsOptions::default()).unwrap();
        let (addr, mut accepted) = echo_server(scfg).await;
        // One SPIFFE ID: accepted.
        let one = client_config(live(identity(&[CLIENT_ID])), ClientTlsOptions::default()).unwrap();
        connect(one, addr).await.unwrap();
        accepted.recv().await.unwrap().unwrap();
        let two = identity(&[CLIENT_ID, "spiffe://cluster.local/ns/foo/sa/admin"]);
        let ccfg = client_config(live(two), ClientTlsOptions::default()).unwrap();
        assert!(connect(ccfg, addr).await.is_err());
        let err = accepted.recv().await.unwrap().unwrap_err();
        assert!(err.contains("exactly one"), "{err}");
    }

    /// A client of one protocol version and crypto provider that expects SERVER_ID.
    fn pinned_client(
        provider: Arc<CryptoProvider>,
        version: &'static rustls::SupportedProtocolVersion,
        live: &Arc<LiveIdentity>,
    ) -> Arc<ClientConfig> {
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(&[version])
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
                    live.clone(),
                    vec![SERVER_ID.into()],
                    vec![],
                )))
                .with_client_cert_resolver(live.clone()),
        )
    }

    #[tokio::test]
    async fn min_version_1_3_refuses_tls12_clients() {
        let (ca, _d) = new_ca();
        let server_live = live(identity(&ca, SERVER_ID));
        let client_live = live(identity(&ca, CLIENT_ID));
        let tls12_only = pinned_client(provider(), &rustls::version::TLS12, &client_live);

        // The default minimum (1.2) accepts it, with one of Istio's inbound ciphers.
        let (addr12, _a) =
            echo_server(server_config(server_live.clone(), ServerTlsOptions::default()).unwrap())
                .await;
        let conn = connect(tls12_only.clone(), addr12).await.unwrap();
        let session = conn.get_ref().1;
        assert_eq!(
            session.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        assert_eq!(
            session.negotiated_cipher_suite().unwrap().suite(),
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        );

        let (addr13, mut accepted) = echo_server(
            server_config(
                server_live,
                ServerTlsOptions {
                    min_version: TlsVersion::V1_3,
                    ..Default::default()
                },
            )
            .unwrap(),
        )
        .await;
        assert!(connect(tls12_only, addr13).await.is_err());
        assert!(accepted.recv().await.unwrap().is_err());
        // A default (1.2–1.3) client negotiates 1.3, with AES-128-GCM.
        let ccfg = client_config(client_live.clone(), ClientTlsOptions::default()).unwrap();
        let conn = connect(ccfg, addr13).await.unwrap();
        assert_eq!(
            conn.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert_eq!(
            conn.get_ref().1.negotiated_cipher_suite().unwrap().suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        // So does a client that prefers AES-256 (rustls' and OpenSSL's own order): the
        // server's order decides.
        let aes256_first = pinned_client(
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            &rustls::version::TLS13,
            &client_live,
        );
        assert_eq!(
            aes256_first.crypto_provider().cipher_suites[0].suite(),
            CipherSuite::TLS13_AES_256_GCM_SHA384
        );
        let conn = connect(aes256_first, addr13).await.unwrap();
        assert_eq!(
            conn.get_ref().1.negotiated_cipher_suite().unwrap().suite(),
            CipherSuite::TLS13_AES_128_GCM_SHA256
        );
    }

    #[tokio::test]
    async fn rotation_applies_to_new_handshakes_and_keeps_old_connections() {
        let (ca, _d) = new_ca();
        let first = identity(&ca, SERVER_ID);
        let (store, rx) = IdentityStore::new();
        store.set(first.clone());
        let server_live = Arc::new(LiveIdentity::new());
        let _watch = server_live.watch_into(rx);
        while server_live.identity().is_none() {
            tokio::task::yield_now().await;
        }
        let scfg = server_config(server_live.clone(), ServerTlsOptions::default()).unwrap();
        let (addr, _accepted) = echo_server(scfg).await;

        let client_live = live(identity(&ca, CLIENT_ID));
        let mut ccfg = (*client_config(client_live, ClientTlsOptions::default()).unwrap()).clone();
        ccfg.resumption = rustls::client::Resumption::disabled();
        let ccfg = Arc::new(ccfg);

        let mut old_conn = connect(ccfg.clone(), addr).await.unwrap();
        assert_eq!(server_leaf(&old_conn), first.svid.chain[0]);

        // Publish a renewed certificate; the same configs now present it.
        let second = identity(&ca, SERVER_ID);
        store.set(second.clone());
        tokio::time::timeout(Duration::from_secs(5), async {
            while server_live.identity().unwrap().svid.chain[0] != second.svid.chain[0] {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        let new_conn = connect(ccfg, addr).await.unwrap();
        assert_eq!(server_leaf(&new_conn), second.svid.chain[0]);

        // The connection made with the old certificate still works.
        roundtrip(&mut old_conn).await.unwrap();
        roundtrip(&mut old_conn).await.unwrap();
    }

    #[tokio::test]
    async fn no_identity_means_no_handshake() {
        let (ca, _d) = new_ca();
        let empty = Arc::new(LiveIdentity::new());
        let (addr, mut accepted) =
            echo_server(server_config(empty, ServerTlsOptions::default()).unwrap()).await;
        let ccfg =
            client_config(live(identity(&ca, CLIENT_ID)), ClientTlsOptions::default()).unwrap();
        assert!(connect(ccfg, addr).await.is_err());
        assert!(accepted.recv().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn control_plane_serving_cert_verified_by_root_and_name() {
        let (ca, _d) = new_ca();
        let names = vec![
            "istiod.istio-system.svc".to_string(),
            "127.0.0.1".to_string(),
        ];
        let (chain, key_pem) =
            serving_cert_for_control_plane(&ca, &names, Duration::from_secs(3600)).unwrap();
        let certs: Vec<CertificateDer<'static>> = chain[..chain.len() - 1]
            .iter()
            .flat_map(|p| CertificateDer::pem_slice_iter(p.as_bytes()).map(Result::unwrap))
            .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let mut scfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        scfg.alpn_protocols = vec![b"h2".to_vec()];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(scfg));
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut c) = acceptor.accept(tcp).await {
                        let _ = c.write_all(b"ok").await;
                        let _ = c.shutdown().await;
                    }
                });
            }
        });
        let bundle = TrustBundle::from_pem(&ca.root_pem()).unwrap();
        let ccfg = root_client_config(&bundle.roots).unwrap();
        let dial = |name: &'static str| {
            let ccfg = ccfg.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let mut c = TlsConnector::from(ccfg)
                    .connect(ServerName::try_from(name).unwrap(), tcp)
                    .await?;
                let mut buf = Vec::new();
                c.read_to_end(&mut buf).await?;
                assert_eq!(c.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                io::Result::Ok(buf)
            }
        };
        assert_eq!(dial("istiod.istio-system.svc").await.unwrap(), b"ok");
        assert_eq!(dial("127.0.0.1").await.unwrap(), b"ok");
        assert!(dial("istiod.other.svc").await.is_err());

        // Another CA's root does not trust it.
        let (other, _d2) = new_ca();
        let wrong = root_client_config(other.roots()).unwrap();
        let tcp = TcpStream::connect(addr).await.unwrap();
        assert!(
            TlsConnector::from(wrong)
                .connect(
                    ServerName::try_from("istiod.istio-system.svc").unwrap(),
                    tcp
                )
                .await
                .is_err()
        );
    }

    #[test]
    fn peer_id_from_chain() {
        let (ca, _d) = new_ca();
        let id = identity(&ca, CLIENT_ID);
        assert_eq!(
            peer_spiffe_id(&id.svid.chain).unwrap().to_string(),
            CLIENT_ID
        );
        assert!(peer_spiffe_id(&[]).is_none());
        assert!(peer_spiffe_id(ca.roots()).is_none());
    }
}
