//! Browser sign-in against a real OpenID provider (npm `oidc-provider`, pinned, on loopback), through
//! scopegate on a real socket, to a recording upstream: the whole authorization code flow with PKCE as
//! a browser would walk it, hop by hop, and every way it is refused — forged, tampered and ended
//! cookies, a replayed or missing `state`, a wrong `nonce`, a mixed-up issuer, a code for another
//! client, an off-origin return address, a cross-site upgrade or POST carrying the cookie, logout, key
//! rotation, renewal with the refresh token, and a WebSocket closed when its session ends.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::{json, Value};

use scopegate::identity::oidc::seal::{Purpose, Sealer};
use scopegate::identity::oidc::session::Session;
use support::client::{get, send, ws_connect};
use support::jar::{resolve, Jar};
use support::oidc_provider::Provider;
use support::proxy::{start_in, TestProxy};
use support::upstream::Upstream;

const KEY_A: [u8; 32] = [0xA1; 32];
const KEY_B: [u8; 32] = [0xB2; 32];
const SECRET: &str = "scopegate-test-client-secret";
const SESSION: &str = "scopegate-session";

fn b64(k: &[u8; 32]) -> String {
    base64::engine::general_purpose::STANDARD.encode(k)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Setup {
    provider: Provider,
    proxy: TestProxy,
    upstream: Upstream,
    /// `http://127.0.0.1:PORT` of scopegate.
    sg: String,
}

fn config(sg_port: u16, issuer: &str, upstream: &str, keys: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{sg_port}"
workers = 1

[upstream]
url = "{upstream}"
profile = "generic"

[oidc]
issuer = "{issuer}"
client_id = "scopegate"
client_secret_file = "{{dir}}/client-secret"
cookie_keys_file = "{{dir}}/{keys}"
scopes = ["openid", "email", "profile", "groups"]
subject_claim = "email"
session_ttl = "1h"

[[api_tokens]]
subject = "ci-bot"
sha256 = "{token}"
scopes = ["operator.read"]

[[grants]]
groups = ["ops"]
scopes = ["operator.write"]

[[routes]]
path = "/public"
public = true

[[routes]]
path = "/*"
require = ["operator.read"]

[limits]
enabled = false
"#,
        token = scopegate::identity::api_token::sha256_hex(b"sg_api_token"),
    )
}

async fn setup() -> Setup {
    let upstream = Upstream::start().await;
    let port = free_port();
    let sg = format!("http://127.0.0.1:{port}");
    let callback = format!("{sg}/.scopegate/callback");
    let provider = Provider::start(
        json!([
            {
                "client_id": "scopegate",
                "client_secret": SECRET,
                "redirect_uris": [callback],
                "post_logout_redirect_uris": [format!("{sg}/")],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
            },
            {
                "client_id": "other-app",
                "redirect_uris": [callback],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            }
        ]),
        json!([
            {"login": "alice@example.com", "password": "alice-pw", "name": "Alice",
             "email": "alice@example.com", "groups": ["ops"]},
            {"login": "bob@example.com", "password": "bob-pw", "name": "Bob",
             "email": "bob@example.com", "groups": []}
        ]),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client-secret"), SECRET).unwrap();
    std::fs::write(dir.path().join("keys-a"), b64(&KEY_A)).unwrap();
    std::fs::write(
        dir.path().join("keys-ba"),
        format!("{},{}", b64(&KEY_B), b64(&KEY_A)),
    )
    .unwrap();
    std::fs::write(dir.path().join("keys-b"), b64(&KEY_B)).unwrap();
    let proxy = start_in(
        dir,
        &config(port, &provider.issuer, &upstream.url(), "keys-a"),
    );
    ready(&proxy).await;
    Setup {
        provider,
        proxy,
        upstream,
        sg,
    }
}

/// Waits for scopegate's own discovery of the provider (the signal it reports ready on).
async fn ready(proxy: &TestProxy) {
    assert!(
        support::within(20, "readiness", proxy.handle.ready(Duration::from_secs(15))).await,
        "scopegate did not become ready (provider discovery)"
    );
}

/// The provider's sign-in: from its authorization URL, through its login form, to the redirect
/// back to scopegate's callback (returned, not followed).
async fn provider_sign_in(
    jar: &mut Jar,
    s: &Setup,
    authorize: &str,
    login: &str,
    pw: &str,
) -> String {
    let form = jar
        .follow_until(authorize, &format!("{}/interaction/", s.provider.issuer), 5)
        .await;
    let page = jar.navigate(&form).await;
    assert!(
        page.text().contains("Sign in to the test provider"),
        "{}",
        page.text()
    );
    let posted = jar
        .send(
            "POST",
            &format!("{form}/login"),
            &[],
            &format!("login={}&password={pw}", login.replace('@', "%40")),
        )
        .await;
    let next = resolve(
        &form,
        &posted
            .header("location")
            .unwrap_or_else(|| panic!("login answered {}: {}", posted.status, posted.text())),
    );
    jar.follow_until(&next, &s.sg, 5).await
}

/// A navigation to `path` without a session: scopegate's redirect to the provider.
async fn start_sign_in(jar: &mut Jar, s: &Setup, path: &str) -> String {
    let got = jar.navigate(&format!("{}{path}", s.sg)).await;
    assert_eq!(got.status, 302, "{}", got.text());
    let loc = got.header("location").unwrap();
    assert!(
        loc.starts_with(&format!("{}/auth?", s.provider.issuer)),
        "{loc}"
    );
    loc
}

/// Signs `login` in from a navigation to `path`; returns the jar holding the session.
async fn signed_in(s: &Setup, path: &str, login: &str, pw: &str) -> Jar {
    let mut jar = Jar::default();
    let authorize = start_sign_in(&mut jar, s, path).await;
    let callback = provider_sign_in(&mut jar, s, &authorize, login, pw).await;
    let got = jar.navigate(&callback).await;
    assert_eq!(got.status, 302, "callback: {}", got.text());
    assert_eq!(got.header("location").as_deref(), Some(path));
    assert!(
        jar.get(&s.sg, SESSION).is_some(),
        "a session cookie was set"
    );
    jar
}

fn assertion_claims(seen: &support::upstream::Seen) -> Value {
    let a = seen.header("x-scopegate-assertion").expect("an assertion");
    let payload = a.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn cookie_header(value: &str) -> String {
    format!("theme=dark; {SESSION}={value}")
}

#[tokio::test]
async fn a_browser_signs_in_with_the_real_provider_and_reaches_the_upstream_as_that_person() {
    let s = setup().await;
    let mut jar = Jar::default();
    let authorize = start_sign_in(&mut jar, &s, "/app?tab=2").await;
    // The authorization request: code flow, our client, PKCE S256, state and nonce.
    for part in [
        "response_type=code",
        "client_id=scopegate",
        "code_challenge_method=S256",
        "state=",
        "nonce=",
    ] {
        assert!(authorize.contains(part), "{part} in {authorize}");
    }
    let login_cookies: Vec<_> = jar
        .names(&s.sg)
        .into_iter()
        .filter(|n| n.starts_with("scopegate-login-"))
        .collect();
    assert_eq!(login_cookies.len(), 1, "one login-state cookie");
    let callback =
        provider_sign_in(&mut jar, &s, &authorize, "alice@example.com", "alice-pw").await;
    assert!(
        callback.contains("iss="),
        "RFC 9207 iss is sent: {callback}"
    );
    let got = jar.navigate(&callback).await;
    assert_eq!(got.status, 302);
    assert_eq!(
        got.header("location").as_deref(),
        Some("/app?tab=2"),
        "back where the sign-in started"
    );
    let set: Vec<String> = got
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("scopegate-session="))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=3600"] {
        assert!(session.contains(attr), "{attr} in {session}");
    }
    assert!(
        set.iter()
            .any(|c| c.starts_with(&login_cookies[0]) && c.contains("Max-Age=0")),
        "the login-state cookie is cleared: {set:?}"
    );

    // Signed in: the upstream sees Alice (grants by her group), never the session cookie.
    jar.set(&s.sg, "theme", "dark");
    let got = jar.navigate(&format!("{}/app?tab=2", s.sg)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = s.upstream.last();
    let claims = assertion_claims(&seen);
    assert_eq!(claims["sub"], "alice@example.com");
    assert_eq!(claims["amr"], json!(["oidc"]));
    assert!(claims["scope"].as_str().unwrap().contains("operator.write"));
    assert_eq!(seen.header("cookie").as_deref(), Some("theme=dark"));

    // whoami names her, with how she was identified.
    let who = get(
        &format!("{}/.scopegate/whoami", s.sg),
        &[("cookie", &jar.header(&s.sg).unwrap())],
    )
    .await;
    let who = who.json();
    assert_eq!(who["subject"], "alice@example.com", "{who}");
    assert_eq!(who["method"], "oidc");
    assert_eq!(who["display_name"], "Alice");

    // A fetch or an API call with no session gets the contract's 401, not a redirect.
    for headers in [
        vec![("sec-fetch-mode", "cors"), ("accept", "text/html")],
        vec![("accept", "application/json")],
        vec![
            ("accept", "text/html"),
            ("x-requested-with", "XMLHttpRequest"),
        ],
    ] {
        let got = get(&format!("{}/app", s.sg), &headers).await;
        assert_eq!(got.status, 401, "{headers:?}");
        assert_eq!(got.json()["error"]["type"], "unauthorized");
    }
}

#[tokio::test]
async fn forged_tampered_ended_and_doubled_cookies_are_refused() {
    let s = setup().await;
    let jar = signed_in(&s, "/app", "alice@example.com", "alice-pw").await;
    let real = jar.get(&s.sg, SESSION).unwrap();
    let url = format!("{}/app", s.sg);
    let api = |cookie: String| {
        let url = url.clone();
        async move { get(&url, &[("cookie", &cookie), ("accept", "application/json")]).await }
    };
    // The real one works.
    assert_eq!(api(cookie_header(&real)).await.status, 200);

    // Forged: a value scopegate never sealed.
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 96]);
    let got = api(cookie_header(&forged)).await;
    assert_eq!(got.status, 401);
    assert_eq!(
        got.json()["error"]["reason_codes"][0],
        "session_unknown_key"
    );
    let same_key_id = {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&real)
            .unwrap();
        let mut f = raw[..4].to_vec();
        f.extend([9u8; 80]);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(f)
    };
    let got = api(cookie_header(&same_key_id)).await;
    assert_eq!(got.json()["error"]["reason_codes"][0], "session_forged");

    // Tampered: one character of the real cookie changed.
    let mut chars: Vec<char> = real.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let got = api(cookie_header(&tampered)).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"]["reason_codes"][0], "session_forged");

    // Ended: a session sealed with the real key whose end has passed. The cookie's Max-Age plays no
    // part: the end is read from the sealed value.
    let ring = Sealer::new(&[KEY_A]).unwrap();
    let mut ended: Session =
        serde_json::from_slice(&ring.unseal(Purpose::Session, &real).unwrap()).unwrap();
    ended.exp = now() - 5;
    ended.refresh_token = None;
    let ended = ring.seal(Purpose::Session, &serde_json::to_vec(&ended).unwrap());
    let got = api(cookie_header(&ended)).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"]["reason_codes"][0], "session_expired");
    // ...and a navigation with it is sent to sign in again, the dead cookie cleared.
    let got = get(
        &url,
        &[
            ("cookie", &cookie_header(&ended)),
            ("sec-fetch-mode", "navigate"),
        ],
    )
    .await;
    assert_eq!(got.status, 302);
    assert!(got
        .header("location")
        .unwrap()
        .starts_with(&s.provider.issuer));
    assert!(got
        .headers
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("scopegate-session=;")));

    // Twice: one of them was planted.
    let got = api(format!("{SESSION}={real}; {SESSION}={forged}")).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"]["reason_codes"][0], "session_ambiguous");

    // A present but invalid bearer never falls back to the cookie; a valid one decides.
    let got = get(
        &url,
        &[
            ("cookie", &cookie_header(&real)),
            ("authorization", "Bearer sg_wrong"),
        ],
    )
    .await;
    assert_eq!(got.status, 401);
    let got = get(
        &url,
        &[
            ("cookie", &cookie_header(&real)),
            ("authorization", "Bearer sg_api_token"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(assertion_claims(&s.upstream.last())["sub"], "ci-bot");
}

/// Parameter `name` of `url` replaced by `value` (or removed with `None`).
fn with_param(url: &str, name: &str, value: Option<&str>) -> String {
    let (base, query) = url.split_once('?').unwrap();
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|p| !p.starts_with(&format!("{name}=")))
        .map(str::to_string)
        .collect();
    if let Some(v) = value {
        parts.push(format!("{name}={v}"));
    }
    format!("{base}?{}", parts.join("&"))
}

fn refusal_code(got: &support::client::Got) -> String {
    got.json()["error"]["reason_codes"][0]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn callbacks_that_do_not_finish_a_sign_in_started_here_are_refused() {
    let s = setup().await;

    // A replayed state: the same callback, login cookie and all, a second time.
    let mut jar = Jar::default();
    let authorize = start_sign_in(&mut jar, &s, "/app").await;
    let login_cookie = jar.header(&s.sg).unwrap();
    let callback =
        provider_sign_in(&mut jar, &s, &authorize, "alice@example.com", "alice-pw").await;
    assert_eq!(jar.navigate(&callback).await.status, 302);
    let again = get(&callback, &[("cookie", &login_cookie)]).await;
    assert_eq!(again.status, 400);
    assert_eq!(refusal_code(&again), "state_replayed");

    // Missing state; a state with no login cookie (not started in this browser).
    let got = get(&format!("{}/.scopegate/callback?code=abc", s.sg), &[]).await;
    assert_eq!(
        (got.status.as_u16(), refusal_code(&got).as_str()),
        (400, "state_missing")
    );
    let mut jar = Jar::default();
    let authorize = start_sign_in(&mut jar, &s, "/app").await;
    let callback =
        provider_sign_in(&mut jar, &s, &authorize, "alice@example.com", "alice-pw").await;
    let got = get(&callback, &[]).await;
    assert_eq!(
        (got.status.as_u16(), refusal_code(&got).as_str()),
        (400, "login_unknown")
    );

    // A mixed-up issuer (RFC 9207): the response claims another provider, or none.
    let mut jar = Jar::default();
    let authorize = start_sign_in(&mut jar, &s, "/app").await;
    let callback =
        provider_sign_in(&mut jar, &s, &authorize, "alice@example.com", "alice-pw").await;
    let cookies = jar.header(&s.sg).unwrap();
    let evil = with_param(&callback, "iss", Some("https%3A%2F%2Fevil.example"));
    let got = get(&evil, &[("cookie", &cookies)]).await;
    assert_eq!(
        (got.status.as_u16(), refusal_code(&got).as_str()),
        (400, "iss_mismatch")
    );
    let none = with_param(&callback, "iss", None);
    let got = get(&none, &[("cookie", &cookies)]).await;
    assert_eq!(
        (got.status.as_u16(), refusal_code(&got).as_str()),
        (400, "iss_missing")
    );
    // The untouched callback still works: the refusals above were for what was changed.
    assert_eq!(get(&callback, &[("cookie", &cookies)]).await.status, 302);

    // A wrong nonce: the provider signs the nonce it was sent, which is not this sign-in's.
    let mut jar = Jar::default();
    let authorize = start_sign_in(&mut jar, &s, "/app").await;
    let swapped = with_param(&authorize, "nonce", Some("not-the-nonce-scopegate-sent"));
    let callback = provider_sign_in(&mut jar, &s, &swapped, "alice@example.com", "alice-pw").await;
    let got = jar.navigate(&callback).await;
    assert_eq!(
        (got.status.as_u16(), refusal_code(&got).as_str()),
        (401, "nonce_mismatch")
    );
    assert!(jar.get(&s.sg, SESSION).is_none());

    // A code issued to another client (same redirect URI, scopegate's own state and challenge):
    // the provider refuses to redeem it for scopegate.
    let mut jar = Jar::default();
    let authorize = start_sign_in(&mut jar, &s, "/app").await;
    let other = with_param(&authorize, "client_id", Some("other-app"));
    let callback = provider_sign_in(&mut jar, &s, &other, "alice@example.com", "alice-pw").await;
    let got = jar.navigate(&callback).await;
    assert_eq!(
        (got.status.as_u16(), refusal_code(&got).as_str()),
        (401, "code_rejected")
    );
    assert!(got.text().contains("invalid_grant"), "{}", got.text());

    // A login-state cookie that was changed does not open.
    let mut jar = Jar::default();
    let authorize = start_sign_in(&mut jar, &s, "/app").await;
    let callback =
        provider_sign_in(&mut jar, &s, &authorize, "alice@example.com", "alice-pw").await;
    let name = jar
        .names(&s.sg)
        .into_iter()
        .find(|n| n.starts_with("scopegate-login-"))
        .unwrap();
    let v = jar.get(&s.sg, &name).unwrap();
    jar.set(&s.sg, &name, &format!("{}A", &v[..v.len() - 1]));
    let got = jar.navigate(&callback).await;
    assert_eq!(
        (got.status.as_u16(), refusal_code(&got).as_str()),
        (400, "login_forged")
    );
}

#[tokio::test]
async fn return_addresses_stay_on_scopegate_s_origin() {
    let s = setup().await;
    for bad in [
        "https%3A%2F%2Fevil.example%2F",
        "%2F%2Fevil.example",
        "%2F%5Cevil.example",
        "evil.example",
    ] {
        let got = get(&format!("{}/.scopegate/login?return={bad}", s.sg), &[]).await;
        assert_eq!(got.status, 400, "{bad}");
        assert_eq!(refusal_code(&got), "return_off_origin", "{bad}");
    }
    // A local path is accepted and is where the sign-in comes back to.
    let mut jar = Jar::default();
    let got = jar
        .navigate(&format!("{}/.scopegate/login?return=%2Fchat%3Fx%3D1", s.sg))
        .await;
    assert_eq!(got.status, 302);
    let authorize = got.header("location").unwrap();
    let callback = provider_sign_in(&mut jar, &s, &authorize, "bob@example.com", "bob-pw").await;
    let got = jar.navigate(&callback).await;
    assert_eq!(got.header("location").as_deref(), Some("/chat?x=1"));
}

#[tokio::test]
async fn a_cookie_opens_websockets_and_changes_state_only_from_our_own_origin() {
    let s = setup().await;
    let jar = signed_in(&s, "/app", "alice@example.com", "alice-pw").await;
    let cookie = jar.header(&s.sg).unwrap();
    let ws_url = format!("ws://{}/ws", s.proxy.addr);

    // Same origin: the upgrade is identified by the cookie and relayed.
    let mut ws = ws_connect(&ws_url, &[("cookie", &cookie), ("origin", &s.sg)])
        .await
        .expect("a same-origin upgrade with the session");
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text("hello"))
        .await
        .unwrap();
    let echoed = support::within(10, "echo", ws.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed.to_text().unwrap(), "hello");
    let seen = s
        .upstream
        .seen()
        .into_iter()
        .rfind(|r| r.websocket)
        .unwrap();
    assert_eq!(assertion_claims(&seen)["sub"], "alice@example.com");
    assert!(
        seen.header("cookie").is_none(),
        "the session never goes upstream"
    );

    // Cross-site: a page elsewhere making the browser open the socket with the cookie.
    let (status, body) = ws_connect(
        &ws_url,
        &[("cookie", &cookie), ("origin", "http://evil.example")],
    )
    .await
    .unwrap_err();
    assert_eq!(status, 403, "{body}");
    let (status, body) = ws_connect(
        &ws_url,
        &[
            ("cookie", &cookie),
            ("origin", &s.sg),
            ("sec-fetch-site", "cross-site"),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(status, 403);
    assert!(body.contains("cross_site_cookie"), "{body}");
    let (status, body) = ws_connect(&ws_url, &[("cookie", &cookie)])
        .await
        .unwrap_err();
    assert_eq!(
        status, 403,
        "no Origin: nothing shows it came from our pages"
    );
    assert!(body.contains("cross_site_cookie"), "{body}");

    // State-changing requests: same origin yes, another site no.
    let post = |origin: &'static str| {
        let (url, cookie) = (format!("{}/v1/things", s.sg), cookie.clone());
        async move {
            let mut h = vec![("cookie", cookie.as_str())];
            if !origin.is_empty() {
                h.push(("origin", origin));
            }
            send("POST", &url, &h, "{}").await
        }
    };
    let same = send(
        "POST",
        &format!("{}/v1/things", s.sg),
        &[("cookie", &cookie), ("origin", &s.sg)],
        "{}",
    )
    .await;
    assert_eq!(same.status, 200, "{}", same.text());
    let cross = post("http://evil.example").await;
    assert_eq!(cross.status, 403);
    assert_eq!(refusal_code(&cross), "cross_site_cookie");
    // A bearer credential is not ambient: no origin rule for it.
    let bearer = send(
        "POST",
        &format!("{}/v1/things", s.sg),
        &[
            ("authorization", "Bearer sg_api_token"),
            ("origin", "http://evil.example"),
        ],
        "{}",
    )
    .await;
    assert_eq!(bearer.status, 200);
}

#[tokio::test]
async fn logout_clears_the_session_and_ends_the_provider_s_too() {
    let s = setup().await;
    let jar = signed_in(&s, "/app", "alice@example.com", "alice-pw").await;
    let cookie = jar.header(&s.sg).unwrap();
    let got = get(
        &format!("{}/.scopegate/logout", s.sg),
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(got.status, 302);
    let loc = got.header("location").unwrap();
    assert!(
        loc.starts_with(&format!("{}/session/end?", s.provider.issuer)),
        "{loc}"
    );
    assert!(loc.contains("client_id=scopegate"));
    assert!(loc.contains(&format!(
        "post_logout_redirect_uri={}",
        scopegate::identity::oidc::flow::encode(&format!("{}/", s.sg))
    )));
    let cleared = got.header("set-cookie").unwrap();
    assert!(
        cleared.starts_with("scopegate-session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    // The provider accepts the logout request it was sent to (its confirmation page).
    let end = get(&loc, &[]).await;
    assert_eq!(end.status, 200, "{}", end.text());
    assert!(end.text().contains("logout"), "{}", end.text());

    // Another site cannot sign the visitor out.
    let got = get(
        &format!("{}/.scopegate/logout", s.sg),
        &[("cookie", &cookie), ("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(got.status, 403);
}

#[tokio::test]
async fn cookie_keys_rotate_without_signing_anyone_out() {
    let s = setup().await;
    let jar = signed_in(&s, "/app", "alice@example.com", "alice-pw").await;
    let old = jar.header(&s.sg).unwrap();
    let url = format!("{}/app", s.sg);
    let api = |c: String| {
        let url = url.clone();
        async move { get(&url, &[("cookie", &c), ("accept", "application/json")]).await }
    };
    let upstream = s.upstream.url();
    let port = s.proxy.addr.port();
    // A new key first, the old one still listed: old sessions hold, new ones use the new key.
    s.proxy
        .reload_with(&config(port, &s.provider.issuer, &upstream, "keys-ba"))
        .await
        .unwrap();
    assert_eq!(
        api(old.clone()).await.status,
        200,
        "sealed with the old key, still open"
    );
    let jar_new = signed_in(&s, "/app", "alice@example.com", "alice-pw").await;
    let new = jar_new.get(&s.sg, SESSION).unwrap();
    assert!(Sealer::new(&[KEY_B])
        .unwrap()
        .unseal(Purpose::Session, &new)
        .is_ok());
    assert!(Sealer::new(&[KEY_A])
        .unwrap()
        .unseal(Purpose::Session, &new)
        .is_err());
    // The old key retired: its sessions end, the new key's hold.
    s.proxy
        .reload_with(&config(port, &s.provider.issuer, &upstream, "keys-b"))
        .await
        .unwrap();
    let got = api(old).await;
    assert_eq!(got.status, 401);
    assert_eq!(refusal_code(&got), "session_unknown_key");
    assert_eq!(api(cookie_header(&new)).await.status, 200);
}

#[tokio::test]
async fn an_ended_session_with_a_refresh_token_is_renewed_at_the_provider() {
    let s = setup().await;
    let jar = signed_in(&s, "/app", "alice@example.com", "alice-pw").await;
    let real = jar.get(&s.sg, SESSION).unwrap();
    let ring = Sealer::new(&[KEY_A]).unwrap();
    let mut session: Session =
        serde_json::from_slice(&ring.unseal(Purpose::Session, &real).unwrap()).unwrap();
    assert!(
        session.refresh_token.is_some(),
        "the provider gave a refresh token"
    );
    session.exp = now() - 1;
    let ended = ring.seal(Purpose::Session, &serde_json::to_vec(&session).unwrap());
    // An API call gets 401; a navigation is renewed in place and sent back where it was going.
    let url = format!("{}/app?x=1", s.sg);
    assert_eq!(
        get(
            &url,
            &[
                ("cookie", &cookie_header(&ended)),
                ("accept", "application/json")
            ]
        )
        .await
        .status,
        401
    );
    let got = get(
        &url,
        &[
            ("cookie", &cookie_header(&ended)),
            ("sec-fetch-mode", "navigate"),
        ],
    )
    .await;
    assert_eq!(got.status, 302, "{}", got.text());
    assert_eq!(got.header("location").as_deref(), Some("/app?x=1"));
    let renewed = got
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("scopegate-session="))
        .unwrap();
    let value = renewed
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_string();
    let again: Session =
        serde_json::from_slice(&ring.unseal(Purpose::Session, &value).unwrap()).unwrap();
    assert!(again.exp > now() + 3000, "a fresh session lifetime");
    assert_eq!(again.sub, "alice@example.com");
    assert_eq!(
        get(
            &url,
            &[
                ("cookie", &cookie_header(&value)),
                ("accept", "application/json")
            ]
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn a_websocket_opened_by_a_session_closes_when_the_session_ends() {
    let s = setup().await;
    let jar = signed_in(&s, "/app", "alice@example.com", "alice-pw").await;
    let real = jar.get(&s.sg, SESSION).unwrap();
    let ring = Sealer::new(&[KEY_A]).unwrap();
    let mut session: Session =
        serde_json::from_slice(&ring.unseal(Purpose::Session, &real).unwrap()).unwrap();
    session.exp = now() + 2;
    let short = ring.seal(Purpose::Session, &serde_json::to_vec(&session).unwrap());
    let opened = std::time::Instant::now();
    let mut ws = ws_connect(
        &format!("ws://{}/ws", s.proxy.addr),
        &[("cookie", &cookie_header(&short)), ("origin", &s.sg)],
    )
    .await
    .expect("the session is still valid");
    use futures_util::StreamExt;
    // The relay is cut at the session's end: the stream ends (closed or reset), bounded.
    loop {
        match support::within(10, "the websocket to close at the session's end", ws.next()).await {
            None | Some(Err(_)) => break,
            Some(Ok(m)) if m.is_close() => break,
            Some(Ok(_)) => continue,
        }
    }
    let lived = opened.elapsed();
    assert!(
        lived >= Duration::from_millis(500),
        "not closed at once: {lived:?}"
    );
    assert!(
        lived <= Duration::from_secs(4),
        "closed at the end, not later: {lived:?}"
    );
    // The upstream's side of it is gone too (the relay dropped both sockets).
    let _ = &s.upstream;
}

#[tokio::test]
async fn signing_out_closes_the_websockets_the_session_opened() {
    let s = setup().await;
    let jar = signed_in(&s, "/app", "alice@example.com", "alice-pw").await;
    let cookie = jar.header(&s.sg).unwrap();
    let mut ws = ws_connect(
        &format!("ws://{}/ws", s.proxy.addr),
        &[("cookie", &cookie), ("origin", &s.sg)],
    )
    .await
    .expect("the session opens a websocket");
    let got = get(
        &format!("{}/.scopegate/logout", s.sg),
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(got.status, 302);
    use futures_util::StreamExt;
    // The session lasts hours; only the sign-out can end the socket within the bound.
    let close = loop {
        match support::within(10, "the websocket to close at sign-out", ws.next()).await {
            None | Some(Err(_)) => break None,
            Some(Ok(m)) if m.is_close() => break Some(m),
            Some(Ok(_)) => continue,
        }
    };
    if let Some(tokio_tungstenite::tungstenite::Message::Close(Some(frame))) = close {
        assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
        assert!(frame.reason.contains("signed out"), "{frame:?}");
    }
}

/// `name="…" value="…"` pairs of an HTML form (the demo provider's login page).
fn hidden_fields(html: &str) -> Vec<(String, String)> {
    html.split("<input ")
        .skip(1)
        .filter_map(|tag| {
            let attr = |a: &str| {
                let start = tag.find(&format!("{a}=\""))? + a.len() + 2;
                let end = start + tag[start..].find('"')?;
                Some(
                    tag[start..end]
                        .replace("&amp;", "&")
                        .replace("&quot;", "\""),
                )
            };
            Some((attr("name")?, attr("value")?))
        })
        .collect()
}

#[tokio::test]
async fn the_demo_signs_a_browser_in_with_its_own_provider_from_one_url() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("Open ") {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the demo prints the URL to open");
    let sg = url.trim_end_matches('/').to_string();
    let mut jar = Jar::default();
    // The one URL (printed once the demo is ready): a navigation, sent to the demo provider.
    let first = jar.navigate(&url).await;
    assert_eq!(first.status, 302, "{}", first.text());
    let authorize = first.header("location").unwrap();
    let page = jar.navigate(&authorize).await;
    assert!(
        page.text().contains("Demo identity provider"),
        "{}",
        page.text()
    );
    assert!(page.text().contains("admin@example.com"));
    let mut form: Vec<String> = hidden_fields(&page.text())
        .into_iter()
        .map(|(k, v)| format!("{k}={}", scopegate::identity::oidc::flow::encode(&v)))
        .collect();
    form.push("person=2".into());
    let idp = format!(
        "{}/authorize",
        authorize.split("/authorize").next().unwrap()
    );
    let chosen = jar.send("POST", &idp, &[], &form.join("&")).await;
    assert_eq!(chosen.status, 303, "{}", chosen.text());
    let callback = chosen.header("location").unwrap();
    assert!(
        callback.starts_with(&format!("{sg}/.scopegate/callback?")),
        "{callback}"
    );
    let signed_in = jar.navigate(&callback).await;
    assert_eq!(signed_in.status, 302, "{}", signed_in.text());
    assert_eq!(signed_in.header("location").as_deref(), Some("/"));
    let home = jar.navigate(&url).await;
    assert_eq!(home.status, 200, "{}", home.text());
    assert!(
        home.text().contains("Signed in as admin@example.com"),
        "{}",
        home.text()
    );
    assert!(
        home.text().contains("\"verified\": true"),
        "the look-alike verified the assertion"
    );
    let _ = child.kill();
    let _ = child.wait();
}
