//! Minting test JWTs with a local key (`scopegate token`, the demo, tests). Not an identity provider:
//! it signs whatever it is told, for development and CI.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

use crate::config::JwtAlgorithm;

/// What to put in a test token.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub issuer: String,
    pub audience: String,
    pub subject: String,
    pub scopes: Vec<String>,
    pub groups: Vec<String>,
    pub ttl: Duration,
    pub kid: Option<String>,
    /// Extra claims merged last.
    pub extra: serde_json::Map<String, Value>,
}

/// An encoding key from PEM (PKCS#8 for EC/Ed, PKCS#1 or PKCS#8 for RSA) or a raw HMAC secret.
pub fn encoding_key(alg: JwtAlgorithm, material: &[u8]) -> Result<EncodingKey, String> {
    let r = match alg {
        JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512 => {
            return Ok(EncodingKey::from_secret(material))
        }
        JwtAlgorithm::RS256
        | JwtAlgorithm::RS384
        | JwtAlgorithm::RS512
        | JwtAlgorithm::PS256
        | JwtAlgorithm::PS384
        | JwtAlgorithm::PS512 => EncodingKey::from_rsa_pem(material),
        JwtAlgorithm::ES256 | JwtAlgorithm::ES384 => EncodingKey::from_ec_pem(material),
        JwtAlgorithm::EdDSA => EncodingKey::from_ed_pem(material),
    };
    r.map_err(|e| format!("cannot use the key for {alg}: {e}"))
}

pub fn mint(alg: JwtAlgorithm, key: &EncodingKey, spec: &TokenSpec) -> Result<String, String> {
    let now = crate::identity::jwt::unix_now();
    let mut claims = json!({
        "iss": spec.issuer,
        "aud": spec.audience,
        "sub": spec.subject,
        "iat": now,
        "nbf": now,
        "exp": now + spec.ttl.as_secs(),
        "jti": crate::util::b64url(&crate::util::random_bytes::<12>()),
    });
    if !spec.scopes.is_empty() {
        claims["scope"] = spec.scopes.join(" ").into();
    }
    if !spec.groups.is_empty() {
        claims["groups"] = spec.groups.clone().into();
    }
    if let Some(obj) = claims.as_object_mut() {
        for (k, v) in &spec.extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    let mut header = Header::new(alg.to_jsonwebtoken());
    header.kid = spec.kid.clone();
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(&header, &claims, key).map_err(|e| format!("cannot sign: {e}"))
}
