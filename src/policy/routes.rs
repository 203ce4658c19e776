//! Route policy: which scopes a method and path require, matched on exactly the path that is forwarded.
//!
//! scopegate never rewrites a path. It refuses (400) any path an upstream could read two ways
//! ([`canonical_path`], in the `values` floor) and matches the remaining raw path against the
//! [`PathPattern`]s the config parsed. So the path that was authorised is, byte for byte, the path
//! the upstream receives. The query string is never part of a match.

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
}
