//! A real browser signs in: Debian's Chromium, driven over the DevTools protocol by `puppeteer-core`
//! (`tests/oidc/browser.mjs`), opens scopegate's URL in front of the real OpenClaw gateway, is sent to
//! the real OpenID provider's sign-in form, signs in as Alice, and lands on the real Control UI — whose
//! own WebSocket, authenticated by the session cookie at the upgrade and relayed untouched, connects
//! as Alice: the gateway's `users.self` names her. The screenshot of the signed-in Control UI is kept
//! under `target/tmp/browser/`.
//!
//! Everything is real and on loopback; the gateway's model is the local stub of the gateway suite (no
//! chat happens here). The browser's origin is `http://localhost:PORT` and the provider's
//! `http://127.0.0.1:PORT`, so their cookies stay apart as they would on two hosts.

mod support;

// Shared with the gateway suite; this test uses part of each.
#[allow(dead_code)]
#[path = "openclaw/gateway.rs"]
mod gateway;
#[allow(dead_code)]
#[path = "openclaw/stub_model.rs"]
mod stub_model;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::{json, Value};

use support::oidc_provider::{self, Provider};

const KEY: [u8; 32] = [0x5C; 32];

fn chromium() -> PathBuf {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("Chromium is not installed (apt-get install chromium; .ci/run installs it)");
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        for (k, v) in b {
            a.insert(k, v);
        }
    }
}

/// `scopegate openclaw-config`, as a user runs it (its `//` comment lines stripped).
fn openclaw_config(config: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_scopegate"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_and_the_control_ui_connects_as_that_person() {
    let chromium = chromium();
    let gw_install = tokio::task::spawn_blocking(gateway::ensure_installed)
        .await
        .unwrap();
    let browser_install = tokio::task::spawn_blocking(oidc_provider::ensure_installed)
        .await
        .unwrap();
    let stub = stub_model::StubModel::start().await;

    let sg_port = gateway::free_port();
    let gw_port = gateway::free_port();
    let sg_origin = format!("http://localhost:{sg_port}");
    let provider = Provider::start(
        json!([{
            "client_id": "scopegate",
            "client_secret": "browser-test-secret",
            "redirect_uris": [format!("{sg_origin}/.scopegate/callback")],
            "post_logout_redirect_uris": [format!("{sg_origin}/")],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }]),
        json!([{"login": "alice@example.com", "password": "alice-pw", "name": "Alice Example",
                "email": "alice@example.com", "groups": ["ops"]}]),
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client-secret"), "browser-test-secret").unwrap();
    std::fs::write(
        dir.path().join("cookie-keys"),
        base64::engine::general_purpose::STANDARD.encode(KEY),
    )
    .unwrap();
    let toml = format!(
        r#"[server]
listen = "127.0.0.1:{sg_port}"
workers = 2
allowed_origins = ["{sg_origin}"]

[upstream]
url = "http://127.0.0.1:{gw_port}"
profile = "openclaw"
response_header_timeout = "120s"

[oidc]
issuer = "{issuer}"
client_id = "scopegate"
client_secret_file = "client-secret"
cookie_keys_file = "cookie-keys"
scopes = ["openid", "email", "profile", "groups"]
subject_claim = "email"

[[grants]]
subjects = ["alice@example.com"]
scopes = ["operator.write"]
"#,
        issuer = provider.issuer
    );
    let config_path = dir.path().join("scopegate.toml");
    std::fs::write(&config_path, &toml).unwrap();

    // The gateway's settings come from scopegate itself, as an operator would get them.
    let mut gw_config = openclaw_config(&config_path);
    assert_eq!(
        gw_config["gateway"]["controlUi"]["allowedOrigins"],
        json!([sg_origin]),
        "{gw_config}"
    );
    let auto = &gw_config["gateway"]["auth"]["trustedProxy"]["deviceAutoApprove"];
    assert_eq!(auto["enabled"], true, "{gw_config}");
    assert!(!auto["scopes"].to_string().contains("operator.admin"));
    merge(&mut gw_config, stub.gateway_config());
    let install = gateway::Install {
        node: gw_install.node.clone(),
        openclaw: gw_install.openclaw.clone(),
    };
    let gw = tokio::task::spawn_blocking(move || {
        gateway::Gateway::start_on(&install, gw_port, gw_config)
    })
    .await
    .unwrap();

    let sg = support::proxy::start_in(dir, &toml);
    let d = sg
        .handle
        .shared
        .snapshot()
        .oidc_discovery()
        .unwrap()
        .clone();
    assert!(
        support::within(
            20,
            "discovery",
            d.initial_fetch(std::time::Duration::from_secs(15))
        )
        .await,
        "{:?}",
        d.last_error()
    );

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join("control-ui-signed-in.png");
    let _ = std::fs::remove_file(&screenshot);
    let profile_dir = tempfile::tempdir().unwrap();
    let script = browser_install.script("browser.mjs", include_str!("oidc/browser.mjs"));
    let args = json!({
        "url": format!("{sg_origin}/profile"),
        "login": "alice@example.com",
        "password": "alice-pw",
        "screenshot": screenshot,
        "chromium": chromium,
        "profileDir": profile_dir.path(),
    })
    .to_string();
    let node = browser_install.node.clone();
    let dir = browser_install.dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(node)
            .arg(script)
            .arg(args)
            .current_dir(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("result "))
        .unwrap_or_else(|| panic!("the browser driver printed no result:\n{stdout}\n{stderr}"));
    let seen: Value = serde_json::from_str(line).unwrap();
    eprintln!("browser: {}", serde_json::to_string_pretty(&seen).unwrap());
    assert!(
        seen["failure"].is_null(),
        "the browser did not get through: {}\ngateway log:\n{}",
        seen["failure"],
        gw.log_tail(40)
    );

    // The way there: scopegate → the provider's own form → back on scopegate's origin.
    let steps = seen["steps"].as_array().unwrap();
    let at = |what: &str| {
        steps
            .iter()
            .find(|s| s["what"] == what)
            .and_then(|s| s["url"].as_str())
            .unwrap_or_else(|| panic!("no step {what}: {steps:?}"))
            .to_string()
    };
    assert!(at("provider form").starts_with(&format!("{}/interaction/", provider.issuer)));
    assert!(at("landed").starts_with(&sg_origin), "{}", at("landed"));

    // The Control UI's WebSocket connected through scopegate as Alice, and the gateway says so.
    let hello = seen["frames"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "hello-ok")
        .unwrap_or_else(|| panic!("no hello-ok: {}", seen["frames"]));
    assert_eq!(hello["ok"], true);
    let scopes = hello["scopes"].to_string();
    assert!(scopes.contains("operator.read"), "{scopes}");
    assert!(!scopes.contains("operator.admin"), "{scopes}");
    let profile = seen["profile"].to_string();
    assert!(
        profile.contains("alice@example.com"),
        "users.self: {profile}"
    );

    // The session cookie as the browser stored it: HttpOnly, SameSite=Lax.
    let cookie = seen["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "scopegate-session")
        .unwrap_or_else(|| panic!("no session cookie: {}", seen["cookies"]));
    assert_eq!(cookie["httpOnly"], true);
    assert_eq!(cookie["sameSite"], "Lax");

    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    assert!(
        png.len() > 10_000,
        "a real page, not a blank: {} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", screenshot.display());
    drop(sg);
    drop(gw);
    drop(provider);
}
