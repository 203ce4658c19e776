//! A minimal client for the gateway's WebSocket protocol (v4): wait for `connect.challenge`, send
//! `connect`, then `req`/`res` frames, skipping events. Real frames over a real socket.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

pub struct Session {
    ws: super::support::client::Ws,
    next: u64,
}

/// A device-less operator `connect` with the given client id and mode.
pub fn connect_params(client_id: &str, mode: &str, scopes: &[&str], token: Option<&str>) -> Value {
    let mut p = json!({
        "minProtocol": 4, "maxProtocol": 4,
        "client": {"id": client_id, "version": "0.0.1", "platform": "linux", "mode": mode},
        "role": "operator",
        "scopes": scopes,
    });
    if let Some(t) = token {
        p["auth"] = json!({"token": t});
    }
    p
}

async fn recv(ws: &mut super::support::client::Ws) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a frame within 30s")
            .expect("the socket is open")
            .expect("a valid frame");
        match m {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON frame"),
            Message::Close(c) => return json!({"type": "close", "close": format!("{c:?}")}),
            _ => continue,
        }
    }
}

impl Session {
    /// Opens the socket with `headers` and completes the handshake. Returns the session and the
    /// `connect` response frame (`ok` true with `hello-ok`, or the error).
    pub async fn open(
        url: &str,
        headers: &[(&str, &str)],
        params: Value,
    ) -> Result<(Session, Value), String> {
        let mut ws = super::support::client::ws_connect(url, headers)
            .await
            .map_err(|(status, body)| format!("upgrade refused: {status} {body}"))?;
        let challenge = recv(&mut ws).await;
        if challenge["event"] != "connect.challenge" {
            return Err(format!("expected connect.challenge, got {challenge}"));
        }
        ws.send(Message::text(
            json!({"type": "req", "id": "c1", "method": "connect", "params": params}).to_string(),
        ))
        .await
        .map_err(|e| e.to_string())?;
        loop {
            let f = recv(&mut ws).await;
            if f["type"] == "res" && f["id"] == "c1" {
                return Ok((Session { ws, next: 1 }, f));
            }
            if f["type"] == "close" {
                return Err(format!("closed during connect: {f}"));
            }
        }
    }

    /// Calls an RPC and returns its `res` frame.
    /// [`Session::call`], sent once more when the gateway answers that a session changed under it
    /// and asks for a retry (its own concurrency check on session writes, raced by the previous
    /// scenario's still-running turn on the same session key).
    pub async fn call_retrying(&mut self, method: &str, params: Value) -> Value {
        let first = self.call(method, params.clone()).await;
        let retry = first["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("retry the request"));
        if retry {
            return self.call(method, params).await;
        }
        first
    }

    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = format!("r{}", self.next);
        self.ws
            .send(Message::text(
                json!({"type": "req", "id": id, "method": method, "params": params}).to_string(),
            ))
            .await
            .unwrap();
        loop {
            let f = recv(&mut self.ws).await;
            if f["type"] == "res" && f["id"] == id.as_str() {
                return f;
            }
            assert_ne!(f["type"], "close", "socket closed during {method}: {f}");
        }
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// The scopes a `hello-ok` granted, sorted.
pub fn granted(hello: &Value) -> Vec<String> {
    let mut v: Vec<String> = hello["payload"]["auth"]["scopes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

impl Session {
    /// Waits (bounded) for the server to close this quiet session; its close code and reason, or
    /// `None` if the socket ended without a close frame. Panics on any other frame but events.
    pub async fn closed_within(mut self, limit: Duration) -> Option<(u16, String)> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("the session was closed in time");
            match m {
                Some(Ok(Message::Close(Some(f)))) => {
                    return Some((u16::from(f.code), f.reason.to_string()))
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }
}

impl Session {
    /// [`Session::call`], except that the server closing the socket is an answer too
    /// (`{"type":"close",…}`) rather than a failure.
    pub async fn call_or_close(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = format!("r{}", self.next);
        let sent = self
            .ws
            .send(Message::text(
                json!({"type": "req", "id": id, "method": method, "params": params}).to_string(),
            ))
            .await;
        if sent.is_err() {
            return json!({"type": "close", "close": "send failed"});
        }
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("a frame within 30s");
            match m {
                Some(Ok(Message::Text(t))) => {
                    let f: Value = serde_json::from_str(&t).expect("JSON frame");
                    if f["type"] == "res" && f["id"] == id.as_str() {
                        return f;
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    return json!({"type": "close", "close": format!("{c:?}")})
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return json!({"type": "close", "close": e.to_string()}),
                None => return json!({"type": "close", "close": "ended"}),
            }
        }
    }
}
