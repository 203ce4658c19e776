//! `[[routes]]` and `[policy]`: the route table (the file's own, the profile's default, or both) with
//! each path parsed once into a [`PathPattern`], and the default for unmatched requests.

use http::Method;

use crate::values::PathPattern;

use super::scopes::KnownScopes;
use super::*;

/// The route table and whether it is the profile's default rather than the file's own.
pub(super) fn routes(
    ck: &mut Checker,
    raw: Option<Vec<Spanned<RawRoute>>>,
    include_profile: bool,
    profile: Profile,
    known: &KnownScopes,
) -> (Vec<RouteConfig>, bool) {
    let (mut routes, routes_from_profile) = match raw {
        Some(list) => {
            let mut out = Vec::new();
            for r in list {
                if let Some(route) = route_config(ck, r, known) {
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
    (routes, routes_from_profile)
}

pub(super) fn default_route(
    ck: &mut Checker,
    raw: Option<Spanned<RawDefaultRoute>>,
    known: &KnownScopes,
) -> DefaultRoute {
    match raw {
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
                    DefaultRoute::Require(known.check(ck, &spanned))
                }
            }
        }
    }
}

fn route_config(
    ck: &mut Checker,
    raw: Spanned<RawRoute>,
    known: &KnownScopes,
) -> Option<RouteConfig> {
    let span = raw.span();
    let raw = raw.into_inner();
    let path = match PathPattern::parse(raw.path.get_ref()) {
        Ok(path) => path,
        Err(e) => {
            ck.err(raw.path.span(), e);
            return None;
        }
    };
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
        RouteAccess::Require(known.check(ck, &raw.require))
    };
    Some(RouteConfig {
        path,
        methods,
        websocket: raw.websocket,
        access,
        response_header_timeout: raw.response_header_timeout.map(|d| d.0),
    })
}

fn profile_routes(profile: Profile) -> Vec<RouteConfig> {
    match profile {
        Profile::OpenClaw => openclaw_routes(),
        Profile::Generic => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_test_toml as parse;
    use super::*;

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
