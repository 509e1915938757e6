//! The entry the fuzz targets use (feature `fuzzing`, never in the `weft` binary): raw bytes
//! into the inbound listener of a proxy built from a snapshot, as a captured connection's
//! bytes arrive on 15006, with an in-process upstream that records what reaches it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Proxy;
use crate::snapshot::Snapshot;

/// How long the proxy may stay silent before the client takes it that no more answers come.
const QUIET: Duration = Duration::from_millis(3);

/// What the upstream app received: each request's method and path-and-query.
pub type Received = Arc<Mutex<Vec<(String, String)>>>;

/// A proxy and its app, on a runtime of their own.
pub struct Inbound {
    rt: tokio::runtime::Runtime,
    proxy: Arc<Proxy>,
    app: SocketAddr,
    received: Received,
}

/// How a connection ended.
#[derive(Debug)]
pub struct Served {
    /// Everything the proxy wrote back.
    pub response: Vec<u8>,
    /// The proxy finished the connection within the deadline after the client closed.
    pub finished: bool,
}

impl Inbound {
    /// Binds the app (HTTP/1.1 and HTTP/2, answers 200 with the request body) on an ephemeral
    /// loopback port. `snapshot(port)` builds the proxy's configuration for an app on that port.
    pub fn new(snapshot: impl FnOnce(u16) -> Snapshot) -> std::io::Result<Inbound> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // libFuzzer's `main` is not Rust's, which ignores SIGPIPE as the `weft` binary does: a
        // write to a connection the app closed would kill the process. A handler (tokio's,
        // installed for the process's life) takes SIGPIPE instead.
        let _sigpipe = rt.block_on(async {
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::pipe())
        })?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let app = listener.local_addr()?;
        let received = Received::default();
        rt.spawn(serve_app(listener, received.clone()));
        let proxy = crate::test_proxy(snapshot(app.port()));
        Ok(Inbound {
            rt,
            proxy,
            app,
            received,
        })
    }

    /// The requests the app has received so far (taken).
    pub fn take_received(&self) -> Vec<(String, String)> {
        match self.received.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        }
    }

    /// Sends `bytes` on a new connection to the app's port through the inbound listener, reads
    /// what comes back until the proxy has been quiet for a few milliseconds, then closes the
    /// client's write side and reads on until the proxy closes or `deadline` passes.
    pub fn serve(&self, bytes: &[u8], deadline: Duration) -> Served {
        let snap = self.proxy.snapshot.load_full();
        let Some(listener) = snap.listener(crate::VIRTUAL_INBOUND).cloned() else {
            return Served {
                response: Vec::new(),
                finished: true,
            };
        };
        // As `sniff` on a real connection: an unfinished ClientHello is TLS without a name.
        let head = &bytes[..bytes.len().min(crate::listen::SNIFF_BYTES)];
        let sniffed = crate::classify(head, listener.inspect_tls, listener.inspect_http)
            .unwrap_or_else(crate::Sniffed::unnamed_tls);
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (proxy, dst) = (self.proxy.clone(), self.app);
        let remote: SocketAddr = ([127, 0, 0, 9], 40000).into();
        self.rt.block_on(async move {
            let conn = tokio::spawn(async move {
                crate::listen::serve_inbound(server, dst, remote, &sniffed, &listener, proxy).await
            });
            let (mut rd, mut wr) = tokio::io::split(&mut client);
            let mut response = Vec::new();
            // A client that closes its side at once would have its requests reset (as Envoy
            // does on a downstream close): the write side stays open while the proxy answers,
            // until it has been quiet for QUIET, then closes.
            let talk = async {
                let write = async {
                    let _ = wr.write_all(bytes).await;
                };
                let mut buf = vec![0u8; 16 * 1024];
                let read_while_writing = async {
                    loop {
                        match rd.read(&mut buf).await {
                            Ok(0) | Err(_) => return true,
                            Ok(n) => response.extend_from_slice(&buf[..n]),
                        }
                    }
                };
                let closed = tokio::select! {
                    closed = read_while_writing => closed,
                    () = write => false,
                };
                if !closed {
                    loop {
                        match tokio::time::timeout(QUIET, rd.read(&mut buf)).await {
                            Ok(Ok(0) | Err(_)) => return,
                            Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
                            Err(_) => break,
                        }
                    }
                }
                let _ = wr.shutdown().await;
                let _ = rd.read_to_end(&mut response).await;
            };
            let finished = tokio::time::timeout(deadline, talk).await.is_ok();
            conn.abort();
            Served { response, finished }
        })
    }
}

async fn serve_app(listener: tokio::net::TcpListener, received: Received) {
    while let Ok((stream, _)) = listener.accept().await {
        let received = received.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let received = received.clone();
                    async move {
                        let path = req
                            .uri()
                            .path_and_query()
                            .map(|p| p.as_str().to_string())
                            .unwrap_or_default();
                        if let Ok(mut r) = received.lock() {
                            r.push((req.method().to_string(), path));
                        }
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(body),
                        ))
                    }
                });
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
        });
    }
}
