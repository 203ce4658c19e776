//! `OidcError`: every way a sign-in, a session cookie or a logout can be refused, each with a stable
//! code, a message that names what was wrong (never a token, code or cookie value), and the one refusal
//! it becomes: 400 for a callback that does not belong to a sign-in scopegate started, 401 for a
//! credential that does not hold (a cookie, a code, an ID token), 403 for an ambient request from
//! another site, 502/503 when the provider cannot be asked.

use crate::error::{Reason, Refusal, RefusalKind};
use crate::identity::jwt::JwtError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OidcError {
    /// Sign-in over plain http on a host that is not loopback.
    InsecureOrigin(String),
    /// Sign-in from an origin that is not one of `[server] allowed_origins`.
    NotPublicOrigin(String),
    /// A cookie-authenticated upgrade or state-changing request from another origin.
    CrossSite(String),
    /// The session cookie is not a value scopegate sealed, or was changed.
    SessionForged,
    /// Sealed with a key that is no longer configured.
    SessionUnknownKey,
    /// Signed in with another issuer or client than the current config's.
    SessionWrongProvider,
    SessionExpired {
        ago: u64,
    },
    /// The session cookie twice (one of them planted).
    SessionAmbiguous,
    ProviderUnavailable,
    StateMissing,
    /// No login-state cookie for this `state`: not a sign-in this browser started here.
    LoginUnknown,
    /// The login-state cookie does not open, or names another `state`.
    LoginForged,
    LoginExpired,
    StateReplayed,
    IssuerMissing,
    IssuerMismatch {
        got: String,
    },
    CodeMissing,
    /// The provider answered the authorization request with an error (`access_denied`, …).
    ProviderRefused {
        error: String,
    },
    /// The token endpoint refused the code (another client's, used, expired, wrong verifier).
    CodeRejected {
        error: String,
    },
    TokenEndpoint(String),
    IdToken(JwtError),
    NonceMismatch,
    AzpMismatch,
    ReturnOffOrigin,
    Duplicate(String),
}

impl OidcError {
    pub fn code(&self) -> &'static str {
        match self {
            OidcError::InsecureOrigin(_) => "insecure_origin",
            OidcError::CrossSite(_) => "cross_site_cookie",
            OidcError::NotPublicOrigin(_) => "origin_not_public",
            OidcError::SessionForged => "session_forged",
            OidcError::SessionUnknownKey => "session_unknown_key",
            OidcError::SessionWrongProvider => "session_wrong_provider",
            OidcError::SessionExpired { .. } => "session_expired",
            OidcError::SessionAmbiguous => "session_ambiguous",
            OidcError::ProviderUnavailable => "oidc_unavailable",
            OidcError::StateMissing => "state_missing",
            OidcError::LoginUnknown => "login_unknown",
            OidcError::LoginForged => "login_forged",
            OidcError::LoginExpired => "login_expired",
            OidcError::StateReplayed => "state_replayed",
            OidcError::IssuerMissing => "iss_missing",
            OidcError::IssuerMismatch { .. } => "iss_mismatch",
            OidcError::CodeMissing => "code_missing",
            OidcError::ProviderRefused { .. } => "provider_refused",
            OidcError::CodeRejected { .. } => "code_rejected",
            OidcError::TokenEndpoint(_) => "token_endpoint_failed",
            OidcError::IdToken(_) => "id_token_invalid",
            OidcError::NonceMismatch => "nonce_mismatch",
            OidcError::AzpMismatch => "azp_mismatch",
            OidcError::ReturnOffOrigin => "return_off_origin",
            OidcError::Duplicate(_) => "duplicate_parameter",
        }
    }

    pub fn message(&self) -> String {
        match self {
            OidcError::InsecureOrigin(o) => format!(
                "sign-in over plain http is only for loopback; {o} needs https (TLS on scopegate, or a trusted X-Forwarded-Proto)"
            ),
            OidcError::NotPublicOrigin(o) => format!(
                "sign-in is only offered on the public origins of [server] allowed_origins, not {o}"
            ),
            OidcError::CrossSite(why) => format!(
                "a cookie session only works from scopegate's own origin for upgrades and state-changing requests ({why})"
            ),
            OidcError::SessionForged => "the session cookie was not sealed by scopegate or was changed".into(),
            OidcError::SessionUnknownKey => "the session cookie was sealed with a key that is no longer configured; sign in again".into(),
            OidcError::SessionWrongProvider => "the session was signed in with another issuer or client; sign in again".into(),
            OidcError::SessionExpired { ago } => format!("the session ended {ago} s ago; sign in again"),
            OidcError::SessionAmbiguous => "the session cookie was sent twice".into(),
            OidcError::ProviderUnavailable => "the identity provider's metadata and keys are not available yet".into(),
            OidcError::StateMissing => "the sign-in callback has no state".into(),
            OidcError::LoginUnknown => "no sign-in was started from this browser for this state".into(),
            OidcError::LoginForged => "the sign-in state cookie was not sealed by scopegate or names another state".into(),
            OidcError::LoginExpired => "the sign-in took too long; start again".into(),
            OidcError::StateReplayed => "this sign-in state was already used".into(),
            OidcError::IssuerMissing => "the provider sends iss with authorization responses (RFC 9207) but this one has none".into(),
            OidcError::IssuerMismatch { got } => format!(
                "the authorization response comes from issuer {got:?}, not the configured one (RFC 9207 mix-up defence)"
            ),
            OidcError::CodeMissing => "the sign-in callback has no code".into(),
            OidcError::ProviderRefused { error } => format!("the identity provider refused the sign-in: {error}"),
            OidcError::CodeRejected { error } => format!("the identity provider refused the authorization code: {error}"),
            OidcError::TokenEndpoint(e) => format!("the identity provider's token endpoint failed: {e}"),
            OidcError::IdToken(e) => format!("the ID token does not hold: {}", e.message()),
            OidcError::NonceMismatch => "the ID token's nonce is not the one this sign-in sent".into(),
            OidcError::AzpMismatch => "the ID token was issued to another client (azp)".into(),
            OidcError::ReturnOffOrigin => "the return address is not a path on scopegate's own origin".into(),
            OidcError::Duplicate(p) => format!("the parameter {p} was sent more than once"),
        }
    }

    pub fn kind(&self) -> RefusalKind {
        match self {
            OidcError::InsecureOrigin(_)
            | OidcError::CrossSite(_)
            | OidcError::NotPublicOrigin(_) => RefusalKind::Forbidden,
            OidcError::SessionForged
            | OidcError::SessionUnknownKey
            | OidcError::SessionWrongProvider
            | OidcError::SessionExpired { .. }
            | OidcError::SessionAmbiguous
            | OidcError::ProviderRefused { .. }
            | OidcError::CodeRejected { .. }
            | OidcError::IdToken(_)
            | OidcError::NonceMismatch
            | OidcError::AzpMismatch => RefusalKind::Unauthorized,
            OidcError::ProviderUnavailable => RefusalKind::ServiceUnavailable,
            OidcError::TokenEndpoint(_) => RefusalKind::BadGateway,
            OidcError::StateMissing
            | OidcError::LoginUnknown
            | OidcError::LoginForged
            | OidcError::LoginExpired
            | OidcError::StateReplayed
            | OidcError::IssuerMissing
            | OidcError::IssuerMismatch { .. }
            | OidcError::CodeMissing
            | OidcError::ReturnOffOrigin
            | OidcError::Duplicate(_) => RefusalKind::BadRequest,
        }
    }

    pub fn refusal(&self) -> Refusal {
        let mut r = match self.kind() {
            RefusalKind::Unauthorized => Refusal::unauthorized(self.code(), self.message()),
            kind => Refusal::new(kind, self.code(), self.message()),
        };
        if let OidcError::IdToken(e) = self {
            r.reasons.push(Reason::new(e.code(), e.message()));
        }
        r
    }
}
