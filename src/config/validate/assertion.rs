//! `[assertion]`: the signed assertion scopegate hands the upstream, its key material parsed once into
//! an [`AssertionKey`] (the signer takes it as it is).

use std::time::Duration;

use crate::values::AssertionKey;

use super::*;

pub(super) fn assertion_config(
    ck: &mut Checker,
    raw: Option<Spanned<RawAssertion>>,
    profile: Profile,
    upstream: Option<&UpstreamConfig>,
) -> Option<AssertionConfig> {
    let raw = raw.map(|r| r.into_inner());
    let default_audience = match profile {
        Profile::OpenClaw => "openclaw-gateway".to_string(),
        Profile::Generic => upstream
            .map(|u| u.authority.to_string())
            .unwrap_or_else(|| "upstream".into()),
    };
    let Some(raw) = raw else {
        return Some(AssertionConfig {
            header: http::HeaderName::from_static("x-scopegate-assertion"),
            algorithm: AssertionAlgorithm::EdDSA,
            key: None,
            next_key: None,
            kid: None,
            issuer: "scopegate".into(),
            audience: default_audience,
            ttl: Duration::from_secs(60),
            reuse: Duration::from_secs(1),
        });
    };
    let algorithm = raw.algorithm.unwrap_or_default();
    let load = |ck: &mut Checker,
                file: &Option<Spanned<PathBuf>>,
                env: &Option<Spanned<String>>,
                what: &str|
     -> Option<AssertionKey> {
        let (bytes, span) = match (file, env) {
            (Some(_), Some(e)) => {
                ck.err(
                    e.span(),
                    format!("give {what}_file or {what}_env, not both"),
                );
                return None;
            }
            (Some(f), None) => (ck.read_file(f, "assertion key")?, f.span()),
            (None, Some(e)) => (ck.read_env(e, "assertion key")?, e.span()),
            (None, None) => return None,
        };
        match AssertionKey::parse(algorithm, &bytes) {
            Ok(key) => Some(key),
            Err(e) => {
                ck.err(span, e);
                None
            }
        }
    };
    let key = load(ck, &raw.key_file, &raw.key_env, "key");
    let next_key = load(ck, &raw.next_key_file, &raw.next_key_env, "next_key");
    if algorithm == AssertionAlgorithm::HS256 && key.is_none() {
        ck.err_nowhere(
            "[assertion] HS256 needs key_env or key_file: a shared secret the upstream also knows",
        );
    }
    let ttl = match raw.ttl {
        Some(t)
            if t.get_ref().0 < Duration::from_secs(5)
                || t.get_ref().0 > Duration::from_secs(600) =>
        {
            ck.err(t.span(), "[assertion] ttl must be between 5s and 10m");
            Duration::from_secs(60)
        }
        Some(t) => t.into_inner().0,
        None => Duration::from_secs(60),
    };
    let reuse = match raw.reuse {
        Some(r) if r.get_ref().0 * 2 > ttl => {
            ck.err(r.span(), "[assertion] reuse must be at most half the ttl");
            Duration::ZERO
        }
        Some(r) => r.into_inner().0,
        None => Duration::from_secs(1),
    };
    Some(AssertionConfig {
        header: raw
            .header
            .map(|h| h.0)
            .unwrap_or_else(|| http::HeaderName::from_static("x-scopegate-assertion")),
        algorithm,
        key,
        next_key,
        kid: raw.kid,
        issuer: raw.issuer.unwrap_or_else(|| "scopegate".into()),
        audience: raw.audience.unwrap_or(default_audience),
        ttl,
        reuse,
    })
}
