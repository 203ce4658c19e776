//! `[jwt]` and `[[jwt.keys]]`: the claim rules (RFC 8725), the JWKS source, and static keys parsed once
//! into [`VerificationKey`]s, each pinned to its algorithm.

use std::collections::HashSet;
use std::time::Duration;

use crate::values::VerificationKey;

use super::*;

const MAX_LEEWAY: Duration = Duration::from_secs(300);

pub(super) fn jwt_config(ck: &mut Checker, raw: Spanned<RawJwt>) -> Option<JwtConfig> {
    let span = raw.span();
    let raw = raw.into_inner();
    let issuer = match raw.issuer {
        Some(i) if !i.get_ref().is_empty() => i.into_inner(),
        _ => {
            ck.err(
                span.clone(),
                "[jwt] issuer is required (RFC 8725 §3.8: always check `iss`)",
            );
            String::new()
        }
    };
    let audience = match raw.audience {
        Some(a) if !a.get_ref().0.is_empty() && a.get_ref().0.iter().all(|s| !s.is_empty()) => {
            a.into_inner().0
        }
        _ => {
            ck.err(
                span.clone(),
                "[jwt] audience is required (RFC 8725 §3.9: always check `aud`)",
            );
            Vec::new()
        }
    };
    let leeway = leeway(ck, raw.leeway, "jwt");
    if let Some(url) = &raw.jwks_url {
        let ok = url
            .get_ref()
            .parse::<http::Uri>()
            .ok()
            .filter(|u| {
                matches!(u.scheme_str(), Some("http") | Some("https")) && u.host().is_some()
            })
            .is_some();
        if !ok {
            ck.err(url.span(), format!("invalid jwks_url {:?}", url.get_ref()));
        }
    }
    let jwks_algorithms = published_key_algorithms(
        ck,
        raw.jwks_algorithms,
        "HMAC algorithms cannot come from a JWKS",
    );
    let mut keys = Vec::new();
    for k in raw.keys {
        if let Some(key) = jwt_key(ck, k) {
            keys.push(key);
        }
    }
    let mut kids = HashSet::new();
    for k in &keys {
        if let Some(kid) = &k.kid {
            if !kids.insert(kid.clone()) {
                ck.err(span.clone(), format!("two [[jwt.keys]] share kid {kid:?}"));
            }
        }
    }
    if keys.is_empty() && raw.jwks_url.is_none() {
        ck.err(span, "[jwt] needs [[jwt.keys]] and/or jwks_url");
    }
    Some(JwtConfig {
        issuer,
        audience,
        leeway,
        jwks_url: raw.jwks_url.map(|u| u.into_inner()),
        jwks_refresh: raw
            .jwks_refresh
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(600)),
        jwks_refetch_min_interval: raw
            .jwks_refetch_min_interval
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30)),
        jwks_timeout: raw
            .jwks_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(5)),
        jwks_algorithms,
        scope_claims: raw
            .scope_claims
            .unwrap_or_else(|| vec!["scope".into(), "scp".into()]),
        groups_claim: Some(raw.groups_claim.unwrap_or_else(|| "groups".into()))
            .filter(|g| !g.is_empty()),
        subject_claim: raw.subject_claim.unwrap_or_else(|| "sub".into()),
        cache_size: raw.cache_size.unwrap_or(10_000),
        max_token_bytes: raw
            .max_token_bytes
            .map(|b| b.0 as usize)
            .unwrap_or(16 * 1024),
        keys,
    })
}

/// A token's `leeway` (30 s when not given), at most 5 m: beyond that an expired token stays good for
/// too long. `section` names the table in the message (`"[jwt] leeway must be at most 5m"`).
pub(super) fn leeway(ck: &mut Checker, raw: Option<Spanned<Dur>>, section: &str) -> Duration {
    match raw {
        Some(l) if l.get_ref().0 > MAX_LEEWAY => {
            ck.err(l.span(), format!("[{section}] leeway must be at most 5m"));
            MAX_LEEWAY
        }
        Some(l) => l.into_inner().0,
        None => Duration::from_secs(30),
    }
}

/// The algorithms allowed for keys a provider publishes (a JWKS): known names, never HMAC (its secret
/// would come from a network document), refused with `hmac_refusal`. When not given: RS256, PS256,
/// ES256, ES384 and EdDSA.
pub(super) fn published_key_algorithms(
    ck: &mut Checker,
    raw: Option<Vec<Spanned<String>>>,
    hmac_refusal: &str,
) -> Vec<JwtAlgorithm> {
    match raw {
        Some(list) => list
            .into_iter()
            .filter_map(|a| match JwtAlgorithm::from_name(a.get_ref()) {
                Some(alg) if alg.is_hmac() => {
                    ck.err(a.span(), hmac_refusal);
                    None
                }
                Some(alg) => Some(alg),
                None => {
                    ck.err(a.span(), format!("unknown algorithm {:?}", a.get_ref()));
                    None
                }
            })
            .collect(),
        None => vec![
            JwtAlgorithm::RS256,
            JwtAlgorithm::PS256,
            JwtAlgorithm::ES256,
            JwtAlgorithm::ES384,
            JwtAlgorithm::EdDSA,
        ],
    }
}

fn jwt_key(ck: &mut Checker, raw: Spanned<RawJwtKey>) -> Option<JwtKeyConfig> {
    let span = raw.span();
    let raw = raw.into_inner();
    let Some(algorithm) = JwtAlgorithm::from_name(raw.algorithm.get_ref()) else {
        ck.err(
            raw.algorithm.span(),
            format!(
                "unknown algorithm {:?} (one of HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA; \"none\" is never accepted)",
                raw.algorithm.get_ref()
            ),
        );
        return None;
    };
    let sources = [
        raw.secret_env.is_some(),
        raw.secret_file.is_some(),
        raw.public_key_file.is_some(),
        raw.jwk_file.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if sources != 1 {
        ck.err(
            span,
            "each [[jwt.keys]] entry needs exactly one of secret_env, secret_file, public_key_file, jwk_file",
        );
        return None;
    }
    let pinned = |key: VerificationKey, origin: String| JwtKeyConfig {
        kid: raw.kid.clone().or(key.kid),
        algorithm,
        key: key.key,
        origin,
    };
    if algorithm.is_hmac() {
        let (secret, origin, at) = if let Some(env) = &raw.secret_env {
            (
                ck.read_env(env, "JWT secret")?,
                format!("env {}", env.get_ref()),
                env.span(),
            )
        } else if let Some(file) = &raw.secret_file {
            let mut bytes = ck.read_file(file, "JWT secret")?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            (
                bytes,
                format!("file {}", file.get_ref().display()),
                file.span(),
            )
        } else {
            ck.err(
                raw.algorithm.span(),
                format!("{algorithm} needs secret_env or secret_file"),
            );
            return None;
        };
        return match VerificationKey::hmac(algorithm, &secret) {
            Ok(key) => Some(pinned(key, origin)),
            Err(e) => {
                ck.err(at, e);
                None
            }
        };
    }
    if raw.secret_env.is_some() || raw.secret_file.is_some() {
        ck.err(
            raw.algorithm.span(),
            format!("{algorithm} is asymmetric: give public_key_file or jwk_file, not a secret"),
        );
        return None;
    }
    if let Some(file) = &raw.public_key_file {
        let pem = ck.read_file(file, "public key")?;
        return match VerificationKey::from_public_pem(algorithm, &pem) {
            Ok(key) => Some(pinned(key, format!("file {}", file.get_ref().display()))),
            Err(e) => {
                ck.err(
                    file.span(),
                    format!(
                        "cannot use {} as a {algorithm} public key: {e}",
                        file.get_ref().display()
                    ),
                );
                None
            }
        };
    }
    let file = raw.jwk_file.as_ref()?;
    let bytes = ck.read_file(file, "JWK")?;
    match VerificationKey::from_jwk_file(&bytes, algorithm) {
        Ok(key) => Some(pinned(key, format!("file {}", file.get_ref().display()))),
        Err(e) => {
            ck.err(
                file.span(),
                format!(
                    "cannot use {} as a {algorithm} JWK: {e}",
                    file.get_ref().display()
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_test_toml as parse;

    #[test]
    fn jwt_requires_issuer_audience_and_keys() {
        let e = parse("[upstream]\nurl = \"http://x:1\"\n[jwt]\nleeway = \"30s\"\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("issuer is required"), "{s}");
        assert!(s.contains("audience is required"), "{s}");
        assert!(s.contains("needs [[jwt.keys]]"), "{s}");
    }

    #[test]
    fn short_hmac_secrets_and_none_are_refused() {
        std::env::set_var("SG_TEST_SHORT_SECRET", "short");
        let e = parse(
            "[upstream]\nurl = \"http://x:1\"\n[jwt]\nissuer=\"i\"\naudience=\"a\"\n[[jwt.keys]]\nalgorithm=\"HS256\"\nsecret_env=\"SG_TEST_SHORT_SECRET\"\n[[jwt.keys]]\nalgorithm=\"none\"\nsecret_env=\"SG_TEST_SHORT_SECRET\"\n",
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("test.toml:8: HS256 secret is 5 bytes"), "{s}");
        assert!(
            s.contains("test.toml:10: unknown algorithm \"none\""),
            "{s}"
        );
    }

    #[test]
    fn leeway_is_bounded() {
        std::env::set_var("SG_TEST_SECRET_OK", "0123456789abcdef0123456789abcdef");
        let e = parse("[upstream]\nurl = \"http://x:1\"\n[jwt]\nissuer=\"i\"\naudience=\"a\"\nleeway=\"1h\"\n[[jwt.keys]]\nalgorithm=\"HS256\"\nsecret_env=\"SG_TEST_SECRET_OK\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("test.toml:6: [jwt] leeway must be at most 5m"),
            "{e}"
        );
    }

    #[test]
    fn jwks_algorithms_are_known_and_never_hmac() {
        let e = parse("[upstream]\nurl = \"http://x:1\"\n[jwt]\nissuer=\"i\"\naudience=\"a\"\njwks_url=\"https://idp.example.com/jwks\"\njwks_algorithms=[\"HS256\",\n\"nope\"]\n").unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("test.toml:7: HMAC algorithms cannot come from a JWKS"),
            "{s}"
        );
        assert!(s.contains("test.toml:8: unknown algorithm \"nope\""), "{s}");
    }
}
