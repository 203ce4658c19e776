//! The configuration contract (product §4), parsed once into types that cannot hold an invalid state.
//!
//! `raw` mirrors the TOML file and refuses unknown keys; `validate` turns it into [`Config`], reading key
//! material and secrets as it goes, and reports every problem as `file:line: message`. A running proxy
//! never sees raw configuration: it sees a compiled `runtime::Snapshot` built from a [`Config`].
//!
//! What needs parsing is parsed here, once, into the types of the [`crate::values`] floor (route
//! patterns, verification and signing keys), and stored parsed: the layers that build from a [`Config`]
//! never parse it again. `config` imports nothing from those layers.

mod raw;
mod validate;
pub mod values;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Method};
use ipnet::IpNet;

use crate::values::{AssertionKey, PathPattern, ProfileAccess, OPENCLAW_ROUTES};

pub use validate::ConfigError;
pub use values::{AssertionAlgorithm, JwtAlgorithm, ListenAddr, PeerMatch};

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages and reloads; `None` for the embedded demo.
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub jwt: Option<JwtConfig>,
    pub api_tokens: Vec<ApiTokenConfig>,
    pub tailscale: Option<TailscaleConfig>,
    pub trusted_proxy: Option<TrustedProxyConfig>,
    pub grants: Vec<GrantConfig>,
    pub routes: Vec<RouteConfig>,
    /// True when `routes` is the profile's default table rather than the file's own.
    pub routes_from_profile: bool,
    pub default_route: DefaultRoute,
    pub request_scopes_header: Option<HeaderName>,
    pub assertion: AssertionConfig,
    pub openclaw: OpenClawConfig,
    /// Browser sign-in (`[oidc]`), when configured.
    pub oidc: Option<OidcConfig>,
    pub scopes: ScopesConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: ListenAddr,
    pub tls: Option<TlsConfig>,
    pub admin_listen: Option<std::net::SocketAddr>,
    /// Worker threads, each with its own event loop and upstream pool (thread-per-core).
    pub workers: usize,
    /// Slowloris guard: a request's headers must arrive within this time. hyper starts this clock when
    /// it waits for a request head, so it also bounds how long a keep-alive connection may sit idle.
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// `None` means request bodies are not limited (they are streamed, never buffered).
    pub max_body_bytes: Option<u64>,
    pub max_connections: usize,
    /// A streamed body with no bytes either way for this long is cut (never a total-duration timeout).
    pub idle_timeout: Duration,
    pub websocket_idle_timeout: Duration,
    /// How long in-flight requests and streams may run on after SIGTERM.
    pub drain_timeout: Duration,
    pub h2_max_concurrent_streams: u32,
    pub unix_socket_mode: Option<u32>,
    pub request_id_peers: Vec<PeerMatch>,
    /// Cross-site WebSocket hijacking guard: a browser upgrade whose `Origin` is neither the request's
    /// own host nor listed here is refused, so a web page cannot ride a visitor's ambient (Tailscale,
    /// trusted-proxy) identity. Lower-cased `scheme://host[:port]`.
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Which upstream dialect scopegate speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// OpenClaw's trusted-proxy contract: user header, `X-OpenClaw-Scopes`, non-loopback XFF.
    OpenClaw,
    /// Only the signed assertion and standard forwarding headers.
    Generic,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::OpenClaw => "openclaw",
            Profile::Generic => "generic",
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: http::Uri,
    pub scheme_https: bool,
    /// `host:port` of the upstream, as used in the request URI.
    pub authority: http::uri::Authority,
    /// A path prefix from the URL (`http://gw/base` forwards `/x` as `/base/x`); empty for none.
    pub base_path: String,
    pub profile: Profile,
    pub connect_timeout: Duration,
    pub response_header_timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub http2: bool,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
}

#[derive(Clone)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: Vec<String>,
    pub leeway: Duration,
    pub jwks_url: Option<String>,
    pub jwks_refresh: Duration,
    pub jwks_refetch_min_interval: Duration,
    pub jwks_timeout: Duration,
    pub jwks_algorithms: Vec<JwtAlgorithm>,
    pub scope_claims: Vec<String>,
    pub groups_claim: Option<String>,
    pub subject_claim: String,
    pub cache_size: usize,
    pub max_token_bytes: usize,
    pub keys: Vec<JwtKeyConfig>,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks_url", &self.jwks_url)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// A static verification key, already parsed, pinned to one algorithm.
#[derive(Clone)]
pub struct JwtKeyConfig {
    pub kid: Option<String>,
    pub algorithm: JwtAlgorithm,
    pub key: jsonwebtoken::DecodingKey,
    /// Where it came from, for `check` output (never the secret itself).
    pub origin: String,
}

#[derive(Clone)]
pub struct ApiTokenConfig {
    pub subject: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<String>,
    pub groups: Vec<String>,
}

impl std::fmt::Debug for ApiTokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTokenConfig")
            .field("subject", &self.subject)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct TailscaleConfig {
    pub trusted_peers: Vec<PeerMatch>,
    pub whois_socket: Option<PathBuf>,
    pub whois_timeout: Duration,
    pub app_capability: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TrustedProxyConfig {
    pub peers: Vec<PeerMatch>,
    pub user_header: HeaderName,
    pub groups_header: Option<HeaderName>,
    /// Required: the proxy's signed identity assertion, and how to verify it.
    pub assertion: Option<ProxyAssertionConfig>,
}

/// `[trusted_proxy] assertion_header` + `[trusted_proxy.assertion]`: the front proxy signs who it
/// authenticated (Cloudflare Access, Pomerium, any issuer with a JWKS), and only a verified assertion
/// names the user and groups.
#[derive(Debug, Clone)]
pub struct ProxyAssertionConfig {
    pub header: HeaderName,
    pub jwt: JwtConfig,
}

#[derive(Debug, Clone)]
pub struct GrantConfig {
    pub subjects: Vec<String>,
    pub groups: Vec<String>,
    pub scopes: Vec<String>,
}

/// One `[[routes]]` entry (or a profile default).
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Parsed when the config is read: an invalid pattern never gets this far.
    pub path: PathPattern,
    /// Empty means any method.
    pub methods: Vec<Method>,
    /// `Some(true)`: only WebSocket upgrades; `Some(false)`: never upgrades; `None`: both.
    pub websocket: Option<bool>,
    pub access: RouteAccess,
    pub response_header_timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAccess {
    /// No identity needed.
    Public,
    /// An identity holding every listed scope (an empty list: any authenticated identity).
    Require(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultRoute {
    Deny,
    Require(Vec<String>),
}

#[derive(Clone)]
pub struct AssertionConfig {
    pub header: HeaderName,
    pub algorithm: AssertionAlgorithm,
    /// The parsed signing key, of `algorithm`; `None`: an ephemeral key is generated.
    pub key: Option<AssertionKey>,
    /// Published in the JWKS ahead of a rotation; never used to sign.
    pub next_key: Option<AssertionKey>,
    pub kid: Option<String>,
    pub issuer: String,
    pub audience: String,
    pub ttl: Duration,
    /// How long one signed assertion may serve identical requests (same caller, client, method, path).
    pub reuse: Duration,
}

impl std::fmt::Debug for AssertionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionConfig")
            .field("header", &self.header)
            .field("algorithm", &self.algorithm)
            .field("key", &self.key.as_ref().map(|_| "<set>"))
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct OpenClawConfig {
    pub user_header: HeaderName,
    /// The gateway identity presented for subjects the gateway's `identityScopes` does not name.
    pub shared_user: String,
    /// Extra subjects to name in the gateway's `identityScopes` (beyond grants and API tokens).
    pub users: Vec<String>,
    /// The client address sent for callers on a loopback address (the gateway refuses loopback XFF).
    pub local_client_ip: IpAddr,
    /// Accept a JWT or API token inside the WebSocket `connect` frame.
    pub in_band_auth: bool,
    /// How long a client may take to send its `connect` frame.
    pub connect_timeout: Duration,
    /// How people the config does not name reach the gateway's WebSocket grant.
    pub people: People,
    /// The admin identity scopegate presents to the gateway to provision people (`people = "provision"`).
    pub provision_user: String,
    /// At most this many people are added to the gateway's `identityScopes`, so that a flood of new
    /// subjects cannot grow the gateway's config without limit.
    pub provision_limit: usize,
}

/// `[openclaw] people` (contract §4): how people the config does not name reach the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum People {
    /// Only people `openclaw-config` lists reach the gateway's WebSocket; others are refused there.
    Listed,
    /// scopegate adds each person to the gateway's `identityScopes` before their first WebSocket.
    Provision,
    /// Everyone unnamed is one shared gateway identity (the old behaviour; explicit only).
    Shared,
}

impl People {
    pub fn as_str(self) -> &'static str {
        match self {
            People::Listed => "listed",
            People::Provision => "provision",
            People::Shared => "shared",
        }
    }
}

/// `[oidc]`: browser sign-in with the authorization code flow and PKCE, sessions in sealed cookies.
#[derive(Clone)]
pub struct OidcConfig {
    /// Exactly as the provider spells it: discovery must echo it byte for byte (OIDC Discovery §4.3).
    pub issuer: String,
    pub client_id: String,
    /// `None`: a public client, PKCE only.
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
    pub subject_claim: String,
    pub groups_claim: Option<String>,
    pub name_claim: Option<String>,
    pub session_ttl: Duration,
    /// How long a started sign-in may take to come back to the callback.
    pub login_ttl: Duration,
    /// 32-byte AEAD keys; the first seals, all unseal.
    pub cookie_keys: Vec<[u8; 32]>,
    pub id_token_algorithms: Vec<JwtAlgorithm>,
    pub leeway: Duration,
    pub discovery_refresh: Duration,
    pub timeout: Duration,
    /// Where the provider sends the browser after logout (a same-origin path); `None`: `/`.
    pub post_logout_redirect: String,
}

impl std::fmt::Debug for OidcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("public_client", &self.client_secret.is_none())
            .field("cookie_keys", &self.cookie_keys.len())
            .finish_non_exhaustive()
    }
}

/// The scope catalogue and its implication rules, as names (compiled in `policy::scopes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopesConfig {
    pub catalogue: Vec<String>,
    /// `scope → scopes it satisfies directly`; `"*"` stands for every scope in the catalogue.
    pub implies: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human lines on a terminal, JSON otherwise.
    Auto,
    Text,
    Json,
}

/// Abuse limits (`[limits]`), per client address (after trusted hops) and per identity. Per instance:
/// replicas behind a load balancer each keep their own tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Requests per client address.
    pub address_requests: Option<RateLimit>,
    /// Requests per authenticated identity (by subject).
    pub identity_requests: Option<RateLimit>,
    /// Failed authentications per client address; when spent, requests that would need a credential
    /// verified get 429 before any signature check.
    pub failed_auth: Option<RateLimit>,
    /// Concurrent WebSockets per client address still waiting for their in-band credential (0: no cap).
    pub unauthenticated_websockets_per_address: usize,
    /// The same, over all addresses (0: no cap).
    pub unauthenticated_websockets_total: usize,
    /// Entries in each rate table (a fixed size: memory does not grow with the number of addresses).
    pub table_size: usize,
}

impl LimitsConfig {
    /// Every limit off (`[limits] enabled = false`).
    pub fn off() -> LimitsConfig {
        LimitsConfig {
            address_requests: None,
            identity_requests: None,
            failed_auth: None,
            unauthenticated_websockets_per_address: 0,
            unauthenticated_websockets_total: 0,
            table_size: 0,
        }
    }
}

/// `count` events per `period`, with up to `burst` at once (a GCRA bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub count: u64,
    pub period: Duration,
    pub burst: u64,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
    pub audit: bool,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, &e))?;
        Config::parse(&text, Some(path))
    }

    /// Validates config text; `path` names the file in messages and anchors relative paths.
    pub fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        validate::parse(text, path)
    }

    /// Where the config file comes from when `--config` is not given: `$SCOPEGATE_CONFIG`, then
    /// `./scopegate.toml`.
    pub fn default_path() -> PathBuf {
        std::env::var_os("SCOPEGATE_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("scopegate.toml"))
    }
}

/// OpenClaw's scope catalogue and implication rules (gateway contract §2).
pub fn openclaw_scopes() -> ScopesConfig {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    ScopesConfig {
        catalogue: s(&[
            "operator.admin",
            "operator.read",
            "operator.write",
            "operator.sessions.read",
            "operator.sessions.write",
            "operator.approvals",
            "operator.questions",
            "operator.pairing",
            "operator.talk",
            "operator.talk.secrets",
        ]),
        implies: vec![
            ("operator.admin".into(), s(&["*"])),
            (
                "operator.write".into(),
                s(&[
                    "operator.read",
                    "operator.talk",
                    "operator.sessions.read",
                    "operator.sessions.write",
                ]),
            ),
            ("operator.read".into(), s(&["operator.sessions.read"])),
            (
                "operator.sessions.write".into(),
                s(&["operator.sessions.read"]),
            ),
        ],
    }
}

/// The OpenClaw profile's default route table ([`OPENCLAW_ROUTES`]) as routes.
pub(crate) fn openclaw_routes() -> Vec<RouteConfig> {
    OPENCLAW_ROUTES
        .iter()
        .map(|r| RouteConfig {
            // A constant table, every row checked by a unit test of `values`.
            path: PathPattern::parse(r.path).expect("OPENCLAW_ROUTES holds valid patterns"),
            methods: r.methods.to_vec(),
            websocket: r.websocket,
            access: match r.access {
                ProfileAccess::Public => RouteAccess::Public,
                ProfileAccess::Require(scopes) => {
                    RouteAccess::Require(scopes.iter().map(|s| s.to_string()).collect())
                }
            },
            response_header_timeout: None,
        })
        .collect()
}

/// True when a peer address belongs to one of the nets (unix peers match `"unix"` only).
pub fn peer_matches(peers: &[PeerMatch], peer: Option<IpAddr>) -> bool {
    match peer {
        None => peers.iter().any(|p| matches!(p, PeerMatch::Unix)),
        Some(ip) => {
            let ip = canonical_ip(ip);
            peers.iter().any(|p| match p {
                PeerMatch::Net(net) => net_contains(net, ip),
                PeerMatch::Unix => false,
            })
        }
    }
}

fn net_contains(net: &IpNet, ip: IpAddr) -> bool {
    net.contains(&ip)
}

/// Folds IPv4-mapped IPv6 (`::ffff:10.0.0.1`) to IPv4, so one CIDR covers both spellings.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}
