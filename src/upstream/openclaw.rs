//! The OpenClaw profile: speaking the gateway's trusted-proxy contract (gateway contract §1, §3, §4).
//!
//! The gateway runs in `trusted-proxy` mode with scopegate as its only trusted proxy. On every request
//! and WebSocket upgrade scopegate sets:
//! - the configured user header: the caller's gateway identity (see [`OpenClawProfile::gateway_user`]);
//! - `X-Forwarded-For`: the client, never loopback — the gateway refuses a loopback client behind a
//!   proxy, so a caller on the gateway's own host is presented as `local_client_ip` (192.0.2.1, a
//!   documentation address, by default);
//! - `X-Forwarded-Proto`/`-Host`;
//! - `X-OpenClaw-Scopes`: the effective scopes, implication-expanded and spelled out literally. On HTTP
//!   the gateway takes this list as the whole grant; on a WebSocket it intersects it literally with
//!   `identityScopes[user]`, which is why the list is expanded and why `scopegate openclaw-config`
//!   grants every identity it names the whole catalogue (scopegate is the authority; the header caps).
//!
//! Every person is presented as themselves: the user header carries the identity's subject — the
//! stable identifier each source verifies (a JWT's `sub`, an API token's configured subject, a Tailscale
//! login, the trusted proxy's user) and the name grants match — so the gateway keeps one profile,
//! one set of sessions and one role per person. The gateway's WebSocket grant names people literally,
//! so `[openclaw] people` decides what happens to a person its `identityScopes` does not list
//! ([`Listing`]): refused by scopegate on the WebSocket (`listed`, the default), added to
//! `identityScopes` first (`provision`, see `provision`), or folded into one shared identity
//! (`shared`, the old behaviour, explicit only).
//!
//! The gateway's HTTP surface as a default route table is data in the floor,
//! `values::OPENCLAW_ROUTES`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::header_names::{X_FORWARDED_FOR, X_OPENCLAW_SCOPES};
use crate::upstream::injected::Injected;

use crate::config::{Config, People};

pub(crate) mod admin_rpc;
pub(crate) mod inband;
pub(crate) mod preauth;
pub(crate) mod provision;

/// The profile's compiled settings for one snapshot.
#[derive(Debug, Clone)]
pub struct OpenClawProfile {
    pub user_header: HeaderName,
    pub shared_user: String,
    pub people: People,
    /// The admin identity scopegate presents when it provisions people.
    pub provision_user: String,
    pub provision_limit: usize,
    known: HashSet<String>,
    known_sorted: Vec<String>,
    pub local_client_ip: IpAddr,
    /// `local_client_ip` as a header value, made once.
    pub local_client_value: http::HeaderValue,
    pub in_band_auth: bool,
    pub connect_timeout: Duration,
}

/// How the gateway's WebSocket grant reaches one person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Named in scopegate's config, so `openclaw-config` lists them in `identityScopes`.
    Listed,
    /// Presented as the shared identity (`people = "shared"`).
    Shared,
    /// Not listed; scopegate adds them to `identityScopes` before their first WebSocket.
    Provisioned,
    /// Not listed (`people = "listed"`): the gateway would admit their WebSocket with no scopes, so
    /// scopegate refuses it. HTTP is unaffected (the gateway reads no `identityScopes` there).
    Unlisted,
}

/// The `identityScopes` key of a name: emails match case-insensitively at the gateway.
pub fn identity_key(s: &str) -> String {
    if s.contains('@') {
        s.to_ascii_lowercase()
    } else {
        s.to_string()
    }
}

impl OpenClawProfile {
    pub fn new(cfg: &Config) -> OpenClawProfile {
        let oc = &cfg.openclaw;
        let mut names: Vec<String> = Vec::new();
        for g in &cfg.grants {
            names.extend(g.subjects.iter().cloned());
        }
        names.extend(cfg.api_tokens.iter().map(|t| t.subject.clone()));
        names.extend(oc.users.iter().cloned());
        let mut known = HashSet::new();
        let mut known_sorted = Vec::new();
        for n in names {
            let reserved = (oc.people == People::Shared && n == oc.shared_user)
                || (oc.people == People::Provision && n == oc.provision_user);
            if !reserved && known.insert(identity_key(&n)) {
                known_sorted.push(n);
            }
        }
        known_sorted.sort();
        OpenClawProfile {
            user_header: oc.user_header.clone(),
            shared_user: oc.shared_user.clone(),
            people: oc.people,
            provision_user: oc.provision_user.clone(),
            provision_limit: oc.provision_limit,
            known,
            known_sorted,
            local_client_ip: oc.local_client_ip,
            local_client_value: http::HeaderValue::from_str(&oc.local_client_ip.to_string())
                .unwrap_or_else(|_| http::HeaderValue::from_static("192.0.2.1")),
            in_band_auth: oc.in_band_auth,
            connect_timeout: oc.connect_timeout,
        }
    }

    fn is_listed(&self, subject: &str) -> bool {
        self.known.contains(subject)
            || (subject.contains('@') && self.known.contains(&subject.to_ascii_lowercase()))
    }

    /// How the gateway's WebSocket grant reaches `subject`.
    pub fn listing(&self, subject: &str) -> Listing {
        if self.is_listed(subject) {
            return Listing::Listed;
        }
        match self.people {
            People::Listed => Listing::Unlisted,
            People::Provision => Listing::Provisioned,
            People::Shared => Listing::Shared,
        }
    }

    /// The identity the gateway sees: the subject itself, unless `people = "shared"` folds an
    /// unnamed subject into the shared identity.
    pub fn gateway_user<'a>(&'a self, subject: &'a str) -> &'a str {
        match self.listing(subject) {
            Listing::Shared => &self.shared_user,
            _ => subject,
        }
    }

    /// Why `subject` reaches the gateway as [`Self::gateway_user`], in one sentence (whoami, explain).
    pub fn gateway_user_reason(&self, subject: &str) -> String {
        let user = self.gateway_user(subject);
        match self.listing(subject) {
            Listing::Listed => format!(
                "the gateway sees {user:?}: scopegate's config names this subject, so `openclaw-config` lists it in identityScopes"
            ),
            Listing::Shared => format!(
                "the gateway sees the shared identity {user:?}: the config does not name this subject and [openclaw] people = \"shared\""
            ),
            Listing::Provisioned => format!(
                "the gateway sees {user:?}: [openclaw] people = \"provision\", so scopegate adds it to the gateway's identityScopes before its first WebSocket"
            ),
            Listing::Unlisted => format!(
                "the gateway sees {user:?} over HTTP; its WebSocket is refused: the gateway's identityScopes does not list this subject and [openclaw] people = \"listed\""
            ),
        }
    }

    /// People scopegate's config names (they are listed in `identityScopes` by `openclaw-config`).
    pub fn listed(&self) -> &[String] {
        &self.known_sorted
    }

    /// Every identity `openclaw-config` must list in `identityScopes`: the shared one first (shared
    /// mode), the provisioning admin (provision mode), then the people the config names.
    pub fn gateway_identities(&self) -> Vec<String> {
        let mut out = Vec::new();
        match self.people {
            People::Shared => out.push(self.shared_user.clone()),
            People::Provision => out.push(self.provision_user.clone()),
            People::Listed => {}
        }
        out.extend(self.known_sorted.iter().cloned());
        out
    }

    /// The address sent as `X-Forwarded-For`: the client's, unless it is loopback (or unknown).
    pub fn forwarded_for(&self, client: Option<IpAddr>) -> IpAddr {
        match client.map(crate::config::canonical_ip) {
            Some(ip) if !ip.is_loopback() && !ip.is_unspecified() => ip,
            _ => self.local_client_ip,
        }
    }

    /// Adds the profile's own headers to a request for the gateway (after the client's copies
    /// were removed): `X-Forwarded-For` from [`Self::forwarded_for`], `X-OpenClaw-Scopes` — always
    /// present, because an empty list grants nothing where an absent one would grant the gateway's
    /// full default set (gateway contract §3) — and the caller's gateway identity, if any.
    pub fn set_headers(&self, headers: &mut Injected, to_gateway: ToGateway<'_>) {
        let ip = self.forwarded_for(to_gateway.client_ip);
        // The common values are made once (per snapshot, per connection), not per request.
        let xff = if ip == self.local_client_ip {
            Some(self.local_client_value.clone())
        } else if Some(ip) == to_gateway.peer_ip {
            to_gateway.peer_value.cloned()
        } else {
            HeaderValue::from_str(&ip.to_string()).ok()
        };
        if let Some(v) = xff {
            headers.set(X_FORWARDED_FOR, v);
        }
        headers.set(X_OPENCLAW_SCOPES, to_gateway.scopes);
        if let Some(user) = to_gateway.user {
            headers.set(self.user_header.clone(), user.clone());
        }
    }
}

/// What the profile's headers are made from, for one request.
pub struct ToGateway<'a> {
    /// The client address, after trusted forwarding hops.
    pub client_ip: Option<IpAddr>,
    /// The connection's peer and its header value, reused when the client is the peer.
    pub peer_ip: Option<IpAddr>,
    pub peer_value: Option<&'a HeaderValue>,
    /// The effective scopes, comma-separated.
    pub scopes: HeaderValue,
    /// The caller's gateway identity as a header value.
    pub user: Option<&'a HeaderValue>,
}

/// The JSON5 `gateway` block that makes an OpenClaw gateway trust this scopegate
/// (`scopegate openclaw-config`).
pub fn gateway_config_block(cfg: &Config, port_hint: Option<u16>) -> serde_json::Value {
    let profile = OpenClawProfile::new(cfg);
    let catalogue = &cfg.scopes.catalogue;
    let mut identity_scopes = serde_json::Map::new();
    for user in profile.gateway_identities() {
        identity_scopes.insert(user, catalogue.clone().into());
    }
    let port = port_hint
        .or_else(|| cfg.upstream.authority.port_u16())
        .unwrap_or(18789);
    let mut trusted_proxy = serde_json::json!({
        "userHeader": profile.user_header.as_str(),
        "allowLoopback": true,
    });
    if cfg.oidc.is_some() {
        // Signed-in browsers bring their own device identity; approving it on the proxy's word is
        // what lets the Control UI open without a pairing prompt. The persistent grant is capped by
        // the X-OpenClaw-Scopes scopegate sends, and never includes operator.admin.
        trusted_proxy["deviceAutoApprove"] = serde_json::json!({
            "enabled": true,
            "scopes": device_auto_approve_scopes(catalogue),
        });
    }
    let mut block = serde_json::json!({
        "gateway": {
            "mode": "local",
            "bind": "loopback",
            "port": port,
            "trustedProxies": ["127.0.0.1", "::1"],
            "auth": {
                "mode": "trusted-proxy",
                "trustedProxy": trusted_proxy,
                "identityScopes": identity_scopes,
            },
            "http": {
                "endpoints": {
                    "chatCompletions": { "enabled": true },
                    "responses": { "enabled": true },
                }
            }
        }
    });
    if !cfg.server.allowed_origins.is_empty() {
        // The gateway refuses a browser whose Origin it does not list ("origin not allowed"):
        // scopegate's public origins are the browser's.
        block["gateway"]["controlUi"] =
            serde_json::json!({ "allowedOrigins": cfg.server.allowed_origins });
    }
    block
}

/// The scopes an auto-approved browser device may hold: the gateway's default list, as far as the
/// catalogue has them, and never `operator.admin` (that would make every signed-in person an admin).
pub fn device_auto_approve_scopes(catalogue: &[String]) -> Vec<String> {
    [
        "operator.read",
        "operator.write",
        "operator.approvals",
        "operator.questions",
    ]
    .iter()
    .filter(|s| catalogue.iter().any(|c| c == *s))
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config::parse(
            r#"
[upstream]
url = "http://127.0.0.1:18789"
profile = "openclaw"
[[api_tokens]]
subject = "ci-bot"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
scopes = ["operator.read"]
[[grants]]
subjects = ["Alice@Example.com"]
scopes = ["operator.admin"]
[openclaw]
users = ["bob"]
"#,
            None,
        )
        .unwrap()
    }

    fn with_people(people: &str) -> OpenClawProfile {
        let mut c = cfg();
        c.openclaw.people = match people {
            "shared" => People::Shared,
            "provision" => People::Provision,
            _ => People::Listed,
        };
        OpenClawProfile::new(&c)
    }

    #[test]
    fn sign_in_adds_origins_and_device_auto_approval_without_admin() {
        let plain = gateway_config_block(&cfg(), None);
        assert!(plain["gateway"]["controlUi"].is_null());
        assert!(plain["gateway"]["auth"]["trustedProxy"]["deviceAutoApprove"].is_null());
        std::env::set_var(
            "SG_TEST_OC_KEYS",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        );
        let with = Config::parse(
            r#"
[server]
allowed_origins = ["https://gw.example.com"]
[upstream]
url = "http://127.0.0.1:18789"
profile = "openclaw"
[oidc]
issuer = "https://idp.example.com"
client_id = "scopegate"
cookie_keys_env = "SG_TEST_OC_KEYS"
"#,
            None,
        )
        .unwrap();
        let b = gateway_config_block(&with, None);
        assert_eq!(
            b["gateway"]["controlUi"]["allowedOrigins"],
            serde_json::json!(["https://gw.example.com"])
        );
        let auto = &b["gateway"]["auth"]["trustedProxy"]["deviceAutoApprove"];
        assert_eq!(auto["enabled"], true);
        let scopes: Vec<&str> = auto["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert!(scopes.contains(&"operator.write"));
        assert!(!scopes.contains(&"operator.admin"), "{scopes:?}");
    }

    #[test]
    fn everyone_is_themselves_unless_shared_is_asked_for() {
        let p = with_people("listed");
        for who in ["ci-bot", "alice@example.com", "bob", "mallory"] {
            assert_eq!(p.gateway_user(who), who);
        }
        assert_eq!(p.listing("ALICE@example.com"), Listing::Listed);
        assert_eq!(p.listing("mallory"), Listing::Unlisted);
        assert!(p
            .gateway_user_reason("mallory")
            .contains("WebSocket is refused"));
        assert_eq!(
            p.gateway_identities(),
            vec!["Alice@Example.com", "bob", "ci-bot"]
        );
        let p = with_people("provision");
        assert_eq!(p.gateway_user("mallory"), "mallory");
        assert_eq!(p.listing("mallory"), Listing::Provisioned);
        assert_eq!(p.listing("bob"), Listing::Listed);
        assert_eq!(p.gateway_identities()[0], "scopegate-provisioner");
        let p = with_people("shared");
        assert_eq!(p.gateway_user("mallory"), "scopegate");
        assert_eq!(p.gateway_user("bob"), "bob");
        assert_eq!(
            p.gateway_identities(),
            vec!["scopegate", "Alice@Example.com", "bob", "ci-bot"]
        );
    }

    #[test]
    fn loopback_clients_get_a_routable_stand_in() {
        let p = OpenClawProfile::new(&cfg());
        assert_eq!(
            p.forwarded_for(Some("127.0.0.1".parse().unwrap()))
                .to_string(),
            "192.0.2.1"
        );
        assert_eq!(
            p.forwarded_for(Some("::1".parse().unwrap())).to_string(),
            "192.0.2.1"
        );
        assert_eq!(
            p.forwarded_for(Some("::ffff:127.0.0.1".parse().unwrap()))
                .to_string(),
            "192.0.2.1"
        );
        assert_eq!(p.forwarded_for(None).to_string(), "192.0.2.1");
        assert_eq!(
            p.forwarded_for(Some("100.64.0.9".parse().unwrap()))
                .to_string(),
            "100.64.0.9"
        );
    }

    #[test]
    fn gateway_block_lists_every_identity_with_the_whole_catalogue() {
        let block = gateway_config_block(&cfg(), None);
        let ids = block["gateway"]["auth"]["identityScopes"]
            .as_object()
            .unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids["bob"].as_array().unwrap().len(), 10);
        assert_eq!(
            block["gateway"]["auth"]["trustedProxy"]["userHeader"],
            "x-forwarded-user"
        );
        assert_eq!(block["gateway"]["port"], 18789);
    }
}
