//! Authorise: the route's requirement against the caller's effective scopes, decided by
//! `policy::decide` (plain data in, a `Decision` with its reasons out).
//!
//! `GET /.scopegate/whoami` is answered here with the caller's own decision instead of being
//! forwarded. An unauthenticated WebSocket to an OpenClaw gateway is not refused: OpenClaw's own
//! clients send their credential inside the first frame, so the request is marked `in_band` and the
//! decision is made again, by the same function, once that credential arrives (see `forward`).

use http::{Method, Request, StatusCode};

use super::context::{json_response, Context, Exchange};
use super::phase::{Phase, PhaseService, Verdict};
use crate::error::{Refusal, RefusalKind};
use crate::policy::{decide, Decision, DenyKind, ScopeSet};
use crate::runtime::Snapshot;

pub const WHOAMI_PATH: &str = "/.scopegate/whoami";

/// The authorise phase (a tower layer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Authorise;

impl<S> tower::Layer<S> for Authorise {
    type Service = PhaseService<Authorise, S>;

    fn layer(&self, inner: S) -> Self::Service {
        PhaseService::new(Authorise, inner)
    }
}

impl Phase for Authorise {
    fn run<B>(&self, ex: &mut Exchange<B>) -> Verdict {
        let Exchange { ctx, req } = ex;
        if ctx.uri.path() == WHOAMI_PATH && matches!(ctx.method, Method::GET | Method::HEAD) {
            return match crate::proxy::explain::whoami(
                &ctx.snap,
                &ctx.identified,
                ctx.forwarded.client_ip,
                req.uri().query(),
            ) {
                Ok(body) => Verdict::Answer(Box::new(json_response(
                    StatusCode::OK,
                    body,
                    &ctx.request_id,
                ))),
                Err(refusal) => Verdict::Refuse(refusal),
            };
        }
        let requested = match requested_scopes(&ctx.snap, req) {
            Ok(r) => r,
            Err(refusal) => return Verdict::Refuse(refusal),
        };
        match authorise(ctx, requested) {
            Ok(()) => Verdict::Next,
            Err(refusal) => Verdict::Refuse(refusal),
        }
    }
}

/// Decides the request for the identity in `ctx` and records the decision; the in-band fork is
/// recorded as `ctx.in_band` with no decision yet.
pub fn authorise(ctx: &mut Context, requested: Option<ScopeSet>) -> Result<(), Refusal> {
    let snap = &*ctx.snap;
    let identity = ctx.identified.identity.as_deref();
    let route = ctx.route.unwrap_or_else(|| {
        snap.policy
            .routes
            .find(&ctx.method, ctx.uri.path(), ctx.websocket)
    });
    let decision = decide(&snap.policy, identity, route, requested);
    ctx.decision = Some(decision);
    if decision.allowed() {
        return Ok(());
    }
    if ctx.websocket
        && identity.is_none()
        && decision.deny == Some(DenyKind::Unauthenticated)
        && snap.openclaw.as_ref().is_some_and(|p| p.in_band_auth)
    {
        // OpenClaw's own clients send their credential inside the first WebSocket frame; the
        // decision is made (and audited) again once it arrives.
        ctx.in_band = true;
        ctx.decision = None;
        return Ok(());
    }
    Err(refusal(snap, ctx, &decision))
}

/// The contract's refusal for a denied decision, with the anonymous caller's hint when there is one.
fn refusal(snap: &Snapshot, ctx: &Context, decision: &Decision) -> Refusal {
    let identity = ctx.identified.identity.as_deref();
    let mut refusal = decision
        .refusal(&snap.policy, identity, &ctx.method, ctx.uri.path())
        .unwrap_or_else(|| Refusal::new(RefusalKind::Forbidden, "denied", "denied"));
    if identity.is_none() {
        if let Some(hint) = &ctx.identified.anonymous_reason {
            refusal.reasons.push(hint.clone());
        }
    }
    refusal
}

/// The client's own narrowing (`[policy] request_scopes_header`): literal scopes, comma or space separated.
fn requested_scopes<B>(snap: &Snapshot, req: &Request<B>) -> Result<Option<ScopeSet>, Refusal> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::{config, exchange, get, run, snapshot, Outcome};
    use crate::proxy::Identify;
    use tower::ServiceBuilder;

    /// Identify then authorise (a decision needs an identity).
    struct Both;
    impl<S> tower::Layer<S> for Both {
        type Service = <Identify as tower::Layer<PhaseService<Authorise, S>>>::Service;
        fn layer(&self, inner: S) -> Self::Service {
            ServiceBuilder::new()
                .layer(Identify)
                .layer(Authorise)
                .service(inner)
        }
    }

    #[tokio::test]
    async fn the_route_decides_against_the_effective_scopes() {
        let snap = snapshot(&config());
        let req = |m: Method, path: &str, token: Option<&str>, ws: bool| {
            let mut r = get(path).method(m);
            if let Some(t) = token {
                r = r.header("authorization", format!("Bearer {t}"));
            }
            let mut ex = exchange(&snap, "192.0.2.9", r.body(()).unwrap());
            ex.ctx.websocket = ws;
            ex
        };
        let cases = [
            (
                "read with a read token",
                req(Method::GET, "/v1/models", Some("sg_reader"), false),
                "reached",
            ),
            (
                "write with a read token",
                req(Method::POST, "/v1/responses", Some("sg_reader"), false),
                "missing_scope",
            ),
            (
                "write with a write token",
                req(Method::POST, "/v1/responses", Some("sg_writer"), false),
                "reached",
            ),
            (
                "no credential",
                req(Method::GET, "/v1/models", None, false),
                "no_credential",
            ),
            (
                "in-band WebSocket",
                req(Method::GET, "/", None, true),
                "reached",
            ),
        ];
        for (name, ex, want) in cases {
            let got = run(Both, ex).await;
            assert_eq!(got.code(), want, "{name}");
            if let Outcome::Reached(ex) = got {
                assert_eq!(ex.ctx.in_band, name == "in-band WebSocket", "{name}");
                assert_eq!(ex.ctx.decision.is_some(), !ex.ctx.in_band, "{name}");
            }
        }
        let whoami = run(
            Both,
            req(Method::GET, WHOAMI_PATH, Some("sg_reader"), false),
        )
        .await;
        assert!(matches!(whoami, Outcome::Answered(200)));
    }
}
