//! Route policy: which scopes a method and path require, matched on exactly the path that is forwarded.
//!
//! scopegate never rewrites a path. It refuses (400) any path an upstream could read two ways
//! ([`canonical_path`], in the `values` floor) and matches the remaining raw path against the
//! [`PathPattern`]s the config parsed. So the path that was authorised is, byte for byte, the path
//! the upstream receives. The query string is never part of a match.

use std::collections::HashMap;

use http::Method;

use crate::config::{DefaultRoute, RouteAccess, RouteConfig};
use crate::policy::scopes::{Catalogue, ScopeSet};
use crate::values::PathPattern;
pub use crate::values::{canonical_path, PathRejection};

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
///
/// Exact paths are indexed, so finding a route costs one hash lookup plus a scan of the wildcard
/// routes only, and a table of a thousand exact routes costs what a table of three does.
#[derive(Debug, Clone)]
pub struct RouteTable {
    pub routes: Vec<Route>,
    pub default: Access,
    pub default_label: String,
    /// Exact path → the indices of the routes naming it, in table order.
    exact: HashMap<Box<str>, Vec<usize>, foldhash::fast::RandomState>,
    /// Indices of the routes with wildcards, in table order.
    patterned: Vec<usize>,
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
        let compiled: Vec<Route> = routes
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
                    pattern: r.path.clone(),
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
        let mut exact: HashMap<Box<str>, Vec<usize>, _> = HashMap::default();
        let mut patterned = Vec::new();
        for (i, r) in compiled.iter().enumerate() {
            match r.pattern.exact() {
                Some(p) => exact.entry(p.into()).or_default().push(i),
                None => patterned.push(i),
            }
        }
        RouteTable {
            routes: compiled,
            default,
            default_label,
            exact,
            patterned,
        }
    }

    /// The first route, in table order, that matches; else the default.
    pub fn find(&self, method: &Method, path: &str, websocket: bool) -> RouteMatch {
        // An exact pattern also matches its path with one trailing slash.
        let key = match path.strip_suffix('/') {
            Some(p) if !p.is_empty() => p,
            _ => path,
        };
        let matching = |&i: &usize| self.routes[i].matches(method, path, websocket);
        let exact = self
            .exact
            .get(key)
            .and_then(|ids| ids.iter().copied().find(matching));
        let before = exact.unwrap_or(usize::MAX);
        let patterned = self
            .patterned
            .iter()
            .copied()
            .take_while(|&i| i < before)
            .find(matching);
        match patterned.or(exact) {
            Some(i) => RouteMatch {
                index: Some(i),
                access: self.routes[i].access,
            },
            None => RouteMatch {
                index: None,
                access: self.default,
            },
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

    #[test]
    fn openclaw_default_table_matches_like_the_gateway() {
        let cat = Catalogue::new(&openclaw_scopes());
        let routes = crate::config::openclaw_routes();
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

    #[test]
    fn the_index_finds_what_a_scan_in_table_order_finds() {
        let cat = Catalogue::new(&openclaw_scopes());
        let cfg = crate::config::Config::parse(
            r#"
[upstream]
url = "http://127.0.0.1:9"
[[api_tokens]]
subject = "t"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
scopes = ["operator.read"]
[[routes]]
path = "/a/*"
methods = ["POST"]
require = ["operator.admin"]
[[routes]]
path = "/a/b"
require = ["operator.write"]
[[routes]]
path = "/a/b"
methods = ["GET"]
public = true
[[routes]]
path = "/*/b"
require = ["operator.read"]
[[routes]]
path = "/c"
methods = ["DELETE"]
public = true
[[routes]]
path = "/c"
require = ["operator.admin"]
"#,
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let table = RouteTable::compile(&cfg.routes, &DefaultRoute::Deny, &cat);
        let scan =
            |m: &Method, p: &str, ws: bool| table.routes.iter().position(|r| r.matches(m, p, ws));
        let paths = [
            "/a/b", "/a/b/", "/x/b", "/a/c", "/c", "/c/", "/", "/a", "/a/", "/zz",
        ];
        let methods = [Method::GET, Method::POST, Method::DELETE];
        for p in paths {
            for m in &methods {
                for ws in [false, true] {
                    assert_eq!(
                        table.find(m, p, ws).index,
                        scan(m, p, ws),
                        "{m} {p} ws={ws}"
                    );
                }
            }
        }
        // The wildcard route before the exact one wins for POST; the exact one for GET.
        assert_eq!(table.find(&Method::POST, "/a/b", false).index, Some(0));
        assert_eq!(table.find(&Method::GET, "/a/b", false).index, Some(1));
        assert_eq!(table.find(&Method::PUT, "/x/b", false).index, Some(3));
    }
}
