//! Identity from an authenticating reverse proxy (Caddy, nginx, Traefik, oauth2-proxy, Cloudflare Access)
//! that puts the user — and optionally groups — in headers.
//!
//! The headers are honoured only when the connection comes from one of `peers`: there is no trust-all
//! default (oauth2-proxy's took until 7.15.2 to get a switch). Scopes come from `[[grants]]` for the
//! user and its groups; the proxy itself grants none.
//!
//! A trusted address is not proof by itself: anything that can send from it (another tenant of the
//! proxy host, a misrouted service) can write a user header. Proxies that sign who they authenticated
//! — Cloudflare Access (`Cf-Access-Jwt-Assertion`), Pomerium (`X-Pomerium-Jwt-Assertion`), any issuer
//! with a JWKS — can be held to it: with `[trusted_proxy.assertion]` the assertion is required and
//! verified with the same JWT machinery as bearer tokens (pinned algorithms, issuer, audience, expiry,
//! JWKS), and the user and groups are the assertion's. A user header that names someone else is refused.

use std::sync::Arc;

use http::HeaderName;

use crate::config::{peer_matches, PeerMatch, TrustedProxyConfig};
use crate::error::{Reason, Refusal};
use crate::identity::jwks::JwksCache;
use crate::identity::jwt::JwtVerifier;
use crate::identity::{AuthMethod, Identity, RequestFacts};

pub struct TrustedProxySource {
    peers: Vec<PeerMatch>,
    user_header: HeaderName,
    groups_header: Option<HeaderName>,
    identities: quick_cache::sync::Cache<String, Arc<Identity>>,
    assertion: Option<(HeaderName, JwtVerifier)>,
}

impl TrustedProxySource {
    pub fn new(cfg: &TrustedProxyConfig) -> TrustedProxySource {
        TrustedProxySource {
            peers: cfg.peers.clone(),
            user_header: cfg.user_header.clone(),
            groups_header: cfg.groups_header.clone(),
            identities: crate::util::bounded_cache(4096),
            assertion: cfg.assertion.as_ref().map(|a| {
                (
                    a.header.clone(),
                    JwtVerifier::new(&a.jwt, JwksCache::new(&a.jwt)),
                )
            }),
        }
    }

    /// The header the proxy's signed assertion arrives in, when one is required.
    pub fn assertion_header(&self) -> Option<&HeaderName> {
        self.assertion.as_ref().map(|(h, _)| h)
    }

    pub fn user_header(&self) -> &HeaderName {
        &self.user_header
    }

    pub fn peers(&self) -> &[PeerMatch] {
        &self.peers
    }

    pub fn trusts(&self, peer: crate::identity::Peer) -> bool {
        peer_matches(&self.peers, peer.ip())
    }

    pub async fn identify(
        &self,
        facts: &RequestFacts<'_>,
    ) -> Result<Option<Arc<Identity>>, Refusal> {
        if !self.trusts(facts.peer) {
            return Ok(None);
        }
        let user = self.header_user(facts)?;
        match &self.assertion {
            Some((header, verifier)) => self.asserted(header, verifier, user, facts).await,
            None => match user {
                Some(user) => self.header_identity(user, facts).map(Some),
                None => Ok(None),
            },
        }
    }

    /// The identity the proxy's signed assertion names; the user header, if sent, must agree.
    async fn asserted(
        &self,
        header: &HeaderName,
        verifier: &JwtVerifier,
        user: Option<&str>,
        facts: &RequestFacts<'_>,
    ) -> Result<Option<Arc<Identity>>, Refusal> {
        let mut values = facts.headers.get_all(header).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return match (user, facts.headers.contains_key(header)) {
                (_, true) => Err(Refusal::bad_request(
                    "duplicate_identity_header",
                    format!("{header} was sent more than once"),
                )),
                (None, false) => Ok(None),
                (Some(u), false) => Err(Refusal::unauthorized(
                    "trusted_proxy_assertion_missing",
                    format!("the trusted proxy named {u:?} in {} without its signed assertion ({header}), which [trusted_proxy.assertion] requires", self.user_header),
                )),
            };
        };
        let token = value.to_str().map_err(|_| {
            Refusal::unauthorized("malformed_assertion", format!("{header} is not ASCII"))
        })?;
        let verified = verifier
            .verify(token.trim())
            .await
            .map_err(|e| e.refusal())?;
        if let Some(u) = user {
            if !crate::values::subject_eq(&verified.subject, u) {
                return Err(Refusal::bad_request(
                    "conflicting_identities",
                    format!(
                        "conflicting identities: the proxy's signed assertion names {} and {} names {u}",
                        verified.subject, self.user_header
                    ),
                ));
            }
        }
        let mut id = Identity::new(
            &verified.subject,
            AuthMethod::TrustedProxy,
            verified.groups.clone(),
            std::iter::empty(),
        );
        id.expires_at = verified.expires_at;
        id.notes.push(Reason::new(
            "trusted_proxy_assertion",
            format!(
                "the trusted proxy's signed assertion ({header}, issuer {}) names {}",
                verifier.issuer(),
                verified.subject
            ),
        ));
        Ok(Some(Arc::new(id)))
    }

    /// The user header's value, if the proxy sent one.
    fn header_user<'a>(&self, facts: &RequestFacts<'a>) -> Result<Option<&'a str>, Refusal> {
        let mut users = facts.headers.get_all(&self.user_header).iter();
        let Some(first) = users.next() else {
            return Ok(None);
        };
        if users.next().is_some() {
            return Err(Refusal::bad_request(
                "duplicate_identity_header",
                format!("{} was sent more than once", self.user_header),
            ));
        }
        let user = first
            .to_str()
            .map_err(|_| {
                Refusal::bad_request(
                    "malformed_identity_header",
                    format!("{} is not ASCII", self.user_header),
                )
            })?
            .trim();
        if user.is_empty() {
            return Ok(None);
        }
        if user.len() > 512 || user.chars().any(char::is_control) {
            return Err(Refusal::bad_request(
                "malformed_identity_header",
                format!("{} is not a plausible user name", self.user_header),
            ));
        }
        Ok(Some(user))
    }

    /// The identity the user and groups headers name (no assertion configured).
    fn header_identity(
        &self,
        user: &str,
        facts: &RequestFacts<'_>,
    ) -> Result<Arc<Identity>, Refusal> {
        let mut groups: Vec<String> = Vec::new();
        if let Some(gh) = &self.groups_header {
            for v in facts.headers.get_all(gh) {
                let s = v.to_str().map_err(|_| {
                    Refusal::bad_request("malformed_identity_header", format!("{gh} is not ASCII"))
                })?;
                for g in s.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                    if !groups.iter().any(|x| x == g) {
                        groups.push(g.to_string());
                    }
                }
            }
        }
        let key = format!("{user}\u{0}{}", groups.join(","));
        if let Some(hit) = self.identities.get(&key) {
            return Ok(hit);
        }
        let mut id = Identity::new(user, AuthMethod::TrustedProxy, groups, std::iter::empty());
        id.notes.push(Reason::new(
            "trusted_proxy_user",
            format!(
                "a trusted proxy vouches for user {user} in {}",
                self.user_header
            ),
        ));
        let id = Arc::new(id);
        self.identities.insert(key, id.clone());
        Ok(id)
    }
}
