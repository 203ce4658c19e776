//! A team gateway: the real gateway started with `gateway.roles`, scopegate (the real binary) in front
//! with `[openclaw] people = "provision"`, and two people admitted through a group grant whom neither
//! config names. Each reaches the gateway as themselves — through the upgrade header and through the
//! real `openclaw` CLI with the token in its `connect` frame — gets their own profile, and can be given
//! their own role; and access ends with the credential: a WebSocket admitted with a JWT is closed when
//! the JWT expires, one admitted with an API token when a reload removes the token.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::gateway;
use super::protocol::{connect_params, granted, Session};
use super::support::client::bearer;
use super::support::keys::TestKey;
use super::support::proxy::ChildProxy;
use super::{openclaw_config_command, sorted, WRITE_CLOSURE};

const ADMIN_TOKEN: &str = "sg_team_admin_0123456789abcdef";
const BOT_TOKEN: &str = "sg_team_bot_0123456789abcdef";

/// scopegate's config for the team; `with_bot` keeps the bot's API token (a reload removes it).
fn team_config(dir: &std::path::Path, gw_port: u16, idp: &TestKey, with_bot: bool) -> String {
    let sha = |t: &str| scopegate::identity::api_token::sha256_hex(t.as_bytes());
    let bot = if with_bot {
        format!(
            "[[api_tokens]]\nsubject = \"ci-bot\"\nsha256 = \"{}\"\nscopes = [\"operator.read\"]\n",
            sha(BOT_TOKEN)
        )
    } else {
        String::new()
    };
    format!(
        r#"[server]
listen = "127.0.0.1:0"
workers = 2
# Sockets the gateway has closed but the test's clients never answered end at shutdown without delay.
drain_timeout = "3s"

[upstream]
url = "http://127.0.0.1:{gw_port}"
profile = "openclaw"
response_header_timeout = "60s"

[jwt]
issuer = "{iss}"
audience = "{aud}"
leeway = "1s"
{key}
[[api_tokens]]
subject = "ops-admin"
sha256 = "{admin}"
scopes = ["operator.admin"]

{bot}
[[grants]]
groups = ["team"]
scopes = ["operator.write"]

[openclaw]
people = "provision"
provision_limit = 10
"#,
        iss = super::support::keys::ISSUER,
        aud = super::support::keys::AUDIENCE,
        key = idp.toml_entry(dir),
        admin = sha(ADMIN_TOKEN),
    )
}

/// The gateway's roles: everyone is a `member` (no ceiling below scopegate's own) unless an admin
/// makes them a `viewer`.
fn roles() -> Value {
    json!({
        "default": "member",
        "definitions": {
            "member": {"sessions": {"others": "none"}, "agents": "*", "scopes": ["operator.admin"]},
            "viewer": {"sessions": {"others": "none"}, "agents": "*", "scopes": ["operator.read"]},
        }
    })
}

async fn open(ws_url: &str, token: &str) -> (Session, Value) {
    let auth = bearer(token);
    Session::open(
        ws_url,
        &[("authorization", auth.as_str())],
        connect_params(
            "gateway-client",
            "backend",
            &["operator.admin", "operator.write", "operator.read"],
            None,
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("session refused: {e}"))
}

async fn cli(install: &gateway::Install, args: Vec<String>) -> (bool, String) {
    let install = gateway::Install {
        node: install.node.clone(),
        openclaw: install.openclaw.clone(),
    };
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        gateway::cli(&install, &args)
    })
    .await
    .unwrap()
}

fn profile_of(users_self: &Value) -> (String, String) {
    let p = &users_self["payload"]["profile"];
    (
        p["id"].as_str().unwrap_or_default().to_string(),
        p.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_gateway_people_roles_and_revocation() {
    let install = tokio::task::spawn_blocking(gateway::ensure_installed)
        .await
        .unwrap();
    let idp = TestKey::ed25519("team-idp");
    let dir = tempfile::tempdir().unwrap();
    let gw_port = gateway::free_port();
    let toml = team_config(dir.path(), gw_port, &idp, true);
    std::fs::write(dir.path().join("scopegate.toml"), &toml).unwrap();
    // What the README tells an operator to do once: merge `openclaw-config` (which lists scopegate's
    // provisioning identity and the named people), add roles.
    let mut gw_config = openclaw_config_command(&dir.path().join("scopegate.toml"));
    assert!(
        gw_config["gateway"]["auth"]["identityScopes"]["scopegate-provisioner"].is_array(),
        "{gw_config}"
    );
    assert!(
        gw_config["gateway"]["auth"]["identityScopes"]
            .get("ann@team.example")
            .is_none(),
        "the team's people are not in the config"
    );
    gw_config["gateway"]["roles"] = roles();
    let install2 = gateway::Install {
        node: install.node.clone(),
        openclaw: install.openclaw.clone(),
    };
    let gw = tokio::task::spawn_blocking(move || {
        gateway::Gateway::start_on(&install2, gw_port, gw_config)
    })
    .await
    .unwrap();
    let mut sg = ChildProxy::start_in(dir, &toml);
    let ws_url = format!("ws://{}/", sg.addr);
    let url = format!("ws://{}", sg.addr);

    let ann = idp.token_with("ann@team.example", &[], &["team"], |_| {});
    let ben = idp.token_with("ben@team.example", &[], &["team"], |_| {});

    // 1. Ann through the upgrade header: provisioned before her connection is forwarded, so her
    //    first session already has her scopes and her own profile.
    let t0 = Instant::now();
    let (mut ann_ws, hello) = open(&ws_url, &ann).await;
    eprintln!(
        "ann's first WebSocket (provisioned on the way): {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(hello["ok"], true, "{hello}");
    assert_eq!(granted(&hello), sorted(&WRITE_CLOSURE), "{hello}");
    let me = ann_ws.call("users.self", json!({})).await;
    assert_eq!(me["ok"], true, "{me}");
    let (ann_id, ann_profile) = profile_of(&me);
    assert!(ann_profile.contains("ann@team.example"), "{ann_profile}");
    assert!(
        !ann_profile.contains("scopegate"),
        "not a shared identity: {ann_profile}"
    );

    // 2. Ben's first visit writes the gateway's config once more; the gateway then closes its other
    //    live WebSockets (4001). Measured here: how many of the live ones (Ann's) it closed.
    let (mut ben_ws, hello) = open(&ws_url, &ben).await;
    assert_eq!(hello["ok"], true, "{hello}");
    assert_eq!(granted(&hello), sorted(&WRITE_CLOSURE));
    let me = ben_ws.call("users.self", json!({})).await;
    let (ben_id, ben_profile) = profile_of(&me);
    assert!(ben_profile.contains("ben@team.example"), "{ben_profile}");
    assert_ne!(ann_id, ben_id, "two people, two profiles");
    let probe = ann_ws.call_or_close("status", json!({})).await;
    eprintln!(
        "measured: a provisioning write closed {} of 1 other live WebSocket(s) ({probe})",
        usize::from(probe["type"] == "close")
    );
    ann_ws.close().await;
    // A person seen again is not written again: a second visit leaves the other sessions alone.
    let (mut ann_ws, _) = open(&ws_url, &ann).await;
    let (ben_again, hello) = open(&ws_url, &ben).await;
    assert_eq!(hello["ok"], true);
    ben_again.close().await;
    let r = ann_ws.call("status", json!({})).await;
    assert_eq!(r["ok"], true, "a known person's visit closed nobody: {r}");
    ann_ws.close().await;

    // 3. The same two people through OpenClaw's own CLI, the JWT as its gateway token (in-band).
    for (token, who) in [(&ann, "ann@team.example"), (&ben, "ben@team.example")] {
        let (ok, out) = cli(
            &install,
            [
                "gateway",
                "call",
                "users.self",
                "--params",
                "{}",
                "--url",
                &url,
                "--token",
                token,
                "--json",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        )
        .await;
        assert!(ok, "{out}");
        let j = gateway::json_in(&out);
        assert!(j["profile"].to_string().contains(who), "{who}: {out}");
    }

    // 4. An admin sees both people and makes Ben a viewer.
    let (mut admin, hello) = open(&ws_url, ADMIN_TOKEN).await;
    assert_eq!(hello["ok"], true, "{hello}");
    let list = admin.call("users.list", json!({})).await;
    assert_eq!(list["ok"], true, "{list}");
    let text = list["payload"].to_string();
    for who in ["ann@team.example", "ben@team.example"] {
        assert!(text.contains(who), "users.list lacks {who}: {text}");
    }
    let r = admin
        .call(
            "users.setRole",
            json!({"profileId": ben_id, "role": "viewer"}),
        )
        .await;
    assert_eq!(r["ok"], true, "{r}");
    ben_ws.close().await;
    let (mut ben_ws, _) = open(&ws_url, &ben).await;
    let r = ben_ws
        .call(
            "users.setDisplayName",
            json!({"profileId": ben_id, "displayName": "Ben"}),
        )
        .await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("missing scope: operator.write")),
        "the viewer's write is refused: {r}"
    );
    let (mut ann_ws, _) = open(&ws_url, &ann).await;
    let r = ann_ws
        .call(
            "users.setDisplayName",
            json!({"profileId": ann_id, "displayName": "Ann"}),
        )
        .await;
    assert_eq!(r["ok"], true, "the member's write is allowed: {r}");
    ben_ws.close().await;
    ann_ws.close().await;
    admin.close().await;

    // 5. A JWT that expires during the test: scopegate closes its WebSocket (1008) once exp + leeway
    //    has passed.
    let short = idp.token_with("ann@team.example", &[], &["team"], |t| {
        t.ttl = Duration::from_secs(3)
    });
    let t0 = Instant::now();
    let (mut s, hello) = open(&ws_url, &short).await;
    assert_eq!(hello["ok"], true, "{hello}");
    assert_eq!(s.call("status", json!({})).await["ok"], true);
    let closed = s.closed_within(Duration::from_secs(15)).await;
    let after = t0.elapsed();
    let (code, reason) = closed.expect("a close frame");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("expired"), "{reason}");
    assert!(after >= Duration::from_secs(2), "not before exp: {after:?}");
    eprintln!(
        "the JWT WebSocket was closed {:.1}s after it opened",
        after.as_secs_f64()
    );

    // 6. An API token removed by a reload: its WebSocket is closed (1008).
    let (mut bot, hello) = open(&ws_url, BOT_TOKEN).await;
    assert_eq!(hello["ok"], true, "{hello}");
    assert_eq!(bot.call("status", json!({})).await["ok"], true);
    let without = team_config(sg.dir.path(), gw_port, &idp, false);
    std::fs::write(sg.dir.path().join("scopegate.toml"), without).unwrap();
    let t0 = Instant::now();
    sg.signal("HUP");
    let (code, reason) = bot
        .closed_within(Duration::from_secs(15))
        .await
        .expect("a close frame");
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("API token"), "{reason}");
    eprintln!(
        "the API-token WebSocket was closed {:.2}s after SIGHUP",
        t0.elapsed().as_secs_f64()
    );

    // The audit trail: one `provisioned` line per person added, one `revoked` line per ended session.
    sg.signal("TERM");
    assert!(
        sg.wait_exit(Duration::from_secs(20)).is_some(),
        "scopegate did not stop:\n{}",
        sg.log_lines().join("\n")
    );
    assert!(sg.wait_logs_closed(Duration::from_secs(10)));
    let lines: Vec<Value> = sg
        .log_lines()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let with = |decision: &str| -> Vec<&Value> {
        lines.iter().filter(|v| v["decision"] == decision).collect()
    };
    let provisioned: Vec<&str> = with("provisioned")
        .iter()
        .filter_map(|v| v["subject"].as_str())
        .collect();
    assert_eq!(
        sorted(&provisioned),
        sorted(&["ann@team.example", "ben@team.example"]),
        "each person once"
    );
    let revoked: Vec<String> = with("revoked")
        .iter()
        .map(|v| format!("{} {}", v["subject"], v["reasons"]))
        .collect();
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    assert!(
        revoked.iter().any(|r| r.contains("credential_expired")),
        "{revoked:?}"
    );
    assert!(
        revoked.iter().any(|r| r.contains("api_token_removed")),
        "{revoked:?}"
    );
    // The scopes the ended session had, and those of each in-band admission, as scope names with one
    // space between them (the lines write them from the session's list and the snapshot's cache).
    let scope_words = |v: &Value| -> Vec<String> {
        let text = v["effective"].as_str().unwrap_or_default();
        text.split(' ').map(str::to_string).collect()
    };
    let in_band: Vec<&Value> = lines
        .iter()
        .filter(|v| v["route"] == "websocket connect (in-band)" && v["decision"] == "allow")
        .collect();
    assert!(!in_band.is_empty(), "no in-band admission was audited");
    for v in with("revoked").into_iter().chain(in_band) {
        let words = scope_words(v);
        assert!(
            words.iter().all(|w| w.starts_with("operator."))
                && words.contains(&"operator.read".to_string()),
            "effective scopes of {v}"
        );
    }
    drop(gw);
}
