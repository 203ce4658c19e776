//! Test support for the phase layers: a snapshot from TOML text, an exchange from a plain
//! `http::Request`, and a stub inner service that records what reached it — no sockets.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use http::{HeaderValue, Request, Response};
use tower::{Service, ServiceBuilder, ServiceExt};

use super::context::{ConnInfo, Context, Done, Exchange};
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
    let ctx = Context::new(snap.clone(), conn, HeaderValue::from_static("test-1"), &req);
    Exchange { ctx, req }
}

/// What the stub behind the layers saw, if the request got that far.
pub type Reached = Arc<Mutex<Option<Exchange<()>>>>;

/// A stub for the rest of the stack: it records the exchange and answers 200.
pub fn recorder() -> (
    impl Service<Exchange<()>, Response = Done, Error = Infallible> + Clone,
    Reached,
) {
    let reached: Reached = Arc::default();
    let seen = reached.clone();
    let svc = tower::service_fn(move |ex: Exchange<()>| {
        let seen = seen.clone();
        async move {
            let ctx = ex.ctx.clone();
            *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(ex);
            Ok::<_, Infallible>(Done::answered(ctx, Response::new(ResponseBody::empty())))
        }
    });
    (svc, reached)
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
    L: tower::Layer<tower::util::BoxCloneSyncService<Exchange<()>, Done, Infallible>>,
    L::Service: Service<Exchange<()>, Response = Done, Error = Infallible>,
{
    let (stub, reached) = recorder();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tower::util::BoxCloneSyncService::new(stub));
    let Ok(done) = svc.oneshot(ex).await;
    let passed = reached.lock().unwrap_or_else(|e| e.into_inner()).take();
    match (done.outcome, passed) {
        (Err(r), _) => Outcome::Refused(r),
        (Ok(_), Some(ex)) => Outcome::Reached(Box::new(ex)),
        (Ok(resp), None) => Outcome::Answered(resp.status().as_u16()),
    }
}

/// A request builder shorthand.
pub fn get(uri: &str) -> http::request::Builder {
    Request::get(uri).header("host", "gw.test")
}
