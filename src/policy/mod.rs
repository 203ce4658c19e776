//! Authorisation: the scope model, route policy and decisions that carry their reasons.
//!
//! Everything here is a plain function over plain data — no sockets, no clocks — so the live proxy,
//! `/.scopegate/whoami` and `scopegate explain` run exactly the same code.

pub(crate) mod decision;
pub mod routes;
pub(crate) mod scopes;

use crate::config::Config;
use crate::identity::Identity;
pub use crate::values::{subject_eq, GrantMatch, GrantVia, Standing};
pub use decision::{decide, Decision, DenyKind};
pub use routes::{canonical_path, Access, PathRejection, RouteMatch, RouteTable};
pub use scopes::{Catalogue, ScopeSet};

/// One `[[grants]]` entry, compiled.
#[derive(Debug, Clone)]
pub struct Grant {
    pub subjects: Vec<String>,
    pub groups: Vec<String>,
    pub scopes: ScopeSet,
}

/// The compiled policy of one config snapshot.
#[derive(Debug, Clone)]
pub struct Policy {
    pub catalogue: Catalogue,
    pub routes: RouteTable,
    pub grants: Vec<Grant>,
}

impl Policy {
    pub fn compile(config: &Config) -> Policy {
        let catalogue = Catalogue::new(&config.scopes);
        let routes = RouteTable::compile(&config.routes, &config.default_route, &catalogue);
        let grants = config
            .grants
            .iter()
            .map(|g| Grant {
                subjects: g.subjects.clone(),
                groups: g.groups.clone(),
                scopes: catalogue.parse(g.scopes.iter().map(String::as_str)).0,
            })
            .collect();
        Policy {
            catalogue,
            routes,
            grants,
        }
    }

    /// What this policy grants `identity`: computed on first use and kept with the identity
    /// (which lives in this policy's snapshot), so a cached credential pays for it once.
    pub fn standing<'a>(&self, identity: &'a Identity) -> &'a Standing {
        identity.standing.get_or_init(|| {
            let (credential, unknown) = self
                .catalogue
                .parse(identity.scope_claim.iter().map(String::as_str));
            let grants = self.grants_for(&identity.subject, &identity.groups);
            let granted = grants.iter().fold(credential, |acc, g| acc.union(g.scopes));
            Standing {
                credential,
                unknown,
                grants,
                granted,
                effective: self.catalogue.closure(granted),
            }
        })
    }

    /// The `[[grants]]` that apply to a subject and its groups.
    pub fn grants_for(&self, subject: &str, groups: &[String]) -> Vec<GrantMatch> {
        let mut out = Vec::new();
        for (index, g) in self.grants.iter().enumerate() {
            if g.subjects.iter().any(|s| subject_eq(s, subject)) {
                out.push(GrantMatch {
                    index,
                    via: GrantVia::Subject,
                    scopes: g.scopes,
                });
            } else if let Some(group) = g.groups.iter().find(|gr| groups.contains(gr)) {
                out.push(GrantMatch {
                    index,
                    via: GrantVia::Group(group.clone()),
                    scopes: g.scopes,
                });
            }
        }
        out
    }
}
