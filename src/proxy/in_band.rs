//! In-band credentials on OpenClaw's WebSocket control plane: the handshake, run by the request's path.
//!
//! OpenClaw's own clients (the `openclaw` CLI, apps) do not authenticate the upgrade request: they wait
//! for the server's `connect.challenge` and send their token inside the first frame
//! (`{"type":"req","method":"connect","params":{"auth":{"token":…}, …}}`), optionally with a device
//! identity signed over the challenge nonce. scopegate meets such a client halfway:
//!
//! 1. it completes the upgrade itself and sends its own `connect.challenge`;
//! 2. it reads the `connect` frame and verifies `auth.token` (or `auth.password`) as a JWT or API token —
//!    a refusal is answered in the gateway's own `res` error shape and the socket is closed (1008);
//! 3. it opens the upstream WebSocket as the trusted proxy (user header, `X-OpenClaw-Scopes`, assertion),
//!    swallows the gateway's challenge, and forwards the client's `connect` without `auth` (the client's
//!    secret never leaves scopegate) and without `device` (it was signed over scopegate's nonce, which
//!    the gateway would reject);
//! 4. from the gateway's `hello-ok` on, frames are relayed both ways unchanged. The granted scopes in
//!    `hello-ok` are compared with scopegate's effective set, and a difference is logged with its likely
//!    cause (the gateway's `identityScopes` not listing the identity).
//!
//! Clients that authenticate the upgrade itself (a bearer header, Tailscale, a trusted proxy) never come
//!
//! The credential in the `connect` frame goes through the same units as a request's: `identify`'s
//! `verify_bearer` (with the failed-authentication budget), `authorise` and `inject`, on the upgrade
//! request's own context. The frame protocol itself is `upstream::openclaw::inband`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::error::{Refusal, RefusalKind};
use crate::identity::hygiene::websocket_handshake;
use crate::identity::Identity;
use crate::policy::ScopeSet;
use crate::proxy::Context;
use crate::runtime::Shared;
use crate::upstream::body::{RequestBody, ResponseBody};
use crate::upstream::client::UpstreamClient;
use crate::upstream::handshake::Offer;
use crate::upstream::openclaw::inband::{
    close, error_frame, next_data, now_ms, parse_connect, uuid_v4, ClientWs,
};
use crate::upstream::openclaw::preauth::{Budgeted, PRE_AUTH_BUDGET};

/// Accepts the upgrade and runs the in-band handshake in the background. Returns the `101`.
pub fn accept(
    shared: Arc<Shared>,
    client: Arc<UpstreamClient>,
    ctx: &Context,
    mut req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Refusal> {
    let snap = ctx.snap.clone();
    // Hygiene checked this already; checked again because the answer needs the key.
    let headers = req.headers();
    let key = websocket_handshake(req.method(), req.version(), headers)?;
    // Counted until its credential is verified (or it goes away): holding sockets open without one
    // is capped per address and in all.
    let waiting = snap
        .limiter
        .unauthenticated_websocket(&snap.config.limits, ctx.forwarded.client_ip)?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let origin = headers.get(header::ORIGIN).cloned();
    let user_agent = headers.get(header::USER_AGENT).cloned();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let session = Session {
        client,
        origin,
        user_agent,
        stop: shared.stop.clone(),
        shared: shared.clone(),
        waiting: Some(waiting),
        ctx: ctx.clone(),
    };
    let request_id = ctx.request_id.clone();
    let running = async move {
        match on_upgrade.await {
            Ok(up) => {
                let _gauge = crate::metrics::GaugeGuard::websocket();
                session.run(up).await;
            }
            Err(e) => {
                tracing::debug!(request_id = ?request_id, error = %e, "client left before the upgrade completed")
            }
        }
    };
    // The session outlives the request's future; its log lines still name the request.
    shared.tracker.spawn(crate::log_scope::Scoped::new(
        ctx.request_id.clone(),
        running,
    ));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .header("x-request-id", ctx.request_id.clone())
        .body(ResponseBody::empty())
        .map_err(|_| {
            Refusal::new(
                RefusalKind::Internal,
                "internal",
                "cannot build the upgrade response",
            )
        })
}

struct Session {
    client: Arc<UpstreamClient>,
    origin: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    stop: tokio_util::sync::CancellationToken,
    shared: Arc<Shared>,
    /// This socket's place in the unauthenticated-WebSocket count, released once it authenticates.
    waiting: Option<crate::limits::WebsocketGuard>,
    /// The upgrade request's context; the in-band credential's identity and decision go into it.
    ctx: Context,
}

/// An in-band refusal, in the gateway's `res` error shape.
struct WsRefusal {
    code: &'static str,
    close: CloseCode,
    refusal: Refusal,
}

impl Session {
    async fn run(mut self, up: hyper::upgrade::Upgraded) {
        let cfg = WebSocketConfig::default()
            .max_message_size(Some(32 << 20))
            .max_frame_size(Some(16 << 20));
        let mut ws: ClientWs = WebSocketStream::from_raw_socket(
            Budgeted::new(TokioIo::new(up), PRE_AUTH_BUDGET),
            Role::Server,
            Some(cfg),
        )
        .await;
        let profile = match &self.ctx.snap.openclaw {
            Some(p) => p.clone(),
            None => return,
        };
        let nonce = uuid_v4();
        let challenge = json!({
            "type": "event",
            "event": "connect.challenge",
            "payload": {"nonce": nonce, "ts": now_ms(), "capabilities": []}
        });
        if ws.send(Message::text(challenge.to_string())).await.is_err() {
            return;
        }
        let first = tokio::select! {
            r = tokio::time::timeout(profile.connect_timeout, next_data(&mut ws)) => r,
            _ = self.stop.cancelled() => return,
        };
        let (connect_id, mut frame) = match first {
            Err(_) => {
                close(&mut ws, CloseCode::Policy, "connect timeout").await;
                return;
            }
            Ok(None) => return,
            Ok(Some(text)) => match parse_connect(&text) {
                Ok(x) => x,
                Err((id, msg)) => {
                    self.refuse(
                        &mut ws,
                        id.as_ref(),
                        WsRefusal {
                            code: "INVALID_REQUEST",
                            close: CloseCode::Policy,
                            refusal: Refusal::bad_request("invalid_handshake", msg),
                        },
                    )
                    .await;
                    return;
                }
            },
        };
        let outcome = self.authorise(&frame).await;
        // Authenticated or refused, it no longer waits for a credential.
        self.waiting = None;
        let (identity, effective) = match outcome {
            Ok(x) => x,
            Err(r) => {
                self.refuse(&mut ws, Some(&connect_id), r).await;
                return;
            }
        };
        // Authenticated: normal message limits from here on.
        ws.get_mut().lift();
        // Strip the client's secret and its device proof (signed over scopegate's nonce, not the gateway's).
        if let Some(params) = frame.get_mut("params").and_then(Value::as_object_mut) {
            params.remove("auth");
            params.remove("device");
        }
        // A person the gateway would admit with no scopes is refused (or provisioned) first.
        if let Err(refusal) = super::people::admit_websocket(&self.shared, &self.ctx).await {
            let close = if refusal.kind == RefusalKind::ServiceUnavailable {
                CloseCode::Again
            } else {
                CloseCode::Policy
            };
            let code = if refusal.kind == RefusalKind::ServiceUnavailable {
                "UNAVAILABLE"
            } else {
                "FORBIDDEN"
            };
            self.refuse(
                &mut ws,
                Some(&connect_id),
                WsRefusal {
                    code,
                    close,
                    refusal,
                },
            )
            .await;
            return;
        }
        let upstream = match self.open_upstream().await {
            Ok(u) => u,
            Err(r) => {
                self.refuse(&mut ws, Some(&connect_id), r).await;
                return;
            }
        };
        self.relay(
            ws,
            upstream,
            connect_id,
            frame,
            identity,
            effective,
            profile.connect_timeout,
        )
        .await;
    }

    /// Verifies the in-band credential and decides the WebSocket route for it.
    async fn authorise(&mut self, frame: &Value) -> Result<(Arc<Identity>, ScopeSet), WsRefusal> {
        let params = frame.get("params").cloned().unwrap_or(Value::Null);
        let auth = params.get("auth");
        let token = auth
            .and_then(|a| a.get("token").or_else(|| a.get("password")))
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            let has_device_token = auth.and_then(|a| a.get("deviceToken")).is_some();
            let why = if has_device_token {
                "a paired device token is not accepted through scopegate; send a JWT or API token as the gateway token"
            } else {
                "no credential: send a JWT or an API token as the gateway token (connect params.auth.token)"
            };
            return Err(WsRefusal {
                code: "UNAUTHORIZED",
                close: CloseCode::Policy,
                refusal: Refusal::no_credential(why),
            });
        };
        let verified = crate::proxy::identify::verify_bearer(
            &self.ctx.snap,
            token,
            self.ctx.forwarded.client_ip,
        )
        .await;
        let identity = verified.map_err(|refusal| WsRefusal {
            code: if refusal.kind == RefusalKind::ServiceUnavailable {
                "UNAVAILABLE"
            } else {
                "UNAUTHORIZED"
            },
            close: CloseCode::Policy,
            refusal,
        })?;
        let requested = params.get("scopes").and_then(Value::as_array).map(|list| {
            self.ctx
                .snap
                .policy
                .catalogue
                .parse(list.iter().filter_map(Value::as_str))
                .0
        });
        // The same decision as for any request, now with the identity the frame carried.
        self.ctx.identified = crate::identity::Identified {
            identity: Some(identity.clone()),
            seen: Vec::new(),
            anonymous_reason: None,
        };
        crate::proxy::authorise::authorise(&mut self.ctx, requested).map_err(|refusal| {
            WsRefusal {
                code: "FORBIDDEN",
                close: CloseCode::Policy,
                refusal,
            }
        })?;
        let Some(decision) = self.ctx.decision else {
            return Err(WsRefusal {
                code: "FORBIDDEN",
                close: CloseCode::Policy,
                refusal: Refusal::new(RefusalKind::Forbidden, "denied", "no decision was made"),
            });
        };
        self.audit(
            Some(&identity),
            "allow",
            "in_band_connect",
            decision.effective,
            101,
        );
        Ok((identity, decision.effective))
    }

    /// Opens the gateway's WebSocket as the trusted proxy, for the identity and decision that
    /// `authorise` put into the context.
    async fn open_upstream(&self) -> Result<ClientWs, WsRefusal> {
        let unavailable = |code: &'static str, msg: String| WsRefusal {
            code: "UNAVAILABLE",
            close: CloseCode::Error,
            refusal: Refusal::bad_gateway(code, msg),
        };
        let uri = self
            .client
            .upstream_uri(self.ctx.uri.path_and_query())
            .map_err(|r| WsRefusal {
                code: "INVALID_REQUEST",
                close: CloseCode::Policy,
                refusal: r,
            })?;
        let key = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            crate::util::random_bytes::<16>(),
        );
        let mut req = Request::get(uri)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, key.as_str())
            .body(RequestBody::empty())
            .map_err(|_| {
                unavailable(
                    "upstream_request",
                    "cannot build the upstream upgrade".into(),
                )
            })?;
        if let Some(o) = &self.origin {
            req.headers_mut().insert(header::ORIGIN, o.clone());
        }
        if let Some(ua) = &self.user_agent {
            req.headers_mut().insert(header::USER_AGENT, ua.clone());
        }
        let forwarded_path = crate::proxy::inject::forwarded_path(
            &self.ctx.snap.config.upstream.base_path,
            self.ctx.uri.path(),
        );
        // Set by `authorise` before the upstream is opened.
        let decision = self.ctx.decision.ok_or_else(|| {
            unavailable("no_decision", "no decision was made for this socket".into())
        })?;
        let mut injected = crate::upstream::injected::Injected::default();
        crate::proxy::inject::set_upstream_headers(
            &self.ctx,
            &mut injected,
            &decision,
            &forwarded_path,
            None,
        );
        let offer = Offer::of(req.headers());
        let (mut resp, _upgrade_owns_the_connection) = self
            .client
            .send(req, injected, None)
            .await
            .map_err(|r| WsRefusal {
                code: "UNAVAILABLE",
                close: CloseCode::Error,
                refusal: r,
            })?;
        // Only a verified handshake is spoken to; on a refusal the connection is dropped with `resp`.
        offer
            .verify(resp.status(), resp.headers())
            .map_err(|refusal| WsRefusal {
                code: "UNAVAILABLE",
                close: CloseCode::Error,
                refusal,
            })?;
        let up = hyper::upgrade::on(&mut resp).await.map_err(|e| {
            unavailable(
                "upstream_upgrade",
                format!("the gateway upgrade failed: {e}"),
            )
        })?;
        let mut ws = WebSocketStream::from_raw_socket(
            Budgeted::unlimited(TokioIo::new(up)),
            Role::Client,
            None,
        )
        .await;
        // The gateway's own challenge is for a client that is not there: scopegate already challenged
        // its client. Wait for it so the connect frame is not sent too early.
        match tokio::time::timeout(Duration::from_secs(15), next_data(&mut ws)).await {
            Ok(Some(text)) => {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if v.get("event").and_then(Value::as_str) != Some("connect.challenge") {
                    return Err(unavailable(
                        "upstream_no_challenge",
                        "the gateway did not send connect.challenge".into(),
                    ));
                }
            }
            _ => {
                return Err(unavailable(
                    "upstream_no_challenge",
                    "the gateway sent no connect.challenge".into(),
                ))
            }
        }
        Ok(ws)
    }

    #[allow(clippy::too_many_arguments)]
    async fn relay(
        &self,
        mut client: ClientWs,
        mut upstream: ClientWs,
        connect_id: Value,
        frame: Value,
        identity: Arc<Identity>,
        effective: ScopeSet,
        _connect_timeout: Duration,
    ) {
        if upstream
            .send(Message::text(frame.to_string()))
            .await
            .is_err()
        {
            close(&mut client, CloseCode::Error, "gateway closed").await;
            return;
        }
        let idle = self.ctx.snap.config.server.websocket_idle_timeout;
        let mut hello_checked = false;
        // The session ends when its credential does (`revoke`).
        let (_registration, mut revoked) = match super::revoke::register(&self.shared, &self.ctx) {
            Some((reg, rx)) => (Some(reg), Some(rx)),
            None => (None, None),
        };
        loop {
            let step = tokio::select! {
                m = client.next() => Dir::Up(m),
                m = upstream.next() => Dir::Down(m),
                _ = tokio::time::sleep(idle) => Dir::Idle,
                _ = self.stop.cancelled() => Dir::Stop,
                why = async {
                    match revoked.as_mut() {
                        Some(rx) => rx.await.ok(),
                        None => std::future::pending().await,
                    }
                } => Dir::Revoked(why),
            };
            match step {
                Dir::Up(Some(Ok(msg))) => {
                    let is_close = matches!(msg, Message::Close(_));
                    if upstream.send(msg).await.is_err() || is_close {
                        break;
                    }
                }
                Dir::Down(Some(Ok(msg))) => {
                    if !hello_checked {
                        if let Message::Text(t) = &msg {
                            hello_checked = self.check_hello(t, &connect_id, &identity, effective);
                        }
                    }
                    let is_close = matches!(msg, Message::Close(_));
                    if client.send(msg).await.is_err() || is_close {
                        break;
                    }
                }
                Dir::Up(_) => {
                    let _ = upstream.close(None).await;
                    break;
                }
                Dir::Down(_) => {
                    let _ = client.close(None).await;
                    break;
                }
                Dir::Idle => {
                    close(&mut client, CloseCode::Away, "idle").await;
                    let _ = upstream.close(None).await;
                    break;
                }
                Dir::Stop => {
                    close(&mut client, CloseCode::Away, "scopegate is shutting down").await;
                    let _ = upstream.close(None).await;
                    break;
                }
                // The registry let go of the sender: nothing can revoke this session any more.
                Dir::Revoked(None) => revoked = None,
                Dir::Revoked(Some(why)) => {
                    close(&mut client, CloseCode::Policy, &why.reason).await;
                    let _ = upstream.close(None).await;
                    break;
                }
            }
        }
    }

    /// Compares the gateway's `hello-ok` grant with scopegate's effective set; true once seen.
    fn check_hello(
        &self,
        text: &str,
        connect_id: &Value,
        identity: &Identity,
        effective: ScopeSet,
    ) -> bool {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return false;
        };
        if v.get("type").and_then(Value::as_str) != Some("res") || v.get("id") != Some(connect_id) {
            return false;
        }
        if v.get("ok") != Some(&Value::Bool(true)) {
            let error = v.get("error").cloned().unwrap_or(Value::Null);
            tracing::warn!(
                request_id = ?self.ctx.request_id,
                subject = %identity.subject,
                error = %error,
                "the gateway refused the forwarded connect"
            );
            return true;
        }
        let granted: Vec<String> = v
            .pointer("/payload/auth/scopes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let (got, _) = self
            .ctx
            .snap
            .policy
            .catalogue
            .parse(granted.iter().map(String::as_str));
        if got != effective {
            let cat = &self.ctx.snap.policy.catalogue;
            let user = self
                .ctx
                .snap
                .openclaw
                .as_ref()
                .map(|p| p.gateway_user(&identity.subject).to_string())
                .unwrap_or_default();
            tracing::warn!(
                request_id = ?self.ctx.request_id,
                subject = %identity.subject,
                gateway_user = %user,
                expected = %cat.join(effective, " "),
                granted = %cat.join(got, " "),
                "the gateway granted different scopes than scopegate decided; check that gateway.auth.identityScopes lists {user:?} with every scope (`scopegate openclaw-config` prints it)"
            );
        }
        true
    }

    async fn refuse(&self, ws: &mut ClientWs, id: Option<&Value>, r: WsRefusal) {
        let body = error_frame(
            id,
            r.code,
            &r.refusal,
            self.ctx.request_id.to_str().unwrap_or("-"),
        );
        let _ = ws.send(Message::text(body.to_string())).await;
        crate::metrics::denial(r.refusal.code);
        self.audit(
            None,
            "deny",
            r.refusal.code,
            ScopeSet::EMPTY,
            r.refusal.status().as_u16(),
        );
        let reason: String = r.refusal.message.chars().take(120).collect();
        close(ws, r.close, &reason).await;
    }

    fn audit(
        &self,
        identity: Option<&Identity>,
        decision: &'static str,
        reasons: &str,
        effective: ScopeSet,
        status: u16,
    ) {
        if !self.ctx.snap.config.log.audit {
            return;
        }
        // The per-snapshot cache behind the assertion's `scope` claim has these names already.
        let (_, effective_names) = self.ctx.snap.scope_strings(effective);
        crate::audit::record(
            true,
            &crate::audit::AuditRecord {
                request_id: self.ctx.request_id.to_str().unwrap_or("-"),
                subject: identity.map(|i| i.subject.as_str()),
                source: identity.map(|i| i.method.amr()),
                client_ip: self.ctx.forwarded.client_ip,
                method: "GET",
                path: self.ctx.uri.path(),
                route: "websocket connect (in-band)",
                required: "".into(),
                effective: effective_names.as_ref().into(),
                decision,
                reasons: reasons.into(),
                status,
                duration: Duration::ZERO,
                upstream: None,
                websocket: true,
            },
        );
    }
}

enum Dir {
    Up(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Down(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    Idle,
    Stop,
    Revoked(Option<crate::sessions::Revocation>),
}
