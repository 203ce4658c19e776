//! What policy grants one identity, as plain values: the identity keeps it (computed once per
//! identity by `policy::Policy::standing`, and identities live in one config snapshot), so the
//! cached-token path reads it instead of matching every `[[grants]]` entry again.

use super::ScopeSet;

/// Why a `[[grants]]` entry applied to an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantMatch {
    pub index: usize,
    pub via: GrantVia,
    pub scopes: ScopeSet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantVia {
    Subject,
    Group(String),
}

/// An identity's scopes under one policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// The credential's own scopes that the catalogue knows.
    pub credential: ScopeSet,
    /// Scope names the credential carried that the catalogue does not know: ignored, each with a
    /// reason.
    pub unknown: Vec<String>,
    pub grants: Vec<GrantMatch>,
    /// Literal union of the credential's scopes and its grants.
    pub granted: ScopeSet,
    /// `granted` with implication applied.
    pub effective: ScopeSet,
}

/// Subjects match exactly; e-mail addresses match case-insensitively, as the gateway's own
/// `identityScopes` does.
pub fn subject_eq(configured: &str, subject: &str) -> bool {
    configured == subject || (configured.contains('@') && configured.eq_ignore_ascii_case(subject))
}
