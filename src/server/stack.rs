//! The request's path through scopegate, phase by phase, in the order of the product diagram:
//!
//! ```text
//! limits ─► hygiene (inspect) ─► identify ─► authorise ─► inject (scrub + set) ─► forward
//! ```
//!
//! One [`Exchange`] value carries what earlier phases decided (request id, peer, client address,
//! identity, decision, timings) to later ones and to the audit line; nothing is derived twice. Every
//! phase can stop the request with a [`Refusal`], which becomes the JSON body, the log line and the
//! metric label.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use crate::assertion::AssertionInput;
use crate::audit::{self, AuditRecord};
use crate::error::{Reason, Refusal, RefusalKind};
use crate::identity::forwarded::{self, Forwarded};
use crate::identity::hygiene::{is_websocket_upgrade, websocket_handshake};
use crate::identity::{Identified, Peer, RequestFacts};
use crate::policy::{canonical_path, decide, Decision, ScopeSet};
use crate::runtime::Snapshot;
use crate::server::Shared;
use crate::upstream::body::{scrub_response_headers, RequestBody, ResponseBody};
use crate::upstream::client::UpstreamClient;
use crate::upstream::handshake::Offer;

pub const JWKS_PATH: &str = "/.well-known/scopegate/jwks.json";
pub const WHOAMI_PATH: &str = "/.scopegate/whoami";

/// Facts about the client connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: Peer,
    pub tls: bool,
    /// The peer address as a header value, made once per connection (the usual `X-Forwarded-For`).
    pub peer_value: Option<HeaderValue>,
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
        }
    }
}

/// What the phases learn about one request, carried to the end (audit, metrics).
pub struct Exchange {
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
    pub route: Option<crate::policy::RouteMatch>,
    pub upstream_time: Option<Duration>,
    /// Set when the credential is still to come inside the WebSocket `connect` frame.
    pub in_band: bool,
}

impl Exchange {
    pub fn path(&self) -> &str {
        self.uri.path()
    }
}

/// A worker's view of the proxy: the shared state plus its own upstream client.
pub struct Proxy {
    pub shared: Arc<Shared>,
    upstream: ArcSwapOption<UpstreamClient>,
}

impl Proxy {
    pub fn new(shared: Arc<Shared>) -> Proxy {
        Proxy {
            shared,
            upstream: ArcSwapOption::empty(),
        }
    }

    /// This worker's client for the snapshot's upstream, built on first use and after an upstream change.
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

    /// Handles one request end to end; never fails (every failure is a response).
    pub async fn handle(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<ResponseBody> {
        let snap = self.shared.snapshot.load_full();
        let request_id = request_id(&self.shared, &snap, conn, &req);
        let mut ex = Exchange {
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
        };
        let result = self.process(&snap, conn, &mut ex, req).await;
        let (resp, refusal) = match result {
            Ok(resp) => (resp, None),
            Err(refusal) => {
                let rid = ex.request_id.to_str().unwrap_or("-");
                let mut resp = refusal.to_response::<ResponseBody>(rid);
                if refusal.poisons_connection() {
                    // The rest of the connection's bytes have no trustworthy reading.
                    resp.headers_mut()
                        .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
                }
                (resp, Some(refusal))
            }
        };
        finish(&snap, &ex, &resp, refusal.as_ref());
        resp
    }

    async fn process(
        &self,
        snap: &Arc<Snapshot>,
        conn: &ConnInfo,
        ex: &mut Exchange,
        mut req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Refusal> {
        let cfg = &snap.config;

        // ── limits ──────────────────────────────────────────────────────────────────────────────
        check_limits(snap, &req)?;

        // ── hygiene: what may be trusted, before anything reads a header ──────────────────────────
        canonical_path(ex.path()).map_err(|why| {
            Refusal::bad_request(why.code(), format!("ambiguous path: {}", why.message()))
        })?;
        check_authority(&req)?;
        check_framing(&req)?;
        if ex.method == Method::CONNECT {
            return Err(Refusal::bad_request(
                "connect_not_supported",
                "CONNECT is not proxied",
            ));
        }
        let peer_trusted = snap.trusts_forwarding(conn.peer);
        if peer_trusted {
            if let Some(alias) = snap.hygiene.smuggled_alias(req.headers()) {
                return Err(Refusal::bad_request(
                    "smuggled_header_alias",
                    format!(
                        "the trusted peer passed an alias spelling of a managed header ({alias})"
                    ),
                ));
            }
        }
        ex.forwarded = forwarded::resolve(
            req.headers(),
            conn.peer.ip(),
            peer_trusted,
            &snap.forwarding_peers,
        )?;
        // ── limits per client address, now that the address is known ──────────────────────────
        snap.limiter
            .request_from(&cfg.limits, ex.forwarded.client_ip, ex.started)?;
        ex.websocket = is_websocket_upgrade(req.headers());
        if ex.websocket {
            // A claimed upgrade is a complete opening handshake, or nothing is forwarded.
            websocket_handshake(&ex.method, req.version(), req.headers())?;
            check_origin(
                &cfg.server.allowed_origins,
                req.headers(),
                ex.forwarded.host.as_deref(),
            )?;
        }

        // Scopegate's own endpoints.
        if ex.path() == JWKS_PATH && matches!(ex.method, Method::GET | Method::HEAD) {
            return Ok(json_response(
                StatusCode::OK,
                snap.assertion.jwks(),
                &ex.request_id,
            ));
        }

        // ── identify ───────────────────────────────────────────────────────────────────────────
        let route = snap.policy.routes.find(&ex.method, ex.path(), ex.websocket);
        ex.route = Some(route);
        let facts = RequestFacts {
            peer: conn.peer,
            headers: req.headers(),
            client_ip: ex.forwarded.client_ip,
        };
        ex.identified = match snap.sources.identify_cached(&facts) {
            Some(done) => done?,
            None => {
                // A credential about to be verified may be a forgery: reserve one failed
                // authentication first, so a locked-out address costs no signature check.
                let attempt = if req.headers().contains_key(header::AUTHORIZATION) {
                    Some(snap.limiter.auth_attempt(
                        &cfg.limits,
                        ex.forwarded.client_ip,
                        ex.started,
                    )?)
                } else {
                    None
                };
                // Boxed: the slow path's state (JWKS refetch, WhoIs) stays out of every request's
                // future.
                let identified = Box::pin(snap.sources.identify(&snap.policy, &facts)).await;
                if let Some(attempt) = attempt {
                    let failed =
                        matches!(&identified, Err(r) if r.kind == RefusalKind::Unauthorized);
                    if !failed {
                        snap.limiter.auth_succeeded(attempt);
                    }
                }
                identified?
            }
        };
        if let Some(id) = &ex.identified.identity {
            let tag = *id
                .limit_tag
                .get_or_init(|| crate::limits::key_tag(id.subject.as_str()));
            snap.limiter.request_by(&cfg.limits, tag, ex.started)?;
        }

        if ex.path() == WHOAMI_PATH && matches!(ex.method, Method::GET | Method::HEAD) {
            let body = crate::server::explain::whoami(
                snap,
                &ex.identified,
                ex.forwarded.client_ip,
                req.uri().query(),
            )?;
            return Ok(json_response(StatusCode::OK, body, &ex.request_id));
        }

        // ── authorise ──────────────────────────────────────────────────────────────────────────
        let requested = requested_scopes(snap, &req)?;
        let identity = ex.identified.identity.clone();
        let decision = decide(&snap.policy, identity.as_deref(), route, requested);
        ex.decision = Some(decision);
        if !decision.allowed() {
            if ex.websocket
                && identity.is_none()
                && decision.deny == Some(crate::policy::DenyKind::Unauthenticated)
                && snap.openclaw.as_ref().is_some_and(|p| p.in_band_auth)
            {
                // OpenClaw's own clients send their credential inside the first WebSocket frame; the
                // decision is made (and audited) again once it arrives.
                ex.in_band = true;
                ex.decision = None;
                let client = self.client(snap)?;
                return crate::upstream::openclaw::inband::accept(
                    self.shared.clone(),
                    snap.clone(),
                    client,
                    conn.clone(),
                    req,
                    ex,
                );
            }
            let mut refusal = decision
                .refusal(&snap.policy, identity.as_deref(), &ex.method, ex.path())
                .unwrap_or_else(|| Refusal::new(RefusalKind::Forbidden, "denied", "denied"));
            if identity.is_none() {
                if let Some(hint) = &ex.identified.anonymous_reason {
                    refusal.reasons.push(hint.clone());
                }
            }
            return Err(refusal);
        }

        // ── inject ─────────────────────────────────────────────────────────────────────────────
        let client = self.client(snap)?;
        let route_timeout = snap
            .policy
            .routes
            .route(route)
            .and_then(|r| r.response_header_timeout);
        let upstream_uri = client.upstream_uri(req.uri().path_and_query())?;
        let forwarded_path = client.forwarded_path(ex.path()).into_owned();
        {
            let headers = req.headers_mut();
            let original_host = headers
                .get(header::HOST)
                .filter(|h| h.to_str().is_ok_and(forwarded::valid_host))
                .cloned();
            snap.hygiene.scrub(headers);
            headers.remove(header::HOST);
            headers.remove(header::EXPECT);
            inject(
                snap,
                ex,
                conn,
                headers,
                &decision,
                &forwarded_path,
                original_host,
            );
        }
        *req.uri_mut() = upstream_uri;
        *req.version_mut() = if cfg.upstream.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };

        // ── forward ────────────────────────────────────────────────────────────────────────────
        if ex.websocket {
            return self.forward_websocket(snap, &client, ex, req).await;
        }
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
        let t0 = Instant::now();
        let resp = client
            .send(Request::from_parts(parts, body), route_timeout)
            .await;
        ex.upstream_time = Some(t0.elapsed());
        let (resp, lease) = resp?;
        let (mut parts, body) = resp.into_parts();
        scrub_response_headers(&mut parts.headers);
        parts
            .headers
            .insert(crate::header_names::X_REQUEST_ID, ex.request_id.clone());
        Ok(Response::from_parts(
            parts,
            ResponseBody::upstream(body, cfg.server.idle_timeout, lease),
        ))
    }

    async fn forward_websocket(
        &self,
        snap: &Arc<Snapshot>,
        client: &UpstreamClient,
        ex: &mut Exchange,
        mut req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Refusal> {
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
        let t0 = Instant::now();
        let resp = client
            .send(Request::from_parts(parts, RequestBody::empty()), None)
            .await;
        ex.upstream_time = Some(t0.elapsed());
        let (mut resp, lease) = resp?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // The upstream refused the upgrade: pass its answer through like any response.
            let (mut parts, body) = resp.into_parts();
            scrub_response_headers(&mut parts.headers);
            parts
                .headers
                .insert(crate::header_names::X_REQUEST_ID, ex.request_id.clone());
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
            .header("x-request-id", ex.request_id.clone());
        let idle = snap.config.server.websocket_idle_timeout;
        let stop = self.shared.stop.clone();
        let request_id = ex.request_id.clone();
        self.shared.tracker.spawn(async move {
            match tokio::join!(on_client_upgrade, on_upstream_upgrade) {
                (Ok(c), Ok(u)) => {
                    let end = crate::upstream::websocket::relay(c, u, idle, stop).await;
                    tracing::debug!(request_id = ?request_id, end = ?end, "websocket closed");
                }
                (c, u) => {
                    tracing::warn!(request_id = ?request_id, client = ?c.err(), upstream = ?u.err(), "websocket upgrade did not complete");
                }
            }
        });
        out.body(ResponseBody::empty()).map_err(|_| {
            Refusal::new(
                RefusalKind::Internal,
                "internal",
                "cannot build the upgrade response",
            )
        })
    }
}

/// Header-size and body-size limits that hyper does not already answer with a JSON body.
fn check_limits(snap: &Snapshot, req: &Request<Incoming>) -> Result<(), Refusal> {
    let server = &snap.config.server;
    let headers = req.headers();
    if headers.len() > server.max_headers {
        return Err(Refusal::new(
            RefusalKind::HeadersTooLarge,
            "too_many_headers",
            format!(
                "the request has {} headers; the limit is {}",
                headers.len(),
                server.max_headers
            ),
        ));
    }
    let uri = req.uri();
    let mut size = uri.path_and_query().map(|p| p.as_str().len()).unwrap_or(1)
        + uri.authority().map(|a| a.as_str().len()).unwrap_or(0)
        + 16;
    for (k, v) in headers {
        size += k.as_str().len() + v.len() + 4;
    }
    if size > server.max_header_bytes {
        return Err(Refusal::new(
            RefusalKind::HeadersTooLarge,
            "headers_too_large",
            format!(
                "the request head is {size} bytes; the limit is {}",
                server.max_header_bytes
            ),
        ));
    }
    if let (Some(max), Some(len)) = (server.max_body_bytes, headers.get(header::CONTENT_LENGTH)) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                Refusal::bad_request("bad_content_length", "Content-Length is not a number")
            })?;
        if len > max {
            return Err(Refusal::new(
                RefusalKind::PayloadTooLarge,
                "payload_too_large",
                format!("the body is {len} bytes; the limit is {max}"),
            ));
        }
    }
    Ok(())
}

/// `Host` and the request target's authority (HTTP/1.1 absolute-form, HTTP/2 `:authority`) must agree.
fn check_authority(req: &Request<Incoming>) -> Result<(), Refusal> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::bad_request(
            "duplicate_host",
            "more than one Host header",
        ));
    }
    if let (Some(auth), Some(host)) = (req.uri().authority(), host) {
        if !host
            .as_bytes()
            .eq_ignore_ascii_case(auth.as_str().as_bytes())
        {
            return Err(Refusal::bad_request(
                "authority_mismatch",
                "the Host header and the request target name different hosts",
            ));
        }
    }
    Ok(())
}

/// A WebSocket upgrade from a browser carries `Origin`; unless it names the host the request was sent
/// to (its `Host`, or the `X-Forwarded-Host` a trusted proxy vouched for) or an allowed origin, a page on another site is trying to open the socket with the visitor's
/// ambient identity (cross-site WebSocket hijacking). Non-browser clients send no `Origin`.
fn check_origin(
    allowed: &[String],
    headers: &http::HeaderMap,
    forwarded_host: Option<&str>,
) -> Result<(), Refusal> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // Behind a trusted proxy the client's host is the one it vouches for in X-Forwarded-Host.
    let same_host = origin.split_once("://").is_some_and(|(scheme, rest)| {
        matches!(scheme, "http" | "https")
            && [Some(host), forwarded_host]
                .into_iter()
                .flatten()
                .any(|h| !h.is_empty() && rest.eq_ignore_ascii_case(h))
    });
    if same_host || allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        return Ok(());
    }
    Err(Refusal::new(
        RefusalKind::Forbidden,
        "origin_not_allowed",
        format!(
            "a WebSocket from origin {origin:?} may not connect to {host:?}; add it to [server] allowed_origins if it is yours"
        ),
    ))
}

/// HTTP/1 message framing must have exactly one reading (RFC 9112 §6): a repeated `Content-Length`
/// or a transfer coding other than a single `chunked` is refused, and the connection closed, rather
/// than re-framed on a guess — that guess is what request smuggling exploits. (A message with both
/// `Transfer-Encoding` and `Content-Length` is settled by hyper before it gets here.) HTTP/1.1
/// requires `Host`.
fn check_framing(req: &Request<Incoming>) -> Result<(), Refusal> {
    if req.version() >= Version::HTTP_2 {
        return Ok(());
    }
    let headers = req.headers();
    if headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(Refusal::bad_request(
            "duplicate_content_length",
            "Content-Length was sent more than once",
        ));
    }
    // No case for both Transfer-Encoding and Content-Length: hyper's parser never hands one over. It
    // drops Content-Length, frames the body by chunked (RFC 9112 §6.3) and closes the connection
    // after the response, so bytes after the chunked body are never read as a request.
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(coding) = codings.next() {
        let chunked_only = coding
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        if !chunked_only || codings.next().is_some() {
            return Err(Refusal::bad_request(
                "unsupported_transfer_coding",
                "only a single \"Transfer-Encoding: chunked\" is accepted",
            ));
        }
    }
    if req.version() == Version::HTTP_11
        && req.uri().authority().is_none()
        && !headers.contains_key(header::HOST)
    {
        return Err(Refusal::bad_request(
            "missing_host",
            "an HTTP/1.1 request must carry a Host header",
        ));
    }
    Ok(())
}

/// The client's own narrowing (`[policy] request_scopes_header`): literal scopes, comma or space separated.
fn requested_scopes(snap: &Snapshot, req: &Request<Incoming>) -> Result<Option<ScopeSet>, Refusal> {
    let Some(name) = &snap.config.request_scopes_header else {
        return Ok(None);
    };
    let mut values = req.headers().get_all(name).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refusal::bad_request(
            "duplicate_scopes_header",
            format!("{name} was sent more than once"),
        ));
    }
    let s = v.to_str().map_err(|_| {
        Refusal::bad_request("malformed_scopes_header", format!("{name} is not ASCII"))
    })?;
    let names = s.split([',', ' ']).map(str::trim).filter(|n| !n.is_empty());
    Ok(Some(snap.policy.catalogue.parse(names).0))
}

/// Sets what the upstream may rely on: forwarding headers, the request id, the profile's headers and the
/// signed assertion. Runs after `scrub`, so no client copy of any of these survives.
pub(crate) fn inject(
    snap: &Snapshot,
    ex: &Exchange,
    conn: &ConnInfo,
    headers: &mut http::HeaderMap,
    decision: &Decision,
    forwarded_path: &str,
    original_host: Option<HeaderValue>,
) {
    use crate::header_names::*;
    // Up to eight inserts follow: grow the table once, not per insert.
    headers.reserve(8);
    let identity = ex.identified.identity.as_deref();
    let proto = if conn.tls {
        "https"
    } else {
        ex.forwarded.proto.unwrap_or("http")
    };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    let host = match &ex.forwarded.host {
        Some(h) => HeaderValue::from_str(h).ok(),
        None => original_host,
    };
    if let Some(v) = host {
        headers.insert(X_FORWARDED_HOST, v);
    }
    headers.insert(X_REQUEST_ID, ex.request_id.clone());
    let (scopes_comma, scopes_space) = snap.scope_strings(decision.effective);
    // X-Forwarded-For: overwritten, never appended; the common values are made once, not per request.
    let xff = match &snap.openclaw {
        Some(oc) => {
            let ip = oc.forwarded_for(ex.forwarded.client_ip);
            if ip == oc.local_client_ip {
                Some(oc.local_client_value.clone())
            } else if Some(ip) == conn.peer.ip() {
                conn.peer_value.clone()
            } else {
                HeaderValue::from_str(&ip.to_string()).ok()
            }
        }
        None => match ex.forwarded.client_ip {
            Some(ip) if Some(ip) == conn.peer.ip() => conn.peer_value.clone(),
            Some(ip) => HeaderValue::from_str(&ip.to_string()).ok(),
            None => None,
        },
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if let Some(oc) = &snap.openclaw {
        // Always present: an empty list grants nothing, where an absent one would grant the gateway's
        // full default set (gateway contract §3).
        headers.insert(X_OPENCLAW_SCOPES, scopes_comma);
        if let Some(id) = identity {
            let user = id
                .gateway_header
                .get_or_init(|| HeaderValue::from_str(oc.gateway_user(&id.subject)).ok());
            if let Some(v) = user {
                headers.insert(oc.user_header.clone(), v.clone());
            }
        }
    }
    let assertion = snap.assertion.assertion(&AssertionInput {
        subject: identity.map(|i| i.subject.as_str()).unwrap_or(""),
        amr: identity.map(|i| i.method),
        scope: &scopes_space,
        scope_bits: decision.effective,
        client_ip: ex.forwarded.client_ip,
        method: &ex.method,
        path: forwarded_path,
    });
    headers.insert(snap.assertion.header_name().clone(), assertion);
}

fn request_id(
    shared: &Shared,
    snap: &Snapshot,
    conn: &ConnInfo,
    req: &Request<Incoming>,
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
    let boot = shared.boot_id.as_bytes();
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

pub fn json_response(
    status: StatusCode,
    body: impl Into<bytes::Bytes>,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert("x-request-id", request_id.clone());
    resp
}

/// Metrics and the audit line for a finished exchange (at response-header time).
pub fn finish(
    snap: &Snapshot,
    ex: &Exchange,
    resp: &Response<ResponseBody>,
    refusal: Option<&Refusal>,
) {
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
    let (required, effective) = match ex.decision {
        Some(d) => (cat.join(d.required, " "), cat.join(d.effective, " ")),
        None => (String::new(), String::new()),
    };
    let reasons = match refusal {
        Some(r) => r.reason_codes().join(","),
        None if ex.in_band => "credential_in_connect_frame".to_string(),
        None => ex
            .decision
            .map(|d| d.code())
            .unwrap_or("scopegate")
            .to_string(),
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
            route: &route,
            required: &required,
            effective: &effective,
            decision: decision_label,
            reasons: &reasons,
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

/// A reason line naming the caller for the in-band path and others.
pub fn note(code: &'static str, msg: impl Into<String>) -> Reason {
    Reason::new(code, msg)
}
