//! Listeners and connections: accept (bounded by `max_connections`), optional TLS, HTTP/1.1 or HTTP/2
//! (ALPN, or prior knowledge on cleartext), and a two-phase graceful shutdown per connection.
//!
//! Each worker thread has its own TCP listener on the same port (`SO_REUSEPORT`), so the kernel spreads
//! connections across event loops the way nginx's `reuseport` does; a unix socket is shared.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ListenAddr, ServerConfig};
use crate::identity::Peer;
use crate::proxy::{ConnInfo, Worker};
use crate::stream::{detect_h2, ServerIo, Stream};

/// A bound listener not yet attached to a runtime (std types, so they can move to worker threads).
pub enum BoundListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// Binds one listener per worker: `SO_REUSEPORT` TCP sockets on one port, or one shared unix socket.
pub fn bind(
    addr: &ListenAddr,
    workers: usize,
    unix_mode: Option<u32>,
) -> io::Result<(Vec<BoundListener>, Option<SocketAddr>)> {
    match addr {
        ListenAddr::Tcp(sa) => {
            let mut out = Vec::with_capacity(workers);
            let mut port = sa.port();
            let mut local = None;
            for _ in 0..workers {
                let target = SocketAddr::new(sa.ip(), port);
                let socket = socket2::Socket::new(
                    socket2::Domain::for_address(target),
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                socket.set_reuse_address(true)?;
                socket.set_reuse_port(true)?;
                socket.set_nonblocking(true)?;
                socket.bind(&target.into())?;
                socket.listen(1024)?;
                let l: std::net::TcpListener = socket.into();
                let bound = l.local_addr()?;
                port = bound.port();
                local = Some(bound);
                out.push(BoundListener::Tcp(l));
            }
            Ok((out, local))
        }
        ListenAddr::Unix(path) => {
            remove_stale_socket(path)?;
            let l = std::os::unix::net::UnixListener::bind(path)?;
            l.set_nonblocking(true)?;
            if let Some(mode) = unix_mode {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            let mut out = Vec::with_capacity(workers);
            for _ in 1..workers {
                out.push(BoundListener::Unix(l.try_clone()?));
            }
            out.push(BoundListener::Unix(l));
            Ok((out, None))
        }
    }
}

/// A socket file left by a crashed process is removed; a live one (something answers) is an error.
fn remove_stale_socket(path: &PathBuf) -> io::Result<()> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by another process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    Ok(())
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn attach(b: BoundListener) -> io::Result<Listener> {
        Ok(match b {
            BoundListener::Tcp(l) => Listener::Tcp(TcpListener::from_std(l)?),
            BoundListener::Unix(l) => Listener::Unix(UnixListener::from_std(l)?),
        })
    }

    async fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp(l) => {
                let (s, addr) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), Peer::Tcp(addr.ip())))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), Peer::Unix))
            }
        }
    }
}

/// Runs one worker's accept loop until draining starts, then waits for its connections to finish.
pub async fn run_worker(proxy: Arc<Worker>, bound: BoundListener, limit: Arc<Semaphore>) {
    let shared = proxy.shared.clone();
    let listener = match Listener::attach(bound) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "cannot attach listener");
            return;
        }
    };
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shared.draining.cancelled() => break,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shared.draining.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(serve_connection(proxy.clone(), stream, peer, permit));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning; the process keeps serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    connections.close();
    tokio::select! {
        _ = async { connections.wait().await; shared.tracker.wait().await } => {}
        _ = shared.stop.cancelled() => {}
    }
}

async fn serve_connection(
    proxy: Arc<Worker>,
    stream: Stream,
    peer: Peer,
    _permit: OwnedSemaphorePermit,
) {
    let _gauge = crate::metrics::GaugeGuard::connection();
    let snap = proxy.shared.snapshot.load_full();
    let server = snap.config.server.clone();
    let tls = snap.tls.clone();
    drop(snap);
    let handshake = async {
        match (stream, tls) {
            (Stream::Tcp(tcp), Some(acceptor)) => {
                let tls = acceptor.accept(tcp).await?;
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                Ok::<_, io::Error>((
                    ServerIo::new(Stream::Tls(Box::new(tls)), bytes::Bytes::new()),
                    h2,
                    true,
                ))
            }
            (mut s, _) => {
                let (h2, prefix) = match &mut s {
                    Stream::Tcp(t) => detect_h2(t).await?,
                    Stream::Unix(u) => detect_h2(u).await?,
                    Stream::Tls(t) => detect_h2(t.as_mut()).await?,
                };
                Ok((ServerIo::new(s, prefix), h2, false))
            }
        }
    };
    // The TLS handshake and the first bytes count against the header-read timeout (slowloris).
    let (io, h2, tls) = match tokio::time::timeout(server.header_read_timeout, handshake).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "connection closed before a request");
            return;
        }
        Err(_) => {
            tracing::debug!("connection sent nothing within the header read timeout");
            return;
        }
    };
    let conn_info = Arc::new(ConnInfo::new(peer, tls));
    let service = TowerToHyperService::new(crate::proxy::stack(proxy.clone(), conn_info));
    let draining = proxy.shared.draining.clone();
    let io = TokioIo::new(io);
    if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .max_concurrent_streams(server.h2_max_concurrent_streams)
            .max_header_list_size(hyper_header_limit(&server) as u32)
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(20));
        let conn = b.serve_connection(io, service);
        serve_until_drained(conn, |c| c.graceful_shutdown(), draining, "h2").await;
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout)
            .keep_alive(true)
            .max_headers(server.max_headers * 2)
            .max_header_size(hyper_header_limit(&server))
            .max_buf_size(hyper_header_limit(&server).max(8192) + 8192);
        let conn = b.serve_connection(io, service).with_upgrades();
        serve_until_drained(conn, |c| c.graceful_shutdown(), draining, "h1").await;
    }
}

/// Serves one connection until it ends; when draining begins, asks it to finish gracefully with
/// `begin_drain` (HTTP/1.1 closes after the current response, HTTP/2 sends GOAWAY) and waits for
/// that. One function for both protocols (hyper's two connection types share no trait for it).
async fn serve_until_drained<C, F>(
    conn: C,
    begin_drain: F,
    draining: CancellationToken,
    protocol: &'static str,
) where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
    F: FnOnce(std::pin::Pin<&mut C>),
{
    tokio::pin!(conn);
    let r = tokio::select! {
        r = conn.as_mut() => r,
        _ = draining.cancelled() => {
            begin_drain(conn.as_mut());
            conn.await
        }
    };
    if let Err(e) = r {
        tracing::debug!(error = %e, protocol, "connection ended with an error");
    }
}

/// hyper's own hard limit: above scopegate's configured one, so requests in between get scopegate's
/// 431 JSON body; only far larger heads get hyper's bare 431.
fn hyper_header_limit(server: &ServerConfig) -> usize {
    (server.max_header_bytes * 2).max(64 * 1024)
}
