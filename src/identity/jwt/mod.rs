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

use std::sync::atomic::{AtomicU64, Ordering};
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

/// A cache hit a connection may keep (see [`JwtVerifier::cached_hit`]): the verified token and the
/// cache's clear count when it was found.
#[derive(Clone)]
pub struct CacheHit {
    token: Arc<CachedToken>,
    cleared: u64,
}

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
    /// How often the cache was cleared: a remembered hit from before a clear no longer counts.
    cleared: AtomicU64,
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
            cleared: AtomicU64::new(0),
            max_candidates: 8,
        }
    }

    pub fn jwks(&self) -> Option<&Arc<JwksCache>> {
        self.jwks.as_ref()
    }

    pub fn issuer(&self) -> &str {
        &self.rules.issuer
    }

    /// Drops every cached token (a key set changed). Hits that connections remember are retired too.
    pub fn clear_cache(&self) {
        if let Some(c) = &self.cache {
            self.cleared.fetch_add(1, Ordering::AcqRel);
            c.clear();
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Arc<Identity>, JwtError> {
        self.verify_at(token, unix_now()).await
    }

    /// A token verified earlier and still cached: its identity, or why it no longer holds. `None` on a
    /// miss (verify it with [`JwtVerifier::verify`]). Synchronous, so the hot path never awaits.
    pub fn cached(&self, token: &str, now: u64) -> Option<Result<Arc<Identity>, JwtError>> {
        self.cached_hit(token, now).map(|(judged, _)| judged)
    }

    /// [`JwtVerifier::cached`], with the hit itself: what a connection may remember, so that its next
    /// request with the same token is judged by [`JwtVerifier::rejudge`] without a cache lookup.
    pub fn cached_hit(
        &self,
        token: &str,
        now: u64,
    ) -> Option<(Result<Arc<Identity>, JwtError>, CacheHit)> {
        let cache = self.cache.as_ref()?;
        // A miss is counted where the token is then verified (`verify_at`), so never twice.
        let hit = CacheHit {
            token: cache.get(token)?,
            cleared: self.cleared.load(Ordering::Acquire),
        };
        let judged = self.judge(&hit, now)?;
        if matches!(judged, Err(JwtError::Expired { .. })) {
            cache.remove(token);
        }
        Some((judged, hit))
    }

    /// Judges a remembered hit exactly as a cache lookup would judge it now: `None` once the key set
    /// changed or the cache was cleared (verify the token again), otherwise its identity or why its
    /// time ran out. Counted as a cache hit.
    pub fn rejudge(&self, hit: &CacheHit, now: u64) -> Option<Result<Arc<Identity>, JwtError>> {
        self.judge(hit, now)
    }

    fn judge(&self, hit: &CacheHit, now: u64) -> Option<Result<Arc<Identity>, JwtError>> {
        let current_gen = self.jwks.as_ref().map(|j| j.generation()).unwrap_or(0);
        if hit.token.jwks_generation != current_gen
            || hit.cleared != self.cleared.load(Ordering::Acquire)
        {
            return None;
        }
        crate::metrics::token_cache(true);
        let (token, leeway) = (&hit.token, self.rules.leeway);
        if now > token.exp.saturating_add(leeway) {
            return Some(Err(JwtError::Expired {
                ago: now - token.exp,
                leeway,
            }));
        }
        if let Some(nbf) = token.nbf {
            if now.saturating_add(leeway) < nbf {
                return Some(Err(JwtError::NotYetValid {
                    r#in: nbf - now,
                    leeway,
                }));
            }
        }
        Some(Ok(token.identity.clone()))
    }

    /// The steps every token goes through: compact form, signature, payload, registered claims.
    async fn checked(
        &self,
        token: &str,
        now: u64,
    ) -> Result<(KeyEntry, Map<String, Value>, claims::VerifiedClaims), JwtError> {
        let compact = parse_compact(token, self.max_token_bytes)?;
        let key = self.verify_signature(&compact).await?;
        let payload = URL_SAFE_NO_PAD
            .decode(compact.payload_b64)
            .map_err(|_| JwtError::Malformed("payload is not valid base64url"))?;
        let claims: Map<String, Value> = serde_json::from_slice(&payload)
            .map_err(|_| JwtError::Malformed("payload is not a JSON object"))?;
        let verified = check_claims(&claims, &self.rules, now)?;
        Ok((key, claims, verified))
    }

    /// "from issuer … verified with ES256 key kid=… (origin)", for the reason a verification leaves.
    fn verified_with(&self, key: &KeyEntry) -> String {
        format!(
            "from issuer {} verified with {} key{} ({})",
            self.rules.issuer,
            key.alg,
            key.kid
                .as_deref()
                .map(|k| format!(" kid={k}"))
                .unwrap_or_default(),
            key.origin
        )
    }

    /// The RFC 8725 rules of [`JwtVerifier::verify`] — pinned algorithm, signature, `iss`, `aud`,
    /// `exp`, `nbf`, `iat` — returning the claims rather than an identity (OpenID Connect ID tokens).
    pub async fn verify_token_at(&self, token: &str, now: u64) -> Result<VerifiedToken, JwtError> {
        let (key, claims, verified) = self.checked(token, now).await?;
        Ok(VerifiedToken {
            subject: verified.subject,
            groups: verified.groups,
            name: verified.name,
            exp: verified.exp,
            note: Reason::new(
                "id_token_verified",
                format!("ID token {}", self.verified_with(&key)),
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
        // Read before the signature check: a key-set change while it runs retires the entry.
        let jwks_generation = self.jwks.as_ref().map(|j| j.generation()).unwrap_or(0);
        let (key, _, verified) = self.checked(token, now).await?;
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
            format!("jwt {}", self.verified_with(&key)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, JwtAlgorithm};
    use crate::tokens::{encoding_key, mint, TokenSpec};

    /// A verifier trusting the RS256 test key (static, nothing fetched), and a token it signed.
    fn verifier_and_token() -> (JwtVerifier, String) {
        let dir = env!("CARGO_MANIFEST_DIR");
        let toml = format!(
            "[upstream]\nurl = \"http://127.0.0.1:9\"\n[jwt]\nissuer = \"https://idp.test\"\naudience = \"gw\"\nleeway = \"10s\"\n[[jwt.keys]]\nkid = \"k1\"\nalgorithm = \"RS256\"\npublic_key_file = \"{dir}/tests/fixtures/rsa-public.pem\"\n"
        );
        let cfg = Config::parse(&toml, None).unwrap_or_else(|e| panic!("{e}"));
        let verifier = JwtVerifier::new(cfg.jwt.as_ref().unwrap(), None);
        let pem = std::fs::read(format!("{dir}/tests/fixtures/rsa-private.pem")).unwrap();
        let key = encoding_key(JwtAlgorithm::RS256, &pem).unwrap();
        let spec = TokenSpec {
            issuer: "https://idp.test".into(),
            audience: "gw".into(),
            subject: "ada".into(),
            scopes: vec!["operator.read".into()],
            groups: Vec::new(),
            ttl: Duration::from_secs(60),
            kid: Some("k1".into()),
            extra: Default::default(),
        };
        (verifier, mint(JwtAlgorithm::RS256, &key, &spec).unwrap())
    }

    #[tokio::test]
    async fn a_remembered_hit_is_judged_again_as_a_cache_lookup_would_be() {
        let (v, token) = verifier_and_token();
        let now = unix_now();
        assert!(v.cached_hit(&token, now).is_none(), "nothing is cached yet");
        v.verify_at(&token, now).await.unwrap();
        let (judged, hit) = v.cached_hit(&token, now).unwrap();
        assert_eq!(judged.unwrap().subject, "ada");
        assert_eq!(v.rejudge(&hit, now).unwrap().unwrap().subject, "ada");
        // Past `exp` and the leeway, the remembered hit is expired, like the cached token.
        assert!(matches!(
            v.rejudge(&hit, now + 60 + 11),
            Some(Err(JwtError::Expired { .. }))
        ));
        assert!(matches!(
            v.cached(&token, now + 60 + 11),
            Some(Err(JwtError::Expired { .. }))
        ));
        // Clearing the cache retires what connections remember: the token is verified again.
        v.verify_at(&token, now).await.unwrap();
        let (_, hit) = v.cached_hit(&token, now).unwrap();
        v.clear_cache();
        assert!(v.rejudge(&hit, now).is_none());
        assert!(v.cached_hit(&token, now).is_none());
    }
}
