//! Verifying a scopegate assertion in a Rust upstream, with `jsonwebtoken` and `serde_json` only.
//!
//! ```sh
//! cargo run --example verify_assertion -- --jwks jwks.json --audience openclaw-gateway \
//!     --method POST --path /v1/responses "$ASSERTION"
//! ```
//!
//! The checks (RFC 8725): the key is chosen by `kid` and pinned to its published `alg` (the token's `alg`
//! must match it); `typ` must be `scopegate-assertion+jwt`; `iss`, `aud`, `exp` are validated by
//! `jsonwebtoken`; `htm`/`htp` must equal the request's method and exact path, so an assertion cannot be
//! replayed on another request. Copy `verify` into your service.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

pub const ASSERTION_TYP: &str = "scopegate-assertion+jwt";

/// What the upstream expects of an assertion.
pub struct Expect<'a> {
    pub audience: &'a str,
    pub issuer: &'a str,
    pub method: &'a str,
    /// The request path; any query string is ignored.
    pub path: &'a str,
}

/// Verifies `token` against the published JWKS and the request it arrived with; returns the claims.
pub fn verify(token: &str, jwks: &JwkSet, expect: &Expect<'_>) -> Result<Value, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("bad header: {e}"))?;
    if header.typ.as_deref() != Some(ASSERTION_TYP) {
        return Err(format!("typ is not {ASSERTION_TYP}"));
    }
    let kid = header.kid.as_deref().ok_or("no kid")?;
    let jwk = jwks
        .find(kid)
        .ok_or_else(|| format!("no published key has kid {kid}"))?;
    // The algorithm comes from the key, never from the token alone.
    let alg = match jwk.common.key_algorithm.map(|a| a.to_string()).as_deref() {
        Some("EdDSA") => Algorithm::EdDSA,
        Some("ES256") => Algorithm::ES256,
        other => return Err(format!("unsupported key algorithm {other:?}")),
    };
    if header.alg != alg {
        return Err(format!(
            "alg {:?} does not match the key's pinned {alg:?}",
            header.alg
        ));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(alg);
    validation.set_audience(&[expect.audience]);
    validation.set_issuer(&[expect.issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    validation.leeway = 5;
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|e| format!("invalid: {e}"))?;
    let claims = data.claims;
    if !claims["htm"]
        .as_str()
        .is_some_and(|m| m.eq_ignore_ascii_case(expect.method))
    {
        return Err(format!(
            "assertion is bound to another method (htm), not {}",
            expect.method
        ));
    }
    let path = expect.path.split('?').next().unwrap_or(expect.path);
    if claims["htp"].as_str() != Some(path) {
        return Err(format!(
            "assertion is bound to another path (htp), not {path}"
        ));
    }
    Ok(claims)
}

#[allow(dead_code)]
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str| args.windows(2).find(|w| w[0] == flag).map(|w| w[1].clone());
    let (Some(jwks_file), Some(audience), Some(token)) =
        (get("--jwks"), get("--audience"), args.last().cloned())
    else {
        eprintln!("usage: verify_assertion --jwks FILE --audience A [--method M] [--path P] TOKEN");
        std::process::exit(2);
    };
    let jwks: JwkSet = match std::fs::read(&jwks_file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(j) => j,
        Err(e) => {
            eprintln!("cannot read {jwks_file}: {e}");
            std::process::exit(2);
        }
    };
    let method = get("--method").unwrap_or_else(|| "GET".into());
    let path = get("--path").unwrap_or_else(|| "/".into());
    let expect = Expect {
        audience: &audience,
        issuer: "scopegate",
        method: &method,
        path: &path,
    };
    match verify(&token, &jwks, &expect) {
        Ok(claims) => println!(
            "{}",
            serde_json::to_string_pretty(&claims).unwrap_or_default()
        ),
        Err(e) => {
            eprintln!("invalid assertion: {e}");
            std::process::exit(1);
        }
    }
}
