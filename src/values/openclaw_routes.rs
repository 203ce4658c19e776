//! The OpenClaw gateway's own HTTP surface as a route table, as plain data: what `config` uses for the
//! `openclaw` profile when the file has no `[[routes]]` (or adds with `include_profile_routes`).
//!
//! It is data rather than config so that neither `config` nor `upstream::openclaw` has to reach into
//! the other for it; `config` parses each row's path into a [`super::PathPattern`] like any other route.

use http::Method;

/// What a profile route asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProfileAccess {
    /// No identity needed.
    Public,
    /// An identity holding every listed scope (an empty list: any authenticated identity).
    Require(&'static [&'static str]),
}

/// One row of a profile's default route table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProfileRoute {
    pub(crate) path: &'static str,
    /// Empty means any method.
    pub(crate) methods: &'static [Method],
    /// `Some(true)`: only WebSocket upgrades; `Some(false)`: never upgrades.
    pub(crate) websocket: Option<bool>,
    pub(crate) access: ProfileAccess,
}

const GET: &[Method] = &[Method::GET, Method::HEAD];
const POST: &[Method] = &[Method::POST];
const READ: ProfileAccess = ProfileAccess::Require(&["operator.read"]);
const WRITE: ProfileAccess = ProfileAccess::Require(&["operator.write"]);

const fn http(
    path: &'static str,
    methods: &'static [Method],
    access: ProfileAccess,
) -> ProfileRoute {
    ProfileRoute {
        path,
        methods,
        websocket: Some(false),
        access,
    }
}

/// The gateway's routes, first match wins.
pub(crate) const OPENCLAW_ROUTES: &[ProfileRoute] = &[
    http("/health", GET, ProfileAccess::Public),
    http("/healthz", GET, ProfileAccess::Public),
    http("/ready", GET, ProfileAccess::Public),
    http("/readyz", GET, ProfileAccess::Public),
    http("/startup", GET, ProfileAccess::Public),
    http("/startupz", GET, ProfileAccess::Public),
    http("/v1/responses", POST, WRITE),
    http("/v1/chat/completions", POST, WRITE),
    http("/v1/embeddings", POST, WRITE),
    http("/v1/models", GET, READ),
    http("/v1/models/*", GET, READ),
    http("/tools/invoke", POST, WRITE),
    http("/sessions/*/history", GET, READ),
    http(
        "/sessions/*/kill",
        &[],
        ProfileAccess::Require(&["operator.admin"]),
    ),
    // The WebSocket control plane: any path upgrades to it. Connecting needs an identity; every RPC is
    // then checked by the gateway against the scopes scopegate sends.
    ProfileRoute {
        path: "/*",
        methods: &[Method::GET],
        websocket: Some(true),
        access: ProfileAccess::Require(&[]),
    },
    // The Control UI and its assets: the gateway's read surface.
    http("/*", GET, READ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::PathPattern;

    #[test]
    fn every_path_is_a_valid_pattern() {
        for r in OPENCLAW_ROUTES {
            assert!(PathPattern::parse(r.path).is_ok(), "{}", r.path);
        }
    }
}
