//! `JwtError`: every way a bearer JWT can be refused, each with a stable code, a message that says what
//! was wrong (never the token), and the one refusal it becomes. It is its own file because the
//! pre-parser, the claim rules, the signature check and the cache all produce it, and the codes are a
//! contract with audit lines, metrics and `WWW-Authenticate` — one list to read and to keep stable.

use crate::config::JwtAlgorithm;
use crate::error::{Refusal, RefusalKind};

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
