//! Limits: what one request may cost before scopegate spends anything on it.
//!
//! The head's size and header count and a declared body length are checked against `[server]`
//! (hyper's own caps sit far above these, so a request in between gets the contract's JSON instead of
//! a bare status), and the client address — fixed by hygiene, after trusted hops — spends one token
//! of its `[limits]` request bucket. The failed-authentication and per-identity buckets are spent by
//! `identify`, where a credential is verified.

use http::header;
use http::Request;

use super::context::Exchange;
use super::phase::{Phase, Verdict};
use crate::error::{Refusal, RefusalKind};
use crate::runtime::Snapshot;

/// The limits phase (a tower layer).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits;

impl<S> tower::Layer<S> for Limits {
    type Service = super::phase::PhaseService<Limits, S>;

    fn layer(&self, inner: S) -> Self::Service {
        super::phase::PhaseService::new(Limits, inner)
    }
}

impl Phase for Limits {
    fn run<B>(&self, ex: &mut Exchange<B>) -> Verdict {
        let ctx = &ex.ctx;
        check_limits(&ctx.snap, &ex.req)
            .and_then(|()| {
                ctx.snap.limiter.request_from(
                    &ctx.snap.config.limits,
                    ctx.forwarded.client_ip,
                    ctx.started,
                )
            })
            .into()
    }
}

/// Header-size and body-size limits that hyper does not already answer with a JSON body.
fn check_limits<B>(snap: &Snapshot, req: &Request<B>) -> Result<(), Refusal> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::{config, exchange, get, run, snapshot};

    #[tokio::test]
    async fn oversized_requests_and_a_spent_address_bucket_are_refused() {
        let snap = snapshot(&config());
        let mut crowded = get("/v1/models");
        for i in 0..25 {
            crowded = crowded.header(format!("x-h{i}"), "v");
        }
        let cases: Vec<(&str, http::Request<()>, &str)> = vec![
            ("small GET", get("/v1/models").body(()).unwrap(), "reached"),
            (
                "25 headers, 20 allowed",
                crowded.body(()).unwrap(),
                "too_many_headers",
            ),
            (
                "declared body over 1 KiB",
                Request::post("/v1/responses")
                    .header("host", "gw.test")
                    .header("content-length", "4096")
                    .body(())
                    .unwrap(),
                "payload_too_large",
            ),
            (
                "unreadable Content-Length",
                Request::post("/v1/responses")
                    .header("host", "gw.test")
                    .header("content-length", "x")
                    .body(())
                    .unwrap(),
                "bad_content_length",
            ),
        ];
        for (name, req, want) in cases {
            // Each case from its own address: the request bucket is not what this table tests.
            let peer = format!("192.0.2.{}", 10 + name.len());
            let mut ex = exchange(&snap, &peer, req);
            ex.ctx.forwarded.client_ip = peer.parse().ok();
            assert_eq!(run(Limits, ex).await.code(), want, "{name}");
        }
        // Two requests an hour from one address, then 429 with Retry-After.
        let from = |ip: &str| {
            let mut ex = exchange(&snap, ip, get("/v1/models").body(()).unwrap());
            ex.ctx.forwarded.client_ip = ip.parse().ok();
            ex
        };
        for want in ["reached", "reached", "address_requests"] {
            assert_eq!(run(Limits, from("198.51.100.1")).await.code(), want);
        }
        assert_eq!(run(Limits, from("198.51.100.2")).await.code(), "reached");
    }
}
