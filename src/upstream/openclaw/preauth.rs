//! A read budget for the unauthenticated phase of an in-band WebSocket.
//!
//! Until the `connect` frame has been verified, a client is anonymous; the WebSocket codec would
//! otherwise buffer up to its maximum message size (tens of MiB) from anyone who opens a socket. The
//! budget caps what an anonymous client can make scopegate read — the connect frame (≤ 64 KiB) plus
//! framing and a few control frames — and is lifted once the credential is accepted, so
//! authenticated traffic keeps the normal limits.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What an anonymous client may send before its `connect` frame is accepted.
pub const PRE_AUTH_BUDGET: usize = 80 * 1024;

/// An I/O stream whose reads fail once `budget` bytes have been read, until [`lift`](Self::lift).
pub struct Budgeted<T> {
    inner: T,
    remaining: Option<usize>,
}

impl<T> Budgeted<T> {
    pub fn new(inner: T, budget: usize) -> Budgeted<T> {
        Budgeted {
            inner,
            remaining: Some(budget),
        }
    }

    pub fn unlimited(inner: T) -> Budgeted<T> {
        Budgeted {
            inner,
            remaining: None,
        }
    }

    /// Removes the budget: the peer has authenticated.
    pub fn lift(&mut self) {
        self.remaining = None;
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Budgeted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(remaining) = this.remaining else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if remaining == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the client sent more than the pre-authentication budget",
            )));
        }
        if buf.remaining() <= remaining {
            let before = buf.filled().len();
            let res = Pin::new(&mut this.inner).poll_read(cx, buf);
            this.remaining = Some(remaining - (buf.filled().len() - before));
            return res;
        }
        // The caller offered more room than the budget: read into a budget-sized scratch buffer so
        // the count stays exact (this only happens before authentication, on small reads).
        let mut scratch = vec![0u8; remaining];
        let mut small = ReadBuf::new(&mut scratch);
        let res = Pin::new(&mut this.inner).poll_read(cx, &mut small);
        let n = small.filled().len();
        buf.put_slice(small.filled());
        this.remaining = Some(remaining - n);
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Budgeted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
