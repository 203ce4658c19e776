//! `[[grants]]`: scopes for named subjects and groups.

use super::scopes::KnownScopes;
use super::*;

pub(super) fn grants(
    ck: &mut Checker,
    raw: Vec<Spanned<RawGrant>>,
    known: &KnownScopes,
) -> Vec<GrantConfig> {
    let mut grants = Vec::new();
    for g in raw {
        let span = g.span();
        let g = g.into_inner();
        if g.subjects.is_empty() && g.groups.is_empty() {
            ck.err(span, "a [[grants]] entry needs `subjects` and/or `groups`");
        }
        let scopes = known.check(ck, &g.scopes);
        grants.push(GrantConfig {
            subjects: g.subjects,
            groups: g.groups,
            scopes,
        });
    }
    grants
}
