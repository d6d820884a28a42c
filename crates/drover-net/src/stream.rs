//! An accepted connection's byte stream (TCP or TLS) and what is known about its peer.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

/// Who is on the other end of a connection. HTTP handlers find it as a request extension.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The remote address.
    pub addr: SocketAddr,
    /// What the TLS handshake told, on TLS listeners.
    pub tls: Option<Arc<TlsInfo>>,
}

impl Peer {
    /// The client certificate chain (DER, end entity first), if the client sent one.
    pub fn client_certificates(&self) -> Option<&Arc<Vec<Vec<u8>>>> {
        self.tls.as_ref()?.client_certificates.as_ref()
    }
}

/// What a completed TLS handshake told about the client.
#[derive(Clone, Debug, Default)]
pub struct TlsInfo {
    /// The client certificate chain (DER, end entity first); the handshake proved the client
    /// holds the end entity's key, nothing more (trust is the caller's decision).
    pub client_certificates: Option<Arc<Vec<Vec<u8>>>>,
    /// The server name the client asked for (SNI).
    pub server_name: Option<String>,
    /// The protocol agreed by ALPN.
    pub alpn: Option<Vec<u8>>,
}

impl TlsInfo {
    pub(crate) fn of(conn: &rustls::ServerConnection) -> TlsInfo {
        TlsInfo {
            client_certificates: conn
                .peer_certificates()
                .map(|c| Arc::new(c.iter().map(|c| c.to_vec()).collect())),
            server_name: conn.server_name().map(str::to_string),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        }
    }
}

/// The byte stream of an accepted connection. It holds the connection's slot of its listener's
/// cap: the slot is free again when the stream is dropped.
pub struct Stream {
    io: Io,
    _slot: Option<OwnedSemaphorePermit>,
}

enum Io {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.io {
            Io::Tcp(_) => "tcp",
            Io::Tls(_) => "tls",
        };
        f.debug_struct("Stream").field("kind", &kind).finish()
    }
}

impl Stream {
    pub(crate) fn tcp(tcp: TcpStream, slot: Option<OwnedSemaphorePermit>) -> Stream {
        Stream {
            io: Io::Tcp(tcp),
            _slot: slot,
        }
    }

    pub(crate) fn tls(tls: TlsStream<TcpStream>, slot: Option<OwnedSemaphorePermit>) -> Stream {
        Stream {
            io: Io::Tls(Box::new(tls)),
            _slot: slot,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Tcp(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
