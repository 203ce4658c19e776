//! `scopegate demo`: the whole product on one machine with nothing installed.
//!
//! It starts a small gateway look-alike (an OpenClaw-shaped upstream: `/v1/models`, an SSE
//! `/v1/responses`, a WebSocket that echoes the identity it was handed) and scopegate in front of it, on
//! free loopback ports, with a throwaway identity provider key, and prints tokens for a reader, a writer
//! and an admin plus `curl` lines to paste. The look-alike verifies scopegate's assertion against the
//! published JWKS, so what it echoes is what an upstream can trust.
//!
//! A browser signs in too: a throwaway identity provider (`idp`, on its own loopback port) offers the
//! demo people on a login page, and scopegate's `[oidc]` runs the real code flow against it, so opening
//! the one printed URL shows the whole sign-in and lands on the look-alike as the chosen person.

mod idp;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::config::{Config, JwtAlgorithm};
use crate::tokens::{self, TokenSpec};

pub const DEMO_ISSUER: &str = "https://idp.demo.scopegate.invalid";
pub const DEMO_AUDIENCE: &str = "openclaw";

pub(crate) type DemoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

pub(crate) fn full(b: impl Into<Bytes>) -> DemoBody {
    http_body_util::Full::new(b.into()).boxed()
}

/// The tokens the demo prints.
pub struct DemoTokens {
    pub reader: String,
    pub writer: String,
    pub admin: String,
    pub api_token: String,
}

/// A running demo: the look-alike upstream and scopegate in front of it.
pub struct Demo {
    pub proxy: crate::server::ServerHandle,
    pub proxy_addr: SocketAddr,
    pub upstream_addr: SocketAddr,
    pub idp_addr: SocketAddr,
    pub tokens: DemoTokens,
    pub dir: PathBuf,
    upstream_stop: tokio::sync::oneshot::Sender<()>,
    upstream_thread: std::thread::JoinHandle<()>,
}

/// Starts the demo. `listen` is scopegate's address (port 0 picks a free one).
pub fn start(listen: SocketAddr) -> Result<Demo, String> {
    let dir = std::env::temp_dir().join(format!(
        "scopegate-demo-{}",
        crate::util::b64url(&crate::util::random_bytes::<6>())
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;

    // A throwaway identity provider key: Ed25519, published to scopegate as a JWK file.
    let idp_der = crate::assertion::generate_pkcs8(crate::config::AssertionAlgorithm::EdDSA)?;
    let public = {
        use aws_lc_rs::signature::KeyPair;
        aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&idp_der)
            .map_err(|e| e.to_string())?
            .public_key()
            .as_ref()
            .to_vec()
    };
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": crate::util::b64url(&public), "kid": "demo-idp"});
    std::fs::write(dir.join("demo-idp.jwk"), jwk.to_string()).map_err(|e| e.to_string())?;
    let api_token = format!(
        "sg_demo_{}",
        crate::util::b64url(&crate::util::random_bytes::<18>())
    );

    // The look-alike upstream on its own thread and runtime.
    let up_listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    up_listener
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    let upstream_addr = up_listener.local_addr().map_err(|e| e.to_string())?;
    // The throwaway identity provider, on the same thread as the look-alike.
    let idp_listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    idp_listener
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    let idp_addr = idp_listener.local_addr().map_err(|e| e.to_string())?;
    let provider = idp::DemoIdp::new(idp_addr, &idp_der, jwk.clone())?;
    let provider_for_thread = provider.clone();
    std::fs::write(
        dir.join("cookie-keys"),
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            crate::util::random_bytes::<32>(),
        ),
    )
    .map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let proxy_jwks_url: Arc<std::sync::OnceLock<String>> = Arc::new(std::sync::OnceLock::new());
    let jwks_for_upstream = proxy_jwks_url.clone();
    let upstream_thread = std::thread::Builder::new()
        .name("demo-upstream".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(_) => return,
            };
            rt.block_on(async move {
                let (Ok(l), Ok(idp_l)) = (
                    tokio::net::TcpListener::from_std(up_listener),
                    tokio::net::TcpListener::from_std(idp_listener),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = serve_lookalike(l, jwks_for_upstream) => {}
                    _ = provider_for_thread.serve(idp_l) => {}
                    _ = stop_rx => {}
                }
            });
        })
        .map_err(|e| e.to_string())?;

    let config_text = format!(
        r#"# Written by `scopegate demo`.
[server]
listen = "{listen}"
workers = 1

[upstream]
url = "http://{upstream_addr}"
profile = "openclaw"
response_header_timeout = "30s"

[jwt]
issuer = "{DEMO_ISSUER}"
audience = "{DEMO_AUDIENCE}"
leeway = "30s"
[[jwt.keys]]
kid = "demo-idp"
algorithm = "EdDSA"
jwk_file = "demo-idp.jwk"

[[api_tokens]]
subject = "ci-bot"
sha256 = "{digest}"
scopes = ["operator.read"]

[[grants]]
groups = ["ops"]
scopes = ["operator.write"]

# Browser sign-in against the demo's throwaway provider (a public client: PKCE only).
[oidc]
issuer = "http://{idp_addr}"
client_id = "{client_id}"
scopes = ["openid", "email", "profile"]
subject_claim = "email"
session_ttl = "12h"
cookie_keys_file = "cookie-keys"

# The people of the demo provider's login page.
[[grants]]
subjects = ["reader@example.com"]
scopes = ["operator.read"]

[[grants]]
subjects = ["writer@example.com"]
scopes = ["operator.write"]

[[grants]]
subjects = ["admin@example.com"]
scopes = ["operator.admin"]

[log]
audit = true
"#,
        digest = crate::identity::api_token::sha256_hex(api_token.as_bytes()),
        client_id = idp::CLIENT_ID,
    );
    let config_path = dir.join("scopegate.toml");
    std::fs::write(&config_path, &config_text).map_err(|e| e.to_string())?;
    let config = Config::load(&config_path).map_err(|e| e.to_string())?;
    let proxy = crate::server::start(config)?;
    let proxy_addr = proxy.addr.ok_or("the demo listens on TCP")?;
    let _ = proxy_jwks_url.set(format!("http://{proxy_addr}{}", crate::proxy::JWKS_PATH));
    let _ = provider.redirect_uri.set(format!(
        "http://{proxy_addr}{}",
        crate::identity::oidc::CALLBACK_PATH
    ));

    let key = tokens::encoding_key(
        JwtAlgorithm::EdDSA,
        &crate::assertion::pem_encode("PRIVATE KEY", &idp_der).into_bytes(),
    )?;
    let mint = |sub: &str, scopes: &[&str], groups: &[&str]| {
        tokens::mint(
            JwtAlgorithm::EdDSA,
            &key,
            &TokenSpec {
                issuer: DEMO_ISSUER.into(),
                audience: DEMO_AUDIENCE.into(),
                subject: sub.into(),
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
                groups: groups.iter().map(|s| s.to_string()).collect(),
                ttl: Duration::from_secs(12 * 3600),
                kid: Some("demo-idp".into()),
                extra: Default::default(),
            },
        )
    };
    let tokens = DemoTokens {
        reader: mint("reader@example.com", &["operator.read"], &[])?,
        writer: mint(
            "writer@example.com",
            &["operator.read", "operator.write"],
            &[],
        )?,
        admin: mint("admin@example.com", &["operator.admin"], &["ops"])?,
        api_token,
    };
    Ok(Demo {
        proxy,
        proxy_addr,
        upstream_addr,
        idp_addr,
        tokens,
        dir,
        upstream_stop: stop_tx,
        upstream_thread,
    })
}

impl Demo {
    /// The ready-to-paste instructions.
    pub fn instructions(&self) -> String {
        let p = format!("http://{}", self.proxy_addr);
        let t = &self.tokens;
        format!(
            r#"scopegate demo: an OpenClaw look-alike on http://{up} with scopegate in front on {p}

Open {p}/ in a browser: you are sent to the demo identity provider (http://{idp}), pick a person, and
land on the look-alike signed in as them (sign out: {p}/.scopegate/logout).

Demo credentials (JWTs from a throwaway IdP, valid 12 h; the API token is opaque):
  reader  reader@example.com  operator.read
  writer  writer@example.com  operator.read operator.write
  admin   admin@example.com   operator.admin (and group "ops")
  ci-bot  API token           operator.read

export SG={p}
export READER={reader}
export WRITER={writer}
export ADMIN={admin}
export CI_TOKEN={api}

# Who am I, and what may I do?
curl -s $SG/.scopegate/whoami -H "Authorization: Bearer $READER"

# The reader lists models ...
curl -s $SG/v1/models -H "Authorization: Bearer $READER"

# ... but may not write: 403 "missing scope: operator.write", with the reasons
curl -s -X POST $SG/v1/responses -H "Authorization: Bearer $READER" -H 'content-type: application/json' -d '{{"input":"hi"}}'

# Explain that decision without sending it
curl -s "$SG/.scopegate/whoami?method=POST&path=/v1/responses" -H "Authorization: Bearer $READER"

# The writer streams a response (server-sent events, flushed as they come)
curl -sN -X POST $SG/v1/responses -H "Authorization: Bearer $WRITER" -H 'content-type: application/json' -d '{{"input":"hi","stream":true}}'

# Spoofing changes nothing: scopegate drops client copies of identity and scope headers
curl -s $SG/v1/models -H "Authorization: Bearer $READER" -H 'X-OpenClaw-Scopes: operator.admin' -H 'x-forwarded-user: root'

# No credential, a broken one, an API token
curl -s $SG/v1/models
curl -s $SG/v1/models -H "Authorization: Bearer not-a-token"
curl -s $SG/v1/models -H "Authorization: Bearer $CI_TOKEN"

# The public keys the upstream verifies scopegate's assertion with
curl -s $SG{jwks}

# WebSocket (any client): ws://{addr}/ with the same Authorization header; the look-alike's first
# message is the identity it received.

Press Ctrl-C to stop."#,
            up = self.upstream_addr,
            idp = self.idp_addr,
            reader = t.reader,
            writer = t.writer,
            admin = t.admin,
            api = t.api_token,
            jwks = crate::proxy::JWKS_PATH,
            addr = self.proxy_addr,
        )
    }

    pub fn stop(self) {
        let _ = self.upstream_stop.send(());
        self.proxy.shutdown_and_wait();
        let _ = self.upstream_thread.join();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves the look-alike gateway until the listener fails.
pub async fn serve_lookalike(
    listener: tokio::net::TcpListener,
    jwks_url: Arc<std::sync::OnceLock<String>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let jwks_url = jwks_url.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let jwks_url = jwks_url.clone();
                async move { Ok::<_, Infallible>(lookalike(req, jwks_url).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades()
                .await;
        });
    }
}

/// What the look-alike saw of the caller, from the headers scopegate set.
async fn seen(
    headers: &HeaderMap,
    method: &Method,
    path: &str,
    jwks_url: &std::sync::OnceLock<String>,
) -> Value {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let assertion = match (h("x-scopegate-assertion"), jwks_url.get()) {
        (Some(a), Some(url)) => {
            match crate::util::http_get(url, Duration::from_secs(2), 64 * 1024).await {
                Ok(body) => {
                    let jwks: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let opts = crate::assertion::VerifyOptions {
                        audience: Some("openclaw-gateway"),
                        method: Some(method.as_str()),
                        path: Some(path),
                        leeway: 5,
                        ..Default::default()
                    };
                    match crate::assertion::verify_assertion(&a, &jwks, &opts) {
                        Ok(claims) => json!({"verified": true, "claims": claims}),
                        Err(e) => json!({"verified": false, "error": e}),
                    }
                }
                Err(e) => json!({"verified": false, "error": format!("cannot fetch JWKS: {e}")}),
            }
        }
        (None, _) => Value::Null,
        (Some(_), None) => json!({"verified": false, "error": "no JWKS yet"}),
    };
    json!({
        "user": h("x-forwarded-user"),
        "scopes": h("x-openclaw-scopes"),
        "forwarded_for": h("x-forwarded-for"),
        "request_id": h("x-request-id"),
        "assertion": assertion,
    })
}

fn json_resp(status: StatusCode, v: Value) -> Response<DemoBody> {
    let mut r = Response::new(full(serde_json::to_vec_pretty(&v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

async fn lookalike(
    mut req: Request<Incoming>,
    jwks_url: Arc<std::sync::OnceLock<String>>,
) -> Response<DemoBody> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let who = seen(req.headers(), &method, &path, &jwks_url).await;
    if crate::identity::hygiene::is_websocket_upgrade(req.headers()) {
        let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return json_resp(StatusCode::BAD_REQUEST, json!({"error": "no key"}));
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on_upgrade.await {
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(up),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                let hello = json!({"type": "event", "event": "identity", "payload": who});
                let _ = ws
                    .send(tokio_tungstenite::tungstenite::Message::text(
                        hello.to_string(),
                    ))
                    .await;
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_close() {
                        break;
                    }
                    if m.is_text() || m.is_binary() {
                        let _ = ws.send(m).await;
                    }
                }
            }
        });
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        h.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
        if let Ok(v) = http::HeaderValue::from_str(&accept) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        return r;
    }
    match (method.as_str(), path.as_str()) {
        ("GET", "/") => home(&who),
        ("GET", "/healthz") | ("GET", "/health") => {
            json_resp(StatusCode::OK, json!({"ok": true, "status": "live"}))
        }
        ("GET", "/v1/models") => json_resp(
            StatusCode::OK,
            json!({"object": "list", "data": [{"id": "openclaw", "object": "model", "owned_by": "demo"}], "seen_by_upstream": who}),
        ),
        ("POST", "/v1/responses") | ("POST", "/v1/chat/completions") => {
            let body = Limited(req.into_body()).collect_json().await;
            let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
            if !stream {
                return json_resp(
                    StatusCode::OK,
                    json!({"object": "response", "status": "completed", "output_text": "Hello from the demo gateway.", "seen_by_upstream": who}),
                );
            }
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
            tokio::spawn(async move {
                let words = ["Hello", " from", " the", " demo", " gateway."];
                let first = format!(
                    "event: response.created\ndata: {}\n\n",
                    json!({"seen_by_upstream": who})
                );
                if tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
                    return;
                }
                for w in words {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let ev = format!(
                        "event: response.output_text.delta\ndata: {}\n\n",
                        json!({"delta": w})
                    );
                    if tx.send(Ok(Frame::data(Bytes::from(ev)))).await.is_err() {
                        return;
                    }
                }
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(
                        b"event: response.completed\ndata: {}\n\n",
                    ))))
                    .await;
            });
            let stream = tokio_stream_from(rx);
            let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache"),
            );
            r
        }
        _ => json_resp(
            StatusCode::NOT_FOUND,
            json!({"error": {"type": "not_found", "message": format!("{method} {path}")}}),
        ),
    }
}

/// The look-alike's home page: who the upstream was told is calling.
fn home(who: &Value) -> Response<DemoBody> {
    let text = serde_json::to_string_pretty(who).unwrap_or_default();
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let user = who["user"]
        .as_str()
        .unwrap_or("nobody")
        .replace(['<', '>', '&'], "");
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>scopegate demo</title></head><body style=\"font-family:sans-serif;max-width:48em;margin:3em auto\"><h1>Signed in as {user}</h1><p>This page is the demo gateway. What it was told about you, by scopegate (the assertion verified against scopegate's published keys):</p><pre>{escaped}</pre><p><a href=\"/.scopegate/whoami\">/.scopegate/whoami</a> · <a href=\"/.scopegate/logout\">sign out</a></p></body></html>"
    );
    let mut r = Response::new(full(page));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// A stream over an mpsc receiver (without pulling in tokio-stream).
fn tokio_stream_from<T>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Reads a small JSON request body (at most 1 MiB); anything else is `null`.
struct Limited(Incoming);

impl Limited {
    async fn collect_json(self) -> Value {
        match http_body_util::Limited::new(self.0, 1 << 20)
            .collect()
            .await
        {
            Ok(b) => serde_json::from_slice(&b.to_bytes()).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }
}
