//! gRPC channels to the control plane, in plaintext or over rustls (ALPN h2).
//!
//! tonic's own TLS support is not enabled (it would pull in ring), so TLS channels use a small
//! connector that dials TCP and runs the rustls handshake, given to
//! [`Endpoint::connect_with_connector`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint};

use crate::error::XdsError;

/// How long dialling (TCP plus TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval of HTTP/2 keep-alive pings (istiod's gRPC keepalive), on both sides of an xDS
/// connection: a vanished control plane, or a vanished proxy, is noticed.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long to wait for a keep-alive ping answer.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads a rustls client config for one dial.
pub type ReadTlsConfig = dyn Fn() -> Result<Arc<rustls::ClientConfig>, String> + Send + Sync;

/// The rustls client config a [`TlsConnector`] dials with: the same every time, or read again
/// for every connection (as pilot-agent reads istiod's root certificate file, which the
/// platform may replace, each time it dials).
#[derive(Clone)]
pub enum TlsConfig {
    /// One config for every dial.
    Fixed(Arc<rustls::ClientConfig>),
    /// A config read at each dial; an error fails that dial (and is retried with the next).
    PerDial(Arc<ReadTlsConfig>),
}

impl From<Arc<rustls::ClientConfig>> for TlsConfig {
    fn from(config: Arc<rustls::ClientConfig>) -> Self {
        TlsConfig::Fixed(config)
    }
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsConfig::Fixed(_) => "TlsConfig::Fixed",
            TlsConfig::PerDial(_) => "TlsConfig::PerDial",
        })
    }
}

/// The config with ALPN `h2`, unless it already offers it.
fn with_h2(config: Arc<rustls::ClientConfig>) -> Arc<rustls::ClientConfig> {
    if config.alpn_protocols.iter().any(|p| p == b"h2") {
        config
    } else {
        let mut c = (*config).clone();
        c.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(c)
    }
}

/// A tower service that dials TCP to the URI's host and port and runs a rustls handshake with
/// ALPN `h2`. Use it with [`Endpoint::connect_with_connector`] or [`connect_channel`].
#[derive(Clone)]
pub struct TlsConnector {
    config: TlsConfig,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("config", &self.config)
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Builds a [`TlsConnector`] from a rustls client config (built with the aws-lc-rs provider),
/// fixed or read at each dial. ALPN is set to `h2` unless the config already offers it.
/// `server_name` overrides the name that is verified and sent as SNI (istiod's certificate
/// names `istiod.istio-system.svc`, which may differ from the address dialled); by default the
/// URI's host is used.
pub fn tls_connector(
    config: impl Into<TlsConfig>,
    server_name: Option<&str>,
) -> Result<TlsConnector, XdsError> {
    let config = match config.into() {
        TlsConfig::Fixed(c) => TlsConfig::Fixed(with_h2(c)),
        per_dial => per_dial,
    };
    let server_name = server_name
        .map(|n| {
            ServerName::try_from(n.to_string()).map_err(|_| XdsError::InvalidServerName(n.into()))
        })
        .transpose()?;
    Ok(TlsConnector {
        config,
        server_name,
    })
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl tonic::codegen::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = match &self.config {
            TlsConfig::Fixed(c) => Ok(c.clone()),
            TlsConfig::PerDial(read) => read().map(with_h2),
        };
        let fixed_name = self.server_name.clone();
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(config.map_err(io::Error::other)?);
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .unwrap_or(if uri.scheme_str() == Some("http") {
                    80
                } else {
                    443
                });
            let server_name = match fixed_name {
                Some(n) => n,
                None => ServerName::try_from(host.clone()).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{host} is not a valid TLS server name: {e}"),
                    )
                })?,
            };
            let tcp = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => TcpStream::connect(SocketAddr::new(ip, port)).await?,
                Err(_) => TcpStream::connect((host.as_str(), port)).await?,
            };
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Parses `endpoint` into a tonic [`Endpoint`] with the connect timeout and HTTP/2 keep-alive set.
pub fn endpoint(endpoint: &str) -> Result<Endpoint, XdsError> {
    let invalid = |reason: String| XdsError::InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let uri: Uri = endpoint
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(e.to_string()))?;
    if uri.host().is_none() {
        return Err(invalid("no host".into()));
    }
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(invalid("the scheme must be http or https".into()));
    }
    let ep = Endpoint::from(uri)
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    Ok(ep)
}

/// Connects a gRPC channel to `endpoint` (`http://host:port` or `https://host:port`), through
/// `tls` when given (then the scheme only selects the default port).
pub async fn connect_channel(
    endpoint_uri: &str,
    tls: Option<TlsConnector>,
) -> Result<Channel, XdsError> {
    let ep = endpoint(endpoint_uri)?;
    let res = match tls {
        Some(tls) => ep.connect_with_connector(tls).await,
        None => ep.connect().await,
    };
    res.map_err(|source| XdsError::Connect {
        endpoint: endpoint_uri.to_string(),
        reason: causes(&source),
    })
}

/// An error and its sources, joined with `: ` (tonic's transport error says only "transport
/// error"; the cause, such as a refused certificate, is in its sources).
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

/// A tower service that dials one unix socket whatever the URI (gRPC over a unix domain
/// socket, as Envoy reaches an SDS server such as a SPIRE agent).
#[derive(Clone, Debug)]
pub struct UnixConnector {
    path: std::path::PathBuf,
}

type UnixConnectFuture =
    Pin<Box<dyn Future<Output = io::Result<TokioIo<tokio::net::UnixStream>>> + Send>>;

impl tonic::codegen::Service<Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = io::Error;
    type Future = UnixConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let path = self.path.clone();
        Box::pin(async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) })
    }
}

/// Connects a gRPC channel over the unix socket at `path`. No HTTP/2 keep-alive pings: a
/// SPIRE agent closes connections that ping more often than every 5 minutes, and a local
/// socket's peer going away is seen at once.
pub async fn connect_unix(path: &std::path::Path) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_static("http://localhost")
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_with_connector(UnixConnector {
            path: path.to_path_buf(),
        })
        .await
}
