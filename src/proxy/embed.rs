//! Embedding: scopegate's identify and authorise layers in front of a service of your own.
//!
//! # Why
//!
//! A Rust service that wants scopegate's decisions — the same identity sources, the same scope
//! closure, the same refusals — should not need a second process and a network hop in front of it.
//! [`Gate`] is a [`tower::Layer`]: put it in front of your hyper or tower service and every request
//! runs the same phases the sidecar runs, in the same order — `hygiene`, `limits`, `identify`,
//! `authorise` (the very types of [`crate::proxy`], not copies) — and then reaches your service with an
//! [`Authorised`] extension saying who is calling and what they may do. A refused request gets the
//! contract's JSON refusal ([`crate::Refusal::to_response`]: 401 with `WWW-Authenticate`, 403 naming
//! the missing scope, 429 with `Retry-After`, …) and your service is never called for it.
//!
//! ```no_run
//! use scopegate::proxy::embed::{Authorised, Gate, Peer};
//! # async fn handler(req: http::Request<hyper::body::Incoming>)
//! #     -> Result<http::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
//! #     let who = req.extensions().get::<Authorised>().and_then(|a| a.subject());
//! #     Ok(http::Response::new(format!("hello {who:?}").into()))
//! # }
//! # fn config_text() -> String { String::new() }
//! # fn demo(peer: std::net::SocketAddr) -> Result<(), String> {
//! let gate = Gate::from_toml(&config_text())?;
//! // Per connection: tell the gate who the peer is, then the gate, then your service.
//! let svc = tower::ServiceBuilder::new()
//!     .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
//!         req.extensions_mut().insert(Peer(peer));
//!         req
//!     })
//!     .layer(gate.clone())
//!     .service_fn(handler);
//! let svc = hyper_util::service::TowerToHyperService::new(svc);
//! # let _ = svc; Ok(())
//! # }
//! ```
//!
//! `examples/embed_layers.rs` is a complete server; `tests/embed_layers.rs` runs it.
//!
//! # What runs, and what does not
//!
//! - **Runs:** hygiene (one reading of the path, `Host` against the target, HTTP/1 framing, forwarding
//!   headers believed only from trusted peers, WebSocket handshake and origin), limits (`[server]`
//!   head and declared body sizes, the `[limits]` buckets), identify (JWT, API tokens, Tailscale,
//!   trusted proxy, by the one precedence rule), authorise (`[[routes]]`, `[[grants]]`, the default
//!   route, `[policy] request_scopes_header`). Authorise also answers `GET /.scopegate/whoami` itself,
//!   as the sidecar does.
//! - **Does not run:** public keys, inject and forward. Your service is the upstream: there is no
//!   assertion to sign or publish and no header to set for a gateway. The request reaches your
//!   service *as it arrived* — client copies of identity or forwarding headers are not scrubbed — so
//!   read who is calling from [`Authorised`], never from headers. `[upstream]` must still be present
//!   (the config contract requires it) but is never contacted; `[server]`'s listener, TLS and worker
//!   settings are yours to choose, not the gate's.
//! - **The audit line and metrics** are those of the sidecar, written by the same function
//!   ([`super::finish::record`]; the `Finish` layer itself is not used — it needs the sidecar's server
//!   state and catches panics, which are your server's business): one line per decision at
//!   response-header time, target
//!   `scopegate::audit` through your `tracing` subscriber (nothing is written without one;
//!   `[log] audit = false` turns it off), its `upstream` time being your service's. The counters go
//!   to scopegate's registry ([`crate::metrics`]). It costs what it costs the sidecar, so it is kept.
//! - **One configuration for the gate's life.** A [`Gate`] compiles one [`Snapshot`]; to change the
//!   config, build a new gate. A `jwks_url` is fetched on the first token whose `kid` is unknown
//!   (rate-limited as in the sidecar) and not refreshed in the background unless you start
//!   [`crate::identity::jwks::JwksCache::spawn_refresher`] on [`Gate::snapshot`]'s cache.
//!
//! # The peer
//!
//! Trust decisions (forwarding headers, Tailscale and trusted-proxy identities, per-address limits)
//! need the connection's peer address. Insert [`Peer`] into each request's extensions, as above. A
//! request without one is treated as coming from an **unknown peer**, the unspecified address
//! `0.0.0.0`: no trusted net contains it (short of `0.0.0.0/0`, which trusts everyone), so its forwarding and
//! network-identity headers are never believed, while bearer credentials (JWT, API token) work; all
//! such requests share one address's `[limits]` buckets. Not loopback: a config that trusts a proxy on
//! `127.0.0.1` would then believe every request whose peer was simply forgotten.
//!
//! # Types and cost
//!
//! The gate's service answers `Response<Either<ResBody, Full<Bytes>>>`: your response, untouched, on
//! the left; on the right scopegate's own answers (refusals, `whoami`), which are small JSON bodies.
//! Your body's `Data` must therefore be [`Bytes`] for the pair to be a body; the pair's error type is
//! boxed (`http_body_util::Either`), which allocates only when a body fails. The error is your
//! service's. Your service must be `Clone` (the readied one goes with the request's future, as in
//! tower's own middleware).
//!
//! The phases see the request without its body (the body waits in the gate's future and is put back
//! before your service is called), so your body type needs no bound of theirs. On the cached-credential
//! path (an API token, a JWT seen before) no future and no body is boxed; what is allocated per request
//! is the request id (as in the sidecar), the [`Authorised`] extension (http's extension map boxes its
//! values) and, with a [`Peer`], the connection facts. A first-seen JWT or a Tailscale WhoIs boxes its
//! future, as in the sidecar.

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use tower::{Service, ServiceBuilder};

use super::authorise::Authorise;
use super::context::{ConnInfo, Context, Done, Exchange};
use super::finish;
use super::hygiene::Hygiene;
use super::identify::{Identify, IdentifyService};
use super::limits::Limits;
use super::phase::PhaseService;
use super::recycle::ContextBox;
use crate::config::Config;
use crate::error::{Reason, Refusal};
use crate::identity::Identity;
use crate::policy::Decision;
use crate::runtime::Snapshot;
use crate::upstream::body::ResponseBody;

/// The connection's peer address, inserted by you into each request's extensions (hyper gives it to
/// you at `accept`). Without it the request comes from an unknown peer (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// scopegate's identify and authorise layers, as one [`tower::Layer`] for your service.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<GateState>,
}

struct GateState {
    snap: Arc<Snapshot>,
    /// The request id's prefix, as the sidecar makes one per boot.
    boot_id: String,
    /// The connection facts of a request without a [`Peer`].
    unknown_peer: Arc<ConnInfo>,
}

impl Gate {
    /// Compiles a validated config.
    pub fn new(config: Config) -> Result<Gate, String> {
        let snap = Snapshot::build(config, 1, None)?;
        let boot: [u8; 6] = crate::util::random_bytes();
        Ok(Gate {
            inner: Arc::new(GateState {
                snap: Arc::new(snap),
                boot_id: boot.iter().map(|b| format!("{b:02x}")).collect(),
                unknown_peer: Arc::new(conn_info(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
            }),
        })
    }

    /// Validates config text (the sidecar's TOML) and compiles it; an error names the line of each
    /// problem, as `scopegate check` does.
    pub fn from_toml(text: &str) -> Result<Gate, String> {
        let config = Config::parse(text, None).map_err(|e| e.to_string())?;
        Gate::new(config)
    }

    /// The compiled configuration every request of this gate runs under.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.inner.snap
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("generation", &self.inner.snap.generation)
            .finish_non_exhaustive()
    }
}

/// Only what hygiene, limits and identify read; `peer_value` and `tls` are inject's.
fn conn_info(ip: IpAddr) -> ConnInfo {
    ConnInfo {
        peer: crate::identity::Peer::Tcp(ip),
        tls: false,
        peer_value: None,
        remembered: std::sync::Mutex::new(None),
    }
}

/// The phases the gate runs, the sidecar's own, around [`HandBack`].
type Phases =
    PhaseService<Hygiene, PhaseService<Limits, IdentifyService<PhaseService<Authorise, HandBack>>>>;

type Deciding = <Phases as Service<Exchange<()>>>::Future;

impl<S> tower::Layer<S> for Gate {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GateService {
            gate: self.clone(),
            phases: ServiceBuilder::new()
                .layer(Hygiene)
                .layer(Limits)
                .layer(Identify)
                .layer(Authorise)
                .service(HandBack),
            inner,
        }
    }
}

/// What the gate found out about an allowed request, in the request's extensions when it reaches
/// your service. Cheap to make: it holds the decision and shared values, and renders names and
/// reasons only when asked.
#[derive(Clone)]
pub struct Authorised {
    snap: Arc<Snapshot>,
    identity: Option<Arc<Identity>>,
    decision: Decision,
    request_id: HeaderValue,
    client_ip: Option<IpAddr>,
    method: Method,
    uri: Uri,
}

impl Authorised {
    fn new(ctx: &Context, decision: Decision) -> Authorised {
        Authorised {
            snap: ctx.snap.clone(),
            identity: ctx.identified.identity.clone(),
            decision,
            request_id: ctx.request_id.clone(),
            client_ip: ctx.forwarded.client_ip,
            method: ctx.method.clone(),
            uri: ctx.uri.clone(),
        }
    }

    /// Who is calling; `None` for an anonymous caller of a public route.
    pub fn subject(&self) -> Option<&str> {
        self.identity.as_deref().map(|i| i.subject.as_str())
    }

    /// How the caller was identified, as the assertion's `amr`: `jwt`, `api_token`, `tailscale`,
    /// `trusted_proxy`.
    pub fn amr(&self) -> Option<&'static str> {
        self.identity.as_deref().map(|i| i.method.amr())
    }

    /// The effective scopes, implication-expanded (and narrowed if the client asked), in catalogue
    /// order: what the sidecar would tell a gateway.
    pub fn scopes(&self) -> Vec<&str> {
        self.snap.policy.catalogue.names(self.decision.effective)
    }

    /// True when `scope` is among the effective scopes (for checks finer than a route).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.snap
            .policy
            .catalogue
            .id(scope)
            .is_some_and(|id| self.decision.effective.contains(id))
    }

    /// Why the request was allowed — route, credential, grants, implication — as `whoami` and
    /// `scopegate explain` give them.
    pub fn reasons(&self) -> Vec<Reason> {
        self.decision.reasons(
            &self.snap.policy,
            self.identity.as_deref(),
            &self.method,
            self.uri.path(),
        )
    }

    /// The request id, also in the audit line (and in refusals' `x-request-id`).
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }

    /// The client address, after the hops the config trusts.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }
}

impl std::fmt::Debug for Authorised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorised")
            .field("subject", &self.subject())
            .field("amr", &self.amr())
            .field("scopes", &self.scopes())
            .field("request_id", &self.request_id())
            .finish_non_exhaustive()
    }
}

/// The innermost service of the phases: a request every phase let through comes back up to the gate
/// instead of going on to `inject` and `forward`.
///
/// A [`Done`] carries a `Response` of scopegate's own body type, so your service cannot be called from
/// here and its response (and error) carried up through the phases. Instead the request's head goes
/// back up in the `Done`'s response head — headers, version and extensions, with the [`Authorised`]
/// extension added; method and target are in the context, which no phase changes — and the gate's
/// future puts the body back and calls your service. That the extension is there is what tells the
/// gate the request was let through (the phases' own answers never carry it).
#[derive(Debug, Clone, Copy)]
struct HandBack;

impl Service<Exchange<()>> for HandBack {
    type Response = Done;
    type Error = Infallible;
    type Future = Ready<Result<Done, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, ex: Exchange<()>) -> Self::Future {
        let Exchange { ctx, req } = ex;
        let Some(decision) = ctx.decision else {
            // Authorise lets an unauthenticated OpenClaw WebSocket through undecided, for its
            // credential in the first frame; the gate does not read frames.
            return ready(Ok(Done::refused(
                ctx,
                Refusal::no_credential(
                    "authentication required: this service reads the credential from the request, not from WebSocket frames",
                ),
            )));
        };
        let (mut parts, ()) = req.into_parts();
        parts.extensions.insert(Authorised::new(&ctx, decision));
        let mut head = Response::new(ResponseBody::empty());
        *head.version_mut() = parts.version;
        *head.headers_mut() = parts.headers;
        *head.extensions_mut() = parts.extensions;
        ready(Ok(Done::answered(ctx, head)))
    }
}

/// The gate in front of your service `S` (made by [`Gate`]'s `layer`).
#[derive(Clone)]
pub struct GateService<S> {
    gate: Gate,
    phases: Phases,
    inner: S,
}

impl<S, B, ResBody> Service<Request<B>> for GateService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<Either<ResBody, Full<Bytes>>>;
    type Error = S::Error;
    type Future = GateFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        // The phases are always ready (they end in `HandBack`); yours decides.
        let Ok(()) = ready!(Service::<Exchange<()>>::poll_ready(&mut self.phases, cx));
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let gate = &*self.gate.inner;
        let conn = match req.extensions().get::<Peer>() {
            Some(Peer(addr)) => Arc::new(conn_info(addr.ip())),
            None => gate.unknown_peer.clone(),
        };
        let request_id = finish::request_id(&gate.boot_id, &gate.snap, &conn, &req);
        let (parts, body) = req.into_parts();
        let head = Request::from_parts(parts, ());
        let ctx = ContextBox::new(Context::new(gate.snap.clone(), conn, request_id, &head));
        let deciding = self.phases.call(Exchange { ctx, req: head });
        // The readied service goes with the future; this one keeps a fresh clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        GateFuture {
            state: State::Deciding {
                deciding,
                body: Some(body),
                inner: Some(inner),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The gate's future: the phases decide, then your service answers (or the gate does).
    pub struct GateFuture<S: Service<Request<B>>, B> {
        #[pin]
        state: State<S, B>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<B>>, B> {
        Deciding { #[pin] deciding: Deciding, body: Option<B>, inner: Option<S> },
        Calling { #[pin] call: S::Future, ctx: Option<ContextBox>, since: Instant },
        Finished,
    }
}

impl<S, B, ResBody> Future for GateFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<Either<ResBody, Full<Bytes>>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Deciding {
                    deciding,
                    body,
                    inner,
                } => {
                    let Ok(done) = ready!(deciding.poll(cx));
                    let (ctx, outcome) = done.into_parts();
                    let head = match outcome {
                        Ok(head) if head.extensions().get::<Authorised>().is_some() => head,
                        Ok(answer) => {
                            state.set(State::Finished);
                            return Poll::Ready(Ok(answered(&ctx, answer)));
                        }
                        Err(refusal) => {
                            state.set(State::Finished);
                            return Poll::Ready(Ok(refused(&ctx, &refusal)));
                        }
                    };
                    let (Some(body), Some(mut inner)) = (body.take(), inner.take()) else {
                        // Polled again after it finished: nothing more will come.
                        return Poll::Pending;
                    };
                    let call = inner.call(handed_back(head, &ctx, body));
                    State::Calling {
                        call,
                        ctx: Some(ctx),
                        since: Instant::now(),
                    }
                }
                StateProj::Calling { call, ctx, since } => {
                    let result = ready!(call.poll(cx));
                    let Some(mut ctx) = ctx.take() else {
                        return Poll::Pending;
                    };
                    ctx.upstream_time = Some(since.elapsed());
                    // An error is hyper's to handle (it drops the connection); the line says 500.
                    let status = result
                        .as_ref()
                        .map_or(StatusCode::INTERNAL_SERVER_ERROR, |r| r.status());
                    finish::record(&ctx, &status_only(status), None);
                    state.set(State::Finished);
                    return Poll::Ready(result.map(|r| r.map(Either::Left)));
                }
                StateProj::Finished => return Poll::Pending,
            };
            state.set(next);
        }
    }
}

/// The request again, as it arrived, with the [`Authorised`] extension (see [`HandBack`]).
fn handed_back<B>(head: Response<ResponseBody>, ctx: &Context, body: B) -> Request<B> {
    let (parts, _) = head.into_parts();
    let mut req = Request::new(body);
    *req.method_mut() = ctx.method.clone();
    *req.uri_mut() = ctx.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers;
    *req.extensions_mut() = parts.extensions;
    req
}

/// A refusal as the contract's JSON, after its audit line (as `finish` renders it).
fn refused<L>(ctx: &Context, refusal: &Refusal) -> Response<Either<L, Full<Bytes>>> {
    let rid = ctx.request_id.to_str().unwrap_or("-");
    let mut resp = refusal.to_response::<Full<Bytes>>(rid);
    if refusal.poisons_connection() {
        // The rest of the connection's bytes have no trustworthy reading.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    finish::record(ctx, &status_only(resp.status()), Some(refusal));
    resp.map(Either::Right)
}

/// One of scopegate's own answers (`whoami`), after its audit line.
fn answered<L>(ctx: &Context, resp: Response<ResponseBody>) -> Response<Either<L, Full<Bytes>>> {
    finish::record(ctx, &resp, None);
    let (parts, mut body) = resp.into_parts();
    let bytes = match &mut body {
        ResponseBody::Full(b) => b.take().unwrap_or_default(),
        // Only `forward` makes upstream bodies, and it does not run here.
        ResponseBody::Upstream { .. } | ResponseBody::Watched(_) => Bytes::new(),
    };
    Response::from_parts(parts, Either::Right(Full::new(bytes)))
}

/// What `finish::record` reads of a response: its status.
fn status_only(status: StatusCode) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Layer, ServiceExt};

    /// A proxy on loopback is trusted to name the user; a grant gives that user `operator.write`.
    const CONFIG: &str = r#"
[upstream]
url = "http://127.0.0.1:9"
profile = "generic"
[trusted_proxy]
peers = ["127.0.0.1/32"]
user_header = "x-forwarded-user"
[[grants]]
subjects = ["alice"]
scopes = ["operator.write"]
[[routes]]
path = "/hello"
require = ["operator.write"]
"#;

    /// One request claiming to be alice through the proxy header, from `peer` (none: no extension).
    async fn as_alice(gate: &Gate, peer: Option<&str>) -> (StatusCode, Option<String>) {
        let svc = gate.layer(tower::service_fn(|req: Request<()>| async move {
            let who = req
                .extensions()
                .get::<Authorised>()
                .and_then(|a| a.subject().map(str::to_string));
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                who.unwrap_or_default(),
            ))))
        }));
        let mut req = Request::get("http://svc.local/hello")
            .header("host", "svc.local")
            .header("x-forwarded-user", "alice")
            .body(())
            .unwrap();
        if let Some(p) = peer {
            req.extensions_mut().insert(Peer(p.parse().unwrap()));
        }
        let resp = svc.oneshot(req).await.unwrap();
        let status = resp.status();
        let called = match resp.into_body() {
            Either::Left(body) => {
                let bytes = http_body_util::BodyExt::collect(body).await.unwrap();
                Some(String::from_utf8(bytes.to_bytes().to_vec()).unwrap())
            }
            Either::Right(_) => None,
        };
        (status, called)
    }

    #[tokio::test]
    async fn the_peer_decides_whether_network_identities_are_believed() {
        let gate = Gate::from_toml(CONFIG).unwrap();
        // From the trusted proxy: alice, with her grant, reaches the service.
        assert_eq!(
            as_alice(&gate, Some("127.0.0.1:40000")).await,
            (StatusCode::OK, Some("alice".into()))
        );
        // From anyone else the header is not believed: no identity, refused by the gate.
        assert_eq!(
            as_alice(&gate, Some("10.1.2.3:40000")).await,
            (StatusCode::UNAUTHORIZED, None)
        );
        // Without a `Peer` the peer is unknown — not loopback — so the header is not believed either.
        assert_eq!(
            as_alice(&gate, None).await,
            (StatusCode::UNAUTHORIZED, None)
        );
    }
}
