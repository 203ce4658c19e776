//! The algorithms keys are pinned to: one for JWT verification keys, one for scopegate's own assertion.
//!
//! They sit in the floor because both the key parsers beside them and the config that names them need
//! them; `config` re-exports them under their old paths.

use std::fmt;

use serde::Deserialize;

/// The algorithm a JWT verification key is pinned to (RFC 8725 §3.1: one key, one algorithm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlgorithm {
    pub const ALL: [JwtAlgorithm; 12] = [
        JwtAlgorithm::HS256,
        JwtAlgorithm::HS384,
        JwtAlgorithm::HS512,
        JwtAlgorithm::RS256,
        JwtAlgorithm::RS384,
        JwtAlgorithm::RS512,
        JwtAlgorithm::PS256,
        JwtAlgorithm::PS384,
        JwtAlgorithm::PS512,
        JwtAlgorithm::ES256,
        JwtAlgorithm::ES384,
        JwtAlgorithm::EdDSA,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::HS384 => "HS384",
            JwtAlgorithm::HS512 => "HS512",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::RS384 => "RS384",
            JwtAlgorithm::RS512 => "RS512",
            JwtAlgorithm::PS256 => "PS256",
            JwtAlgorithm::PS384 => "PS384",
            JwtAlgorithm::PS512 => "PS512",
            JwtAlgorithm::ES256 => "ES256",
            JwtAlgorithm::ES384 => "ES384",
            JwtAlgorithm::EdDSA => "EdDSA",
        }
    }

    /// Exact, case-sensitive: `"none"`, `"NONE"` and `"hs256"` all fail here (RFC 7515 names are case-sensitive).
    pub fn from_name(name: &str) -> Option<JwtAlgorithm> {
        JwtAlgorithm::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )
    }

    pub fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            JwtAlgorithm::HS256 => A::HS256,
            JwtAlgorithm::HS384 => A::HS384,
            JwtAlgorithm::HS512 => A::HS512,
            JwtAlgorithm::RS256 => A::RS256,
            JwtAlgorithm::RS384 => A::RS384,
            JwtAlgorithm::RS512 => A::RS512,
            JwtAlgorithm::PS256 => A::PS256,
            JwtAlgorithm::PS384 => A::PS384,
            JwtAlgorithm::PS512 => A::PS512,
            JwtAlgorithm::ES256 => A::ES256,
            JwtAlgorithm::ES384 => A::ES384,
            JwtAlgorithm::EdDSA => A::EdDSA,
        }
    }

    /// The minimum HMAC secret length, RFC 7518 §3.2: a key at least as long as the hash output.
    pub fn min_secret_len(self) -> usize {
        match self {
            JwtAlgorithm::HS256 => 32,
            JwtAlgorithm::HS384 => 48,
            JwtAlgorithm::HS512 => 64,
            _ => 0,
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The algorithm scopegate signs its assertion with. Never RSA: it is signed per request (product §7.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum AssertionAlgorithm {
    #[default]
    EdDSA,
    ES256,
    HS256,
}

impl AssertionAlgorithm {
    pub fn name(self) -> &'static str {
        match self {
            AssertionAlgorithm::EdDSA => "EdDSA",
            AssertionAlgorithm::ES256 => "ES256",
            AssertionAlgorithm::HS256 => "HS256",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_are_exact() {
        assert_eq!(JwtAlgorithm::from_name("ES256"), Some(JwtAlgorithm::ES256));
        for bad in ["none", "None", "NONE", "nOnE", "es256", "HS256 ", ""] {
            assert_eq!(JwtAlgorithm::from_name(bad), None, "{bad:?}");
        }
    }
}
