//! Browser sign-in with OpenID Connect: the authorization code flow with PKCE (S256), `state` and
//! `nonce` (RFC 9700 §2.1), RFC 9207's `iss` check, and the ID token verified with scopegate's own JWT
//! rules (RFC 8725) against the provider's discovered JWKS. The signed-in person then lives in a sealed
//! cookie — no server-side session table — whose end is enforced from the sealed value.
//!
//! One concern per file: `discovery` (the provider's metadata and the ID token verifier, fetched
//! before ready and refreshed), `flow` (starting a sign-in and checking what the callback brings, pure
//! functions), `token` (the token endpoint), `seal` (AEAD with a key ring), `session` (what the
//! cookies hold), `cookie` (names, `Set-Cookie`, stripping before upstream), `origin` (the browser's
//! origin and the same-origin rules), `error` (every refusal). This file ties them into the
//! [`OidcSource`] of one config snapshot; the request path's `sign_in` phase calls it.

pub mod cookie;
pub mod discovery;
pub mod error;
pub mod flow;
pub mod origin;
pub mod seal;
pub mod session;
pub mod token;

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use crate::config::OidcConfig;
use crate::error::Reason;
use crate::identity::{AuthMethod, Identity};

use cookie::{Found, Jar};
use discovery::Discovery;
pub use error::OidcError;
pub use origin::BrowserOrigin;
use seal::{Purpose, Sealer, UnsealError};
use session::{LoginState, Session};

/// The redirect URI to register at the provider is this path on scopegate's public origin.
pub const CALLBACK_PATH: &str = "/.scopegate/callback";
/// Ends the session (and the provider's, where it has an `end_session_endpoint`).
pub const LOGOUT_PATH: &str = "/.scopegate/logout";
/// Starts a sign-in explicitly: `?return=/path` (a path on our origin only).
pub const LOGIN_PATH: &str = "/.scopegate/login";

/// Browsers keep cookies up to 4096 bytes, name included; stay clear of it.
const MAX_COOKIE_VALUE: usize = 3800;

/// A response scopegate itself gives during sign-in: where to send the browser, and the cookies.
#[derive(Debug)]
pub struct Redirect {
    pub location: String,
    pub set_cookies: Vec<HeaderValue>,
    /// For the log line: who signed in (callback) or out (logout).
    pub subject: Option<String>,
    /// On logout, the session's sealed end (with `subject`, it names the sign-in whose live
    /// connections end now).
    pub signed_in_until: Option<u64>,
}

/// Sign-in for one config snapshot.
pub struct OidcSource {
    cfg: OidcConfig,
    discovery: Arc<Discovery>,
    sealer: Sealer,
    /// Identities of sessions seen before, by cookie value, so a signed-in request costs a lookup.
    sessions: quick_cache::sync::Cache<Box<str>, Arc<Identity>>,
    /// `state`s already redeemed, until their login would have expired anyway (replay defence).
    used_states: quick_cache::sync::Cache<String, u64>,
}

impl OidcSource {
    /// `discovery` may be carried over from the previous snapshot ([`Discovery::same_source`]).
    pub fn new(cfg: &OidcConfig, discovery: Arc<Discovery>) -> Result<OidcSource, String> {
        Ok(OidcSource {
            sealer: Sealer::new(&cfg.cookie_keys).ok_or("[oidc] has no usable cookie key")?,
            cfg: cfg.clone(),
            discovery,
            sessions: crate::util::bounded_cache(10_000),
            used_states: crate::util::bounded_cache(10_000),
        })
    }

    pub fn discovery(&self) -> &Arc<Discovery> {
        &self.discovery
    }

    pub fn config(&self) -> &OidcConfig {
        &self.cfg
    }

    /// The signed-in person of a request without a bearer credential: `None` when it carries no
    /// session cookie. Synchronous (an AEAD open, then a cache), so it never waits.
    pub fn identify(
        &self,
        headers: &HeaderMap,
        https: bool,
        now: u64,
    ) -> Option<Result<Arc<Identity>, OidcError>> {
        let value = match cookie::find_session(headers, Jar { https }) {
            Found::None => return None,
            Found::Several => return Some(Err(OidcError::SessionAmbiguous)),
            Found::One(v) => v,
        };
        if let Some(hit) = self.sessions.get(value) {
            let end = hit.expires_at.unwrap_or(0);
            if now >= end {
                self.sessions.remove(value);
                return Some(Err(OidcError::SessionExpired { ago: now - end }));
            }
            return Some(Ok(hit));
        }
        Some(self.open_session(value, now).map(|s| {
            let identity = Arc::new(self.identity(&s));
            self.sessions.insert(value.into(), identity.clone());
            identity
        }))
    }

    fn unseal_session(&self, value: &str) -> Result<Session, OidcError> {
        let plain = self
            .sealer
            .unseal(Purpose::Session, value)
            .map_err(|e| match e {
                UnsealError::UnknownKey => OidcError::SessionUnknownKey,
                UnsealError::Malformed | UnsealError::Forged => OidcError::SessionForged,
            })?;
        let session: Session =
            serde_json::from_slice(&plain).map_err(|_| OidcError::SessionForged)?;
        if session.iss != self.cfg.issuer || session.aud != self.cfg.client_id {
            return Err(OidcError::SessionWrongProvider);
        }
        Ok(session)
    }

    fn open_session(&self, value: &str, now: u64) -> Result<Session, OidcError> {
        let session = self.unseal_session(value)?;
        if now >= session.exp {
            return Err(OidcError::SessionExpired {
                ago: now - session.exp,
            });
        }
        Ok(session)
    }

    fn identity(&self, s: &Session) -> Identity {
        let mut id = Identity::new(
            &s.sub,
            AuthMethod::Oidc,
            s.groups.clone(),
            std::iter::empty(),
        );
        id.display_name = s.name.clone();
        id.expires_at = Some(s.exp);
        id.notes.push(Reason::new(
            "oidc_session",
            format!(
                "signed in with {} (client {}); the session ends at {}",
                s.iss, s.aud, s.exp
            ),
        ));
        id
    }

    /// An ended session that can be renewed with its refresh token, if the request carries one.
    pub fn renewable(&self, headers: &HeaderMap, https: bool, now: u64) -> Option<Session> {
        let jar = Jar { https };
        let Found::One(value) = cookie::find_session(headers, jar) else {
            return None;
        };
        self.unseal_session(value)
            .ok()
            .filter(|s| now >= s.exp && s.refresh_token.is_some())
    }

    /// Starts a sign-in that returns to `return_to`: the redirect to the provider and the
    /// login-state cookie.
    pub fn begin(
        &self,
        origin: &BrowserOrigin,
        return_to: &str,
        now: u64,
    ) -> Result<Redirect, OidcError> {
        origin.check_secure()?;
        if !origin::local_path(return_to) {
            return Err(OidcError::ReturnOffOrigin);
        }
        let provider = self
            .discovery
            .provider()
            .ok_or(OidcError::ProviderUnavailable)?;
        let ttl = self.cfg.login_ttl.as_secs();
        let login = flow::start(return_to, origin.redirect_uri(), now, ttl);
        let jar = Jar {
            https: origin.https,
        };
        let sealed = self.sealer.seal(
            Purpose::Login,
            &serde_json::to_vec(&login).unwrap_or_default(),
        );
        let set_cookies = jar
            .set(&jar.login_name(&login.state), &sealed, ttl)
            .into_iter()
            .collect();
        Ok(Redirect {
            location: flow::authorization_url(&provider.meta, &self.cfg, &login),
            set_cookies,
            subject: None,
            signed_in_until: None,
        })
    }

    /// Finishes a sign-in at the callback: checks the response, redeems the code, verifies the ID
    /// token, and seals the session. The redirect goes back to where the sign-in started.
    pub async fn finish(
        &self,
        origin: &BrowserOrigin,
        query: Option<&str>,
        headers: &HeaderMap,
        now: u64,
    ) -> Result<Redirect, OidcError> {
        let provider = self
            .discovery
            .provider()
            .ok_or(OidcError::ProviderUnavailable)?;
        let params = flow::query_params(
            query,
            &["code", "state", "iss", "error", "error_description"],
        )?;
        let state = flow::param(&params, "state").ok_or(OidcError::StateMissing)?;
        let jar = Jar {
            https: origin.https,
        };
        let login_cookie = jar.login_name(state);
        let login = match cookie::find(headers, &login_cookie) {
            Found::None => None,
            Found::Several => return Err(OidcError::LoginForged),
            Found::One(v) => Some(self.open_login(v)?),
        };
        let code = flow::check_callback(&params, login.as_ref(), &provider.meta, now)?;
        let Some(login) = login else {
            return Err(OidcError::LoginUnknown);
        };
        if self.used_states.get(&login.state).is_some() {
            return Err(OidcError::StateReplayed);
        }
        self.used_states.insert(login.state.clone(), login.exp);
        let tokens = token::redeem_code(
            &self.cfg,
            &provider.meta,
            &code,
            &login.verifier,
            &login.redirect_uri,
        )
        .await?;
        let id_token = tokens.id_token.ok_or(OidcError::IdToken(
            crate::identity::jwt::JwtError::Malformed("the token response has no id_token"),
        ))?;
        let verified = provider
            .verifier
            .verify_token_at(&id_token, now)
            .await
            .map_err(OidcError::IdToken)?;
        flow::check_id_token_claims(&verified.claims, &login.nonce, &self.cfg.client_id)?;
        let name = self
            .cfg
            .name_claim
            .as_deref()
            .and_then(|c| verified.claims.get(c))
            .and_then(|v| v.as_str())
            .map(|s| s.chars().take(128).collect());
        let session = Session {
            sub: verified.subject.clone(),
            name,
            groups: verified.groups,
            iss: self.cfg.issuer.clone(),
            aud: self.cfg.client_id.clone(),
            iat: now,
            exp: now + self.cfg.session_ttl.as_secs(),
            refresh_token: tokens.refresh_token,
        };
        let mut set_cookies = vec![self.session_cookie(jar, session)?];
        set_cookies.extend(jar.clear(&login_cookie));
        Ok(Redirect {
            location: login.return_to,
            set_cookies,
            subject: Some(verified.subject),
            signed_in_until: None,
        })
    }

    fn open_login(&self, value: &str) -> Result<LoginState, OidcError> {
        let plain = self
            .sealer
            .unseal(Purpose::Login, value)
            .map_err(|_| OidcError::LoginForged)?;
        serde_json::from_slice(&plain).map_err(|_| OidcError::LoginForged)
    }

    /// Seals a session into its cookie, refusing one too large for a browser to keep.
    fn session_cookie(&self, jar: Jar, session: Session) -> Result<HeaderValue, OidcError> {
        let ttl = session.exp.saturating_sub(session.iat);
        let sealed = self.seal_session(&session);
        if sealed.len() > MAX_COOKIE_VALUE {
            return Err(OidcError::TokenEndpoint(
                "the session (subject, groups, refresh token) is too large for a cookie".into(),
            ));
        }
        jar.set(jar.session_name(), &sealed, ttl)
            .ok_or_else(|| OidcError::TokenEndpoint("the session cookie cannot be written".into()))
    }

    fn seal_session(&self, s: &Session) -> String {
        self.sealer
            .seal(Purpose::Session, &serde_json::to_vec(s).unwrap_or_default())
    }

    /// Renews an ended session with its refresh token; the browser is sent back to `return_to`
    /// with the new cookie. A refused refresh means a fresh sign-in.
    pub async fn renew(
        &self,
        origin: &BrowserOrigin,
        session: Session,
        return_to: &str,
        now: u64,
    ) -> Result<Redirect, OidcError> {
        let provider = self
            .discovery
            .provider()
            .ok_or(OidcError::ProviderUnavailable)?;
        let Some(rt) = session.refresh_token.as_deref() else {
            return Err(OidcError::SessionExpired {
                ago: now.saturating_sub(session.exp),
            });
        };
        let tokens = token::refresh(&self.cfg, &provider.meta, rt).await?;
        let mut renewed = session.clone();
        if let Some(id_token) = tokens.id_token {
            // OpenID Connect Core §12.2: the same person, from the same issuer, for us.
            let v = provider
                .verifier
                .verify_token_at(&id_token, now)
                .await
                .map_err(OidcError::IdToken)?;
            if v.subject != session.sub {
                return Err(OidcError::IdToken(
                    crate::identity::jwt::JwtError::SubjectMissing(self.cfg.subject_claim.clone()),
                ));
            }
            renewed.groups = v.groups;
        }
        renewed.refresh_token = tokens.refresh_token.or(session.refresh_token);
        renewed.iat = now;
        renewed.exp = now + self.cfg.session_ttl.as_secs();
        let jar = Jar {
            https: origin.https,
        };
        Ok(Redirect {
            location: return_to.to_string(),
            set_cookies: vec![self.session_cookie(jar, renewed)?],
            subject: Some(session.sub),
            signed_in_until: None,
        })
    }

    /// Ends the session: clears the cookie and, where the provider has an `end_session_endpoint`,
    /// sends the browser there (OpenID Connect RP-Initiated Logout) to end the provider's too.
    pub fn logout(&self, origin: &BrowserOrigin, headers: &HeaderMap) -> Redirect {
        let jar = Jar {
            https: origin.https,
        };
        let session = match cookie::find_session(headers, jar) {
            Found::One(v) => self.unseal_session(v).ok(),
            _ => None,
        };
        let back = format!("{}{}", origin.origin(), self.cfg.post_logout_redirect);
        let end_session = self
            .discovery
            .provider()
            .and_then(|p| p.meta.end_session_endpoint.clone());
        let location = match end_session {
            Some(end) => {
                let sep = if end.contains('?') { '&' } else { '?' };
                format!(
                    "{end}{sep}client_id={}&post_logout_redirect_uri={}",
                    flow::encode(&self.cfg.client_id),
                    flow::encode(&back)
                )
            }
            None => self.cfg.post_logout_redirect.clone(),
        };
        Redirect {
            location,
            set_cookies: jar.clear(jar.session_name()).into_iter().collect(),
            signed_in_until: session.as_ref().map(|s| s.exp),
            subject: session.map(|s| s.sub),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(keys: Vec<[u8; 32]>) -> OidcSource {
        let cfg = OidcConfig {
            issuer: "https://idp.example.com".into(),
            client_id: "sg".into(),
            client_secret: None,
            scopes: vec!["openid".into()],
            subject_claim: "sub".into(),
            groups_claim: Some("groups".into()),
            name_claim: Some("name".into()),
            session_ttl: std::time::Duration::from_secs(3600),
            login_ttl: std::time::Duration::from_secs(600),
            cookie_keys: keys,
            id_token_algorithms: vec![],
            leeway: std::time::Duration::from_secs(30),
            discovery_refresh: std::time::Duration::from_secs(600),
            timeout: std::time::Duration::from_secs(5),
            post_logout_redirect: "/".into(),
        };
        let d = Discovery::new(&cfg);
        OidcSource::new(&cfg, d).unwrap()
    }

    fn session(exp: u64) -> Session {
        Session {
            sub: "alice@example.com".into(),
            name: Some("Alice".into()),
            groups: vec!["ops".into()],
            iss: "https://idp.example.com".into(),
            aud: "sg".into(),
            iat: 1000,
            exp,
            refresh_token: None,
        }
    }

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_str(&format!("a=b; __Host-scopegate-session={v}")).unwrap(),
        );
        h
    }

    #[test]
    fn a_sealed_session_identifies_until_its_end_and_nothing_else_does() {
        let src = source(vec![[1; 32]]);
        let sealed = src.seal_session(&session(5000));
        let id = src
            .identify(&with_cookie(&sealed), true, 4000)
            .unwrap()
            .unwrap();
        assert_eq!(id.subject, "alice@example.com");
        assert_eq!(id.method, AuthMethod::Oidc);
        assert_eq!(id.groups, ["ops"], "groups come from the session");
        assert_eq!(id.expires_at, Some(5000));
        // Cached now, and still ended at its end.
        let err = src
            .identify(&with_cookie(&sealed), true, 5000)
            .unwrap()
            .unwrap_err();
        assert_eq!(err.code(), "session_expired");
        let fresh = src.seal_session(&session(5000));
        assert_eq!(
            src.identify(&with_cookie(&fresh), true, 6000)
                .unwrap()
                .unwrap_err()
                .code(),
            "session_expired",
            "expiry is read from the sealed value, not the cookie's Max-Age"
        );
        assert!(
            src.identify(&with_cookie(&sealed), false, 4000).is_none(),
            "over http the __Host- cookie is not ours to read"
        );
        let mut other = session(5000);
        other.iss = "https://other.example.com".into();
        assert_eq!(
            src.identify(&with_cookie(&src.seal_session(&other)), true, 4000)
                .unwrap()
                .unwrap_err()
                .code(),
            "session_wrong_provider"
        );
        let login_sealed = src
            .sealer
            .seal(Purpose::Login, &serde_json::to_vec(&session(5000)).unwrap());
        assert_eq!(
            src.identify(&with_cookie(&login_sealed), true, 4000)
                .unwrap()
                .unwrap_err()
                .code(),
            "session_forged",
            "a login-state value is not a session"
        );
        let rotated = source(vec![[2; 32], [1; 32]]);
        assert!(rotated
            .identify(&with_cookie(&sealed), true, 4000)
            .unwrap()
            .is_ok());
        let retired = source(vec![[2; 32]]);
        assert_eq!(
            retired
                .identify(&with_cookie(&sealed), true, 4000)
                .unwrap()
                .unwrap_err()
                .code(),
            "session_unknown_key"
        );
    }
}
