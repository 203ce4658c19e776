//! Finish: the outermost layer. It opens the request's context (snapshot, request id, clock), and
//! when the stack below has answered it renders a refusal as the contract's JSON, writes the audit
//! line and the metrics from the one context value, and catches a panic below as a 500 so the
//! process keeps serving. Audit and metrics are written at response-header time.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};

use http::header::{self, HeaderValue};
use http::{Request, Response};
use tower::Service;

use super::context::{ConnInfo, Context, Done, Exchange};
use super::recycle::Recycler;
use crate::audit::{self, AuditRecord, Words};
use crate::error::{Refusal, RefusalKind};
use crate::log_scope;
use crate::policy::scopes::ScopeSet;
use crate::runtime::Shared;
use crate::runtime::Snapshot;
use crate::upstream::body::ResponseBody;

/// The finish layer, made per connection (it knows the connection's peer).
#[derive(Clone)]
pub struct Finish {
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    recycler: Arc<Recycler>,
}

impl Finish {
    pub fn new(shared: Arc<Shared>, conn: Arc<ConnInfo>, recycler: Arc<Recycler>) -> Finish {
        Finish {
            shared,
            conn,
            recycler,
        }
    }
}

impl<S> tower::Layer<S> for Finish {
    type Service = FinishService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        FinishService {
            finish: self.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub struct FinishService<S> {
    finish: Finish,
    inner: S,
}

impl<S, B> Service<Request<B>> for FinishService<S>
where
    S: Service<Exchange<B>, Response = Done, Error = Infallible>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = FinishFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Finish {
            shared,
            conn,
            recycler,
        } = &self.finish;
        let snap = shared.snapshot.load_full();
        let request_id = request_id(&shared.boot_id, &snap, conn, &req);
        // Every log line inside the request (an upstream failure, a JWKS refetch, a task the
        // request spawns) names it: see `log_scope`.
        let scope = request_id.clone();
        let ctx = recycler.context(Context::new(snap, conn.clone(), request_id, &req));
        let inner = log_scope::in_scope(&scope, || self.inner.call(Exchange { ctx, req }));
        FinishFuture {
            inner,
            recycler: recycler.clone(),
            scope,
        }
    }
}

pin_project_lite::pin_project! {
    /// Waits for the stack's answer and finishes it.
    pub struct FinishFuture<F> {
        #[pin]
        inner: F,
        recycler: Arc<Recycler>,
        // The request id, as the current request while this future is polled.
        scope: HeaderValue,
    }
}

impl<F: Future<Output = Result<Done, Infallible>>> Future for FinishFuture<F> {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let (inner, scope) = (this.inner, &*this.scope);
        // Panics are caught per request (500, the process keeps serving). tower-http's CatchPanic
        // would box every response body; catching around the poll costs nothing on the hot path.
        log_scope::in_scope(scope, || {
            let polled = std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx)));
            let Ok(done) = ready!(match polled {
                Ok(p) => p,
                Err(_) => return Poll::Ready(Ok(panic_response())),
            });
            let (ctx, outcome) = done.into_parts();
            let resp = answer(&ctx, outcome);
            this.recycler.give_back(ctx);
            Poll::Ready(Ok(resp))
        })
    }
}

/// The response for an outcome, after its audit line and metrics.
fn answer(
    ctx: &Context,
    outcome: Result<Response<ResponseBody>, Refusal>,
) -> Response<ResponseBody> {
    match outcome {
        Ok(resp) => {
            record(ctx, &resp, None);
            resp
        }
        Err(refusal) => {
            let rid = ctx.request_id.to_str().unwrap_or("-");
            let mut resp = refusal.to_response::<ResponseBody>(rid);
            if refusal.poisons_connection() {
                // The rest of the connection's bytes have no trustworthy reading.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            record(ctx, &resp, Some(&refusal));
            resp
        }
    }
}

fn panic_response() -> Response<ResponseBody> {
    tracing::error!("request handler panicked; answered 500 and kept serving");
    Refusal::new(
        RefusalKind::Internal,
        "internal_error",
        "scopegate hit an internal error handling this request",
    )
    .to_response("-")
}

pub(crate) fn request_id<B>(
    boot_id: &str,
    snap: &Snapshot,
    conn: &ConnInfo,
    req: &Request<B>,
) -> HeaderValue {
    let peers = &snap.config.server.request_id_peers;
    if !peers.is_empty() && crate::config::peer_matches(peers, conn.peer.ip()) {
        if let Some(v) = req.headers().get("x-request-id") {
            let ok = !v.is_empty()
                && v.len() <= 128
                && v.as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b));
            if ok {
                return v.clone();
            }
        }
    }
    // `<boot id>-<sequence in hex>`, written by hand: this runs on every request.
    let mut buf = [0u8; 48];
    let boot = boot_id.as_bytes();
    let n = boot.len().min(24);
    buf[..n].copy_from_slice(&boot[..n]);
    buf[n] = b'-';
    let mut seq = crate::metrics::next_seq();
    let mut digits = [0u8; 16];
    let mut d = 0;
    loop {
        digits[d] = b"0123456789abcdef"[(seq & 0xf) as usize];
        d += 1;
        seq >>= 4;
        if seq == 0 {
            break;
        }
    }
    for i in 0..d {
        buf[n + 1 + i] = digits[d - 1 - i];
    }
    HeaderValue::from_bytes(&buf[..n + 1 + d])
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Metrics and the audit line for a finished exchange (at response-header time).
pub fn record(ex: &Context, resp: &Response<ResponseBody>, refusal: Option<&Refusal>) {
    let snap = &*ex.snap;
    let status = resp.status().as_u16();
    let route_index = ex.route.and_then(|r| r.index);
    let decision_label = match (refusal, ex.decision) {
        (Some(r), _) => match r.kind {
            RefusalKind::Unauthorized => "unauthenticated",
            RefusalKind::Forbidden => ex.decision.map(|d| d.outcome()).unwrap_or("forbidden"),
            RefusalKind::BadRequest => "bad_request",
            RefusalKind::BadGateway | RefusalKind::GatewayTimeout => "upstream_error",
            RefusalKind::HeadersTooLarge
            | RefusalKind::PayloadTooLarge
            | RefusalKind::RequestTimeout => "limit",
            RefusalKind::RateLimited => "rate_limited",
            _ => "error",
        },
        (None, Some(d)) => d.outcome(),
        (None, None) if ex.in_band => "in_band_pending",
        (None, None) => "scopegate",
    };
    snap.request_counter(
        route_index,
        crate::metrics::method_label(&ex.method),
        status,
        decision_label,
    )
    .inc();
    let elapsed = ex.started.elapsed();
    let rm = snap.route_metrics(route_index);
    rm.duration.observe(elapsed.as_secs_f64());
    if let Some(u) = ex.upstream_time {
        rm.upstream.observe(u.as_secs_f64());
    }
    if let Some(r) = refusal {
        crate::metrics::denial(r.code);
    }
    let audit_on = snap.config.log.audit;
    if !audit_on {
        return;
    }
    let cat = &snap.policy.catalogue;
    let identity = ex.identified.identity.as_deref();
    // The scope names and reason codes go into the line word by word: nothing is joined for it.
    let (required, effective) = match ex.decision {
        Some(d) => (d.required, d.effective),
        None => (ScopeSet::EMPTY, ScopeSet::EMPTY),
    };
    let names_of =
        |set: ScopeSet| move |f: &mut dyn FnMut(&str)| set.ids().for_each(|id| f(cat.name(id)));
    let (required_names, effective_names) = (names_of(required), names_of(effective));
    let refusal_codes = |f: &mut dyn FnMut(&str)| {
        if let Some(r) = refusal {
            r.reasons.iter().for_each(|reason| f(reason.code));
        }
    };
    let reasons = match refusal {
        Some(_) => Words::List(&refusal_codes),
        None if ex.in_band => Words::Text("credential_in_connect_frame"),
        None => Words::Text(ex.decision.map(|d| d.code()).unwrap_or("scopegate")),
    };
    let rid = ex.request_id.to_str().unwrap_or("-");
    let route = snap.route_label(route_index);
    audit::record(
        true,
        &AuditRecord {
            request_id: rid,
            subject: identity.map(|i| i.subject.as_str()),
            source: identity.map(|i| i.method.amr()),
            client_ip: ex.forwarded.client_ip,
            method: ex.method.as_str(),
            path: ex.path(),
            route,
            required: Words::List(&required_names),
            // `inject` rendered them already when it ran.
            effective: match &ex.effective_names {
                Some(names) => Words::Text(names),
                None => Words::List(&effective_names),
            },
            decision: decision_label,
            reasons,
            status,
            duration: elapsed,
            upstream: ex.upstream_time,
            websocket: ex.websocket,
        },
    );
    if let Some(r) = refusal {
        if r.status().is_server_error() {
            tracing::warn!(request_id = rid, code = r.code, message = %r.message, "request failed");
        }
    }
}
