//! The TOML file exactly as written: serde structs that refuse unknown keys and keep spans where a later
//! check needs to point at a line. Validation into [`super::Config`] happens in `super::validate`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::values::*;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub upstream: Option<Spanned<RawUpstream>>,
    pub jwt: Option<Spanned<RawJwt>>,
    #[serde(default)]
    pub api_tokens: Vec<Spanned<RawApiToken>>,
    pub tailscale: Option<Spanned<RawTailscale>>,
    pub trusted_proxy: Option<Spanned<RawTrustedProxy>>,
    #[serde(default)]
    pub grants: Vec<Spanned<RawGrant>>,
    pub routes: Option<Vec<Spanned<RawRoute>>>,
    #[serde(default)]
    pub policy: RawPolicy,
    pub assertion: Option<Spanned<RawAssertion>>,
    pub openclaw: Option<Spanned<RawOpenClaw>>,
    pub oidc: Option<Spanned<RawOidc>>,
    pub scopes: Option<Spanned<RawScopes>>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub limits: RawLimits,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<ListenAddr>,
    pub tls: Option<Spanned<RawTls>>,
    pub admin_listen: Option<TcpAddr>,
    pub workers: Option<Spanned<usize>>,
    pub header_read_timeout: Option<Dur>,
    pub max_header_bytes: Option<ByteSize>,
    pub max_headers: Option<Spanned<usize>>,
    pub max_body_bytes: Option<ByteSize>,
    pub max_connections: Option<Spanned<usize>>,
    pub idle_timeout: Option<Dur>,
    pub websocket_idle_timeout: Option<Dur>,
    pub drain_timeout: Option<Dur>,
    pub h2_max_concurrent_streams: Option<u32>,
    pub unix_socket_mode: Option<Spanned<String>>,
    /// Trust `x-request-id` from these peers; everyone else gets a fresh one.
    pub request_id_peers: Option<Vec<PeerMatch>>,
    /// Browser origins (`scheme://host[:port]`) allowed to open WebSockets besides the proxy's own.
    pub allowed_origins: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: Spanned<PathBuf>,
    pub key_file: Spanned<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Spanned<String>,
    pub profile: Option<Spanned<String>>,
    pub connect_timeout: Option<Dur>,
    pub response_header_timeout: Option<Dur>,
    pub ca_file: Option<Spanned<PathBuf>>,
    pub http2: Option<bool>,
    pub pool_idle_timeout: Option<Dur>,
    pub pool_max_idle: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    pub issuer: Option<Spanned<String>>,
    pub audience: Option<Spanned<OneOrMany>>,
    pub leeway: Option<Spanned<Dur>>,
    pub jwks_url: Option<Spanned<String>>,
    pub jwks_refresh: Option<Dur>,
    pub jwks_refetch_min_interval: Option<Dur>,
    pub jwks_timeout: Option<Dur>,
    /// Algorithms accepted for JWKS keys that carry no `alg` of their own.
    pub jwks_algorithms: Option<Vec<Spanned<String>>>,
    pub scope_claims: Option<Vec<String>>,
    pub groups_claim: Option<String>,
    pub subject_claim: Option<String>,
    pub cache_size: Option<usize>,
    pub max_token_bytes: Option<ByteSize>,
    #[serde(default)]
    pub keys: Vec<Spanned<RawJwtKey>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtKey {
    pub kid: Option<String>,
    pub algorithm: Spanned<String>,
    pub secret_env: Option<Spanned<String>>,
    pub secret_file: Option<Spanned<PathBuf>>,
    pub public_key_file: Option<Spanned<PathBuf>>,
    pub jwk_file: Option<Spanned<PathBuf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiToken {
    pub subject: Spanned<String>,
    pub sha256: Spanned<String>,
    #[serde(default)]
    pub scopes: Vec<Spanned<String>>,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTailscale {
    pub trusted_peers: Option<Vec<PeerMatch>>,
    pub whois_socket: Option<PathBuf>,
    pub whois_timeout: Option<Dur>,
    pub app_capability: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrustedProxy {
    pub peers: Spanned<Vec<PeerMatch>>,
    pub user_header: HeaderNameValue,
    pub groups_header: Option<HeaderNameValue>,
    /// The header the front proxy puts its signed identity in (`Cf-Access-Jwt-Assertion`, …).
    pub assertion_header: Option<HeaderNameValue>,
    /// How that assertion is verified: the `[jwt]` table's keys.
    pub assertion: Option<Spanned<RawJwt>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrant {
    #[serde(default)]
    pub subjects: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub scopes: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub path: Spanned<String>,
    pub methods: Option<Vec<Spanned<String>>>,
    pub websocket: Option<bool>,
    #[serde(default)]
    pub require: Vec<Spanned<String>>,
    #[serde(default)]
    pub public: bool,
    pub response_header_timeout: Option<Dur>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub default_route: Option<Spanned<RawDefaultRoute>>,
    pub request_scopes_header: Option<HeaderNameValue>,
    pub include_profile_routes: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawDefaultRoute {
    Word(String),
    Require { require: Vec<String> },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssertion {
    pub header: Option<HeaderNameValue>,
    pub algorithm: Option<AssertionAlgorithm>,
    pub key_file: Option<Spanned<PathBuf>>,
    pub key_env: Option<Spanned<String>>,
    pub next_key_file: Option<Spanned<PathBuf>>,
    pub next_key_env: Option<Spanned<String>>,
    pub kid: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub ttl: Option<Spanned<Dur>>,
    pub reuse: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawOpenClaw {
    pub user_header: Option<HeaderNameValue>,
    pub shared_user: Option<String>,
    #[serde(default)]
    pub users: Vec<String>,
    pub local_client_ip: Option<Spanned<String>>,
    pub in_band_auth: Option<bool>,
    pub connect_timeout: Option<Dur>,
    pub people: Option<Spanned<String>>,
    pub provision_user: Option<String>,
    pub provision_limit: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScopes {
    pub catalogue: Vec<Spanned<String>>,
    #[serde(default)]
    pub implies: BTreeMap<String, Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub level: Option<String>,
    pub format: Option<Spanned<String>>,
    pub audit: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub enabled: Option<bool>,
    pub requests_per_address: Option<RateValue>,
    pub requests_per_address_burst: Option<Spanned<u64>>,
    pub requests_per_identity: Option<RateValue>,
    pub requests_per_identity_burst: Option<Spanned<u64>>,
    pub failed_auth_per_address: Option<RateValue>,
    pub failed_auth_burst: Option<Spanned<u64>>,
    pub unauthenticated_websockets_per_address: Option<usize>,
    pub unauthenticated_websockets_total: Option<usize>,
    pub table_size: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    pub issuer: Spanned<String>,
    pub client_id: Spanned<String>,
    pub client_secret_env: Option<Spanned<String>>,
    pub client_secret_file: Option<Spanned<PathBuf>>,
    pub scopes: Option<Vec<Spanned<String>>>,
    pub subject_claim: Option<String>,
    pub groups_claim: Option<String>,
    pub name_claim: Option<String>,
    pub session_ttl: Option<Spanned<Dur>>,
    pub cookie_keys_env: Option<Spanned<String>>,
    pub cookie_keys_file: Option<Spanned<PathBuf>>,
    /// Algorithms accepted for ID tokens (each JWKS key is pinned to one of them).
    pub id_token_algorithms: Option<Vec<Spanned<String>>>,
    pub leeway: Option<Spanned<Dur>>,
    pub discovery_refresh: Option<Dur>,
    pub timeout: Option<Dur>,
    pub login_ttl: Option<Spanned<Dur>>,
    pub post_logout_redirect: Option<Spanned<String>>,
}
