//! Identity from an authenticating reverse proxy (Caddy, nginx, Traefik, oauth2-proxy, Cloudflare Access)
//! that puts the user — and optionally groups — in headers.
//!
//! The headers are honoured only when the connection comes from one of `peers`: there is no trust-all
//! default (oauth2-proxy's took until 7.15.2 to get a switch). Scopes come from `[[grants]]` for the
//! user and its groups; the proxy itself grants none.

use std::sync::Arc;

use http::HeaderName;

use crate::config::{peer_matches, PeerMatch, TrustedProxyConfig};
use crate::error::{Reason, Refusal};
use crate::identity::{AuthMethod, Identity, RequestFacts};

pub struct TrustedProxySource {
    peers: Vec<PeerMatch>,
    user_header: HeaderName,
    groups_header: Option<HeaderName>,
    identities: quick_cache::sync::Cache<String, Arc<Identity>>,
}

impl TrustedProxySource {
    pub fn new(cfg: &TrustedProxyConfig) -> TrustedProxySource {
        TrustedProxySource {
            peers: cfg.peers.clone(),
            user_header: cfg.user_header.clone(),
            groups_header: cfg.groups_header.clone(),
            identities: crate::util::bounded_cache(4096),
        }
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

    pub fn identify(&self, facts: &RequestFacts<'_>) -> Result<Option<Arc<Identity>>, Refusal> {
        if !self.trusts(facts.peer) {
            return Ok(None);
        }
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
            return Ok(Some(hit));
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
        Ok(Some(id))
    }
}
