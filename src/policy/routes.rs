//! Route policy: which scopes a method and path require, matched on exactly the path that is forwarded.
//!
//! scopegate never rewrites a path. It refuses (400) any path an upstream could read two ways — the
//! differential behind Envoy's `//admin`/`%2F` CVEs, Pomerium's and oauth2-proxy's — and matches the
//! remaining raw path against patterns. So the path that was authorised is, byte for byte, the path
//! the upstream receives. The query string is never part of a match.

use http::Method;

use crate::config::{DefaultRoute, RouteAccess, RouteConfig};
use crate::policy::scopes::{Catalogue, ScopeSet};

/// Why a path was refused before any route was consulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRejection {
    NotOriginForm,
    EmptySegment,
    DotSegment,
    Semicolon,
    Backslash,
    EncodedSeparator,
    EncodedDot,
    EncodedUnreserved,
    EncodedPercent,
    EncodedControl,
    BadPercentEncoding,
    InvalidUtf8,
    RawNonAscii,
    ControlByte,
}

impl PathRejection {
    pub fn code(self) -> &'static str {
        match self {
            PathRejection::NotOriginForm => "path_not_origin_form",
            PathRejection::EmptySegment => "path_empty_segment",
            PathRejection::DotSegment => "path_dot_segment",
            PathRejection::Semicolon => "path_semicolon",
            PathRejection::Backslash => "path_backslash",
            PathRejection::EncodedSeparator => "path_encoded_separator",
            PathRejection::EncodedDot => "path_encoded_dot",
            PathRejection::EncodedUnreserved => "path_encoded_unreserved",
            PathRejection::EncodedPercent => "path_encoded_percent",
            PathRejection::EncodedControl => "path_encoded_control",
            PathRejection::BadPercentEncoding => "path_bad_percent_encoding",
            PathRejection::InvalidUtf8 => "path_invalid_utf8",
            PathRejection::RawNonAscii => "path_raw_non_ascii",
            PathRejection::ControlByte => "path_control_byte",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            PathRejection::NotOriginForm => "the request target must be an absolute path",
            PathRejection::EmptySegment => {
                "the path contains an empty segment (`//`), which upstreams may merge"
            }
            PathRejection::DotSegment => "the path contains a `.` or `..` segment",
            PathRejection::Semicolon => {
                "the path contains `;` (matrix parameters are read differently by upstreams)"
            }
            PathRejection::Backslash => "the path contains a backslash",
            PathRejection::EncodedSeparator => {
                "the path contains an encoded `/` or `\\` (%2F, %5C)"
            }
            PathRejection::EncodedDot => "the path contains an encoded `.` (%2E)",
            PathRejection::EncodedUnreserved => {
                "the path percent-encodes a character that needs no encoding"
            }
            PathRejection::EncodedPercent => {
                "the path contains an encoded `%` (%25), a double-encoding"
            }
            PathRejection::EncodedControl => "the path encodes a control character or `;`",
            PathRejection::BadPercentEncoding => "the path has a malformed percent-escape",
            PathRejection::InvalidUtf8 => {
                "the decoded path is not valid UTF-8 (e.g. an overlong sequence)"
            }
            PathRejection::RawNonAscii => "the path contains raw non-ASCII bytes",
            PathRejection::ControlByte => "the path contains a control byte",
        }
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks that `path` (without query) has exactly one reading. Returns it unchanged when it does.
pub fn canonical_path(path: &str) -> Result<&str, PathRejection> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathRejection::NotOriginForm);
    }
    // Decoded bytes for the UTF-8 check; most paths have no escapes, so this stays empty.
    let mut decoded: Vec<u8> = Vec::new();
    let mut has_escape = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex_val),
                    bytes.get(i + 2).copied().and_then(hex_val),
                ) else {
                    return Err(PathRejection::BadPercentEncoding);
                };
                let v = h * 16 + l;
                match v {
                    b'/' | b'\\' => return Err(PathRejection::EncodedSeparator),
                    b'.' => return Err(PathRejection::EncodedDot),
                    b'%' => return Err(PathRejection::EncodedPercent),
                    b';' | 0..=0x1f | 0x7f => return Err(PathRejection::EncodedControl),
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => {
                        return Err(PathRejection::EncodedUnreserved)
                    }
                    _ => {}
                }
                if !has_escape {
                    has_escape = true;
                    decoded.extend_from_slice(&bytes[..i]);
                }
                decoded.push(v);
                i += 3;
                continue;
            }
            b';' => return Err(PathRejection::Semicolon),
            b'\\' => return Err(PathRejection::Backslash),
            0..=0x1f | 0x7f => return Err(PathRejection::ControlByte),
            0x80..=0xff => return Err(PathRejection::RawNonAscii),
            _ => {}
        }
        if has_escape {
            decoded.push(b);
        }
        i += 1;
    }
    if has_escape && std::str::from_utf8(&decoded).is_err() {
        return Err(PathRejection::InvalidUtf8);
    }
    // Segment checks on the raw form: no escapes of `/` or `.` survived above, so raw and decoded
    // segments line up.
    let mut segs = path[1..].split('/').peekable();
    while let Some(seg) = segs.next() {
        if seg.is_empty() && segs.peek().is_some() {
            return Err(PathRejection::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(PathRejection::DotSegment);
        }
    }
    Ok(path)
}

/// A compiled route path: exact, or segments with `*` wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    Exact(String),
    Segments { segs: Vec<Seg>, rest: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Lit(String),
    /// One non-empty segment.
    Any,
}

impl PathPattern {
    /// `"/v1/models"` exact (and with one trailing slash); `"/sessions/*/history"` one segment; a trailing `"/*"` the rest of the path
    /// (possibly empty): `"/v1/models/*"` matches `/v1/models/` and `/v1/models/gpt/x`, `"/*"` everything.
    pub fn parse(p: &str) -> Result<PathPattern, String> {
        if !p.starts_with('/') {
            return Err(format!("route path {p:?} must start with `/`"));
        }
        if p.contains('?') || p.contains('#') {
            return Err(format!("route path {p:?} must not contain a query or fragment: policy never matches on them"));
        }
        if !p.contains('*') {
            canonical_path(p)
                .map_err(|r| format!("route path {p:?} is not canonical: {}", r.message()))?;
            return Ok(PathPattern::Exact(p.to_string()));
        }
        let parts: Vec<&str> = p[1..].split('/').collect();
        let mut segs = Vec::new();
        let mut rest = false;
        for (i, part) in parts.iter().enumerate() {
            let last = i == parts.len() - 1;
            match *part {
                "*" if last => rest = true,
                "*" => segs.push(Seg::Any),
                s if s.contains('*') => {
                    return Err(format!("route path {p:?}: `*` must be a whole segment"))
                }
                "" if !last => return Err(format!("route path {p:?} has an empty segment")),
                s => segs.push(Seg::Lit(s.to_string())),
            }
        }
        Ok(PathPattern::Segments { segs, rest })
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            // A trailing slash names the same resource on many servers, so `/kill/` gets `/kill`'s rule.
            PathPattern::Exact(p) => path
                .strip_prefix(p.as_str())
                .is_some_and(|tail| tail.is_empty() || tail == "/"),
            PathPattern::Segments { segs, rest } => {
                let path = match path.strip_suffix('/') {
                    Some(trimmed) if !*rest && !trimmed.is_empty() => trimmed,
                    _ => path,
                };
                let mut it = path[1..].split('/');
                for seg in segs {
                    match (seg, it.next()) {
                        (Seg::Lit(l), Some(s)) if l == s => {}
                        (Seg::Any, Some(s)) if !s.is_empty() => {}
                        _ => return false,
                    }
                }
                if *rest {
                    // `/prefix/*` needs the slash after the prefix: `/prefix` itself is another path.
                    it.next().is_some()
                } else {
                    it.next().is_none()
                }
            }
        }
    }
}

/// What a route asks of the caller, compiled to scope bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Public,
    /// An authenticated identity holding every scope in the set (empty: any identity).
    Require(ScopeSet),
    /// The default route when it denies everything unmatched.
    Deny,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub pattern: PathPattern,
    pub methods: Vec<Method>,
    pub websocket: Option<bool>,
    pub access: Access,
    /// `"POST /v1/responses"`, for reasons and `check`.
    pub label: String,
    pub response_header_timeout: Option<std::time::Duration>,
}

impl Route {
    pub fn matches(&self, method: &Method, path: &str, websocket: bool) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && self.websocket.is_none_or(|w| w == websocket)
            && self.pattern.matches(path)
    }
}

/// The ordered route table; first match wins, then the default.
#[derive(Debug, Clone)]
pub struct RouteTable {
    pub routes: Vec<Route>,
    pub default: Access,
    pub default_label: String,
}

/// Which route applied: an index into the table, or the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteMatch {
    pub index: Option<usize>,
    pub access: Access,
}

impl RouteTable {
    pub fn compile(
        routes: &[RouteConfig],
        default: &DefaultRoute,
        catalogue: &Catalogue,
    ) -> RouteTable {
        let compiled = routes
            .iter()
            .map(|r| {
                let access = match &r.access {
                    RouteAccess::Public => Access::Public,
                    RouteAccess::Require(names) => {
                        Access::Require(catalogue.parse(names.iter().map(String::as_str)).0)
                    }
                };
                let methods = if r.methods.is_empty() {
                    "*".to_string()
                } else {
                    r.methods
                        .iter()
                        .map(|m| m.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let ws = match r.websocket {
                    Some(true) => " (websocket)",
                    _ => "",
                };
                Route {
                    pattern: PathPattern::parse(&r.path)
                        .unwrap_or(PathPattern::Exact(r.path.clone())),
                    methods: r.methods.clone(),
                    websocket: r.websocket,
                    access,
                    label: format!("{methods} {}{ws}", r.path),
                    response_header_timeout: r.response_header_timeout,
                }
            })
            .collect();
        let (default, default_label) = match default {
            DefaultRoute::Deny => (Access::Deny, "default route (deny)".to_string()),
            DefaultRoute::Require(names) => (
                Access::Require(catalogue.parse(names.iter().map(String::as_str)).0),
                "default route".to_string(),
            ),
        };
        RouteTable {
            routes: compiled,
            default,
            default_label,
        }
    }

    pub fn find(&self, method: &Method, path: &str, websocket: bool) -> RouteMatch {
        for (i, r) in self.routes.iter().enumerate() {
            if r.matches(method, path, websocket) {
                return RouteMatch {
                    index: Some(i),
                    access: r.access,
                };
            }
        }
        RouteMatch {
            index: None,
            access: self.default,
        }
    }

    pub fn label(&self, m: RouteMatch) -> &str {
        match m.index {
            Some(i) => &self.routes[i].label,
            None => &self.default_label,
        }
    }

    pub fn route(&self, m: RouteMatch) -> Option<&Route> {
        m.index.map(|i| &self.routes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::openclaw_scopes;

    /// A corpus of tricky paths: each is either refused with a reason, or accepted unchanged.
    #[test]
    fn canonicalisation_corpus() {
        let refused: &[(&str, PathRejection)] = &[
            ("v1/models", PathRejection::NotOriginForm),
            ("*", PathRejection::NotOriginForm),
            ("//v1/responses", PathRejection::EmptySegment),
            ("/v1//responses", PathRejection::EmptySegment),
            ("/v1/./responses", PathRejection::DotSegment),
            ("/v1/../v1/responses", PathRejection::DotSegment),
            ("/v1/models/..", PathRejection::DotSegment),
            ("/v1/responses;x=1", PathRejection::Semicolon),
            ("/v1;/responses", PathRejection::Semicolon),
            ("/v1\\responses", PathRejection::Backslash),
            ("/v1%2Fresponses", PathRejection::EncodedSeparator),
            ("/v1%2fresponses", PathRejection::EncodedSeparator),
            ("/v1%5Cresponses", PathRejection::EncodedSeparator),
            ("/v1/%2e%2e/admin", PathRejection::EncodedDot),
            ("/v1/%2E/x", PathRejection::EncodedDot),
            ("/v1/%72esponses", PathRejection::EncodedUnreserved),
            ("/v1/%7E", PathRejection::EncodedUnreserved),
            ("/v1/%252F", PathRejection::EncodedPercent),
            ("/v1/%00", PathRejection::EncodedControl),
            ("/v1/%3B", PathRejection::EncodedControl),
            ("/v1/%0a", PathRejection::EncodedControl),
            ("/v1/%zz", PathRejection::BadPercentEncoding),
            ("/v1/%2", PathRejection::BadPercentEncoding),
            ("/v1/%C0%AE%C0%AE/", PathRejection::InvalidUtf8),
            ("/v1/%C0%AF", PathRejection::InvalidUtf8),
            ("/v1/%FF", PathRejection::InvalidUtf8),
            ("/v1/\u{e9}", PathRejection::RawNonAscii),
            ("/v1/\tx", PathRejection::ControlByte),
        ];
        for (p, why) in refused {
            assert_eq!(canonical_path(p), Err(*why), "{p}");
        }
        let accepted = [
            "/",
            "/v1/responses",
            "/v1/models/",
            "/sessions/agent:main:main/history",
            "/sessions/agent%3Amain/history",
            "/files/a%20b",
            "/files/%E2%9C%93",
            "/odd/~user/a-b_c.d",
            "/v1/models/gpt-4.1",
            "/x/...",
            "/x/.hidden",
        ];
        for p in accepted {
            assert_eq!(canonical_path(p), Ok(p), "{p}");
        }
    }

    #[test]
    fn patterns() {
        let exact = PathPattern::parse("/v1/models").unwrap();
        assert!(exact.matches("/v1/models"));
        assert!(
            exact.matches("/v1/models/"),
            "a trailing slash keeps the rule"
        );
        assert!(!exact.matches("/v1/models//"));
        assert!(!exact.matches("/v1/modelsx"));
        assert!(!exact.matches("/V1/MODELS"));
        let one = PathPattern::parse("/sessions/*/history").unwrap();
        assert!(one.matches("/sessions/abc/history"));
        assert!(!one.matches("/sessions//history"));
        assert!(!one.matches("/sessions/a/b/history"));
        assert!(!one.matches("/sessions/abc/history/x"));
        assert!(one.matches("/sessions/abc/history/"));
        let rest = PathPattern::parse("/v1/models/*").unwrap();
        assert!(rest.matches("/v1/models/gpt"));
        assert!(rest.matches("/v1/models/"));
        assert!(rest.matches("/v1/models/a/b"));
        assert!(!rest.matches("/v1/models"));
        let all = PathPattern::parse("/*").unwrap();
        assert!(all.matches("/"));
        assert!(all.matches("/anything/at/all"));
        assert!(PathPattern::parse("/a*").is_err());
        assert!(PathPattern::parse("a").is_err());
        assert!(PathPattern::parse("/a?b").is_err());
        assert!(PathPattern::parse("/a//b").is_err());
    }

    #[test]
    fn openclaw_default_table_matches_like_the_gateway() {
        let cat = Catalogue::new(&openclaw_scopes());
        let routes = crate::upstream::openclaw::default_routes();
        let table = RouteTable::compile(&routes, &DefaultRoute::Deny, &cat);
        let req = |m: &str, p: &str, ws: bool| {
            let m = table.find(&Method::from_bytes(m.as_bytes()).unwrap(), p, ws);
            match m.access {
                Access::Public => "public".to_string(),
                Access::Deny => "deny".to_string(),
                Access::Require(s) => cat.join(s, "+"),
            }
        };
        assert_eq!(req("POST", "/v1/responses", false), "operator.write");
        assert_eq!(req("POST", "/v1/chat/completions", false), "operator.write");
        assert_eq!(req("POST", "/v1/embeddings", false), "operator.write");
        assert_eq!(req("POST", "/tools/invoke", false), "operator.write");
        assert_eq!(req("GET", "/v1/models", false), "operator.read");
        assert_eq!(req("GET", "/v1/models/openclaw", false), "operator.read");
        assert_eq!(req("GET", "/sessions/main/history", false), "operator.read");
        assert_eq!(req("POST", "/sessions/main/kill", false), "operator.admin");
        assert_eq!(req("GET", "/healthz", false), "public");
        assert_eq!(req("GET", "/readyz", false), "public");
        assert_eq!(req("GET", "/", true), "");
        // Other GETs are the Control UI's read surface; other methods fall through to the default.
        assert_eq!(req("GET", "/", false), "operator.read");
        assert_eq!(req("GET", "/assets/app.js", false), "operator.read");
        assert_eq!(req("DELETE", "/v1/models", false), "deny");
        assert_eq!(req("PUT", "/v1/responses", false), "deny");
    }
}
