//! `scopegate openclaw-config`: prints the OpenClaw `gateway` block (trusted proxies, user header,
//! `identityScopes`) that makes the gateway trust this scopegate.

use std::path::Path;
use std::process::ExitCode;

use super::load;

pub(super) fn openclaw_config(path: &Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cfg.upstream.profile != crate::config::Profile::OpenClaw {
        eprintln!("{}: [upstream] profile is not \"openclaw\"", path.display());
        return ExitCode::from(1);
    }
    let block = crate::upstream::openclaw::gateway_config_block(&cfg, None);
    let oc = &cfg.openclaw;
    let people = match oc.people {
        crate::config::People::Listed => "// people = \"listed\": identityScopes lists the people scopegate's config names; anyone else\n// reaches the gateway's HTTP surface but scopegate refuses their WebSocket (403).".to_string(),
        crate::config::People::Provision => format!(
            "// people = \"provision\": scopegate signs in as {:?} (listed below with every scope; give it a\n// role whose scopes include operator.admin if gateway.roles is set) and adds each new person to\n// identityScopes with config.patch before their first WebSocket, at most {} people.",
            oc.provision_user, oc.provision_limit
        ),
        crate::config::People::Shared => format!(
            "// people = \"shared\": everyone the config does not name reaches the gateway as {:?}.",
            oc.shared_user
        ),
    };
    let mut why = String::from(
        "// The OpenClaw gateway settings that make it trust scopegate (merge into openclaw.json).\n// The gateway must not also have a shared token: trusted-proxy and a token cannot be combined.\n",
    );
    why.push_str(&people);
    why.push('\n');
    if !cfg.server.allowed_origins.is_empty() {
        why.push_str("// controlUi.allowedOrigins: scopegate's public origins ([server] allowed_origins); without them the\n// Control UI shows \"origin not allowed\".\n");
    }
    if cfg.oidc.is_some() {
        why.push_str("// trustedProxy.deviceAutoApprove: browsers signed in by scopegate ([oidc]) get their device approved\n// without a pairing prompt, capped by X-OpenClaw-Scopes and never with operator.admin.\n");
        if cfg.server.allowed_origins.is_empty() {
            why.push_str("// warning: [oidc] is on but [server] allowed_origins is empty, so no controlUi.allowedOrigins is emitted;\n// a browser on a non-loopback origin is refused by the gateway.\n");
        }
    }
    println!(
        "{why}{}",
        serde_json::to_string_pretty(&block).unwrap_or_default()
    );
    ExitCode::SUCCESS
}
