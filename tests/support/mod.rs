//! Shared test support: real servers on loopback, typed clients, and real signing keys.
//!
//! - [`upstream::Upstream`]: a recording HTTP/1.1 + WebSocket server that answers like a gateway would
//!   and remembers every request it saw (headers, trailers, body digest), so a test can assert what
//!   reached it — and what did not.
//! - [`proxy`]: scopegate started in-process from TOML text (with files in a temp dir), or as a child
//!   process of the real binary when a test needs signals or its memory.
//! - [`keys`]: Ed25519 and P-256 keys generated per run, RSA keys from `tests/fixtures` (test-only).
//! - [`client`]: HTTP/1.1, h2c, raw TCP and WebSocket clients.
//! - [`npm`]: the pinned npm packages of the end-to-end suites, installed once into a shared cache.

#![allow(dead_code)]

pub mod client;
pub mod idp;
pub mod jar;
pub mod keys;
pub mod npm;
pub mod oidc_provider;
pub mod pki;
pub mod proxy;
pub mod upstream;

use std::time::Duration;

/// Awaits `f`, failing the test with `what` if it takes longer than `secs` (bounds every wait).
pub async fn within<T>(secs: u64, what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s waiting for {what}"),
    }
}

/// Installs a test log subscriber once (quiet unless RUST_LOG is set).
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Parses Prometheus text into `(name{labels}, value)` pairs.
pub fn metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The sum of the samples of `name` whose labels include every pair in `labels` (0 when none).
pub fn metric(all: &[(String, f64)], name: &str, labels: &[(&str, &str)]) -> f64 {
    all.iter()
        .filter(|(k, _)| {
            k.starts_with(&format!("{name}{{"))
                && labels
                    .iter()
                    .all(|(lk, lv)| k.contains(&format!("{lk}=\"{lv}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}
