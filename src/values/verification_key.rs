//! JWT verification keys, parsed once from what the config names (`[[jwt.keys]]`: an HMAC secret, a
//! public-key PEM, a JWK file) or from an identity provider's JWKS document.
//!
//! Each key is pinned to one algorithm (RFC 8725 §3.1): a JWK's own `alg` when it has one, otherwise the
//! one its key type implies, and never one its key type does not fit. Symmetric (`oct`) keys are never
//! accepted from a JWK.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::DecodingKey;
use serde_json::Value;

use super::algorithm::JwtAlgorithm;

/// A verification key pinned to one algorithm.
#[derive(Clone)]
pub(crate) struct VerificationKey {
    pub(crate) algorithm: JwtAlgorithm,
    pub(crate) key: DecodingKey,
    /// The `kid` a JWK carries; `None` for secrets and PEM files.
    pub(crate) kid: Option<String>,
}

impl std::fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerificationKey")
            .field("algorithm", &self.algorithm)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl VerificationKey {
    /// An HMAC secret, at least as long as the hash output (RFC 7518 §3.2).
    pub(crate) fn hmac(algorithm: JwtAlgorithm, secret: &[u8]) -> Result<VerificationKey, String> {
        if !algorithm.is_hmac() {
            return Err(format!("{algorithm} is not an HMAC algorithm"));
        }
        if secret.len() < algorithm.min_secret_len() {
            return Err(format!(
                "{algorithm} secret is {} bytes; RFC 7518 §3.2 requires at least {}",
                secret.len(),
                algorithm.min_secret_len()
            ));
        }
        Ok(VerificationKey {
            algorithm,
            key: DecodingKey::from_secret(secret),
            kid: None,
        })
    }

    /// A public key in PEM for an asymmetric algorithm.
    pub(crate) fn from_public_pem(
        algorithm: JwtAlgorithm,
        pem: &[u8],
    ) -> Result<VerificationKey, String> {
        let key = match algorithm {
            JwtAlgorithm::RS256
            | JwtAlgorithm::RS384
            | JwtAlgorithm::RS512
            | JwtAlgorithm::PS256
            | JwtAlgorithm::PS384
            | JwtAlgorithm::PS512 => DecodingKey::from_rsa_pem(pem),
            JwtAlgorithm::ES256 | JwtAlgorithm::ES384 => DecodingKey::from_ec_pem(pem),
            JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(pem),
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512 => {
                return Err(format!("{algorithm} is symmetric: it has no public key"))
            }
        };
        key.map(|key| VerificationKey {
            algorithm,
            key,
            kid: None,
        })
        .map_err(|e| e.to_string())
    }

    /// A `jwk_file` from the config: one JWK (or a JWKS holding exactly one key), pinned to `algorithm`.
    pub(crate) fn from_jwk_file(
        bytes: &[u8],
        algorithm: JwtAlgorithm,
    ) -> Result<VerificationKey, String> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let jwk = match doc.get("keys").and_then(Value::as_array) {
            Some(list) if list.len() == 1 => &list[0],
            Some(_) => return Err("a jwk_file holding a JWKS must contain exactly one key".into()),
            None => &doc,
        };
        VerificationKey::from_jwk(jwk, Some(algorithm), &[])
    }

    /// One JWK. With `pinned`, the key must be usable with that algorithm; without, its algorithm (its
    /// `alg`, or its key type's) must be in `allowed`.
    pub(crate) fn from_jwk(
        raw: &Value,
        pinned: Option<JwtAlgorithm>,
        allowed: &[JwtAlgorithm],
    ) -> Result<VerificationKey, String> {
        let jwk: Jwk =
            serde_json::from_value(raw.clone()).map_err(|e| format!("not a JWK: {e}"))?;
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return Err("an encryption key".into());
        }
        let declared = raw.get("alg").and_then(Value::as_str);
        let declared = match declared {
            None => None,
            Some(name) => Some(
                JwtAlgorithm::from_name(name).ok_or_else(|| format!("unsupported alg {name:?}"))?,
            ),
        };
        let family_default = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => JwtAlgorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => JwtAlgorithm::ES256,
                EllipticCurve::P384 => JwtAlgorithm::ES384,
                _ => return Err("unsupported EC curve".into()),
            },
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                JwtAlgorithm::EdDSA
            }
            AlgorithmParameters::OctetKeyPair(_) => return Err("unsupported OKP curve".into()),
            AlgorithmParameters::OctetKey(_) => {
                return Err("symmetric keys are not accepted from a JWK".into())
            }
            _ => return Err("unsupported key type".into()),
        };
        let alg = pinned.or(declared).unwrap_or(family_default);
        let fits = match (&jwk.algorithm, alg) {
            (AlgorithmParameters::RSA(_), a) => matches!(
                a,
                JwtAlgorithm::RS256
                    | JwtAlgorithm::RS384
                    | JwtAlgorithm::RS512
                    | JwtAlgorithm::PS256
                    | JwtAlgorithm::PS384
                    | JwtAlgorithm::PS512
            ),
            (AlgorithmParameters::EllipticCurve(ec), JwtAlgorithm::ES256) => {
                ec.curve == EllipticCurve::P256
            }
            (AlgorithmParameters::EllipticCurve(ec), JwtAlgorithm::ES384) => {
                ec.curve == EllipticCurve::P384
            }
            (AlgorithmParameters::OctetKeyPair(_), JwtAlgorithm::EdDSA) => true,
            _ => false,
        };
        if !fits || declared.is_some_and(|d| d != alg) {
            return Err(format!("key type does not fit algorithm {alg}"));
        }
        if pinned.is_none() && !allowed.contains(&alg) {
            return Err(format!("algorithm {alg} is not in jwks_algorithms"));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
        Ok(VerificationKey {
            algorithm: alg,
            key,
            kid: jwk.common.key_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P256: &str = r#"{"kty":"EC","crv":"P-256","kid":"ec","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;

    #[test]
    fn jwk_files_are_pinned_to_the_configured_algorithm() {
        let key = VerificationKey::from_jwk_file(P256.as_bytes(), JwtAlgorithm::ES256).unwrap();
        assert_eq!(key.algorithm, JwtAlgorithm::ES256);
        assert_eq!(key.kid.as_deref(), Some("ec"));
        let one = format!("{{\"keys\":[{P256}]}}");
        assert!(VerificationKey::from_jwk_file(one.as_bytes(), JwtAlgorithm::ES256).is_ok());
        let two = format!("{{\"keys\":[{P256},{P256}]}}");
        assert!(
            VerificationKey::from_jwk_file(two.as_bytes(), JwtAlgorithm::ES256)
                .unwrap_err()
                .contains("exactly one key")
        );
        assert!(
            VerificationKey::from_jwk_file(P256.as_bytes(), JwtAlgorithm::RS256)
                .unwrap_err()
                .contains("does not fit")
        );
    }

    #[test]
    fn hmac_secrets_have_a_minimum_length() {
        assert!(VerificationKey::hmac(JwtAlgorithm::HS256, &[7; 32]).is_ok());
        assert_eq!(
            VerificationKey::hmac(JwtAlgorithm::HS384, &[7; 32]).unwrap_err(),
            "HS384 secret is 32 bytes; RFC 7518 §3.2 requires at least 48"
        );
        assert!(VerificationKey::hmac(JwtAlgorithm::ES256, &[7; 64]).is_err());
    }
}
