//! Forward: the end of the stack. The request goes upstream through this worker's pooled client,
//! streaming both ways; a WebSocket upgrade is forwarded and, once the upstream's answer is a verified
//! handshake, the two sockets are relayed; an in-band OpenClaw upgrade is accepted here and its
//! `connect` frame decides (see `upstream::openclaw::inband`).

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use super::context::{Context, Done, Exchange};
use crate::error::{Refusal, RefusalKind};
use crate::runtime::Shared;
use crate::runtime::Snapshot;
use crate::upstream::body::{scrub_response_headers, RequestBody, ResponseBody};
use crate::upstream::client::UpstreamClient;
use crate::upstream::handshake::Offer;

/// A worker's forwarding state: the shared state plus its own upstream client.
pub struct Worker {
    pub shared: Arc<Shared>,
    upstream: ArcSwapOption<UpstreamClient>,
}

impl Worker {
    pub fn new(shared: Arc<Shared>) -> Worker {
        Worker {
            shared,
            upstream: ArcSwapOption::empty(),
        }
    }

    /// This worker's client for the snapshot's upstream, built on first use and after an upstream
    /// change.
    pub fn client(&self, snap: &Snapshot) -> Result<Arc<UpstreamClient>, Refusal> {
        if let Some(c) = self.upstream.load_full() {
            if c.fingerprint == snap.upstream_fingerprint {
                return Ok(c);
            }
        }
        let c = Arc::new(UpstreamClient::new(&snap.config.upstream).map_err(|e| {
            tracing::error!(error = %e, "cannot build upstream client");
            Refusal::bad_gateway("upstream_config", "the upstream client cannot be built")
        })?);
        self.upstream.store(Some(c.clone()));
        Ok(c)
    }
}

/// Forwards one exchange that every earlier phase let through.
pub async fn forward(worker: Arc<Worker>, ex: Exchange<Incoming>) -> Done {
    let Exchange { mut ctx, req } = ex;
    let outcome = dispatch(&worker, &mut ctx, req).await;
    Done::with(ctx, outcome)
}

async fn dispatch(
    worker: &Worker,
    ctx: &mut Context,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Refusal> {
    let snap = ctx.snap.clone();
    let client = worker.client(&snap)?;
    if ctx.in_band {
        return super::in_band::accept(worker.shared.clone(), client, ctx, req);
    }
    *req.uri_mut() = client.upstream_uri(req.uri().path_and_query())?;
    *req.version_mut() = if snap.config.upstream.http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    if ctx.websocket {
        return forward_websocket(worker, &client, ctx, req).await;
    }
    let route_timeout = ctx
        .route
        .and_then(|r| snap.policy.routes.route(r))
        .and_then(|r| r.response_header_timeout);
    let cfg = &snap.config;
    let (parts, body) = req.into_parts();
    let body = if body.is_end_stream() {
        RequestBody::empty()
    } else {
        RequestBody::streaming(
            body,
            cfg.server.idle_timeout,
            cfg.server.max_body_bytes,
            snap.hygiene.clone(),
        )
    };
    let injected = std::mem::take(&mut ctx.injected);
    let t0 = Instant::now();
    let resp = client
        .send(Request::from_parts(parts, body), injected, route_timeout)
        .await;
    ctx.upstream_time = Some(t0.elapsed());
    let (resp, lease) = resp?;
    let (mut parts, body) = resp.into_parts();
    scrub_response_headers(&mut parts.headers);
    parts
        .headers
        .insert(crate::header_names::X_REQUEST_ID, ctx.request_id.clone());
    let mut body = ResponseBody::upstream(body, cfg.server.idle_timeout, lease);
    // A stream of events outlives its request like a WebSocket does: it ends with its credential.
    // An event stream has no length; a body of known length (most answers) skips the header lookup.
    if body.size_hint().exact().is_none() && is_event_stream(&parts.headers) {
        if let Some((registration, revoked)) = super::revoke::register(&worker.shared, ctx) {
            body = body.watched(registration, revoked);
        }
    }
    Ok(Response::from_parts(parts, body))
}

fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

async fn forward_websocket(
    worker: &Worker,
    client: &UpstreamClient,
    ctx: &mut Context,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Refusal> {
    // A person the gateway would admit with no scopes is refused (or provisioned) before it is asked.
    super::people::admit_websocket(&worker.shared, ctx).await?;
    let snap = &ctx.snap;
    let on_client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _body) = req.into_parts();
    // The handshake headers scrub removed as hop-by-hop go back on, for this hop only.
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts
        .headers
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let offer = Offer::of(&parts.headers);
    let injected = std::mem::take(&mut ctx.injected);
    let t0 = Instant::now();
    let resp = client
        .send(
            Request::from_parts(parts, RequestBody::empty()),
            injected,
            None,
        )
        .await;
    ctx.upstream_time = Some(t0.elapsed());
    let (mut resp, lease) = resp?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // The upstream refused the upgrade: pass its answer through like any response.
        let (mut parts, body) = resp.into_parts();
        scrub_response_headers(&mut parts.headers);
        parts
            .headers
            .insert(crate::header_names::X_REQUEST_ID, ctx.request_id.clone());
        return Ok(Response::from_parts(
            parts,
            ResponseBody::upstream(body, snap.config.server.idle_timeout, lease),
        ));
    }
    // Only a verified handshake becomes a tunnel. On a refusal the response, its unclaimed upgrade
    // and the unreleased lease are dropped here: the upstream connection closes, unpooled.
    offer.verify(resp.status(), resp.headers())?;
    // The connection now belongs to the upgrade.
    drop(lease);
    let on_upstream_upgrade = hyper::upgrade::on(&mut resp);
    let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for name in [
        header::SEC_WEBSOCKET_ACCEPT,
        header::SEC_WEBSOCKET_PROTOCOL,
        header::SEC_WEBSOCKET_EXTENSIONS,
    ] {
        if let Some(v) = resp.headers().get(&name) {
            out = out.header(name, v.clone());
        }
    }
    out = out
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("x-request-id", ctx.request_id.clone());
    let idle = snap.config.server.websocket_idle_timeout;
    let stop = worker.shared.stop.clone();
    let request_id = ctx.request_id.clone();
    // Registered once, here: the session ends when its credential does (`revoke`).
    let session = super::revoke::register(&worker.shared, ctx);
    let relaying = async move {
        let (_registration, revoked) = match session {
            Some((reg, rx)) => (Some(reg), Some(rx)),
            None => (None, None),
        };
        match tokio::join!(on_client_upgrade, on_upstream_upgrade) {
            (Ok(c), Ok(u)) => {
                let end = crate::upstream::websocket::relay(c, u, idle, stop, revoked).await;
                tracing::debug!(request_id = ?request_id, end = ?end, "websocket closed");
            }
            (c, u) => {
                tracing::warn!(request_id = ?request_id, client = ?c.err(), upstream = ?u.err(), "websocket upgrade did not complete");
            }
        }
    };
    // The relay outlives the request's future; its log lines still name the request.
    worker.shared.tracker.spawn(crate::log_scope::Scoped::new(
        ctx.request_id.clone(),
        relaying,
    ));
    out.body(ResponseBody::empty()).map_err(|_| {
        Refusal::new(
            RefusalKind::Internal,
            "internal",
            "cannot build the upgrade response",
        )
    })
}
