//! Identify: who is calling, by the precedence rule of `identity` (the request's own credential wins;
//! network identities only from trusted peers).
//!
//! The common case never waits: an API token or a JWT verified before is answered from the token
//! cache, synchronously. Everything else — a first-seen JWT (a JWKS refetch may be needed), a
//! Tailscale WhoIs — runs in a boxed future, on this slow path only. A credential about to be verified first reserves one failed authentication from the client
//! address's bucket, so a locked-out address costs no signature check; a valid credential gives it
//! back. Once the caller is known, its per-identity request bucket is charged.
//!
//! The route is matched here, before identification, so that every refusal — a 401 included — is
//! attributed to the route in the audit line and the metrics.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Instant;

use http::header;
use tower::Service;

use super::context::{Context, Done, Exchange};
use super::phase::Step;
use crate::error::{Refusal, RefusalKind};
use crate::identity::{Identified, Identity, RequestFacts};
use crate::runtime::Snapshot;

/// The identify phase (a tower layer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Identify;

impl<S> tower::Layer<S> for Identify {
    type Service = IdentifyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdentifyService { inner }
    }
}

#[derive(Clone)]
pub struct IdentifyService<S> {
    inner: S,
}

type Slow<B> =
    Pin<Box<dyn Future<Output = (Exchange<B>, Result<Identified, Refusal>)> + Send + 'static>>;

impl<S, B> Service<Exchange<B>> for IdentifyService<S>
where
    S: Service<Exchange<B>, Response = Done, Error = Infallible> + Clone,
    B: Send + Sync + 'static,
{
    type Response = Done;
    type Error = Infallible;
    type Future = IdentifyFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut ex: Exchange<B>) -> Self::Future {
        let ctx = &mut ex.ctx;
        let route = ctx
            .snap
            .policy
            .routes
            .find(&ctx.method, ctx.uri.path(), ctx.websocket);
        ctx.route = Some(route);
        let cached = {
            let facts = facts(ctx, ex.req.headers());
            ctx.snap.sources.identify_cached(&facts)
        };
        match cached {
            Some(identified) => IdentifyFuture::Step {
                step: proceed(&mut self.inner, ex, identified),
            },
            None => {
                // The readied service goes with the slow future; this one keeps a fresh clone.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                IdentifyFuture::Slow {
                    identifying: Box::pin(async move {
                        let identified = identify_slowly(&ex).await;
                        (ex, identified)
                    }),
                    inner: Some(inner),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The identify phase's future: decided at once (cached credentials, refusals), or waiting for a
    /// verification and then the next phase.
    #[project = IdentifyProj]
    pub enum IdentifyFuture<S: Service<Exchange<B>>, B> {
        Step { #[pin] step: Step<S::Future> },
        Slow { identifying: Slow<B>, inner: Option<S> },
    }
}

impl<S, B> Future for IdentifyFuture<S, B>
where
    S: Service<Exchange<B>, Response = Done, Error = Infallible>,
{
    type Output = Result<Done, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        loop {
            let step = match self.as_mut().project() {
                IdentifyProj::Step { step } => return step.poll(cx),
                IdentifyProj::Slow { identifying, inner } => {
                    let (ex, identified) = ready!(identifying.as_mut().poll(cx));
                    match inner.as_mut() {
                        Some(inner) => proceed(inner, ex, identified),
                        None => return Poll::Pending,
                    }
                }
            };
            self.set(IdentifyFuture::Step { step });
        }
    }
}

/// Records the outcome, charges the identity's bucket, and calls the next phase (or refuses).
fn proceed<S, B>(
    inner: &mut S,
    mut ex: Exchange<B>,
    identified: Result<Identified, Refusal>,
) -> Step<S::Future>
where
    S: Service<Exchange<B>, Response = Done, Error = Infallible>,
{
    let outcome = identified.and_then(|identified| {
        ex.ctx.identified = identified;
        super::sign_in::check_ambient(&ex)?;
        charge_identity(&ex.ctx)
    });
    match outcome {
        Ok(()) => Step::next(inner.call(ex)),
        Err(refusal) => Step::now(Done::refused(ex.ctx, refusal)),
    }
}

fn facts<'a>(ctx: &Context, headers: &'a http::HeaderMap) -> RequestFacts<'a> {
    RequestFacts {
        peer: ctx.conn.peer,
        headers,
        client_ip: ctx.forwarded.client_ip,
        https: ctx.conn.tls || ctx.forwarded.proto == Some("https"),
    }
}

/// The full identification of a request whose credential is not cached.
async fn identify_slowly<B>(ex: &Exchange<B>) -> Result<Identified, Refusal> {
    let ctx = &ex.ctx;
    let snap = &*ctx.snap;
    let headers = ex.req.headers();
    let attempt = headers
        .contains_key(header::AUTHORIZATION)
        .then(|| reserve_failure(snap, ctx.forwarded.client_ip, ctx.started))
        .transpose()?;
    let identified = snap.sources.identify(&facts(ctx, headers)).await;
    settle(snap, attempt, &identified);
    identified
}

/// Verifies one bearer credential — the in-band `connect` frame's token — under the same
/// failed-authentication budget as a request's `Authorization` header.
pub async fn verify_bearer(
    snap: &Snapshot,
    token: &str,
    client_ip: Option<IpAddr>,
) -> Result<Arc<Identity>, Refusal> {
    let attempt = reserve_failure(snap, client_ip, Instant::now())?;
    let verified = snap.sources.verify_bearer(token).await;
    settle(snap, Some(attempt), &verified);
    verified
}

fn reserve_failure(
    snap: &Snapshot,
    client_ip: Option<IpAddr>,
    at: Instant,
) -> Result<crate::limits::AuthAttempt, Refusal> {
    snap.limiter
        .auth_attempt(&snap.config.limits, client_ip, at)
}

/// A credential that was not refused as invalid gives its reserved failure back.
fn settle<T>(
    snap: &Snapshot,
    attempt: Option<crate::limits::AuthAttempt>,
    outcome: &Result<T, Refusal>,
) {
    if let Some(attempt) = attempt {
        let failed = matches!(outcome, Err(r) if r.kind == RefusalKind::Unauthorized);
        if !failed {
            snap.limiter.auth_succeeded(attempt);
        }
    }
}

/// One request against the caller's per-identity bucket.
fn charge_identity(ctx: &Context) -> Result<(), Refusal> {
    let Some(id) = &ctx.identified.identity else {
        return Ok(());
    };
    let tag = *id
        .limit_tag
        .get_or_init(|| crate::limits::key_tag(id.subject.as_str()));
    ctx.snap
        .limiter
        .request_by(&ctx.snap.config.limits, tag, ctx.started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::{config, exchange, get, run, snapshot, Outcome};

    fn with_token(snap: &Arc<Snapshot>, ip: &str, token: Option<&str>) -> Exchange<()> {
        let mut req = get("/v1/models");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut ex = exchange(snap, ip, req.body(()).unwrap());
        ex.ctx.forwarded.client_ip = ip.parse().ok();
        ex
    }

    #[tokio::test]
    async fn credentials_identify_or_refuse_and_bad_ones_spend_the_failure_budget() {
        let snap = snapshot(&config());
        let cases = [
            (Some("sg_reader"), "reached", Some("reader")),
            (Some("sg_writer"), "reached", Some("writer")),
            (None, "reached", None),
            (Some("not a token"), "malformed_authorization", None),
        ];
        for (token, want, subject) in cases {
            let got = run(Identify, with_token(&snap, "192.0.2.9", token)).await;
            assert_eq!(got.code(), want, "{token:?}");
            if let Outcome::Reached(ex) = got {
                let who = ex
                    .ctx
                    .identified
                    .identity
                    .as_ref()
                    .map(|i| i.subject.as_str());
                assert_eq!(who, subject, "{token:?}");
                assert!(
                    ex.ctx.route.is_some(),
                    "the route is matched before identification"
                );
            }
        }
        // One failure an hour per address (the test config): the second unknown token is refused
        // before it is looked at, and a valid token from the same address gives nothing back.
        let ip = "198.51.100.3";
        assert_eq!(
            run(Identify, with_token(&snap, ip, Some("guess-1")))
                .await
                .code(),
            "unknown_token"
        );
        assert_eq!(
            run(Identify, with_token(&snap, ip, Some("guess-2")))
                .await
                .code(),
            "failed_auth"
        );
        assert_eq!(
            run(Identify, with_token(&snap, "198.51.100.4", Some("guess-1")))
                .await
                .code(),
            "unknown_token"
        );
    }
}
