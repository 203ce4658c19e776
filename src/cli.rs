//! The command line (product §3): `run`, `demo`, `check`, `explain`, `keygen`, `token`,
//! `verify-assertion`, `openclaw-config`.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::Value;

use crate::config::{AssertionAlgorithm, Config, JwtAlgorithm, LogFormat};
use crate::identity::{Peer, RequestFacts};
use crate::runtime::Snapshot;

#[derive(Parser, Debug)]
#[command(
    name = "scopegate",
    version,
    about = "An identity-aware reverse proxy that gives operators exactly the scopes their credential grants — and says why."
)]
pub struct Cli {
    /// Log format: human text on a terminal and JSON otherwise (auto), or force one.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Log filter, e.g. `info`, `debug`, `scopegate=debug,hyper=warn` (default: the config's, or info).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormatArg {
    Auto,
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the sidecar.
    Run(ConfigArg),
    /// Start a gateway look-alike with scopegate in front and print what to paste. Needs nothing else.
    Demo {
        /// scopegate's listen address (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// Validate the config and print the effective policy. Exit 1 with `file:line: message` on error.
    Check(ConfigArg),
    /// Run the exact decision offline for one request and print identity, scopes and reasons.
    /// Exit 0 when allowed, 1 when denied.
    Explain(ExplainArgs),
    /// Write a new Ed25519 (or P-256) signing key for the assertion, as PKCS#8 PEM.
    Keygen {
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "ed-dsa")]
        algorithm: KeyAlg,
    },
    /// Mint a JWT with a local key, for testing.
    Token(TokenArgs),
    /// Verify an assertion header value and print its claims.
    VerifyAssertion(VerifyArgs),
    /// Print the OpenClaw `gateway` block that makes the gateway trust this scopegate.
    OpenclawConfig(ConfigArg),
}

#[derive(Args, Debug)]
pub struct ConfigArg {
    /// Config file (default: $SCOPEGATE_CONFIG, then ./scopegate.toml).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    fn path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(Config::default_path)
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KeyAlg {
    EdDsa,
    Es256,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub config: ConfigArg,
    #[arg(long, default_value = "GET")]
    pub method: String,
    #[arg(long)]
    pub path: String,
    /// A bearer JWT.
    #[arg(long, conflicts_with_all = ["api_token", "tailscale_user", "proxy_user"])]
    pub token: Option<String>,
    /// An opaque API token.
    #[arg(long, conflicts_with_all = ["tailscale_user", "proxy_user"])]
    pub api_token: Option<String>,
    /// A Tailscale login, as `tailscale serve` would send it.
    #[arg(long, conflicts_with = "proxy_user")]
    pub tailscale_user: Option<String>,
    /// A user, as the trusted proxy would send it.
    #[arg(long)]
    pub proxy_user: Option<String>,
    /// Groups for --proxy-user.
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// The peer address the request comes from (default: a trusted peer for the chosen source).
    #[arg(long)]
    pub peer: Option<IpAddr>,
    /// Treat the request as a WebSocket upgrade.
    #[arg(long)]
    pub websocket: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Signing key: PKCS#8 PEM for EdDSA/ES*, PEM for RS*/PS*.
    #[arg(long, conflicts_with = "secret_env")]
    pub key: Option<PathBuf>,
    /// HMAC secret in this environment variable (HS*).
    #[arg(long)]
    pub secret_env: Option<String>,
    #[arg(long, default_value = "EdDSA")]
    pub alg: String,
    #[arg(long)]
    pub issuer: String,
    #[arg(long)]
    pub audience: String,
    #[arg(long)]
    pub sub: String,
    /// Scopes (repeat, or space/comma separated).
    #[arg(long = "scope", value_delimiter = ',')]
    pub scopes: Vec<String>,
    #[arg(long = "group", value_delimiter = ',')]
    pub groups: Vec<String>,
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    #[arg(long)]
    pub kid: Option<String>,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The JWKS: an http(s) URL (e.g. http://scopegate/.well-known/scopegate/jwks.json) or a file.
    #[arg(long)]
    pub jwks: Option<String>,
    /// For HS256 assertions: the shared secret in this environment variable.
    #[arg(long)]
    pub hmac_secret_env: Option<String>,
    #[arg(long)]
    pub audience: Option<String>,
    #[arg(long, default_value = "scopegate")]
    pub issuer: String,
    /// Require the assertion to be bound to this method.
    #[arg(long)]
    pub method: Option<String>,
    /// Require the assertion to be bound to this path.
    #[arg(long)]
    pub path: Option<String>,
    /// The header value.
    pub value: String,
}

/// What keeps the logs flowing until the process ends: dropping it writes the buffered audit lines,
/// then whatever the log thread still holds.
pub struct LogGuard {
    // Field order is drop order: the audit lines first, then the other log lines.
    _audit: Option<crate::audit::AuditGuard>,
    _appender: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// The JSON log subscriber: one object per line, fields flattened, no span (the audit writer,
/// `src/audit.rs`, prints its lines in exactly this shape).
pub(crate) fn json_subscriber<W>(
    filter: tracing_subscriber::EnvFilter,
    writer: W,
) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .finish()
}

/// Sets up logging once. Text on a terminal, JSON otherwise, unless told. With JSON logs, audit lines
/// bypass the formatter: they are rendered into per-thread buffers and written in blocks to the same
/// stderr (`src/audit/writer.rs`).
pub fn init_logging(format: LogFormat, level: &str) -> LogGuard {
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    // Writes go through a background thread so a slow terminal or pipe never stalls a request.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(8 * 1024)
        .finish(std::io::stderr());
    if json {
        if json_subscriber(filter, writer).try_init().is_err() {
            return LogGuard {
                _audit: None,
                _appender: None,
            };
        }
        LogGuard {
            _audit: crate::audit::install(Box::new(std::io::stderr())),
            _appender: Some(guard),
        }
    } else {
        let installed = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(writer)
            .with_target(true)
            .try_init()
            .is_ok();
        LogGuard {
            _audit: None,
            _appender: installed.then_some(guard),
        }
    }
}

fn log_format(cli: &Cli, cfg: Option<&Config>) -> LogFormat {
    match cli.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        Some(LogFormatArg::Auto) => LogFormat::Auto,
        None => cfg.map(|c| c.log.format).unwrap_or(LogFormat::Auto),
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(1)
    })
}

pub fn main(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::Run(c) => run(&cli, &c.path()),
        Command::Demo { listen } => demo(&cli, *listen),
        Command::Check(c) => check(&c.path()),
        Command::Explain(a) => explain(a),
        Command::Keygen { out, algorithm } => keygen(out.as_deref(), *algorithm),
        Command::Token(a) => token(a),
        Command::VerifyAssertion(a) => verify(a),
        Command::OpenclawConfig(c) => openclaw_config(&c.path()),
    }
}

fn run(cli: &Cli, path: &Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let level = cli
        .log_level
        .clone()
        .unwrap_or_else(|| cfg.log.level.clone());
    let _guard = init_logging(log_format(cli, Some(&cfg)), &level);
    let handle = match crate::server::start(cfg) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("scopegate: {e}");
            return ExitCode::from(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("scopegate: {e}");
            return ExitCode::from(1);
        }
    };
    let shutdown = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            return "signal setup failed";
        };
        loop {
            tokio::select! {
                _ = term.recv() => return "SIGTERM",
                _ = int.recv() => return "SIGINT",
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading configuration");
                    let _ = handle.reload().await;
                }
            }
        }
    });
    tracing::info!(signal = shutdown, "shutting down");
    handle.shutdown_and_wait();
    ExitCode::SUCCESS
}

fn demo(cli: &Cli, listen: SocketAddr) -> ExitCode {
    let level = cli
        .log_level
        .clone()
        .unwrap_or_else(|| "warn,scopegate::audit=info".into());
    let _guard = init_logging(log_format(cli, None), &level);
    let demo = match crate::demo::start(listen) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("scopegate demo: {e}");
            return ExitCode::from(1);
        }
    };
    println!("{}", demo.instructions());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return ExitCode::from(1),
    };
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    });
    demo.stop();
    ExitCode::SUCCESS
}

fn check(path: &Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let snap = match Snapshot::build(cfg, 1, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(1);
        }
    };
    print!("{}", policy_table(&snap));
    println!("\n{}: OK", path.display());
    ExitCode::SUCCESS
}

/// `[limits]` as `check` shows it: each bucket's rate and burst, or "off".
fn limits_table(l: &crate::config::LimitsConfig) -> String {
    let rate = |r: Option<crate::config::RateLimit>| match r {
        None => "off".to_string(),
        Some(r) => format!(
            "{}/{} (bursts of {})",
            r.count,
            humantime::format_duration(r.period),
            r.burst
        ),
    };
    let cap = |n: usize| {
        if n == 0 {
            "no cap".to_string()
        } else {
            n.to_string()
        }
    };
    format!(
        "  requests per address         {}\n  requests per identity        {}\n  failed authentications       {} per address; then 429 before any signature check\n  unauthenticated WebSockets   {} per address, {} in all\n  table size                   {} entries per limit (fixed)",
        rate(l.address_requests),
        rate(l.identity_requests),
        rate(l.failed_auth),
        cap(l.unauthenticated_websockets_per_address),
        cap(l.unauthenticated_websockets_total),
        l.table_size
    )
}

/// The effective policy as text: sources, routes, grants and the scope closure.
pub fn policy_table(snap: &Snapshot) -> String {
    use std::fmt::Write;
    let cfg = &snap.config;
    let cat = &snap.policy.catalogue;
    let mut out = String::new();
    let _ = writeln!(out, "listen     {}", cfg.server.listen);
    let _ = writeln!(
        out,
        "upstream   {} (profile {})",
        cfg.upstream.url,
        cfg.upstream.profile.name()
    );
    let _ = writeln!(
        out,
        "assertion  {} {} kid={} aud={}{}",
        cfg.assertion.header,
        snap.assertion.algorithm().name(),
        snap.assertion.kid(),
        snap.assertion.audience(),
        if snap.assertion.is_ephemeral() {
            " (ephemeral key: set [assertion] key_file)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "\nidentity sources");
    if let Some(j) = &cfg.jwt {
        let _ = writeln!(
            out,
            "  jwt             issuer={} audience={} keys={} jwks={} leeway={}s",
            j.issuer,
            j.audience.join(","),
            j.keys
                .iter()
                .map(|k| format!(
                    "{}{}",
                    k.algorithm,
                    k.kid
                        .as_deref()
                        .map(|x| format!("({x})"))
                        .unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(","),
            j.jwks_url.as_deref().unwrap_or("-"),
            j.leeway.as_secs()
        );
    }
    if !cfg.api_tokens.is_empty() {
        for t in &cfg.api_tokens {
            let _ = writeln!(
                out,
                "  api_token       {} → {}",
                t.subject,
                t.scopes.join(" ")
            );
        }
    }
    if let Some(t) = &cfg.tailscale {
        let _ = writeln!(
            out,
            "  tailscale       peers={} whois={} capability={}",
            t.trusted_peers
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
            t.whois_socket
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".into()),
            t.app_capability.as_deref().unwrap_or("-")
        );
    }
    if let Some(t) = &cfg.trusted_proxy {
        let _ = writeln!(
            out,
            "  trusted_proxy   peers={} user={} groups={}",
            t.peers
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(","),
            t.user_header,
            t.groups_header.as_ref().map(|h| h.as_str()).unwrap_or("-")
        );
    }
    let _ = writeln!(
        out,
        "\nlimits (per client address after trusted hops; per instance)"
    );
    let _ = writeln!(out, "{}", limits_table(&cfg.limits));
    let _ = writeln!(
        out,
        "\nroutes (first match wins{})",
        if cfg.routes_from_profile {
            "; the openclaw profile's default table"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "  {:<4} {:<44} requires", "#", "route");
    for (i, r) in snap.policy.routes.routes.iter().enumerate() {
        let req = match r.access {
            crate::policy::Access::Public => "public".to_string(),
            crate::policy::Access::Deny => "deny".to_string(),
            crate::policy::Access::Require(s) if s.is_empty() => {
                "any authenticated identity".to_string()
            }
            crate::policy::Access::Require(s) => cat.join(s, " + "),
        };
        let _ = writeln!(out, "  {:<4} {:<44} {}", i + 1, r.label, req);
    }
    let default = match snap.policy.routes.default {
        crate::policy::Access::Require(s) => format!("requires {}", cat.join(s, " + ")),
        _ => "deny".to_string(),
    };
    let _ = writeln!(out, "  {:<4} {:<44} {}", "-", "anything else", default);
    if !snap.policy.grants.is_empty() {
        let _ = writeln!(out, "\ngrants");
        for (i, g) in snap.policy.grants.iter().enumerate() {
            let who: Vec<String> = g
                .subjects
                .iter()
                .map(|s| format!("subject {s}"))
                .chain(g.groups.iter().map(|s| format!("group {s}")))
                .collect();
            let _ = writeln!(
                out,
                "  #{:<3} {:<40} → {}",
                i + 1,
                who.join(", "),
                cat.join(g.scopes, " ")
            );
        }
    }
    let _ = writeln!(out, "\nscope closure (holding the scope satisfies)");
    for id in 0..cat.len() {
        let _ = writeln!(
            out,
            "  {:<26} {}",
            cat.name(id),
            cat.join(cat.closure_of(id), " ")
        );
    }
    if let Some(oc) = &snap.openclaw {
        let _ = writeln!(
            out,
            "\nopenclaw   user header {}; gateway identities: {}; loopback clients appear as {}",
            oc.user_header,
            oc.gateway_identities().join(", "),
            oc.local_client_ip
        );
    }
    out
}

fn explain(a: &ExplainArgs) -> ExitCode {
    let cfg = match load(&a.config.path()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let snap = match Snapshot::build(cfg, 1, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let method = match Method::from_bytes(a.method.to_ascii_uppercase().as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            eprintln!("invalid method {:?}", a.method);
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return ExitCode::from(2),
    };
    let result = rt.block_on(async {
        if let Some(jwks) = snap.jwks() {
            let _ = jwks.fetch().await;
        }
        let (headers, peer) = explain_request(&snap, a);
        let forwarded = crate::identity::forwarded::resolve(
            &headers,
            peer.ip(),
            snap.trusts_forwarding(peer),
            &snap.forwarding_peers,
        )?;
        let facts = RequestFacts {
            peer,
            headers: &headers,
            client_ip: forwarded.client_ip,
        };
        let identified = snap.sources.identify(&snap.policy, &facts).await?;
        crate::server::explain::explain_value(
            &snap,
            &identified,
            forwarded.client_ip,
            Some((&method, &a.path, a.websocket)),
        )
    });
    let value = match result {
        Ok(v) => v,
        Err(refusal) => {
            // Identification itself failed: the same refusal the live proxy would send.
            let v = refusal.body_json("explain");
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                println!(
                    "decision   DENY ({} {})",
                    refusal.status().as_u16(),
                    refusal.kind.type_name()
                );
                println!("message    {}", refusal.message);
                for r in &refusal.reasons {
                    println!("  - [{}] {}", r.code, r.message);
                }
            }
            return ExitCode::from(1);
        }
    };
    let allowed = value
        .pointer("/decision/allowed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print_explanation(&value);
    }
    if allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Builds the request headers `explain` feeds into the live identification code.
fn explain_request(snap: &Snapshot, a: &ExplainArgs) -> (HeaderMap, Peer) {
    let mut h = HeaderMap::new();
    let mut peer = Peer::Tcp(IpAddr::from([198, 51, 100, 10]));
    let first_trusted = |peers: &[crate::config::PeerMatch]| -> Peer {
        match peers.first() {
            Some(crate::config::PeerMatch::Net(n)) => Peer::Tcp(n.network()),
            Some(crate::config::PeerMatch::Unix) => Peer::Unix,
            None => Peer::Tcp(IpAddr::from([198, 51, 100, 10])),
        }
    };
    let set = |h: &mut HeaderMap, name: &str, value: &str| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.append(n, v);
        }
    };
    if let Some(t) = a.token.as_ref().or(a.api_token.as_ref()) {
        set(&mut h, "authorization", &format!("Bearer {t}"));
    }
    if let Some(login) = &a.tailscale_user {
        if let Some(ts) = &snap.config.tailscale {
            peer = first_trusted(&ts.trusted_peers);
        }
        set(&mut h, "tailscale-user-login", login);
        set(&mut h, "x-forwarded-for", "100.64.0.1");
    }
    if let Some(user) = &a.proxy_user {
        if let Some(tp) = &snap.config.trusted_proxy {
            peer = first_trusted(&tp.peers);
            set(&mut h, tp.user_header.as_str(), user);
            if let Some(g) = &tp.groups_header {
                if !a.groups.is_empty() {
                    set(&mut h, g.as_str(), &a.groups.join(","));
                }
            }
        }
    }
    if let Some(p) = a.peer {
        peer = Peer::Tcp(p);
    }
    (h, peer)
}

fn print_explanation(v: &Value) {
    let list = |v: &Value| -> String {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "(none)".into())
    };
    let d = &v["decision"];
    let allowed = d["allowed"].as_bool().unwrap_or(false);
    if v["authenticated"].as_bool().unwrap_or(false) {
        println!(
            "identity   {} via {}",
            v["subject"].as_str().unwrap_or("?"),
            v["method"].as_str().unwrap_or("?")
        );
        if let Some(g) = v["groups"].as_array().filter(|g| !g.is_empty()) {
            println!(
                "groups     {}",
                g.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        if let Some(u) = v["gateway_user"].as_str() {
            println!("gateway    user {u}");
        }
    } else {
        println!("identity   none");
    }
    println!(
        "request    {} {}",
        d["method"].as_str().unwrap_or(""),
        d["path"].as_str().unwrap_or("")
    );
    println!("route      {}", d["route"].as_str().unwrap_or(""));
    println!("required   {}", list(&d["required"]));
    println!("granted    {}", list(&v["granted"]));
    println!("effective  {}", list(&d["effective"]));
    if allowed {
        println!("decision   ALLOW");
    } else {
        println!(
            "decision   DENY ({}): {}",
            d["status"].as_u64().unwrap_or(403),
            d["message"].as_str().unwrap_or("")
        );
    }
    println!("reasons");
    if let (Some(msgs), Some(codes)) = (d["reasons"].as_array(), d["reason_codes"].as_array()) {
        for (m, c) in msgs.iter().zip(codes) {
            println!(
                "  - [{}] {}",
                c.as_str().unwrap_or(""),
                m.as_str().unwrap_or("")
            );
        }
    }
}

fn keygen(out: Option<&Path>, alg: KeyAlg) -> ExitCode {
    let a = match alg {
        KeyAlg::EdDsa => AssertionAlgorithm::EdDSA,
        KeyAlg::Es256 => AssertionAlgorithm::ES256,
    };
    let der = match crate::assertion::generate_pkcs8(a) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let pem = crate::assertion::pem_encode("PRIVATE KEY", &der);
    match out {
        Some(path) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .and_then(|mut f| f.write_all(pem.as_bytes()));
            if let Err(e) = written {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::from(1);
            }
            let cfg = crate::config::AssertionConfig {
                header: HeaderName::from_static("x-scopegate-assertion"),
                algorithm: a,
                key: Some(
                    crate::values::AssertionKey::from_material(a, &der).expect("a key keygen made"),
                ),
                next_key: None,
                kid: None,
                issuer: "scopegate".into(),
                audience: "-".into(),
                ttl: Duration::from_secs(60),
                reuse: Duration::ZERO,
            };
            let kid = crate::assertion::AssertionSigner::new(&cfg)
                .map(|s| s.kid().to_string())
                .unwrap_or_default();
            eprintln!(
                "wrote {} ({} PKCS#8, mode 0600, kid {kid})\nuse it with:\n  [assertion]\n  algorithm = \"{}\"\n  key_file = \"{}\"",
                path.display(),
                a.name(),
                a.name(),
                path.display()
            );
        }
        None => print!("{pem}"),
    }
    ExitCode::SUCCESS
}

fn token(a: &TokenArgs) -> ExitCode {
    let Some(alg) = JwtAlgorithm::from_name(&a.alg) else {
        eprintln!("unknown algorithm {:?}", a.alg);
        return ExitCode::from(2);
    };
    let material = match (&a.key, &a.secret_env) {
        (Some(p), _) => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())),
        (None, Some(var)) => std::env::var(var)
            .map(String::into_bytes)
            .map_err(|_| format!("{var} is not set")),
        (None, None) => Err("give --key FILE or --secret-env VAR".into()),
    };
    let ttl = match humantime::parse_duration(&a.ttl) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("invalid --ttl: {e}");
            return ExitCode::from(2);
        }
    };
    let scopes: Vec<String> = a
        .scopes
        .iter()
        .flat_map(|s| s.split_whitespace().map(str::to_string))
        .collect();
    let result = material
        .and_then(|m| crate::tokens::encoding_key(alg, &m))
        .and_then(|key| {
            crate::tokens::mint(
                alg,
                &key,
                &crate::tokens::TokenSpec {
                    issuer: a.issuer.clone(),
                    audience: a.audience.clone(),
                    subject: a.sub.clone(),
                    scopes,
                    groups: a.groups.clone(),
                    ttl,
                    kid: a.kid.clone(),
                    extra: Default::default(),
                },
            )
        });
    match result {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn verify(a: &VerifyArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return ExitCode::from(2),
    };
    let jwks: Value = match &a.jwks {
        None => serde_json::json!({"keys": []}),
        Some(src) if src.starts_with("http://") || src.starts_with("https://") => {
            match rt.block_on(crate::util::http_get(src, Duration::from_secs(10), 1 << 20)) {
                Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
                Err(e) => {
                    eprintln!("cannot fetch {src}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        Some(file) => match std::fs::read(file) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => {
                eprintln!("cannot read {file}: {e}");
                return ExitCode::from(1);
            }
        },
    };
    let secret = a
        .hmac_secret_env
        .as_ref()
        .and_then(|v| std::env::var(v).ok());
    let opts = crate::assertion::VerifyOptions {
        audience: a.audience.as_deref(),
        issuer: Some(&a.issuer),
        method: a.method.as_deref(),
        path: a.path.as_deref(),
        hmac_secret: secret.as_deref().map(str::as_bytes),
        now: None,
        leeway: 5,
    };
    match crate::assertion::verify_assertion(a.value.trim(), &jwks, &opts) {
        Ok(claims) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&claims).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("invalid assertion: {e}");
            ExitCode::from(1)
        }
    }
}

fn openclaw_config(path: &Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cfg.upstream.profile != crate::config::Profile::OpenClaw {
        eprintln!("{}: [upstream] profile is not \"openclaw\"", path.display());
        return ExitCode::from(1);
    }
    let block = crate::upstream::openclaw::gateway_config_block(&cfg, None);
    println!(
        "// The OpenClaw gateway settings that make it trust scopegate (merge into openclaw.json).\n// The gateway must not also have a shared token: trusted-proxy and a token cannot be combined.\n{}",
        serde_json::to_string_pretty(&block).unwrap_or_default()
    );
    ExitCode::SUCCESS
}
