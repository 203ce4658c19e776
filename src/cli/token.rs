//! `scopegate token`: mints a test JWT with a local key or an HMAC secret (`src/tokens.rs`).

use std::process::ExitCode;

use super::TokenArgs;
use crate::config::JwtAlgorithm;

pub(super) fn token(a: &TokenArgs) -> ExitCode {
    let Some(alg) = JwtAlgorithm::from_name(&a.alg) else {
        eprintln!("unknown algorithm {:?}", a.alg);
        return ExitCode::from(2);
    };
    let material = match (&a.key, &a.secret_env) {
        (Some(p), _) => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())),
        (None, Some(var)) => std::env::var(var)
            .map(String::into_bytes)
            .map_err(|_| format!("{var} is not set")),
        (None, None) => Err("give --key FILE or --secret-env VAR".into()),
    };
    let ttl = match humantime::parse_duration(&a.ttl) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("invalid --ttl: {e}");
            return ExitCode::from(2);
        }
    };
    let scopes: Vec<String> = a
        .scopes
        .iter()
        .flat_map(|s| s.split_whitespace().map(str::to_string))
        .collect();
    let result = material
        .and_then(|m| crate::tokens::encoding_key(alg, &m))
        .and_then(|key| {
            crate::tokens::mint(
                alg,
                &key,
                &crate::tokens::TokenSpec {
                    issuer: a.issuer.clone(),
                    audience: a.audience.clone(),
                    subject: a.sub.clone(),
                    scopes,
                    groups: a.groups.clone(),
                    ttl,
                    kid: a.kid.clone(),
                    extra: Default::default(),
                },
            )
        });
    match result {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
