//! The capture listeners: virtualOutbound (15001) hands each connection to the listener for
//! its original destination; virtualInbound (15006) picks a filter chain by destination port,
//! TLS (from the ClientHello) and ALPN or HTTP sniffing, terminates mTLS and runs the chain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::Proxy;
use crate::conn::ConnInfo;
use crate::snapshot::{Chain, Direction, Listener, NetworkFilter};

/// Accepts on a capture port until `stop` fires.
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
    let Some(chain) = listener.select(dst.port(), "raw_buffer", &[]).cloned() else {
        tracing::debug!(%dst, listener = %listener.name, "no filter chain matched; closing");
        return;
    };
    let conn = ConnInfo {
        direction: Direction::Outbound,
        original_dst: dst,
        remote,
        peer_principal: None,
        sni: None,
        alpn: None,
    };
    run_chain(stream, conn, &chain, proxy).await;
}

async fn run_chain<IO>(io: IO, conn: ConnInfo, chain: &Chain, proxy: Arc<Proxy>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    match &chain.filter {
        NetworkFilter::Http(hcm) => crate::http::serve(io, conn, hcm.clone(), proxy).await,
        NetworkFilter::Tcp(tcp) => crate::tcp::proxy(io, conn, tcp.clone(), proxy).await,
    }
}

/// What the first bytes of an inbound connection say.
struct Sniffed {
    tls: bool,
    alpns: Vec<String>,
    sni: Option<String>,
}

/// Peeks at the start of the connection: a TLS ClientHello (parsed with rustls, without
/// consuming it) or plaintext HTTP/1.x or HTTP/2 prior knowledge.
async fn sniff(stream: &TcpStream, listener: &Listener) -> std::io::Result<Sniffed> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut n = stream.peek(&mut buf).await?;
    if n > 0 && buf[0] == 0x16 && listener.inspect_tls {
        // Wait for the whole ClientHello record(s) to arrive, bounded.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut acceptor = rustls::server::Acceptor::default();
            let mut rd = &buf[..n];
            let _ = acceptor.read_tls(&mut rd);
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let hello = accepted.client_hello();
                    let alpns = hello
                        .alpn()
                        .map(|it| {
                            it.map(|a| String::from_utf8_lossy(a).into_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    let sni = hello.server_name().map(str::to_owned);
                    return Ok(Sniffed {
                        tls: true,
                        alpns,
                        sni,
                    });
                }
                Ok(None) if n < buf.len() && tokio::time::Instant::now() < deadline => {
                    stream.readable().await?;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    n = stream.peek(&mut buf).await?;
                }
                _ => {
                    return Ok(Sniffed {
                        tls: true,
                        alpns: Vec::new(),
                        sni: None,
                    });
                }
            }
        }
    }
    let mut alpns = Vec::new();
    if listener.inspect_http && n > 0 {
        let head = &buf[..n];
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
    Ok(Sniffed {
        tls: false,
        alpns,
        sni: None,
    })
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
    let transport = if sniffed.tls { "tls" } else { "raw_buffer" };
    let Some(chain) = listener
        .select(dst.port(), transport, &sniffed.alpns)
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
        sni: sniffed.sni.as_deref().map(Into::into),
        alpn: None,
    };
    let Some(tls) = &chain.tls else {
        run_chain(stream, conn, &chain, proxy).await;
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
            accept_tls(buffered, config, conn, &chain, proxy).await
        }
        NetworkFilter::Http(_) => accept_tls(stream, config, conn, &chain, proxy).await,
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
    }
    run_chain(tls_stream, conn, chain, proxy).await;
}
