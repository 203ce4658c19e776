//! The client connection's byte stream: TCP, a unix socket or TLS, with a small "rewind" prefix holding
//! the bytes read while detecting HTTP/2's preface.
//!
//! scopegate owns this type (instead of hyper-util's private rewind wrapper) so that after a WebSocket
//! upgrade the socket can be taken back out of hyper as a plain `TcpStream` and relayed with no
//! per-connection buffers (see `upstream::websocket`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

pub struct ServerIo {
    prefix: Bytes,
    pub stream: Stream,
}

impl ServerIo {
    pub fn new(stream: Stream, prefix: Bytes) -> ServerIo {
        ServerIo { prefix, stream }
    }

    /// The inner stream, once the rewind prefix has been consumed.
    pub fn into_parts(self) -> (Bytes, Stream) {
        (self.prefix, self.stream)
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        match &mut this.stream {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, data),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, data),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes either diverge from the HTTP/2 preface or match all of it. Returns whether the
/// client speaks HTTP/2 with prior knowledge (h2c), and the bytes read, to be replayed.
pub async fn detect_h2<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<(bool, Bytes)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(H2_PREFACE.len());
    loop {
        let mut chunk = [0u8; 24];
        let want = H2_PREFACE.len() - buf.len();
        let n = r.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a request",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf[..] != H2_PREFACE[..buf.len()] {
            return Ok((false, Bytes::from(buf)));
        }
        if buf.len() == H2_PREFACE.len() {
            return Ok((true, Bytes::from(buf)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn detects_h1_on_first_byte_and_h2_on_full_preface() {
        let mut r: &[u8] = b"GET / HTTP/1.1\r\n";
        let (h2, prefix) = detect_h2(&mut r).await.unwrap();
        assert!(!h2);
        assert_eq!(&prefix[..], b"GET / HTTP/1.1\r\n");
        let mut r: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest";
        let (h2, prefix) = detect_h2(&mut r).await.unwrap();
        assert!(h2);
        assert_eq!(&prefix[..], &H2_PREFACE[..]);
        let mut r: &[u8] = b"PRI * HTTP/1.1";
        assert!(!detect_h2(&mut r).await.unwrap().0);
    }
}
