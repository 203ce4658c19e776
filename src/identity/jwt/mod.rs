//! Bearer JWTs, verified per RFC 8725.
//!
//! The algorithm is never taken from the token: each key is pinned to one algorithm, and a token's `alg`
//! must equal its key's (so `none` and RS→HS confusion cannot happen). `kid` only selects among keys
//! scopegate already holds; `jku`, `x5u` and embedded `jwk` are ignored. `iss`, `aud` and `exp` are
//! required, `nbf` and `iat` checked, all with a bounded leeway, and a mistyped numeric claim is an
//! error rather than "absent" (the CVE-2026-25537 class). A token typed as scopegate's own assertion is
//! refused, so the two kinds can never stand in for each other (RFC 8725 §3.11).
//!
//! The compact form is pre-parsed here so every refusal can say precisely what was wrong;
//! `jsonwebtoken` (aws-lc backend) checks the signature. Verified tokens are cached by their exact text
//! until `exp`, so a repeated token costs one hash lookup.
//!
//! This file is the verifier itself — [`JwtVerifier`], its cache of verified tokens, and the order of
//! the steps in [`JwtVerifier::verify`] and [`JwtVerifier::cached`]. Each step lives in its own file:
//! `compact` (the pre-parser), `signature` (which key, and does the signature hold), `claims` (the
//! registered-claim rules and the subject, scope and group claims), `error` (every refusal).

mod claims;
mod compact;
mod error;
mod signature;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};

use crate::config::JwtConfig;
use crate::error::Reason;
use crate::identity::jwks::{JwksCache, KeyEntry};
use crate::identity::{AuthMethod, Identity};

use claims::{check_claims, ClaimRules};
pub(crate) use compact::{looks_like_jwt, ASSERTION_TYP};
pub use compact::{parse_compact, Compact};
pub use error::JwtError;

/// A verified token, cached until it expires.
struct CachedToken {
    identity: Arc<Identity>,
    exp: u64,
    nbf: Option<u64>,
    /// The JWKS generation it was verified under: a key-set change (rotation, revocation) retires it.
    jwks_generation: u64,
}

/// A token whose signature and registered claims hold, with its whole claims object: what an OpenID
/// Connect ID token check needs on top (`nonce`, `azp`). Never cached: each ID token is seen once.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub claims: Map<String, Value>,
    pub subject: String,
    pub groups: Vec<String>,
    pub name: Option<String>,
    pub exp: u64,
    /// How it was verified (key, issuer), for reasons.
    pub note: Reason,
}

/// Verifies bearer JWTs against static keys and a JWKS, with a cache of verified tokens.
pub struct JwtVerifier {
    rules: ClaimRules,
    max_token_bytes: usize,
    static_keys: Vec<KeyEntry>,
    jwks: Option<Arc<JwksCache>>,
    cache: Option<quick_cache::sync::Cache<Box<str>, Arc<CachedToken>>>,
    /// At most this many keys are tried for a token without `kid` (bounds the work a forged token causes).
    max_candidates: usize,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

impl JwtVerifier {
    pub fn new(cfg: &JwtConfig, jwks: Option<Arc<JwksCache>>) -> JwtVerifier {
        JwtVerifier {
            rules: ClaimRules::from_config(cfg),
            max_token_bytes: cfg.max_token_bytes,
            static_keys: cfg
                .keys
                .iter()
                .map(|k| KeyEntry {
                    kid: k.kid.clone(),
                    alg: k.algorithm,
                    key: k.key.clone(),
                    origin: k.origin.clone(),
                })
                .collect(),
            jwks,
            cache: (cfg.cache_size > 0).then(|| crate::util::bounded_cache(cfg.cache_size)),
            max_candidates: 8,
        }
    }

    pub fn jwks(&self) -> Option<&Arc<JwksCache>> {
        self.jwks.as_ref()
    }

    pub fn issuer(&self) -> &str {
        &self.rules.issuer
    }

    /// Drops every cached token (a key set changed).
    pub fn clear_cache(&self) {
        if let Some(c) = &self.cache {
            c.clear();
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Arc<Identity>, JwtError> {
        self.verify_at(token, unix_now()).await
    }

    /// A token verified earlier and still cached: its identity, or why it no longer holds. `None` on a
    /// miss (verify it with [`JwtVerifier::verify`]). Synchronous, so the hot path never awaits.
    pub fn cached(&self, token: &str, now: u64) -> Option<Result<Arc<Identity>, JwtError>> {
        let cache = self.cache.as_ref()?;
        let current_gen = self.jwks.as_ref().map(|j| j.generation()).unwrap_or(0);
        // A miss is counted where the token is then verified (`verify_at`), so never twice.
        let hit = cache
            .get(token)
            .filter(|h| h.jwks_generation == current_gen)?;
        crate::metrics::token_cache(true);
        let leeway = self.rules.leeway;
        if now > hit.exp.saturating_add(leeway) {
            cache.remove(token);
            return Some(Err(JwtError::Expired {
                ago: now - hit.exp,
                leeway,
            }));
        }
        if let Some(nbf) = hit.nbf {
            if now.saturating_add(leeway) < nbf {
                return Some(Err(JwtError::NotYetValid {
                    r#in: nbf - now,
                    leeway,
                }));
            }
        }
        Some(Ok(hit.identity.clone()))
    }

    /// The RFC 8725 rules of [`JwtVerifier::verify`] — pinned algorithm, signature, `iss`, `aud`,
    /// `exp`, `nbf`, `iat` — returning the claims rather than an identity (OpenID Connect ID tokens).
    pub async fn verify_token_at(&self, token: &str, now: u64) -> Result<VerifiedToken, JwtError> {
        let compact = parse_compact(token, self.max_token_bytes)?;
        let key = self.verify_signature(&compact).await?;
        let payload = URL_SAFE_NO_PAD
            .decode(compact.payload_b64)
            .map_err(|_| JwtError::Malformed("payload is not valid base64url"))?;
        let claims: Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| JwtError::Malformed("payload is not a JSON object"))?;
        let verified = check_claims(&claims, &self.rules, now)?;
        Ok(VerifiedToken {
            subject: verified.subject,
            groups: verified.groups,
            name: verified.name,
            exp: verified.exp,
            note: Reason::new(
                "id_token_verified",
                format!(
                    "ID token from issuer {} verified with {} key{} ({})",
                    self.rules.issuer,
                    key.alg,
                    key.kid
                        .as_deref()
                        .map(|k| format!(" kid={k}"))
                        .unwrap_or_default(),
                    key.origin
                ),
            ),
            claims,
        })
    }

    pub async fn verify_at(&self, token: &str, now: u64) -> Result<Arc<Identity>, JwtError> {
        if let Some(hit) = self.cached(token, now) {
            return hit;
        }
        if self.cache.is_some() {
            crate::metrics::token_cache(false);
        }
        let compact = parse_compact(token, self.max_token_bytes)?;
        let jwks_generation = self.jwks.as_ref().map(|j| j.generation()).unwrap_or(0);
        let key = self.verify_signature(&compact).await?;
        let payload = URL_SAFE_NO_PAD
            .decode(compact.payload_b64)
            .map_err(|_| JwtError::Malformed("payload is not valid base64url"))?;
        let claims: Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| JwtError::Malformed("payload is not a JSON object"))?;
        let verified = check_claims(&claims, &self.rules, now)?;
        let mut identity = Identity::new(
            &verified.subject,
            AuthMethod::Jwt,
            verified.groups.clone(),
            verified.scopes.iter().map(String::as_str),
        );
        identity.display_name = verified.name.clone();
        identity.expires_at = Some(verified.exp);
        identity.notes.push(Reason::new(
            "jwt_verified",
            format!(
                "jwt from issuer {} verified with {} key{} ({})",
                self.rules.issuer,
                key.alg,
                key.kid
                    .as_deref()
                    .map(|k| format!(" kid={k}"))
                    .unwrap_or_default(),
                key.origin
            ),
        ));
        let identity = Arc::new(identity);
        if let Some(cache) = &self.cache {
            cache.insert(
                token.into(),
                Arc::new(CachedToken {
                    identity: identity.clone(),
                    exp: verified.exp,
                    nbf: verified.nbf,
                    jwks_generation,
                }),
            );
        }
        Ok(identity)
    }
}
