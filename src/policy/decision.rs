//! The decision: allow or deny, the scopes involved, and — rendered on demand — the reasons.
//!
//! A [`Decision`] is small and `Copy`: the hot path computes it with a route lookup and two bit-set
//! operations. Its reasons are derived from the same inputs when someone needs them (a refusal body,
//! `whoami`, `explain`), so the live proxy and the offline explanation cannot disagree.

use http::Method;

use crate::error::{Reason, Refusal, RefusalKind, ScopeDetail};
use crate::identity::Identity;
use crate::policy::routes::{Access, RouteMatch};
use crate::policy::{GrantVia, Policy, ScopeSet};

/// Why a request was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyKind {
    /// The route needs an identity and there is none (401).
    Unauthenticated,
    /// The identity lacks required scopes (403).
    MissingScopes,
    /// No route matched and the default denies (403).
    DefaultDeny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub deny: Option<DenyKind>,
    pub route: RouteMatch,
    pub required: ScopeSet,
    /// Literal scopes granted (credential and `[[grants]]`), before implication.
    pub granted: ScopeSet,
    /// Implication-expanded and, if the client asked, narrowed: what the upstream is told.
    pub effective: ScopeSet,
    /// The closure of what the client asked for, when it asked.
    pub requested: Option<ScopeSet>,
    pub missing: ScopeSet,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.deny.is_none()
    }

    /// The metric/log label of the outcome.
    pub fn outcome(&self) -> &'static str {
        match self.deny {
            None => "allow",
            Some(DenyKind::Unauthenticated) => "unauthenticated",
            Some(DenyKind::MissingScopes) => "missing_scope",
            Some(DenyKind::DefaultDeny) => "default_deny",
        }
    }

    /// The primary reason code (denial label in metrics).
    pub fn code(&self) -> &'static str {
        match self.deny {
            None => "allowed",
            Some(DenyKind::Unauthenticated) => "no_credential",
            Some(DenyKind::MissingScopes) => "missing_scope",
            Some(DenyKind::DefaultDeny) => "default_deny",
        }
    }

    /// The ordered reasons, each a stable code and a sentence.
    pub fn reasons(
        &self,
        policy: &Policy,
        identity: Option<&Identity>,
        method: &Method,
        path: &str,
    ) -> Vec<Reason> {
        let cat = &policy.catalogue;
        let mut out = Vec::new();
        let label = policy.routes.label(self.route);
        match self.route.access {
            Access::Public => out.push(Reason::new(
                "route_public",
                format!("route {label} is public"),
            )),
            Access::Deny => out.push(Reason::new(
                "default_deny",
                format!("no route matches {method} {path}; the default route denies it"),
            )),
            Access::Require(req) if req.is_empty() => out.push(Reason::new(
                "route_requires_identity",
                format!("route {label} requires an authenticated identity"),
            )),
            Access::Require(req) => {
                let which = if self.route.index.is_some() {
                    format!("route {label}")
                } else {
                    format!("no route matches {method} {path}; the default route")
                };
                out.push(Reason::new(
                    "route_requires",
                    format!("{which} requires {}", cat.join(req, ", ")),
                ));
            }
        }
        match identity {
            None => {
                if !matches!(self.route.access, Access::Public) {
                    out.push(Reason::new("no_credential", "no credential was presented"));
                }
            }
            Some(id) => explain_identity(policy, id, self, &mut out),
        }
        if let Some(req) = self.requested {
            if let Some(id) = identity {
                let dropped = policy.standing(id).effective.minus(req);
                if !dropped.is_empty() {
                    out.push(Reason::new(
                        "narrowed_by_request",
                        format!(
                            "the client asked for {} only; dropped {}",
                            if req.is_empty() {
                                "no scopes".to_string()
                            } else {
                                cat.join(req, ", ")
                            },
                            cat.join(dropped, ", ")
                        ),
                    ));
                }
                if self.effective.is_empty() && !policy.standing(id).effective.is_empty() {
                    out.push(Reason::new(
                        "narrowed_to_nothing",
                        "the client's requested scopes left no effective scope",
                    ));
                }
            }
        }
        if !self.missing.is_empty() {
            let have = if self.effective.is_empty() {
                "none".to_string()
            } else {
                cat.join(self.effective, ", ")
            };
            out.push(Reason::new(
                "missing_scope",
                format!(
                    "{} not among the effective scopes ({have})",
                    join_is_are(&cat.names(self.missing))
                ),
            ));
        }
        out
    }

    /// The client-facing refusal for a denied decision.
    pub fn refusal(
        &self,
        policy: &Policy,
        identity: Option<&Identity>,
        method: &Method,
        path: &str,
    ) -> Option<Refusal> {
        let deny = self.deny?;
        let cat = &policy.catalogue;
        let reasons = self.reasons(policy, identity, method, path);
        let mut r = match deny {
            DenyKind::Unauthenticated => {
                let mut r = Refusal::no_credential(format!(
                    "authentication required: {} needs a credential",
                    policy.routes.label(self.route)
                ));
                r.code = "no_credential";
                r
            }
            DenyKind::DefaultDeny => Refusal::new(
                RefusalKind::Forbidden,
                "default_deny",
                format!("no route allows {method} {path}"),
            ),
            DenyKind::MissingScopes => Refusal::new(
                RefusalKind::Forbidden,
                "missing_scope",
                format!("missing scope: {}", cat.join(self.missing, ", ")),
            ),
        };
        if deny != DenyKind::Unauthenticated {
            r.scopes = Some(Box::new(ScopeDetail {
                required: cat.names_owned(self.required),
                granted: cat.names_owned(self.effective),
            }));
        }
        r.reasons = reasons;
        Some(r)
    }
}

fn join_is_are(names: &[&str]) -> String {
    match names {
        [one] => format!("{one} is"),
        many => format!("{} are", many.join(", ")),
    }
}

fn explain_identity(policy: &Policy, id: &Identity, d: &Decision, out: &mut Vec<Reason>) {
    let cat = &policy.catalogue;
    let standing = policy.standing(id);
    let who = id.describe();
    for note in &id.notes {
        out.push(note.clone());
    }
    if standing.credential.is_empty() {
        if standing.grants.is_empty() {
            out.push(Reason::new(
                "credential_no_scopes",
                format!("{who} carries no scope and no [[grants]] entry names it"),
            ));
        }
    } else {
        out.push(Reason::new(
            "grant_credential",
            format!("{who} grants {}", cat.join(standing.credential, ", ")),
        ));
    }
    for u in &standing.unknown {
        out.push(Reason::new(
            "scope_unknown_ignored",
            format!("{who} carries {u:?}, which is not in the scope catalogue; ignored"),
        ));
    }
    for g in &standing.grants {
        let via = match &g.via {
            GrantVia::Subject => format!("subject {}", id.subject),
            GrantVia::Group(gr) => format!("group {gr}"),
        };
        out.push(Reason::new(
            if matches!(g.via, GrantVia::Subject) {
                "grant_subject"
            } else {
                "grant_group"
            },
            format!(
                "[[grants]] #{} ({via}) grants {}",
                g.index + 1,
                cat.join(g.scopes, ", ")
            ),
        ));
    }
    // Say which implication satisfied each required scope that was not granted literally.
    for req in d.required.ids() {
        if d.effective.contains(req) {
            if let Some(from) = cat.implied_by(standing.granted, req) {
                out.push(Reason::new(
                    "implied",
                    format!("{} implies {}", cat.name(from), cat.name(req)),
                ));
            }
        }
    }
}

/// Decides one request. `requested` is the client's own narrowing (a header or the WebSocket
/// `connect` scopes), as literal scopes; it can only remove scopes, never add them.
pub fn decide(
    policy: &Policy,
    identity: Option<&Identity>,
    route: RouteMatch,
    requested: Option<ScopeSet>,
) -> Decision {
    let cat = &policy.catalogue;
    let requested = requested.map(|r| cat.closure(r));
    let (granted, mut effective) = match identity {
        Some(id) => {
            let standing = policy.standing(id);
            (standing.granted, standing.effective)
        }
        None => (ScopeSet::EMPTY, ScopeSet::EMPTY),
    };
    if let Some(req) = requested {
        effective = effective.intersect(req);
    }
    let (deny, required) = match route.access {
        Access::Public => (None, ScopeSet::EMPTY),
        Access::Deny => (Some(DenyKind::DefaultDeny), ScopeSet::EMPTY),
        Access::Require(req) => match identity {
            None => (Some(DenyKind::Unauthenticated), req),
            Some(_) if req.is_subset_of(effective) => (None, req),
            Some(_) => (Some(DenyKind::MissingScopes), req),
        },
    };
    let missing = if deny == Some(DenyKind::MissingScopes) {
        required.minus(effective)
    } else {
        ScopeSet::EMPTY
    };
    Decision {
        deny,
        route,
        required,
        granted,
        effective,
        requested,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{openclaw_scopes, Config};
    use crate::identity::{AuthMethod, Identity};

    fn policy() -> Policy {
        let cfg = Config::parse(
            r#"
[upstream]
url = "http://127.0.0.1:1"
profile = "openclaw"
[trusted_proxy]
peers = ["10.0.0.0/8"]
user_header = "x-user"
[[grants]]
groups = ["ops"]
scopes = ["operator.write"]
[[grants]]
subjects = ["Alice@Example.com"]
scopes = ["operator.admin"]
"#,
            None,
        )
        .unwrap();
        assert_eq!(cfg.scopes, openclaw_scopes());
        Policy::compile(&cfg)
    }

    fn ident(sub: &str, scopes: &[&str], groups: &[&str]) -> Identity {
        Identity::new(
            sub,
            AuthMethod::Jwt,
            groups.iter().map(|s| s.to_string()).collect(),
            scopes.iter().copied(),
        )
    }

    fn run(p: &Policy, id: Option<&Identity>, m: &str, path: &str) -> Decision {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        let route = p.routes.find(&method, path, false);
        decide(p, id, route, None)
    }

    #[test]
    fn read_write_jwt_passes_responses_and_models() {
        let p = policy();
        let id = ident("bob", &["operator.read", "operator.write"], &[]);
        assert!(run(&p, Some(&id), "POST", "/v1/responses").allowed());
        assert!(run(&p, Some(&id), "GET", "/v1/models").allowed());
        assert!(run(&p, Some(&id), "POST", "/v1/chat/completions").allowed());
    }

    #[test]
    fn read_only_jwt_is_refused_write_with_reasons() {
        let p = policy();
        let id = ident("bob", &["operator.read"], &[]);
        let d = run(&p, Some(&id), "POST", "/v1/responses");
        assert_eq!(d.deny, Some(DenyKind::MissingScopes));
        let method = Method::POST;
        let r = d.refusal(&p, Some(&id), &method, "/v1/responses").unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(r.message, "missing scope: operator.write");
        let detail = r.scopes.as_ref().unwrap();
        assert_eq!(detail.required, vec!["operator.write"]);
        assert_eq!(
            detail.granted,
            vec!["operator.read", "operator.sessions.read"]
        );
        let msgs: Vec<_> = r.reasons.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(msgs[0], "route POST /v1/responses requires operator.write");
        assert_eq!(msgs[1], "jwt sub=bob grants operator.read");
        assert!(msgs
            .last()
            .unwrap()
            .starts_with("operator.write is not among the effective scopes"));
    }

    #[test]
    fn admin_gets_everything_and_implication_is_explained() {
        let p = policy();
        let id = ident("alice@example.com", &[], &[]);
        for (m, path) in [
            ("POST", "/v1/responses"),
            ("GET", "/v1/models"),
            ("POST", "/sessions/x/kill"),
            ("POST", "/tools/invoke"),
        ] {
            let d = run(&p, Some(&id), m, path);
            assert!(d.allowed(), "{m} {path}");
        }
        let d = run(&p, Some(&id), "POST", "/v1/responses");
        let reasons = d.reasons(&p, Some(&id), &Method::POST, "/v1/responses");
        assert!(reasons.iter().any(|r| r.code == "grant_subject"));
        assert!(reasons
            .iter()
            .any(|r| r.message == "operator.admin implies operator.write"));
    }

    #[test]
    fn group_mapped_identity_gets_group_scopes() {
        let p = policy();
        let id = ident("carol", &[], &["ops"]);
        let d = run(&p, Some(&id), "POST", "/v1/responses");
        assert!(d.allowed());
        let reasons = d.reasons(&p, Some(&id), &Method::POST, "/v1/responses");
        assert!(reasons
            .iter()
            .any(|r| r.code == "grant_group" && r.message.contains("group ops")));
        assert!(!run(&p, Some(&id), "POST", "/sessions/x/kill").allowed());
    }

    #[test]
    fn no_identity_is_401_on_protected_and_fine_on_public() {
        let p = policy();
        let d = run(&p, None, "GET", "/v1/models");
        assert_eq!(d.deny, Some(DenyKind::Unauthenticated));
        assert_eq!(
            d.refusal(&p, None, &Method::GET, "/v1/models")
                .unwrap()
                .status(),
            401
        );
        assert!(run(&p, None, "GET", "/healthz").allowed());
    }

    #[test]
    fn default_deny_names_the_request() {
        let p = policy();
        let id = ident("alice@example.com", &[], &[]);
        let d = run(&p, Some(&id), "DELETE", "/v1/models");
        assert_eq!(d.deny, Some(DenyKind::DefaultDeny));
        let r = d
            .refusal(&p, Some(&id), &Method::DELETE, "/v1/models")
            .unwrap();
        assert_eq!(r.code, "default_deny");
        assert!(r.reasons[0].message.contains("DELETE /v1/models"));
    }

    #[test]
    fn narrowing_never_widens_and_is_explained() {
        let p = policy();
        let id = ident("bob", &["operator.read"], &[]);
        let cat = &p.catalogue;
        let route = p.routes.find(&Method::GET, "/v1/models", false);
        let admin = cat.parse(["operator.admin"]).0;
        let d = decide(&p, Some(&id), route, Some(admin));
        assert_eq!(
            d.effective,
            p.standing(&id).effective,
            "asking for admin adds nothing"
        );
        let none = decide(&p, Some(&id), route, Some(ScopeSet::EMPTY));
        assert!(!none.allowed());
        let reasons = none.reasons(&p, Some(&id), &Method::GET, "/v1/models");
        assert!(reasons.iter().any(|r| r.code == "narrowed_to_nothing"));
    }

    #[test]
    fn unknown_credential_scopes_are_reported() {
        let p = policy();
        let id = ident("bob", &["operator.read", "openid"], &[]);
        let d = run(&p, Some(&id), "GET", "/v1/models");
        let reasons = d.reasons(&p, Some(&id), &Method::GET, "/v1/models");
        assert!(reasons
            .iter()
            .any(|r| r.code == "scope_unknown_ignored" && r.message.contains("openid")));
    }
}
