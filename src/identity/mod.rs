//! Identity: who is calling, from which source, and what the credential itself grants.
//!
//! Sources, and the one rule that orders them (documented in the README):
//!
//! 1. **The request's own credential wins.** An `Authorization: Bearer` value is a JWT or an API token.
//!    If it is present but invalid the request is refused (401) — it never falls back to a network
//!    identity, so a broken token cannot silently turn into "whoever the proxy says".
//! 2. **Network identities** — Tailscale serve headers, a trusted proxy's user header — are read only
//!    from peers the config names, and only when there is no bearer credential. When a bearer credential
//!    is present they are recorded as "seen", never merged. Two network identities naming different
//!    users are ambiguous and refused (400).
//!
//! Everything here decides without I/O except the two places that must ask someone: a JWKS refetch on an
//! unknown `kid`, and an optional `tailscaled` WhoIs.

pub mod api_token;
pub(crate) mod forwarded;
pub mod hygiene;
pub(crate) mod jwks;
pub mod jwt;
pub mod oidc;
pub(crate) mod rfc2047;
pub(crate) mod tailscale;
pub(crate) mod trusted_proxy;

use std::net::IpAddr;
use std::sync::Arc;

use http::HeaderMap;

use crate::error::{Reason, Refusal};
use crate::values::Standing;

/// How an identity was established; the assertion's `amr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    Jwt,
    ApiToken,
    Tailscale,
    TrustedProxy,
    /// A browser signed in with OpenID Connect (the session cookie).
    Oidc,
}

impl AuthMethod {
    pub fn amr(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt",
            AuthMethod::ApiToken => "api_token",
            AuthMethod::Tailscale => "tailscale",
            AuthMethod::TrustedProxy => "trusted_proxy",
            AuthMethod::Oidc => "oidc",
        }
    }

    fn subject_label(self) -> &'static str {
        match self {
            AuthMethod::Jwt => "jwt sub",
            AuthMethod::ApiToken => "api_token sub",
            AuthMethod::Tailscale => "tailscale login",
            AuthMethod::TrustedProxy => "trusted_proxy user",
            AuthMethod::Oidc => "oidc sub",
        }
    }
}

/// A verified caller and everything policy needs to know about it, computed once (and cached with a
/// verified token).
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject: String,
    pub method: AuthMethod,
    pub display_name: Option<String>,
    pub groups: Vec<String>,
    /// The scope names the credential itself carries, as it carries them (policy reads them
    /// against the catalogue).
    pub scope_claim: Vec<String>,
    /// What policy grants this identity, set by `policy::Policy::standing` on first use (identities
    /// live in one config snapshot, so it cannot go stale).
    pub standing: std::sync::OnceLock<Standing>,
    /// Unix seconds after which the credential is no longer valid (JWT `exp`).
    pub expires_at: Option<u64>,
    /// How it was established (key, issuer, WhoIs confirmation …), shown in reasons.
    pub notes: Vec<Reason>,
    /// The profile's user-header value for this identity, made on first use (identities live in one
    /// config snapshot, so it cannot go stale).
    pub gateway_header: std::sync::OnceLock<Option<http::HeaderValue>>,
    /// The subject's key in the per-identity rate table, hashed on first use.
    pub limit_tag: std::sync::OnceLock<u64>,
}

impl Identity {
    /// A verified identity; what it is granted is policy's to say (`Policy::standing`).
    pub fn new<'a, I>(
        subject: &str,
        method: AuthMethod,
        groups: Vec<String>,
        scope_claim: I,
    ) -> Identity
    where
        I: IntoIterator<Item = &'a str>,
    {
        Identity {
            subject: subject.to_string(),
            method,
            display_name: None,
            groups,
            scope_claim: scope_claim.into_iter().map(str::to_string).collect(),
            standing: std::sync::OnceLock::new(),
            expires_at: None,
            notes: Vec::new(),
            gateway_header: std::sync::OnceLock::new(),
            limit_tag: std::sync::OnceLock::new(),
        }
    }

    /// `"jwt sub=bob"`, `"tailscale login=alice@example.com"`: how reasons name the caller.
    pub fn describe(&self) -> String {
        format!("{}={}", self.method.subject_label(), self.subject)
    }
}

/// A network identity that was present but not used (a bearer credential took precedence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: AuthMethod,
    pub subject: String,
}

/// The outcome of identification for one request.
#[derive(Debug, Clone, Default)]
pub struct Identified {
    pub identity: Option<Arc<Identity>>,
    pub seen: Vec<Seen>,
    /// Why there is no identity, when there is none and a hint helps (e.g. a tagged Tailscale node).
    pub anonymous_reason: Option<Reason>,
}

/// Where a connection came from, as far as trust decisions go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(IpAddr),
    /// The unix-socket listener (e.g. `tailscale serve unix:/…`).
    Unix,
}

impl Peer {
    pub fn ip(self) -> Option<IpAddr> {
        match self {
            Peer::Tcp(ip) => Some(crate::config::canonical_ip(ip)),
            Peer::Unix => None,
        }
    }
}

/// What proved a request's bearer credential (see [`Sources::identify_cached_proving`]).
#[derive(Clone)]
pub enum Proof {
    /// A verified JWT found in the token cache.
    Jwt(jwt::CacheHit),
    /// A configured API token.
    ApiToken(Arc<Identity>),
}

/// The parts of a request identification reads: the peer and the *original* headers (before hygiene).
pub struct RequestFacts<'a> {
    pub peer: Peer,
    pub headers: &'a HeaderMap,
    /// The client address already resolved from trusted forwarding headers.
    pub client_ip: Option<IpAddr>,
    /// The browser's scheme is https (TLS here, or a trusted `X-Forwarded-Proto`): which session
    /// cookie name is scopegate's.
    pub https: bool,
}

/// All configured identity sources of one snapshot.
pub struct Sources {
    pub jwt: Option<jwt::JwtVerifier>,
    pub api_tokens: api_token::ApiTokens,
    pub tailscale: Option<tailscale::TailscaleSource>,
    pub trusted_proxy: Option<trusted_proxy::TrustedProxySource>,
    /// Browser sign-in: the session cookie, read only when there is no bearer credential.
    pub oidc: Option<oidc::OidcSource>,
}

/// A bearer value's source, by shape.
pub enum Bearer<'a> {
    None,
    Token(&'a str),
}

impl Sources {
    /// Identifies a request per the precedence rule in the module docs.
    pub async fn identify(&self, facts: &RequestFacts<'_>) -> Result<Identified, Refusal> {
        match bearer_token(facts.headers)? {
            Bearer::Token(token) => {
                let identity = self.verify_bearer(token).await?;
                // The bearer credential decides. What the network claims is only recorded: it is not
                // verified (no WhoIs round trip) and cannot fail or widen the request.
                Ok(Identified {
                    identity: Some(identity),
                    seen: self.network_claims(facts),
                    anonymous_reason: None,
                })
            }
            Bearer::None => match self.session(facts) {
                Some(session) => session,
                None => self.network_identity(facts).await,
            },
        }
    }

    /// The request's session cookie, when sign-in is on and it carries one. Like a bearer credential
    /// it is the request's own: an invalid one is refused, never replaced by a network identity.
    fn session(&self, facts: &RequestFacts<'_>) -> Option<Result<Identified, Refusal>> {
        let outcome = self
            .oidc
            .as_ref()?
            .identify(facts.headers, facts.https, jwt::unix_now())?;
        Some(
            outcome
                .map(|identity| Identified {
                    identity: Some(identity),
                    seen: self.network_claims(facts),
                    anonymous_reason: None,
                })
                .map_err(|e| e.refusal()),
        )
    }

    /// The identities trusted peers' headers name, unverified, for the record.
    fn network_claims(&self, facts: &RequestFacts<'_>) -> Vec<Seen> {
        let mut seen = Vec::new();
        let value = |name: &str| {
            facts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| rfc2047::decode(v).trim().to_string())
                .filter(|v| !v.is_empty())
        };
        if let Some(ts) = &self.tailscale {
            if ts.trusts(facts.peer) {
                if let Some(login) = value("tailscale-user-login") {
                    seen.push(Seen {
                        method: AuthMethod::Tailscale,
                        subject: login,
                    });
                }
            }
        }
        if let Some(tp) = &self.trusted_proxy {
            if tp.trusts(facts.peer) {
                if let Some(user) = value(tp.user_header().as_str()) {
                    seen.push(Seen {
                        method: AuthMethod::TrustedProxy,
                        subject: user,
                    });
                }
            }
        }
        seen
    }

    /// The common case, without awaiting: a bearer credential that is an API token or a JWT verified
    /// before. `None` means the full (async) identification must run.
    pub fn identify_cached(&self, facts: &RequestFacts<'_>) -> Option<Result<Identified, Refusal>> {
        self.identify_cached_proving(facts).0
    }

    /// [`Sources::identify_cached`], with what proved the bearer credential when it held: a
    /// connection may keep it and, for a request carrying byte for byte the same `Authorization`
    /// value under the same snapshot, ask [`Sources::recall`] instead.
    pub fn identify_cached_proving(
        &self,
        facts: &RequestFacts<'_>,
    ) -> (Option<Result<Identified, Refusal>>, Option<Proof>) {
        let token = match bearer_token(facts.headers) {
            Err(r) => return (Some(Err(r)), None),
            // Off the bearer path: a session cookie is looked at only when there is no bearer.
            Ok(Bearer::None) => return (self.session(facts), None),
            Ok(Bearer::Token(t)) => t,
        };
        // A JWT verified before is taken from the cache first: it was checked against the API
        // tokens when it was first seen, and skipping the API tokens' SHA-256 here keeps a JWT's
        // cost the same whether or not API tokens are configured.
        let cached = self
            .jwt
            .as_ref()
            .and_then(|j| j.cached_hit(token, jwt::unix_now()));
        let (identity, proof) = match cached {
            Some((Ok(id), hit)) => (Ok(id), Some(Proof::Jwt(hit))),
            cached => match self.api_tokens.lookup(token) {
                Some(id) => (Ok(id.clone()), Some(Proof::ApiToken(id))),
                None => match cached {
                    None => return (None, None),
                    Some((judged, _)) => (judged.map_err(|e| e.refusal()), None),
                },
            },
        };
        (Some(identity.map(|id| self.identified(id, facts))), proof)
    }

    /// The identification of a request whose `Authorization` value is exactly the one `proof` came
    /// from, under the snapshot these sources belong to: an API token's identity as it was, a JWT
    /// judged again as a cache lookup would judge it now (expiry, key set). `None` when the proof
    /// no longer counts: identify afresh.
    pub fn recall(
        &self,
        proof: &Proof,
        facts: &RequestFacts<'_>,
    ) -> Option<Result<Identified, Refusal>> {
        let identity = match proof {
            Proof::ApiToken(id) => Ok(id.clone()),
            Proof::Jwt(hit) => self
                .jwt
                .as_ref()?
                .rejudge(hit, jwt::unix_now())?
                .map_err(|e| e.refusal()),
        };
        Some(identity.map(|id| self.identified(id, facts)))
    }

    fn identified(&self, identity: Arc<Identity>, facts: &RequestFacts<'_>) -> Identified {
        Identified {
            identity: Some(identity),
            seen: self.network_claims(facts),
            anonymous_reason: None,
        }
    }

    /// A bearer credential: an API token if one matches, otherwise a JWT.
    pub async fn verify_bearer(&self, token: &str) -> Result<Arc<Identity>, Refusal> {
        if let Some(identity) = self.api_tokens.lookup(token) {
            return Ok(identity);
        }
        if jwt::looks_like_jwt(token) {
            return match &self.jwt {
                Some(v) => v.verify(token).await.map_err(|e| e.refusal()),
                None => Err(Refusal::unauthorized(
                    "jwt_not_configured",
                    "a JWT was presented but no [jwt] issuer is configured",
                )),
            };
        }
        Err(Refusal::unauthorized(
            "unknown_token",
            if self.api_tokens.is_empty() {
                "the bearer token is neither a JWT nor a configured API token"
            } else {
                "the bearer token matches no configured API token and is not a JWT"
            },
        ))
    }

    async fn network_identity(&self, facts: &RequestFacts<'_>) -> Result<Identified, Refusal> {
        let ts = match &self.tailscale {
            Some(t) => t.identify(facts).await?,
            None => tailscale::TailscaleOutcome::NotPresent,
        };
        let tp = match &self.trusted_proxy {
            Some(t) => t.identify(facts).await?,
            None => None,
        };
        let (ts_identity, ts_reason) = match ts {
            tailscale::TailscaleOutcome::Identified(id) => (Some(id), None),
            tailscale::TailscaleOutcome::Anonymous(reason) => (None, Some(reason)),
            tailscale::TailscaleOutcome::NotPresent => (None, None),
        };
        match (ts_identity, tp) {
            (Some(a), Some(b)) => {
                if crate::values::subject_eq(&a.subject, &b.subject) {
                    Ok(Identified {
                        seen: vec![Seen {
                            method: b.method,
                            subject: b.subject.clone(),
                        }],
                        identity: Some(a),
                        anonymous_reason: None,
                    })
                } else {
                    Err(Refusal::bad_request(
                        "conflicting_identities",
                        format!(
                            "conflicting identities: tailscale login {} and trusted proxy user {}",
                            a.subject, b.subject
                        ),
                    ))
                }
            }
            (Some(a), None) => Ok(Identified {
                identity: Some(a),
                seen: Vec::new(),
                anonymous_reason: None,
            }),
            (None, Some(b)) => Ok(Identified {
                identity: Some(b),
                seen: Vec::new(),
                anonymous_reason: None,
            }),
            (None, None) => Ok(Identified {
                identity: None,
                seen: Vec::new(),
                anonymous_reason: ts_reason,
            }),
        }
    }
}

/// Reads the single `Authorization: Bearer` value, refusing ambiguity (RFC 6750 §2.1).
pub fn bearer_token(headers: &HeaderMap) -> Result<Bearer<'_>, Refusal> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(first) = values.next() else {
        return Ok(Bearer::None);
    };
    if values.next().is_some() {
        return Err(Refusal::unauthorized(
            "duplicate_authorization",
            "more than one Authorization header was sent",
        )
        .with_invalid_request());
    }
    // Work on bytes: a token can be 1 KB, and this runs on every request.
    let raw = first.as_bytes().trim_ascii();
    let scheme_end = raw.iter().position(|&b| b == b' ').unwrap_or(raw.len());
    if !raw[..scheme_end].eq_ignore_ascii_case(b"bearer") {
        return Err(Refusal::unauthorized(
            "unsupported_scheme",
            "only Bearer credentials are accepted",
        )
        .with_invalid_request());
    }
    let token = raw[scheme_end..].trim_ascii();
    // Every token syntax we accept (RFC 6750 b64token, JWT, API tokens) is visible ASCII with no
    // whitespace; one branch-free pass (it vectorises) rejects anything else, including obs-text.
    // JWTs get their strict character check in the pre-parser, API tokens by their digest.
    let visible = token
        .iter()
        .fold(true, |ok, &b| ok & (b.wrapping_sub(0x21) < 0x5e));
    if !visible || token.is_empty() {
        return Err(Refusal::unauthorized(
            "malformed_authorization",
            "the Bearer credential is empty or has characters a token cannot have",
        )
        .with_invalid_request());
    }
    // SAFETY: every byte is in 0x21..=0x7e (checked just above), so `token` is ASCII, which is
    // always valid UTF-8. A second, validating pass over a token of up to a few KB cost about
    // 300 instructions per request.
    Ok(Bearer::Token(unsafe {
        std::str::from_utf8_unchecked(token)
    }))
}

impl Refusal {
    /// RFC 6750 `invalid_request`: the request itself was malformed rather than the token.
    pub fn with_invalid_request(mut self) -> Self {
        self.bearer_error = Some("invalid_request");
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert!(matches!(bearer_token(&h), Ok(Bearer::None)));
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer abc.def.ghi"),
        );
        assert!(matches!(bearer_token(&h), Ok(Bearer::Token("abc.def.ghi"))));
        h.insert("authorization", HeaderValue::from_static("bearer   tok  "));
        assert!(matches!(bearer_token(&h), Ok(Bearer::Token("tok"))));
        h.insert(
            "authorization",
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert_eq!(bearer_token(&h).err().unwrap().code, "unsupported_scheme");
        h.insert("authorization", HeaderValue::from_static("Bearer"));
        assert_eq!(
            bearer_token(&h).err().unwrap().code,
            "malformed_authorization"
        );
        // Inner whitespace and non-ASCII bytes (obs-text) are not token characters.
        for bad in [
            &b"Bearer a b"[..],
            b"Bearer a\tb",
            b"Bearer a\xc3\xa9b",
            b"Bearer \xff",
            b"Bearer abc\x80",
        ] {
            h.insert("authorization", HeaderValue::from_bytes(bad).unwrap());
            assert_eq!(
                bearer_token(&h).err().unwrap().code,
                "malformed_authorization",
                "{bad:?}"
            );
        }
        h.insert("authorization", HeaderValue::from_static("Bearer a"));
        h.append("authorization", HeaderValue::from_static("Bearer b"));
        let e = bearer_token(&h).err().unwrap();
        assert_eq!(e.code, "duplicate_authorization");
        assert_eq!(e.status(), 401);
    }
}
