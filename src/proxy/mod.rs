//! The request's path: one tower stack, one layer per phase, in the order of the product diagram.
//!
//! ```text
//! finish ─► hygiene ─► limits ─► public keys ─► sign-in ─► identify ─► authorise ─► inject ─► forward
//! ```
//!
//! Each phase is one file. Down the stack travels an [`Exchange`] — the request and its [`Context`],
//! where each phase records what it learned; back up comes a [`Done`] — the context and the outcome —
//! from which `finish` renders the refusal, the audit line and the metrics. The synchronous phases
//! return [`phase::Step`], an enum future; identification's slow path (a first-seen JWT, a WhoIs)
//! boxes its future. Two allocations per request are deliberate: the context and the forwarding
//! future are boxed once, because each layer moves its exchange and its inner future by value, and
//! moving them unboxed through eight layers cost 5.8k instructions of `memcpy` per request where the
//! two boxes cost a few hundred (`bash bench/callgrind.sh`; BENCHMARKS.md).
//!
//! Limits come after hygiene because they count per client address, which hygiene establishes from
//! trusted forwarding headers; the listener's own limits (header-read timeout, connection count,
//! hyper's head cap) apply before the stack.
//!
//! [`embed`] runs hygiene, limits, identify and authorise — these same layers — in front of a service
//! of your own instead of `inject` and `forward` (issue 16, "the layers are a library").

pub mod authorise;
pub mod context;
pub mod embed;
pub mod explain;
pub mod finish;
pub mod forward;
pub mod hygiene;
pub mod identify;
pub mod in_band;
pub mod inject;
pub mod limits;
pub mod phase;
pub mod public_keys;
pub mod sign_in;
#[cfg(test)]
mod testing;

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::{Service, ServiceBuilder};

pub use authorise::{Authorise, WHOAMI_PATH};
pub use context::{ConnInfo, Context, Done, Exchange};
pub use finish::Finish;
pub use forward::Worker;
pub use hygiene::Hygiene;
pub use identify::Identify;
pub use inject::Inject;
pub use limits::Limits;
pub use public_keys::{PublicKeys, JWKS_PATH};
pub use sign_in::SignIn;

use crate::upstream::body::ResponseBody;

/// The whole stack for one client connection of one worker.
pub fn stack(
    worker: Arc<Worker>,
    conn: Arc<ConnInfo>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<ResponseBody>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response<ResponseBody>, Infallible>>
                 + Send
                 + 'static,
> + Clone
       + Send
       + 'static {
    let shared = worker.shared.clone();
    ServiceBuilder::new()
        .layer(Finish::new(shared, conn))
        .layer(Hygiene)
        .layer(Limits)
        .layer(PublicKeys)
        .layer(SignIn)
        .layer(Identify)
        .layer(Authorise)
        .layer(Inject)
        .service_fn(move |ex: Exchange<Incoming>| {
            let worker = worker.clone();
            // Boxed once here: every layer above moves its inner future by value, and unboxed the
            // forwarding state (upstream send, body, timers) would be copied at each of them.
            let forwarding: std::pin::Pin<Box<dyn std::future::Future<Output = Done> + Send>> =
                Box::pin(forward::forward(worker, ex));
            async move { Ok::<_, Infallible>(forwarding.await) }
        })
}
