//! scopegate's own HTTP/1.1 client for the hot path: requests without a body (`GET /v1/models`, `HEAD`,
//! `DELETE`, …) to a plain `http://` upstream, on keep-alive connections that one worker thread owns.
//!
//! Why not hyper's client here: for a bodiless request it runs a connection task per upstream socket
//! and hands each request and response through a channel and a oneshot between two tasks, which cost
//! more instructions than the proxying itself (BENCHMARKS.md, "Where the throughput goes"). Here the
//! request's own task writes the head, reads the response and, through the response body, the rest:
//! no second task, no channel. Requests with a body, upgrades, TLS and HTTP/2 stay on hyper.
//!
//! Rules that keep it correct (and that the tests in `tests/forwarding.rs` and `codec` check):
//! - a connection returns to the pool only when its response was read to the end, its framing allows
//!   reuse, and nothing followed it on the wire; every other outcome closes it;
//! - an idle connection that became readable (the upstream closed it, or sent something unasked) is
//!   never used;
//! - a request is retried once, on a fresh connection, only when it went out on a reused connection
//!   and either could not be written or met a close before any response byte — and, in the second case,
//!   only for an idempotent method (RFC 9110 §9.2.2).

pub mod codec;

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

pub use codec::WireError;
use codec::{BodyDecoder, BodyEvent};

use crate::upstream::injected::Injected;
use crate::upstream::pool::{dial, IdleStack, PoolError};

/// Bytes asked of the socket per read while a response is small; a read that fills it doubles this.
const READ_START: usize = 8 * 1024;
const READ_MAX: usize = 256 * 1024;

/// One upstream connection with its read buffer (bytes read past a response head or body stay here).
struct WireConn {
    io: TcpStream,
    buf: BytesMut,
    head: Vec<u8>,
    /// The response-header deadline, one timer for the connection's life. Moving a registered tokio
    /// timer to a later instant is one atomic operation, where a timer per request is an insert into
    /// and a removal from the timer wheel, each under its lock. While the connection idles in the
    /// pool the timer may still fire once, and wakes the task that last waited on it for nothing.
    deadline: Pin<Box<Sleep>>,
}

/// Idle keep-alive connections to one upstream, and how to open more.
pub struct WirePool {
    target: String,
    connect_timeout: Duration,
    idle: IdleStack<WireConn>,
}

impl WirePool {
    pub fn new(
        target: String,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> WirePool {
        WirePool {
            target,
            connect_timeout,
            idle: IdleStack::new(idle_timeout, max_idle),
        }
    }

    /// The most recently used idle connection that has not expired and has nothing to read. Readiness
    /// is tokio's cached flag: checking it costs no system call unless the socket did become readable.
    fn take_idle(&self) -> Option<WireConn> {
        self.idle.take(|conn| {
            // Closed, reset, or bytes nobody asked for: not a connection to send on.
            let probe = conn.io.try_read(&mut [0u8; 1]);
            matches!(probe, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
    }

    async fn connect(&self, deadline: Instant) -> Result<WireConn, PoolError> {
        let io = match tokio::time::timeout_at(deadline, dial(&self.target, self.connect_timeout))
            .await
        {
            Ok(io) => io?,
            Err(_) => return Err(PoolError::HeaderTimeout),
        };
        Ok(WireConn {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        })
    }

    /// Sends a bodiless request and waits for the response head, all of it by `deadline`
    /// ([`PoolError::HeaderTimeout`] otherwise). The body streams from the connection as the caller
    /// polls it, and hands the connection back to the pool when it ends.
    pub async fn send(
        self: &Arc<Self>,
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        injected: &Injected,
        deadline: Instant,
    ) -> Result<Response<WireBody>, PoolError> {
        let idempotent = matches!(
            *method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        let mut reused = self.take_idle();
        loop {
            let retry_allowed = reused.is_some();
            let mut conn = match reused.take() {
                Some(c) => c,
                None => self.connect(deadline).await?,
            };
            conn.head.clear();
            codec::encode_request_head(&mut conn.head, method, target, headers, injected);
            conn.deadline.as_mut().reset(deadline);
            let WireConn {
                io,
                buf,
                head,
                deadline: timer,
            } = &mut conn;
            let Some(attempt) = before(timer.as_mut(), exchange(io, buf, head, method)).await
            else {
                return Err(PoolError::HeaderTimeout);
            };
            match attempt {
                Ok(head) => {
                    let (parts, ()) = head.response.into_parts();
                    let body = WireBody {
                        failed: None,
                        live: Some(Live {
                            conn,
                            decoder: BodyDecoder::new(head.framing),
                            keep_alive: head.keep_alive,
                            eof: false,
                            read_size: READ_START,
                            pool: self.clone(),
                        }),
                    };
                    let mut resp = Response::from_parts(parts, body);
                    resp.body_mut().finish_if_done();
                    return Ok(resp);
                }
                Err(Exchange::NotWritten(_)) if retry_allowed => continue,
                Err(Exchange::NoResponse) if retry_allowed && idempotent => continue,
                Err(Exchange::NotWritten(e)) => return Err(PoolError::Wire(WireError::Io(e))),
                Err(Exchange::NoResponse) => {
                    return Err(PoolError::Wire(WireError::ClosedBeforeResponse))
                }
                Err(Exchange::Failed(e)) => return Err(PoolError::Wire(e)),
            }
        }
    }
}

/// How one attempt on one connection failed, as far as retrying cares.
enum Exchange {
    /// The request head could not be written.
    NotWritten(std::io::Error),
    /// Written, then the connection closed or reset before any response byte.
    NoResponse,
    Failed(WireError),
}

/// `work`'s output, or `None` if `deadline` passes first.
async fn before<F: Future>(mut deadline: Pin<&mut Sleep>, work: F) -> Option<F::Output> {
    let mut work = pin!(work);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        deadline.as_mut().poll(cx).map(|()| None)
    })
    .await
}

async fn exchange(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    head: &[u8],
    method: &Method,
) -> Result<codec::Head, Exchange> {
    io.write_all(head).await.map_err(Exchange::NotWritten)?;
    let mut seen_any = false;
    loop {
        if !buf.is_empty() {
            seen_any = true;
            if let Some(head) = codec::parse_head(buf, method).map_err(Exchange::Failed)? {
                return Ok(head);
            }
        }
        buf.reserve(READ_START);
        let read =
            std::future::poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf))
                .await;
        match read {
            Ok(0) | Err(_) if !seen_any => return Err(Exchange::NoResponse),
            Ok(0) => return Err(Exchange::Failed(WireError::Truncated)),
            Ok(_) => {}
            Err(e) => return Err(Exchange::Failed(WireError::Io(e))),
        }
    }
}

struct Live {
    conn: WireConn,
    decoder: BodyDecoder,
    keep_alive: bool,
    eof: bool,
    read_size: usize,
    pool: Arc<WirePool>,
}

/// A response body read straight from its upstream connection, with backpressure: the socket is read
/// only when the body is polled. Dropping it before its end closes the connection.
pub struct WireBody {
    live: Option<Live>,
    /// An error held back for one poll (see `fail`).
    failed: Option<WireError>,
}

impl WireBody {
    /// Ends the body with `e`, but one poll later: data returned in the same pass would otherwise be
    /// discarded with the error by hyper's server before it was flushed, and the client would lose the
    /// status and the bytes that did arrive.
    fn fail(
        &mut self,
        e: WireError,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        self.live = None;
        self.failed = Some(e);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Once the body is complete the connection goes back to the pool at once (not when the body is
    /// dropped), if its framing allows reuse and no stray bytes followed.
    fn finish_if_done(&mut self) {
        if self.live.as_ref().is_some_and(|l| l.decoder.is_done()) {
            if let Some(live) = self.live.take() {
                if live.keep_alive && !live.eof && live.conn.buf.is_empty() {
                    live.pool.idle.put(live.conn);
                }
            }
        }
    }
}

impl Body for WireBody {
    type Data = Bytes;
    type Error = WireError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        let this = &mut *self;
        if let Some(e) = this.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            let Some(live) = this.live.as_mut() else {
                return Poll::Ready(None);
            };
            let event = match live.decoder.decode(&mut live.conn.buf, live.eof) {
                Ok(Some(event)) => event,
                Ok(None) => {
                    if live.conn.buf.capacity() - live.conn.buf.len() < live.read_size / 2 {
                        live.conn.buf.reserve(live.read_size);
                    }
                    let spare = live.conn.buf.capacity() - live.conn.buf.len();
                    match tokio_util::io::poll_read_buf(
                        Pin::new(&mut live.conn.io),
                        cx,
                        &mut live.conn.buf,
                    ) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(0)) => live.eof = true,
                        Poll::Ready(Ok(n)) => {
                            if n == spare {
                                live.read_size = (live.read_size * 2).min(READ_MAX);
                            }
                        }
                        Poll::Ready(Err(e)) => return this.fail(WireError::Io(e), cx),
                    }
                    continue;
                }
                Err(e) => return this.fail(e, cx),
            };
            let frame = match event {
                BodyEvent::Data(data) => Frame::data(data),
                BodyEvent::Trailers(trailers) => Frame::trailers(trailers),
                BodyEvent::End => {
                    this.finish_if_done();
                    return Poll::Ready(None);
                }
            };
            this.finish_if_done();
            return Poll::Ready(Some(Ok(frame)));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.live.is_none() && self.failed.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.live.as_ref().map(|l| l.decoder.remaining()) {
            None => SizeHint::with_exact(0),
            Some(Some(n)) => SizeHint::with_exact(n),
            Some(None) => SizeHint::default(),
        }
    }
}
