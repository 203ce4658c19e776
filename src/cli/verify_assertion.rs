//! `scopegate verify-assertion`: verifies an assertion header value against a JWKS (URL or file) or
//! an HMAC secret, as an upstream would, and prints its claims.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use super::{current_thread_runtime, VerifyArgs};

pub(super) fn verify(a: &VerifyArgs) -> ExitCode {
    let rt = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(_) => return ExitCode::from(2),
    };
    let jwks: Value = match &a.jwks {
        None => serde_json::json!({"keys": []}),
        Some(src) if src.starts_with("http://") || src.starts_with("https://") => {
            match rt.block_on(crate::util::http_get(src, Duration::from_secs(10), 1 << 20)) {
                Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
                Err(e) => {
                    eprintln!("cannot fetch {src}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        Some(file) => match std::fs::read(file) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => {
                eprintln!("cannot read {file}: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let secret = a
        .hmac_secret_env
        .as_ref()
        .and_then(|v| std::env::var(v).ok());
    let opts = crate::assertion::VerifyOptions {
        audience: a.audience.as_deref(),
        issuer: Some(&a.issuer),
        method: a.method.as_deref(),
        path: a.path.as_deref(),
        hmac_secret: secret.as_deref().map(str::as_bytes),
        now: None,
        leeway: 5,
    };
    match crate::assertion::verify_assertion(a.value.trim(), &jwks, &opts) {
        Ok(claims) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&claims).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("invalid assertion: {e}");
            ExitCode::from(1)
        }
    }
}
