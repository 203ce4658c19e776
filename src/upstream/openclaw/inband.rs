//! The frame protocol of OpenClaw's in-band WebSocket handshake: the first frame a client sends must
//! be a `connect` request (at most 64 KiB, like the gateway), the server's challenge carries a random
//! nonce, and a refusal closes the socket with the gateway's own shapes. No decision is made here:
//! `proxy::in_band` runs the handshake and asks the request's path (identify, authorise, inject).

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::upstream::openclaw::preauth::Budgeted;

/// The client's socket: the upgraded connection under the pre-authentication read budget.
pub type ClientWs = WebSocketStream<Budgeted<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>>;

/// The gateway caps pre-auth frames at 64 KiB; so does scopegate.
const MAX_CONNECT_FRAME: usize = 64 * 1024;

/// The next text (or binary-as-UTF-8) message, skipping pings and pongs; `None` on close or error.
pub async fn next_data(ws: &mut ClientWs) -> Option<String> {
    while let Some(m) = ws.next().await {
        match m.ok()? {
            Message::Text(t) => return Some(t.to_string()),
            Message::Binary(b) => return String::from_utf8(b.to_vec()).ok(),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Close(_) => return None,
        }
    }
    None
}

/// Checks the first frame is a `connect` request; returns its id and the parsed frame, or the id (if
/// any) and the reason it is not acceptable.
pub fn parse_connect(text: &str) -> Result<(Value, Value), (Option<Value>, String)> {
    if text.len() > MAX_CONNECT_FRAME {
        return Err((
            None,
            format!("the connect frame is larger than {MAX_CONNECT_FRAME} bytes"),
        ));
    }
    let v: Value = serde_json::from_str(text)
        .map_err(|_| (None, "the first frame is not JSON".to_string()))?;
    let id = v.get("id").cloned();
    if !v.is_object() {
        return Err((None, "the first frame is not a JSON object".into()));
    }
    if v.get("type").and_then(Value::as_str) != Some("req")
        || v.get("method").and_then(Value::as_str) != Some("connect")
    {
        return Err((
            id,
            "invalid handshake: first request must be connect".into(),
        ));
    }
    let Some(id) = id.filter(|i| i.is_string() || i.is_number()) else {
        return Err((None, "the connect request has no id".into()));
    };
    if !v.get("params").is_some_and(Value::is_object) {
        return Err((Some(id), "the connect request has no params object".into()));
    }
    Ok((id, v))
}

pub async fn close(ws: &mut ClientWs, code: CloseCode, reason: &str) {
    let _ = ws
        .close(Some(CloseFrame {
            code,
            reason: reason.to_string().into(),
        }))
        .await;
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A refusal in the gateway's own `res` error shape, with scopegate's reasons in `details`.
pub fn error_frame(
    id: Option<&Value>,
    code: &str,
    refusal: &crate::error::Refusal,
    request_id: &str,
) -> Value {
    let reasons: Vec<&str> = refusal.reasons.iter().map(|x| x.message.as_str()).collect();
    let codes: Vec<&str> = refusal.reasons.iter().map(|x| x.code).collect();
    serde_json::json!({
        "type": "res",
        "id": id.cloned().unwrap_or(Value::Null),
        "ok": false,
        "error": {
            "code": code,
            "message": refusal.message,
            "details": {
                "source": "scopegate",
                "reasons": reasons,
                "reason_codes": codes,
                "request_id": request_id,
            }
        }
    })
}

/// A random (version 4) UUID string, for the challenge nonce.
pub fn uuid_v4() -> String {
    let mut b: [u8; 16] = crate::util::random_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_frame_checks() {
        let ok = r#"{"type":"req","id":"c1","method":"connect","params":{"auth":{"token":"t"}}}"#;
        let (id, v) = parse_connect(ok).unwrap();
        assert_eq!(id, "c1");
        assert_eq!(v["params"]["auth"]["token"], "t");
        assert!(parse_connect("not json").is_err());
        assert!(parse_connect("[1,2]").is_err());
        let (id, msg) =
            parse_connect(r#"{"type":"req","id":"r1","method":"status","params":{}}"#).unwrap_err();
        assert_eq!(id.unwrap(), "r1");
        assert!(msg.contains("first request must be connect"));
        assert!(parse_connect(r#"{"type":"req","method":"connect","params":{}}"#).is_err());
        assert!(parse_connect(&format!(
            r#"{{"type":"req","id":"c","method":"connect","params":{{"x":"{}"}}}}"#,
            "a".repeat(70_000)
        ))
        .is_err());
    }

    #[test]
    fn uuid_shape() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
