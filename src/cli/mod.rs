//! The command line (product §3): the clap definitions, the dispatch to one module per command, and
//! the logging set-up the long-running commands share.

mod check;
mod demo;
mod explain;
mod keygen;
mod openclaw_config;
mod run;
mod token;
mod verify_assertion;

use crate::log_scope::WithRequestId;
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, LogFormat};

#[derive(Parser, Debug)]
#[command(
    name = "scopegate",
    version,
    about = "An identity-aware reverse proxy that gives operators exactly the scopes their credential grants — and says why."
)]
pub struct Cli {
    /// Log format: human text on a terminal and JSON otherwise (auto), or force one.
    #[arg(long, global = true, value_enum)]
    pub(crate) log_format: Option<LogFormatArg>,
    /// Log filter, e.g. `info`, `debug`, `scopegate=debug,hyper=warn` (default: the config's, or info).
    #[arg(long, global = true)]
    pub(crate) log_level: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LogFormatArg {
    Auto,
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
pub(crate) struct ConfigArg {
    /// Config file (default: $SCOPEGATE_CONFIG, then ./scopegate.toml).
    #[arg(long, short)]
    pub(crate) config: Option<PathBuf>,
}

impl ConfigArg {
    pub(crate) fn path(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(Config::default_path)
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum KeyAlg {
    EdDsa,
    Es256,
}

#[derive(Args, Debug)]
pub(crate) struct ExplainArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArg,
    #[arg(long, default_value = "GET")]
    pub(crate) method: String,
    #[arg(long)]
    pub(crate) path: String,
    /// A bearer JWT.
    #[arg(long, conflicts_with_all = ["api_token", "tailscale_user", "proxy_user"])]
    pub(crate) token: Option<String>,
    /// An opaque API token.
    #[arg(long, conflicts_with_all = ["tailscale_user", "proxy_user"])]
    pub(crate) api_token: Option<String>,
    /// A Tailscale login, as `tailscale serve` would send it.
    #[arg(long, conflicts_with = "proxy_user")]
    pub(crate) tailscale_user: Option<String>,
    /// A user, as the trusted proxy would send it.
    #[arg(long)]
    pub(crate) proxy_user: Option<String>,
    /// A signed-in browser's session cookie value (opened with the config's [oidc] cookie keys).
    #[arg(long, conflicts_with_all = ["token", "api_token", "tailscale_user", "proxy_user"])]
    pub(crate) session: Option<String>,
    /// Groups for --proxy-user.
    #[arg(long, value_delimiter = ',')]
    pub(crate) groups: Vec<String>,
    /// The peer address the request comes from (default: a trusted peer for the chosen source).
    #[arg(long)]
    pub(crate) peer: Option<IpAddr>,
    /// Treat the request as a WebSocket upgrade.
    #[arg(long)]
    pub(crate) websocket: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Args, Debug)]
pub(crate) struct TokenArgs {
    /// Signing key: PKCS#8 PEM for EdDSA/ES*, PEM for RS*/PS*.
    #[arg(long, conflicts_with = "secret_env")]
    pub(crate) key: Option<PathBuf>,
    /// HMAC secret in this environment variable (HS*).
    #[arg(long)]
    pub(crate) secret_env: Option<String>,
    #[arg(long, default_value = "EdDSA")]
    pub(crate) alg: String,
    #[arg(long)]
    pub(crate) issuer: String,
    #[arg(long)]
    pub(crate) audience: String,
    #[arg(long)]
    pub(crate) sub: String,
    /// Scopes (repeat, or space/comma separated).
    #[arg(long = "scope", value_delimiter = ',')]
    pub(crate) scopes: Vec<String>,
    #[arg(long = "group", value_delimiter = ',')]
    pub(crate) groups: Vec<String>,
    #[arg(long, default_value = "1h")]
    pub(crate) ttl: String,
    #[arg(long)]
    pub(crate) kid: Option<String>,
}

#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// The JWKS: an http(s) URL (e.g. http://scopegate/.well-known/scopegate/jwks.json) or a file.
    #[arg(long)]
    pub(crate) jwks: Option<String>,
    /// For HS256 assertions: the shared secret in this environment variable.
    #[arg(long)]
    pub(crate) hmac_secret_env: Option<String>,
    #[arg(long)]
    pub(crate) audience: Option<String>,
    #[arg(long, default_value = "scopegate")]
    pub(crate) issuer: String,
    /// Require the assertion to be bound to this method.
    #[arg(long)]
    pub(crate) method: Option<String>,
    /// Require the assertion to be bound to this path.
    #[arg(long)]
    pub(crate) path: Option<String>,
    /// The header value.
    pub(crate) value: String,
}

/// Runs the parsed command; its result is the process's exit code.
pub fn main(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::Run(c) => run::run(&cli, &c.path()),
        Command::Demo { listen } => demo::demo(&cli, *listen),
        Command::Check(c) => check::check(&c.path()),
        Command::Explain(a) => explain::explain(a),
        Command::Keygen { out, algorithm } => keygen::keygen(out.as_deref(), *algorithm),
        Command::Token(a) => token::token(a),
        Command::VerifyAssertion(a) => verify_assertion::verify(a),
        Command::OpenclawConfig(c) => openclaw_config::openclaw_config(&c.path()),
    }
}

/// Loads the config, or prints why not (`file:line: message`) and gives exit code 1.
fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(1)
    })
}

/// The single-threaded runtime a command's own I/O (signals, JWKS, HTTP) runs on.
fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

// ---- logging -----------------------------------------------------------------------------------------

/// What keeps the logs flowing until the process ends: dropping it writes the buffered audit lines,
/// then whatever the log thread still holds.
pub(crate) struct LogGuard {
    // Field order is drop order: the audit lines first, then the other log lines.
    _audit: Option<crate::audit::AuditGuard>,
    _appender: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// The JSON log subscriber: one object per line, fields flattened, and inside a request its
/// `request_id` first (`log_scope`). The audit writer, `src/audit.rs`, prints its lines in exactly
/// this shape.
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
        .event_format(WithRequestId::json(
            tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false),
        ))
        .finish()
}

/// Sets up logging once. Text on a terminal, JSON otherwise, unless told. With JSON logs, audit lines
/// bypass the formatter: they are rendered into per-thread buffers and written in blocks to the same
/// stderr (`src/audit/writer.rs`).
pub(crate) fn init_logging(format: LogFormat, level: &str) -> LogGuard {
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
            .event_format(WithRequestId::text(
                tracing_subscriber::fmt::format().with_target(true),
            ))
            .try_init()
            .is_ok();
        LogGuard {
            _audit: None,
            _appender: installed.then_some(guard),
        }
    }
}

/// `--log-format`, else the config's `[log] format`, else auto.
fn log_format(cli: &Cli, cfg: Option<&Config>) -> LogFormat {
    match cli.log_format {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        Some(LogFormatArg::Auto) => LogFormat::Auto,
        None => cfg.map(|c| c.log.format).unwrap_or(LogFormat::Auto),
    }
}
