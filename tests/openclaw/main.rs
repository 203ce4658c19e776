//! The real OpenClaw gateway (npm `openclaw@2026.9.6` under Node 26 from npm) behind scopegate, driven by
//! real clients — curl-like HTTP, raw WebSocket frames, and OpenClaw's own CLI — through the three seed
//! failures and a spoofing check:
//!
//! 1. openclaw#57331: a JWT carrying `operator.read operator.write` refused on `/v1/*` with
//!    "missing scope: operator.write";
//! 2. openclaw#46650: the token-authenticated CLI connects but its RPCs fail with
//!    "missing scope: operator.read";
//! 3. PR #57889: Tailscale and trusted-proxy operators lose every scope when no device is bound;
//! 4. spoofed scope, user and Tailscale headers sent through scopegate change nothing.
//!
//! One gateway serves all four (it takes ~15 s and ~700 MB to start), so they run as ordered steps of
//! one test. The gateway calls a local stub model (`stub_model.rs`) so that a request which passes its
//! scope checks completes with 200 rather than failing in an offline model provider.
//!
//! The suite installs what it needs on first use and fails loudly if it cannot; it is never skipped.

#[path = "../support/mod.rs"]
mod support;

mod gateway;
mod protocol;
mod stub_model;
mod team;

use serde_json::{json, Value};
use support::client::{bearer, get, send};
use support::idp::WhoIs;
use support::keys::{TestKey, AUDIENCE, ISSUER};

const READER_TOKEN: &str = "sg_reader_0123456789abcdef";
const ADMIN_TOKEN: &str = "sg_admin_0123456789abcdef";

const WRITE_CLOSURE: [&str; 5] = [
    "operator.read",
    "operator.sessions.read",
    "operator.sessions.write",
    "operator.talk",
    "operator.write",
];

fn sorted(v: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    out.sort();
    out
}

fn scopegate_config(dir: &std::path::Path, gw_port: u16, idp: &TestKey, whois: &WhoIs) -> String {
    let assertion_key = scopegate::assertion::pem_encode(
        "PRIVATE KEY",
        &scopegate::assertion::generate_pkcs8(scopegate::config::AssertionAlgorithm::EdDSA)
            .unwrap(),
    );
    std::fs::write(dir.join("assertion.pem"), assertion_key).unwrap();
    let sha = |t: &str| scopegate::identity::api_token::sha256_hex(t.as_bytes());
    format!(
        r#"[server]
listen = "127.0.0.1:0"
workers = 2

[upstream]
url = "http://127.0.0.1:{gw_port}"
profile = "openclaw"
response_header_timeout = "120s"

[jwt]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
{key_entry}
[[api_tokens]]
subject = "ci-reader"
sha256 = "{reader}"
scopes = ["operator.read"]

[[api_tokens]]
subject = "ops-admin"
sha256 = "{admin}"
scopes = ["operator.admin"]

[tailscale]
trusted_peers = ["127.0.0.1/32"]
whois_socket = "{whois}"

[trusted_proxy]
peers = ["127.0.0.1/32"]
user_header = "x-auth-request-user"
groups_header = "x-auth-request-groups"

[[grants]]
subjects = ["alice@example.com"]
scopes = ["operator.write"]

[[grants]]
groups = ["ops"]
scopes = ["operator.write"]

[openclaw]
# The people these scenarios connect as over the WebSocket: named, so the gateway lists them.
users = ["ops@example.com", "carol", "mallory@example.com"]

[assertion]
key_file = "assertion.pem"
"#,
        key_entry = idp.toml_entry(dir),
        reader = sha(READER_TOKEN),
        admin = sha(ADMIN_TOKEN),
        whois = whois.socket.display(),
    )
}

/// `scopegate openclaw-config`, exactly as a user runs it, parsed (its `//` comment lines stripped).
fn openclaw_config_command(config: &std::path::Path) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["openclaw-config", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&text).unwrap()
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        for (k, v) in b {
            a.insert(k, v);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openclaw_gateway_behind_scopegate() {
    let install = tokio::task::spawn_blocking(gateway::ensure_installed)
        .await
        .unwrap();
    let stub = stub_model::StubModel::start().await;
    let whois = WhoIs::start().await;
    whois.user("100.64.0.7", "alice@example.com", "Alice");
    let idp = TestKey::ed25519("idp");

    let dir = tempfile::tempdir().unwrap();
    let gw_port = gateway::free_port();
    let toml = scopegate_config(dir.path(), gw_port, &idp, &whois);
    std::fs::write(dir.path().join("scopegate.toml"), &toml).unwrap();
    let mut gw_config = openclaw_config_command(&dir.path().join("scopegate.toml"));
    merge(&mut gw_config, stub.gateway_config());
    let install2 = gateway::Install {
        node: install.node.clone(),
        openclaw: install.openclaw.clone(),
    };
    let gw = tokio::task::spawn_blocking(move || {
        let mut cfg = gw_config;
        cfg["gateway"]["port"] = gw_port.into();
        gateway::Gateway::start_on(&install2, gw_port, cfg)
    })
    .await
    .unwrap();
    let sg = support::proxy::start_in(dir, &toml);
    let sg_url = sg.url();
    let ws_url = format!("ws://{}/", sg.addr);

    scenario_1_jwt_on_the_http_surface(&sg_url, &gw.url(), &idp, &stub).await;
    eprintln!("✓ scenario 1 (openclaw#57331): /v1/responses, /v1/chat/completions and /v1/models with a read+write JWT");
    scenario_2_cli_with_jwt_and_api_token(&install, &ws_url, &idp).await;
    eprintln!("✓ scenario 2 (openclaw#46650): the openclaw CLI gets exactly its token's scopes");
    scenario_3_device_less_tailscale_and_proxy_operators(&ws_url).await;
    eprintln!("✓ scenario 3 (PR #57889): device-less Tailscale and trusted-proxy operators keep their scopes");
    scenario_4_spoofing_changes_nothing(&sg_url, &ws_url, &idp).await;
    eprintln!("✓ scenario 4: spoofed X-OpenClaw-Scopes, user and Tailscale headers change nothing");
    drop(sg);
    drop(gw);
}

async fn scenario_1_jwt_on_the_http_surface(
    sg: &str,
    gw: &str,
    idp: &TestKey,
    stub: &stub_model::StubModel,
) {
    let rw = idp.token("dev@example.com", &["operator.read", "operator.write"]);
    let auth = bearer(&rw);
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];

    let got = send(
        "POST",
        &format!("{sg}/v1/responses"),
        &h,
        r#"{"model":"openclaw","input":"hi"}"#,
    )
    .await;
    assert!(
        got.status != 401 && got.status != 403,
        "/v1/responses refused: {} {}",
        got.status,
        got.text()
    );
    assert!(!got.text().contains("missing scope"), "{}", got.text());
    assert_eq!(got.status, 200, "{}", got.text());
    let j = got.json();
    assert_eq!(j["status"], "completed", "{j}");
    assert!(j.to_string().contains(stub_model::REPLY));

    let got = send(
        "POST",
        &format!("{sg}/v1/chat/completions"),
        &h,
        r#"{"model":"openclaw","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(!got.text().contains("missing scope"));
    assert_eq!(
        got.json()["choices"][0]["message"]["content"],
        stub_model::REPLY
    );

    let got = get(&format!("{sg}/v1/models"), &h).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got.json()["data"].as_array().is_some_and(|d| !d.is_empty()));

    // Streaming: server-sent events come back through scopegate.
    let got = send(
        "POST",
        &format!("{sg}/v1/responses"),
        &h,
        r#"{"model":"openclaw","input":"hi","stream":true}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got
        .header("content-type")
        .unwrap_or_default()
        .starts_with("text/event-stream"));
    assert!(got.text().contains("data:"), "{}", got.text());
    assert!(stub.calls.load(std::sync::atomic::Ordering::SeqCst) >= 3);

    // A read-only JWT: scopegate refuses the write with the gateway's words and its own reasons.
    let ro = idp.token("viewer@example.com", &["operator.read"]);
    let auth_ro = bearer(&ro);
    let got = send(
        "POST",
        &format!("{sg}/v1/responses"),
        &[
            ("authorization", auth_ro.as_str()),
            ("content-type", "application/json"),
        ],
        r#"{"model":"openclaw","input":"hi"}"#,
    )
    .await;
    assert_eq!(got.status, 403);
    let j = got.json();
    assert_eq!(j["error"]["type"], "forbidden");
    assert_eq!(j["error"]["message"], "missing scope: operator.write");
    assert!(j["error"]["reasons"].as_array().unwrap().len() >= 2);
    assert_eq!(
        get(
            &format!("{sg}/v1/models"),
            &[("authorization", auth_ro.as_str())]
        )
        .await
        .status,
        200
    );

    // The same read+write JWT sent straight to the gateway fails: it validates no JWT.
    let direct = get(
        &format!("{gw}/v1/models"),
        &[("authorization", auth.as_str())],
    )
    .await;
    assert!(
        direct.status == 401 || direct.status == 403,
        "direct: {} {}",
        direct.status,
        direct.text()
    );
}

async fn scenario_2_cli_with_jwt_and_api_token(
    install: &gateway::Install,
    ws_url: &str,
    idp: &TestKey,
) {
    let admin_jwt = idp.token("ops@example.com", &["operator.admin"]);
    let url = ws_url.trim_end_matches('/').to_string();
    let run = |args: Vec<String>| {
        let install = gateway::Install {
            node: install.node.clone(),
            openclaw: install.openclaw.clone(),
        };
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                gateway::cli(&install, &args)
            })
            .await
            .unwrap()
        }
    };
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // `openclaw gateway probe` with a JWT: it connects with scopes, not "connected_no_operator_scope".
    let (_, out) = run(a(&[
        "gateway", "probe", "--url", &url, "--token", &admin_jwt, "--json",
    ]))
    .await;
    let j = gateway::json_in(&out);
    let target = j["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "explicit")
        .unwrap()
        .clone();
    assert_eq!(target["connect"]["ok"], true, "{target}");
    assert_eq!(target["connect"]["rpcOk"], true, "{target}");
    assert!(!out.contains("missing scope"), "{out}");
    let scopes = target["auth"]["scopes"].as_array().unwrap();
    assert!(scopes.iter().any(|s| s == "operator.read"), "{target}");
    assert_ne!(target["auth"]["capability"], "connected_no_operator_scope");

    // A read RPC with an API token (the CLI asks for operator.read and gets it).
    let (ok, out) = run(a(&[
        "gateway",
        "call",
        "status",
        "--params",
        "{}",
        "--url",
        &url,
        "--token",
        READER_TOKEN,
        "--json",
    ]))
    .await;
    assert!(ok, "{out}");
    assert!(
        gateway::json_in(&out)["runtimeVersion"].is_string(),
        "{out}"
    );
    let (ok, out) = run(a(&[
        "cron", "list", "--url", &url, "--token", &admin_jwt, "--json",
    ]))
    .await;
    assert!(ok, "{out}");
    assert!(gateway::json_in(&out)["jobs"].is_array(), "{out}");

    // An admin RPC: with the admin JWT the scope check passes (config.set then wants a base hash, which
    // proves the scope was granted without changing anything); with the reader token it is refused.
    let (_, out) = run(a(&[
        "gateway",
        "call",
        "config.set",
        "--params",
        r#"{"raw":"{}"}"#,
        "--url",
        &url,
        "--token",
        &admin_jwt,
        "--json",
    ]))
    .await;
    let j = gateway::json_in(&out);
    assert_eq!(j["error"]["code"], "INVALID_REQUEST", "{out}");
    assert!(!out.contains("missing scope"), "{out}");
    let (ok, out) = run(a(&[
        "gateway",
        "call",
        "config.set",
        "--params",
        r#"{"raw":"{}"}"#,
        "--url",
        &url,
        "--token",
        READER_TOKEN,
        "--json",
    ]))
    .await;
    assert!(!ok);
    assert!(out.contains("missing scope: operator.admin"), "{out}");

    // A token scopegate does not accept: refused in the gateway's own error shape, with scopegate's reason.
    let (ok, out) = run(a(&[
        "gateway",
        "call",
        "status",
        "--params",
        "{}",
        "--url",
        &url,
        "--token",
        "not-a-valid-token",
        "--json",
    ]))
    .await;
    assert!(!ok);
    let j = gateway::json_in(&out);
    assert_eq!(j["error"]["code"], "UNAUTHORIZED", "{out}");
    assert_eq!(j["error"]["details"]["source"], "scopegate", "{out}");

    // A valid JWT for someone the config does not name (`people = "listed"`): the gateway would give
    // the session no scopes, so scopegate refuses the connect itself, in the gateway's shape, saying why.
    let stranger = idp.token("stranger@example.com", &["operator.read"]);
    let (ok, out) = run(a(&[
        "gateway", "call", "status", "--params", "{}", "--url", &url, "--token", &stranger,
        "--json",
    ]))
    .await;
    assert!(!ok, "{out}");
    let j = gateway::json_in(&out);
    assert_eq!(j["error"]["code"], "FORBIDDEN", "{out}");
    assert!(
        j["error"]["details"]["reason_codes"]
            .to_string()
            .contains("people_listed"),
        "{out}"
    );
}

async fn scenario_3_device_less_tailscale_and_proxy_operators(ws_url: &str) {
    use protocol::{connect_params, granted, Session};
    // A Tailscale operator, as `tailscale serve` presents them (WhoIs confirms the login), no device.
    let ts_headers = [
        ("tailscale-user-login", "alice@example.com"),
        ("tailscale-user-name", "Alice"),
        ("x-forwarded-for", "100.64.0.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "gateway.tail1234.ts.net"),
    ];
    let (mut s, hello) = Session::open(
        ws_url,
        &ts_headers,
        connect_params(
            "gateway-client",
            "backend",
            &["operator.admin", "operator.read", "operator.write"],
            None,
        ),
    )
    .await
    .unwrap();
    assert_eq!(hello["ok"], true, "{hello}");
    assert_eq!(
        granted(&hello),
        sorted(&WRITE_CLOSURE),
        "hello-ok scopes equal scopegate's effective set"
    );
    let r = s
        .call_retrying(
            "chat.send",
            json!({"sessionKey": "main", "message": "hi from tailscale", "idempotencyKey": "ts-1"}),
        )
        .await;
    assert_eq!(r["ok"], true, "the write RPC is authorised: {r}");
    let r = s.call("config.set", json!({"raw": "{}"})).await;
    assert_eq!(
        r["error"]["message"], "missing scope: operator.admin",
        "and nothing more: {r}"
    );
    s.close().await;

    // A trusted-proxy user in group ops, no device, a custom client id.
    let proxy_headers = [
        ("x-auth-request-user", "carol"),
        ("x-auth-request-groups", "dev,ops"),
        ("x-forwarded-for", "198.51.100.20"),
    ];
    let (mut s, hello) = Session::open(
        ws_url,
        &proxy_headers,
        connect_params("test", "test", &["operator.write"], None),
    )
    .await
    .unwrap();
    assert_eq!(hello["ok"], true, "{hello}");
    assert_eq!(granted(&hello), sorted(&WRITE_CLOSURE));
    let r = s
        .call_retrying(
            "chat.send",
            json!({"sessionKey": "main", "message": "hi from the proxy", "idempotencyKey": "tp-1"}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    s.close().await;
}

async fn scenario_4_spoofing_changes_nothing(sg: &str, ws_url: &str, idp: &TestKey) {
    use protocol::{connect_params, granted, Session};
    let ro = idp.token("mallory@example.com", &["operator.read"]);
    let auth = bearer(&ro);
    let spoof = [
        ("authorization", auth.as_str()),
        ("x-openclaw-scopes", "operator.admin"),
        ("x-forwarded-user", "ops-admin"),
        ("tailscale-user-login", "alice@example.com"),
        ("content-type", "application/json"),
    ];
    // HTTP: still read-only.
    let got = send(
        "POST",
        &format!("{sg}/v1/responses"),
        &spoof,
        r#"{"model":"openclaw","input":"hi"}"#,
    )
    .await;
    assert_eq!(got.status, 403, "{}", got.text());
    assert_eq!(
        got.json()["error"]["message"],
        "missing scope: operator.write"
    );
    let got = get(&format!("{sg}/.scopegate/whoami"), &spoof).await;
    let j = got.json();
    assert_eq!(j["subject"], "mallory@example.com");
    assert_eq!(
        j["seen"][0]["subject"], "alice@example.com",
        "the network identity is only recorded"
    );
    assert_eq!(
        j["effective"],
        json!(["operator.read", "operator.sessions.read"])
    );

    // WebSocket: the gateway grants exactly the read set, whatever the client claimed.
    let (mut s, hello) = Session::open(
        ws_url,
        &spoof,
        connect_params("cli", "cli", &["operator.admin"], None),
    )
    .await
    .unwrap();
    assert_eq!(hello["ok"], true, "{hello}");
    assert_eq!(
        granted(&hello),
        sorted(&["operator.read", "operator.sessions.read"])
    );
    let r = s.call("config.set", json!({"raw": "{}"})).await;
    assert_eq!(
        r["error"]["message"], "missing scope: operator.admin",
        "{r}"
    );
    let r = s.call("status", json!({})).await;
    assert_eq!(r["ok"], true, "{r}");
    s.close().await;

    // Someone the config does not name, with the default `people = "listed"`: HTTP works as them, but
    // the gateway would give their WebSocket no scopes, so scopegate refuses it and says why.
    let stranger = idp.token("stranger@example.com", &["operator.read"]);
    let auth = bearer(&stranger);
    let got = get(
        &format!("{sg}/v1/models"),
        &[("authorization", auth.as_str())],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    match support::client::ws_connect(ws_url, &[("authorization", auth.as_str())]).await {
        Err((status, body)) => {
            assert_eq!(status, 403, "{body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"]["type"], "forbidden", "{v}");
            let codes = v["error"]["reason_codes"].to_string();
            assert!(codes.contains("people_listed"), "{v}");
        }
        Ok(_) => panic!("an unlisted person's WebSocket was forwarded"),
    }
}
