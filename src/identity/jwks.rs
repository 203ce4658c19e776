//! The identity provider's published keys (JWKS): fetched before the listener reports ready, refreshed in
//! the background, refetched once on an unknown `kid` (rate-limited and single-flight, so a flood of
//! forged `kid`s costs the IdP at most one request per interval), and the last good set kept while the
//! IdP is down or serving garbage.
//!
//! Each published key is pinned to one algorithm (`values::VerificationKey::from_jwk`): its own `alg`
//! when it has one, otherwise the one its key type implies, and only if the config allows it. Symmetric
//! (`oct`) keys are never accepted from a network document.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::DecodingKey;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::config::{JwtAlgorithm, JwtConfig};
use crate::util::refresh::{self, Refreshable};
use crate::values::VerificationKey;

/// A verification key pinned to one algorithm.
#[derive(Clone)]
pub struct KeyEntry {
    pub kid: Option<String>,
    pub alg: JwtAlgorithm,
    pub key: DecodingKey,
    /// "jwks https://…" or "file …", for reasons.
    pub origin: String,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("origin", &self.origin)
            .finish()
    }
}

/// Fetch bookkeeping, for readiness and metrics.
#[derive(Debug, Clone, Default)]
pub struct JwksStatus {
    pub keys: usize,
    pub last_success: Option<Instant>,
    pub last_error: Option<String>,
    pub fetches_ok: u64,
    pub fetches_failed: u64,
}

pub struct JwksCache {
    url: String,
    algorithms: Vec<JwtAlgorithm>,
    timeout: Duration,
    refresh: Duration,
    min_refetch: Duration,
    keys: ArcSwap<Vec<KeyEntry>>,
    /// Bumped whenever the key set changes, so verified-token caches can drop stale entries.
    generation: AtomicU64,
    status: Mutex<JwksStatus>,
    last_attempt: Mutex<Option<Instant>>,
    /// Single flight: one fetch at a time; waiters see its result.
    fetch_lock: tokio::sync::Mutex<()>,
}

impl JwksCache {
    pub fn new(cfg: &JwtConfig) -> Option<Arc<JwksCache>> {
        let url = cfg.jwks_url.clone()?;
        Some(Arc::new(JwksCache {
            url,
            algorithms: cfg.jwks_algorithms.clone(),
            timeout: cfg.jwks_timeout,
            refresh: cfg.jwks_refresh,
            min_refetch: cfg.jwks_refetch_min_interval,
            keys: ArcSwap::from_pointee(Vec::new()),
            generation: AtomicU64::new(0),
            status: Mutex::new(JwksStatus::default()),
            last_attempt: Mutex::new(None),
            fetch_lock: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// True when this cache serves the same document with the same rules (a reload may keep it).
    pub fn same_source(&self, cfg: &JwtConfig) -> bool {
        cfg.jwks_url.as_deref() == Some(self.url.as_str()) && cfg.jwks_algorithms == self.algorithms
    }

    pub fn current(&self) -> Arc<Vec<KeyEntry>> {
        self.keys.load_full()
    }

    pub fn has_keys(&self) -> bool {
        !self.keys.load().is_empty()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn status(&self) -> JwksStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Fetches now. On failure the last good set stays in place.
    pub async fn fetch(&self) -> Result<usize, String> {
        let _flight = self.fetch_lock.lock().await;
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> Result<usize, String> {
        if let Ok(mut last) = self.last_attempt.lock() {
            *last = Some(Instant::now());
        }
        let result = match crate::util::http_get(&self.url, self.timeout, 1024 * 1024).await {
            Ok(body) => parse_jwks(&body, &self.algorithms, &self.url),
            Err(e) => Err(e),
        };
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(keys) => {
                let n = keys.len();
                let changed = {
                    let old = self.keys.load();
                    !same_keys(&old, &keys)
                };
                if changed {
                    self.keys.store(Arc::new(keys));
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    tracing::info!(url = %self.url, keys = n, "jwks updated");
                }
                status.keys = n;
                status.last_success = Some(Instant::now());
                status.last_error = None;
                status.fetches_ok += 1;
                crate::metrics::jwks_fetch("ok");
                Ok(n)
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, kept = status.keys, "jwks fetch failed; keeping the last good key set");
                status.last_error = Some(e.clone());
                status.fetches_failed += 1;
                crate::metrics::jwks_fetch("error");
                Err(e)
            }
        }
    }

    /// Called on an unknown `kid`: refetches unless a fetch happened within the minimum interval.
    /// Concurrent callers share one fetch.
    pub async fn refetch_for_unknown_kid(&self) {
        let recent = |this: &Self| {
            this.last_attempt
                .lock()
                .ok()
                .and_then(|l| *l)
                .is_some_and(|t| t.elapsed() < this.min_refetch)
        };
        if recent(self) {
            if !self.has_keys() {
                // A fetch (the initial one, typically) may still be in flight: share its result.
                drop(self.fetch_lock.lock().await);
            }
            crate::metrics::jwks_fetch("rate_limited");
            return;
        }
        let _flight = self.fetch_lock.lock().await;
        // Someone else may have fetched while we waited for the lock.
        if recent(self) {
            return;
        }
        let _ = self.fetch_locked().await;
    }

    /// Fetches until the first success or until `deadline`; used before the listener reports ready.
    pub async fn initial_fetch(&self, deadline: Duration) -> bool {
        refresh::initial_fetch(self, deadline).await
    }

    /// Background refresh until `stop`: every `refresh`, or every few seconds while there are no keys.
    pub fn spawn_refresher(self: &Arc<Self>, stop: CancellationToken) {
        refresh::spawn_refresher(self, stop);
    }
}

impl Refreshable for JwksCache {
    async fn refresh(&self) -> Result<(), String> {
        self.fetch().await.map(|_| ())
    }

    fn ready(&self) -> bool {
        self.has_keys()
    }

    fn interval(&self) -> Duration {
        self.refresh
    }
}

fn same_keys(a: &[KeyEntry], b: &[KeyEntry]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.kid == y.kid
                && x.alg == y.alg
                && x.key.as_bytes_for_compare() == y.key.as_bytes_for_compare()
        })
}

trait KeyBytes {
    fn as_bytes_for_compare(&self) -> Vec<u8>;
}

impl KeyBytes for DecodingKey {
    fn as_bytes_for_compare(&self) -> Vec<u8> {
        match self.kind() {
            jsonwebtoken::DecodingKeyKind::SecretOrDer(b) => b.clone(),
            jsonwebtoken::DecodingKeyKind::RsaModulusExponent { n, e } => {
                let mut v = n.clone();
                v.extend_from_slice(e);
                v
            }
        }
    }
}

/// Parses a JWKS document into pinned keys. Unusable keys are skipped (logged), never guessed at.
pub fn parse_jwks(
    body: &[u8],
    allowed: &[JwtAlgorithm],
    url: &str,
) -> Result<Vec<KeyEntry>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err("JWKS has no \"keys\" array".into());
    };
    let mut out = Vec::new();
    for raw in keys {
        match VerificationKey::from_jwk(raw, None, allowed) {
            Ok(k) => out.push(KeyEntry {
                kid: k.kid,
                alg: k.algorithm,
                key: k.key,
                origin: format!("jwks {url}"),
            }),
            Err(e) => tracing::debug!(url, error = %e, "skipping JWKS key"),
        }
    }
    if out.is_empty() {
        return Err("JWKS has no usable signature key".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[JwtAlgorithm] = &[
        JwtAlgorithm::RS256,
        JwtAlgorithm::ES256,
        JwtAlgorithm::EdDSA,
    ];

    #[test]
    fn pins_algorithms_and_skips_what_does_not_fit() {
        let body = serde_json::json!({"keys":[
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed"},
            {"kty":"EC","crv":"P-256","kid":"ec","alg":"ES256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac","alg":"HS256"},
            {"kty":"EC","crv":"P-256","kid":"lies","alg":"RS256",
             "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"enc","use":"enc"},
            {"kty":"weird"}
        ]});
        let keys = parse_jwks(body.to_string().as_bytes(), ALL, "u").unwrap();
        let got: Vec<_> = keys
            .iter()
            .map(|k| (k.kid.clone().unwrap(), k.alg))
            .collect();
        assert_eq!(
            got,
            vec![
                ("ed".to_string(), JwtAlgorithm::EdDSA),
                ("ec".to_string(), JwtAlgorithm::ES256)
            ]
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse_jwks(b"<html>", ALL, "u").is_err());
        assert!(parse_jwks(b"{\"keys\":[]}", ALL, "u").is_err());
        assert!(parse_jwks(b"{\"nokeys\":1}", ALL, "u").is_err());
    }

    #[test]
    fn disallowed_algorithms_are_skipped() {
        let body = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        assert!(parse_jwks(body, &[JwtAlgorithm::RS256], "u").is_err());
    }
}
