//! The provider's metadata (OpenID Connect Discovery 1.0): fetched from
//! `{issuer}/.well-known/openid-configuration` before scopegate reports ready, kept, and refreshed in the
//! background like the JWKS — the last good document stays while the provider is down. The document's
//! `issuer` must equal the configured one byte for byte (Discovery §4.3), which is what stops one
//! provider's metadata from standing in for another's; the endpoints must be https (or loopback http
//! for a loopback issuer). The ID token verifier — scopegate's JWT rules over the provider's JWKS,
//! with the client id as the audience — is built from it and kept while `jwks_uri` stays the same.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{JwtConfig, OidcConfig};
use crate::identity::jwks::JwksCache;
use crate::identity::jwt::JwtVerifier;
use crate::util::refresh::{self, Refreshable};

/// The parts of the provider's metadata scopegate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    pub end_session_endpoint: Option<String>,
    /// RFC 9207: the provider sends `iss` with every authorization response, so a missing one is an
    /// error rather than an old provider.
    pub iss_parameter_supported: bool,
    /// `client_secret_basic` unless the provider only lists `client_secret_post`.
    pub secret_in_body: bool,
}

#[derive(Deserialize)]
struct RawMetadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    end_session_endpoint: Option<String>,
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
    #[serde(default)]
    code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default)]
    response_types_supported: Vec<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// Parses and checks a discovery document for `issuer`.
pub fn parse_metadata(body: &[u8], issuer: &str) -> Result<Metadata, String> {
    let raw: RawMetadata = serde_json::from_slice(body)
        .map_err(|e| format!("discovery document is not valid metadata: {e}"))?;
    if raw.issuer != issuer {
        return Err(format!(
            "discovery names issuer {:?}, not the configured {issuer:?} (OpenID Connect Discovery §4.3)",
            raw.issuer
        ));
    }
    let loopback_issuer = is_loopback_url(issuer);
    for (name, url) in [
        ("authorization_endpoint", Some(&raw.authorization_endpoint)),
        ("token_endpoint", Some(&raw.token_endpoint)),
        ("jwks_uri", Some(&raw.jwks_uri)),
        ("end_session_endpoint", raw.end_session_endpoint.as_ref()),
    ] {
        let Some(url) = url else { continue };
        let https = url.starts_with("https://") && url.parse::<http::Uri>().is_ok();
        let loopback_ok = loopback_issuer && is_loopback_url(url);
        if !(https || loopback_ok) {
            return Err(format!("{name} {url:?} is not an https URL"));
        }
    }
    if let Some(methods) = &raw.code_challenge_methods_supported {
        if !methods.iter().any(|m| m == "S256") {
            return Err("the provider does not support PKCE with S256".into());
        }
    }
    if !raw.response_types_supported.is_empty()
        && !raw.response_types_supported.iter().any(|t| t == "code")
    {
        return Err("the provider does not support the authorization code flow".into());
    }
    let secret_in_body = raw
        .token_endpoint_auth_methods_supported
        .as_ref()
        .is_some_and(|m| {
            !m.iter().any(|x| x == "client_secret_basic")
                && m.iter().any(|x| x == "client_secret_post")
        });
    Ok(Metadata {
        issuer: raw.issuer,
        authorization_endpoint: raw.authorization_endpoint,
        token_endpoint: raw.token_endpoint,
        jwks_uri: raw.jwks_uri,
        end_session_endpoint: raw.end_session_endpoint,
        iss_parameter_supported: raw.authorization_response_iss_parameter_supported,
        secret_in_body,
    })
}

fn is_loopback_url(url: &str) -> bool {
    url.parse::<http::Uri>().is_ok_and(|u| {
        u.scheme_str() == Some("http")
            && u.host().is_some_and(|h| {
                let h = h.trim_start_matches('[').trim_end_matches(']');
                h.eq_ignore_ascii_case("localhost")
                    || h.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            })
    })
}

/// What one good discovery gave: the metadata and the ID token verifier over its JWKS.
pub struct Provider {
    pub meta: Metadata,
    pub verifier: JwtVerifier,
}

/// The cached discovery of one issuer.
pub struct Discovery {
    url: String,
    cfg: OidcConfig,
    current: ArcSwapOption<Provider>,
    last_error: Mutex<Option<String>>,
    fetch_lock: tokio::sync::Mutex<()>,
}

impl Discovery {
    pub fn new(cfg: &OidcConfig) -> Arc<Discovery> {
        Arc::new(Discovery {
            url: format!(
                "{}/.well-known/openid-configuration",
                cfg.issuer.trim_end_matches('/')
            ),
            cfg: cfg.clone(),
            current: ArcSwapOption::empty(),
            last_error: Mutex::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// True when this cache serves the same provider for the same client (a reload may keep it).
    pub fn same_source(&self, cfg: &OidcConfig) -> bool {
        self.cfg.issuer == cfg.issuer
            && self.cfg.client_id == cfg.client_id
            && self.cfg.id_token_algorithms == cfg.id_token_algorithms
            && self.cfg.leeway == cfg.leeway
            && self.cfg.subject_claim == cfg.subject_claim
            && self.cfg.groups_claim == cfg.groups_claim
    }

    /// The provider as last discovered, if ever.
    pub fn provider(&self) -> Option<Arc<Provider>> {
        self.current.load_full()
    }

    /// Ready: metadata discovered and the provider's keys loaded.
    pub fn ready(&self) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|p| p.verifier.jwks().is_some_and(|j| j.has_keys()))
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Fetches the metadata (and the JWKS) now; on failure the last good provider stays.
    pub async fn fetch(&self) -> Result<(), String> {
        let _flight = self.fetch_lock.lock().await;
        let result = self.fetch_locked().await;
        if let Ok(mut e) = self.last_error.lock() {
            *e = result.as_ref().err().cloned();
        }
        if let Err(e) = &result {
            tracing::warn!(url = %self.url, error = %e, "OIDC discovery failed; keeping the last good metadata");
        }
        result
    }

    async fn fetch_locked(&self) -> Result<(), String> {
        let body = crate::util::http_get(&self.url, self.cfg.timeout, 256 * 1024).await?;
        let meta = parse_metadata(&body, &self.cfg.issuer)?;
        let old = self.current.load_full();
        let jwks = match &old {
            Some(p) if p.meta.jwks_uri == meta.jwks_uri => p.verifier.jwks().cloned(),
            _ => None,
        };
        let jwt_cfg = id_token_rules(&self.cfg, &meta.jwks_uri);
        let jwks = match jwks {
            Some(j) => j,
            None => JwksCache::new(&jwt_cfg).ok_or("no jwks_uri")?,
        };
        // The keys are refreshed with the metadata; an unknown kid refetches them on its own.
        jwks.fetch().await.map(|_| ())?;
        if old.as_ref().is_some_and(|p| p.meta == meta) {
            return Ok(());
        }
        tracing::info!(issuer = %meta.issuer, "OIDC provider discovered");
        self.current.store(Some(Arc::new(Provider {
            verifier: JwtVerifier::new(&jwt_cfg, Some(jwks)),
            meta,
        })));
        Ok(())
    }

    /// Fetches until the first success or `deadline`; run before the listener reports ready.
    pub async fn initial_fetch(&self, deadline: Duration) -> bool {
        refresh::initial_fetch(self, deadline).await
    }

    /// Background refresh until `stop`: every `discovery_refresh`, every few seconds while not ready.
    pub fn spawn_refresher(self: &Arc<Self>, stop: CancellationToken) {
        refresh::spawn_refresher(self, stop);
    }
}

impl Refreshable for Discovery {
    async fn refresh(&self) -> Result<(), String> {
        self.fetch().await
    }

    fn ready(&self) -> bool {
        Discovery::ready(self)
    }

    fn interval(&self) -> Duration {
        self.cfg.discovery_refresh
    }
}

/// scopegate's JWT rules for this client's ID tokens: the issuer, the client id as the audience, the
/// provider's JWKS, the pinned algorithms; no scope claims (grants decide), no cache.
pub fn id_token_rules(cfg: &OidcConfig, jwks_uri: &str) -> JwtConfig {
    JwtConfig {
        issuer: cfg.issuer.clone(),
        audience: vec![cfg.client_id.clone()],
        leeway: cfg.leeway,
        jwks_url: Some(jwks_uri.to_string()),
        jwks_refresh: cfg.discovery_refresh,
        jwks_refetch_min_interval: Duration::from_secs(30),
        jwks_timeout: cfg.timeout,
        jwks_algorithms: cfg.id_token_algorithms.clone(),
        scope_claims: Vec::new(),
        groups_claim: cfg.groups_claim.clone(),
        subject_claim: cfg.subject_claim.clone(),
        cache_size: 0,
        max_token_bytes: 16 * 1024,
        keys: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(v: serde_json::Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn metadata_must_name_the_issuer_and_offer_what_the_flow_needs() {
        let good = serde_json::json!({
            "issuer": "https://idp.example.com",
            "authorization_endpoint": "https://idp.example.com/auth",
            "token_endpoint": "https://idp.example.com/token",
            "jwks_uri": "https://idp.example.com/jwks",
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
        });
        let m = parse_metadata(&doc(good.clone()), "https://idp.example.com").unwrap();
        assert!(m.iss_parameter_supported);
        assert!(m.end_session_endpoint.is_none());
        let e = parse_metadata(&doc(good.clone()), "https://idp.example.com/").unwrap_err();
        assert!(e.contains("not the configured"), "{e}");
        let mut plain = good.clone();
        plain["code_challenge_methods_supported"] = serde_json::json!(["plain"]);
        assert!(parse_metadata(&doc(plain), "https://idp.example.com")
            .unwrap_err()
            .contains("S256"));
        let mut http = good.clone();
        http["token_endpoint"] = serde_json::json!("http://idp.example.com/token");
        assert!(parse_metadata(&doc(http), "https://idp.example.com")
            .unwrap_err()
            .contains("token_endpoint"));
        assert!(parse_metadata(b"<html>", "https://idp.example.com").is_err());
    }
}
