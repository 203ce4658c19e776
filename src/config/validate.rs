//! Turns [`raw::RawConfig`] into [`Config`]: defaults, cross-field rules, key material, and every problem
//! reported as `file:line: message` (all of them, not just the first).

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;
use toml::Spanned;

use super::raw::*;
use super::values::*;
use super::*;

/// One or more configuration problems, each with its position.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone)]
pub struct Problem {
    pub file: String,
    /// 1-based; 0 when the problem has no position (a missing file).
    pub line: usize,
    pub message: String,
}

impl ConfigError {
    pub fn io(path: &Path, e: &std::io::Error) -> Self {
        ConfigError {
            problems: vec![Problem {
                file: path.display().to_string(),
                line: 0,
                message: format!("cannot read config: {e}"),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            if p.line > 0 {
                write!(f, "{}:{}: {}", p.file, p.line, p.message)?;
            } else {
                write!(f, "{}: {}", p.file, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Collects problems while validation carries on, so one run reports them all.
struct Checker<'a> {
    text: &'a str,
    file: String,
    base_dir: PathBuf,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn line_of(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = self.line_of(span);
        self.problems.push(Problem {
            file: self.file.clone(),
            line,
            message: message.into(),
        });
    }

    fn err_nowhere(&mut self, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.clone(),
            line: 1,
            message: message.into(),
        });
    }

    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    fn read_file(&mut self, p: &Spanned<PathBuf>, what: &str) -> Option<Vec<u8>> {
        let full = self.path(p.get_ref());
        match std::fs::read(&full) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.err(
                    p.span(),
                    format!("cannot read {what} {}: {e}", full.display()),
                );
                None
            }
        }
    }

    fn read_env(&mut self, var: &Spanned<String>, what: &str) -> Option<Vec<u8>> {
        match std::env::var(var.get_ref()) {
            Ok(v) if !v.is_empty() => Some(v.into_bytes()),
            _ => {
                self.err(
                    var.span(),
                    format!("environment variable {} ({what}) is not set", var.get_ref()),
                );
                None
            }
        }
    }
}

pub(super) fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
    let file = path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<config>".to_string());
    let base_dir = path
        .and_then(|p| p.parent())
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut ck = Checker {
        text,
        file,
        base_dir,
        problems: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let line = e.span().map(|s| ck.line_of(s)).unwrap_or(1);
            return Err(ConfigError {
                problems: vec![Problem {
                    file: ck.file.clone(),
                    line,
                    message: e.message().trim().to_string(),
                }],
            });
        }
    };
    let config = build(&mut ck, raw, path);
    if ck.problems.is_empty() {
        config.ok_or_else(|| ConfigError {
            problems: vec![Problem {
                file: ck.file.clone(),
                line: 1,
                message: "invalid configuration".into(),
            }],
        })
    } else {
        Err(ConfigError {
            problems: ck.problems,
        })
    }
}

fn build(ck: &mut Checker, raw: RawConfig, path: Option<&Path>) -> Option<Config> {
    let scopes = scopes_config(ck, raw.scopes);
    let known: HashSet<String> = scopes.catalogue.iter().cloned().collect();
    let check_scopes = |ck: &mut Checker, list: &[Spanned<String>]| -> Vec<String> {
        let mut out = Vec::with_capacity(list.len());
        for s in list {
            if known.contains(s.get_ref()) {
                if !out.contains(s.get_ref()) {
                    out.push(s.get_ref().clone());
                }
            } else {
                ck.err(
                    s.span(),
                    format!(
                        "unknown scope {:?} (the catalogue has: {})",
                        s.get_ref(),
                        scopes.catalogue.join(", ")
                    ),
                );
            }
        }
        out
    };

    let server = server_config(ck, raw.server);
    let upstream = upstream_config(ck, raw.upstream);
    let profile = upstream
        .as_ref()
        .map(|u| u.profile)
        .unwrap_or(Profile::Generic);

    let jwt = raw.jwt.and_then(|j| jwt_config(ck, j));

    let mut api_tokens = Vec::new();
    for t in raw.api_tokens {
        let span = t.span();
        let t = t.into_inner();
        let hex = t.sha256.get_ref().trim().to_ascii_lowercase();
        let mut digest = [0u8; 32];
        if hex.len() != 64 || !decode_hex(&hex, &mut digest) {
            ck.err(
                t.sha256.span(),
                "sha256 must be 64 hex characters: the SHA-256 of the token (`printf %s TOKEN | sha256sum`)",
            );
            continue;
        }
        if t.subject.get_ref().trim().is_empty() {
            ck.err(t.subject.span(), "subject must not be empty");
        }
        if api_tokens
            .iter()
            .any(|a: &ApiTokenConfig| a.sha256 == digest)
        {
            ck.err(span, "two [[api_tokens]] entries have the same sha256");
        }
        let scopes = check_scopes(ck, &t.scopes);
        api_tokens.push(ApiTokenConfig {
            subject: t.subject.into_inner(),
            sha256: digest,
            scopes,
            groups: t.groups,
        });
    }

    let tailscale = raw.tailscale.map(|t| {
        let t = t.into_inner();
        TailscaleConfig {
            trusted_peers: t.trusted_peers.unwrap_or_else(|| {
                vec![
                    "127.0.0.1/32".parse().expect("static"),
                    "::1/128".parse().expect("static"),
                    PeerMatch::Unix,
                ]
            }),
            whois_socket: t.whois_socket.map(|p| ck.path(&p)),
            whois_timeout: t
                .whois_timeout
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(2)),
            app_capability: t.app_capability,
        }
    });
    if let Some(ts) = &tailscale {
        check_not_trust_all(ck, &ts.trusted_peers, 0..0, "[tailscale] trusted_peers");
    }

    let trusted_proxy = raw.trusted_proxy.map(|t| {
        let span = t.span();
        let t = t.into_inner();
        if t.peers.get_ref().is_empty() {
            ck.err(
                t.peers.span(),
                "[trusted_proxy] peers must name at least one address",
            );
        }
        check_not_trust_all(ck, t.peers.get_ref(), span, "[trusted_proxy] peers");
        TrustedProxyConfig {
            peers: t.peers.into_inner(),
            user_header: t.user_header.0,
            groups_header: t.groups_header.map(|h| h.0),
        }
    });

    let mut grants = Vec::new();
    for g in raw.grants {
        let span = g.span();
        let g = g.into_inner();
        if g.subjects.is_empty() && g.groups.is_empty() {
            ck.err(span, "a [[grants]] entry needs `subjects` and/or `groups`");
        }
        let scopes = check_scopes(ck, &g.scopes);
        grants.push(GrantConfig {
            subjects: g.subjects,
            groups: g.groups,
            scopes,
        });
    }

    let include_profile = raw.policy.include_profile_routes.unwrap_or(false);
    let (mut routes, routes_from_profile) = match raw.routes {
        Some(list) => {
            let mut out = Vec::new();
            for r in list {
                if let Some(route) = route_config(ck, r, &check_scopes) {
                    out.push(route);
                }
            }
            (out, false)
        }
        None => (profile_routes(profile), profile == Profile::OpenClaw),
    };
    if include_profile && !routes_from_profile {
        routes.extend(profile_routes(profile));
    }

    let default_route = match raw.policy.default_route {
        None => DefaultRoute::Deny,
        Some(d) => {
            let span = d.span();
            match d.into_inner() {
                RawDefaultRoute::Word(w) if w == "deny" => DefaultRoute::Deny,
                RawDefaultRoute::Word(w) => {
                    ck.err(
                        span,
                        format!(
                            "default_route must be \"deny\" or {{ require = [...] }}, not {w:?}"
                        ),
                    );
                    DefaultRoute::Deny
                }
                RawDefaultRoute::Require { require } => {
                    // Untagged enums lose inner spans; point at the default_route value instead.
                    let spanned: Vec<Spanned<String>> = require
                        .into_iter()
                        .map(|s| Spanned::new(span.clone(), s))
                        .collect();
                    DefaultRoute::Require(check_scopes(ck, &spanned))
                }
            }
        }
    };

    let openclaw = openclaw_config(ck, raw.openclaw);
    let assertion = assertion_config(ck, raw.assertion, profile, upstream.as_ref());
    let log = log_config(ck, raw.log);
    let limits = limits_config(ck, raw.limits);

    if jwt.is_none()
        && api_tokens.is_empty()
        && tailscale.is_none()
        && trusted_proxy.is_none()
        && routes
            .iter()
            .any(|r| matches!(r.access, RouteAccess::Require(_)))
    {
        ck.err_nowhere(
            "no identity source is configured ([jwt], [[api_tokens]], [tailscale] or [trusted_proxy]): every non-public route would refuse everyone",
        );
    }

    Some(Config {
        source: path.map(|p| p.to_path_buf()),
        server: server?,
        upstream: upstream?,
        jwt,
        api_tokens,
        tailscale,
        trusted_proxy,
        grants,
        routes,
        routes_from_profile,
        default_route,
        request_scopes_header: raw.policy.request_scopes_header.map(|h| h.0),
        assertion: assertion?,
        openclaw,
        scopes,
        log,
        limits,
    })
}

fn check_not_trust_all(ck: &mut Checker, peers: &[PeerMatch], span: Range<usize>, what: &str) {
    for p in peers {
        if let PeerMatch::Net(net) = p {
            if net.prefix_len() == 0 {
                ck.err(
                    span.clone(),
                    format!("{what} contains {net}, which trusts every address; name your proxy's addresses"),
                );
            }
        }
    }
}

fn scopes_config(ck: &mut Checker, raw: Option<Spanned<RawScopes>>) -> ScopesConfig {
    let Some(raw) = raw else {
        return openclaw_scopes();
    };
    let span = raw.span();
    let raw = raw.into_inner();
    let mut catalogue: Vec<String> = Vec::new();
    for s in &raw.catalogue {
        let name = s.get_ref();
        if name.is_empty()
            || name.contains(char::is_whitespace)
            || name.contains(',')
            || name == "*"
        {
            ck.err(
                s.span(),
                format!("invalid scope name {name:?}: no spaces, commas or `*`"),
            );
        } else if catalogue.contains(name) {
            ck.err(s.span(), format!("scope {name:?} is listed twice"));
        } else {
            catalogue.push(name.clone());
        }
    }
    if catalogue.is_empty() {
        ck.err(
            span.clone(),
            "[scopes] catalogue must list at least one scope",
        );
    }
    if catalogue.len() > crate::policy::scopes::MAX_SCOPES {
        ck.err(
            span,
            format!(
                "[scopes] catalogue has {} scopes; at most {} are supported",
                catalogue.len(),
                crate::policy::scopes::MAX_SCOPES
            ),
        );
    }
    let mut implies = Vec::new();
    for (from, targets) in raw.implies {
        if !catalogue.contains(&from) {
            let at = targets.first().map(|t| t.span()).unwrap_or(0..0);
            ck.err(at, format!("[scopes.implies] names unknown scope {from:?}"));
            continue;
        }
        let mut to = Vec::new();
        for t in targets {
            if t.get_ref() == "*" || catalogue.contains(t.get_ref()) {
                to.push(t.into_inner());
            } else {
                ck.err(
                    t.span(),
                    format!(
                        "[scopes.implies] {from:?} implies unknown scope {:?}",
                        t.get_ref()
                    ),
                );
            }
        }
        implies.push((from, to));
    }
    ScopesConfig { catalogue, implies }
}

fn server_config(ck: &mut Checker, raw: RawServer) -> Option<ServerConfig> {
    let workers = match raw.workers {
        Some(w) if *w.get_ref() == 0 || *w.get_ref() > 256 => {
            ck.err(w.span(), "workers must be between 1 and 256");
            1
        }
        Some(w) => w.into_inner(),
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    let max_headers = match raw.max_headers {
        Some(n) if *n.get_ref() == 0 || *n.get_ref() > 10_000 => {
            ck.err(n.span(), "max_headers must be between 1 and 10000");
            100
        }
        Some(n) => n.into_inner(),
        None => 100,
    };
    let max_connections = match raw.max_connections {
        Some(n) if *n.get_ref() == 0 => {
            ck.err(n.span(), "max_connections must be at least 1");
            1
        }
        Some(n) => n.into_inner(),
        None => 16_384,
    };
    let max_header_bytes = raw
        .max_header_bytes
        .map(|b| b.0 as usize)
        .unwrap_or(32 * 1024);
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        ck.err_nowhere("[server] max_header_bytes must be between 1KiB and 1MiB");
    }
    let tls = raw.tls.map(|t| {
        let t = t.into_inner();
        let cert_file = ck.path(t.cert_file.get_ref());
        let key_file = ck.path(t.key_file.get_ref());
        if !cert_file.exists() {
            ck.err(
                t.cert_file.span(),
                format!("TLS certificate {} does not exist", cert_file.display()),
            );
        }
        if !key_file.exists() {
            ck.err(
                t.key_file.span(),
                format!("TLS key {} does not exist", key_file.display()),
            );
        }
        TlsConfig {
            cert_file,
            key_file,
        }
    });
    let unix_socket_mode = raw.unix_socket_mode.and_then(|m| {
        match u32::from_str_radix(m.get_ref().trim_start_matches("0o"), 8) {
            Ok(v) if v <= 0o777 => Some(v),
            _ => {
                ck.err(
                    m.span(),
                    format!(
                        "unix_socket_mode must be octal like \"0660\", not {:?}",
                        m.get_ref()
                    ),
                );
                None
            }
        }
    });
    let listen = raw
        .listen
        .unwrap_or(ListenAddr::Tcp(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            8080,
        ))));
    Some(ServerConfig {
        listen,
        tls,
        admin_listen: raw.admin_listen.map(|a| a.0),
        workers,
        header_read_timeout: raw
            .header_read_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(20)),
        max_header_bytes,
        max_headers,
        max_body_bytes: Some(raw.max_body_bytes.map(|b| b.0).unwrap_or(256 * 1024 * 1024))
            .filter(|&b| b > 0),
        max_connections,
        idle_timeout: raw
            .idle_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(300)),
        websocket_idle_timeout: raw
            .websocket_idle_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(3600)),
        drain_timeout: raw
            .drain_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30)),
        h2_max_concurrent_streams: raw.h2_max_concurrent_streams.unwrap_or(256),
        unix_socket_mode,
        request_id_peers: raw.request_id_peers.unwrap_or_default(),
        allowed_origins: raw
            .allowed_origins
            .unwrap_or_default()
            .iter()
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect(),
    })
}

fn upstream_config(ck: &mut Checker, raw: Option<Spanned<RawUpstream>>) -> Option<UpstreamConfig> {
    let Some(raw) = raw else {
        ck.err_nowhere("[upstream] is required: set url = \"http://127.0.0.1:18789\"");
        return None;
    };
    let raw = raw.into_inner();
    let url_span = raw.url.span();
    let uri: http::Uri = match raw.url.get_ref().parse() {
        Ok(u) => u,
        Err(e) => {
            ck.err(
                url_span,
                format!("invalid upstream url {:?}: {e}", raw.url.get_ref()),
            );
            return None;
        }
    };
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            ck.err(url_span, "upstream url must start with http:// or https://");
            return None;
        }
    };
    let Some(authority) = uri.authority().cloned() else {
        ck.err(url_span, "upstream url has no host");
        return None;
    };
    if uri.query().is_some() {
        ck.err(url_span.clone(), "upstream url must not have a query");
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    let profile = match raw.profile.as_ref().map(|p| p.get_ref().as_str()) {
        None | Some("generic") => Profile::Generic,
        Some("openclaw") => Profile::OpenClaw,
        Some(other) => {
            let span = raw.profile.as_ref().map(|p| p.span()).unwrap_or(url_span);
            ck.err(
                span,
                format!("unknown profile {other:?}: use \"openclaw\" or \"generic\""),
            );
            Profile::Generic
        }
    };
    let ca_file = raw.ca_file.map(|p| {
        let full = ck.path(p.get_ref());
        if !full.exists() {
            ck.err(
                p.span(),
                format!("CA file {} does not exist", full.display()),
            );
        }
        full
    });
    Some(UpstreamConfig {
        url: uri,
        scheme_https: https,
        authority,
        base_path,
        profile,
        connect_timeout: raw
            .connect_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(5)),
        response_header_timeout: raw
            .response_header_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(300)),
        ca_file,
        http2: raw.http2.unwrap_or(false),
        pool_idle_timeout: raw
            .pool_idle_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(90)),
        pool_max_idle: raw.pool_max_idle.unwrap_or(256),
    })
}

const MAX_LEEWAY: Duration = Duration::from_secs(300);

fn jwt_config(ck: &mut Checker, raw: Spanned<RawJwt>) -> Option<JwtConfig> {
    let span = raw.span();
    let raw = raw.into_inner();
    let issuer = match raw.issuer {
        Some(i) if !i.get_ref().is_empty() => i.into_inner(),
        _ => {
            ck.err(
                span.clone(),
                "[jwt] issuer is required (RFC 8725 §3.8: always check `iss`)",
            );
            String::new()
        }
    };
    let audience = match raw.audience {
        Some(a) if !a.get_ref().0.is_empty() && a.get_ref().0.iter().all(|s| !s.is_empty()) => {
            a.into_inner().0
        }
        _ => {
            ck.err(
                span.clone(),
                "[jwt] audience is required (RFC 8725 §3.9: always check `aud`)",
            );
            Vec::new()
        }
    };
    let leeway = match raw.leeway {
        Some(l) if l.get_ref().0 > MAX_LEEWAY => {
            ck.err(l.span(), "[jwt] leeway must be at most 5m");
            MAX_LEEWAY
        }
        Some(l) => l.into_inner().0,
        None => Duration::from_secs(30),
    };
    if let Some(url) = &raw.jwks_url {
        let ok = url
            .get_ref()
            .parse::<http::Uri>()
            .ok()
            .filter(|u| {
                matches!(u.scheme_str(), Some("http") | Some("https")) && u.host().is_some()
            })
            .is_some();
        if !ok {
            ck.err(url.span(), format!("invalid jwks_url {:?}", url.get_ref()));
        }
    }
    let jwks_algorithms = match raw.jwks_algorithms {
        Some(list) => list
            .into_iter()
            .filter_map(|a| match JwtAlgorithm::from_name(a.get_ref()) {
                Some(alg) if alg.is_hmac() => {
                    ck.err(a.span(), "HMAC algorithms cannot come from a JWKS");
                    None
                }
                Some(alg) => Some(alg),
                None => {
                    ck.err(a.span(), format!("unknown algorithm {:?}", a.get_ref()));
                    None
                }
            })
            .collect(),
        None => vec![
            JwtAlgorithm::RS256,
            JwtAlgorithm::PS256,
            JwtAlgorithm::ES256,
            JwtAlgorithm::ES384,
            JwtAlgorithm::EdDSA,
        ],
    };
    let mut keys = Vec::new();
    for k in raw.keys {
        if let Some(key) = jwt_key(ck, k) {
            keys.push(key);
        }
    }
    let mut kids = HashSet::new();
    for k in &keys {
        if let Some(kid) = &k.kid {
            if !kids.insert(kid.clone()) {
                ck.err(span.clone(), format!("two [[jwt.keys]] share kid {kid:?}"));
            }
        }
    }
    if keys.is_empty() && raw.jwks_url.is_none() {
        ck.err(span, "[jwt] needs [[jwt.keys]] and/or jwks_url");
    }
    Some(JwtConfig {
        issuer,
        audience,
        leeway,
        jwks_url: raw.jwks_url.map(|u| u.into_inner()),
        jwks_refresh: raw
            .jwks_refresh
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(600)),
        jwks_refetch_min_interval: raw
            .jwks_refetch_min_interval
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30)),
        jwks_timeout: raw
            .jwks_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(5)),
        jwks_algorithms,
        scope_claims: raw
            .scope_claims
            .unwrap_or_else(|| vec!["scope".into(), "scp".into()]),
        groups_claim: Some(raw.groups_claim.unwrap_or_else(|| "groups".into()))
            .filter(|g| !g.is_empty()),
        subject_claim: raw.subject_claim.unwrap_or_else(|| "sub".into()),
        cache_size: raw.cache_size.unwrap_or(10_000),
        max_token_bytes: raw
            .max_token_bytes
            .map(|b| b.0 as usize)
            .unwrap_or(16 * 1024),
        keys,
    })
}

fn jwt_key(ck: &mut Checker, raw: Spanned<RawJwtKey>) -> Option<JwtKeyConfig> {
    use jsonwebtoken::DecodingKey;
    let span = raw.span();
    let raw = raw.into_inner();
    let Some(algorithm) = JwtAlgorithm::from_name(raw.algorithm.get_ref()) else {
        ck.err(
            raw.algorithm.span(),
            format!(
                "unknown algorithm {:?} (one of HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA; \"none\" is never accepted)",
                raw.algorithm.get_ref()
            ),
        );
        return None;
    };
    let sources = [
        raw.secret_env.is_some(),
        raw.secret_file.is_some(),
        raw.public_key_file.is_some(),
        raw.jwk_file.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if sources != 1 {
        ck.err(
            span,
            "each [[jwt.keys]] entry needs exactly one of secret_env, secret_file, public_key_file, jwk_file",
        );
        return None;
    }
    if algorithm.is_hmac() {
        let (secret, origin, at) = if let Some(env) = &raw.secret_env {
            (
                ck.read_env(env, "JWT secret")?,
                format!("env {}", env.get_ref()),
                env.span(),
            )
        } else if let Some(file) = &raw.secret_file {
            let mut bytes = ck.read_file(file, "JWT secret")?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            (
                bytes,
                format!("file {}", file.get_ref().display()),
                file.span(),
            )
        } else {
            ck.err(
                raw.algorithm.span(),
                format!("{algorithm} needs secret_env or secret_file"),
            );
            return None;
        };
        if secret.len() < algorithm.min_secret_len() {
            ck.err(
                at,
                format!(
                    "{algorithm} secret is {} bytes; RFC 7518 §3.2 requires at least {}",
                    secret.len(),
                    algorithm.min_secret_len()
                ),
            );
            return None;
        }
        return Some(JwtKeyConfig {
            kid: raw.kid,
            algorithm,
            key: DecodingKey::from_secret(&secret),
            origin,
        });
    }
    if raw.secret_env.is_some() || raw.secret_file.is_some() {
        ck.err(
            raw.algorithm.span(),
            format!("{algorithm} is asymmetric: give public_key_file or jwk_file, not a secret"),
        );
        return None;
    }
    if let Some(file) = &raw.public_key_file {
        let pem = ck.read_file(file, "public key")?;
        let key = match algorithm {
            JwtAlgorithm::RS256
            | JwtAlgorithm::RS384
            | JwtAlgorithm::RS512
            | JwtAlgorithm::PS256
            | JwtAlgorithm::PS384
            | JwtAlgorithm::PS512 => DecodingKey::from_rsa_pem(&pem),
            JwtAlgorithm::ES256 | JwtAlgorithm::ES384 => DecodingKey::from_ec_pem(&pem),
            JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
            _ => unreachable!("hmac handled above"),
        };
        return match key {
            Ok(key) => Some(JwtKeyConfig {
                kid: raw.kid,
                algorithm,
                key,
                origin: format!("file {}", file.get_ref().display()),
            }),
            Err(e) => {
                ck.err(
                    file.span(),
                    format!(
                        "cannot use {} as a {algorithm} public key: {e}",
                        file.get_ref().display()
                    ),
                );
                None
            }
        };
    }
    let file = raw.jwk_file.as_ref()?;
    let bytes = ck.read_file(file, "JWK")?;
    match crate::identity::jwks::decoding_key_from_jwk_bytes(&bytes, algorithm) {
        Ok((key, jwk_kid)) => Some(JwtKeyConfig {
            kid: raw.kid.or(jwk_kid),
            algorithm,
            key,
            origin: format!("file {}", file.get_ref().display()),
        }),
        Err(e) => {
            ck.err(
                file.span(),
                format!(
                    "cannot use {} as a {algorithm} JWK: {e}",
                    file.get_ref().display()
                ),
            );
            None
        }
    }
}

/// Validates scope names against the catalogue, reporting unknown ones at their position.
type ScopeChecker<'a> = dyn Fn(&mut Checker, &[Spanned<String>]) -> Vec<String> + 'a;

fn route_config(
    ck: &mut Checker,
    raw: Spanned<RawRoute>,
    check_scopes: &ScopeChecker,
) -> Option<RouteConfig> {
    let span = raw.span();
    let raw = raw.into_inner();
    if let Err(e) = crate::policy::routes::PathPattern::parse(raw.path.get_ref()) {
        ck.err(raw.path.span(), e);
        return None;
    }
    let mut methods = Vec::new();
    for m in raw.methods.unwrap_or_default() {
        match Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()) {
            Ok(method) => methods.push(method),
            Err(_) => ck.err(m.span(), format!("invalid method {:?}", m.get_ref())),
        }
    }
    let access = if raw.public {
        if !raw.require.is_empty() {
            ck.err(
                span,
                "a route is either `public = true` or has `require`, not both",
            );
        }
        RouteAccess::Public
    } else {
        RouteAccess::Require(check_scopes(ck, &raw.require))
    };
    Some(RouteConfig {
        path: raw.path.into_inner(),
        methods,
        websocket: raw.websocket,
        access,
        response_header_timeout: raw.response_header_timeout.map(|d| d.0),
    })
}

fn profile_routes(profile: Profile) -> Vec<RouteConfig> {
    match profile {
        Profile::OpenClaw => crate::upstream::openclaw::default_routes(),
        Profile::Generic => Vec::new(),
    }
}

fn openclaw_config(ck: &mut Checker, raw: Option<Spanned<RawOpenClaw>>) -> OpenClawConfig {
    let raw = raw.map(|r| r.into_inner());
    let (user_header, shared_user, users, local_ip, in_band, connect_timeout) = match raw {
        Some(r) => (
            r.user_header.map(|h| h.0),
            r.shared_user,
            r.users,
            r.local_client_ip,
            r.in_band_auth,
            r.connect_timeout.map(|d| d.0),
        ),
        None => (None, None, Vec::new(), None, None, None),
    };
    let local_client_ip = match local_ip {
        None => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        Some(s) => match s.get_ref().parse::<IpAddr>() {
            Ok(ip) if ip.is_loopback() || super::canonical_ip(ip).is_loopback() => {
                ck.err(s.span(), "local_client_ip must not be a loopback address: the gateway refuses loopback clients behind a proxy");
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
            }
            Ok(ip) => ip,
            Err(_) => {
                ck.err(s.span(), format!("invalid IP address {:?}", s.get_ref()));
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
            }
        },
    };
    OpenClawConfig {
        user_header: user_header
            .unwrap_or_else(|| http::HeaderName::from_static("x-forwarded-user")),
        shared_user: shared_user.unwrap_or_else(|| "scopegate".into()),
        users,
        local_client_ip,
        in_band_auth: in_band.unwrap_or(true),
        connect_timeout: connect_timeout.unwrap_or(Duration::from_secs(15)),
    }
}

fn assertion_config(
    ck: &mut Checker,
    raw: Option<Spanned<RawAssertion>>,
    profile: Profile,
    upstream: Option<&UpstreamConfig>,
) -> Option<AssertionConfig> {
    let raw = raw.map(|r| r.into_inner());
    let default_audience = match profile {
        Profile::OpenClaw => "openclaw-gateway".to_string(),
        Profile::Generic => upstream
            .map(|u| u.authority.to_string())
            .unwrap_or_else(|| "upstream".into()),
    };
    let Some(raw) = raw else {
        return Some(AssertionConfig {
            header: http::HeaderName::from_static("x-scopegate-assertion"),
            algorithm: AssertionAlgorithm::EdDSA,
            key: None,
            next_key: None,
            kid: None,
            issuer: "scopegate".into(),
            audience: default_audience,
            ttl: Duration::from_secs(60),
            reuse: Duration::from_secs(1),
        });
    };
    let algorithm = raw.algorithm.unwrap_or_default();
    let load = |ck: &mut Checker,
                file: &Option<Spanned<PathBuf>>,
                env: &Option<Spanned<String>>,
                what: &str|
     -> Option<Vec<u8>> {
        let (bytes, span) = match (file, env) {
            (Some(_), Some(e)) => {
                ck.err(
                    e.span(),
                    format!("give {what}_file or {what}_env, not both"),
                );
                return None;
            }
            (Some(f), None) => (ck.read_file(f, "assertion key")?, f.span()),
            (None, Some(e)) => (ck.read_env(e, "assertion key")?, e.span()),
            (None, None) => return None,
        };
        match crate::assertion::parse_key_material(algorithm, &bytes) {
            Ok(material) => Some(material),
            Err(e) => {
                ck.err(span, e);
                None
            }
        }
    };
    let key = load(ck, &raw.key_file, &raw.key_env, "key");
    let next_key = load(ck, &raw.next_key_file, &raw.next_key_env, "next_key");
    if algorithm == AssertionAlgorithm::HS256 && key.is_none() {
        ck.err_nowhere(
            "[assertion] HS256 needs key_env or key_file: a shared secret the upstream also knows",
        );
    }
    let ttl = match raw.ttl {
        Some(t)
            if t.get_ref().0 < Duration::from_secs(5)
                || t.get_ref().0 > Duration::from_secs(600) =>
        {
            ck.err(t.span(), "[assertion] ttl must be between 5s and 10m");
            Duration::from_secs(60)
        }
        Some(t) => t.into_inner().0,
        None => Duration::from_secs(60),
    };
    let reuse = match raw.reuse {
        Some(r) if r.get_ref().0 * 2 > ttl => {
            ck.err(r.span(), "[assertion] reuse must be at most half the ttl");
            Duration::ZERO
        }
        Some(r) => r.into_inner().0,
        None => Duration::from_secs(1),
    };
    Some(AssertionConfig {
        header: raw
            .header
            .map(|h| h.0)
            .unwrap_or_else(|| http::HeaderName::from_static("x-scopegate-assertion")),
        algorithm,
        key,
        next_key,
        kid: raw.kid,
        issuer: raw.issuer.unwrap_or_else(|| "scopegate".into()),
        audience: raw.audience.unwrap_or(default_audience),
        ttl,
        reuse,
    })
}

/// Defaults fit one gateway's sidecar: generous request rates (a person or a script never meets them;
/// a flood does), 20 failed authentications a minute per address, 16 unauthenticated WebSockets per
/// address and 1 024 in all, 65 536 entries per table.
fn limits_config(ck: &mut Checker, raw: RawLimits) -> LimitsConfig {
    if raw.enabled == Some(false) {
        return LimitsConfig::off();
    }
    let one_second = Duration::from_secs(1);
    let rate = |ck: &mut Checker,
                value: Option<RateValue>,
                burst: Option<Spanned<u64>>,
                default: Option<(u64, Duration)>,
                name: &str| {
        let (count, period) = value.map(|v| v.0).unwrap_or(default)?;
        let burst = match burst {
            Some(b) if *b.get_ref() == 0 || *b.get_ref() > 1_000_000_000 => {
                ck.err(b.span(), format!("{name} must be between 1 and 1000000000"));
                count
            }
            Some(b) => b.into_inner(),
            None => count,
        };
        Some(RateLimit {
            count,
            period,
            burst,
        })
    };
    let address_requests = rate(
        ck,
        raw.requests_per_address,
        raw.requests_per_address_burst,
        Some((1000, one_second)),
        "requests_per_address_burst",
    );
    let identity_requests = rate(
        ck,
        raw.requests_per_identity,
        raw.requests_per_identity_burst,
        Some((1000, one_second)),
        "requests_per_identity_burst",
    );
    let failed_auth = rate(
        ck,
        raw.failed_auth_per_address,
        raw.failed_auth_burst,
        Some((20, Duration::from_secs(60))),
        "failed_auth_burst",
    );
    let table_size = match raw.table_size {
        Some(n) if !(64..=1 << 24).contains(n.get_ref()) => {
            ck.err(n.span(), "table_size must be between 64 and 16777216");
            65_536
        }
        Some(n) => n.into_inner(),
        None => 65_536,
    };
    LimitsConfig {
        address_requests,
        identity_requests,
        failed_auth,
        unauthenticated_websockets_per_address: raw
            .unauthenticated_websockets_per_address
            .unwrap_or(16),
        unauthenticated_websockets_total: raw.unauthenticated_websockets_total.unwrap_or(1024),
        table_size,
    }
}

fn log_config(ck: &mut Checker, raw: RawLog) -> LogConfig {
    let format = match raw.format.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("auto") => LogFormat::Auto,
        Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            let span = raw.format.as_ref().map(|f| f.span()).unwrap_or(0..0);
            ck.err(
                span,
                format!("log format must be \"auto\", \"text\" or \"json\", not {other:?}"),
            );
            LogFormat::Auto
        }
    };
    LogConfig {
        level: raw.level.unwrap_or_else(|| "info".into()),
        format,
        audit: raw.audit.unwrap_or(true),
    }
}

fn decode_hex(hex: &str, out: &mut [u8; 32]) -> bool {
    let bytes = hex.as_bytes();
    for (i, chunk) in bytes.chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16);
        let lo = chunk.get(1).and_then(|c| (*c as char).to_digit(16));
        match (hi, lo) {
            (Some(h), Some(l)) if i < 32 => out[i] = (h * 16 + l) as u8,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Some(Path::new("test.toml")))
    }

    #[test]
    fn minimal_openclaw_config_gets_profile_routes() {
        let c = parse(
            r#"
[upstream]
url = "http://127.0.0.1:18789"
profile = "openclaw"
[trusted_proxy]
peers = ["10.0.0.0/8"]
user_header = "X-Forwarded-User"
"#,
        )
        .unwrap();
        assert!(c.routes_from_profile);
        assert!(c.routes.iter().any(|r| r.path == "/v1/responses"));
        assert_eq!(c.trusted_proxy.unwrap().user_header, "x-forwarded-user");
        assert_eq!(c.assertion.audience, "openclaw-gateway");
    }

    #[test]
    fn limits_are_on_by_default_and_validated_with_lines() {
        let base = "[upstream]\nurl = \"http://127.0.0.1:1\"\n";
        let c = parse(base).unwrap();
        let minute = Duration::from_secs(60);
        assert_eq!(
            c.limits.failed_auth,
            Some(RateLimit {
                count: 20,
                period: minute,
                burst: 20
            })
        );
        assert_eq!(c.limits.address_requests.map(|r| r.count), Some(1000));
        assert_eq!(c.limits.identity_requests.map(|r| r.count), Some(1000));
        assert_eq!(c.limits.unauthenticated_websockets_per_address, 16);
        assert_eq!(c.limits.table_size, 65_536);

        let off = parse(&format!("{base}[limits]\nenabled = false\n")).unwrap();
        assert_eq!(off.limits, LimitsConfig::off());
        let custom = parse(&format!(
            "{base}[limits]\nfailed_auth_per_address = \"5/h\"\nfailed_auth_burst = 3\nrequests_per_identity = \"off\"\n"
        ))
        .unwrap();
        assert_eq!(
            custom.limits.failed_auth,
            Some(RateLimit {
                count: 5,
                period: Duration::from_secs(3600),
                burst: 3
            })
        );
        assert_eq!(custom.limits.identity_requests, None);

        for (bad, line, says) in [
            ("requests_per_address = \"fast\"", 4, "invalid rate"),
            ("requests_per_address = \"0/s\"", 4, "allows nothing"),
            ("failed_auth_burst = 0", 4, "failed_auth_burst"),
            ("table_size = 10", 4, "table_size"),
            ("per_address = 1", 4, "unknown field"),
        ] {
            let e = parse(&format!("{base}[limits]\n{bad}\n")).unwrap_err();
            let p = &e.problems[0];
            assert_eq!(p.line, line, "{bad}: {e}");
            assert!(p.message.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_errors_with_line() {
        let e = parse("[upstream]\nurl = \"http://x:1\"\nbogus = 1\n").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("test.toml:3: "), "{s}");
        assert!(s.contains("bogus"), "{s}");
    }

    #[test]
    fn bad_values_point_at_their_line() {
        let e =
            parse("[upstream]\nurl = \"http://x:1\"\n[server]\nheader_read_timeout = \"soon\"\n")
                .unwrap_err();
        assert!(e.to_string().starts_with("test.toml:4: "), "{e}");
        let e = parse(
            "[upstream]\nurl = \"http://x:1\"\n[trusted_proxy]\npeers=[\"10.0.0.0/8\"]\nuser_header=\"x-u\"\n[[grants]]\nsubjects=[\"a\"]\nscopes=[\"operator.write\", \"operator.wrte\"]\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("test.toml:8: unknown scope \"operator.wrte\""),
            "{e}"
        );
    }

    #[test]
    fn trust_all_is_refused() {
        let e = parse("[upstream]\nurl = \"http://x:1\"\n[trusted_proxy]\npeers=[\"0.0.0.0/0\"]\nuser_header=\"x-u\"\n").unwrap_err();
        assert!(e.to_string().contains("trusts every address"), "{e}");
    }

    #[test]
    fn jwt_requires_issuer_audience_and_keys() {
        let e = parse("[upstream]\nurl = \"http://x:1\"\n[jwt]\nleeway = \"30s\"\n").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("issuer is required"), "{s}");
        assert!(s.contains("audience is required"), "{s}");
        assert!(s.contains("needs [[jwt.keys]]"), "{s}");
    }

    #[test]
    fn short_hmac_secrets_and_none_are_refused() {
        std::env::set_var("SG_TEST_SHORT_SECRET", "short");
        let e = parse(
            "[upstream]\nurl = \"http://x:1\"\n[jwt]\nissuer=\"i\"\naudience=\"a\"\n[[jwt.keys]]\nalgorithm=\"HS256\"\nsecret_env=\"SG_TEST_SHORT_SECRET\"\n[[jwt.keys]]\nalgorithm=\"none\"\nsecret_env=\"SG_TEST_SHORT_SECRET\"\n",
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("test.toml:8: HS256 secret is 5 bytes"), "{s}");
        assert!(
            s.contains("test.toml:10: unknown algorithm \"none\""),
            "{s}"
        );
    }

    #[test]
    fn leeway_is_bounded() {
        std::env::set_var("SG_TEST_SECRET_OK", "0123456789abcdef0123456789abcdef");
        let e = parse("[upstream]\nurl = \"http://x:1\"\n[jwt]\nissuer=\"i\"\naudience=\"a\"\nleeway=\"1h\"\n[[jwt.keys]]\nalgorithm=\"HS256\"\nsecret_env=\"SG_TEST_SECRET_OK\"\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("test.toml:6: [jwt] leeway must be at most 5m"),
            "{e}"
        );
    }

    #[test]
    fn api_token_digest_must_be_hex() {
        let e = parse("[upstream]\nurl = \"http://x:1\"\n[[api_tokens]]\nsubject=\"ci\"\nsha256=\"nothex\"\nscopes=[\"operator.read\"]\n").unwrap_err();
        assert!(
            e.to_string().contains("test.toml:5: sha256 must be 64 hex"),
            "{e}"
        );
    }

    #[test]
    fn custom_catalogue_replaces_openclaw() {
        let c = parse(
            "[upstream]\nurl = \"http://x:1\"\n[scopes]\ncatalogue=[\"admin\",\"write\",\"read\"]\n[scopes.implies]\nadmin=[\"*\"]\nwrite=[\"read\"]\n[[api_tokens]]\nsubject=\"ci\"\nsha256=\"0000000000000000000000000000000000000000000000000000000000000000\"\nscopes=[\"write\"]\n",
        )
        .unwrap();
        assert_eq!(c.scopes.catalogue, vec!["admin", "write", "read"]);
        assert_eq!(c.api_tokens[0].scopes, vec!["write"]);
    }

    #[test]
    fn default_route_forms() {
        let base = "[upstream]\nurl = \"http://x:1\"\n[[api_tokens]]\nsubject=\"ci\"\nsha256=\"0000000000000000000000000000000000000000000000000000000000000000\"\n";
        let c = parse(&format!(
            "{base}[policy]\ndefault_route = {{ require = [\"operator.admin\"] }}\n"
        ))
        .unwrap();
        assert_eq!(
            c.default_route,
            DefaultRoute::Require(vec!["operator.admin".into()])
        );
        let e = parse(&format!("{base}[policy]\ndefault_route = \"allow\"\n")).unwrap_err();
        assert!(e.to_string().contains("default_route must be"), "{e}");
    }
}
