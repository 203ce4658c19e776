//! Turns [`raw::RawConfig`] into [`Config`]: defaults, cross-field rules, key material, and every problem
//! reported as `file:line: message` (all of them, not just the first).
//!
//! One file per config section; this one holds the [`Checker`] that collects problems, [`parse`], and
//! [`build`], which validates the sections in a fixed order (the order problems are reported in).
//! Values that other layers use — route patterns, keys — are parsed here into the `values` floor's
//! types and stored parsed.

mod assertion;
mod grants;
mod identity_sources;
mod jwt;
mod limits;
mod log;
mod oidc;
mod openclaw;
mod routes;
mod scopes;
mod server;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

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
    let scopes = scopes::scopes_config(ck, raw.scopes);
    let known = scopes::KnownScopes::new(&scopes);

    let server = server::server_config(ck, raw.server);
    let upstream = server::upstream_config(ck, raw.upstream);
    let profile = upstream
        .as_ref()
        .map(|u| u.profile)
        .unwrap_or(Profile::Generic);

    let jwt = raw.jwt.and_then(|j| jwt::jwt_config(ck, j));
    let api_tokens = identity_sources::api_tokens(ck, raw.api_tokens, &known);
    let tailscale = identity_sources::tailscale_config(ck, raw.tailscale);
    let trusted_proxy = identity_sources::trusted_proxy_config(ck, raw.trusted_proxy);
    let grants = grants::grants(ck, raw.grants, &known);

    let (routes, routes_from_profile) = routes::routes(
        ck,
        raw.routes,
        raw.policy.include_profile_routes.unwrap_or(false),
        profile,
        &known,
    );
    let default_route = routes::default_route(ck, raw.policy.default_route, &known);

    let openclaw = openclaw::openclaw_config(ck, raw.openclaw);
    let assertion = assertion::assertion_config(ck, raw.assertion, profile, upstream.as_ref());
    if let Some(a) = &assertion {
        own_upstream_fields_are_distinct(ck, &a.header, profile, &openclaw.user_header);
    }
    let log = log::log_config(ck, raw.log);
    let limits = limits::limits_config(ck, raw.limits);
    let oidc = raw.oidc.and_then(|o| oidc::oidc_config(ck, o));

    if jwt.is_none()
        && oidc.is_none()
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
        oidc,
        scopes,
        log,
        limits,
    })
}

/// scopegate sets each of its own upstream fields once (`upstream::injected` writes them as they are,
/// without a lookup): the two whose names are configurable may take neither a fixed one's nor each
/// other's.
fn own_upstream_fields_are_distinct(
    ck: &mut Checker,
    assertion: &http::HeaderName,
    profile: Profile,
    user_header: &http::HeaderName,
) {
    use crate::header_names::*;
    let fixed = [
        http::header::HOST,
        X_FORWARDED_FOR,
        X_FORWARDED_PROTO,
        X_FORWARDED_HOST,
        X_REQUEST_ID,
        X_OPENCLAW_SCOPES,
    ];
    let mut named = vec![("[assertion] header", assertion)];
    if profile == Profile::OpenClaw {
        named.push(("[openclaw] user_header", user_header));
    }
    for (what, name) in &named {
        if fixed.contains(name) {
            ck.err_nowhere(format!(
                "{what} {:?} is a header scopegate sets itself; choose another name",
                name.as_str()
            ));
        }
    }
    if profile == Profile::OpenClaw && assertion == user_header {
        ck.err_nowhere(format!(
            "[assertion] header and [openclaw] user_header are both {:?}; they must differ",
            assertion.as_str()
        ));
    }
}

/// `Config::parse` of a file named `test.toml`, for the sections' tests.
#[cfg(test)]
fn parse_test_toml(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Some(Path::new("test.toml")))
}

#[cfg(test)]
mod tests {
    use super::parse_test_toml as parse;

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
    fn configurable_upstream_fields_cannot_take_scopegates_own_names() {
        let base = "[upstream]\nurl = \"http://x:1\"\nprofile = \"openclaw\"\n";
        for (extra, says) in [
            (
                "[openclaw]\nuser_header = \"X-OpenClaw-Scopes\"\n",
                "[openclaw] user_header \"x-openclaw-scopes\" is a header scopegate sets itself",
            ),
            (
                "[assertion]\nheader = \"host\"\n",
                "[assertion] header \"host\" is a header scopegate sets itself",
            ),
            (
                "[assertion]\nheader = \"x-forwarded-user\"\n",
                "are both \"x-forwarded-user\"",
            ),
        ] {
            let e = parse(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(e.contains(says), "{extra}: {e}");
        }
        // The generic profile sets no user header, so the assertion may use that name there.
        let generic =
            "[upstream]\nurl = \"http://x:1\"\n[assertion]\nheader = \"x-forwarded-user\"\n";
        if let Err(e) = parse(generic) {
            assert!(!e.to_string().contains("must differ"), "{e}");
        }
    }
}
