//! A lean pool of hyper HTTP/1.1 client connections for plain-`http://` upstreams, one per worker
//! thread. It carries requests with a body and upgrades; bodiless requests take scopegate's own client
//! (`upstream::wire`), which keeps its own idle connections.
//!
//! This is the sidecar's common case (the gateway on loopback), and the hot path: hyper-util's general
//! client spends about a fifth of a request's instructions on pool bookkeeping (a SipHash of the pool
//! key per checkout and return, future moves, a dispatch channel), where one upstream and one thread
//! need a plain stack of idle connections. Rules that keep it correct:
//!
//! - a connection goes back to the pool only after its response has been read to the end (the response
//!   body hands its [`Lease`] back on drop when it is complete); anything else is closed;
//! - a pooled connection is used only once hyper says it is ready, and a request that was never sent
//!   (the upstream closed an idle connection) is retried once on a fresh connection — a request that
//!   was sent is never retried;
//! - upgraded connections (WebSockets) leave the pool for good.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::upstream::body::RequestBody;

pub struct Http1Pool {
    /// `host:port` to dial.
    target: String,
    connect_timeout: Duration,
    idle: IdleStack<SendRequest<RequestBody>>,
}

/// Idle keep-alive connections, most recently used first out. Both upstream clients keep theirs here;
/// each says what makes one of its connections still usable.
pub struct IdleStack<C> {
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<(C, Instant)>>,
}

impl<C> IdleStack<C> {
    pub fn new(idle_timeout: Duration, max_idle: usize) -> IdleStack<C> {
        IdleStack {
            idle_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub fn put(&self, conn: C) {
        if let Ok(mut idle) = self.idle.lock() {
            // The oldest entry goes when it has expired: a pool that is never drained still sheds
            // connections the upstream has long given up on.
            if idle
                .first()
                .is_some_and(|(_, since)| since.elapsed() >= self.idle_timeout)
            {
                idle.remove(0);
            }
            if idle.len() < self.max_idle {
                idle.push((conn, Instant::now()));
            }
        }
    }

    /// The most recently used idle connection that has not expired and that `usable` accepts; the
    /// others met on the way are closed.
    pub fn take(&self, usable: impl Fn(&C) -> bool) -> Option<C> {
        let mut idle = self.idle.lock().ok()?;
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < self.idle_timeout && usable(&conn) {
                return Some(conn);
            }
        }
        None
    }
}

/// A connection on loan to one response; returned to the pool when the response completed.
pub struct Lease {
    pool: Arc<Http1Pool>,
    sender: SendRequest<RequestBody>,
}

impl Lease {
    /// Gives the connection back for reuse (call only once its response was read to the end).
    pub fn release(self) {
        self.pool.put(self.sender);
    }
}

/// Why a request did not get a response (from either upstream client).
#[derive(Debug)]
pub enum PoolError {
    ConnectTimeout,
    Connect(std::io::Error),
    /// hyper's connection failed after the request may have been sent.
    Http(hyper::Error),
    /// scopegate's own client (`upstream::wire`) got no usable response.
    Wire(crate::upstream::wire::WireError),
    /// No response head by the request's response-header deadline (`upstream::wire`).
    HeaderTimeout,
}

/// Opens a TCP connection to the upstream, bounded by `limit`, with Nagle off (heads and small bodies
/// must not wait for an ACK).
pub async fn dial(target: &str, limit: Duration) -> Result<tokio::net::TcpStream, PoolError> {
    let stream = match tokio::time::timeout(limit, tokio::net::TcpStream::connect(target)).await {
        Err(_) => return Err(PoolError::ConnectTimeout),
        Ok(Err(e)) => return Err(PoolError::Connect(e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

impl Http1Pool {
    pub fn new(
        target: String,
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Http1Pool {
        Http1Pool {
            target,
            connect_timeout,
            idle: IdleStack::new(idle_timeout, max_idle),
        }
    }

    fn put(&self, sender: SendRequest<RequestBody>) {
        if !sender.is_closed() {
            self.idle.put(sender);
        }
    }

    /// The most recently used idle connection that is still open and not expired.
    fn take_idle(&self) -> Option<SendRequest<RequestBody>> {
        self.idle.take(|sender| !sender.is_closed())
    }

    async fn connect(&self) -> Result<SendRequest<RequestBody>, PoolError> {
        let stream = dial(&self.target, self.connect_timeout).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(PoolError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends a request on a pooled or new connection. On success the response comes with the lease of
    /// its connection, to be released once the response body has been read to the end.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), PoolError> {
        // One attempt on a pooled connection (if any), then one on a fresh connection.
        for fresh in [false, true] {
            let mut sender = match (fresh, self.take_idle()) {
                (false, Some(s)) => s,
                (false, None) => continue,
                (true, _) => self.connect().await?,
            };
            if sender.ready().await.is_err() {
                // Closed while idle: nothing was sent.
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    return Ok((
                        resp,
                        Lease {
                            pool: self.clone(),
                            sender,
                        },
                    ))
                }
                Err(mut e) => match e.take_message() {
                    // Not sent (the connection closed under it): safe to retry once on a fresh one.
                    Some(returned) if !fresh => req = returned,
                    _ => return Err(PoolError::Http(e.into_error())),
                },
            }
        }
        Err(PoolError::Connect(std::io::Error::other(
            "no connection could be used",
        )))
    }
}
