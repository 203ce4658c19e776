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
//! boxes its future. The context and the forwarding future live in boxes the connection reuses
//! from request to request ([`recycle`]): each layer moves its exchange and its inner future by
//! value, and unboxed that cost 5.8k instructions of `memcpy` per request, while a keep-alive
//! connection's requests allocate nothing for the shape.
//!
//! Limits come after hygiene because they count per client address, which hygiene establishes from
//! trusted forwarding headers; the listener's own limits (header-read timeout, connection count,
//! hyper's head cap) apply before the stack.
//!
//! [`embed`] runs hygiene, limits, identify and authorise — these same layers — in front of a service
//! of your own instead of `inject` and `forward` (issue 16, "the layers are a library").

pub(crate) mod authorise;
pub(crate) mod context;
pub mod embed;
pub(crate) mod explain;
pub(crate) mod finish;
pub(crate) mod forward;
pub(crate) mod hygiene;
pub(crate) mod identify;
pub(crate) mod in_band;
pub(crate) mod inject;
pub(crate) mod limits;
pub(crate) mod people;
pub(crate) mod phase;
pub(crate) mod public_keys;
pub(crate) mod recycle;
pub(crate) mod revoke;
pub(crate) mod sign_in;
#[cfg(test)]
mod testing;

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::{Service, ServiceBuilder};

pub(crate) use authorise::{Authorise, WHOAMI_PATH};
pub(crate) use context::{ConnInfo, Context, Exchange};
pub(crate) use finish::Finish;
pub(crate) use forward::Worker;
pub(crate) use hygiene::Hygiene;
pub(crate) use identify::Identify;
pub(crate) use inject::Inject;
pub(crate) use limits::Limits;
pub(crate) use public_keys::{PublicKeys, JWKS_PATH};
pub(crate) use sign_in::SignIn;

use crate::upstream::body::ResponseBody;

/// The whole stack for one client connection of one worker.
pub(crate) fn stack(
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
    let recycler = recycle::Recycler::new();
    ServiceBuilder::new()
        .layer(Finish::new(shared, conn, recycler.clone()))
        .layer(Hygiene)
        .layer(Limits)
        .layer(PublicKeys)
        .layer(SignIn::new(worker.shared.clone()))
        .layer(Identify)
        .layer(Authorise)
        .layer(Inject)
        .service_fn(move |ex: Exchange<Incoming>| {
            let forwarding = recycler.forward(forward::forward(worker.clone(), ex));
            async move { Ok::<_, Infallible>(forwarding.await) }
        })
}
