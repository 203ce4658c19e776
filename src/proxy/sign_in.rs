//! Sign-in: browser sessions on the request's path, between the public keys and identification.
//!
//! It answers scopegate's own sign-in endpoints — the callback (`/.scopegate/callback`, where the code
//! is redeemed, the only part that waits on the network), `/.scopegate/login` and `/.scopegate/logout`
//! — and it turns a 401 into a sign-in for a browser *navigation*: a `GET` with no bearer credential
//! that the browser marks `Sec-Fetch-Mode: navigate` (or, from browsers that do not send it, that
//! accepts `text/html`) is redirected to the provider, or renewed with its refresh token when its
//! session merely ended. Everything else — API calls, fetch/XHR, WebSocket upgrades — keeps the
//! contract's 401 JSON. A request with an `Authorization` header passes straight through: the
//! bearer path costs one header lookup here and nothing more.
//!
//! [`check_ambient`] is the other half, run by identify once a cookie has identified the request: an
//! ambient credential opens WebSockets and changes state only from scopegate's own origin.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use tower::Service;

use super::context::{Context, Done, Exchange};
use super::recycle::{ContextBox, Outcome};
use crate::error::{Refusal, RefusalKind};
use crate::identity::jwt::unix_now;
use crate::identity::oidc::{
    self, origin::check_same_origin, BrowserOrigin, OidcError, OidcSource, Redirect,
};
use crate::identity::AuthMethod;
use crate::runtime::Shared;
use crate::upstream::body::ResponseBody;

const OWN_PREFIX: &str = "/.scopegate/";

/// The sign-in phase (a tower layer).
#[derive(Clone)]
pub struct SignIn {
    // Signing out ends the live connections the session opened (`revoke::signed_out`).
    shared: Arc<Shared>,
}

impl SignIn {
    pub fn new(shared: Arc<Shared>) -> SignIn {
        SignIn { shared }
    }
}

impl<S> tower::Layer<S> for SignIn {
    type Service = SignInService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SignInService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct SignInService<S> {
    inner: S,
    shared: Arc<Shared>,
}

type Boxed = Pin<Box<dyn Future<Output = Done> + Send + 'static>>;

/// What a navigation needs if the rest of the stack answers 401: where it was going, from which
/// origin, and its cookies (an ended session may be renewable).
pub struct Fallback {
    origin: Option<BrowserOrigin>,
    return_to: String,
    cookies: HeaderMap,
}

impl<S, B> Service<Exchange<B>> for SignInService<S>
where
    S: Service<Exchange<B>, Response = Done, Error = Infallible>,
    B: Send + 'static,
{
    type Response = Done;
    type Error = Infallible;
    type Future = SignInFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, ex: Exchange<B>) -> Self::Future {
        if ex.ctx.snap.sources.oidc.is_none()
            || ex.req.headers().contains_key(header::AUTHORIZATION)
        {
            return SignInFuture::Pass {
                inner: self.inner.call(ex),
            };
        }
        if let Some(which) = own_kind(&ex.ctx) {
            SignInFuture::Own {
                future: own_endpoint(which, ex, self.shared.clone()),
            }
        } else if is_navigation(&ex) {
            let fallback = Fallback {
                origin: origin_of(&ex),
                return_to: ex
                    .ctx
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_else(|| "/".into()),
                cookies: cookies(ex.req.headers()),
            };
            SignInFuture::Navigate {
                inner: self.inner.call(ex),
                fallback: Some(Box::new(fallback)),
            }
        } else {
            SignInFuture::Pass {
                inner: self.inner.call(ex),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// Passing through, watching a navigation for a 401, or answering one of the sign-in endpoints.
    #[project = SignInProj]
    pub enum SignInFuture<F> {
        Pass { #[pin] inner: F },
        Navigate { #[pin] inner: F, fallback: Option<Box<Fallback>> },
        Own { future: Boxed },
    }
}

impl<F> Future for SignInFuture<F>
where
    F: Future<Output = Result<Done, Infallible>>,
{
    type Output = Result<Done, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let future = match self.as_mut().project() {
            SignInProj::Pass { inner } => return inner.poll(cx),
            SignInProj::Own { future } => return future.as_mut().poll(cx).map(Ok),
            SignInProj::Navigate { inner, fallback } => {
                let Ok(done) = ready!(inner.poll(cx));
                let (ctx, outcome) = done.into_parts();
                let unauthorized =
                    matches!(&outcome, Err(r) if r.kind == RefusalKind::Unauthorized);
                match (unauthorized, fallback.take()) {
                    (true, Some(fb)) => sign_in_instead(ctx, outcome, *fb),
                    _ => return Poll::Ready(Ok(Done::with(ctx, outcome))),
                }
            }
        };
        self.set(SignInFuture::Own { future });
        self.project_own_poll(cx)
    }
}

impl<F> SignInFuture<F> {
    fn project_own_poll(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<Done, Infallible>> {
        match self.project() {
            SignInProj::Own { future } => future.as_mut().poll(cx).map(Ok),
            // Only called right after becoming `Own`.
            _ => Poll::Pending,
        }
    }
}

/// A navigation the stack refused as unauthenticated: renew an ended session that has a refresh
/// token, or start a sign-in that returns here.
fn sign_in_instead(ctx: ContextBox, outcome: Outcome, fb: Fallback) -> Boxed {
    Box::pin(async move {
        let snap = ctx.snap.clone();
        let Some(oidc) = snap.sources.oidc.as_ref() else {
            return Done::with(ctx, outcome);
        };
        let Some(origin) = fb.origin else {
            return Done::with(ctx, outcome);
        };
        let now = unix_now();
        if let Some(session) = oidc.renewable(&fb.cookies, origin.https, now) {
            match oidc.renew(&origin, session, &fb.return_to, now).await {
                Ok(r) => {
                    tracing::info!(request_id = ?ctx.request_id, subject = r.subject.as_deref().unwrap_or(""), "session renewed with the refresh token");
                    return answer(ctx, r, StatusCode::FOUND);
                }
                Err(e) => {
                    tracing::info!(request_id = ?ctx.request_id, code = e.code(), "session renewal refused; signing in again");
                }
            }
        }
        match begin(
            oidc,
            &snap.config.server.allowed_origins,
            &origin,
            &fb.return_to,
            now,
        ) {
            Ok(mut r) => {
                // A cookie that did not hold is cleared, so the browser does not keep sending it.
                if let Err(refusal) = &outcome {
                    if refusal.code.starts_with("session_") {
                        let jar = oidc::cookie::Jar {
                            https: origin.https,
                        };
                        r.set_cookies.extend(jar.clear(jar.session_name()));
                    }
                }
                answer(ctx, r, StatusCode::FOUND)
            }
            Err(e) => refuse(ctx, e),
        }
    })
}

/// Starts a sign-in from `origin`, which must be one of the public origins when any are configured.
fn begin(
    oidc: &OidcSource,
    allowed: &[String],
    origin: &BrowserOrigin,
    return_to: &str,
    now: u64,
) -> Result<Redirect, OidcError> {
    let own = origin.origin();
    if !allowed.is_empty() && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&own)) {
        return Err(OidcError::NotPublicOrigin(own));
    }
    oidc.begin(origin, return_to, now)
}

/// The sign-in endpoints.
enum Own {
    Callback,
    Login,
    Logout,
}

/// Which sign-in endpoint the request is for, if any (whoami and the upstream's paths are not).
fn own_kind(ctx: &Context) -> Option<Own> {
    let path = ctx.uri.path();
    if !path.starts_with(OWN_PREFIX) {
        return None;
    }
    match (path, &ctx.method) {
        (oidc::CALLBACK_PATH, &Method::GET) => Some(Own::Callback),
        (oidc::LOGIN_PATH, &Method::GET) => Some(Own::Login),
        (oidc::LOGOUT_PATH, &Method::GET | &Method::POST) => Some(Own::Logout),
        _ => None,
    }
}

/// The answers of `/.scopegate/callback`, `/login` and `/logout`.
fn own_endpoint<B: Send + 'static>(which: Own, ex: Exchange<B>, shared: Arc<Shared>) -> Boxed {
    Box::pin(async move {
        let Exchange { ctx, req } = ex;
        let snap = ctx.snap.clone();
        let Some(oidc) = snap.sources.oidc.as_ref() else {
            return Done::refused(
                ctx,
                Refusal::new(
                    RefusalKind::NotFound,
                    "not_found",
                    "sign-in is not configured",
                ),
            );
        };
        let Some(origin) =
            BrowserOrigin::of(ctx.conn.tls, &ctx.forwarded, req.headers(), req.uri())
        else {
            return Done::refused(
                ctx,
                Refusal::bad_request("missing_host", "the request names no host"),
            );
        };
        let now = unix_now();
        match which {
            Own::Callback => match oidc
                .finish(&origin, req.uri().query(), req.headers(), now)
                .await
            {
                Ok(r) => {
                    tracing::info!(request_id = ?ctx.request_id, subject = r.subject.as_deref().unwrap_or(""), "signed in");
                    answer(ctx, r, StatusCode::FOUND)
                }
                Err(e) => refuse(ctx, e),
            },
            Own::Login => {
                let ret = match oidc::flow::query_params(req.uri().query(), &["return"]) {
                    Ok(p) => oidc::flow::param(&p, "return").unwrap_or("/").to_string(),
                    Err(e) => return refuse(ctx, e),
                };
                match begin(
                    oidc,
                    &snap.config.server.allowed_origins,
                    &origin,
                    &ret,
                    now,
                ) {
                    Ok(r) => answer(ctx, r, StatusCode::FOUND),
                    Err(e) => refuse(ctx, e),
                }
            }
            Own::Logout => {
                // A page elsewhere may not sign the visitor out either.
                if let Some(site) = req.headers().get("sec-fetch-site") {
                    let site = site.to_str().unwrap_or("?");
                    if !matches!(site, "same-origin" | "none") {
                        return refuse(
                            ctx,
                            OidcError::CrossSite(format!("Sec-Fetch-Site: {site}")),
                        );
                    }
                }
                let r = oidc.logout(&origin, req.headers());
                if let (Some(subject), Some(until)) = (&r.subject, r.signed_in_until) {
                    super::revoke::signed_out(&shared, subject, until);
                }
                tracing::info!(request_id = ?ctx.request_id, subject = r.subject.as_deref().unwrap_or(""), "signed out");
                let status = if ctx.method == Method::POST {
                    StatusCode::SEE_OTHER
                } else {
                    StatusCode::FOUND
                };
                answer(ctx, r, status)
            }
        }
    })
}

fn refuse(ctx: ContextBox, e: OidcError) -> Done {
    tracing::warn!(request_id = ?ctx.request_id, code = e.code(), reason = %e.message(), "sign-in refused");
    Done::refused(ctx, e.refusal())
}

/// A redirect of scopegate's own, with its cookies; never cached.
fn answer(ctx: ContextBox, r: Redirect, status: StatusCode) -> Done {
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    match HeaderValue::from_str(&r.location) {
        Ok(v) => {
            h.insert(header::LOCATION, v);
        }
        Err(_) => {
            return Done::refused(
                ctx,
                Refusal::new(
                    RefusalKind::Internal,
                    "internal",
                    "the redirect cannot be written",
                ),
            )
        }
    }
    for c in r.set_cookies {
        h.append(header::SET_COOKIE, c);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(crate::header_names::X_REQUEST_ID, ctx.request_id.clone());
    Done::answered(ctx, resp)
}

/// A browser navigation: what a person typed or clicked, which may be sent to a sign-in page.
fn is_navigation<B>(ex: &Exchange<B>) -> bool {
    if !matches!(ex.ctx.method, Method::GET | Method::HEAD) || ex.ctx.websocket {
        return false;
    }
    let h = ex.req.headers();
    match h.get("sec-fetch-mode") {
        Some(mode) => mode.as_bytes().eq_ignore_ascii_case(b"navigate"),
        None => {
            !h.contains_key("x-requested-with")
                && h.get_all(header::ACCEPT)
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|v| v.contains("text/html")))
        }
    }
}

fn origin_of<B>(ex: &Exchange<B>) -> Option<BrowserOrigin> {
    BrowserOrigin::of(
        ex.ctx.conn.tls,
        &ex.ctx.forwarded,
        ex.req.headers(),
        ex.req.uri(),
    )
}

fn cookies(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for v in headers.get_all(header::COOKIE) {
        out.append(header::COOKIE, v.clone());
    }
    out
}

/// A request identified by its session cookie may open a WebSocket or change state only from
/// scopegate's own origin (or a configured public one): the cookie is ambient, the headers are not.
pub fn check_ambient<B>(ex: &Exchange<B>) -> Result<(), Refusal> {
    let ctx = &ex.ctx;
    let by_cookie = ctx
        .identified
        .identity
        .as_ref()
        .is_some_and(|i| i.method == AuthMethod::Oidc);
    let safe = matches!(ctx.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !by_cookie || (safe && !ctx.websocket) {
        return Ok(());
    }
    let Some(own) = origin_of(ex) else {
        return Err(Refusal::bad_request(
            "missing_host",
            "the request names no host",
        ));
    };
    check_same_origin(ex.req.headers(), &own, &ctx.snap.config.server.allowed_origins)
        .map_err(|e| {
            tracing::warn!(request_id = ?ctx.request_id, code = e.code(), reason = %e.message(), "ambient cookie refused");
            e.refusal()
        })
}
