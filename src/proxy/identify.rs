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

use http::header::{self, HeaderValue};
use tower::Service;

use super::context::{Context, Done, Exchange, Remembered};
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
        let cached = identify_cached(ctx, ex.req.headers());
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

/// The synchronous identification: recalled from the connection's last proved credential when the
/// request carries exactly its `Authorization` value under the same snapshot, from the sources'
/// caches otherwise (and then remembered). A connection's concurrent HTTP/2 streams never wait for
/// each other here: one that finds the memory in use goes the ordinary way.
fn identify_cached(
    ctx: &Context,
    headers: &http::HeaderMap,
) -> Option<Result<Identified, Refusal>> {
    let snap = &*ctx.snap;
    let facts = facts(ctx, headers);
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let single = match (values.next(), values.next()) {
        (Some(v), None) => Some(v),
        _ => None,
    };
    let Some(authorization) = single else {
        return snap.sources.identify_cached(&facts);
    };
    if let Ok(memory) = ctx.conn.remembered.try_lock() {
        let recalled = memory
            .as_ref()
            .filter(|m| m.generation == snap.generation && m.authorization == authorization)
            .and_then(|m| snap.sources.recall(&m.proof, &facts));
        if recalled.is_some() {
            return recalled;
        }
    }
    let (identified, proof) = snap.sources.identify_cached_proving(&facts);
    if let Some(proof) = proof {
        if let (Ok(mut memory), Ok(copy)) = (
            ctx.conn.remembered.try_lock(),
            HeaderValue::from_bytes(authorization.as_bytes()),
        ) {
            *memory = Some(Remembered {
                generation: snap.generation,
                authorization: copy,
                proof,
            });
        }
    }
    identified
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

    /// `token` as the next request on `conn` (one keep-alive connection, many requests).
    fn on_conn(
        snap: &Arc<Snapshot>,
        conn: &Arc<crate::proxy::context::ConnInfo>,
        token: &str,
    ) -> Exchange<()> {
        let req = get("/v1/models")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        let ctx = crate::proxy::recycle::ContextBox::new(Context::new(
            snap.clone(),
            conn.clone(),
            HeaderValue::from_static("test-1"),
            &req,
        ));
        Exchange { ctx, req }
    }

    async fn subject(
        snap: &Arc<Snapshot>,
        conn: &Arc<crate::proxy::context::ConnInfo>,
        token: &str,
    ) -> String {
        match run(Identify, on_conn(snap, conn, token)).await {
            Outcome::Reached(ex) => ex
                .ctx
                .identified
                .identity
                .as_ref()
                .map_or("anonymous".into(), |i| i.subject.clone()),
            other => other.code().to_string(),
        }
    }

    fn remembered(conn: &crate::proxy::context::ConnInfo) -> Option<(u64, String)> {
        let memory = conn.remembered.lock().unwrap();
        memory.as_ref().map(|m| {
            (
                m.generation,
                m.authorization.to_str().unwrap_or("?").to_string(),
            )
        })
    }

    #[tokio::test]
    async fn a_connection_recalls_only_the_same_credential_under_the_same_snapshot() {
        let snap = snapshot(&config());
        let conn = Arc::new(crate::proxy::context::ConnInfo::new(
            crate::identity::Peer::Tcp("192.0.2.20".parse().unwrap()),
            false,
        ));
        assert_eq!(subject(&snap, &conn, "sg_reader").await, "reader");
        assert_eq!(remembered(&conn), Some((1, "Bearer sg_reader".into())));
        // Another credential on the same connection is identified, not recalled as the last one.
        assert_eq!(subject(&snap, &conn, "sg_writer").await, "writer");
        assert_eq!(remembered(&conn), Some((1, "Bearer sg_writer".into())));
        assert_eq!(subject(&snap, &conn, "sg_writer").await, "writer");
        // A reload that removes the token: the connection's memory is of another snapshot, so the
        // same bytes are looked up again, and refused.
        let without_writer = config().replace(
            &crate::identity::api_token::sha256_hex(b"sg_writer"),
            &crate::identity::api_token::sha256_hex(b"sg_someone_else"),
        );
        let cfg = crate::config::Config::parse(&without_writer, None).unwrap();
        let reloaded = Arc::new(Snapshot::build(cfg, 2, None).unwrap());
        assert_eq!(
            subject(&reloaded, &conn, "sg_writer").await,
            "unknown_token"
        );
        // A refused credential is not remembered.
        assert_eq!(remembered(&conn), Some((1, "Bearer sg_writer".into())));
        assert_eq!(subject(&reloaded, &conn, "sg_reader").await, "reader");
        assert_eq!(remembered(&conn), Some((2, "Bearer sg_reader".into())));
    }
}
