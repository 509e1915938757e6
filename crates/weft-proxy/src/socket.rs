//! Socket-level helpers: the original destination of a captured connection (SO_ORIGINAL_DST)
//! and outbound connects with a bound source address and a timeout.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::TcpStream;

/// The address a connection was sent to before iptables REDIRECTed it to us. Falls back to
/// the local address when the connection was not redirected (tests, direct connections).
pub fn original_dst(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    let sock = SockRef::from(stream);
    let local = stream.local_addr()?;
    let orig = if local.is_ipv4() {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    match orig.ok().and_then(|a| a.as_socket()) {
        Some(a) => Ok(a),
        None => Ok(local),
    }
}

/// TCP keepalive on an upstream socket (Envoy's `upstream_connection_options.tcp_keepalive`):
/// unset fields keep the system's defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keepalive {
    pub time: Option<Duration>,
    pub interval: Option<Duration>,
    pub probes: Option<u32>,
}

fn set_keepalive(sock: SockRef<'_>, ka: &Keepalive) -> std::io::Result<()> {
    let mut params = socket2::TcpKeepalive::new();
    if let Some(t) = ka.time {
        params = params.with_time(t);
    }
    if let Some(i) = ka.interval {
        params = params.with_interval(i);
    }
    if let Some(n) = ka.probes {
        params = params.with_retries(n);
    }
    sock.set_tcp_keepalive(&params)
}

/// Connects to `addr`, optionally from `bind` (e.g. 127.0.0.6 for inbound passthrough), within
/// `timeout`, with TCP keepalive when `keepalive` is set. TCP_NODELAY is set, as Envoy does.
pub async fn connect(
    addr: SocketAddr,
    bind: Option<IpAddr>,
    timeout: Duration,
    keepalive: Option<&Keepalive>,
) -> std::io::Result<TcpStream> {
    let fut = async {
        let stream = match bind {
            None => TcpStream::connect(addr).await?,
            Some(ip) => {
                let sock =
                    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
                sock.set_nonblocking(true)?;
                sock.bind(&SocketAddr::new(ip, 0).into())?;
                let sock = tokio::net::TcpSocket::from_std_stream(sock.into());
                sock.connect(addr).await?
            }
        };
        stream.set_nodelay(true)?;
        if let Some(ka) = keepalive {
            set_keepalive(SockRef::from(&stream), ka)?;
        }
        Ok(stream)
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("connect to {addr} timed out after {timeout:?}"),
        )),
    }
}
