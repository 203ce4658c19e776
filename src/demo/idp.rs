//! The demo's throwaway identity provider: just enough OpenID Connect for `scopegate demo` to sign a
//! browser in — discovery, a JWKS, an authorization endpoint whose "login page" lists the demo people
//! (pick one, no password), a token endpoint that redeems a code once against its PKCE challenge and
//! answers an Ed25519-signed ID token, and a logout page. It lives on its own loopback port so that
//! scopegate talks to it exactly as to a real provider. Nothing here is for production: there is no
//! authentication, one public client, and codes live in memory.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use crate::identity::oidc::flow::{encode, param, query_params, s256};
use crate::tokens::{self, TokenSpec};

use super::{full, DemoBody};

/// The demo client scopegate is registered as.
pub const CLIENT_ID: &str = "scopegate-demo";

/// One person the login page offers: login (the subject), name, groups.
pub struct Person {
    pub email: &'static str,
    pub name: &'static str,
    pub groups: &'static [&'static str],
    pub says: &'static str,
}

pub const PEOPLE: &[Person] = &[
    Person {
        email: "reader@example.com",
        name: "Rita Reader",
        groups: &[],
        says: "operator.read",
    },
    Person {
        email: "writer@example.com",
        name: "Will Writer",
        groups: &[],
        says: "operator.write",
    },
    Person {
        email: "admin@example.com",
        name: "Ada Admin",
        groups: &["ops"],
        says: "operator.admin",
    },
];

/// A code waiting to be redeemed.
struct Pending {
    person: usize,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    issued: Instant,
}

/// The provider's state: its issuer, the redirect URI registered for the demo client, its key.
pub struct DemoIdp {
    pub issuer: String,
    /// Set once scopegate is listening (its callback on its own address).
    pub redirect_uri: std::sync::OnceLock<String>,
    key: jsonwebtoken::EncodingKey,
    jwk: Value,
    codes: Mutex<HashMap<String, Pending>>,
}

impl DemoIdp {
    pub fn new(addr: SocketAddr, idp_der: &[u8], jwk: Value) -> Result<Arc<DemoIdp>, String> {
        let key = tokens::encoding_key(
            crate::config::JwtAlgorithm::EdDSA,
            crate::assertion::pem_encode("PRIVATE KEY", idp_der).as_bytes(),
        )?;
        Ok(Arc::new(DemoIdp {
            issuer: format!("http://{addr}"),
            redirect_uri: std::sync::OnceLock::new(),
            key,
            jwk,
            codes: Mutex::new(HashMap::new()),
        }))
    }

    /// Serves the provider on `listener` until it fails.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let idp = self.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let idp = idp.clone();
                    async move { Ok::<_, Infallible>(idp.answer(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<DemoBody> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let query = req.uri().query().map(str::to_string);
        match (method, path.as_str()) {
            (Method::GET, "/.well-known/openid-configuration") => {
                json(StatusCode::OK, self.metadata())
            }
            (Method::GET, "/jwks") => json(StatusCode::OK, json!({"keys": [self.jwk]})),
            (Method::GET, "/authorize") => self.login_page(query.as_deref()),
            (Method::POST, "/authorize") => {
                let body = form_body(req).await;
                self.choose(&body)
            }
            (Method::POST, "/token") => {
                let body = form_body(req).await;
                self.token(&body)
            }
            (Method::GET, "/logout") => {
                let p = query_params(query.as_deref(), &["post_logout_redirect_uri"])
                    .unwrap_or_default();
                let back = param(&p, "post_logout_redirect_uri").unwrap_or("/");
                html(StatusCode::OK, &format!(
                    "<h1>Signed out of the demo provider</h1><p><a href=\"{}\">Back to the demo</a></p>",
                    esc(back)
                ))
            }
            _ => json(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
        }
    }

    fn metadata(&self) -> Value {
        let i = &self.issuer;
        json!({
            "issuer": i,
            "authorization_endpoint": format!("{i}/authorize"),
            "token_endpoint": format!("{i}/token"),
            "jwks_uri": format!("{i}/jwks"),
            "end_session_endpoint": format!("{i}/logout"),
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "id_token_signing_alg_values_supported": ["EdDSA"],
            "authorization_response_iss_parameter_supported": true,
        })
    }

    /// The "login page": one button per demo person, carrying the authorization request along.
    fn login_page(&self, query: Option<&str>) -> Response<DemoBody> {
        let names = [
            "client_id",
            "redirect_uri",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "response_type",
        ];
        let p = match query_params(query, &names) {
            Ok(p) => p,
            Err(e) => {
                return json(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_request", "error_description": e.message()}),
                )
            }
        };
        if param(&p, "client_id") != Some(CLIENT_ID)
            || param(&p, "redirect_uri") != self.redirect_uri.get().map(String::as_str)
            || param(&p, "response_type") != Some("code")
            || param(&p, "code_challenge_method") != Some("S256")
            || param(&p, "code_challenge").is_none_or(str::is_empty)
        {
            return json(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request",
                "error_description": "unknown client or redirect URI, or no PKCE S256 challenge"}),
            );
        }
        let hidden: String = p
            .iter()
            .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{}\">", esc(v)))
            .collect();
        let buttons: String = PEOPLE
            .iter()
            .enumerate()
            .map(|(i, who)| {
                format!(
                    "<p><button name=\"person\" value=\"{i}\">{}</button> {} — {}</p>",
                    esc(who.name),
                    esc(who.email),
                    esc(who.says)
                )
            })
            .collect();
        html(StatusCode::OK, &format!(
            "<h1>Demo identity provider</h1><p>Sign in as one of the demo people (no password: this provider is for the demo only).</p><form method=\"post\" action=\"/authorize\">{hidden}{buttons}</form>"
        ))
    }

    /// A person was picked: a one-time code, back to the client with `state` and `iss`.
    fn choose(&self, body: &str) -> Response<DemoBody> {
        let names = [
            "person",
            "redirect_uri",
            "state",
            "nonce",
            "code_challenge",
            "client_id",
        ];
        let p = query_params(Some(body), &names).unwrap_or_default();
        let person = param(&p, "person")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < PEOPLE.len());
        let (Some(person), Some(challenge)) = (person, param(&p, "code_challenge")) else {
            return json(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}));
        };
        if param(&p, "redirect_uri") != self.redirect_uri.get().map(String::as_str)
            || param(&p, "client_id") != Some(CLIENT_ID)
        {
            return json(StatusCode::BAD_REQUEST, json!({"error": "invalid_request"}));
        }
        let code = crate::util::b64url(&crate::util::random_bytes::<24>());
        if let Ok(mut codes) = self.codes.lock() {
            codes.retain(|_, c| c.issued.elapsed() < Duration::from_secs(60));
            if codes.len() >= 1000 {
                return json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "temporarily_unavailable"}),
                );
            }
            codes.insert(
                code.clone(),
                Pending {
                    person,
                    redirect_uri: self.redirect_uri.get().cloned().unwrap_or_default(),
                    challenge: challenge.to_string(),
                    nonce: param(&p, "nonce").map(str::to_string),
                    issued: Instant::now(),
                },
            );
        }
        let location = format!(
            "{}?code={}&state={}&iss={}",
            self.redirect_uri.get().map(String::as_str).unwrap_or(""),
            encode(&code),
            encode(param(&p, "state").unwrap_or("")),
            encode(&self.issuer)
        );
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::SEE_OTHER;
        if let Ok(v) = http::HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        r
    }

    /// Redeems a code once, with its PKCE verifier, for an ID token.
    fn token(&self, body: &str) -> Response<DemoBody> {
        let names = [
            "grant_type",
            "code",
            "redirect_uri",
            "code_verifier",
            "client_id",
        ];
        let p = query_params(Some(body), &names).unwrap_or_default();
        let refused = |what: &str| {
            json(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_grant", "error_description": what}),
            )
        };
        if param(&p, "grant_type") != Some("authorization_code") {
            return json(
                StatusCode::BAD_REQUEST,
                json!({"error": "unsupported_grant_type"}),
            );
        }
        let pending = param(&p, "code").and_then(|c| self.codes.lock().ok()?.remove(c));
        let Some(pending) = pending.filter(|c| c.issued.elapsed() < Duration::from_secs(60)) else {
            return refused("unknown, used or expired code");
        };
        if param(&p, "client_id") != Some(CLIENT_ID)
            || param(&p, "redirect_uri") != Some(pending.redirect_uri.as_str())
        {
            return refused("the code was issued to another client or redirect URI");
        }
        if param(&p, "code_verifier").map(s256).as_deref() != Some(pending.challenge.as_str()) {
            return refused("PKCE verification failed");
        }
        let who = &PEOPLE[pending.person];
        let mut extra = serde_json::Map::new();
        extra.insert("email".into(), who.email.into());
        extra.insert("name".into(), who.name.into());
        if let Some(n) = pending.nonce {
            extra.insert("nonce".into(), n.into());
        }
        let id_token = tokens::mint(
            crate::config::JwtAlgorithm::EdDSA,
            &self.key,
            &TokenSpec {
                issuer: self.issuer.clone(),
                audience: CLIENT_ID.into(),
                subject: who.email.into(),
                scopes: Vec::new(),
                groups: who.groups.iter().map(|g| g.to_string()).collect(),
                ttl: Duration::from_secs(3600),
                kid: Some("demo-idp".into()),
                extra,
            },
        );
        match id_token {
            Ok(t) => json(
                StatusCode::OK,
                json!({
                    "id_token": t,
                    "access_token": crate::util::b64url(&crate::util::random_bytes::<24>()),
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }),
            ),
            Err(e) => json(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "server_error", "error_description": e}),
            ),
        }
    }
}

async fn form_body(req: Request<Incoming>) -> String {
    match http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
    {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    }
}

fn esc(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn json(status: StatusCode, v: Value) -> Response<DemoBody> {
    let mut r = Response::new(full(serde_json::to_vec_pretty(&v).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}

fn html(status: StatusCode, body: &str) -> Response<DemoBody> {
    let page = format!("<!doctype html><html><head><meta charset=\"utf-8\"><title>scopegate demo</title></head><body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">{body}</body></html>");
    let mut r = Response::new(full(page));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}
