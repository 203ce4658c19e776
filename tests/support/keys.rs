//! Real signing keys for tests: Ed25519 and P-256 generated per run with aws-lc-rs, RSA from
//! `tests/fixtures` (generated once with openssl; test-only, never used anywhere else). Each key can
//! sign a JWT and describe its public half as PEM (SPKI) or JWK.

use std::path::Path;
use std::time::Duration;

use aws_lc_rs::signature::KeyPair;
use scopegate::config::{AssertionAlgorithm, JwtAlgorithm};
use scopegate::tokens::{self, TokenSpec};
use scopegate::util::b64url;
use serde_json::{json, Value};

pub const ISSUER: &str = "https://idp.test.invalid";
pub const AUDIENCE: &str = "openclaw";
pub const HMAC_SECRET: &str = "test-hmac-secret-0123456789abcdef-0123456789";

#[derive(Clone)]
pub struct TestKey {
    pub alg: JwtAlgorithm,
    pub kid: String,
    /// Private key PEM (PKCS#8) or the HMAC secret.
    pub private: Vec<u8>,
    pub public_pem: Option<String>,
    pub jwk: Option<Value>,
}

fn pem(label: &str, der: &[u8]) -> String {
    scopegate::assertion::pem_encode(label, der)
}

impl TestKey {
    pub fn ed25519(kid: &str) -> TestKey {
        let der = scopegate::assertion::generate_pkcs8(AssertionAlgorithm::EdDSA).unwrap();
        let kp = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(&der).unwrap();
        let raw = kp.public_key().as_ref().to_vec();
        let mut spki = hex("302a300506032b6570032100");
        spki.extend_from_slice(&raw);
        TestKey {
            alg: JwtAlgorithm::EdDSA,
            kid: kid.into(),
            private: pem("PRIVATE KEY", &der).into_bytes(),
            public_pem: Some(pem("PUBLIC KEY", &spki)),
            jwk: Some(
                json!({"kty":"OKP","crv":"Ed25519","x":b64url(&raw),"kid":kid,"alg":"EdDSA","use":"sig"}),
            ),
        }
    }

    pub fn p256(kid: &str) -> TestKey {
        let der = scopegate::assertion::generate_pkcs8(AssertionAlgorithm::ES256).unwrap();
        let kp = aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &der,
        )
        .unwrap();
        let point = kp.public_key().as_ref().to_vec();
        let mut spki = hex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
        spki.extend_from_slice(&point);
        TestKey {
            alg: JwtAlgorithm::ES256,
            kid: kid.into(),
            private: pem("PRIVATE KEY", &der).into_bytes(),
            public_pem: Some(pem("PUBLIC KEY", &spki)),
            jwk: Some(
                json!({"kty":"EC","crv":"P-256","x":b64url(&point[1..33]),"y":b64url(&point[33..]),"kid":kid,"alg":"ES256","use":"sig"}),
            ),
        }
    }

    /// RSA from the fixtures; `alg` is RS256 or PS256 (the same key material, pinned differently).
    pub fn rsa(kid: &str, alg: JwtAlgorithm, fixture: &str) -> TestKey {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let private = std::fs::read(dir.join(fixture)).unwrap();
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(&private).unwrap();
        let kp = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
        let comps = aws_lc_rs::signature::RsaPublicKeyComponents::<Vec<u8>>::from(kp.public_key());
        let spki: Option<Vec<u8>> = {
            use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
            AsDer::<PublicKeyX509Der>::as_der(kp.public_key())
                .map(|d| d.as_ref().to_vec())
                .ok()
        };
        TestKey {
            alg,
            kid: kid.into(),
            private,
            public_pem: spki.map(|d| pem("PUBLIC KEY", &d)),
            jwk: Some(
                json!({"kty":"RSA","n":b64url(&comps.n),"e":b64url(&comps.e),"kid":kid,"alg":alg.name(),"use":"sig"}),
            ),
        }
    }

    pub fn hmac(kid: &str) -> TestKey {
        TestKey {
            alg: JwtAlgorithm::HS256,
            kid: kid.into(),
            private: HMAC_SECRET.as_bytes().to_vec(),
            public_pem: None,
            jwk: None,
        }
    }

    /// Mints a token for `sub` with `scopes` (space-joined `scope` claim).
    pub fn token(&self, sub: &str, scopes: &[&str]) -> String {
        self.token_with(sub, scopes, &[], |_| {})
    }

    pub fn token_with(
        &self,
        sub: &str,
        scopes: &[&str],
        groups: &[&str],
        edit: impl FnOnce(&mut TokenSpec),
    ) -> String {
        let key = tokens::encoding_key(self.alg, &self.private).unwrap();
        let mut spec = TokenSpec {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            subject: sub.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            ttl: Duration::from_secs(3600),
            kid: Some(self.kid.clone()),
            extra: Default::default(),
        };
        edit(&mut spec);
        tokens::mint(self.alg, &key, &spec).unwrap()
    }

    /// The `[[jwt.keys]]` TOML entry for this key, writing key files into `dir`.
    pub fn toml_entry(&self, dir: &Path) -> String {
        if self.alg.is_hmac() {
            let f = dir.join(format!("{}.secret", self.kid));
            std::fs::write(&f, &self.private).unwrap();
            return format!(
                "[[jwt.keys]]\nkid = \"{}\"\nalgorithm = \"{}\"\nsecret_file = \"{}\"\n",
                self.kid,
                self.alg,
                f.display()
            );
        }
        let f = dir.join(format!("{}.pem", self.kid));
        std::fs::write(&f, self.public_pem.as_ref().unwrap()).unwrap();
        format!(
            "[[jwt.keys]]\nkid = \"{}\"\nalgorithm = \"{}\"\npublic_key_file = \"{}\"\n",
            self.kid,
            self.alg,
            f.display()
        )
    }
}

/// Signs arbitrary header and claims JSON with this key's material, for forged or odd tokens.
pub fn raw_token(key: &TestKey, header: &Value, claims: &Value) -> String {
    let h = b64url(serde_json::to_string(header).unwrap().as_bytes());
    let c = b64url(serde_json::to_string(claims).unwrap().as_bytes());
    let input = format!("{h}.{c}");
    let ek = tokens::encoding_key(key.alg, &key.private).unwrap();
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &ek, key.alg.to_jsonwebtoken()).unwrap();
    format!("{input}.{sig}")
}

/// Standard claims valid for the test issuer and audience.
pub fn claims(sub: &str, scope: &str) -> Value {
    let now = scopegate::identity::jwt::unix_now();
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "scope": scope, "iat": now, "exp": now + 600})
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
