//! A server-side TLS stream for tonic that exposes the client's certificates.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;

/// Connection info of a [`TlsServerStream`], available to tonic handlers as a request
/// extension (`request.extensions().get::<TlsConnInfo>()`); [`CaService`](crate::CaService)
/// passes `peer_certs` to its [`Authenticator`](crate::Authenticator).
#[derive(Clone, Debug)]
pub struct TlsConnInfo {
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// The client's certificate chain, if it sent one.
    pub peer_certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// A server-side TLS connection usable with tonic's `serve_with_incoming`, exposing the
/// client's certificates through [`TlsConnInfo`].
#[derive(Debug)]
pub struct TlsServerStream(pub tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsServerStream {
    type ConnectInfo = TlsConnInfo;

    fn connect_info(&self) -> TlsConnInfo {
        let (tcp, conn) = self.0.get_ref();
        TlsConnInfo {
            remote_addr: tcp.peer_addr().ok(),
            peer_certs: conn
                .peer_certificates()
                .map(|c| Arc::new(c.iter().map(|d| d.clone().into_owned()).collect())),
        }
    }
}

impl AsyncRead for TlsServerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsServerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
