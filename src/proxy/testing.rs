//! Test support for the phase layers: a snapshot from TOML text, an exchange from a plain
//! `http::Request`, and a stub inner service that records what reached it — no sockets.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use http::{HeaderValue, Request, Response};
use tower::{Service, ServiceBuilder, ServiceExt};

use super::context::{ConnInfo, Context, Done, Exchange};
use super::recycle::ContextBox;
use crate::config::Config;
use crate::error::Refusal;
use crate::identity::Peer;
use crate::runtime::Snapshot;
use crate::upstream::body::ResponseBody;

/// A compiled snapshot of `toml` (static keys only: nothing is fetched).
pub fn snapshot(toml: &str) -> Arc<Snapshot> {
    let cfg = Config::parse(toml, None).unwrap_or_else(|e| panic!("test config: {e}"));
    Arc::new(Snapshot::build(cfg, 1, None).unwrap_or_else(|e| panic!("snapshot: {e}")))
}

/// `req` as it enters the stack from `peer`.
pub fn exchange(snap: &Arc<Snapshot>, peer: &str, req: Request<()>) -> Exchange<()> {
    let ip: IpAddr = peer.parse().unwrap_or_else(|_| panic!("peer {peer}"));
    let conn = Arc::new(ConnInfo::new(Peer::Tcp(ip), false));
    let ctx = ContextBox::new(Context::new(
        snap.clone(),
        conn,
        HeaderValue::from_static("test-1"),
        &req,
    ));
    Exchange { ctx, req }
}

/// A stub for the rest of the stack: it records the exchange it is given and answers 200.
#[derive(Clone, Default)]
pub struct Recorder {
    pub reached: Arc<Mutex<Option<Exchange<()>>>>,
}

impl Service<Exchange<()>> for Recorder {
    type Response = Done;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Done, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, ex: Exchange<()>) -> Self::Future {
        let ctx = ContextBox::new((*ex.ctx).clone());
        *self.reached.lock().unwrap_or_else(|e| e.into_inner()) = Some(ex);
        std::future::ready(Ok(Done::answered(
            ctx,
            Response::new(ResponseBody::empty()),
        )))
    }
}

/// What a layer did with one exchange.
pub enum Outcome {
    /// Passed on to the stub (which recorded it).
    Reached(Box<Exchange<()>>),
    /// Answered by the layer itself, with this status.
    Answered(u16),
    /// Refused with this refusal.
    Refused(Refusal),
}

impl Outcome {
    pub fn code(&self) -> &str {
        match self {
            Outcome::Refused(r) => r.code,
            Outcome::Reached(_) => "reached",
            Outcome::Answered(_) => "answered",
        }
    }
}

/// Runs `ex` through `layer` in front of the recording stub.
pub async fn run<L>(layer: L, ex: Exchange<()>) -> Outcome
where
    L: tower::Layer<Recorder>,
    L::Service: Service<Exchange<()>, Response = Done, Error = Infallible>,
{
    let stub = Recorder::default();
    let reached = stub.reached.clone();
    let svc = ServiceBuilder::new().layer(layer).service(stub);
    let Ok(done) = svc.oneshot(ex).await;
    let passed = reached.lock().unwrap_or_else(|e| e.into_inner()).take();
    match (done.into_parts().1, passed) {
        (Err(r), _) => Outcome::Refused(r),
        (Ok(_), Some(ex)) => Outcome::Reached(Box::new(ex)),
        (Ok(resp), None) => Outcome::Answered(resp.status().as_u16()),
    }
}

/// One config for every phase's tests: the openclaw profile, a trusted proxy on 10/8, a reader and a
/// writer API token (`sg_reader`, `sg_writer`), small limits.
const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
max_headers = 20
max_body_bytes = "1KiB"
[upstream]
url = "http://127.0.0.1:9"
profile = "openclaw"
[trusted_proxy]
peers = ["10.0.0.0/8"]
user_header = "x-forwarded-user"
[[api_tokens]]
subject = "reader"
sha256 = "SHA_READER"
scopes = ["operator.read"]
[[api_tokens]]
subject = "writer"
sha256 = "SHA_WRITER"
scopes = ["operator.write"]
[limits]
requests_per_address = "2/h"
requests_per_address_burst = 2
failed_auth_per_address = "1/h"
failed_auth_burst = 1
"#;

pub fn config() -> String {
    CONFIG
        .replace(
            "SHA_READER",
            &crate::identity::api_token::sha256_hex(b"sg_reader"),
        )
        .replace(
            "SHA_WRITER",
            &crate::identity::api_token::sha256_hex(b"sg_writer"),
        )
}

/// A request builder shorthand.
pub fn get(uri: &str) -> http::request::Builder {
    Request::get(uri).header("host", "gw.test")
}
