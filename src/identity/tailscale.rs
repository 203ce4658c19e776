//! Identity from `tailscale serve`.
//!
//! serve deletes any incoming `Tailscale-User-*` headers and sets its own, so they are trustworthy only
//! on connections that come from serve: peers named in `trusted_peers` or the unix-socket listener.
//! Tagged devices get no user headers at all; for them the `Tailscale-App-Capabilities` grant named by
//! `app_capability` (`{"<cap>": [{"scopes": ["operator.read"]}]}`) carries the scopes, or the request is
//! refused with a reason saying exactly that. When `whois_socket` is set, every identity is confirmed
//! with tailscaled's LocalAPI WhoIs; a disagreement denies.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use serde_json::Value;

use crate::config::{peer_matches, PeerMatch, TailscaleConfig};
use crate::error::{Reason, Refusal, RefusalKind};
use crate::identity::{rfc2047, AuthMethod, Identity, RequestFacts};

pub enum TailscaleOutcome {
    Identified(Arc<Identity>),
    /// serve's markers were there but they name nobody scopegate can accept; the reason says why.
    Anonymous(Reason),
    /// Not a serve request (untrusted peer, or no Tailscale headers).
    NotPresent,
}

/// What tailscaled's WhoIs says about a tailnet address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoIs {
    pub login: Option<String>,
    pub display_name: Option<String>,
    pub node_name: Option<String>,
    pub tags: Vec<String>,
    pub capability: Option<Value>,
}

pub struct TailscaleSource {
    trusted_peers: Vec<PeerMatch>,
    app_capability: Option<String>,
    whois: Option<WhoIsClient>,
    identities: quick_cache::sync::Cache<String, Arc<Identity>>,
}

impl TailscaleSource {
    pub fn new(cfg: &TailscaleConfig) -> TailscaleSource {
        TailscaleSource {
            trusted_peers: cfg.trusted_peers.clone(),
            app_capability: cfg.app_capability.clone(),
            whois: cfg.whois_socket.clone().map(|socket| {
                WhoIsClient::new(socket, cfg.whois_timeout, cfg.app_capability.clone())
            }),
            identities: crate::util::bounded_cache(4096),
        }
    }

    pub fn trusted_peers(&self) -> &[PeerMatch] {
        &self.trusted_peers
    }

    pub fn trusts(&self, peer: crate::identity::Peer) -> bool {
        peer_matches(&self.trusted_peers, peer.ip())
    }

    pub async fn identify(&self, facts: &RequestFacts<'_>) -> Result<TailscaleOutcome, Refusal> {
        if !self.trusts(facts.peer) {
            return Ok(TailscaleOutcome::NotPresent);
        }
        let h = facts.headers;
        let login =
            single(h, "tailscale-user-login")?.map(|v| rfc2047::decode(v).trim().to_string());
        let login = login.filter(|l| !l.is_empty());
        let name = single(h, "tailscale-user-name")?.map(rfc2047::decode);
        let caps_raw = single(h, "tailscale-app-capabilities")?;
        let funnel = h.contains_key("tailscale-funnel-request");
        let marker = h.contains_key("tailscale-headers-info") || caps_raw.is_some();
        if funnel {
            return Ok(TailscaleOutcome::Anonymous(Reason::new(
                "tailscale_funnel",
                "the request came through Tailscale Funnel (the public internet): it carries no tailnet identity",
            )));
        }
        if login.is_none() && !marker {
            return Ok(TailscaleOutcome::NotPresent);
        }
        let cap_from_header = match (&self.app_capability, caps_raw) {
            (Some(cap), Some(raw)) => {
                let doc: Value = serde_json::from_str(raw).map_err(|_| {
                    Refusal::bad_request(
                        "tailscale_caps_malformed",
                        "Tailscale-App-Capabilities is not JSON",
                    )
                })?;
                doc.get(cap).cloned()
            }
            _ => None,
        };

        let whois = match &self.whois {
            Some(client) => {
                let Some(ip) = facts.client_ip else {
                    return Err(Refusal::unauthorized(
                        "tailscale_no_client_address",
                        "tailscale serve sent no X-Forwarded-For, so the caller cannot be confirmed with WhoIs",
                    ));
                };
                Some(client.whois(ip).await.map_err(|e| {
                    Refusal::new(
                        RefusalKind::ServiceUnavailable,
                        "tailscale_whois_failed",
                        format!("tailscaled WhoIs failed: {e}"),
                    )
                })?)
            }
            None => None,
        };

        let mut notes = Vec::new();
        let (subject, tags, capability) = match (&login, &whois) {
            (Some(login), Some(w)) => {
                let agrees = w
                    .login
                    .as_deref()
                    .is_some_and(|wl| wl.eq_ignore_ascii_case(login))
                    && w.tags.is_empty();
                if !agrees {
                    return Err(Refusal::unauthorized(
                        "tailscale_whois_mismatch",
                        format!(
                            "Tailscale-User-Login says {login} but tailscaled WhoIs says {}",
                            if !w.tags.is_empty() {
                                format!("a tagged node ({})", w.tags.join(", "))
                            } else {
                                w.login.clone().unwrap_or_else(|| "nobody".into())
                            }
                        ),
                    ));
                }
                notes.push(Reason::new(
                    "tailscale_whois_confirmed",
                    format!("tailscaled WhoIs confirms {login}"),
                ));
                (
                    login.clone(),
                    Vec::new(),
                    w.capability.clone().or(cap_from_header),
                )
            }
            (Some(login), None) => (login.clone(), Vec::new(), cap_from_header),
            (None, Some(w)) if !w.tags.is_empty() => {
                let node = w.node_name.clone().unwrap_or_else(|| {
                    format!(
                        "tagged-node@{}",
                        facts.client_ip.map(|i| i.to_string()).unwrap_or_default()
                    )
                });
                notes.push(Reason::new(
                    "tailscale_tagged_node",
                    format!(
                        "tagged node {node} ({}), confirmed by tailscaled WhoIs",
                        w.tags.join(", ")
                    ),
                ));
                (
                    node,
                    w.tags.clone(),
                    w.capability.clone().or(cap_from_header),
                )
            }
            (None, _) => {
                let ip = facts
                    .client_ip
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "unknown".into());
                (format!("tagged-node@{ip}"), Vec::new(), cap_from_header)
            }
        };

        let scopes = match (&self.app_capability, &capability) {
            (Some(_), Some(v)) => capability_scopes(v),
            _ => Vec::new(),
        };
        // A tagged node confirmed by WhoIs is an identity (its name, its tags as groups) that
        // `[[grants]]` may match; without WhoIs, only a capability grant makes it one.
        let confirmed_node = whois.as_ref().is_some_and(|w| !w.tags.is_empty());
        if login.is_none() && scopes.is_empty() && !confirmed_node {
            let cap = self
                .app_capability
                .as_deref()
                .unwrap_or("<app_capability not configured>");
            return Ok(TailscaleOutcome::Anonymous(Reason::new(
                "tailscale_tagged_no_grant",
                format!("the Tailscale node is tagged (no user headers) and has no {cap} capability grant with scopes"),
            )));
        }
        if let (Some(cap), true) = (&self.app_capability, !scopes.is_empty()) {
            notes.push(Reason::new(
                "tailscale_capability",
                format!("tailnet grant {cap} gives {}", scopes.join(", ")),
            ));
        }

        let cache_key = format!(
            "{subject}\u{0}{}\u{0}{}\u{0}{}",
            name.as_deref().unwrap_or(""),
            scopes.join(" "),
            tags.join(" ")
        );
        if whois.is_none() {
            if let Some(hit) = self.identities.get(&cache_key) {
                return Ok(TailscaleOutcome::Identified(hit));
            }
        }
        let mut id = Identity::new(
            &subject,
            AuthMethod::Tailscale,
            tags,
            scopes.iter().map(String::as_str),
        );
        id.display_name = name.or_else(|| whois.as_ref().and_then(|w| w.display_name.clone()));
        id.notes = notes;
        let id = Arc::new(id);
        if whois.is_none() {
            self.identities.insert(cache_key, id.clone());
        }
        Ok(TailscaleOutcome::Identified(id))
    }
}

/// Exactly one value, or none; two copies of an identity header are ambiguous.
fn single<'a>(h: &'a http::HeaderMap, name: &str) -> Result<Option<&'a str>, Refusal> {
    let mut it = h.get_all(name).iter();
    let Some(first) = it.next() else {
        return Ok(None);
    };
    if it.next().is_some() {
        return Err(Refusal::bad_request(
            "duplicate_identity_header",
            format!("{name} was sent more than once"),
        ));
    }
    first.to_str().map(Some).map_err(|_| {
        Refusal::bad_request("malformed_identity_header", format!("{name} is not ASCII"))
    })
}

/// Scopes from a capability's grant values: every `{"scopes": [...]}` object, unioned.
pub fn capability_scopes(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let entries: Vec<&Value> = match v {
        Value::Array(list) => list.iter().collect(),
        other => vec![other],
    };
    for e in entries {
        if let Some(list) = e.get("scopes").and_then(Value::as_array) {
            for s in list.iter().filter_map(Value::as_str) {
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_string());
                }
            }
        }
    }
    out
}

/// A LocalAPI client over tailscaled's unix socket, with a short per-address cache.
pub struct WhoIsClient {
    socket: PathBuf,
    timeout: Duration,
    capability: Option<String>,
    cache: quick_cache::sync::Cache<IpAddr, (Instant, WhoIs)>,
}

const WHOIS_TTL: Duration = Duration::from_secs(30);

impl WhoIsClient {
    pub fn new(socket: PathBuf, timeout: Duration, capability: Option<String>) -> WhoIsClient {
        WhoIsClient {
            socket,
            timeout,
            capability,
            cache: crate::util::bounded_cache(1024),
        }
    }

    pub async fn whois(&self, ip: IpAddr) -> Result<WhoIs, String> {
        if let Some((at, w)) = self.cache.get(&ip) {
            if at.elapsed() < WHOIS_TTL {
                return Ok(w);
            }
        }
        let body = tokio::time::timeout(self.timeout, self.fetch(ip))
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))??;
        let doc: Value =
            serde_json::from_slice(&body).map_err(|_| "WhoIs answer is not JSON".to_string())?;
        let w = parse_whois(&doc, self.capability.as_deref());
        self.cache.insert(ip, (Instant::now(), w.clone()));
        Ok(w)
    }

    async fn fetch(&self, ip: IpAddr) -> Result<Bytes, String> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.socket.display()))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let addr = std::net::SocketAddr::new(ip, 0);
        let req = http::Request::get(format!("/localapi/v0/whois?addr={addr}"))
            .header(http::header::HOST, "local-tailscaled.sock")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), 256 * 1024)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status == http::StatusCode::NOT_FOUND {
            return Err(format!("{ip} is not a tailnet peer"));
        }
        if !status.is_success() {
            return Err(format!("status {status}"));
        }
        Ok(body)
    }
}

/// Reads the documented WhoIs JSON: `Node{Name,Tags}`, `UserProfile{LoginName,DisplayName}`, `CapMap`.
pub fn parse_whois(doc: &Value, capability: Option<&str>) -> WhoIs {
    let node = doc.get("Node");
    let tags: Vec<String> = node
        .and_then(|n| n.get("Tags"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let login = doc
        .get("UserProfile")
        .and_then(|u| u.get("LoginName"))
        .and_then(Value::as_str)
        .filter(|l| !l.is_empty() && *l != "tagged-devices")
        .map(str::to_string);
    WhoIs {
        login,
        display_name: doc
            .get("UserProfile")
            .and_then(|u| u.get("DisplayName"))
            .and_then(Value::as_str)
            .map(str::to_string),
        node_name: node
            .and_then(|n| n.get("ComputedName").or_else(|| n.get("Name")))
            .and_then(Value::as_str)
            .map(|s| s.trim_end_matches('.').to_string())
            .filter(|s| !s.is_empty()),
        tags,
        capability: capability.and_then(|c| doc.get("CapMap").and_then(|m| m.get(c)).cloned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_scopes_union() {
        let v = serde_json::json!([{"scopes":["operator.read"]},{"scopes":["operator.write","operator.read"]},{"other":1}]);
        assert_eq!(
            capability_scopes(&v),
            vec!["operator.read", "operator.write"]
        );
        assert!(capability_scopes(&serde_json::json!("x")).is_empty());
    }

    #[test]
    fn whois_parsing() {
        let doc = serde_json::json!({
            "Node": {"Name": "ci-runner.tail1234.ts.net.", "Tags": ["tag:ci"]},
            "UserProfile": {"LoginName": "tagged-devices", "DisplayName": "Tagged Devices"},
            "CapMap": {"example.com/cap/openclaw": [{"scopes": ["operator.read"]}]}
        });
        let w = parse_whois(&doc, Some("example.com/cap/openclaw"));
        assert_eq!(w.login, None);
        assert_eq!(w.tags, vec!["tag:ci"]);
        assert_eq!(w.node_name.as_deref(), Some("ci-runner.tail1234.ts.net"));
        assert_eq!(
            capability_scopes(w.capability.as_ref().unwrap()),
            vec!["operator.read"]
        );
        let user = serde_json::json!({"Node": {"Name": "laptop."}, "UserProfile": {"LoginName": "alice@example.com"}});
        assert_eq!(
            parse_whois(&user, None).login.as_deref(),
            Some("alice@example.com")
        );
    }
}
