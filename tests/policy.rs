//! Authorisation end to end: decisions and their reasons, the signed assertion as upstreams verify it
//! (the Rust and Node.js example verifiers), `explain` and `whoami` agreeing with the live decision, and
//! the policy-facing commands.

mod support;

#[path = "../examples/verify_assertion.rs"]
#[allow(dead_code)]
mod rust_verifier;

use std::process::Command;

use serde_json::{json, Value};
use support::client::{bearer, get, send};
use support::keys::{TestKey, AUDIENCE, ISSUER};
use support::proxy::{self, base};
use support::upstream::Upstream;

/// An openclaw-profile scopegate with a static IdP key, a known assertion key, grants and one group.
fn setup(up: &Upstream, extra: &str) -> (support::proxy::TestProxy, TestKey, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let idp = TestKey::ed25519("idp");
    let der =
        scopegate::assertion::generate_pkcs8(scopegate::config::AssertionAlgorithm::EdDSA).unwrap();
    std::fs::write(
        dir.path().join("assertion.pem"),
        scopegate::assertion::pem_encode("PRIVATE KEY", &der),
    )
    .unwrap();
    let cfg = format!(
        "{}\n[jwt]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n{}\n[[grants]]\ngroups = [\"ops\"]\nscopes = [\"operator.write\"]\n\n[[grants]]\nsubjects = [\"root@example.com\"]\nscopes = [\"operator.admin\"]\n\n[assertion]\nkey_file = \"assertion.pem\"\n{extra}",
        base(&up.url(), "openclaw"),
        idp.toml_entry(dir.path()),
    );
    (proxy::start_in(dir, &cfg), idp, der)
}

fn url(p: &support::proxy::TestProxy, path: &str) -> String {
    format!("{}{path}", p.url())
}

#[tokio::test]
async fn read_write_jwt_passes_responses_and_models_the_57331_case() {
    let up = Upstream::start().await;
    let (p, idp, _) = setup(&up, "");
    let t = bearer(&idp.token("dev", &["operator.read", "operator.write"]));
    let h = [("authorization", t.as_str())];
    assert_eq!(
        send("POST", &url(&p, "/v1/responses"), &h, "{}")
            .await
            .status,
        200
    );
    assert_eq!(get(&url(&p, "/v1/models"), &h).await.status, 200);
    assert_eq!(
        send("POST", &url(&p, "/v1/chat/completions"), &h, "{}")
            .await
            .status,
        200
    );
    assert_eq!(
        up.last().header("x-openclaw-scopes").as_deref(),
        Some("operator.read,operator.write,operator.sessions.read,operator.sessions.write,operator.talk")
    );
}

#[tokio::test]
async fn read_only_jwt_is_refused_write_with_reasons() {
    let up = Upstream::start().await;
    let (p, idp, _) = setup(&up, "");
    let t = bearer(&idp.token("viewer", &["operator.read"]));
    let got = send(
        "POST",
        &url(&p, "/v1/responses"),
        &[("authorization", t.as_str())],
        "{}",
    )
    .await;
    assert_eq!(got.status, 403);
    let e = &got.json()["error"];
    assert_eq!(e["type"], "forbidden");
    assert_eq!(e["message"], "missing scope: operator.write");
    assert_eq!(e["required"], json!(["operator.write"]));
    assert_eq!(
        e["granted"],
        json!(["operator.read", "operator.sessions.read"])
    );
    let reasons: Vec<&str> = e["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        reasons[0],
        "route POST /v1/responses requires operator.write"
    );
    assert!(
        reasons.contains(&"jwt sub=viewer grants operator.read"),
        "{reasons:?}"
    );
    assert!(e["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn admin_gets_everything_and_groups_get_their_scopes() {
    let up = Upstream::start().await;
    let (p, idp, _) = setup(&up, "");
    let admin = bearer(&idp.token("root@example.com", &[]));
    for (m, path) in [
        ("POST", "/v1/responses"),
        ("GET", "/v1/models"),
        ("POST", "/sessions/s1/kill"),
        ("POST", "/tools/invoke"),
        ("GET", "/sessions/s1/history"),
    ] {
        assert_eq!(
            send(m, &url(&p, path), &[("authorization", admin.as_str())], "")
                .await
                .status,
            200,
            "{m} {path}"
        );
    }
    assert_eq!(
        up.last()
            .header("x-openclaw-scopes")
            .unwrap()
            .split(',')
            .count(),
        10
    );
    let ops = bearer(&idp.token_with("oncall", &[], &["ops"], |_| {}));
    assert_eq!(
        send(
            "POST",
            &url(&p, "/v1/responses"),
            &[("authorization", ops.as_str())],
            "{}"
        )
        .await
        .status,
        200
    );
    let got = send(
        "POST",
        &url(&p, "/sessions/s1/kill"),
        &[("authorization", ops.as_str())],
        "",
    )
    .await;
    assert_eq!(got.status, 403);
    let reasons = got.json()["error"]["reasons"].to_string();
    assert!(reasons.contains("group ops"), "{reasons}");
}

#[tokio::test]
async fn tricky_paths_are_refused_or_matched_as_the_upstream_will_route_them() {
    let up = Upstream::start().await;
    let (p, idp, _) = setup(&up, "");
    let ro = bearer(&idp.token("viewer", &["operator.read"]));
    let h = [("authorization", ro.as_str())];
    // Ambiguous spellings of a write route are refused outright (raw bytes: clients would normalise).
    for path in [
        "//v1/responses",
        "/v1//responses",
        "/v1/./responses",
        "/x/../v1/responses",
        "/v1/responses;a=b",
        "/v1/%72esponses",
        "/v1%2Fresponses",
        "/v1/%2e%2e/responses",
        "/v1\\responses",
        "/v1/%C0%AE/responses",
    ] {
        let req = format!("POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {ro}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}");
        let resp =
            support::client::raw(p.addr, req.as_bytes(), std::time::Duration::from_secs(5)).await;
        assert_eq!(support::client::raw_status(&resp), 400, "{path}: {resp}");
        assert_eq!(
            support::client::raw_json(&resp)["error"]["type"],
            "bad_request"
        );
    }
    // Case variants are other paths to the gateway (it routes case-sensitively): not the write route.
    let got = send("POST", &url(&p, "/V1/RESPONSES"), &h, "{}").await;
    assert_eq!(got.status, 403);
    assert_eq!(got.json()["error"]["reason_codes"][0], "default_deny");
    // The query string never changes the route.
    let got = send("POST", &url(&p, "/v1/responses?x=/v1/models"), &h, "{}").await;
    assert_eq!(got.status, 403);
    assert_eq!(
        get(&url(&p, "/v1/models?path=/v1/responses"), &h)
            .await
            .status,
        200
    );
    assert_eq!(up.last().uri, "/v1/models?path=/v1/responses");
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn client_can_narrow_its_scopes_but_never_widen_them() {
    let up = Upstream::start().await;
    let (p, idp, _) = setup(
        &up,
        "[policy]\nrequest_scopes_header = \"x-scopegate-scopes\"\n",
    );
    let rw = bearer(&idp.token("dev", &["operator.read", "operator.write"]));
    let got = send(
        "POST",
        &url(&p, "/v1/responses"),
        &[
            ("authorization", rw.as_str()),
            ("x-scopegate-scopes", "operator.read"),
        ],
        "{}",
    )
    .await;
    assert_eq!(got.status, 403);
    assert!(got.json()["error"]["reason_codes"]
        .to_string()
        .contains("narrowed_by_request"));
    assert_eq!(
        get(
            &url(&p, "/v1/models"),
            &[
                ("authorization", rw.as_str()),
                ("x-scopegate-scopes", "operator.read")
            ]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        up.last().header("x-openclaw-scopes").as_deref(),
        Some("operator.read,operator.sessions.read")
    );
    assert!(up.last().header("x-scopegate-scopes").is_none());
    let ro = bearer(&idp.token("viewer", &["operator.read"]));
    let got = send(
        "POST",
        &url(&p, "/v1/responses"),
        &[
            ("authorization", ro.as_str()),
            ("x-scopegate-scopes", "operator.admin"),
        ],
        "{}",
    )
    .await;
    assert_eq!(got.status, 403, "asking for admin grants nothing");
}

/// Upstream-side verification of what scopegate actually sent, with both example verifiers.
#[tokio::test]
async fn assertion_verifies_with_the_published_jwks_in_both_example_verifiers() {
    let up = Upstream::start().await;
    let (p, idp, der) = setup(&up, "");
    let t = bearer(&idp.token("dev", &["operator.read", "operator.write"]));
    assert_eq!(
        send(
            "POST",
            &url(&p, "/v1/responses?stream=true"),
            &[("authorization", t.as_str())],
            "{}"
        )
        .await
        .status,
        200
    );
    let assertion = up.last().header("x-scopegate-assertion").unwrap();
    let jwks_doc = get(&url(&p, "/.well-known/scopegate/jwks.json"), &[])
        .await
        .json();
    let jwks_file = p.dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks_doc.to_string()).unwrap();

    // Tampered claim: scope widened, signature kept.
    let parts: Vec<&str> = assertion.split('.').collect();
    let mut claims: Value =
        serde_json::from_slice(&scopegate::util::b64url_decode(parts[1]).unwrap()).unwrap();
    claims["scope"] = "operator.admin".into();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        scopegate::util::b64url(claims.to_string().as_bytes()),
        parts[2]
    );
    // Expired: the same key, signing an hour ago.
    let signer = scopegate::assertion::AssertionSigner::new(&scopegate::config::AssertionConfig {
        header: http::HeaderName::from_static("x-scopegate-assertion"),
        algorithm: scopegate::config::AssertionAlgorithm::EdDSA,
        key: Some(
            scopegate::values::AssertionKey::from_material(
                scopegate::config::AssertionAlgorithm::EdDSA,
                &der,
            )
            .unwrap(),
        ),
        next_key: None,
        kid: None,
        issuer: "scopegate".into(),
        audience: "openclaw-gateway".into(),
        ttl: std::time::Duration::from_secs(60),
        reuse: std::time::Duration::ZERO,
    })
    .unwrap();
    let method = http::Method::POST;
    let expired = signer.mint_at(
        &scopegate::assertion::AssertionInput {
            subject: "dev",
            amr: Some(scopegate::identity::AuthMethod::Jwt),
            scope: "operator.read",
            scope_bits: scopegate::policy::ScopeSet::EMPTY,
            client_ip: None,
            method: &method,
            path: "/v1/responses",
        },
        scopegate::identity::jwt::unix_now() - 3600,
    );
    let expired = expired.to_str().unwrap().to_string();

    // (token, audience, method, path, should verify, reason fragment)
    let cases: Vec<(&str, &str, &str, &str, &str, bool, &str)> = vec![
        (
            "valid",
            &assertion,
            "openclaw-gateway",
            "POST",
            "/v1/responses",
            true,
            "",
        ),
        (
            "valid, query ignored",
            &assertion,
            "openclaw-gateway",
            "POST",
            "/v1/responses?stream=true",
            true,
            "",
        ),
        (
            "tampered scope",
            &tampered,
            "openclaw-gateway",
            "POST",
            "/v1/responses",
            false,
            "signature",
        ),
        (
            "wrong audience",
            &assertion,
            "another-service",
            "POST",
            "/v1/responses",
            false,
            "aud",
        ),
        (
            "expired",
            &expired,
            "openclaw-gateway",
            "POST",
            "/v1/responses",
            false,
            "xpired",
        ),
        (
            "replayed on another method",
            &assertion,
            "openclaw-gateway",
            "GET",
            "/v1/responses",
            false,
            "htm",
        ),
        (
            "replayed on another path",
            &assertion,
            "openclaw-gateway",
            "POST",
            "/v1/chat/completions",
            false,
            "htp",
        ),
    ];
    let jwks_set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks_doc.clone()).unwrap();
    for (name, token, aud, m, path, ok, why) in &cases {
        // Rust verifier (examples/verify_assertion.rs).
        let r = rust_verifier::verify(
            token,
            &jwks_set,
            &rust_verifier::Expect {
                audience: aud,
                issuer: "scopegate",
                method: m,
                path,
            },
        );
        assert_eq!(r.is_ok(), *ok, "rust verifier, {name}: {r:?}");
        if !ok {
            assert!(
                format!("{r:?}")
                    .to_lowercase()
                    .contains(&why.to_lowercase()),
                "rust verifier, {name}: {r:?}"
            );
        } else {
            let c = r.unwrap();
            assert_eq!(c["sub"], "dev");
            assert_eq!(c["htp"], "/v1/responses");
        }
        // Node.js verifier (examples/verify-assertion-node/verify.mjs), as its CLI.
        let out = Command::new("node")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/verify-assertion-node/verify.mjs"
            ))
            .args([
                "--jwks",
                jwks_file.to_str().unwrap(),
                "--audience",
                aud,
                "--method",
                m,
                "--path",
                path,
                token,
            ])
            .output()
            .expect("node runs (the machine's Node is enough: no packages)");
        assert_eq!(
            out.status.success(),
            *ok,
            "node verifier, {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !ok {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(why), "node verifier, {name}: {err}");
        }
        // And scopegate's own command.
        let out = Command::new(env!("CARGO_BIN_EXE_scopegate"))
            .args([
                "verify-assertion",
                "--jwks",
                jwks_file.to_str().unwrap(),
                "--audience",
                aud,
                "--method",
                m,
                "--path",
                path,
                token,
            ])
            .output()
            .unwrap();
        assert_eq!(
            out.status.success(),
            *ok,
            "verify-assertion, {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The JWKS URL works for the Node verifier too.
    let out = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/verify-assertion-node/verify.mjs"
        ))
        .args([
            "--jwks",
            &url(&p, "/.well-known/scopegate/jwks.json"),
            "--audience",
            "openclaw-gateway",
            "--method",
            "POST",
            "--path",
            "/v1/responses",
            &assertion,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let claims: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        claims["scope"],
        "operator.read operator.write operator.sessions.read operator.sessions.write operator.talk"
    );
}

/// For each (credential, request), the live status, `/.scopegate/whoami?method&path` and
/// `scopegate explain` must tell the same story with the same reasons.
#[tokio::test]
async fn explain_and_whoami_agree_with_the_live_decision() {
    let up = Upstream::start().await;
    let api = scopegate::identity::api_token::sha256_hex(b"sg_explain_token");
    let (p, idp, _) = setup(&up, &format!("[[api_tokens]]\nsubject = \"ci-bot\"\nsha256 = \"{api}\"\nscopes = [\"operator.read\"]\n"));
    let creds: Vec<(&str, Vec<String>)> = vec![
        (
            "reader jwt",
            vec!["--token".into(), idp.token("viewer", &["operator.read"])],
        ),
        (
            "writer jwt",
            vec!["--token".into(), idp.token("dev", &["operator.write"])],
        ),
        (
            "ops group jwt",
            vec![
                "--token".into(),
                idp.token_with("oncall", &[], &["ops"], |_| {}),
            ],
        ),
        (
            "api token",
            vec!["--api-token".into(), "sg_explain_token".into()],
        ),
        ("nobody", vec![]),
    ];
    let requests = [
        ("POST", "/v1/responses"),
        ("GET", "/v1/models"),
        ("POST", "/sessions/x/kill"),
        ("DELETE", "/v1/models"),
        ("GET", "/healthz"),
    ];
    for (who, args) in &creds {
        let header = match args.first().map(String::as_str) {
            Some("--token") | Some("--api-token") => Some(format!("Bearer {}", args[1])),
            _ => None,
        };
        let h: Vec<(&str, &str)> = header
            .as_deref()
            .map(|v| vec![("authorization", v)])
            .unwrap_or_default();
        for (m, path) in requests {
            let live = send(m, &url(&p, path), &h, "").await;
            let allowed_live = live.status == 200;
            let whoami = get(
                &url(&p, &format!("/.scopegate/whoami?method={m}&path={path}")),
                &h,
            )
            .await
            .json();
            assert_eq!(
                whoami["decision"]["allowed"], allowed_live,
                "{who} {m} {path}: whoami {whoami}"
            );
            let out = Command::new(env!("CARGO_BIN_EXE_scopegate"))
                .args([
                    "explain",
                    "--config",
                    p.config_path.to_str().unwrap(),
                    "--method",
                    m,
                    "--path",
                    path,
                    "--json",
                ])
                .args(args)
                .output()
                .unwrap();
            assert_eq!(
                out.status.success(),
                allowed_live,
                "{who} {m} {path}: explain exit code"
            );
            let explained: Value = serde_json::from_slice(&out.stdout).unwrap();
            if allowed_live {
                assert_eq!(explained["decision"]["allowed"], true);
            } else {
                let live_json = live.json();
                assert_eq!(
                    explained["decision"]["status"],
                    live.status.as_u16(),
                    "{who} {m} {path}"
                );
                assert_eq!(
                    explained["decision"]["reasons"], live_json["error"]["reasons"],
                    "{who} {m} {path}: explain vs live reasons"
                );
                assert_eq!(
                    whoami["decision"]["reasons"], live_json["error"]["reasons"],
                    "{who} {m} {path}: whoami vs live reasons"
                );
                assert_eq!(
                    whoami["decision"]["reason_codes"],
                    live_json["error"]["reason_codes"]
                );
            }
            assert_eq!(
                explained["decision"]["effective"], whoami["decision"]["effective"],
                "{who} {m} {path}"
            );
        }
    }
}

#[test]
fn check_prints_the_effective_policy_and_refuses_bad_configs_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[upstream]\nurl = \"http://127.0.0.1:18789\"\nprofile = \"openclaw\"\n[trusted_proxy]\npeers = [\"10.0.0.0/8\"]\nuser_header = \"x-forwarded-user\"\n[[grants]]\ngroups = [\"ops\"]\nscopes = [\"operator.write\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for expect in [
        "POST /v1/responses",
        "operator.write",
        "GET,HEAD /v1/models",
        "operator.read",
        "group ops",
        "scope closure",
        "operator.admin",
        "OK",
    ] {
        assert!(text.contains(expect), "missing {expect:?} in:\n{text}");
    }
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[upstream]\nurl = \"http://127.0.0.1:18789\"\n\n[[grants]]\nsubjects = [\"a\"]\nscopes = [\"operator.writ\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!(
            "{}:6: unknown scope \"operator.writ\"",
            bad.display()
        )),
        "{err}"
    );
}

#[test]
fn keygen_token_and_verify_assertion_commands_work_together() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let out = Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // keygen never overwrites.
    assert!(!Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap()
        .status
        .success());
    // token: a JWT signed by that key verifies with scopegate's own JWT code.
    let out = Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["token", "--key"])
        .arg(&key)
        .args([
            "--alg",
            "EdDSA",
            "--issuer",
            "https://i",
            "--audience",
            "a",
            "--sub",
            "bob",
            "--scope",
            "operator.read operator.write",
            "--ttl",
            "5m",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let claims: Value = serde_json::from_slice(
        &scopegate::util::b64url_decode(token.split('.').nth(1).unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "bob");
    assert_eq!(claims["scope"], "operator.read operator.write");
    assert!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap() == 300);
}

/// `[openclaw] people`: `check` warns that, by default, people the config does not name cannot use the
/// gateway's WebSocket, and says what `provision` will do instead; `openclaw-config` lists the
/// provisioning identity.
#[test]
fn check_warns_about_unnamed_people_and_shows_provisioning() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[upstream]\nurl = \"http://127.0.0.1:18789\"\nprofile = \"openclaw\"\n[trusted_proxy]\npeers = [\"10.0.0.0/8\"]\nuser_header = \"x-forwarded-user\"\n[[grants]]\ngroups = [\"ops\"]\nscopes = [\"operator.write\"]\n";
    let run = |args: &[&str], toml: &str, name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, toml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_scopegate"))
            .args(args)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let listed = run(&["check"], base, "listed.toml");
    assert!(
        listed.contains("warning: [openclaw] people = \"listed\"")
            && listed.contains("cannot use the gateway's WebSocket"),
        "{listed}"
    );
    let toml = format!("{base}[openclaw]\npeople = \"provision\"\nprovision_limit = 50\n");
    let provision = run(&["check"], &toml, "provision.toml");
    assert!(!provision.contains("warning: [openclaw]"), "{provision}");
    assert!(
        provision.contains("people     provision") && provision.contains("at most 50"),
        "{provision}"
    );
    let block = run(&["openclaw-config"], &toml, "provision.toml");
    assert!(block.contains("\"scopegate-provisioner\": ["), "{block}");
    assert!(
        !block.contains("\"scopegate\": ["),
        "no shared identity: {block}"
    );
}
