//! The signed assertion scopegate hands the upstream (contract §5): a compact JWS typed
//! `scopegate-assertion+jwt`, bound to the request's method and exact path, plus the JWKS that
//! publishes its public keys.
//!
//! Signing is on the hot path, so it is budgeted: the key is parsed once (aws-lc-rs holds it ready), the
//! protected header is encoded once, claims are written straight into a buffer, and one signed assertion
//! may serve identical requests — same caller, scopes, client, method and path — for `reuse` (default
//! 1 s; 0 signs every request). `jti` therefore names an issuance, not a request. RSA is never offered:
//! a 2048-bit RSA signature costs about 1.4 ms (anchors §4.2).

use foldhash::fast::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use serde_json::Value;

use crate::config::{AssertionAlgorithm, AssertionConfig};
use crate::identity::jwt::ASSERTION_TYP;
use crate::identity::AuthMethod;
use crate::util::{b64url, b64url_decode, random_bytes};
use crate::values::AssertionKey;
pub use crate::values::{generate_pkcs8, pem_encode};

/// What an assertion says about one request.
#[derive(Debug, Clone, Copy)]
pub struct AssertionInput<'a> {
    pub subject: &'a str,
    /// `None` for an anonymous request on a public route.
    pub amr: Option<AuthMethod>,
    /// Space-delimited effective scopes, implication-expanded.
    pub scope: &'a str,
    /// Bits of the effective set, used only to key the reuse cache.
    pub scope_bits: crate::policy::ScopeSet,
    pub client_ip: Option<IpAddr>,
    pub method: &'a Method,
    pub path: &'a str,
}

struct Cached {
    subject: Box<str>,
    amr: Option<AuthMethod>,
    scope_bits: crate::policy::ScopeSet,
    client_ip: Option<IpAddr>,
    method: Method,
    path: Box<str>,
    minted: Instant,
    value: HeaderValue,
}

pub struct AssertionSigner {
    header: HeaderName,
    alg: AssertionAlgorithm,
    key: AssertionKey,
    kid: String,
    /// base64url of the protected header, followed by '.'.
    header_b64: String,
    issuer: String,
    audience: String,
    ttl: Duration,
    reuse: Duration,
    jwks: Bytes,
    ephemeral: bool,
    hasher: RandomState,
    cache: Option<quick_cache::sync::Cache<u64, Arc<Cached>>>,
}

impl AssertionSigner {
    /// Builds from the parsed keys the config holds (or an ephemeral key when it holds none).
    pub fn new(cfg: &AssertionConfig) -> Result<AssertionSigner, String> {
        let (key, ephemeral) = match &cfg.key {
            Some(k) => (k.clone(), false),
            None => (AssertionKey::generate(cfg.algorithm)?, true),
        };
        let kid = cfg.kid.clone().unwrap_or_else(|| key.derived_kid());
        let mut published = Vec::new();
        for (k, kid) in std::iter::once((&key, kid.clone()))
            .chain(cfg.next_key.iter().map(|n| (n, n.derived_kid())))
        {
            if k.algorithm() != cfg.algorithm {
                return Err(format!(
                    "[assertion] the key is for {}, not {}",
                    k.algorithm().name(),
                    cfg.algorithm.name()
                ));
            }
            if let Some(mut jwk) = k.public_jwk() {
                jwk.insert("kid".into(), kid.into());
                jwk.insert("alg".into(), cfg.algorithm.name().into());
                jwk.insert("use".into(), "sig".into());
                published.push(Value::Object(jwk));
            }
        }
        let jwks = serde_json::to_vec(&serde_json::json!({ "keys": published }))
            .map_err(|e| e.to_string())?;
        let header_json =
            serde_json::json!({"alg": cfg.algorithm.name(), "typ": ASSERTION_TYP, "kid": kid});
        let mut header_b64 = b64url(&serde_json::to_vec(&header_json).map_err(|e| e.to_string())?);
        header_b64.push('.');
        Ok(AssertionSigner {
            header: cfg.header.clone(),
            alg: cfg.algorithm,
            key,
            kid,
            header_b64,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            ttl: cfg.ttl,
            reuse: cfg.reuse,
            jwks: Bytes::from(jwks),
            ephemeral,
            hasher: RandomState::default(),
            cache: (!cfg.reuse.is_zero()).then(|| crate::util::bounded_cache(16_384)),
        })
    }

    pub fn header_name(&self) -> &HeaderName {
        &self.header
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> AssertionAlgorithm {
        self.alg
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// The JWKS document served at `/.well-known/scopegate/jwks.json`.
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    /// The header value for a request, reusing a recent identical assertion when allowed.
    pub fn assertion(&self, input: &AssertionInput<'_>) -> HeaderValue {
        self.assertion_at(input, Instant::now())
    }

    /// [`Self::assertion`] at `now` (the request's clock reading: one less per request).
    pub fn assertion_at(&self, input: &AssertionInput<'_>, now: Instant) -> HeaderValue {
        let Some(cache) = &self.cache else {
            return self.mint(input);
        };
        let mut h = self.hasher.build_hasher();
        input.subject.hash(&mut h);
        input.amr.hash(&mut h);
        input.scope_bits.hash(&mut h);
        input.client_ip.hash(&mut h);
        input.method.hash(&mut h);
        input.path.hash(&mut h);
        let key = h.finish();
        if let Some(c) = cache.get(&key) {
            if now.saturating_duration_since(c.minted) < self.reuse
                && &*c.subject == input.subject
                && c.amr == input.amr
                && c.scope_bits == input.scope_bits
                && c.client_ip == input.client_ip
                && c.method == *input.method
                && &*c.path == input.path
            {
                return c.value.clone();
            }
        }
        let value = self.mint(input);
        cache.insert(
            key,
            Arc::new(Cached {
                subject: input.subject.into(),
                amr: input.amr,
                scope_bits: input.scope_bits,
                client_ip: input.client_ip,
                method: input.method.clone(),
                path: input.path.into(),
                minted: now,
                value: value.clone(),
            }),
        );
        value
    }

    /// Signs a fresh assertion.
    pub fn mint(&self, input: &AssertionInput<'_>) -> HeaderValue {
        let now = crate::identity::jwt::unix_now();
        self.mint_at(input, now)
    }

    pub fn mint_at(&self, input: &AssertionInput<'_>, now: u64) -> HeaderValue {
        let mut claims = Vec::with_capacity(320 + input.scope.len() + input.path.len());
        claims.extend_from_slice(b"{\"iss\":");
        json_str(&mut claims, &self.issuer);
        claims.extend_from_slice(b",\"aud\":");
        json_str(&mut claims, &self.audience);
        claims.extend_from_slice(b",\"sub\":");
        json_str(&mut claims, input.subject);
        match input.amr {
            Some(m) => {
                claims.extend_from_slice(b",\"amr\":[\"");
                claims.extend_from_slice(m.amr().as_bytes());
                claims.extend_from_slice(b"\"],\"scope\":");
            }
            None => claims.extend_from_slice(b",\"amr\":[],\"scope\":"),
        }
        json_str(&mut claims, input.scope);
        claims.extend_from_slice(b",\"iat\":");
        claims.extend_from_slice(now.to_string().as_bytes());
        claims.extend_from_slice(b",\"exp\":");
        claims.extend_from_slice((now + self.ttl.as_secs()).to_string().as_bytes());
        claims.extend_from_slice(b",\"jti\":\"");
        claims.extend_from_slice(b64url(&random_bytes::<16>()).as_bytes());
        claims.extend_from_slice(b"\",\"client_ip\":");
        match input.client_ip {
            Some(ip) => json_str(&mut claims, &ip.to_string()),
            None => claims.extend_from_slice(b"null"),
        }
        claims.extend_from_slice(b",\"htm\":");
        json_str(&mut claims, input.method.as_str());
        claims.extend_from_slice(b",\"htp\":");
        json_str(&mut claims, input.path);
        claims.push(b'}');

        let mut token = String::with_capacity(self.header_b64.len() + claims.len() * 4 / 3 + 100);
        token.push_str(&self.header_b64);
        base64::Engine::encode_string(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &claims,
            &mut token,
        );
        let sig = self.key.sign(token.as_bytes());
        token.push('.');
        base64::Engine::encode_string(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            &sig,
            &mut token,
        );
        // base64url and '.' are always valid header bytes.
        HeaderValue::from_maybe_shared(Bytes::from(token))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly what JSON requires; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// How an upstream verifies an assertion; used by `verify-assertion`, the tests and the Rust example.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions<'a> {
    pub audience: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub method: Option<&'a str>,
    /// The request path; a query string is ignored.
    pub path: Option<&'a str>,
    pub hmac_secret: Option<&'a [u8]>,
    pub now: Option<u64>,
    pub leeway: u64,
}

/// Verifies an assertion against a JWKS document (or an HMAC secret): signature with the key's pinned
/// algorithm, `typ`, `iss`, `aud`, `exp`, `iat`, and the method/path binding. Returns the claims.
pub fn verify_assertion(
    token: &str,
    jwks: &Value,
    opts: &VerifyOptions<'_>,
) -> Result<Value, String> {
    use jsonwebtoken::{Algorithm, DecodingKey};
    if token.len() > 16 * 1024 {
        return Err("assertion is too large".into());
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err("not a compact JWS".into());
    }
    let header: Value = b64url_decode(parts[0])
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("header is not base64url JSON")?;
    if header.get("typ").and_then(Value::as_str) != Some(ASSERTION_TYP) {
        return Err(format!("typ is not {ASSERTION_TYP}"));
    }
    let alg_name = header.get("alg").and_then(Value::as_str).ok_or("no alg")?;
    let kid = header.get("kid").and_then(Value::as_str);
    let (alg, key) = if alg_name == "HS256" {
        let secret = opts
            .hmac_secret
            .ok_or("HS256 assertion but no shared secret given")?;
        (Algorithm::HS256, DecodingKey::from_secret(secret))
    } else {
        let keys = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("JWKS has no keys")?;
        let jwk_value = keys
            .iter()
            .find(|k| k.get("kid").and_then(Value::as_str) == kid && kid.is_some())
            .ok_or("no published key has the assertion's kid")?;
        let key_alg = jwk_value
            .get("alg")
            .and_then(Value::as_str)
            .ok_or("published key has no alg")?;
        if key_alg != alg_name {
            return Err(format!(
                "alg {alg_name} does not match the key's pinned {key_alg}"
            ));
        }
        let alg = match key_alg {
            "EdDSA" => Algorithm::EdDSA,
            "ES256" => Algorithm::ES256,
            other => return Err(format!("unsupported assertion algorithm {other}")),
        };
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(jwk_value.clone()).map_err(|e| e.to_string())?;
        (alg, DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?)
    };
    let signing_input = &token[..parts[0].len() + 1 + parts[1].len()];
    match jsonwebtoken::crypto::verify(parts[2], signing_input.as_bytes(), &key, alg) {
        Ok(true) => {}
        _ => return Err("signature verification failed".into()),
    }
    let claims: Value = b64url_decode(parts[1])
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("payload is not base64url JSON")?;
    let now = opts.now.unwrap_or_else(crate::identity::jwt::unix_now);
    let num = |name: &str| -> Result<u64, String> {
        claims
            .get(name)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("claim {name} is missing or not a number"))
    };
    let exp = num("exp")?;
    let iat = num("iat")?;
    if now > exp + opts.leeway {
        return Err(format!("assertion expired {} s ago", now - exp));
    }
    if iat > now + opts.leeway {
        return Err("assertion is issued in the future".into());
    }
    let issuer = opts.issuer.unwrap_or("scopegate");
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(format!("iss is not {issuer:?}"));
    }
    if let Some(aud) = opts.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == aud,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud)),
            _ => false,
        };
        if !ok {
            return Err(format!("aud does not include {aud:?}"));
        }
    }
    if let Some(m) = opts.method {
        if !claims
            .get("htm")
            .and_then(Value::as_str)
            .is_some_and(|h| h.eq_ignore_ascii_case(m))
        {
            return Err(format!(
                "assertion is bound to another method (htm), not {m}"
            ));
        }
    }
    if let Some(p) = opts.path {
        let p = p.split('?').next().unwrap_or(p);
        if claims.get("htp").and_then(Value::as_str) != Some(p) {
            return Err(format!("assertion is bound to another path (htp), not {p}"));
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ScopeSet;

    fn cfg(alg: AssertionAlgorithm, key: Option<Vec<u8>>, reuse: u64) -> AssertionConfig {
        AssertionConfig {
            header: HeaderName::from_static("x-scopegate-assertion"),
            algorithm: alg,
            key: key.map(|m| AssertionKey::from_material(alg, &m).unwrap()),
            next_key: None,
            kid: None,
            issuer: "scopegate".into(),
            audience: "openclaw-gateway".into(),
            ttl: Duration::from_secs(60),
            reuse: Duration::from_secs(reuse),
        }
    }

    fn input<'a>(m: &'a Method, path: &'a str) -> AssertionInput<'a> {
        AssertionInput {
            subject: "bob",
            amr: Some(AuthMethod::Jwt),
            scope: "operator.read operator.write",
            scope_bits: ScopeSet::single(1),
            client_ip: Some("203.0.113.7".parse().unwrap()),
            method: m,
            path,
        }
    }

    #[test]
    fn round_trip_for_each_algorithm_with_binding() {
        for alg in [
            AssertionAlgorithm::EdDSA,
            AssertionAlgorithm::ES256,
            AssertionAlgorithm::HS256,
        ] {
            let secret = b"0123456789abcdef0123456789abcdef".to_vec();
            let key = (alg == AssertionAlgorithm::HS256).then(|| secret.clone());
            let signer = AssertionSigner::new(&cfg(alg, key, 0)).unwrap();
            let jwks: Value = serde_json::from_slice(&signer.jwks()).unwrap();
            let m = Method::POST;
            let token = signer.assertion(&input(&m, "/v1/responses"));
            let token = token.to_str().unwrap();
            let opts = VerifyOptions {
                audience: Some("openclaw-gateway"),
                method: Some("POST"),
                path: Some("/v1/responses?x=1"),
                hmac_secret: Some(&secret),
                ..Default::default()
            };
            let claims = verify_assertion(token, &jwks, &opts).unwrap();
            assert_eq!(claims["sub"], "bob");
            assert_eq!(claims["amr"][0], "jwt");
            assert_eq!(claims["scope"], "operator.read operator.write");
            assert_eq!(claims["client_ip"], "203.0.113.7");
            assert_eq!(claims["htm"], "POST");
            assert_eq!(claims["htp"], "/v1/responses");
            assert_eq!(
                claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
                60
            );

            let other_path = VerifyOptions {
                path: Some("/v1/models"),
                ..opts.clone()
            };
            assert!(verify_assertion(token, &jwks, &other_path)
                .unwrap_err()
                .contains("htp"));
            let other_method = VerifyOptions {
                method: Some("GET"),
                ..opts.clone()
            };
            assert!(verify_assertion(token, &jwks, &other_method)
                .unwrap_err()
                .contains("htm"));
            let other_aud = VerifyOptions {
                audience: Some("someone-else"),
                ..opts.clone()
            };
            assert!(verify_assertion(token, &jwks, &other_aud).is_err());
            let later = VerifyOptions {
                now: Some(crate::identity::jwt::unix_now() + 3600),
                ..opts.clone()
            };
            assert!(verify_assertion(token, &jwks, &later)
                .unwrap_err()
                .contains("expired"));
            // Tamper with the scope claim, keep the signature.
            let parts: Vec<&str> = token.split('.').collect();
            let mut claims_raw: Value =
                serde_json::from_slice(&b64url_decode(parts[1]).unwrap()).unwrap();
            claims_raw["scope"] = "operator.admin".into();
            let forged = format!(
                "{}.{}.{}",
                parts[0],
                b64url(&serde_json::to_vec(&claims_raw).unwrap()),
                parts[2]
            );
            assert!(verify_assertion(&forged, &jwks, &opts)
                .unwrap_err()
                .contains("signature"));
        }
    }

    #[test]
    fn reuse_window_serves_identical_requests_only() {
        let signer = AssertionSigner::new(&cfg(AssertionAlgorithm::EdDSA, None, 5)).unwrap();
        let m = Method::GET;
        let a = signer.assertion(&input(&m, "/v1/models"));
        let b = signer.assertion(&input(&m, "/v1/models"));
        assert_eq!(a, b);
        let c = signer.assertion(&input(&m, "/v1/models/x"));
        assert_ne!(a, c);
        let p = Method::POST;
        assert_ne!(a, signer.assertion(&input(&p, "/v1/models")));
    }

    #[test]
    fn jwks_publishes_current_and_next() {
        let mut c = cfg(AssertionAlgorithm::EdDSA, None, 0);
        c.next_key = Some(AssertionKey::generate(AssertionAlgorithm::EdDSA).unwrap());
        let signer = AssertionSigner::new(&c).unwrap();
        let jwks: Value = serde_json::from_slice(&signer.jwks()).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["kid"], signer.kid());
        assert_ne!(keys[0]["kid"], keys[1]["kid"]);
        assert!(keys
            .iter()
            .all(|k| k["kty"] == "OKP" && k["alg"] == "EdDSA" && k.get("d").is_none()));
    }
}
