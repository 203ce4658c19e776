//! Bodies that stream through scopegate: never buffered, with backpressure end to end (a frame is pulled
//! from one side only when the other side asks for one), an idle timeout instead of a total-duration
//! timeout (streams are sacred), a size limit on uploads, and trailers scrubbed like headers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::identity::hygiene::Hygiene;

/// Why a streamed body stopped early.
#[derive(Debug)]
pub enum BodyError {
    Idle(Duration),
    TooLarge(u64),
    Upstream(hyper::Error),
    /// The upstream response, read by scopegate's own client, broke off or broke the protocol.
    Wire(crate::upstream::wire::WireError),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Idle(d) => write!(f, "no data for {d:?} (idle timeout)"),
            BodyError::TooLarge(max) => write!(f, "body exceeds {max} bytes"),
            BodyError::Upstream(e) => write!(f, "{e}"),
            BodyError::Wire(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BodyError {}

/// An idle timer that costs nothing until the stream actually waits.
pub struct Idle {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Idle {
    fn new(limit: Duration) -> Idle {
        Idle { limit, sleep: None }
    }

    /// Called when the inner body is pending: arms (or keeps) the timer; true when it has fired.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.limit.is_zero() {
            return false;
        }
        let limit = self.limit;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        sleep.as_mut().poll(cx).is_ready()
    }

    /// Called when data moved: the next wait starts a fresh idle period.
    fn progressed(&mut self) {
        if let Some(s) = self.sleep.as_mut() {
            s.as_mut().reset(Instant::now() + self.limit);
        }
    }
}

/// The client's request body on its way upstream.
pub struct RequestBody {
    inner: Option<Incoming>,
    idle: Idle,
    limit: Option<u64>,
    seen: u64,
    hygiene: Option<Arc<Hygiene>>,
}

impl RequestBody {
    pub fn empty() -> RequestBody {
        RequestBody {
            inner: None,
            idle: Idle::new(Duration::ZERO),
            limit: None,
            seen: 0,
            hygiene: None,
        }
    }

    pub fn streaming(
        inner: Incoming,
        idle: Duration,
        limit: Option<u64>,
        hygiene: Arc<Hygiene>,
    ) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            idle: Idle::new(idle),
            limit,
            seen: 0,
            hygiene: Some(hygiene),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => {
                if this.idle.poll_expired(cx) {
                    return Poll::Ready(Some(Err(BodyError::Idle(this.idle.limit))));
                }
                Poll::Pending
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Upstream(e)))),
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.progressed();
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(max) = this.limit {
                        if this.seen > max {
                            return Poll::Ready(Some(Err(BodyError::TooLarge(max))));
                        }
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                match frame.into_trailers() {
                    Ok(mut trailers) => {
                        if let Some(h) = &this.hygiene {
                            h.scrub_trailers(&mut trailers);
                        }
                        if trailers.is_empty() {
                            Poll::Ready(None)
                        } else {
                            Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                        }
                    }
                    Err(_) => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

/// An upstream response body, from whichever client carried the request.
pub enum UpstreamBody {
    Hyper(Incoming),
    Wire(crate::upstream::wire::WireBody),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::Upstream))),
            UpstreamBody::Wire(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(BodyError::Wire))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::Wire(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(b) => b.size_hint(),
            UpstreamBody::Wire(b) => b.size_hint(),
        }
    }
}

/// What scopegate sends back: the upstream's stream, or a body of its own.
pub enum ResponseBody {
    Full(Option<Bytes>),
    Upstream {
        inner: UpstreamBody,
        idle: Idle,
        /// The pooled connection this body came on: reused only if the body was read to the end.
        lease: Option<crate::upstream::pool::Lease>,
    },
    /// A stream (server-sent events) that ends when its session is revoked (`crate::sessions`). Boxed,
    /// so that the common variants stay as small as they were.
    Watched(Box<Watched>),
}

/// A revocable stream: the body, its registration and the revocation it waits for.
pub struct Watched {
    body: ResponseBody,
    revoked: Option<crate::sessions::Revoked>,
    _registration: crate::sessions::Registration,
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let ResponseBody::Upstream { inner, lease, .. } = self {
            if inner.is_end_stream() {
                if let Some(l) = lease.take() {
                    l.release();
                }
            }
        }
    }
}

impl ResponseBody {
    pub fn full(b: impl Into<Bytes>) -> ResponseBody {
        let b = b.into();
        ResponseBody::Full((!b.is_empty()).then_some(b))
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::Full(None)
    }

    /// `self`, ended (cleanly, as a stream whose server went away) once `revoked` fires.
    pub fn watched(
        self,
        registration: crate::sessions::Registration,
        revoked: crate::sessions::Revoked,
    ) -> ResponseBody {
        ResponseBody::Watched(Box::new(Watched {
            body: self,
            revoked: Some(revoked),
            _registration: registration,
        }))
    }

    pub fn upstream(
        inner: UpstreamBody,
        idle: Duration,
        lease: Option<crate::upstream::pool::Lease>,
    ) -> ResponseBody {
        ResponseBody::Upstream {
            inner,
            idle: Idle::new(idle),
            lease,
        }
    }
}

impl From<Bytes> for ResponseBody {
    fn from(b: Bytes) -> Self {
        ResponseBody::full(b)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut *self {
            ResponseBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Upstream { inner, idle, .. } => match Pin::new(inner).poll_frame(cx) {
                Poll::Pending => {
                    if idle.poll_expired(cx) {
                        crate::metrics::upstream_error("stream_idle");
                        return Poll::Ready(Some(Err(BodyError::Idle(idle.limit))));
                    }
                    Poll::Pending
                }
                Poll::Ready(Some(Ok(frame))) => {
                    idle.progressed();
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    crate::metrics::upstream_error("stream_reset");
                    tracing::warn!(error = %e, "upstream response body failed");
                    Poll::Ready(Some(Err(e)))
                }
                Poll::Ready(None) => Poll::Ready(None),
            },
            ResponseBody::Watched(w) => {
                if let Some(rx) = w.revoked.as_mut() {
                    match Pin::new(rx).poll(cx) {
                        // The end of the stream: the client sees the server finish, and the upstream
                        // connection, not read to its end, is closed rather than pooled.
                        Poll::Ready(Ok(_)) => return Poll::Ready(None),
                        Poll::Ready(Err(_)) => w.revoked = None,
                        Poll::Pending => {}
                    }
                }
                Pin::new(&mut w.body).poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(b) => b.is_none(),
            ResponseBody::Upstream { inner, .. } => inner.is_end_stream(),
            ResponseBody::Watched(w) => w.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Upstream { inner, .. } => inner.size_hint(),
            ResponseBody::Watched(w) => w.body.size_hint(),
        }
    }
}

/// Removes hop-by-hop headers (and those a response's `Connection` names) from an upstream response.
pub fn scrub_response_headers(headers: &mut HeaderMap) {
    use http::header;
    const HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    // Most responses carry none of these: check in one pass before touching the map.
    if !headers.keys().any(|k| HOP.contains(&k.as_str())) {
        return;
    }
    let nominated = crate::identity::hygiene::connection_nominated(headers);
    for n in nominated {
        if let Ok(name) = http::HeaderName::from_bytes(n.as_bytes()) {
            headers.remove(&name);
        }
    }
    for h in [
        header::CONNECTION,
        crate::header_names::KEEP_ALIVE,
        crate::header_names::PROXY_CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(h);
    }
}
