//! Relaying an upgraded connection (WebSocket) both ways until either side closes.
//!
//! When both sides are plain TCP the sockets are taken back out of hyper and relayed by readiness: a
//! read goes into a stack buffer and straight into the other socket, so an idle WebSocket holds no
//! buffer at all (a 16 KiB heap copy exists only while the other side is not accepting data, which is
//! also what gives backpressure). Other transports (TLS, unix sockets) use a small-buffer copy. There is
//! no total-duration timeout, only an idle one; a half-close on one side is passed on to the other.

use std::io::{self, ErrorKind};
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::server::io::{ServerIo, Stream};

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    Closed,
    Idle,
    Shutdown,
    Error,
}

/// One side of a relay: a raw TCP socket (zero-buffer path) or any byte stream.
enum Side {
    Tcp(TcpStream, Bytes),
    Other(Box<dyn Rw>),
}

trait Rw: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Rw for T {}

/// Takes the raw TCP stream (and any bytes hyper had already read) back out of an upgraded client
/// connection.
fn client_side(up: Upgraded) -> Side {
    match up.downcast::<TokioIo<ServerIo>>() {
        Ok(parts) => {
            let (prefix, stream) = parts.io.into_inner().into_parts();
            match stream {
                Stream::Tcp(tcp) if prefix.is_empty() => Side::Tcp(tcp, parts.read_buf),
                other => {
                    let mut early = prefix.to_vec();
                    early.extend_from_slice(&parts.read_buf);
                    Side::Other(Box::new(ServerIo::new(other, Bytes::from(early))))
                }
            }
        }
        Err(up) => Side::Other(Box::new(TokioIo::new(up))),
    }
}

/// The same for the upstream side: a connection of the plain-HTTP pool (`upstream::pool`) or of the
/// general client (TLS or HTTP/2 upstreams).
fn upstream_side(up: Upgraded) -> Side {
    type Io = hyper_rustls::MaybeHttpsStream<TokioIo<TcpStream>>;
    let up = match up.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => return Side::Tcp(parts.io.into_inner(), parts.read_buf),
        Err(up) => up,
    };
    match up.downcast::<Io>() {
        Ok(parts) => match parts.io {
            hyper_rustls::MaybeHttpsStream::Http(tcp) => {
                Side::Tcp(tcp.into_inner(), parts.read_buf)
            }
            other => Side::Other(Box::new(Prefixed {
                early: parts.read_buf,
                io: TokioIo::new(other),
            })),
        },
        Err(up) => Side::Other(Box::new(TokioIo::new(up))),
    }
}

impl Side {
    fn into_rw(self) -> Box<dyn Rw> {
        match self {
            Side::Tcp(tcp, early) => Box::new(Prefixed { early, io: tcp }),
            Side::Other(rw) => rw,
        }
    }
}

/// A stream that first yields bytes read ahead of it.
struct Prefixed<T> {
    early: Bytes,
    io: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if !self.early.is_empty() {
            let n = self.early.len().min(buf.remaining());
            buf.put_slice(&self.early[..n]);
            bytes::Buf::advance(&mut self.early, n);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Relays until both directions are done, the idle limit passes, or `stop` fires.
pub async fn relay(
    client: Upgraded,
    upstream: Upgraded,
    idle: Duration,
    stop: CancellationToken,
) -> RelayEnd {
    let _gauge = crate::metrics::GaugeGuard::websocket();
    match (client_side(client), upstream_side(upstream)) {
        (Side::Tcp(c, c_buf), Side::Tcp(u, u_buf)) => {
            count_relay("tcp");
            relay_tcp(c, c_buf, u, u_buf, idle, stop).await
        }
        (c, u) => {
            count_relay("stream");
            relay_generic(c.into_rw(), u.into_rw(), idle, stop).await
        }
    }
}

fn count_relay(transport: &'static str) {
    crate::metrics::get()
        .websocket_relays
        .get_or_create(&crate::metrics::TransportLabels { transport })
        .inc();
}

/// A small-buffer copy both ways, for transports that cannot be taken apart.
pub async fn relay_generic<A, B>(
    mut a: A,
    mut b: B,
    idle: Duration,
    stop: CancellationToken,
) -> RelayEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = ActivityIo::new();
    let mut a = activity.wrap(&mut a);
    let mut b = activity.wrap(&mut b);
    let copy = tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, 4096, 4096);
    tokio::pin!(copy);
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            r = &mut copy => return if r.is_ok() { RelayEnd::Closed } else { RelayEnd::Error },
            _ = stop.cancelled() => return RelayEnd::Shutdown,
            _ = &mut sleep => {
                let last = activity.last();
                if last.elapsed() >= idle {
                    return RelayEnd::Idle;
                }
                sleep.as_mut().reset(last + idle);
            }
        }
    }
}

/// Records the time of the last byte moved, shared by both directions.
struct ActivityIo {
    base: Instant,
    /// Nanoseconds after `base` (an atomic so the relay future stays `Send`).
    last_ns: std::sync::atomic::AtomicU64,
}

impl ActivityIo {
    fn new() -> ActivityIo {
        ActivityIo {
            base: Instant::now(),
            last_ns: std::sync::atomic::AtomicU64::new(0),
        }
    }
    fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.last_ns.load(std::sync::atomic::Ordering::Relaxed))
    }
    fn touch(&self) {
        let ns = self.base.elapsed().as_nanos() as u64;
        self.last_ns.store(ns, std::sync::atomic::Ordering::Relaxed);
    }
    fn wrap<'a, T>(&'a self, inner: &'a mut T) -> Tracked<'a, T> {
        Tracked {
            inner,
            activity: self,
        }
    }
}

struct Tracked<'a, T> {
    inner: &'a mut T,
    activity: &'a ActivityIo,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<'_, T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<'_, T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut *self.inner).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// One direction of the readiness relay.
#[derive(Default)]
struct Direction {
    /// Bytes read but not yet accepted by the destination.
    pending: Option<(Vec<u8>, usize)>,
    done: bool,
}

const CHUNK: usize = 16 * 1024;

/// Reads what is available from `src` and writes it to `dst` without waiting. Returns whether bytes
/// moved.
fn pump(src: &TcpStream, dst: &TcpStream, dir: &mut Direction) -> io::Result<bool> {
    let mut moved = false;
    let mut buf = [0u8; CHUNK];
    // A bounded number of rounds keeps one busy direction from starving the other.
    for _ in 0..8 {
        match src.try_read(&mut buf) {
            Ok(0) => {
                dir.done = true;
                let _ = socket2::SockRef::from(dst).shutdown(std::net::Shutdown::Write);
                return Ok(moved);
            }
            Ok(n) => {
                moved = true;
                let mut off = 0;
                while off < n {
                    match dst.try_write(&buf[off..n]) {
                        Ok(w) => off += w,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            dir.pending = Some((buf[off..n].to_vec(), 0));
                            return Ok(true);
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(moved),
            Err(e) => return Err(e),
        }
    }
    Ok(moved)
}

/// Writes out a direction's pending bytes as far as the destination accepts them.
fn flush(dst: &TcpStream, dir: &mut Direction) -> io::Result<()> {
    if let Some((data, off)) = dir.pending.as_mut() {
        while *off < data.len() {
            match dst.try_write(&data[*off..]) {
                Ok(w) => *off += w,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        dir.pending = None;
    }
    Ok(())
}

async fn relay_tcp(
    client: TcpStream,
    client_early: Bytes,
    upstream: TcpStream,
    upstream_early: Bytes,
    idle: Duration,
    stop: CancellationToken,
) -> RelayEnd {
    let mut client = client;
    let mut upstream = upstream;
    // Bytes either side sent right behind the handshake, already read by hyper.
    if !client_early.is_empty() && upstream.write_all(&client_early).await.is_err() {
        return RelayEnd::Error;
    }
    if !upstream_early.is_empty() && client.write_all(&upstream_early).await.is_err() {
        return RelayEnd::Error;
    }
    // Even when empty, these share hyper's read buffers (kilobytes each); holding them for the life of
    // an idle socket would cost more than the socket itself.
    drop(client_early);
    drop(upstream_early);
    let (c, u) = (&client, &upstream);
    let mut up = Direction::default();
    let mut down = Direction::default();
    let mut last = Instant::now();
    let sleep = tokio::time::sleep(idle);
    tokio::pin!(sleep);
    loop {
        if up.done && down.done && up.pending.is_none() && down.pending.is_none() {
            return RelayEnd::Closed;
        }
        let step: io::Result<bool> = tokio::select! {
            r = c.readable(), if up.pending.is_none() && !up.done => match r {
                Ok(()) => pump(c, u, &mut up),
                Err(e) => Err(e),
            },
            r = u.writable(), if up.pending.is_some() => match r {
                Ok(()) => flush(u, &mut up).map(|_| true),
                Err(e) => Err(e),
            },
            r = u.readable(), if down.pending.is_none() && !down.done => match r {
                Ok(()) => pump(u, c, &mut down),
                Err(e) => Err(e),
            },
            r = c.writable(), if down.pending.is_some() => match r {
                Ok(()) => flush(c, &mut down).map(|_| true),
                Err(e) => Err(e),
            },
            _ = &mut sleep => {
                if last.elapsed() >= idle {
                    return RelayEnd::Idle;
                }
                sleep.as_mut().reset(last + idle);
                Ok(false)
            }
            _ = stop.cancelled() => return RelayEnd::Shutdown,
        };
        match step {
            Ok(true) => last = Instant::now(),
            Ok(false) => {}
            Err(_) => return RelayEnd::Error,
        }
    }
}
