//! Relaying an upgraded connection (WebSocket) both ways until either side closes.
//!
//! When both sides are plain TCP the sockets are taken back out of hyper and relayed by readiness: a
//! read goes into a stack buffer and straight into the other socket, so an idle WebSocket holds no
//! buffer at all (a 16 KiB heap copy exists only while the other side is not accepting data, which is
//! also what gives backpressure). Other transports (TLS, unix sockets) use a small-buffer copy. There is
//! no total-duration timeout, only an idle one; a half-close on one side is passed on to the other.
//!
//! A relay also ends when its session is revoked (`crate::sessions`): the client is sent a close frame
//! with 1008 (policy violation) and the reason, and both sockets are closed. The relay moves bytes, not
//! frames, so it follows the frame headers of what it wrote to the client (`frames`) and writes the
//! close frame only at a boundary — if a frame is in flight, the connection is closed without one. Both
//! paths do this: the TCP one over what it read, once it has written out what it still held; the
//! small-buffer one (TLS, unix sockets) over what the client's stream accepted.

mod frames;

use std::io::{self, ErrorKind};
use std::time::Duration;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::sessions::{Revocation, Revoked};
use crate::stream::{ServerIo, Stream};

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayEnd {
    Closed,
    Idle,
    Shutdown,
    Error,
    /// The session's credential ended; the client was sent a 1008 close frame.
    Revoked(&'static str),
}

/// A server-to-client WebSocket close frame (RFC 6455 §5.5.1: unmasked, at most 125 bytes of payload).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut f = Vec::with_capacity(4 + reason.len());
    f.push(0x88);
    f.push((2 + reason.len()) as u8);
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(reason);
    f
}

/// The close code for a revoked session: 1008, policy violation.
pub const POLICY_VIOLATION: u16 = 1008;

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

/// Relays until both directions are done, the idle limit passes, `stop` fires or `revoked` says the
/// session's credential ended.
pub async fn relay(
    client: Upgraded,
    upstream: Upgraded,
    idle: Duration,
    stop: CancellationToken,
    revoked: Option<Revoked>,
) -> RelayEnd {
    let _gauge = crate::metrics::GaugeGuard::websocket();
    match (client_side(client), upstream_side(upstream)) {
        (Side::Tcp(c, c_buf), Side::Tcp(u, u_buf)) => {
            count_relay("tcp");
            relay_tcp(c, c_buf, u, u_buf, idle, stop, revoked).await
        }
        (c, u) => {
            count_relay("stream");
            relay_generic(c.into_rw(), u.into_rw(), idle, stop, revoked).await
        }
    }
}

/// Waits for a revocation; forever when there is none to wait for (or its sender went away).
async fn revocation(revoked: &mut Option<Revoked>) -> Revocation {
    match revoked {
        Some(rx) => match rx.await {
            Ok(r) => r,
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
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
    mut revoked: Option<Revoked>,
) -> RelayEnd
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = ActivityIo::new();
    let (end, at_boundary) = {
        let mut ta = activity.wrap(&mut a);
        // What reaches the client is followed frame by frame when a revocation may need a close frame.
        ta.frames = revoked.is_some().then(frames::FrameCursor::default);
        let mut tb = activity.wrap(&mut b);
        // Boxed so that it can be dropped (and `ta` read) once the loop is over.
        let mut copy = Box::pin(tokio::io::copy_bidirectional_with_sizes(
            &mut ta, &mut tb, 4096, 4096,
        ));
        let sleep = tokio::time::sleep(idle);
        tokio::pin!(sleep);
        let end = loop {
            tokio::select! {
                r = &mut copy => break if r.is_ok() { Ok(RelayEnd::Closed) } else { Ok(RelayEnd::Error) },
                _ = stop.cancelled() => break Ok(RelayEnd::Shutdown),
                why = revocation(&mut revoked) => break Err(why),
                _ = &mut sleep => {
                    let last = activity.last();
                    if last.elapsed() >= idle {
                        break Ok(RelayEnd::Idle);
                    }
                    sleep.as_mut().reset(last + idle);
                }
            }
        };
        drop(copy);
        (end, ta.frames.as_ref().is_none_or(|f| f.at_boundary()))
    };
    match end {
        Ok(end) => end,
        Err(why) => {
            // Between two of the server's frames only: inside one, the close frame would corrupt it.
            if at_boundary {
                let _ = a
                    .write_all(&close_frame(POLICY_VIOLATION, &why.reason))
                    .await;
            }
            let _ = a.shutdown().await;
            let _ = b.shutdown().await;
            RelayEnd::Revoked(why.code)
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
            frames: None,
        }
    }
}

struct Tracked<'a, T> {
    inner: &'a mut T,
    activity: &'a ActivityIo,
    /// Frame boundaries of what was written to `inner`, when they are followed.
    frames: Option<frames::FrameCursor>,
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
        let r = std::pin::Pin::new(&mut *self.inner).poll_write(cx, data);
        if let (std::task::Poll::Ready(Ok(n)), Some(f)) = (&r, self.frames.as_mut()) {
            f.advance(&data[..*n]);
        }
        r
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
    /// Frame boundaries of what was read (the server-to-client direction of a revocable session).
    frames: Option<frames::FrameCursor>,
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
                if let Some(f) = dir.frames.as_mut() {
                    f.advance(&buf[..n]);
                }
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
    revoked: Option<Revoked>,
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
    let down_frames = revoked.is_some().then(|| {
        let mut f = frames::FrameCursor::default();
        f.advance(&upstream_early);
        f
    });
    // Even when empty, these share hyper's read buffers (kilobytes each); holding them for the life of
    // an idle socket would cost more than the socket itself.
    drop(client_early);
    drop(upstream_early);
    let mut relay = TcpRelay {
        client,
        upstream,
        up: Direction::default(),
        down: Direction {
            frames: down_frames,
            ..Direction::default()
        },
        idle,
        last: Instant::now(),
        revoked,
        why: None,
    };
    let sleep = tokio::time::sleep(idle);
    let cancelled = stop.cancelled();
    tokio::pin!(sleep, cancelled);
    let end = std::future::poll_fn(|cx| relay.poll(cx, sleep.as_mut(), cancelled.as_mut())).await;
    if let RelayEnd::Revoked(_) = end {
        relay.close_revoked().await;
    }
    end
}

/// The state of a readiness relay between two TCP sockets.
///
/// It waits through each socket's own read and write readiness slots (`poll_read_ready`,
/// `poll_write_ready`): the client's read slot serves the upward direction and its write slot the
/// downward one, and the reverse for the upstream, so one task can wait on all four without the
/// waiter list (a lock and a node per wait) that `readable()`/`writable()` futures use.
struct TcpRelay {
    client: TcpStream,
    upstream: TcpStream,
    /// Client to upstream.
    up: Direction,
    /// Upstream to client.
    down: Direction,
    idle: Duration,
    last: Instant,
    /// The session's revocation signal, if it can be revoked.
    revoked: Option<Revoked>,
    /// Why it was revoked, once it was.
    why: Option<Revocation>,
}

/// Rounds of progress before the relay yields to other tasks on its worker.
const ROUNDS_PER_POLL: usize = 16;

impl TcpRelay {
    fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
        mut sleep: std::pin::Pin<&mut tokio::time::Sleep>,
        cancelled: std::pin::Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
    ) -> std::task::Poll<RelayEnd> {
        use std::future::Future;
        use std::task::Poll;
        if cancelled.poll(cx).is_ready() {
            return Poll::Ready(RelayEnd::Shutdown);
        }
        if let Some(rx) = self.revoked.as_mut() {
            match std::pin::Pin::new(&mut *rx).poll(cx) {
                Poll::Ready(Ok(why)) => {
                    let code = why.code;
                    self.revoked = None;
                    self.why = Some(why);
                    return Poll::Ready(RelayEnd::Revoked(code));
                }
                // The registry let go of the sender: nothing can revoke this session any more.
                Poll::Ready(Err(_)) => self.revoked = None,
                Poll::Pending => {}
            }
        }
        for _ in 0..ROUNDS_PER_POLL {
            if self.up.finished() && self.down.finished() {
                return Poll::Ready(RelayEnd::Closed);
            }
            let up = step(cx, &self.client, &self.upstream, &mut self.up);
            let down = step(cx, &self.upstream, &self.client, &mut self.down);
            match (up, down) {
                (Err(_), _) | (_, Err(_)) => return Poll::Ready(RelayEnd::Error),
                (Ok(false), Ok(false)) => {
                    // Both directions wait on readiness; the idle timer decides how long.
                    loop {
                        if sleep.as_mut().poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        if self.last.elapsed() >= self.idle {
                            return Poll::Ready(RelayEnd::Idle);
                        }
                        sleep.as_mut().reset(self.last + self.idle);
                    }
                }
                _ => self.last = Instant::now(),
            }
        }
        // Still busy: let the worker's other tasks run, then carry on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl TcpRelay {
    /// Tells the client why with a 1008 close frame, after any bytes still owed to it, and closes both.
    async fn close_revoked(&mut self) {
        let reason = self.why.take().map(|w| w.reason).unwrap_or_default();
        if let Some((data, off)) = self.down.pending.take() {
            let _ = self.client.write_all(&data[off..]).await;
        }
        // Between two of the server's frames only: inside one, the close frame would corrupt it.
        if self.down.frames.as_ref().is_none_or(|f| f.at_boundary()) {
            let _ = self
                .client
                .write_all(&close_frame(POLICY_VIOLATION, &reason))
                .await;
        }
        let _ = self.client.shutdown().await;
        let _ = self.upstream.shutdown().await;
    }
}

impl Direction {
    fn finished(&self) -> bool {
        self.done && self.pending.is_none()
    }
}

/// Moves one direction forward if its socket is ready. Returns whether it made progress; when it did
/// not, the readiness slot it waits on holds the task's waker (a `try_` call that would block clears
/// the readiness, so polling again either registers the waker or finds new readiness).
fn step(
    cx: &mut std::task::Context<'_>,
    src: &TcpStream,
    dst: &TcpStream,
    dir: &mut Direction,
) -> io::Result<bool> {
    use std::task::Poll;
    loop {
        if let Some((_, off)) = &dir.pending {
            let before = *off;
            match dst.poll_write_ready(cx) {
                Poll::Ready(Ok(())) => {
                    flush(dst, dir)?;
                    if dir.pending.as_ref().is_none_or(|(_, off)| *off != before) {
                        return Ok(true);
                    }
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(false),
            }
        } else if dir.done {
            return Ok(false);
        } else {
            match src.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {
                    if pump(src, dst, dir)? || dir.done {
                        return Ok(true);
                    }
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(false),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A connected pair of real loopback sockets: (the test's end, the relay's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (outer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (outer.unwrap(), accepted.unwrap().0)
    }

    struct Harness {
        revoke: Option<tokio::sync::oneshot::Sender<Revocation>>,
        client: TcpStream,
        upstream: TcpStream,
        stop: CancellationToken,
        relay: tokio::task::JoinHandle<RelayEnd>,
    }

    async fn start(client_early: &'static [u8], idle: Duration) -> Harness {
        let (client, c_inner) = pair().await;
        let (upstream, u_inner) = pair().await;
        let stop = CancellationToken::new();
        let (revoke_tx, revoke_rx) = tokio::sync::oneshot::channel();
        let relay = tokio::spawn(relay_tcp(
            c_inner,
            Bytes::from_static(client_early),
            u_inner,
            Bytes::new(),
            idle,
            stop.clone(),
            Some(revoke_rx),
        ));
        Harness {
            revoke: Some(revoke_tx),
            client,
            upstream,
            stop,
            relay,
        }
    }

    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .unwrap_or_else(|_| panic!("timed out: {what}"))
    }

    /// How the relay task ended (bounded like every other wait).
    async fn end(relay: tokio::task::JoinHandle<RelayEnd>) -> RelayEnd {
        within("relay end", relay).await.expect("relay task")
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[tokio::test]
    async fn early_bytes_come_first_then_both_directions_flow() {
        let mut h = start(b"early:", Duration::from_secs(30)).await;
        h.client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 10];
        within("upstream read", h.upstream.read_exact(&mut got))
            .await
            .unwrap();
        assert_eq!(&got, b"early:ping");
        h.upstream.write_all(b"pong").await.unwrap();
        let mut back = [0u8; 4];
        within("client read", h.client.read_exact(&mut back))
            .await
            .unwrap();
        assert_eq!(&back, b"pong");
        drop(h.client);
        drop(h.upstream);
        assert_eq!(end(h.relay).await, RelayEnd::Closed);
    }

    /// Reads in small bites, yielding between them, so that a fast writer outruns it.
    async fn slow_read_to_end(mut r: tokio::net::tcp::OwnedReadHalf) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await.unwrap() {
                0 => return all,
                n => all.extend_from_slice(&buf[..n]),
            }
            tokio::task::yield_now().await;
        }
    }

    /// 8 MiB each way to readers slower than the writers: the relay has to park data it could not
    /// write (the pending path) and resume on write readiness, without losing or reordering a byte.
    #[tokio::test]
    async fn bulk_transfer_both_ways_to_slow_readers_keeps_every_byte() {
        const LEN: usize = 8 << 20;
        let h = start(b"", Duration::from_secs(30)).await;
        let (c_read, mut c_write) = h.client.into_split();
        let (u_read, mut u_write) = h.upstream.into_split();
        let up_data = pattern(LEN, 7);
        let down_data = pattern(LEN, 99);
        let (up_copy, down_copy) = (up_data.clone(), down_data.clone());
        let send_up = tokio::spawn(async move {
            c_write.write_all(&up_copy).await.unwrap();
            c_write.shutdown().await.unwrap();
        });
        let send_down = tokio::spawn(async move {
            u_write.write_all(&down_copy).await.unwrap();
            u_write.shutdown().await.unwrap();
        });
        // Readers much slower than writers: socket buffers fill up on both sides of the relay.
        let recv_up = tokio::spawn(slow_read_to_end(u_read));
        let recv_down = tokio::spawn(slow_read_to_end(c_read));
        within("senders", async {
            send_up.await.unwrap();
            send_down.await.unwrap();
        })
        .await;
        let (got_up, got_down) = within("receivers", async {
            (recv_up.await.unwrap(), recv_down.await.unwrap())
        })
        .await;
        assert!(got_up == up_data, "upward stream differs");
        assert!(got_down == down_data, "downward stream differs");
        assert_eq!(end(h.relay).await, RelayEnd::Closed);
    }

    /// A half-close travels: the client stops sending, the upstream sees end-of-stream and can still
    /// answer.
    #[tokio::test]
    async fn half_close_is_passed_on_and_the_other_direction_keeps_going() {
        let mut h = start(b"", Duration::from_secs(30)).await;
        h.client.write_all(b"last words").await.unwrap();
        h.client.shutdown().await.unwrap();
        let mut got = Vec::new();
        within("upstream sees EOF", h.upstream.read_to_end(&mut got))
            .await
            .unwrap();
        assert_eq!(got, b"last words");
        h.upstream.write_all(b"reply after EOF").await.unwrap();
        h.upstream.shutdown().await.unwrap();
        let mut back = Vec::new();
        within("client reads the reply", h.client.read_to_end(&mut back))
            .await
            .unwrap();
        assert_eq!(back, b"reply after EOF");
        assert_eq!(end(h.relay).await, RelayEnd::Closed);
    }

    #[tokio::test]
    async fn an_idle_relay_ends_and_traffic_postpones_the_end() {
        let mut h = start(b"", Duration::from_secs(1)).await;
        // Traffic every 200 ms for 2 s keeps it open for twice its idle limit...
        for i in 0..10u8 {
            h.client.write_all(&[i]).await.unwrap();
            let mut b = [0u8; 1];
            within("echo", h.upstream.read_exact(&mut b)).await.unwrap();
            assert_eq!(b[0], i);
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(!h.relay.is_finished(), "ended while traffic flowed");
        }
        // ...and silence ends it.
        assert_eq!(end(h.relay).await, RelayEnd::Idle);
        let mut rest = Vec::new();
        let _ = within("client closed", h.client.read_to_end(&mut rest)).await;
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_revoked_relay_sends_the_client_a_1008_close_frame_with_the_reason() {
        let mut h = start(b"", Duration::from_secs(30)).await;
        // Traffic first: the close frame comes after every byte already relayed.
        h.upstream
            .write_all(&[0x81, 0x02, b'h', b'i'])
            .await
            .unwrap();
        let mut first = [0u8; 4];
        within("frame", h.client.read_exact(&mut first))
            .await
            .unwrap();
        h.revoke
            .take()
            .unwrap()
            .send(Revocation {
                code: "credential_expired",
                reason: "the JWT expired".into(),
            })
            .unwrap();
        assert_eq!(end(h.relay).await, RelayEnd::Revoked("credential_expired"));
        let mut rest = Vec::new();
        within("client closed", h.client.read_to_end(&mut rest))
            .await
            .unwrap();
        assert_eq!(rest, close_frame(1008, "the JWT expired"));
        assert_eq!(&rest[..4], &[0x88, 17, 0x03, 0xf0]);
        let mut up = Vec::new();
        within("upstream closed", h.upstream.read_to_end(&mut up))
            .await
            .unwrap();
        assert!(up.is_empty());
    }

    /// The small-buffer path (TLS, unix sockets) over in-memory streams: the server writes
    /// `server_bytes`, the client reads them, the session is revoked; returns what the client reads
    /// after that, up to the close.
    async fn generic_relay_revoked_after(server_bytes: &'static [u8]) -> Vec<u8> {
        let (mut client, c_inner) = tokio::io::duplex(64 * 1024);
        let (mut upstream, u_inner) = tokio::io::duplex(64 * 1024);
        let (revoke, revoked) = tokio::sync::oneshot::channel();
        let relay = tokio::spawn(relay_generic(
            c_inner,
            u_inner,
            Duration::from_secs(30),
            CancellationToken::new(),
            Some(revoked),
        ));
        upstream.write_all(server_bytes).await.unwrap();
        let mut seen = vec![0u8; server_bytes.len()];
        within("relayed bytes", client.read_exact(&mut seen))
            .await
            .unwrap();
        assert_eq!(seen, server_bytes);
        revoke
            .send(Revocation {
                code: "credential_expired",
                reason: "the JWT expired".into(),
            })
            .unwrap();
        assert_eq!(end(relay).await, RelayEnd::Revoked("credential_expired"));
        let mut rest = Vec::new();
        within("client closed", client.read_to_end(&mut rest))
            .await
            .unwrap();
        rest
    }

    #[tokio::test]
    async fn the_small_buffer_relay_ends_a_revoked_session_with_a_close_frame_between_frames() {
        let rest = generic_relay_revoked_after(&[0x82, 2, b'h', b'i']).await;
        assert_eq!(rest, close_frame(POLICY_VIOLATION, "the JWT expired"));
    }

    #[tokio::test]
    async fn the_small_buffer_relay_writes_no_close_frame_inside_a_server_frame() {
        let rest = generic_relay_revoked_after(&[0x82, 10, 1, 2]).await;
        assert!(
            rest.is_empty(),
            "nothing written inside the frame: {rest:?}"
        );
    }

    #[tokio::test]
    async fn a_session_revoked_inside_a_server_frame_is_closed_without_a_corrupting_close_frame() {
        let mut h = start(b"", Duration::from_secs(30)).await;
        // The first 4 bytes of a frame announcing 10 payload bytes.
        h.upstream.write_all(&[0x82, 10, 1, 2]).await.unwrap();
        let mut first = [0u8; 4];
        within("partial frame", h.client.read_exact(&mut first))
            .await
            .unwrap();
        h.revoke
            .take()
            .unwrap()
            .send(Revocation {
                code: "credential_expired",
                reason: "the JWT expired".into(),
            })
            .unwrap();
        assert_eq!(end(h.relay).await, RelayEnd::Revoked("credential_expired"));
        let mut rest = Vec::new();
        within("client closed", h.client.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(
            rest.is_empty(),
            "nothing written inside the frame: {rest:?}"
        );
    }

    #[test]
    fn close_frames_fit_a_control_frame() {
        let long = "é".repeat(100);
        let f = close_frame(1008, &long);
        assert!(f.len() - 2 <= 125);
        assert!(
            std::str::from_utf8(&f[4..]).is_ok(),
            "cut on a char boundary"
        );
    }

    #[tokio::test]
    async fn shutdown_ends_a_quiet_relay() {
        let h = start(b"", Duration::from_secs(30)).await;
        h.stop.cancel();
        assert_eq!(end(h.relay).await, RelayEnd::Shutdown);
    }
}
