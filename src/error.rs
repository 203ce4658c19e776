//! Refusals: the one error type at the client boundary.
//!
//! Every phase that can stop a request returns a [`Refusal`]. It knows its HTTP status, the `type` of the
//! gateway-shaped JSON body (contract §6), a message, and the ordered reasons — so the response body, the
//! audit line and the metrics label are all rendered from the same value. A refusal never carries a token,
//! secret or assertion: messages are written by scopegate, never copied from the credential.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

/// What went wrong, as the client sees it: a status and the body's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    HeadersTooLarge,
    /// A `[limits]` bucket is empty.
    RateLimited,
    /// The client stopped sending its body (idle timeout).
    RequestTimeout,
    BadGateway,
    ServiceUnavailable,
    GatewayTimeout,
    Internal,
}

impl RefusalKind {
    pub fn status(self) -> StatusCode {
        match self {
            RefusalKind::BadRequest => StatusCode::BAD_REQUEST,
            RefusalKind::Unauthorized => StatusCode::UNAUTHORIZED,
            RefusalKind::Forbidden => StatusCode::FORBIDDEN,
            RefusalKind::NotFound => StatusCode::NOT_FOUND,
            RefusalKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RefusalKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            RefusalKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            RefusalKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            RefusalKind::BadGateway => StatusCode::BAD_GATEWAY,
            RefusalKind::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            RefusalKind::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            RefusalKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body's `type`, in the gateway's vocabulary.
    pub fn type_name(self) -> &'static str {
        match self {
            RefusalKind::BadRequest => "bad_request",
            RefusalKind::Unauthorized => "unauthorized",
            RefusalKind::Forbidden => "forbidden",
            RefusalKind::NotFound => "not_found",
            RefusalKind::PayloadTooLarge => "payload_too_large",
            RefusalKind::HeadersTooLarge => "headers_too_large",
            RefusalKind::RateLimited => "rate_limited",
            RefusalKind::RequestTimeout => "request_timeout",
            RefusalKind::BadGateway => "bad_gateway",
            RefusalKind::ServiceUnavailable => "unavailable",
            RefusalKind::GatewayTimeout => "gateway_timeout",
            RefusalKind::Internal => "internal_error",
        }
    }
}

/// One reason a request was refused (or a scope reduced): a stable machine code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reason {
    pub code: &'static str,
    pub message: String,
}

impl Reason {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Reason {
            code,
            message: message.into(),
        }
    }
}

/// A request stopped at the boundary, with everything needed to explain it.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// The primary machine code (metrics label, log field).
    pub code: &'static str,
    pub message: String,
    /// Present on scope refusals: what the route required and what the caller had.
    pub scopes: Option<Box<ScopeDetail>>,
    pub reasons: Vec<Reason>,
    /// For 401s: the RFC 6750 `error` attribute (`invalid_token`, `invalid_request`) or none for a
    /// missing credential.
    pub bearer_error: Option<&'static str>,
    /// For 429s: whole seconds until the bucket has room again (`Retry-After`).
    pub retry_after: Option<u64>,
}

/// The `required`/`granted` part of a 403 body.
#[derive(Debug, Clone, Default)]
pub struct ScopeDetail {
    pub required: Vec<String>,
    pub granted: Vec<String>,
}

impl Refusal {
    pub fn new(kind: RefusalKind, code: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        Refusal {
            kind,
            code,
            reasons: vec![Reason::new(code, message.clone())],
            message,
            scopes: None,
            bearer_error: None,
            retry_after: None,
        }
    }

    /// A `[limits]` bucket is empty (429); set `retry_after` for the header.
    pub fn rate_limited(code: &'static str, message: impl Into<String>) -> Self {
        Refusal::new(RefusalKind::RateLimited, code, message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Refusal::new(RefusalKind::BadRequest, code, message)
    }

    /// A missing or invalid credential. `bearer_error` follows RFC 6750 §3.1.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        let mut r = Refusal::new(RefusalKind::Unauthorized, code, message);
        r.bearer_error = Some("invalid_token");
        r
    }

    /// No credential at all: RFC 6750 says the challenge then carries no error code.
    pub fn no_credential(message: impl Into<String>) -> Self {
        Refusal::new(RefusalKind::Unauthorized, "no_credential", message)
    }

    pub fn bad_gateway(code: &'static str, message: impl Into<String>) -> Self {
        Refusal::new(RefusalKind::BadGateway, code, message)
    }

    pub fn gateway_timeout(code: &'static str, message: impl Into<String>) -> Self {
        Refusal::new(RefusalKind::GatewayTimeout, code, message)
    }

    /// Framing refusals leave the rest of an HTTP/1 connection unreadable (an upgrade's unread body
    /// included): the response closes it.
    pub fn poisons_connection(&self) -> bool {
        matches!(
            self.code,
            "duplicate_content_length"
                | "unsupported_transfer_coding"
                | "websocket_body"
                | "bad_content_length"
                | "bad_request_body"
                | "request_body_idle"
                | "payload_too_large"
        )
    }

    pub fn with_reasons(mut self, reasons: Vec<Reason>) -> Self {
        self.reasons = reasons;
        self
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The gateway-shaped JSON body.
    pub fn body_json(&self, request_id: &str) -> serde_json::Value {
        let mut error = serde_json::Map::new();
        error.insert("type".into(), self.kind.type_name().into());
        error.insert("message".into(), self.message.clone().into());
        if let Some(detail) = &self.scopes {
            error.insert("required".into(), detail.required.clone().into());
            error.insert("granted".into(), detail.granted.clone().into());
        }
        error.insert(
            "reasons".into(),
            self.reasons
                .iter()
                .map(|r| serde_json::Value::from(r.message.clone()))
                .collect::<Vec<_>>()
                .into(),
        );
        error.insert(
            "reason_codes".into(),
            self.reasons
                .iter()
                .map(|r| serde_json::Value::from(r.code))
                .collect::<Vec<_>>()
                .into(),
        );
        error.insert("request_id".into(), request_id.into());
        serde_json::json!({ "error": error })
    }

    /// The `WWW-Authenticate` value for a 401 (RFC 6750 §3). The description is ours, never the token's.
    pub fn www_authenticate(&self) -> Option<String> {
        if self.kind != RefusalKind::Unauthorized {
            return None;
        }
        let mut value = String::from("Bearer realm=\"scopegate\"");
        if let Some(err) = self.bearer_error {
            value.push_str(", error=\"");
            value.push_str(err);
            value.push_str("\", error_description=\"");
            for c in self.message.chars() {
                // RFC 6750: error_description is limited to %x20-21 / %x23-5B / %x5D-7E.
                if (' '..='~').contains(&c) && c != '"' && c != '\\' {
                    value.push(c);
                }
            }
            value.push('"');
        }
        Some(value)
    }

    /// Renders the refusal as a complete HTTP response.
    pub fn to_response<B: From<Bytes>>(&self, request_id: &str) -> Response<B> {
        let body = serde_json::to_vec(&self.body_json(request_id)).unwrap_or_default();
        let mut resp = Response::new(B::from(Bytes::from(body)));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", v);
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if let Some(challenge) = self.www_authenticate() {
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status().as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_body_has_gateway_shape() {
        let mut r = Refusal::new(
            RefusalKind::Forbidden,
            "missing_scope",
            "missing scope: operator.write",
        );
        r.scopes = Some(Box::new(ScopeDetail {
            required: vec!["operator.write".into()],
            granted: vec!["operator.read".into()],
        }));
        let body = r.body_json("req-1");
        assert_eq!(body["error"]["type"], "forbidden");
        assert_eq!(body["error"]["message"], "missing scope: operator.write");
        assert_eq!(body["error"]["required"][0], "operator.write");
        assert_eq!(body["error"]["granted"][0], "operator.read");
        assert_eq!(body["error"]["request_id"], "req-1");
        assert_eq!(body["error"]["reason_codes"][0], "missing_scope");
    }

    #[test]
    fn unauthorized_challenge_is_rfc6750_and_sanitised() {
        let r = Refusal::unauthorized("token_expired", "token expired 12 s ago \"x\"\n");
        let v = r.www_authenticate().unwrap();
        assert_eq!(
            v,
            "Bearer realm=\"scopegate\", error=\"invalid_token\", error_description=\"token expired 12 s ago x\""
        );
        let none = Refusal::no_credential("no credential");
        assert_eq!(
            none.www_authenticate().unwrap(),
            "Bearer realm=\"scopegate\""
        );
    }
}
