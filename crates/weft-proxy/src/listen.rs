//! The capture listeners: virtualOutbound (15001) hands each connection to the listener for
//! its original destination, which picks a filter chain by destination IP and port and, when
//! its chains match on it, the SNI of the ClientHello; virtualInbound (15006) picks a filter
//! chain by destination port, TLS (from the ClientHello) and ALPN or HTTP sniffing, terminates
//! mTLS and runs the chain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::Proxy;
use crate::conn::ConnInfo;
use crate::snapshot::{Chain, Direction, Listener, NetworkFilter};

/// Accepts on a capture port until `stop` fires.
///
/// Each connection's task is small until it has sent its first bytes: the chain it runs
/// (TLS, the HTTP connection manager, the TCP proxy) is boxed when it starts, so that an
/// idle connection holds a few hundred bytes rather than the largest future of them all.
pub async fn accept_loop(listener: TcpListener, direction: Direction, proxy: Arc<Proxy>) {
    let mut stop = proxy.draining.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => {
                tracing::info!(?direction, "no longer accepting connections (draining)");
                return;
            }
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let counter = proxy.clone();
            let _guard = counter.active.enter();
            match direction {
                Direction::Outbound => outbound(stream, remote, proxy).await,
                Direction::Inbound => inbound(stream, remote, proxy).await,
            }
        });
    }
}

async fn outbound(stream: TcpStream, remote: SocketAddr, proxy: Arc<Proxy>) {
    let dst = match crate::socket::original_dst(&stream) {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "no original destination");
            return;
        }
    };
    let snap = proxy.snapshot.load_full();
    let listener = snap
        .outbound_listener(dst)
        .or_else(|| snap.listener(crate::VIRTUAL_OUTBOUND))
        .cloned();
    let Some(listener) = listener else {
        tracing::debug!(%dst, "no outbound listener yet; closing");
        return;
    };
    // Traffic addressed to the capture port itself would loop.
    if dst.port() == proxy.options.outbound_port && stream.local_addr().is_ok_and(|l| l == dst) {
        return;
    }
    // A listener whose chains match on the server name (VirtualService `tls` routes) reads
    // the ClientHello first, as Envoy's tls_inspector, within its default listener filter
    // timeout; the others take the connection as it comes.
    let sniffed = if listener.inspect_tls {
        match tokio::time::timeout(LISTENER_FILTERS_TIMEOUT, sniff(&stream, &listener)).await {
            Ok(Ok(s)) => s,
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::debug!(%dst, listener = %listener.name, "no ClientHello in time; closing");
                return;
            }
        }
    } else {
        Sniffed::default()
    };
    let transport = if sniffed.tls { "tls" } else { "raw_buffer" };
    let Some(chain) = listener
        .select(dst, sniffed.sni.as_deref(), transport, &sniffed.alpns)
        .cloned()
    else {
        tracing::debug!(%dst, listener = %listener.name, sni = ?sniffed.sni, "no filter chain matched; closing");
        return;
    };
    let conn = ConnInfo {
        direction: Direction::Outbound,
        original_dst: dst,
        remote,
        peer_principal: None,
        peer_cert: None,
        sni: sniffed.sni.as_deref().map(Into::into),
        alpn: None,
    };
    Box::pin(run_chain(stream, conn, &chain, proxy)).await;
}

/// Runs a chain on a connection, once TLS is terminated: its network RBAC and ext_authz filters
/// first (once, before anything connects upstream), then the HTTP connection manager or the
/// TCP proxy.
async fn run_chain<IO>(io: IO, conn: ConnInfo, chain: &Chain, proxy: Arc<Proxy>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let denied = crate::tcp::security_verdict(chain, &conn, &proxy).await;
    match &chain.filter {
        NetworkFilter::Http(_) if denied.is_some() => {
            tracing::debug!(remote = %conn.remote, chain = %chain.name, details = ?denied, "connection denied by network RBAC or ext_authz");
        }
        NetworkFilter::Http(hcm) => crate::http::serve(io, conn, hcm.clone(), proxy).await,
        NetworkFilter::Tcp(tcp) => crate::tcp::proxy(io, conn, tcp.clone(), proxy, denied).await,
    }
}

/// Envoy's default `listener_filters_timeout`: how long the TLS inspector waits for a
/// ClientHello before the connection is closed.
const LISTENER_FILTERS_TIMEOUT: Duration = Duration::from_secs(15);

/// What the first bytes of a connection say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sniffed {
    pub tls: bool,
    pub alpns: Vec<String>,
    pub sni: Option<String>,
}

impl Sniffed {
    /// TLS whose ClientHello could not be read: no SNI, no ALPN.
    pub(crate) fn unnamed_tls() -> Sniffed {
        Sniffed {
            tls: true,
            ..Sniffed::default()
        }
    }
}

/// The protocol detection on the first bytes of a connection: a TLS ClientHello (parsed with
/// rustls, SNI and ALPN read from it) when `inspect_tls`, else plaintext HTTP/1.x or HTTP/2
/// prior knowledge when `inspect_http`. `None` while a ClientHello has begun and is not
/// complete; anything else that starts like TLS is TLS without SNI or ALPN.
pub fn classify(head: &[u8], inspect_tls: bool, inspect_http: bool) -> Option<Sniffed> {
    if inspect_tls && head.first() == Some(&0x16) {
        let mut acceptor = rustls::server::Acceptor::default();
        let mut rd = head;
        let _ = acceptor.read_tls(&mut rd);
        return match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                let alpns = hello
                    .alpn()
                    .map(|it| {
                        it.map(|a| String::from_utf8_lossy(a).into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                Some(Sniffed {
                    tls: true,
                    alpns,
                    sni: hello.server_name().map(str::to_owned),
                })
            }
            Ok(None) => None,
            Err(_) => Some(Sniffed::unnamed_tls()),
        };
    }
    let mut alpns = Vec::new();
    if inspect_http {
        if head.starts_with(b"PRI * HTTP/2.0") {
            alpns.push("h2c".to_string());
        } else if let Some(line_end) = head.windows(2).position(|w| w == b"\r\n") {
            let line = &head[..line_end];
            if line.ends_with(b" HTTP/1.1") {
                alpns.push("http/1.1".to_string());
            } else if line.ends_with(b" HTTP/1.0") {
                alpns.push("http/1.0".to_string());
            }
        }
    }
    Some(Sniffed {
        tls: false,
        alpns,
        sni: None,
    })
}

/// How much of a connection's start the detection looks at.
pub(crate) const SNIFF_BYTES: usize = 16 * 1024;

/// How long the inspector waits for the rest of a ClientHello that arrived in part.
const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between two looks at a ClientHello that is still arriving: a client
/// that trickles one in costs a few dozen parses, not one per millisecond.
const CLIENT_HELLO_MAX_PAUSE: Duration = Duration::from_millis(64);

/// Peeks at the start of the connection (without consuming it) and [`classify`]s it,
/// waiting, bounded, for the rest of a ClientHello that arrived in part.
async fn sniff(stream: &TcpStream, listener: &Listener) -> std::io::Result<Sniffed> {
    // A connection that has sent nothing yet holds no buffer.
    stream.readable().await?;
    let mut buf = vec![0u8; SNIFF_BYTES];
    let mut n = stream.peek(&mut buf).await?;
    let deadline = tokio::time::Instant::now() + CLIENT_HELLO_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(s) = classify(&buf[..n], listener.inspect_tls, listener.inspect_http) {
            return Ok(s);
        }
        if n == buf.len() || tokio::time::Instant::now() >= deadline {
            return Ok(Sniffed::unnamed_tls());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(CLIENT_HELLO_MAX_PAUSE);
        n = stream.peek(&mut buf).await?;
    }
}

async fn inbound(stream: TcpStream, remote: SocketAddr, proxy: Arc<Proxy>) {
    let dst = match crate::socket::original_dst(&stream) {
        Ok(d) => d,
        Err(_) => return,
    };
    let snap = proxy.snapshot.load_full();
    let Some(listener) = snap.listener(crate::VIRTUAL_INBOUND).cloned() else {
        tracing::debug!("no virtualInbound listener yet; closing");
        return;
    };
    drop(snap);
    let sniffed = match sniff(&stream, &listener).await {
        Ok(s) => s,
        Err(_) => return,
    };
    serve_inbound(stream, dst, remote, &sniffed, &listener, proxy).await;
}

/// The inbound listener's work once the first bytes are classified: the filter chain for the
/// destination port, TLS and ALPN, then mTLS termination (when the chain has it) and the chain.
/// The classified bytes are still unread in `stream`.
pub(crate) async fn serve_inbound<IO>(
    stream: IO,
    dst: SocketAddr,
    remote: SocketAddr,
    sniffed: &Sniffed,
    listener: &Listener,
    proxy: Arc<Proxy>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let transport = if sniffed.tls { "tls" } else { "raw_buffer" };
    let Some(chain) = listener
        .select(dst, sniffed.sni.as_deref(), transport, &sniffed.alpns)
        .cloned()
    else {
        tracing::debug!(%dst, transport, alpns = ?sniffed.alpns, "no inbound filter chain matched; closing");
        return;
    };
    let conn = ConnInfo {
        direction: Direction::Inbound,
        original_dst: dst,
        remote,
        peer_principal: None,
        peer_cert: None,
        sni: sniffed.sni.as_deref().map(Into::into),
        alpn: None,
    };
    let Some(tls) = &chain.tls else {
        Box::pin(run_chain(stream, conn, &chain, proxy)).await;
        return;
    };
    let intersects = sniffed
        .alpns
        .iter()
        .any(|a| tls.alpns.iter().any(|b| b.as_slice() == a.as_bytes()));
    let config = if intersects || tls.alpns.is_empty() {
        tls.with_alpn.clone()
    } else {
        tls.without_alpn.clone()
    };
    match &chain.filter {
        // Bulk TCP: rustls reads at most 4 KiB per call, so a buffer underneath turns four or
        // more reads per 16 KiB record into one read per 256 KiB (`tcp::TLS_READ_BUFFER`).
        NetworkFilter::Tcp(_) => {
            let buffered = crate::readbuf::GrowingReader::new(stream, crate::tcp::TLS_READ_BUFFER);
            Box::pin(accept_tls(buffered, config, conn, &chain, proxy)).await
        }
        NetworkFilter::Http(_) => Box::pin(accept_tls(stream, config, conn, &chain, proxy)).await,
    }
}

/// Terminates TLS on `stream` and runs `chain` on the plaintext, with the peer's SPIFFE ID.
async fn accept_tls<IO>(
    stream: IO,
    config: Arc<rustls::ServerConfig>,
    mut conn: ConnInfo,
    chain: &Chain,
    proxy: Arc<Proxy>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (remote, dst) = (conn.remote, conn.original_dst);
    let accepted = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsAcceptor::from(config).accept(stream),
    )
    .await;
    let tls_stream = match accepted {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(%remote, %dst, error = %e, "inbound mTLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(%remote, %dst, "inbound mTLS handshake timed out");
            return;
        }
    };
    {
        let (_, session) = tls_stream.get_ref();
        conn.peer_principal = session
            .peer_certificates()
            .and_then(weft_identity::peer_spiffe_id)
            .map(|id| id.to_string().into());
        conn.alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        // The certificate details `x-forwarded-client-cert` forwards, kept only when needed.
        if let NetworkFilter::Http(hcm) = &chain.filter
            && hcm.xfcc.needs_peer_cert()
        {
            conn.peer_cert = session
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|leaf| crate::conn::PeerCert::from_der(leaf.as_ref()))
                .map(Arc::new);
        }
    }
    run_chain(tls_stream, conn, chain, proxy).await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The first flight of a rustls client to `sni` offering `alpn`.
    fn client_hello(sni: &str, alpn: &[u8]) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        let name = rustls_pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).unwrap();
        }
        out
    }

    fn sni_listener() -> Listener {
        Listener {
            name: "10.78.0.20_9443".into(),
            addr: SocketAddr::from(([10, 78, 0, 20], 9443)),
            bind: false,
            direction: Direction::Outbound,
            chains: Vec::new(),
            inspect_tls: true,
            inspect_http: false,
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, server)
    }

    #[test]
    fn classify_waits_for_a_whole_client_hello_and_reads_plaintext_at_once() {
        let hello = client_hello("two.example.com", b"h2");
        for cut in [1, 5, 40, hello.len() - 1] {
            assert_eq!(classify(&hello[..cut], true, true), None, "cut at {cut}");
        }
        let whole = classify(&hello, true, true).unwrap();
        assert!(whole.tls);
        assert_eq!(whole.sni.as_deref(), Some("two.example.com"));
        assert_eq!(whole.alpns, vec!["h2".to_string()]);
        // Not a ClientHello although it starts like a handshake record: TLS without SNI.
        let junk = classify(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", true, true).unwrap();
        assert!(junk.tls && junk.sni.is_none());
        // Without the TLS inspector the same bytes are plaintext.
        assert!(!classify(&hello, false, true).unwrap().tls);
        let h1 = classify(b"GET / HTTP/1.1\r\nHost: a\r\n", true, true).unwrap();
        assert_eq!(h1.alpns, vec!["http/1.1".to_string()]);
        let h2 = classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true, true).unwrap();
        assert_eq!(h2.alpns, vec!["h2c".to_string()]);
        assert_eq!(classify(b"", true, true), Some(Sniffed::default()));
    }

    #[tokio::test]
    async fn the_client_hello_names_the_server_without_being_consumed() {
        let hello = client_hello("Two.Example.com", b"h2");
        let (mut client, mut server) = pair().await;
        // Sent in two pieces: the inspector waits for the whole ClientHello.
        let (a, b) = hello.split_at(hello.len() / 2);
        client.write_all(a).await.unwrap();
        let late = b.to_vec();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(&late).await.unwrap();
            client
        });
        let sniffed = sniff(&server, &sni_listener()).await.unwrap();
        assert!(sniffed.tls);
        assert_eq!(sniffed.sni.as_deref(), Some("two.example.com"));
        assert_eq!(sniffed.alpns, vec!["h2".to_string()]);
        // Peeked, not read: the TCP proxy forwards the ClientHello intact.
        let _client = writer.await.unwrap();
        let mut buf = vec![0u8; hello.len()];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, hello);
    }

    /// An upstream that counts the connections it accepts and echoes.
    async fn counting_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = up.local_addr().unwrap();
        let accepts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepts.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = up.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        (addr, accepts)
    }

    fn network_rbac(action: i32, port: u32) -> Arc<crate::snapshot::rbac::RbacFilter> {
        use envoy_types::pb::envoy::config::rbac::v3 as rbac;
        use envoy_types::pb::envoy::extensions::filters::network::rbac::v3 as net;
        use prost::Message;
        let policy = rbac::Policy {
            permissions: vec![rbac::Permission {
                rule: Some(rbac::permission::Rule::DestinationPort(port)),
            }],
            principals: vec![rbac::Principal {
                identifier: Some(rbac::principal::Identifier::Any(true)),
            }],
            ..Default::default()
        };
        let cfg = net::Rbac {
            rules: Some(rbac::Rbac {
                action,
                policies: [("ns[foo]-policy[tcp]-rule[0]".to_string(), policy)].into(),
                ..Default::default()
            }),
            stat_prefix: "tcp.".into(),
            ..Default::default()
        };
        let any = envoy_types::pb::google::protobuf::Any {
            type_url: format!(
                "type.googleapis.com/{}",
                crate::snapshot::rbac::NETWORK_RBAC_TYPE
            ),
            value: cfg.encode_to_vec(),
        };
        Arc::new(crate::snapshot::rbac::RbacFilter::network(&any, "test").unwrap())
    }

    #[tokio::test]
    async fn network_rbac_decides_before_connecting_upstream() {
        use envoy_types::pb::envoy::config::cluster::v3 as xc;
        let (up, accepts) = counting_upstream().await;
        let live = Arc::new(weft_identity::LiveIdentity::new());
        let factory = crate::tls::TlsFactory::new(live, "cluster.local".into());
        let orig = xc::Cluster {
            name: "InboundPassthroughClusterIpv4".into(),
            cluster_discovery_type: Some(xc::cluster::ClusterDiscoveryType::Type(
                xc::cluster::DiscoveryType::OriginalDst as i32,
            )),
            lb_policy: xc::cluster::LbPolicy::ClusterProvided as i32,
            ..Default::default()
        };
        let cluster =
            crate::snapshot::compile_cluster(&orig, None, &factory, None, &Default::default())
                .unwrap();
        let mut snap = crate::snapshot::Snapshot::default();
        snap.clusters.insert(orig.name.clone(), Arc::new(cluster));
        let proxy = crate::test_proxy(snap);
        let allow = 0;
        let deny = 1;
        // (filters, echoed, upstream accepts after)
        let cases = [
            (
                vec![network_rbac(allow, u32::from(up.port()) + 1)],
                false,
                0,
            ),
            (vec![network_rbac(deny, u32::from(up.port()))], false, 0),
            (vec![network_rbac(allow, u32::from(up.port()))], true, 1),
            (
                vec![
                    network_rbac(deny, u32::from(up.port()) + 1),
                    network_rbac(allow, u32::from(up.port())),
                ],
                true,
                2,
            ),
            (
                vec![
                    network_rbac(allow, u32::from(up.port())),
                    network_rbac(deny, u32::from(up.port())),
                ],
                false,
                2,
            ),
        ];
        for (i, (rbac, echoed, after)) in cases.into_iter().enumerate() {
            let chain = Arc::new(Chain {
                name: "passthrough".into(),
                matcher: Default::default(),
                tls: None,
                rbac,
                ext_authz: None,
                filter: NetworkFilter::Tcp(Arc::new(crate::snapshot::TcpProxy {
                    stat_prefix: "InboundPassthroughClusterIpv4".into(),
                    cluster: "InboundPassthroughClusterIpv4".into(),
                    weighted: vec![("InboundPassthroughClusterIpv4".into(), 1)],
                    access_log: Vec::new(),
                    stats: None,
                })),
            });
            let (mut client, server) = pair().await;
            let conn = ConnInfo {
                direction: Direction::Inbound,
                original_dst: up,
                remote: client.local_addr().unwrap(),
                peer_principal: None,
                peer_cert: None,
                sni: None,
                alpn: None,
            };
            let (p, c) = (proxy.clone(), chain.clone());
            let task = tokio::spawn(async move { run_chain(server, conn, &c, p).await });
            client.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            let got = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
                .await
                .unwrap();
            if echoed {
                assert_eq!(got.unwrap(), 4, "case {i}");
                assert_eq!(&buf, b"ping");
            } else {
                assert!(matches!(got, Ok(0) | Err(_)), "case {i}: closed");
            }
            drop(client);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            assert_eq!(
                accepts.load(std::sync::atomic::Ordering::SeqCst),
                after,
                "case {i}"
            );
        }
        let stats: std::collections::HashMap<String, u64> =
            crate::snapshot::counter::all().into_iter().collect();
        assert!(
            stats.get("tcp.rbac.denied").copied().unwrap_or(0) >= 3,
            "{stats:?}"
        );
    }

    #[tokio::test]
    async fn plaintext_has_no_server_name() {
        let (mut client, server) = pair().await;
        client.write_all(b"hello\n").await.unwrap();
        let sniffed = sniff(&server, &sni_listener()).await.unwrap();
        assert!(!sniffed.tls);
        assert_eq!(sniffed.sni, None);
    }
}
