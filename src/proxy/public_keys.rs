//! Public keys: `GET /.well-known/scopegate/jwks.json` answers the assertion's verification keys to
//! anyone, before identification — an upstream or a client with a broken credential may still fetch
//! them. They are public by construction; nothing else of scopegate's is served without a credential.

use http::{Method, StatusCode};

use super::context::{json_response, Exchange};
use super::phase::{Phase, PhaseService, Verdict};

pub const JWKS_PATH: &str = "/.well-known/scopegate/jwks.json";

/// The public-keys endpoint (a tower layer).
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicKeys;

impl<S> tower::Layer<S> for PublicKeys {
    type Service = PhaseService<PublicKeys, S>;

    fn layer(&self, inner: S) -> Self::Service {
        PhaseService::new(PublicKeys, inner)
    }
}

impl Phase for PublicKeys {
    fn run<B>(&self, ex: &mut Exchange<B>) -> Verdict {
        let ctx = &ex.ctx;
        if ctx.uri.path() == JWKS_PATH && matches!(ctx.method, Method::GET | Method::HEAD) {
            return Verdict::Answer(Box::new(json_response(
                StatusCode::OK,
                ctx.snap.assertion.jwks(),
                &ctx.request_id,
            )));
        }
        Verdict::Next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::testing::{config, exchange, get, run, snapshot, Outcome};

    #[tokio::test]
    async fn the_public_keys_are_answered_here_and_everything_else_passes_on() {
        let snap = snapshot(&config());
        let ex =
            |m: Method, p: &str| exchange(&snap, "192.0.2.9", get(p).method(m).body(()).unwrap());
        assert!(matches!(
            run(PublicKeys, ex(Method::GET, JWKS_PATH)).await,
            Outcome::Answered(200)
        ));
        assert!(matches!(
            run(PublicKeys, ex(Method::HEAD, JWKS_PATH)).await,
            Outcome::Answered(200)
        ));
        assert_eq!(
            run(PublicKeys, ex(Method::POST, JWKS_PATH)).await.code(),
            "reached"
        );
        assert_eq!(
            run(PublicKeys, ex(Method::GET, "/v1/models")).await.code(),
            "reached"
        );
    }
}
