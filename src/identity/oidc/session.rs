//! What the two sealed cookies hold. A [`Session`] is the signed-in person — subject, name, groups —
//! with the server-side deadline it may not outlive, whatever the browser does with the cookie's own
//! `Max-Age`; the provider it came from (a config naming another issuer or client refuses it); and,
//! when the provider gave them, the refresh token and the ID token (the `id_token_hint` of logout). A
//! [`LoginState`] is one sign-in on its way: `state`, `nonce`, the PKCE verifier, the return path and
//! the redirect URI it was started with, and its own short deadline.

use serde::{Deserialize, Serialize};

/// A signed-in browser's session (sealed into the session cookie).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Issuer and client it was signed in with.
    pub iss: String,
    pub aud: String,
    /// Unix seconds: signed in, and the end of the session (enforced here, not by the browser).
    pub iat: u64,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// One sign-in in progress (sealed into a login-state cookie named after its `state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    /// The path and query of the request that started the sign-in: always on our own origin.
    pub return_to: String,
    pub redirect_uri: String,
    pub exp: u64,
}
