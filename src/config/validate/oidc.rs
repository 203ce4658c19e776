//! `[oidc]`: browser sign-in. The issuer must be https (plain http only for a loopback provider, which
//! tests and the demo use), the client secret comes from the environment or a file (or there is none:
//! a public client, PKCE only), and the cookie keys are base64 32-byte AEAD keys, the first sealing and
//! all unsealing, so keys rotate without signing everyone out.

use std::time::Duration;

use base64::Engine;

use super::*;

pub(super) fn oidc_config(ck: &mut Checker, raw: Spanned<RawOidc>) -> Option<OidcConfig> {
    let span = raw.span();
    let raw = raw.into_inner();
    let issuer = raw.issuer.get_ref().clone();
    match issuer.parse::<http::Uri>() {
        Ok(u) if u.host().is_some() && u.query().is_none() => {
            let loopback = is_loopback_host(u.host().unwrap_or(""));
            match u.scheme_str() {
                Some("https") => {}
                Some("http") if loopback => {}
                _ => ck.err(
                    raw.issuer.span(),
                    format!("[oidc] issuer {issuer:?} must be an https URL (http only for a loopback provider)"),
                ),
            }
        }
        _ => ck.err(
            raw.issuer.span(),
            format!("[oidc] issuer {issuer:?} is not a URL"),
        ),
    }
    if raw.client_id.get_ref().is_empty() {
        ck.err(raw.client_id.span(), "[oidc] client_id must not be empty");
    }
    let client_secret = match (&raw.client_secret_env, &raw.client_secret_file) {
        (Some(_), Some(f)) => {
            ck.err(
                f.span(),
                "[oidc] give client_secret_env or client_secret_file, not both",
            );
            None
        }
        (Some(env), None) => ck.read_env(env, "the OIDC client secret"),
        (None, Some(file)) => ck.read_file(file, "the OIDC client secret file"),
        (None, None) => None,
    }
    .map(|b| String::from_utf8_lossy(&b).trim().to_string());
    let keys_text = match (&raw.cookie_keys_env, &raw.cookie_keys_file) {
        (Some(_), Some(f)) => {
            ck.err(
                f.span(),
                "[oidc] give cookie_keys_env or cookie_keys_file, not both",
            );
            None
        }
        (Some(env), None) => ck.read_env(env, "the session cookie keys"),
        (None, Some(file)) => ck.read_file(file, "the session cookie keys file"),
        (None, None) => {
            ck.err(
                span.clone(),
                "[oidc] needs cookie_keys_env or cookie_keys_file (base64 32-byte keys; `openssl rand -base64 32`)",
            );
            None
        }
    };
    let cookie_keys = match keys_text {
        Some(text) => match parse_cookie_keys(&String::from_utf8_lossy(&text)) {
            Ok(keys) => keys,
            Err(e) => {
                ck.err(span.clone(), format!("[oidc] cookie keys: {e}"));
                Vec::new()
            }
        },
        None => Vec::new(),
    };
    let scopes: Vec<String> = match raw.scopes {
        Some(list) => list.into_iter().map(|s| s.into_inner()).collect(),
        None => vec!["openid".into(), "email".into(), "profile".into()],
    };
    if !scopes.iter().any(|s| s == "openid") {
        ck.err(span.clone(), "[oidc] scopes must include \"openid\"");
    }
    if scopes.iter().any(|s| {
        s.is_empty()
            || !s
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    }) {
        ck.err(
            span.clone(),
            "[oidc] a scope is empty or has characters a scope cannot have (RFC 6749 §3.3)",
        );
    }
    let session_ttl = match raw.session_ttl {
        Some(t) if t.get_ref().0 < Duration::from_secs(60) => {
            ck.err(t.span(), "[oidc] session_ttl must be at least 1m");
            Duration::from_secs(60)
        }
        Some(t) => t.into_inner().0,
        None => Duration::from_secs(12 * 3600),
    };
    let login_ttl = match raw.login_ttl {
        Some(t) if t.get_ref().0 > Duration::from_secs(3600) || t.get_ref().0.is_zero() => {
            ck.err(t.span(), "[oidc] login_ttl must be between 1s and 1h");
            Duration::from_secs(600)
        }
        Some(t) => t.into_inner().0,
        None => Duration::from_secs(600),
    };
    let leeway = super::jwt::leeway(ck, raw.leeway, "oidc");
    let id_token_algorithms = super::jwt::published_key_algorithms(
        ck,
        raw.id_token_algorithms,
        "[oidc] HMAC ID tokens are not accepted (the keys come from the provider's JWKS)",
    );
    let post_logout_redirect = match raw.post_logout_redirect {
        Some(p) if !is_local_path(p.get_ref()) => {
            ck.err(
                p.span(),
                "[oidc] post_logout_redirect must be a path on scopegate's own origin (\"/…\")",
            );
            "/".to_string()
        }
        Some(p) => p.into_inner(),
        None => "/".to_string(),
    };
    Some(OidcConfig {
        issuer,
        client_id: raw.client_id.into_inner(),
        client_secret,
        scopes,
        subject_claim: raw.subject_claim.unwrap_or_else(|| "sub".into()),
        groups_claim: Some(raw.groups_claim.unwrap_or_else(|| "groups".into()))
            .filter(|g| !g.is_empty()),
        name_claim: Some(raw.name_claim.unwrap_or_else(|| "name".into())).filter(|g| !g.is_empty()),
        session_ttl,
        login_ttl,
        cookie_keys,
        id_token_algorithms,
        leeway,
        discovery_refresh: raw
            .discovery_refresh
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(600)),
        timeout: raw.timeout.map(|d| d.0).unwrap_or(Duration::from_secs(5)),
        post_logout_redirect,
    })
}

/// `a,b,c` of base64 (standard or URL-safe, padded or not), each exactly 32 bytes.
pub(crate) fn parse_cookie_keys(text: &str) -> Result<Vec<[u8; 32]>, String> {
    let mut keys = Vec::new();
    for (i, part) in text.split([',', '\n']).map(str::trim).enumerate() {
        if part.is_empty() {
            continue;
        }
        let cleaned = part.trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(cleaned)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cleaned))
            .map_err(|_| format!("key {} is not base64", i + 1))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("key {} is {} bytes; each must be 32", i + 1, b.len()))?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("no key given".into());
    }
    Ok(keys)
}

fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A path on our own origin: `/…`, never `//host` or `/\host` (which browsers read as another origin).
fn is_local_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && !p.starts_with("/\\")
        && !p.bytes().any(|b| b.is_ascii_control())
}

#[cfg(test)]
mod tests {
    use super::super::parse_test_toml as parse;
    use crate::config::JwtAlgorithm;

    const BASE: &str = "[upstream]\nurl = \"http://127.0.0.1:1\"\n";
    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    #[test]
    fn a_complete_section_validates_with_defaults() {
        std::env::set_var("SG_TEST_OIDC_KEYS_OK", format!("{KEY},{KEY}"));
        let c = parse(&format!(
            "{BASE}[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"sg\"\ncookie_keys_env = \"SG_TEST_OIDC_KEYS_OK\"\n"
        ))
        .unwrap();
        let o = c.oidc.unwrap();
        assert_eq!(o.cookie_keys.len(), 2);
        assert!(o.client_secret.is_none(), "no secret: a public client");
        assert_eq!(o.scopes, ["openid", "email", "profile"]);
        assert_eq!(o.subject_claim, "sub");
        assert_eq!(o.session_ttl.as_secs(), 12 * 3600);
        assert_eq!(o.leeway.as_secs(), 30);
        assert_eq!(
            o.id_token_algorithms,
            [
                JwtAlgorithm::RS256,
                JwtAlgorithm::PS256,
                JwtAlgorithm::ES256,
                JwtAlgorithm::ES384,
                JwtAlgorithm::EdDSA
            ]
        );
    }

    #[test]
    fn bad_sections_say_what_is_wrong_and_where() {
        std::env::set_var("SG_TEST_OIDC_KEYS_SHORT", "c2hvcnQ=");
        let cases = [
            ("issuer = \"http://idp.example.com\"\nclient_id = \"sg\"\ncookie_keys_env = \"SG_TEST_OIDC_KEYS_SHORT\"", "test.toml:4: [oidc] issuer"),
            ("issuer = \"https://idp.example.com\"\nclient_id = \"sg\"", "needs cookie_keys_env"),
            ("issuer = \"https://idp.example.com\"\nclient_id = \"sg\"\ncookie_keys_env = \"SG_TEST_OIDC_KEYS_SHORT\"", "key 1 is 5 bytes"),
            ("issuer = \"https://idp.example.com\"\nclient_id = \"sg\"\nscopes = [\"email\"]\ncookie_keys_env = \"SG_TEST_OIDC_KEYS_SHORT\"", "must include \"openid\""),
            ("issuer = \"https://idp.example.com\"\nclient_id = \"sg\"\npost_logout_redirect = \"//evil.example\"\ncookie_keys_env = \"SG_TEST_OIDC_KEYS_SHORT\"", "post_logout_redirect must be a path"),
            ("issuer = \"https://idp.example.com\"\nclient_id = \"sg\"\nid_token_algorithms = [\"HS256\"]\ncookie_keys_env = \"SG_TEST_OIDC_KEYS_SHORT\"", "HMAC ID tokens"),
            ("issuer = \"https://idp.example.com\"\nclient_id = \"sg\"\nid_token_algorithms = [\"RS256\", \"XS999\"]\ncookie_keys_env = \"SG_TEST_OIDC_KEYS_SHORT\"", "test.toml:6: unknown algorithm \"XS999\""),
            ("issuer = \"https://idp.example.com\"\nclient_id = \"sg\"\nleeway = \"1h\"\ncookie_keys_env = \"SG_TEST_OIDC_KEYS_SHORT\"", "test.toml:6: [oidc] leeway must be at most 5m"),
        ];
        for (section, want) in cases {
            let e = parse(&format!("{BASE}[oidc]\n{section}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{section}: {e}");
        }
    }

    #[test]
    fn http_issuers_are_only_for_loopback_providers() {
        std::env::set_var("SG_TEST_OIDC_KEYS_LO", KEY);
        let ok = parse(&format!(
            "{BASE}[oidc]\nissuer = \"http://127.0.0.1:4000\"\nclient_id = \"sg\"\ncookie_keys_env = \"SG_TEST_OIDC_KEYS_LO\"\n"
        ));
        assert!(ok.is_ok(), "{:?}", ok.err());
    }
}
