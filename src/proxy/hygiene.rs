//! Hygiene: what may be trusted, decided before anything reads a header.
//!
//! The path must have exactly one reading, `Host` and the target must agree, HTTP/1 framing must be
//! unambiguous, `CONNECT` is not proxied, a trusted peer must not pass an alias spelling of a managed
//! header, the forwarding headers are believed only from trusted peers (which fixes the client
//! address every later phase uses), and a claimed WebSocket upgrade must be a complete opening
//! handshake from an allowed origin. Removing the client's copies of managed headers happens at
//! inject time, after identification has read the originals (see `inject`).

use http::header;
use http::{Method, Request, Version};

use super::context::{Context, Exchange};
use super::phase::{Phase, Verdict};
use crate::error::{Refusal, RefusalKind};
use crate::identity::forwarded;
use crate::identity::hygiene::{is_websocket_upgrade, websocket_handshake};
use crate::policy::canonical_path;

/// The hygiene phase (a tower layer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hygiene;

impl<S> tower::Layer<S> for Hygiene {
    type Service = super::phase::PhaseService<Hygiene, S>;

    fn layer(&self, inner: S) -> Self::Service {
        super::phase::PhaseService::new(Hygiene, inner)
    }
}

impl Phase for Hygiene {
    fn run<B>(&self, ex: &mut Exchange<B>) -> Verdict {
        inspect(ex).into()
    }
}

fn inspect<B>(ex: &mut Exchange<B>) -> Result<(), Refusal> {
    let Exchange { ctx, req } = ex;
    let ctx: &mut Context = ctx;
    let snap = &*ctx.snap;
    canonical_path(ctx.uri.path()).map_err(|why| {
        Refusal::bad_request(why.code(), format!("ambiguous path: {}", why.message()))
    })?;
    check_authority(req)?;
    check_framing(req)?;
    if ctx.method == Method::CONNECT {
        return Err(Refusal::bad_request(
            "connect_not_supported",
            "CONNECT is not proxied",
        ));
    }
    let peer = ctx.conn.peer;
    let peer_trusted = snap.trusts_forwarding(peer);
    if peer_trusted {
        if let Some(alias) = snap.hygiene.smuggled_alias(req.headers()) {
            return Err(Refusal::bad_request(
                "smuggled_header_alias",
                format!("the trusted peer passed an alias spelling of a managed header ({alias})"),
            ));
        }
    }
    ctx.forwarded = forwarded::resolve(
        req.headers(),
        peer.ip(),
        peer_trusted,
        &snap.forwarding_peers,
    )?;
    ctx.websocket = is_websocket_upgrade(req.headers());
    if ctx.websocket {
        // A claimed upgrade is a complete opening handshake, or nothing is forwarded.
        websocket_handshake(&ctx.method, req.version(), req.headers())?;
        check_origin(
            &snap.config.server.allowed_origins,
            req.headers(),
            ctx.forwarded.host.as_deref(),
        )?;
    }
    Ok(())
}

/// `Host` and the request target's authority (HTTP/1.1 absolute-form, HTTP/2 `:authority`) must agree.
fn check_authority<B>(req: &Request<B>) -> Result<(), Refusal> {
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
fn check_framing<B>(req: &Request<B>) -> Result<(), Refusal> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::{config, exchange, get, run, snapshot, Outcome};

    #[tokio::test]
    async fn hygiene_refuses_every_ambiguous_request_and_fixes_the_client_address() {
        let snap = snapshot(&config());
        let ws = |b: http::request::Builder| {
            b.header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
        };
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let cases: Vec<(&str, &str, http::Request<()>, &str)> = vec![
            (
                "plain GET",
                "192.0.2.9",
                get("/v1/models").body(()).unwrap(),
                "reached",
            ),
            (
                "double slash",
                "192.0.2.9",
                get("/v1//models").body(()).unwrap(),
                "path_empty_segment",
            ),
            (
                "encoded slash",
                "192.0.2.9",
                get("/v1%2Fmodels").body(()).unwrap(),
                "path_encoded_separator",
            ),
            (
                "dot segment",
                "192.0.2.9",
                get("/v1/../admin").body(()).unwrap(),
                "path_dot_segment",
            ),
            (
                "CONNECT",
                "192.0.2.9",
                get("/v1/models").method(Method::CONNECT).body(()).unwrap(),
                "connect_not_supported",
            ),
            (
                "gzip coding",
                "192.0.2.9",
                Request::post("/v1/responses")
                    .header("host", "gw.test")
                    .header("transfer-encoding", "gzip")
                    .body(())
                    .unwrap(),
                "unsupported_transfer_coding",
            ),
            (
                "two Host headers",
                "192.0.2.9",
                get("/v1/models")
                    .header("host", "other.test")
                    .body(())
                    .unwrap(),
                "duplicate_host",
            ),
            (
                "alias from a trusted proxy",
                "10.0.0.5",
                get("/v1/models")
                    .header("x_forwarded_user", "root")
                    .body(())
                    .unwrap(),
                "smuggled_header_alias",
            ),
            (
                "upgrade by POST",
                "192.0.2.9",
                ws(Request::post("/")
                    .header("host", "gw.test")
                    .header("sec-websocket-key", key))
                .body(())
                .unwrap(),
                "websocket_method",
            ),
            (
                "upgrade without a key",
                "192.0.2.9",
                ws(get("/")).body(()).unwrap(),
                "websocket_key",
            ),
            (
                "cross-site upgrade",
                "192.0.2.9",
                ws(get("/"))
                    .header("sec-websocket-key", key)
                    .header("origin", "https://evil.example")
                    .body(())
                    .unwrap(),
                "origin_not_allowed",
            ),
            (
                "same-origin upgrade",
                "192.0.2.9",
                ws(get("/"))
                    .header("sec-websocket-key", key)
                    .header("origin", "http://gw.test")
                    .body(())
                    .unwrap(),
                "reached",
            ),
        ];
        for (name, peer, req, want) in cases {
            let got = run(Hygiene, exchange(&snap, peer, req)).await;
            assert_eq!(got.code(), want, "{name}");
        }
    }

    #[tokio::test]
    async fn forwarding_headers_count_only_from_trusted_peers() {
        let snap = snapshot(&config());
        let req = || {
            get("/v1/models")
                .header("x-forwarded-for", "203.0.113.7")
                .body(())
                .unwrap()
        };
        for (peer, client) in [("192.0.2.9", "192.0.2.9"), ("10.0.0.5", "203.0.113.7")] {
            let Outcome::Reached(ex) = run(Hygiene, exchange(&snap, peer, req())).await else {
                panic!("refused from {peer}");
            };
            assert_eq!(
                ex.ctx.forwarded.client_ip,
                client.parse().ok(),
                "from {peer}"
            );
        }
    }
}
