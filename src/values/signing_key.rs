//! scopegate's own assertion signing key, parsed once from `[assertion] key_file`/`key_env` (or
//! generated) into the form aws-lc-rs signs with.
//!
//! Material is PKCS#8 (PEM or DER) for EdDSA and ES256, the raw secret for HS256. The config reports a
//! key that does not parse at its line; the signer takes the parsed key as it is.

use std::sync::Arc;

use aws_lc_rs::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde_json::Value;

use super::algorithm::AssertionAlgorithm;
use crate::util::{b64url, random_bytes};

/// A private key held ready for signing (cheap to clone: the parsed key is shared).
#[derive(Clone)]
pub struct AssertionKey(Arc<Inner>);

enum Inner {
    Ed(Ed25519KeyPair),
    Es(EcdsaKeyPair),
    /// The secret is kept to derive the key id.
    Hs {
        key: Box<aws_lc_rs::hmac::Key>,
        secret: Vec<u8>,
    },
}

impl std::fmt::Debug for AssertionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AssertionKey")
            .field(&self.algorithm())
            .finish()
    }
}

impl AssertionKey {
    /// Key material from a file or env var: PKCS#8 PEM (or DER) for EdDSA/ES256, the secret for HS256
    /// (a trailing newline dropped, at least 32 bytes).
    pub(crate) fn parse(alg: AssertionAlgorithm, bytes: &[u8]) -> Result<AssertionKey, String> {
        AssertionKey::from_material(alg, &key_material(alg, bytes)?)
    }

    /// Normalised material: PKCS#8 DER for EdDSA/ES256, the raw secret for HS256.
    pub fn from_material(alg: AssertionAlgorithm, material: &[u8]) -> Result<AssertionKey, String> {
        let inner = match alg {
            AssertionAlgorithm::EdDSA => Ed25519KeyPair::from_pkcs8(material)
                .map(Inner::Ed)
                .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?,
            AssertionAlgorithm::ES256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, material)
                    .map(Inner::Es)
                    .map_err(|e| format!("not a P-256 PKCS#8 key: {e}"))?
            }
            AssertionAlgorithm::HS256 => Inner::Hs {
                key: Box::new(aws_lc_rs::hmac::Key::new(
                    aws_lc_rs::hmac::HMAC_SHA256,
                    material,
                )),
                secret: material.to_vec(),
            },
        };
        Ok(AssertionKey(Arc::new(inner)))
    }

    /// A fresh key (an ephemeral one when the config names none).
    pub(crate) fn generate(alg: AssertionAlgorithm) -> Result<AssertionKey, String> {
        AssertionKey::from_material(alg, &generate_pkcs8(alg)?)
    }

    pub fn algorithm(&self) -> AssertionAlgorithm {
        match &*self.0 {
            Inner::Ed(_) => AssertionAlgorithm::EdDSA,
            Inner::Es(_) => AssertionAlgorithm::ES256,
            Inner::Hs { .. } => AssertionAlgorithm::HS256,
        }
    }

    pub(crate) fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match &*self.0 {
            Inner::Ed(k) => k.sign(msg).as_ref().to_vec(),
            Inner::Es(k) => k
                .sign(&aws_lc_rs::rand::SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
            Inner::Hs { key, .. } => aws_lc_rs::hmac::sign(key, msg).as_ref().to_vec(),
        }
    }

    /// The public JWK (without kid/alg/use); `None` for HMAC.
    pub(crate) fn public_jwk(&self) -> Option<serde_json::Map<String, Value>> {
        let mut m = serde_json::Map::new();
        match &*self.0 {
            Inner::Ed(k) => {
                m.insert("crv".into(), "Ed25519".into());
                m.insert("kty".into(), "OKP".into());
                m.insert("x".into(), b64url(k.public_key().as_ref()).into());
            }
            Inner::Es(k) => {
                let p = k.public_key().as_ref();
                if p.len() != 65 {
                    return None;
                }
                m.insert("crv".into(), "P-256".into());
                m.insert("kty".into(), "EC".into());
                m.insert("x".into(), b64url(&p[1..33]).into());
                m.insert("y".into(), b64url(&p[33..]).into());
            }
            Inner::Hs { .. } => return None,
        }
        Some(m)
    }

    /// The key's id when the config gives none: its RFC 7638 thumbprint, or for HMAC a digest that
    /// reveals nothing of the secret.
    pub(crate) fn derived_kid(&self) -> String {
        match &*self.0 {
            Inner::Hs { secret, .. } => {
                let mut input = b"scopegate-hs256-kid:".to_vec();
                input.extend_from_slice(secret);
                b64url(&sha256(&input)[..12])
            }
            Inner::Ed(_) | Inner::Es(_) => self
                .public_jwk()
                .map(|jwk| thumbprint(&jwk))
                .unwrap_or_default(),
        }
    }
}

/// Checks and normalises key material: PKCS#8 PEM → DER for EdDSA/ES256, the trimmed secret for HS256.
fn key_material(alg: AssertionAlgorithm, bytes: &[u8]) -> Result<Vec<u8>, String> {
    match alg {
        AssertionAlgorithm::HS256 => {
            let mut s = bytes.to_vec();
            while s.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                s.pop();
            }
            if s.len() < 32 {
                return Err(format!(
                    "HS256 assertion secret is {} bytes; at least 32 are required",
                    s.len()
                ));
            }
            Ok(s)
        }
        AssertionAlgorithm::EdDSA | AssertionAlgorithm::ES256 => pkcs8_der(bytes),
    }
}

fn pkcs8_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use rustls_pki_types::pem::PemObject;
    if bytes.starts_with(b"-----") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(bytes)
            .map(|k| k.secret_pkcs8_der().to_vec())
            .map_err(|_| {
                "expected a PKCS#8 \"PRIVATE KEY\" PEM (`scopegate keygen` writes one)".to_string()
            })
    } else {
        Ok(bytes.to_vec())
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// RFC 7638 thumbprint of a public JWK (members in lexicographic order, no whitespace).
fn thumbprint(jwk: &serde_json::Map<String, Value>) -> String {
    // serde_json's Map is ordered by key (BTreeMap) without the preserve_order feature.
    let canonical = serde_json::to_vec(jwk).unwrap_or_default();
    b64url(&sha256(&canonical))
}

/// PEM-encodes DER with the given label, 64 characters a line (what `scopegate keygen` writes).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Fresh key material for the algorithm: PKCS#8 DER (HS256: 32 random bytes).
pub fn generate_pkcs8(alg: AssertionAlgorithm) -> Result<Vec<u8>, String> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    match alg {
        AssertionAlgorithm::EdDSA => Ed25519KeyPair::generate_pkcs8v1(&rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| "key generation failed".into()),
        AssertionAlgorithm::ES256 => {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map(|d| d.as_ref().to_vec())
                .map_err(|_| "key generation failed".into())
        }
        AssertionAlgorithm::HS256 => Ok(random_bytes::<32>().to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_material_parsing() {
        let der = generate_pkcs8(AssertionAlgorithm::EdDSA).unwrap();
        let pem = pem_encode("PRIVATE KEY", &der);
        assert_eq!(
            key_material(AssertionAlgorithm::EdDSA, pem.as_bytes()).unwrap(),
            der
        );
        assert!(AssertionKey::parse(AssertionAlgorithm::ES256, pem.as_bytes()).is_err());
        assert!(AssertionKey::parse(AssertionAlgorithm::HS256, b"short\n").is_err());
    }

    #[test]
    fn parsed_keys_know_their_algorithm_and_kid() {
        for alg in [
            AssertionAlgorithm::EdDSA,
            AssertionAlgorithm::ES256,
            AssertionAlgorithm::HS256,
        ] {
            let material = generate_pkcs8(alg).unwrap();
            let a = AssertionKey::from_material(alg, &material).unwrap();
            let b = AssertionKey::from_material(alg, &material).unwrap();
            assert_eq!(a.algorithm(), alg);
            assert_eq!(a.derived_kid(), b.derived_kid());
            assert_eq!(a.public_jwk().is_none(), alg == AssertionAlgorithm::HS256);
        }
    }
}
