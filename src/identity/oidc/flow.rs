//! The authorization code flow's two ends, as plain functions over plain data: starting a sign-in
//! (fresh `state`, `nonce` and PKCE verifier, and the authorization URL with the S256 challenge), and
//! checking what comes back to the callback before any code is redeemed — the `state` must belong to a
//! login-state cookie this browser holds, sealed by us, not expired, not used; RFC 9207's `iss` must
//! name our issuer; then, once the ID token's signature and registered claims hold, its `nonce` must be
//! ours and its `azp`, when there, our client (OpenID Connect Core §3.1.3.7; RFC 9700 §2.1, §4.4).

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use super::discovery::Metadata;
use super::error::OidcError;
use super::session::LoginState;
use crate::config::OidcConfig;

/// Characters left as they are in a query value (RFC 3986 unreserved).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn encode(v: &str) -> String {
    utf8_percent_encode(v, QUERY).to_string()
}

/// A 256-bit random value, base64url: states, nonces and PKCE verifiers (43 characters, RFC 7636 §4.1).
fn random_token() -> String {
    crate::util::b64url(&crate::util::random_bytes::<32>())
}

/// RFC 7636 §4.2: `BASE64URL(SHA256(verifier))`.
pub fn s256(verifier: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    crate::util::b64url(d.as_ref())
}

/// A new sign-in returning to `return_to` (already checked to be a local path).
pub fn start(return_to: &str, redirect_uri: String, now: u64, ttl: u64) -> LoginState {
    LoginState {
        state: random_token(),
        nonce: random_token(),
        verifier: random_token(),
        return_to: return_to.to_string(),
        redirect_uri,
        exp: now + ttl,
    }
}

/// The authorization request (RFC 6749 §4.1.1 with PKCE and the OIDC `nonce`).
pub fn authorization_url(meta: &Metadata, cfg: &OidcConfig, login: &LoginState) -> String {
    let sep = if meta.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    format!(
        "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}&code_challenge={}&code_challenge_method=S256",
        meta.authorization_endpoint,
        encode(&cfg.client_id),
        encode(&login.redirect_uri),
        encode(&cfg.scopes.join(" ")),
        encode(&login.state),
        encode(&login.nonce),
        s256(&login.verifier),
    )
}

/// Decodes a query string; a repeated parameter among `names` is an error, never "the first one".
pub fn query_params<'a>(
    query: Option<&str>,
    names: &[&'a str],
) -> Result<Vec<(&'a str, String)>, OidcError> {
    let mut out: Vec<(&'a str, String)> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k);
        let Some(name) = names.iter().find(|n| **n == key) else {
            continue;
        };
        if out.iter().any(|(n, _)| n == name) {
            return Err(OidcError::Duplicate(name.to_string()));
        }
        out.push((name, decode(v)));
    }
    Ok(out)
}

fn decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

pub fn param<'p>(params: &'p [(&str, String)], name: &str) -> Option<&'p str> {
    params
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

/// What the callback carried, checked against the sign-in it claims to finish (whose cookie the
/// caller found by `state` and unsealed: `None` when there was none). Returns the code to redeem.
pub fn check_callback(
    params: &[(&str, String)],
    login: Option<&LoginState>,
    meta: &Metadata,
    now: u64,
) -> Result<String, OidcError> {
    let state = param(params, "state").ok_or(OidcError::StateMissing)?;
    let login = login.ok_or(OidcError::LoginUnknown)?;
    if !constant_eq(login.state.as_bytes(), state.as_bytes()) {
        return Err(OidcError::LoginForged);
    }
    if now > login.exp {
        return Err(OidcError::LoginExpired);
    }
    // RFC 9207 §2.4: compare iss when present; when the provider promises it, require it.
    match param(params, "iss") {
        Some(iss) if iss != meta.issuer => {
            return Err(OidcError::IssuerMismatch {
                got: iss.chars().take(200).collect(),
            })
        }
        Some(_) => {}
        None if meta.iss_parameter_supported => return Err(OidcError::IssuerMissing),
        None => {}
    }
    if let Some(error) = param(params, "error") {
        return Err(OidcError::ProviderRefused {
            error: error
                .chars()
                .filter(|c| c.is_ascii_graphic() || *c == ' ')
                .take(100)
                .collect(),
        });
    }
    match param(params, "code") {
        Some(code) if !code.is_empty() => Ok(code.to_string()),
        _ => Err(OidcError::CodeMissing),
    }
}

/// The OIDC checks on an ID token whose signature, `iss`, `aud` and `exp` already hold.
pub fn check_id_token_claims(
    claims: &serde_json::Map<String, Value>,
    nonce: &str,
    client_id: &str,
) -> Result<(), OidcError> {
    match claims.get("nonce") {
        Some(Value::String(n)) if constant_eq(n.as_bytes(), nonce.as_bytes()) => {}
        _ => return Err(OidcError::NonceMismatch),
    }
    let several_audiences = matches!(claims.get("aud"), Some(Value::Array(a)) if a.len() > 1);
    match claims.get("azp") {
        Some(Value::String(azp)) if azp == client_id => Ok(()),
        Some(_) => Err(OidcError::AzpMismatch),
        None if several_audiences => Err(OidcError::AzpMismatch),
        None => Ok(()),
    }
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(iss_supported: bool) -> Metadata {
        Metadata {
            issuer: "https://idp.example.com".into(),
            authorization_endpoint: "https://idp.example.com/auth".into(),
            token_endpoint: "https://idp.example.com/token".into(),
            jwks_uri: "https://idp.example.com/jwks".into(),
            end_session_endpoint: None,
            iss_parameter_supported: iss_supported,
            secret_in_body: false,
        }
    }

    fn params(q: &str) -> Vec<(&'static str, String)> {
        query_params(Some(q), &["code", "state", "iss", "error"]).unwrap()
    }

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_authorization_url_carries_state_nonce_and_the_challenge() {
        let login = start("/chat", "https://gw/.scopegate/callback".into(), 100, 600);
        assert_ne!(login.state, login.nonce);
        assert_eq!(login.verifier.len(), 43);
        let url = authorization_url(&meta(true), &test_cfg(), &login);
        assert!(url.starts_with("https://idp.example.com/auth?response_type=code&client_id=sg&"));
        assert!(url.contains("redirect_uri=https%3A%2F%2Fgw%2F.scopegate%2Fcallback"));
        assert!(url.contains(&format!("code_challenge={}", s256(&login.verifier))));
        assert!(url.contains("code_challenge_method=S256"));
        assert!(url.contains("scope=openid%20email"));
        assert!(!url.contains(&login.verifier), "the verifier never leaves");
    }

    fn test_cfg() -> OidcConfig {
        OidcConfig {
            issuer: "https://idp.example.com".into(),
            client_id: "sg".into(),
            client_secret: None,
            scopes: vec!["openid".into(), "email".into()],
            subject_claim: "sub".into(),
            groups_claim: None,
            name_claim: None,
            session_ttl: std::time::Duration::from_secs(3600),
            login_ttl: std::time::Duration::from_secs(600),
            cookie_keys: vec![[7; 32]],
            id_token_algorithms: vec![],
            leeway: std::time::Duration::from_secs(30),
            discovery_refresh: std::time::Duration::from_secs(600),
            timeout: std::time::Duration::from_secs(5),
            post_logout_redirect: "/".into(),
        }
    }

    #[test]
    fn callbacks_that_do_not_finish_our_sign_in_are_refused() {
        let login = start("/", "https://gw/.scopegate/callback".into(), 100, 600);
        let ok = format!(
            "code=c1&state={}&iss=https%3A%2F%2Fidp.example.com",
            login.state
        );
        assert_eq!(
            check_callback(&params(&ok), Some(&login), &meta(true), 200).unwrap(),
            "c1"
        );
        let cases = [
            ("code=c1".to_string(), Some(&login), 200, "state_missing"),
            (ok.clone(), None, 200, "login_unknown"),
            (
                "code=c1&state=other&iss=https%3A%2F%2Fidp.example.com".to_string(),
                Some(&login),
                200,
                "login_forged",
            ),
            (ok.clone(), Some(&login), 701, "login_expired"),
            (
                format!("code=c1&state={}", login.state),
                Some(&login),
                200,
                "iss_missing",
            ),
            (
                format!(
                    "code=c1&state={}&iss=https%3A%2F%2Fevil.example",
                    login.state
                ),
                Some(&login),
                200,
                "iss_mismatch",
            ),
            (
                format!("state={}&iss=https%3A%2F%2Fidp.example.com", login.state),
                Some(&login),
                200,
                "code_missing",
            ),
            (
                format!(
                    "error=access_denied&state={}&iss=https%3A%2F%2Fidp.example.com",
                    login.state
                ),
                Some(&login),
                200,
                "provider_refused",
            ),
        ];
        for (q, l, now, want) in cases {
            let got = check_callback(&params(&q), l, &meta(true), now).unwrap_err();
            assert_eq!(got.code(), want, "{q}");
        }
        // A provider that does not promise iss may omit it.
        let no_iss = format!("code=c1&state={}", login.state);
        assert!(check_callback(&params(&no_iss), Some(&login), &meta(false), 200).is_ok());
        assert_eq!(
            query_params(Some("state=a&state=b"), &["state"])
                .unwrap_err()
                .code(),
            "duplicate_parameter"
        );
    }

    #[test]
    fn id_token_nonce_and_azp_must_be_ours() {
        let claims = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert!(check_id_token_claims(
            &claims(serde_json::json!({"nonce":"n1","aud":"sg"})),
            "n1",
            "sg"
        )
        .is_ok());
        let bad = [
            (
                serde_json::json!({"nonce":"n2","aud":"sg"}),
                "nonce_mismatch",
            ),
            (serde_json::json!({"aud":"sg"}), "nonce_mismatch"),
            (
                serde_json::json!({"nonce":"n1","aud":"sg","azp":"other"}),
                "azp_mismatch",
            ),
            (
                serde_json::json!({"nonce":"n1","aud":["sg","other"]}),
                "azp_mismatch",
            ),
        ];
        for (c, want) in bad {
            assert_eq!(
                check_id_token_claims(&claims(c.clone()), "n1", "sg")
                    .unwrap_err()
                    .code(),
                want,
                "{c}"
            );
        }
    }
}
