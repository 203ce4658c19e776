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

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{JwtAlgorithm, JwtConfig};
use crate::error::{Reason, Refusal, RefusalKind};
use crate::identity::jwks::{JwksCache, KeyEntry};
use crate::identity::{AuthMethod, Identity};
use crate::policy::Policy;

/// The `typ` of scopegate's own assertion; never accepted as a user token.
pub const ASSERTION_TYP: &str = "scopegate-assertion+jwt";

/// Everything that can be wrong with a bearer JWT, each with a stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    TooLarge {
        len: usize,
        max: usize,
    },
    Malformed(&'static str),
    AlgNone,
    AlgUnsupported,
    AlgMismatch {
        token: JwtAlgorithm,
        key: JwtAlgorithm,
    },
    NoKeyForAlg(JwtAlgorithm),
    TypRejected,
    CritUnsupported,
    KidUnknown,
    KidInvalid,
    SignatureInvalid,
    KeysUnavailable,
    ClaimMissing(&'static str),
    ClaimType(&'static str),
    IssuerMismatch {
        expected: String,
    },
    AudienceMismatch {
        expected: Vec<String>,
    },
    Expired {
        ago: u64,
        leeway: u64,
    },
    NotYetValid {
        r#in: u64,
        leeway: u64,
    },
    IssuedInFuture {
        r#in: u64,
        leeway: u64,
    },
    SubjectMissing(String),
}

impl JwtError {
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::TooLarge { .. } => "token_too_large",
            JwtError::Malformed(_) => "token_malformed",
            JwtError::AlgNone => "alg_none",
            JwtError::AlgUnsupported => "alg_unsupported",
            JwtError::AlgMismatch { .. } => "alg_mismatch",
            JwtError::NoKeyForAlg(_) => "no_key_for_alg",
            JwtError::TypRejected => "typ_rejected",
            JwtError::CritUnsupported => "crit_unsupported",
            JwtError::KidUnknown => "kid_unknown",
            JwtError::KidInvalid => "kid_invalid",
            JwtError::SignatureInvalid => "signature_invalid",
            JwtError::KeysUnavailable => "jwks_unavailable",
            JwtError::ClaimMissing(_) => "claim_missing",
            JwtError::ClaimType(_) => "claim_type",
            JwtError::IssuerMismatch { .. } => "issuer_mismatch",
            JwtError::AudienceMismatch { .. } => "audience_mismatch",
            JwtError::Expired { .. } => "token_expired",
            JwtError::NotYetValid { .. } => "token_not_yet_valid",
            JwtError::IssuedInFuture { .. } => "token_issued_in_future",
            JwtError::SubjectMissing(_) => "subject_missing",
        }
    }

    pub fn message(&self) -> String {
        match self {
            JwtError::TooLarge { len, max } => format!("token is {len} bytes; the limit is {max}"),
            JwtError::Malformed(what) => format!("malformed JWT: {what}"),
            JwtError::AlgNone => "alg \"none\" is never accepted".into(),
            JwtError::AlgUnsupported => {
                "the token's alg is not a supported signature algorithm".into()
            }
            JwtError::AlgMismatch { token, key } => {
                format!("the token says alg {token} but its key is pinned to {key}")
            }
            JwtError::NoKeyForAlg(a) => format!("no configured key uses {a}"),
            JwtError::TypRejected => {
                "a scopegate assertion is not a user credential (typ scopegate-assertion+jwt)"
                    .into()
            }
            JwtError::CritUnsupported => {
                "the token has critical header parameters (crit) that are not understood".into()
            }
            JwtError::KidUnknown => "unknown kid: no configured or published key has it".into(),
            JwtError::KidInvalid => "kid is not a short string".into(),
            JwtError::SignatureInvalid => "signature verification failed".into(),
            JwtError::KeysUnavailable => {
                "the identity provider's keys (JWKS) are not available yet".into()
            }
            JwtError::ClaimMissing(c) => format!("required claim {c} is missing"),
            JwtError::ClaimType(c) => format!("claim {c} has the wrong type"),
            JwtError::IssuerMismatch { expected } => {
                format!("wrong issuer: expected {expected:?}")
            }
            JwtError::AudienceMismatch { expected } => {
                format!("wrong audience: expected one of {expected:?}")
            }
            JwtError::Expired { ago, leeway } => {
                format!("token expired {ago} s ago (leeway {leeway} s)")
            }
            JwtError::NotYetValid { r#in, leeway } => {
                format!(
                    "token is not valid for another {in} s (nbf, leeway {leeway} s)",
                    r#in = r#in
                )
            }
            JwtError::IssuedInFuture { r#in, leeway } => {
                format!(
                    "token is issued {in} s in the future (iat, leeway {leeway} s)",
                    r#in = r#in
                )
            }
            JwtError::SubjectMissing(claim) => {
                format!("claim {claim} (the subject) is missing or empty")
            }
        }
    }

    /// 401 with `WWW-Authenticate: Bearer error="invalid_token"`, or 503 when the keys are missing.
    pub fn refusal(&self) -> Refusal {
        if *self == JwtError::KeysUnavailable {
            return Refusal::new(RefusalKind::ServiceUnavailable, self.code(), self.message());
        }
        Refusal::unauthorized(self.code(), self.message())
    }
}

/// The protected header fields scopegate looks at. Duplicate names are a parse error.
#[derive(Debug, Deserialize)]
pub struct JoseHeader {
    pub alg: Value,
    #[serde(default)]
    pub kid: Option<Value>,
    #[serde(default)]
    pub typ: Option<Value>,
    #[serde(default)]
    pub crit: Option<Value>,
}

/// A pre-parsed compact JWS.
#[derive(Debug)]
pub struct Compact<'a> {
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    pub payload_b64: &'a str,
    pub signature_b64: &'a str,
    pub alg: JwtAlgorithm,
    pub kid: Option<String>,
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Quick shape test used to tell a JWT from an opaque API token.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => {
            !h.is_empty() && !p.is_empty() && is_b64url(h) && is_b64url(p) && is_b64url(s)
        }
        _ => false,
    }
}

/// Splits and checks a compact JWS without verifying it: segment shape, header JSON, `alg`, `typ`,
/// `crit`, `kid`. This is the first line of defence and a fuzz target.
pub fn parse_compact(token: &str, max_len: usize) -> Result<Compact<'_>, JwtError> {
    if token.len() > max_len {
        return Err(JwtError::TooLarge {
            len: token.len(),
            max: max_len,
        });
    }
    let mut parts = token.splitn(4, '.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(JwtError::Malformed("expected three dot-separated segments"));
    };
    if parts.next().is_some() {
        return Err(JwtError::Malformed(
            "expected three dot-separated segments (JWE is not accepted)",
        ));
    }
    if h.is_empty() || p.is_empty() {
        return Err(JwtError::Malformed("empty header or payload segment"));
    }
    if !is_b64url(h) || !is_b64url(p) || !is_b64url(s) {
        return Err(JwtError::Malformed("segments must be unpadded base64url"));
    }
    let header_json = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| JwtError::Malformed("header is not valid base64url"))?;
    let header: JoseHeader = serde_json::from_slice(&header_json).map_err(|_| {
        JwtError::Malformed("header is not a JSON object with an alg (or has duplicate names)")
    })?;
    let alg = match &header.alg {
        Value::String(a) if a.eq_ignore_ascii_case("none") => return Err(JwtError::AlgNone),
        Value::String(a) => JwtAlgorithm::from_name(a).ok_or(JwtError::AlgUnsupported)?,
        _ => return Err(JwtError::Malformed("alg is not a string")),
    };
    if s.is_empty() {
        return Err(JwtError::Malformed("signature segment is empty"));
    }
    if header.crit.is_some() {
        return Err(JwtError::CritUnsupported);
    }
    if let Some(typ) = &header.typ {
        let Value::String(t) = typ else {
            return Err(JwtError::Malformed("typ is not a string"));
        };
        let t = t.to_ascii_lowercase();
        if t == ASSERTION_TYP || t == format!("application/{ASSERTION_TYP}") {
            return Err(JwtError::TypRejected);
        }
    }
    let kid = match header.kid {
        None => None,
        Some(Value::String(k))
            if !k.is_empty() && k.len() <= 256 && !k.chars().any(char::is_control) =>
        {
            Some(k)
        }
        Some(_) => return Err(JwtError::KidInvalid),
    };
    Ok(Compact {
        signing_input: &token[..h.len() + 1 + p.len()],
        payload_b64: p,
        signature_b64: s,
        alg,
        kid,
    })
}

/// The claims scopegate uses, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClaims {
    pub subject: String,
    pub scopes: Vec<String>,
    pub groups: Vec<String>,
    pub exp: u64,
    pub nbf: Option<u64>,
    pub name: Option<String>,
}

/// What claim validation needs from the config.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    pub issuer: String,
    pub audience: Vec<String>,
    pub leeway: u64,
    pub scope_claims: Vec<String>,
    pub groups_claim: Option<String>,
    pub subject_claim: String,
}

impl ClaimRules {
    pub fn from_config(c: &JwtConfig) -> ClaimRules {
        ClaimRules {
            issuer: c.issuer.clone(),
            audience: c.audience.clone(),
            leeway: c.leeway.as_secs(),
            scope_claims: c.scope_claims.clone(),
            groups_claim: c.groups_claim.clone(),
            subject_claim: c.subject_claim.clone(),
        }
    }
}

/// A NumericDate: a JSON number, never a string (CVE-2026-25537 treated `"exp": "123"` as absent).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else if let Some(f) = n.as_f64() {
                if f.is_finite() && f >= 0.0 {
                    Ok(Some(f.floor() as u64))
                } else {
                    Err(JwtError::ClaimType(name))
                }
            } else {
                Err(JwtError::ClaimType(name))
            }
        }
        Some(_) => Err(JwtError::ClaimType(name)),
    }
}

/// A string-or-list claim: `"a b c"` (space-delimited, RFC 8693 `scope`) or `["a", "b"]`.
fn string_list(v: &Value, split_spaces: bool) -> Option<Vec<String>> {
    match v {
        Value::String(s) if split_spaces => {
            Some(s.split_whitespace().map(str::to_string).collect())
        }
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect(),
        _ => None,
    }
}

/// Looks up a dotted claim path (`realm_access.roles`), falling back to a literal key with dots.
pub fn claim_path<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut cur: Option<&Value> = None;
    for (i, part) in path.split('.').enumerate() {
        cur = if i == 0 {
            claims.get(part)
        } else {
            cur?.as_object()?.get(part)
        };
    }
    cur
}

/// Validates registered claims and extracts subject, scopes and groups.
pub fn check_claims(
    claims: &Map<String, Value>,
    rules: &ClaimRules,
    now: u64,
) -> Result<VerifiedClaims, JwtError> {
    let leeway = rules.leeway;
    match claims.get("iss") {
        None => return Err(JwtError::ClaimMissing("iss")),
        Some(Value::String(iss)) if *iss == rules.issuer => {}
        Some(Value::String(_)) => {
            return Err(JwtError::IssuerMismatch {
                expected: rules.issuer.clone(),
            })
        }
        Some(_) => return Err(JwtError::ClaimType("iss")),
    }
    let aud_ok = match claims.get("aud") {
        None => return Err(JwtError::ClaimMissing("aud")),
        Some(Value::String(a)) => rules.audience.iter().any(|x| x == a),
        Some(Value::Array(list)) => {
            if list.iter().any(|v| !v.is_string()) {
                return Err(JwtError::ClaimType("aud"));
            }
            list.iter()
                .filter_map(Value::as_str)
                .any(|a| rules.audience.iter().any(|x| x == a))
        }
        Some(_) => return Err(JwtError::ClaimType("aud")),
    };
    if !aud_ok {
        return Err(JwtError::AudienceMismatch {
            expected: rules.audience.clone(),
        });
    }
    let exp = numeric_date(claims, "exp")?.ok_or(JwtError::ClaimMissing("exp"))?;
    if now > exp.saturating_add(leeway) {
        return Err(JwtError::Expired {
            ago: now - exp,
            leeway,
        });
    }
    let nbf = numeric_date(claims, "nbf")?;
    if let Some(nbf) = nbf {
        if now.saturating_add(leeway) < nbf {
            return Err(JwtError::NotYetValid {
                r#in: nbf - now,
                leeway,
            });
        }
    }
    if let Some(iat) = numeric_date(claims, "iat")? {
        if now.saturating_add(leeway) < iat {
            return Err(JwtError::IssuedInFuture {
                r#in: iat - now,
                leeway,
            });
        }
    }
    let subject = match claim_path(claims, &rules.subject_claim) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 512 => s.trim().to_string(),
        _ => return Err(JwtError::SubjectMissing(rules.subject_claim.clone())),
    };
    let mut scopes: Vec<String> = Vec::new();
    for name in &rules.scope_claims {
        if let Some(v) = claim_path(claims, name) {
            let list = string_list(v, true).ok_or(JwtError::ClaimType("scope"))?;
            for s in list {
                if !scopes.contains(&s) {
                    scopes.push(s);
                }
            }
        }
    }
    let groups = match &rules.groups_claim {
        None => Vec::new(),
        Some(path) => match claim_path(claims, path) {
            None => Vec::new(),
            Some(v) => string_list(v, false).ok_or(JwtError::ClaimType("groups"))?,
        },
    };
    let name = claims
        .get("name")
        .and_then(Value::as_str)
        .map(|s| s.chars().take(128).collect());
    Ok(VerifiedClaims {
        subject,
        scopes,
        groups,
        exp,
        nbf,
        name,
    })
}

/// A verified token, cached until it expires.
struct CachedToken {
    identity: Arc<Identity>,
    exp: u64,
    nbf: Option<u64>,
    /// The JWKS generation it was verified under: a key-set change (rotation, revocation) retires it.
    jwks_generation: u64,
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

    pub async fn verify(&self, token: &str, policy: &Policy) -> Result<Arc<Identity>, JwtError> {
        self.verify_at(token, policy, unix_now()).await
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

    pub async fn verify_at(
        &self,
        token: &str,
        policy: &Policy,
        now: u64,
    ) -> Result<Arc<Identity>, JwtError> {
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
            policy,
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

    /// Finds the token's key (refetching the JWKS once on an unknown `kid`) and checks the signature.
    async fn verify_signature(&self, c: &Compact<'_>) -> Result<KeyEntry, JwtError> {
        let candidates = self.candidates(c)?;
        let candidates = match (candidates.is_empty(), &c.kid, &self.jwks) {
            (true, Some(_), Some(jwks)) => {
                // RFC 8725 and OIDC Core §10.1.1: an unknown kid may mean the IdP rotated; refetch
                // once, rate-limited inside the cache, then decide.
                jwks.refetch_for_unknown_kid().await;
                self.candidates(c)?
            }
            _ => candidates,
        };
        if candidates.is_empty() {
            if c.kid.is_some() {
                if let Some(j) = &self.jwks {
                    if !j.has_keys() {
                        return Err(JwtError::KeysUnavailable);
                    }
                }
                return Err(JwtError::KidUnknown);
            }
            if let Some(j) = &self.jwks {
                if !j.has_keys() && self.static_keys.is_empty() {
                    return Err(JwtError::KeysUnavailable);
                }
            }
            return Err(JwtError::NoKeyForAlg(c.alg));
        }
        for key in candidates.iter().take(self.max_candidates) {
            if key.alg != c.alg {
                return Err(JwtError::AlgMismatch {
                    token: c.alg,
                    key: key.alg,
                });
            }
            crate::metrics::get().signature_verifications.inc();
            match jsonwebtoken::crypto::verify(
                c.signature_b64,
                c.signing_input.as_bytes(),
                &key.key,
                key.alg.to_jsonwebtoken(),
            ) {
                Ok(true) => return Ok(key.clone()),
                Ok(false) => continue,
                Err(_) => {
                    return Err(JwtError::Malformed(
                        "signature is not valid base64url or has the wrong size",
                    ))
                }
            }
        }
        Err(JwtError::SignatureInvalid)
    }

    /// Keys the token may be checked against: by `kid` when it has one (any algorithm, so a mismatch is
    /// reported as such), otherwise every key pinned to the token's algorithm.
    fn candidates(&self, c: &Compact<'_>) -> Result<Vec<KeyEntry>, JwtError> {
        let published = self.jwks.as_ref().map(|j| j.current());
        let all = self
            .static_keys
            .iter()
            .chain(published.iter().flat_map(|k| k.iter()));
        Ok(match &c.kid {
            Some(kid) => all
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                .cloned()
                .collect(),
            None => all.filter(|k| k.alg == c.alg).cloned().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn pre_parse_refuses_none_in_every_spelling() {
        for alg in ["none", "None", "NONE", "nOnE"] {
            let t = format!("{}.{}.", b64(&format!("{{\"alg\":\"{alg}\"}}")), b64("{}"));
            assert_eq!(
                parse_compact(&t, 8192).unwrap_err(),
                JwtError::AlgNone,
                "{alg}"
            );
            let t = format!(
                "{}.{}.c2ln",
                b64(&format!("{{\"alg\":\"{alg}\"}}")),
                b64("{}")
            );
            assert_eq!(
                parse_compact(&t, 8192).unwrap_err(),
                JwtError::AlgNone,
                "{alg}"
            );
        }
    }

    #[test]
    fn pre_parse_shape_errors() {
        let h = b64(r#"{"alg":"HS256"}"#);
        let p = b64("{}");
        assert!(matches!(
            parse_compact("abc", 100),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            parse_compact(&format!("{h}.{p}"), 100),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            parse_compact(&format!("{h}.{p}.sig.x.y"), 100),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            parse_compact(&format!("{h}.{p}=.sig"), 100),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            parse_compact(&format!("{}.{p}.sig", b64("not json")), 100),
            Err(JwtError::Malformed(_))
        ));
        assert!(matches!(
            parse_compact(
                &format!("{}.{p}.sig", b64(r#"{"alg":"HS256","alg":"none"}"#)),
                100
            ),
            Err(JwtError::Malformed(_))
        ));
        assert_eq!(
            parse_compact(&format!("{}.{p}.sig", b64(r#"{"alg":"XS999"}"#)), 100).unwrap_err(),
            JwtError::AlgUnsupported
        );
        assert_eq!(
            parse_compact(
                &format!("{}.{p}.sig", b64(r#"{"alg":"HS256","crit":["exp"]}"#)),
                200
            )
            .unwrap_err(),
            JwtError::CritUnsupported
        );
        assert_eq!(
            parse_compact(
                &format!(
                    "{}.{p}.sig",
                    b64(r#"{"alg":"EdDSA","typ":"scopegate-assertion+jwt"}"#)
                ),
                200
            )
            .unwrap_err(),
            JwtError::TypRejected
        );
        assert_eq!(
            parse_compact(
                &format!("{}.{p}.sig", b64(r#"{"alg":"HS256","kid":{"$ne":1}}"#)),
                200
            )
            .unwrap_err(),
            JwtError::KidInvalid
        );
        assert!(matches!(
            parse_compact(&"a".repeat(200), 100),
            Err(JwtError::TooLarge { .. })
        ));
        let token = format!("{h}.{p}.sig");
        let ok = parse_compact(&token, 100).unwrap();
        assert_eq!(ok.alg, JwtAlgorithm::HS256);
        assert_eq!(ok.signing_input, format!("{h}.{p}"));
    }

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: "https://idp".into(),
            audience: vec!["openclaw".into()],
            leeway: 30,
            scope_claims: vec!["scope".into(), "scp".into()],
            groups_claim: Some("realm_access.roles".into()),
            subject_claim: "sub".into(),
        }
    }

    fn claims(v: serde_json::Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn claim_checks() {
        let now = 1_000_000;
        let good = serde_json::json!({"iss":"https://idp","aud":["x","openclaw"],"sub":"bob","exp":now+60,
            "scope":"operator.read operator.write","scp":["operator.read","x"],"realm_access":{"roles":["ops"]}});
        let v = check_claims(&claims(good.clone()), &rules(), now).unwrap();
        assert_eq!(v.subject, "bob");
        assert_eq!(v.scopes, vec!["operator.read", "operator.write", "x"]);
        assert_eq!(v.groups, vec!["ops"]);

        let with = |k: &str, val: Value| {
            let mut c = good.clone();
            c[k] = val;
            check_claims(&claims(c), &rules(), now)
        };
        let without = |k: &str| {
            let mut c = claims(good.clone());
            c.remove(k);
            check_claims(&c, &rules(), now)
        };
        assert_eq!(without("iss").unwrap_err(), JwtError::ClaimMissing("iss"));
        assert_eq!(without("aud").unwrap_err(), JwtError::ClaimMissing("aud"));
        assert_eq!(without("exp").unwrap_err(), JwtError::ClaimMissing("exp"));
        assert!(matches!(
            without("sub").unwrap_err(),
            JwtError::SubjectMissing(_)
        ));
        assert!(matches!(
            with("iss", "https://evil".into()).unwrap_err(),
            JwtError::IssuerMismatch { .. }
        ));
        assert!(matches!(
            with("aud", "other".into()).unwrap_err(),
            JwtError::AudienceMismatch { .. }
        ));
        assert_eq!(
            with("exp", Value::from(format!("{}", now + 60))).unwrap_err(),
            JwtError::ClaimType("exp")
        );
        assert_eq!(
            with("nbf", Value::from("0")).unwrap_err(),
            JwtError::ClaimType("nbf")
        );
        assert_eq!(
            with("exp", Value::from(now - 31)).unwrap_err(),
            JwtError::Expired {
                ago: 31,
                leeway: 30
            }
        );
        assert!(with("exp", Value::from(now - 29)).is_ok(), "within leeway");
        assert_eq!(
            with("nbf", Value::from(now + 100)).unwrap_err(),
            JwtError::NotYetValid {
                r#in: 100,
                leeway: 30
            }
        );
        assert!(with("nbf", Value::from(now + 10)).is_ok());
        assert!(matches!(
            with("iat", Value::from(now + 100)).unwrap_err(),
            JwtError::IssuedInFuture { .. }
        ));
        assert_eq!(
            with("scope", Value::from(5)).unwrap_err(),
            JwtError::ClaimType("scope")
        );
        assert!(with("exp", Value::from(1.5e6)).is_ok());
    }
}
