//! A stream connection: plain TCP or TLS, accepted or opened by us, as one type for the read
//! and write tasks.

use std::net::SocketAddr;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A stream connection: plain TCP or TLS (accepted or opened by us).
pub(super) enum Stream {
    Tcp(TcpStream),
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    pub(super) fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Tcp(s) => s.local_addr().ok(),
            Stream::TlsServer(s) => s.get_ref().0.local_addr().ok(),
            Stream::TlsClient(s) => s.get_ref().0.local_addr().ok(),
        }
    }

    /// The certificate chain the peer presented (TLS only).
    pub(super) fn peer_chain(&self) -> Option<Vec<CertificateDer<'static>>> {
        let certs = match self {
            Stream::Tcp(_) => None,
            Stream::TlsServer(s) => s.get_ref().1.peer_certificates(),
            Stream::TlsClient(s) => s.get_ref().1.peer_certificates(),
        }?;
        Some(certs.iter().map(|c| c.clone().into_owned()).collect())
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            Stream::TlsServer(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::TlsClient(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            Stream::TlsServer(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::TlsClient(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_flush(cx),
            Stream::TlsServer(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
            Stream::TlsClient(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            Stream::TlsServer(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::TlsClient(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
