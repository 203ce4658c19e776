//! Identity over real sockets with real signed tokens: every algorithm, a JWKS that rotates and fails,
//! a jwt_tool-style negative suite, header spoofing in every spelling, Tailscale (with a WhoIs double on
//! a unix socket) and trusted proxies, and the precedence rule between sources.

mod support;

use std::time::Duration;

use http::Request;
use scopegate::config::JwtAlgorithm;
use serde_json::{json, Value};
use support::client::{self, bearer, get, raw, raw_json, raw_status};
use support::idp::{Jwks, WhoIs};
use support::keys::{self, raw_token, TestKey, AUDIENCE, ISSUER};
use support::proxy::{self, base};
use support::upstream::Upstream;
use support::within;

fn jwt_section(extra: &str) -> String {
    format!(
        "\n[jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\nleeway = \"30s\"\n{extra}\n"
    )
}

/// Starts scopegate (openclaw profile) in front of `up` with the given static keys.
fn with_keys(up: &Upstream, keys: &[&TestKey], extra: &str) -> support::proxy::TestProxy {
    let dir = tempfile::tempdir().unwrap();
    let entries: String = keys.iter().map(|k| k.toml_entry(dir.path())).collect();
    let cfg = format!(
        "{}{}{entries}\n{extra}",
        base(&up.url(), "openclaw"),
        jwt_section("")
    );
    proxy::start_in(dir, &cfg)
}

fn url(p: &support::proxy::TestProxy, path: &str) -> String {
    format!("{}{path}", p.url())
}

#[tokio::test]
async fn real_tokens_for_every_algorithm_are_accepted() {
    let up = Upstream::start().await;
    let keys = [
        TestKey::hmac("hs"),
        TestKey::rsa("rs", JwtAlgorithm::RS256, "rsa-private.pem"),
        TestKey::rsa("ps", JwtAlgorithm::PS256, "rsa2-private.pem"),
        TestKey::p256("es"),
        TestKey::ed25519("ed"),
    ];
    let p = with_keys(&up, &keys.iter().collect::<Vec<_>>(), "");
    for k in &keys {
        let token = k.token(
            &format!("user-{}", k.kid),
            &["operator.read", "operator.write"],
        );
        let got = get(
            &url(&p, "/v1/models"),
            &[("authorization", &bearer(&token))],
        )
        .await;
        assert_eq!(got.status, 200, "{}: {}", k.alg, got.text());
        let seen = up.last();
        assert_eq!(seen.header("x-openclaw-scopes").as_deref(), Some("operator.read,operator.write,operator.sessions.read,operator.sessions.write,operator.talk"));
        assert!(
            seen.header("authorization").is_none(),
            "the client's credential is not forwarded"
        );
        let claims = assertion_claims(&seen.header("x-scopegate-assertion").unwrap());
        assert_eq!(claims["sub"], format!("user-{}", k.kid));
        assert_eq!(claims["amr"][0], "jwt");
    }
}

fn assertion_claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&scopegate::util::b64url_decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn jwks_rotation_outage_and_garbage() {
    let up = Upstream::start().await;
    let a = TestKey::ed25519("key-a");
    let b = TestKey::p256("key-b");
    let idp = Jwks::start(vec![a.jwk.clone().unwrap()]).await;
    let cfg = format!(
        "{}{}",
        base(&up.url(), "openclaw"),
        jwt_section(&format!(
            "jwks_url = \"{}\"\njwks_refetch_min_interval = \"200ms\"\njwks_refresh = \"1h\"\n",
            idp.url()
        ))
    );
    let p = proxy::start(&cfg);
    let call = |t: String| {
        let u = url(&p, "/v1/models");
        async move { get(&u, &[("authorization", &bearer(&t))]).await }
    };
    // The first request may race the initial fetch: an unknown kid triggers a fetch, so it succeeds.
    let got = call(a.token("alice", &["operator.read"])).await;
    assert_eq!(got.status, 200, "{}", got.text());

    // The IdP rotates: key B appears, key A is gone. A token signed with B has an unknown kid, which
    // triggers one refetch — and then verifies.
    idp.serve(vec![b.jwk.clone().unwrap()]);
    tokio::time::sleep(Duration::from_millis(250)).await; // past the refetch rate limit
    let got = call(b.token("bob", &["operator.read"])).await;
    assert_eq!(got.status, 200, "{}", got.text());
    // A's tokens, cached before, are retired with the key set that verified them.
    let got = call(a.token("alice", &["operator.read"])).await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"]["reason_codes"][0], "kid_unknown");

    // The IdP goes down: the last good key set keeps working.
    idp.fail(503);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let got = call(TestKey::ed25519("key-c").token("carol", &["operator.read"])).await;
    assert_eq!(
        got.status, 401,
        "an unknown kid during the outage is refused"
    );
    assert_eq!(
        call(b.token("bob2", &["operator.read"])).await.status,
        200,
        "known keys still verify"
    );

    // The IdP answers garbage: same.
    idp.garbage();
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        call(TestKey::ed25519("key-d").token("dan", &["operator.read"]))
            .await
            .status,
        401
    );
    assert_eq!(call(b.token("bob3", &["operator.read"])).await.status, 200);
}

#[tokio::test]
async fn idp_down_at_start_gives_503_until_it_answers() {
    let up = Upstream::start().await;
    let a = TestKey::ed25519("late");
    let idp = Jwks::start(vec![]).await;
    idp.fail(500);
    let cfg = format!(
        "{}{}",
        base(&up.url(), "openclaw"),
        jwt_section(&format!(
            "jwks_url = \"{}\"\njwks_refetch_min_interval = \"100ms\"\n",
            idp.url()
        ))
    );
    let p = proxy::start(&cfg);
    let token = a.token("alice", &["operator.read"]);
    let got = get(
        &url(&p, "/v1/models"),
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(got.status, 503, "{}", got.text());
    assert_eq!(got.json()["error"]["reason_codes"][0], "jwks_unavailable");
    assert_eq!(up.count(), 0);
    idp.serve(vec![a.jwk.clone().unwrap()]);
    let ok = within(20, "JWKS to load", async {
        loop {
            let got = get(
                &url(&p, "/v1/models"),
                &[("authorization", &bearer(&token))],
            )
            .await;
            if got.status == 200 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    })
    .await;
    assert!(ok);
}

#[tokio::test]
async fn unknown_kid_floods_refetch_at_most_once_per_interval() {
    let up = Upstream::start().await;
    let a = TestKey::ed25519("real");
    let idp = Jwks::start(vec![a.jwk.clone().unwrap()]).await;
    let cfg = format!(
        "{}{}",
        base(&up.url(), "openclaw"),
        jwt_section(&format!(
            "jwks_url = \"{}\"\njwks_refetch_min_interval = \"1h\"\n",
            idp.url()
        ))
    ) + "[limits]\nfailed_auth_per_address = \"off\"\n";
    // The refetch limit is under test, not the failed-authentication lockout.
    let p = proxy::start(&cfg);
    assert_eq!(
        get(
            &url(&p, "/v1/models"),
            &[("authorization", &bearer(&a.token("x", &["operator.read"])))]
        )
        .await
        .status,
        200
    );
    let before = idp.fetches();
    for i in 0..200 {
        let forged = TestKey::ed25519(&format!("forged-{i}")).token("mallory", &["operator.admin"]);
        let got = get(
            &url(&p, "/v1/models"),
            &[("authorization", &bearer(&forged))],
        )
        .await;
        assert_eq!(got.status, 401);
    }
    assert!(
        idp.fetches() - before <= 1,
        "{} refetches for 200 unknown kids",
        idp.fetches() - before
    );
}

/// The jwt_tool-style negative suite: every case is a 401 with its reason, and nothing reaches the upstream.
#[tokio::test]
async fn negative_suite_every_forgery_is_401_with_the_right_reason() {
    let up = Upstream::start().await;
    let rsa = TestKey::rsa("rsa", JwtAlgorithm::RS256, "rsa-private.pem");
    let ed = TestKey::ed25519("ed");
    // Each forgery's own reason is under test, not the failed-authentication lockout.
    let p = with_keys(
        &up,
        &[&rsa, &ed],
        "[limits]\nfailed_auth_per_address = \"off\"\n",
    );
    let now = scopegate::identity::jwt::unix_now();
    let b64 = |v: &Value| scopegate::util::b64url(v.to_string().as_bytes());
    let good_claims = keys::claims("mallory", "operator.admin");
    let unsigned = |alg: &str| {
        format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "JWT"})),
            b64(&good_claims)
        )
    };
    // RS→HS confusion: HMAC over the token with the RSA *public key PEM* as the secret.
    let hs_with_public = |kid: Option<&str>| {
        let mut header = json!({"alg": "HS256", "typ": "JWT"});
        if let Some(k) = kid {
            header["kid"] = k.into();
        }
        let input = format!("{}.{}", b64(&header), b64(&good_claims));
        let key =
            jsonwebtoken::EncodingKey::from_secret(rsa.public_pem.as_ref().unwrap().as_bytes());
        let sig =
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
                .unwrap();
        format!("{input}.{sig}")
    };
    let with_claims = |edit: &dyn Fn(&mut Value)| {
        let mut c = keys::claims("mallory", "operator.admin");
        edit(&mut c);
        raw_token(&ed, &json!({"alg": "EdDSA", "kid": "ed"}), &c)
    };
    let attacker = TestKey::ed25519("attacker");
    let valid = ed.token("mallory", &["operator.admin"]);
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", unsigned("none"), "alg_none"),
        ("alg None", unsigned("None"), "alg_none"),
        ("alg NONE", unsigned("NONE"), "alg_none"),
        ("alg nOnE", unsigned("nOnE"), "alg_none"),
        (
            "alg none with signature",
            format!("{}c2ln", unsigned("none")),
            "alg_none",
        ),
        (
            "alg HS256 with the RSA public key, RSA kid",
            hs_with_public(Some("rsa")),
            "alg_mismatch",
        ),
        (
            "alg HS256 with the RSA public key, no kid",
            hs_with_public(None),
            "no_key_for_alg",
        ),
        (
            "unknown alg",
            raw_token(&ed, &json!({"alg": "EdDSA", "kid": "ed"}), &good_claims).replacen(
                &b64(&json!({"alg": "EdDSA", "kid": "ed"})),
                &b64(&json!({"alg": "XS512", "kid": "ed"})),
                1,
            ),
            "alg_unsupported",
        ),
        (
            "wrong issuer",
            with_claims(&|c| c["iss"] = "https://evil.example".into()),
            "issuer_mismatch",
        ),
        (
            "missing issuer",
            with_claims(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }),
            "claim_missing",
        ),
        (
            "wrong audience",
            with_claims(&|c| c["aud"] = "someone-else".into()),
            "audience_mismatch",
        ),
        (
            "missing audience",
            with_claims(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }),
            "claim_missing",
        ),
        (
            "audience list without ours",
            with_claims(&|c| c["aud"] = json!(["a", "b"])),
            "audience_mismatch",
        ),
        (
            "expired",
            with_claims(&|c| c["exp"] = (now - 120).into()),
            "token_expired",
        ),
        (
            "missing exp",
            with_claims(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }),
            "claim_missing",
        ),
        (
            "not yet valid",
            with_claims(&|c| c["nbf"] = (now + 600).into()),
            "token_not_yet_valid",
        ),
        (
            "string exp",
            with_claims(&|c| c["exp"] = (now + 600).to_string().into()),
            "claim_type",
        ),
        (
            "string nbf",
            with_claims(&|c| c["nbf"] = "0".into()),
            "claim_type",
        ),
        (
            "issued in the future",
            with_claims(&|c| c["iat"] = (now + 900).into()),
            "token_issued_in_future",
        ),
        (
            "no subject",
            with_claims(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }),
            "subject_missing",
        ),
        (
            "kid path injection",
            raw_token(
                &ed,
                &json!({"alg": "EdDSA", "kid": "../../../../etc/passwd"}),
                &good_claims,
            ),
            "kid_unknown",
        ),
        (
            "kid SQL injection",
            raw_token(
                &ed,
                &json!({"alg": "EdDSA", "kid": "x' OR '1'='1"}),
                &good_claims,
            ),
            "kid_unknown",
        ),
        (
            "kid object",
            raw_token(
                &ed,
                &json!({"alg": "EdDSA", "kid": {"$ne": null}}),
                &good_claims,
            ),
            "kid_invalid",
        ),
        (
            "kid oversized",
            raw_token(
                &ed,
                &json!({"alg": "EdDSA", "kid": "k".repeat(300)}),
                &good_claims,
            ),
            "kid_invalid",
        ),
        (
            "embedded jwk of the attacker",
            raw_token(
                &attacker,
                &json!({"alg": "EdDSA", "jwk": attacker.jwk}),
                &good_claims,
            ),
            "signature_invalid",
        ),
        (
            "embedded jwk with the real kid",
            raw_token(
                &attacker,
                &json!({"alg": "EdDSA", "kid": "ed", "jwk": attacker.jwk}),
                &good_claims,
            ),
            "signature_invalid",
        ),
        (
            "jku to the attacker",
            raw_token(
                &attacker,
                &json!({"alg": "EdDSA", "kid": "attacker", "jku": "http://127.0.0.1:1/jwks"}),
                &good_claims,
            ),
            "kid_unknown",
        ),
        (
            "x5u to the attacker",
            raw_token(
                &attacker,
                &json!({"alg": "EdDSA", "x5u": "http://127.0.0.1:1/cert"}),
                &good_claims,
            ),
            "signature_invalid",
        ),
        (
            "crit header",
            raw_token(
                &ed,
                &json!({"alg": "EdDSA", "kid": "ed", "crit": ["exp"]}),
                &good_claims,
            ),
            "crit_unsupported",
        ),
        (
            "scopegate assertion typ",
            raw_token(
                &ed,
                &json!({"alg": "EdDSA", "kid": "ed", "typ": "scopegate-assertion+jwt"}),
                &good_claims,
            ),
            "typ_rejected",
        ),
        (
            "signature truncated",
            valid[..valid.len() - 10].to_string(),
            "signature_invalid",
        ),
        (
            "signature not base64url",
            format!("{}.!!!!", valid.rsplit_once('.').unwrap().0),
            "unknown_token",
        ),
        (
            "signature of another token",
            format!(
                "{}.{}",
                valid.rsplit_once('.').unwrap().0,
                ed.token("x", &[]).rsplit_once('.').unwrap().1
            ),
            "signature_invalid",
        ),
        (
            "payload tampered",
            {
                let parts: Vec<&str> = valid.split('.').collect();
                format!(
                    "{}.{}.{}",
                    parts[0],
                    b64(&keys::claims("mallory", "operator.admin operator.pairing")),
                    parts[2]
                )
            },
            "signature_invalid",
        ),
        (
            "two segments",
            valid.rsplit_once('.').unwrap().0.to_string(),
            "unknown_token",
        ),
        ("four segments", format!("{valid}.x"), "unknown_token"),
        (
            "oversized",
            format!(
                "{}.{}.sig",
                b64(&json!({"alg": "EdDSA", "kid": "ed"})),
                "A".repeat(20_000)
            ),
            "token_too_large",
        ),
        (
            "header not JSON",
            format!(
                "{}.{}.c2ln",
                scopegate::util::b64url(b"not json"),
                b64(&good_claims)
            ),
            "token_malformed",
        ),
    ];
    for (name, token, code) in &cases {
        let got = get(&url(&p, "/v1/models"), &[("authorization", &bearer(token))]).await;
        assert_eq!(got.status, 401, "{name}: {}", got.text());
        let j = got.json();
        assert_eq!(j["error"]["type"], "unauthorized", "{name}");
        assert_eq!(
            j["error"]["reason_codes"][0],
            *code,
            "{name}: {}",
            got.text()
        );
        let challenge = got.header("www-authenticate").unwrap();
        assert!(
            challenge.starts_with("Bearer realm=\"scopegate\", error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        assert!(
            !got.text().contains(token.as_str()) || token.len() < 8,
            "{name}: the token is never echoed"
        );
    }
    // Duplicate Authorization headers are ambiguous.
    let dup = raw(
        p.addr,
        format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {valid}\r\nAuthorization: Bearer {valid}\r\nConnection: close\r\n\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw_status(&dup), 401, "{dup}");
    assert_eq!(
        raw_json(&dup)["error"]["reason_codes"][0],
        "duplicate_authorization"
    );
    assert_eq!(
        up.count(),
        0,
        "no forged or malformed request reached the upstream"
    );
    // The real token still works.
    assert_eq!(
        get(
            &url(&p, "/v1/models"),
            &[("authorization", &bearer(&valid))]
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn expired_reason_says_by_how_much_without_echoing_the_token() {
    let up = Upstream::start().await;
    let ed = TestKey::ed25519("ed");
    let p = with_keys(&up, &[&ed], "");
    let now = scopegate::identity::jwt::unix_now();
    let mut c = keys::claims("bob", "operator.read");
    c["exp"] = (now - 100).into();
    let token = raw_token(&ed, &json!({"alg": "EdDSA", "kid": "ed"}), &c);
    let got = get(
        &url(&p, "/v1/models"),
        &[("authorization", &bearer(&token))],
    )
    .await;
    assert_eq!(got.status, 401);
    let challenge = got.header("www-authenticate").unwrap();
    assert!(
        challenge.contains("error_description=\"token expired 10"),
        "{challenge}"
    );
    assert!(!challenge.contains(&token[..20]));
}

/// Every managed header, in every spelling, from an untrusted peer: absent at the upstream, or replaced
/// by scopegate's own value.
#[tokio::test]
async fn spoofed_headers_in_every_spelling_never_reach_the_upstream() {
    let up = Upstream::start().await;
    let ed = TestKey::ed25519("ed");
    // 127.0.0.1 (this test) is trusted for nothing.
    let extra = "[tailscale]\ntrusted_peers = [\"10.9.0.0/16\"]\n[trusted_proxy]\npeers = [\"10.8.0.0/16\"]\nuser_header = \"x-auth-user\"\ngroups_header = \"x-auth-groups\"\n";
    let p = with_keys(&up, &[&ed], extra);
    let managed = [
        "x-openclaw-scopes",
        "x-forwarded-user",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-groups",
        "x-forwarded-email",
        "forwarded",
        "x-real-ip",
        "tailscale-user-login",
        "tailscale-user-name",
        "tailscale-user-profile-pic",
        "tailscale-app-capabilities",
        "tailscale-headers-info",
        "x-scopegate-assertion",
        "x-auth-user",
        "x-auth-groups",
        "remote-user",
        "x-remote-user",
        "cf-access-jwt-assertion",
        "x-pomerium-jwt-assertion",
    ];
    let spellings = |name: &str| -> Vec<String> {
        let upper: String = name
            .split('-')
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("-");
        vec![
            name.to_string(),
            name.to_ascii_uppercase(),
            upper,
            name.replace('-', "_"),
            name.replace('-', "."),
            name.to_ascii_uppercase().replace('-', "_"),
        ]
    };
    let token = ed.token("reader", &["operator.read"]);
    // One request per managed name, carrying all its spellings (raw bytes: clients would normalise).
    for name in managed {
        let mut head = format!("GET /v1/models HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n", p.addr);
        for s in spellings(name) {
            head.push_str(&format!("{s}: spoof\r\n"));
        }
        head.push_str("\r\n");
        let resp = raw(p.addr, head.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(raw_status(&resp), 200, "{name}: {resp}");
        let seen = up.last();
        for (k, v) in seen.headers.iter() {
            assert_ne!(
                v.to_str().unwrap_or(""),
                "spoof",
                "{k} reached the upstream with the client's value"
            );
        }
    }
    let seen = up.last();
    assert_eq!(
        seen.header("x-openclaw-scopes").as_deref(),
        Some("operator.read,operator.sessions.read")
    );
    assert_eq!(seen.header("x-forwarded-user").as_deref(), Some("reader"));
    assert_eq!(seen.header_all("x-forwarded-for"), vec!["192.0.2.1"]);

    // Nominating scopegate's own headers in Connection cannot remove them.
    let got = get(
        &url(&p, "/v1/models"),
        &[
            ("authorization", &bearer(&token)),
            (
                "connection",
                "x-scopegate-assertion, x-openclaw-scopes, x-forwarded-user, x-forwarded-for",
            ),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = up.last();
    assert!(seen.header("x-scopegate-assertion").is_some());
    assert_eq!(
        seen.header("x-openclaw-scopes").as_deref(),
        Some("operator.read,operator.sessions.read")
    );
    assert_eq!(seen.header("x-forwarded-user").as_deref(), Some("reader"));
    assert!(seen.header("x-forwarded-for").is_some());

    // In trailers, over HTTP/2: managed names are dropped there too.
    let mut trailers = http::HeaderMap::new();
    for name in managed {
        for s in spellings(name) {
            if let Ok(n) = http::HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()) {
                trailers.append(n, "spoof".parse().unwrap());
            }
        }
    }
    trailers.insert("x-innocent", "kept".parse().unwrap());
    let frames = vec![
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(
            bytes::Bytes::from_static(b"{}"),
        )),
        Ok(hyper::body::Frame::trailers(trailers)),
    ];
    let mut h2 = client::h2c(p.addr).await;
    let req = Request::post(format!("http://{}/v1/responses", p.addr))
        .header(
            "authorization",
            bearer(&ed.token("writer", &["operator.write"])),
        )
        .body(http_body_util::BodyExt::boxed(
            http_body_util::StreamBody::new(futures_util::stream::iter(frames)),
        ))
        .unwrap();
    let got = client::collect(
        within(10, "h2 trailers", h2.send_request(req))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    if let Some(t) = up.last().trailers {
        for (k, v) in t.iter() {
            assert_ne!(
                v.to_str().unwrap_or(""),
                "spoof",
                "trailer {k} reached the upstream"
            );
        }
    }
}

fn tailscale_config(up: &Upstream, tailscale: &str) -> String {
    format!(
        "{}\n[tailscale]\n{tailscale}\n\n[[grants]]\nsubjects = [\"alice@example.com\"]\nscopes = [\"operator.write\"]\n\n[[grants]]\ngroups = [\"tag:ci\"]\nscopes = [\"operator.read\"]\n",
        base(&up.url(), "openclaw")
    )
}

#[tokio::test]
async fn tailscale_identity_only_from_trusted_peers() {
    let up = Upstream::start().await;
    let trusted = proxy::start(&tailscale_config(&up, "trusted_peers = [\"127.0.0.1/32\"]"));
    let h = [
        ("tailscale-user-login", "alice@example.com"),
        ("tailscale-user-name", "Alice"),
        ("x-forwarded-for", "100.64.0.7"),
    ];
    let got = client::send("POST", &url(&trusted, "/v1/responses"), &h, "{}").await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = up.last();
    assert_eq!(
        seen.header("x-forwarded-user").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("100.64.0.7"),
        "serve's XFF is the client"
    );
    assert!(seen.header("tailscale-user-login").is_none());
    let claims = assertion_claims(&seen.header("x-scopegate-assertion").unwrap());
    assert_eq!(claims["amr"][0], "tailscale");
    assert_eq!(claims["client_ip"], "100.64.0.7");

    up.clear();
    let untrusted = proxy::start(&tailscale_config(&up, "trusted_peers = [\"10.9.9.9/32\"]"));
    let got = client::send("POST", &url(&untrusted, "/v1/responses"), &h, "{}").await;
    assert_eq!(got.status, 401);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn tailscale_over_the_unix_socket_listener_with_rfc2047_names() {
    let up = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sg.sock");
    let cfg = tailscale_config(&up, "trusted_peers = [\"unix\"]").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"unix:{}\"", sock.display()),
    );
    let cfg_path = dir.path().join("scopegate.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    let handle =
        scopegate::server::start(scopegate::config::Config::load(&cfg_path).unwrap()).unwrap();
    let stream = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/.scopegate/whoami")
        .header("host", "gateway.tail1234.ts.net")
        .header("tailscale-user-login", "=?utf-8?q?zo=C3=AB@example.com?=")
        .header("tailscale-user-name", "=?utf-8?q?Zo=C3=AB_Sch=C3=A4fer?=")
        .header("x-forwarded-for", "100.64.0.8")
        .body(client::empty())
        .unwrap();
    let got = client::collect(
        within(10, "unix whoami", send.send_request(req))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let j = got.json();
    assert_eq!(j["subject"], "zoë@example.com");
    assert_eq!(j["display_name"], "Zoë Schäfer");
    assert_eq!(j["method"], "tailscale");
    assert_eq!(j["client_ip"], "100.64.0.8");
    drop(handle);
}

#[tokio::test]
async fn tailscale_whois_confirms_or_denies() {
    let up = Upstream::start().await;
    let whois = WhoIs::start().await;
    whois.user("100.64.0.7", "alice@example.com", "Alice");
    let p = proxy::start(&tailscale_config(&up, &format!("trusted_peers = [\"127.0.0.1/32\"]\nwhois_socket = \"{}\"\napp_capability = \"example.com/cap/openclaw\"", whois.socket.display())));
    let agree = [
        ("tailscale-user-login", "alice@example.com"),
        ("x-forwarded-for", "100.64.0.7"),
    ];
    let got = client::send("POST", &url(&p, "/v1/responses"), &agree, "{}").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(whois.calls.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // The header claims alice, but tailscaled says this address is bob's.
    whois.user("100.64.0.9", "bob@example.com", "Bob");
    let disagree = [
        ("tailscale-user-login", "alice@example.com"),
        ("x-forwarded-for", "100.64.0.9"),
    ];
    let got = client::send("POST", &url(&p, "/v1/responses"), &disagree, "{}").await;
    assert_eq!(got.status, 401);
    let j = got.json();
    assert_eq!(j["error"]["reason_codes"][0], "tailscale_whois_mismatch");
    assert!(j["error"]["message"]
        .as_str()
        .unwrap()
        .contains("bob@example.com"));

    // An address tailscaled does not know.
    let unknown = [
        ("tailscale-user-login", "alice@example.com"),
        ("x-forwarded-for", "100.64.0.99"),
    ];
    let got = client::send("POST", &url(&p, "/v1/responses"), &unknown, "{}").await;
    assert_eq!(got.status, 503);
    assert_eq!(
        got.json()["error"]["reason_codes"][0],
        "tailscale_whois_failed"
    );
}

#[tokio::test]
async fn tagged_nodes_get_scopes_from_capability_grants_or_a_reason() {
    let up = Upstream::start().await;
    let cap = "example.com/cap/openclaw";
    let p = proxy::start(&tailscale_config(
        &up,
        &format!("trusted_peers = [\"127.0.0.1/32\"]\napp_capability = \"{cap}\""),
    ));
    let caps = json!({ cap: [{"scopes": ["operator.read"]}] }).to_string();
    let tagged = [
        ("tailscale-app-capabilities", caps.as_str()),
        ("x-forwarded-for", "100.64.0.20"),
    ];
    assert_eq!(
        client::get(&url(&p, "/v1/models"), &tagged).await.status,
        200
    );
    let seen = up.last();
    assert_eq!(
        seen.header("x-openclaw-scopes").as_deref(),
        Some("operator.read,operator.sessions.read")
    );
    let got = client::send("POST", &url(&p, "/v1/responses"), &tagged, "{}").await;
    assert_eq!(got.status, 403);
    assert_eq!(
        got.json()["error"]["message"],
        "missing scope: operator.write"
    );

    // A tagged node whose grants do not include scopegate's capability.
    let other = json!({"example.com/cap/other": [{"x": 1}]}).to_string();
    let got = client::get(
        &url(&p, "/v1/models"),
        &[
            ("tailscale-app-capabilities", other.as_str()),
            ("x-forwarded-for", "100.64.0.21"),
        ],
    )
    .await;
    assert_eq!(got.status, 401);
    let j = got.json();
    let codes: Vec<&str> = j["error"]["reason_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(codes.contains(&"tailscale_tagged_no_grant"), "{codes:?}");
    assert!(j["error"]["reasons"].to_string().contains(cap));

    // With WhoIs, the node's name and tags are used: tag:ci is granted read by [[grants]].
    let whois = WhoIs::start().await;
    whois.tagged(
        "100.64.0.30",
        "ci-runner.tail1234.ts.net.",
        &["tag:ci"],
        None,
    );
    let p = proxy::start(&tailscale_config(
        &up,
        &format!(
            "trusted_peers = [\"127.0.0.1/32\"]\napp_capability = \"{cap}\"\nwhois_socket = \"{}\"",
            whois.socket.display()
        ),
    ));
    let marker = [
        (
            "tailscale-headers-info",
            "https://tailscale.com/s/serve-headers",
        ),
        ("x-forwarded-for", "100.64.0.30"),
    ];
    let got = client::get(&url(&p, "/.scopegate/whoami"), &marker).await;
    let j = got.json();
    assert_eq!(j["subject"], "ci-runner.tail1234.ts.net", "{j}");
    assert_eq!(j["groups"], json!(["tag:ci"]));
    // No capability grant, but WhoIs confirmed the node, and [[grants]] give tag:ci read.
    assert_eq!(
        client::get(&url(&p, "/v1/models"), &marker).await.status,
        200
    );
    assert_eq!(
        client::send("POST", &url(&p, "/v1/responses"), &marker, "{}")
            .await
            .status,
        403
    );
    whois.tagged(
        "100.64.0.31",
        "ci-2.tail1234.ts.net.",
        &["tag:ci"],
        Some((cap, json!([{"scopes": ["operator.write"]}]))),
    );
    let got = client::send(
        "POST",
        &url(&p, "/v1/responses"),
        &[
            ("tailscale-headers-info", "x"),
            ("x-forwarded-for", "100.64.0.31"),
        ],
        "{}",
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        up.last().header("x-forwarded-user").as_deref(),
        Some("ci-2.tail1234.ts.net")
    );
}

#[tokio::test]
async fn trusted_proxy_user_and_groups_with_xff_from_the_right() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}\n[trusted_proxy]\npeers = [\"127.0.0.1/32\"]\nuser_header = \"x-auth-request-user\"\ngroups_header = \"x-auth-request-groups\"\n\n[[grants]]\ngroups = [\"ops\"]\nscopes = [\"operator.write\"]\n",
        base(&up.url(), "openclaw")
    );
    let p = proxy::start(&cfg);
    let h = [
        ("x-auth-request-user", "carol"),
        ("x-auth-request-groups", "dev, ops"),
        ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
    ];
    let got = client::send("POST", &url(&p, "/v1/responses"), &h, "{}").await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = up.last();
    assert_eq!(
        seen.header_all("x-forwarded-for"),
        vec!["198.51.100.7"],
        "the hop the trusted proxy saw, not the client's claim"
    );
    assert!(
        seen.header("x-auth-request-user").is_none(),
        "the proxy's own identity headers are not passed on"
    );
    let claims = assertion_claims(&seen.header("x-scopegate-assertion").unwrap());
    assert_eq!(claims["sub"], "carol");
    assert_eq!(claims["amr"][0], "trusted_proxy");
    assert_eq!(claims["client_ip"], "198.51.100.7");
    // Without the group, carol has nothing.
    let got = client::send(
        "POST",
        &url(&p, "/v1/responses"),
        &[("x-auth-request-user", "carol")],
        "{}",
    )
    .await;
    assert_eq!(got.status, 403);
    // An alias spelling passed through by the proxy is a smuggling attempt.
    let got = client::get(
        &url(&p, "/v1/models"),
        &[
            ("x-auth-request-user", "carol"),
            ("x_auth_request_user", "admin"),
        ],
    )
    .await;
    assert_eq!(got.status, 400);
    assert_eq!(
        got.json()["error"]["reason_codes"][0],
        "smuggled_header_alias"
    );
}

#[tokio::test]
async fn precedence_bearer_wins_invalid_bearer_never_falls_back_conflicts_are_400() {
    let up = Upstream::start().await;
    let ed = TestKey::ed25519("ed");
    let extra = "[tailscale]\ntrusted_peers = [\"127.0.0.1/32\"]\n[trusted_proxy]\npeers = [\"127.0.0.1/32\"]\nuser_header = \"x-auth-user\"\n[[grants]]\nsubjects = [\"alice@example.com\"]\nscopes = [\"operator.admin\"]\n";
    let p = with_keys(&up, &[&ed], extra);
    let ts = ("tailscale-user-login", "alice@example.com");
    // A valid JWT for bob arriving through Tailscale as alice: bob it is, alice is only "seen".
    let bob = ed.token("bob", &["operator.read"]);
    let got = get(
        &url(&p, "/.scopegate/whoami"),
        &[("authorization", &bearer(&bob)), ts],
    )
    .await;
    let j = got.json();
    assert_eq!(j["subject"], "bob");
    assert_eq!(j["seen"][0]["subject"], "alice@example.com");
    assert_eq!(
        j["effective"],
        json!(["operator.read", "operator.sessions.read"]),
        "never merged with alice's admin"
    );
    // A broken bearer with a perfectly good Tailscale identity is still a 401.
    let got = get(
        &url(&p, "/v1/models"),
        &[("authorization", "Bearer garbage.garbage.garbage"), ts],
    )
    .await;
    assert_eq!(got.status, 401);
    // Tailscale says alice, the trusted proxy says mallory.
    let got = get(&url(&p, "/v1/models"), &[ts, ("x-auth-user", "mallory")]).await;
    assert_eq!(got.status, 400);
    assert_eq!(
        got.json()["error"]["reason_codes"][0],
        "conflicting_identities"
    );
    // Two copies of the login are ambiguous.
    let dup = raw(
        p.addr,
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nTailscale-User-Login: alice@example.com\r\nTailscale-User-Login: bob@example.com\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw_status(&dup), 400);
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn api_tokens_identify_and_unknown_ones_are_refused() {
    let up = Upstream::start().await;
    let cfg = format!(
        "{}\n[[api_tokens]]\nsubject = \"ci-bot\"\nsha256 = \"{}\"\nscopes = [\"operator.read\"]\n",
        base(&up.url(), "openclaw"),
        scopegate::identity::api_token::sha256_hex(b"sg_live_abc123")
    );
    let p = proxy::start(&cfg);
    let got = get(
        &url(&p, "/v1/models"),
        &[("authorization", "Bearer sg_live_abc123")],
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = up.last();
    assert_eq!(
        seen.header("x-forwarded-user").as_deref(),
        Some("ci-bot"),
        "named subjects keep their name"
    );
    assert_eq!(
        assertion_claims(&seen.header("x-scopegate-assertion").unwrap())["amr"][0],
        "api_token"
    );
    let got = get(
        &url(&p, "/v1/models"),
        &[("authorization", "Bearer sg_live_abc124")],
    )
    .await;
    assert_eq!(got.status, 401);
    assert_eq!(got.json()["error"]["reason_codes"][0], "unknown_token");
    let got = get(
        &url(&p, "/v1/models"),
        &[("authorization", "Basic Y2k6Ym90")],
    )
    .await;
    assert_eq!(got.status, 401);
    assert!(got
        .header("www-authenticate")
        .unwrap()
        .contains("invalid_request"));
}

/// A front proxy that signs its identity (Cloudflare Access's `Cf-Access-Jwt-Assertion`): with
/// `[trusted_proxy.assertion]`, the user and groups come from the verified assertion, and a user header
/// from a trusted address without one — or with one that disagrees — is not enough.
#[tokio::test]
async fn a_front_proxys_signed_assertion_is_required_and_is_where_user_and_groups_come_from() {
    let up = Upstream::start().await;
    let access = TestKey::p256("access-1");
    let forger = TestKey::p256("access-1");
    let jwks = Jwks::start(vec![access.jwk.clone().unwrap()]).await;
    const TEAM: &str = "https://team.cloudflareaccess.com";
    const AUD: &str = "4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2";
    let cfg = format!(
        "{}\n[trusted_proxy]\npeers = [\"127.0.0.1/32\"]\nuser_header = \"cf-access-authenticated-user-email\"\nassertion_header = \"cf-access-jwt-assertion\"\n\n[trusted_proxy.assertion]\nissuer = \"{TEAM}\"\naudience = \"{AUD}\"\njwks_url = \"{}\"\nsubject_claim = \"email\"\ngroups_claim = \"groups\"\n\n[[grants]]\ngroups = [\"ops\"]\nscopes = [\"operator.write\"]\n",
        base(&up.url(), "openclaw"),
        jwks.url()
    );
    let p = proxy::start(&cfg);
    let mint = |key: &TestKey, email: &str, groups: &[&str], ttl: i64| {
        key.token_with(&format!("cf-{email}"), &[], groups, |t| {
            t.issuer = TEAM.into();
            t.audience = AUD.into();
            t.extra.insert("email".into(), email.into());
            if ttl < 0 {
                t.ttl = Duration::ZERO;
                t.extra.insert(
                    "exp".into(),
                    (scopegate::identity::jwt::unix_now() as i64 + ttl).into(),
                );
            }
        })
    };
    let post = |headers: Vec<(&'static str, String)>| {
        let u = url(&p, "/v1/responses");
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            client::send("POST", &u, &h, "{}").await
        }
    };
    const USER: &str = "cf-access-authenticated-user-email";
    const ASSERTION: &str = "cf-access-jwt-assertion";

    // Verified: the user and the groups are the assertion's; the group grant applies.
    let good = mint(&access, "carol@example.com", &["ops"], 0);
    let got = post(vec![
        (USER, "carol@example.com".into()),
        (ASSERTION, good.clone()),
        ("x-forwarded-for", "198.51.100.7".into()),
    ])
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = up.last();
    assert_eq!(
        seen.header("x-forwarded-user").as_deref(),
        Some("carol@example.com")
    );
    assert!(
        seen.header(ASSERTION).is_none(),
        "the proxy's assertion is not passed on"
    );
    let claims = assertion_claims(&seen.header("x-scopegate-assertion").unwrap());
    assert_eq!(claims["sub"], "carol@example.com");
    assert_eq!(claims["amr"][0], "trusted_proxy");

    // A forged user header from the trusted address, without the assertion: 401, nothing forwarded.
    let before = up.count();
    let got = post(vec![(USER, "admin@example.com".into())]).await;
    assert_eq!(got.status, 401, "{}", got.text());
    assert_eq!(
        got.json()["error"]["reason_codes"][0],
        "trusted_proxy_assertion_missing"
    );
    // Signed by a key that is not the proxy's (same kid): 401.
    let forged = mint(&forger, "admin@example.com", &["ops"], 0);
    let got = post(vec![
        (USER, "admin@example.com".into()),
        (ASSERTION, forged),
    ])
    .await;
    assert_eq!(got.status, 401, "{}", got.text());
    // A genuine assertion for someone else than the header names: 400, ambiguous.
    let got = post(vec![
        (USER, "admin@example.com".into()),
        (ASSERTION, good.clone()),
    ])
    .await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert_eq!(
        got.json()["error"]["reason_codes"][0],
        "conflicting_identities"
    );
    // Expired: 401 with the verifier's reason.
    let old = mint(&access, "carol@example.com", &["ops"], -3600);
    let got = post(vec![(USER, "carol@example.com".into()), (ASSERTION, old)]).await;
    assert_eq!(got.status, 401, "{}", got.text());
    assert!(got.text().contains("expired"), "{}", got.text());
    assert_eq!(
        up.count(),
        before,
        "no refused request reached the upstream"
    );

    // Groups come from the assertion only: one without `ops` is read-only whatever headers claim.
    let plain = mint(&access, "dan@example.com", &[], 0);
    let got = post(vec![
        (USER, "dan@example.com".into()),
        (ASSERTION, plain.clone()),
        ("x-forwarded-groups", "ops".into()),
    ])
    .await;
    assert_eq!(got.status, 403, "{}", got.text());
    // And the assertion alone (no user header) identifies.
    let got = client::get(
        &url(&p, "/.scopegate/whoami"),
        &[(ASSERTION, plain.as_str())],
    )
    .await;
    assert_eq!(got.json()["subject"], "dan@example.com", "{}", got.text());
    assert_eq!(got.json()["method"], "trusted_proxy");
}
