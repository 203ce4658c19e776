//! The per-request context and the two values every phase passes along.
//!
//! [`Exchange`] is what travels down the stack: the request and its [`Context`], the one typed value
//! in which each phase records what it learned (peer, forwarded facts, identity, decision, route,
//! timings), so that no later phase derives anything twice. [`Done`] is what comes back up: the
//! context again (the audit line is written from it) and the outcome, a response or a [`Refusal`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Request, Response, StatusCode};

use super::recycle::{ContextBox, Outcome};
use crate::error::Refusal;
use crate::identity::forwarded::Forwarded;
use crate::identity::{Identified, Peer, Proof};
use crate::policy::{Decision, RouteMatch};
use crate::runtime::Snapshot;
use crate::upstream::body::ResponseBody;
use crate::upstream::injected::Injected;

/// Facts about the client connection a request arrived on.
pub struct ConnInfo {
    pub peer: Peer,
    pub tls: bool,
    /// The peer address as a header value, made once per connection (the usual `X-Forwarded-For`).
    pub peer_value: Option<HeaderValue>,
    /// The last bearer credential proved on this connection (see `identify`).
    pub remembered: std::sync::Mutex<Option<Remembered>>,
}

/// A bearer credential a connection proved, with the snapshot it was proved under: the next request
/// with byte for byte the same `Authorization` value is recalled from it instead of parsed and looked
/// up again. Its value is copied, not a slice of the connection's read buffer, which it would pin.
pub struct Remembered {
    pub generation: u64,
    pub authorization: HeaderValue,
    pub proof: Proof,
}

impl ConnInfo {
    pub fn new(peer: Peer, tls: bool) -> ConnInfo {
        let peer_value = peer
            .ip()
            .and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok());
        ConnInfo {
            peer,
            tls,
            peer_value,
            remembered: std::sync::Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnInfo")
            .field("peer", &self.peer)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// What the phases learn about one request, carried to the end (audit, metrics).
#[derive(Clone)]
pub struct Context {
    /// The config snapshot this request runs under, start to end.
    pub snap: Arc<Snapshot>,
    pub conn: Arc<ConnInfo>,
    pub request_id: HeaderValue,
    pub started: Instant,
    pub method: Method,
    /// The request target as received (cheap to clone; the path is read from it).
    pub uri: http::Uri,
    pub websocket: bool,
    pub forwarded: Forwarded,
    pub identified: Identified,
    pub decision: Option<Decision>,
    /// The route, matched before identification so that every refusal is attributed to it.
    pub route: Option<RouteMatch>,
    pub upstream_time: Option<Duration>,
    /// Set when the credential is still to come inside the WebSocket `connect` frame.
    pub in_band: bool,
    /// scopegate's own headers for the upstream, set by `inject` and sent by `forward`.
    pub injected: Injected,
    /// The effective scopes' names, space-separated, as `inject` had them rendered (the audit line
    /// reuses them).
    pub effective_names: Option<Arc<str>>,
}

impl Context {
    /// A fresh context for `req`, before any phase ran.
    pub fn new<B>(
        snap: Arc<Snapshot>,
        conn: Arc<ConnInfo>,
        request_id: HeaderValue,
        req: &Request<B>,
    ) -> Context {
        Context {
            snap,
            conn,
            request_id,
            started: Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            websocket: false,
            forwarded: Forwarded::default(),
            identified: Identified::default(),
            decision: None,
            route: None,
            upstream_time: None,
            in_band: false,
            injected: Injected::default(),
            effective_names: None,
        }
    }

    pub fn path(&self) -> &str {
        self.uri.path()
    }
}

/// A request on its way down the stack. The context is boxed (in the connection's reused
/// allocation, see [`super::recycle`]): every layer moves the exchange by value.
pub struct Exchange<B> {
    pub ctx: ContextBox,
    pub req: Request<B>,
}

/// A request's outcome on its way back up: its context, with a response or a refusal recorded in
/// the context's box — one pointer to hand back through every layer.
pub struct Done(ContextBox);

impl Done {
    pub fn refused(ctx: ContextBox, refusal: Refusal) -> Done {
        Done::with(ctx, Err(refusal))
    }

    pub fn answered(ctx: ContextBox, resp: Response<ResponseBody>) -> Done {
        Done::with(ctx, Ok(resp))
    }

    pub fn with(mut ctx: ContextBox, outcome: Outcome) -> Done {
        ctx.set_outcome(outcome);
        Done(ctx)
    }

    /// The context and the outcome.
    pub fn into_parts(self) -> (ContextBox, Outcome) {
        let mut ctx = self.0;
        // Every `Done` is made with an outcome; should one ever lack it, the client gets a 500.
        let outcome = ctx.take_outcome().unwrap_or_else(|| {
            Err(Refusal::new(
                crate::error::RefusalKind::Internal,
                "internal_error",
                "the request finished without an outcome",
            ))
        });
        (ctx, outcome)
    }
}

/// A JSON response of scopegate's own (its endpoints), with the request id.
pub fn json_response(
    status: StatusCode,
    body: impl Into<bytes::Bytes>,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body.into()));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    headers.insert(crate::header_names::X_REQUEST_ID, request_id.clone());
    resp
}
