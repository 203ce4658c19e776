//! Inject: what the upstream may rely on. Every client copy of a managed header (identity, scopes,
//! forwarding, the assertion, hop-by-hop and `Connection`-nominated ones) is removed first — the
//! originals were read by identification, before this — and then scopegate sets its own: the
//! forwarding headers, the request id, the profile's headers (OpenClaw: user header,
//! `X-OpenClaw-Scopes`, its `X-Forwarded-For`) and the signed assertion bound to the method and the
//! exact forwarded path. A client can therefore neither keep nor remove any of them.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::{self, HeaderValue};

use super::context::{Context, Exchange};
use super::phase::{Phase, PhaseService, Verdict};
use crate::assertion::AssertionInput;
use crate::error::Refusal;
use crate::identity::forwarded;
use crate::policy::Decision;
use crate::upstream::injected::Injected;
use crate::upstream::openclaw::ToGateway;

/// The inject phase (a tower layer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Inject;

impl<S> tower::Layer<S> for Inject {
    type Service = PhaseService<Inject, S>;

    fn layer(&self, inner: S) -> Self::Service {
        PhaseService::new(Inject, inner)
    }
}

impl Phase for Inject {
    fn run<B>(&self, ex: &mut Exchange<B>) -> Verdict {
        let Exchange { ctx, req } = ex;
        // The in-band path injects into the upstream upgrade it opens once the credential arrives.
        if ctx.in_band {
            return Verdict::Next;
        }
        let Some(decision) = ctx.decision else {
            return Verdict::Refuse(Refusal::new(
                crate::error::RefusalKind::Internal,
                "internal",
                "no decision was made for this request",
            ));
        };
        let forwarded_path = forwarded_path(&ctx.snap.config.upstream.base_path, ctx.uri.path());
        let headers = req.headers_mut();
        let original_host = headers
            .get(header::HOST)
            .filter(|h| h.to_str().is_ok_and(forwarded::valid_host))
            .cloned();
        ctx.snap.hygiene.scrub(headers);
        if ctx.snap.sources.oidc.is_some() {
            // The session is scopegate's credential; the upstream never sees it.
            crate::identity::oidc::cookie::strip(headers);
        }
        headers.remove(header::HOST);
        headers.remove(header::EXPECT);
        // Not a managed name (trusted peers may send one), but scopegate sends its own.
        headers.remove(crate::header_names::X_REQUEST_ID);
        let mut injected = Injected::default();
        ctx.effective_names = Some(set_upstream_headers(
            ctx,
            &mut injected,
            &decision,
            &forwarded_path,
            original_host,
        ));
        ctx.injected = injected;
        Verdict::Next
    }
}

/// The path the upstream will see (the assertion's `htp`): the upstream URL's base path, then ours.
pub fn forwarded_path<'a>(base_path: &str, path: &'a str) -> Cow<'a, str> {
    if base_path.is_empty() {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("{base_path}{path}"))
    }
}

/// Sets what the upstream may rely on: forwarding headers, the request id, the profile's headers and the
/// signed assertion. Runs after `scrub`, so no client copy of any of these survives. Returns the
/// effective scopes' names, space-separated.
pub fn set_upstream_headers(
    ctx: &Context,
    headers: &mut Injected,
    decision: &Decision,
    forwarded_path: &str,
    original_host: Option<HeaderValue>,
) -> Arc<str> {
    use crate::header_names::*;
    let (snap, conn, ex) = (&*ctx.snap, &*ctx.conn, ctx);
    let identity = ex.identified.identity.as_deref();
    let proto = if conn.tls {
        "https"
    } else {
        ex.forwarded.proto.unwrap_or("http")
    };
    headers.set(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    let host = match &ex.forwarded.host {
        Some(h) => HeaderValue::from_str(h).ok(),
        None => original_host,
    };
    if let Some(v) = host {
        headers.set(X_FORWARDED_HOST, v);
    }
    headers.set(X_REQUEST_ID, ex.request_id.clone());
    let (scopes_comma, scopes_space) = snap.scope_strings(decision.effective);
    match &snap.openclaw {
        // The profile sets its own headers, X-Forwarded-For among them.
        Some(oc) => oc.set_headers(
            headers,
            ToGateway {
                client_ip: ex.forwarded.client_ip,
                peer_ip: conn.peer.ip(),
                peer_value: conn.peer_value.as_ref(),
                scopes: scopes_comma,
                user: identity.and_then(|id| {
                    id.gateway_header
                        .get_or_init(|| HeaderValue::from_str(oc.gateway_user(&id.subject)).ok())
                        .as_ref()
                }),
            },
        ),
        // X-Forwarded-For: overwritten, never appended; the peer's value is made once per connection.
        None => {
            let xff = match ex.forwarded.client_ip {
                Some(ip) if Some(ip) == conn.peer.ip() => conn.peer_value.clone(),
                Some(ip) => HeaderValue::from_str(&ip.to_string()).ok(),
                None => None,
            };
            if let Some(v) = xff {
                headers.set(X_FORWARDED_FOR, v);
            }
        }
    }
    let assertion = snap.assertion.assertion_at(
        &AssertionInput {
            subject: identity.map(|i| i.subject.as_str()).unwrap_or(""),
            amr: identity.map(|i| i.method),
            scope: &scopes_space,
            scope_bits: decision.effective,
            client_ip: ex.forwarded.client_ip,
            method: &ex.method,
            path: forwarded_path,
        },
        ex.started,
    );
    headers.set(snap.assertion.header_name().clone(), assertion);
    scopes_space
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::{config, exchange, get, run, snapshot, Outcome};
    use crate::proxy::{Authorise, Identify};
    use tower::ServiceBuilder;

    struct Path3;
    impl<S> tower::Layer<S> for Path3 {
        type Service =
            <Identify as tower::Layer<PhaseService<Authorise, PhaseService<Inject, S>>>>::Service;
        fn layer(&self, inner: S) -> Self::Service {
            ServiceBuilder::new()
                .layer(Identify)
                .layer(Authorise)
                .layer(Inject)
                .service(inner)
        }
    }

    #[tokio::test]
    async fn client_copies_go_and_scopegates_own_headers_are_set() {
        let snap = snapshot(&config());
        let req = get("/v1/models")
            .header("authorization", "Bearer sg_reader")
            .header("x-forwarded-user", "root")
            .header("x-openclaw-scopes", "operator.admin")
            .header("x-scopegate-assertion", "forged")
            .header("connection", "x-keep-me")
            .header("x-keep-me", "1")
            .header("x-request-id", "client-chosen")
            .body(())
            .unwrap();
        let mut ex = exchange(&snap, "192.0.2.9", req);
        // What hygiene would have established for this peer.
        ex.ctx.forwarded.client_ip = "192.0.2.9".parse().ok();
        let Outcome::Reached(ex) = run(Path3, ex).await else {
            panic!("refused");
        };
        // The client's headers keep no managed name: the wire path writes both lists as they are.
        for managed in [
            "x-forwarded-user",
            "x-openclaw-scopes",
            "x-scopegate-assertion",
            "x-request-id",
            "host",
        ] {
            assert!(!ex.req.headers().contains_key(managed), "{managed} kept");
        }
        // What the upstream is sent: the client's scrubbed headers, then scopegate's own.
        let mut h = ex.req.headers().clone();
        ex.ctx.injected.clone().apply_to(&mut h);
        assert_eq!(
            h["x-openclaw-scopes"],
            "operator.read,operator.sessions.read"
        );
        assert_ne!(h["x-forwarded-user"], "root");
        assert_ne!(h["x-scopegate-assertion"], "forged");
        assert_eq!(h["x-forwarded-for"], "192.0.2.9");
        assert_eq!(h["x-request-id"], "test-1");
        for gone in ["host", "connection", "x-keep-me"] {
            assert!(!h.contains_key(gone), "{gone} reached the upstream");
        }
        assert_eq!(forwarded_path("/base", "/v1/x"), "/base/v1/x");
        assert!(matches!(
            forwarded_path("", "/v1/x"),
            Cow::Borrowed("/v1/x")
        ));
    }
}
