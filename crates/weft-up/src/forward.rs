//! The host's loopback ports forwarded into the mesh network, so that a browser on this
//! machine opens the telemetry tools' pages: each connection accepted on `127.0.0.1:<port>` in
//! the host's namespace is joined to a connection made from the node namespace.

use std::net::{SocketAddr, SocketAddrV4, TcpListener};

/// Binds `127.0.0.1:<port>` (an ephemeral port when that one is taken) for each target and
/// forwards it from a thread in the node namespace; returns the bound address of each target
/// (None when not even an ephemeral port could be bound).
pub fn start(targets: &[(u16, SocketAddrV4)]) -> Vec<Option<SocketAddr>> {
    let mut bound = Vec::new();
    let mut pairs = Vec::new();
    for &(port, target) in targets {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .or_else(|_| TcpListener::bind(("127.0.0.1", 0)))
            .and_then(|l| l.set_nonblocking(true).map(|()| l));
        match listener {
            Ok(l) => {
                bound.push(l.local_addr().ok());
                pairs.push((l, target));
            }
            Err(e) => {
                tracing::warn!(%target, error = %e, "cannot open a host port for it");
                bound.push(None);
            }
        }
    }
    if !pairs.is_empty() {
        std::thread::spawn(move || {
            let r = crate::status::in_node_ns(move || Box::pin(serve(pairs)));
            if let Err(e) = r {
                tracing::error!(error = %e, "cannot forward the host ports from the node namespace");
            }
        });
    }
    bound
}

async fn serve(pairs: Vec<(TcpListener, SocketAddrV4)>) {
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, target) in pairs {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            continue;
        };
        tasks.spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    // Out of descriptors, say: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                tokio::spawn(async move {
                    // Made on this thread, in the node namespace.
                    match tokio::net::TcpStream::connect(target).await {
                        Ok(mut outbound) => {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                        Err(e) => tracing::debug!(%target, error = %e, "forward: connect failed"),
                    }
                });
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}
