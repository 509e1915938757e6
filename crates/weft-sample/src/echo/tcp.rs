//! The echo server's TCP listener: echoes bytes back, or with a prefix answers each line as
//! "<prefix> <line>" like Istio's tcp-echo sample.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::error::SampleError;

/// Accepts connections until `stop` flips; open connections are closed at the same time.
pub(super) async fn serve(
    listener: TcpListener,
    prefix: Option<Arc<str>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), SampleError> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let prefix = prefix.clone();
                    let mut conn_stop = stop.clone();
                    tokio::spawn(async move {
                        let r = tokio::select! {
                            r = connection(stream, prefix.as_deref()) => r,
                            _ = conn_stop.changed() => Ok(()),
                        };
                        if let Err(e) = r {
                            debug!(%peer, error = %e, "tcp echo connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => return Ok(()),
        }
    }
}

async fn connection(mut stream: TcpStream, prefix: Option<&str>) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.split();
    match prefix {
        None => {
            let mut r = r;
            tokio::io::copy(&mut r, &mut w).await?;
        }
        Some(prefix) => {
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line).await? == 0 {
                    break;
                }
                let mut answer = Vec::with_capacity(prefix.len() + 1 + line.len());
                answer.extend_from_slice(prefix.as_bytes());
                answer.push(b' ');
                answer.extend_from_slice(&line);
                w.write_all(&answer).await?;
            }
        }
    }
    w.shutdown().await
}

#[cfg(test)]
mod tests {
    use crate::echo::testing::base;
    use crate::echo::{EchoArgs, EchoServer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn round_trip(prefix: Option<&str>, send: &[u8]) -> Vec<u8> {
        let s = EchoServer::bind(EchoArgs {
            tcp_ports: vec![0],
            tcp_prefix: prefix.map(str::to_string),
            ..base()
        })
        .await
        .unwrap();
        let c = TcpStream::connect(s.tcp_addrs()[0]).await.unwrap();
        let (mut r, mut w) = c.into_split();
        let send = send.to_vec();
        // Write while reading so neither side's socket buffer can fill up and stall.
        let writer = tokio::spawn(async move {
            w.write_all(&send).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        writer.await.unwrap();
        out
    }

    #[tokio::test]
    async fn echoes_bytes() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(round_trip(None, &data).await, data);
    }

    #[tokio::test]
    async fn prefixes_each_line() {
        let out = round_trip(Some("one"), b"hello\nworld\npartial").await;
        assert_eq!(out, b"one hello\none world\none partial");
    }
}
