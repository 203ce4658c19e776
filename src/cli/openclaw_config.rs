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
    println!(
        "// The OpenClaw gateway settings that make it trust scopegate (merge into openclaw.json).\n// The gateway must not also have a shared token: trusted-proxy and a token cannot be combined.\n{}",
        serde_json::to_string_pretty(&block).unwrap_or_default()
    );
    ExitCode::SUCCESS
}
