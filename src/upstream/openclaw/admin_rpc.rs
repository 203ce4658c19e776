//! A short-lived operator session on the gateway's own WebSocket, as scopegate's admin identity.
//!
//! Provisioning (`provision`) writes the gateway's `identityScopes` through the gateway's own config
//! RPCs (`config.get`, `config.patch`) instead of editing its file: the gateway validates the write,
//! applies it live and answers once it is applied. scopegate connects as the trusted proxy it already
//! is, naming `[openclaw] provision_user` in the user header and capping the session to
//! `operator.admin` with `X-OpenClaw-Scopes`; `openclaw-config` lists that identity in
//! `identityScopes`. The session is device-less (`gateway-client`/`backend`), which trusted-proxy auth
//! admits.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::header;
use http::Request;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::preauth::Budgeted;
use super::OpenClawProfile;
use crate::upstream::body::RequestBody;
use crate::upstream::client::UpstreamClient;
use crate::upstream::handshake::Offer;

type Ws = WebSocketStream<Budgeted<TokioIo<hyper::upgrade::Upgraded>>>;

/// How long one RPC (or the handshake) may take before the session is given up.
const RPC_TIMEOUT: Duration = Duration::from_secs(20);

/// An authenticated admin session on the gateway.
pub struct AdminSession {
    ws: Ws,
    next_id: u64,
}

impl AdminSession {
    /// Opens the gateway's WebSocket as `profile.provision_user` and completes `connect`.
    pub async fn open(
        client: &UpstreamClient,
        profile: &OpenClawProfile,
    ) -> Result<AdminSession, String> {
        let uri = client
            .upstream_uri(Some(&http::uri::PathAndQuery::from_static("/")))
            .map_err(|r| r.message)?;
        let key = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            crate::util::random_bytes::<16>(),
        );
        let req = Request::get(uri)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, key.as_str())
            .header(profile.user_header.clone(), profile.provision_user.as_str())
            .header(
                crate::header_names::X_FORWARDED_FOR,
                profile.local_client_value.clone(),
            )
            .header(crate::header_names::X_OPENCLAW_SCOPES, "operator.admin")
            .body(RequestBody::empty())
            .map_err(|e| format!("cannot build the admin upgrade: {e}"))?;
        let offer = Offer::of(req.headers());
        let (mut resp, _upgrade_owns_the_connection) = client
            .send(req, Default::default(), Some(RPC_TIMEOUT))
            .await
            .map_err(|r| r.message)?;
        offer
            .verify(resp.status(), resp.headers())
            .map_err(|r| format!("the gateway refused the admin upgrade: {}", r.message))?;
        let up = hyper::upgrade::on(&mut resp)
            .await
            .map_err(|e| format!("the admin upgrade failed: {e}"))?;
        let ws = WebSocketStream::from_raw_socket(
            Budgeted::unlimited(TokioIo::new(up)),
            Role::Client,
            None,
        )
        .await;
        let mut s = AdminSession { ws, next_id: 0 };
        let challenge = s.next_frame().await?;
        if challenge.get("event").and_then(Value::as_str) != Some("connect.challenge") {
            return Err(format!("expected connect.challenge, got {challenge}"));
        }
        let hello = s
            .call(
                "connect",
                json!({
                    "minProtocol": 4, "maxProtocol": 4,
                    "client": {"id": "gateway-client", "version": env!("CARGO_PKG_VERSION"),
                               "platform": std::env::consts::OS, "mode": "backend"},
                    "role": "operator",
                    "scopes": ["operator.admin"],
                }),
            )
            .await?;
        let scopes = hello
            .pointer("/auth/scopes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !scopes.iter().any(|s| s == "operator.admin") {
            return Err(format!(
                "the gateway did not grant {:?} operator.admin (granted {scopes:?}): list it in gateway.auth.identityScopes (`scopegate openclaw-config` prints it){}",
                profile.provision_user,
                if scopes.is_empty() { "" } else { " and give it a role whose scopes include operator.admin" }
            ));
        }
        Ok(s)
    }

    async fn next_frame(&mut self) -> Result<Value, String> {
        loop {
            let m = tokio::time::timeout(RPC_TIMEOUT, self.ws.next())
                .await
                .map_err(|_| "the gateway did not answer in time".to_string())?;
            match m {
                None => return Err("the gateway closed the admin session".into()),
                Some(Err(e)) => return Err(format!("admin session: {e}")),
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(&t).map_err(|e| format!("bad frame: {e}"))
                }
                Some(Ok(Message::Close(c))) => {
                    return Err(format!("the gateway closed the admin session: {c:?}"))
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Calls one RPC; its `payload`, or the gateway's error as text.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = format!("sg{}", self.next_id);
        let frame = json!({"type": "req", "id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .map_err(|e| format!("admin session: {e}"))?;
        loop {
            let f = self.next_frame().await?;
            if f.get("type").and_then(Value::as_str) != Some("res")
                || f.get("id").and_then(Value::as_str) != Some(id.as_str())
            {
                continue;
            }
            if f.get("ok") == Some(&Value::Bool(true)) {
                return Ok(f.get("payload").cloned().unwrap_or(Value::Null));
            }
            return Err(format!(
                "{method}: {}",
                f.get("error").cloned().unwrap_or(Value::Null)
            ));
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
