//! `[scopes]`: the catalogue and its implication rules (OpenClaw's when the section is absent), and the
//! check every other section's scope list goes through.

use std::collections::HashSet;

use crate::values::MAX_SCOPES;

use super::*;

/// The catalogue's names, to validate the scope lists of tokens, grants and routes against.
pub(super) struct KnownScopes<'a> {
    catalogue: &'a [String],
    known: HashSet<&'a str>,
}

impl<'a> KnownScopes<'a> {
    pub(super) fn new(scopes: &'a ScopesConfig) -> KnownScopes<'a> {
        KnownScopes {
            catalogue: &scopes.catalogue,
            known: scopes.catalogue.iter().map(String::as_str).collect(),
        }
    }

    /// The listed scopes, deduplicated; an unknown one is reported at its position and left out.
    pub(super) fn check(&self, ck: &mut Checker, list: &[Spanned<String>]) -> Vec<String> {
        let mut out = Vec::with_capacity(list.len());
        for s in list {
            if self.known.contains(s.get_ref().as_str()) {
                if !out.contains(s.get_ref()) {
                    out.push(s.get_ref().clone());
                }
            } else {
                ck.err(
                    s.span(),
                    format!(
                        "unknown scope {:?} (the catalogue has: {})",
                        s.get_ref(),
                        self.catalogue.join(", ")
                    ),
                );
            }
        }
        out
    }
}

pub(super) fn scopes_config(ck: &mut Checker, raw: Option<Spanned<RawScopes>>) -> ScopesConfig {
    let Some(raw) = raw else {
        return openclaw_scopes();
    };
    let span = raw.span();
    let raw = raw.into_inner();
    let mut catalogue: Vec<String> = Vec::new();
    for s in &raw.catalogue {
        let name = s.get_ref();
        if name.is_empty()
            || name.contains(char::is_whitespace)
            || name.contains(',')
            || name == "*"
        {
            ck.err(
                s.span(),
                format!("invalid scope name {name:?}: no spaces, commas or `*`"),
            );
        } else if catalogue.contains(name) {
            ck.err(s.span(), format!("scope {name:?} is listed twice"));
        } else {
            catalogue.push(name.clone());
        }
    }
    if catalogue.is_empty() {
        ck.err(
            span.clone(),
            "[scopes] catalogue must list at least one scope",
        );
    }
    if catalogue.len() > MAX_SCOPES {
        ck.err(
            span,
            format!(
                "[scopes] catalogue has {} scopes; at most {} are supported",
                catalogue.len(),
                MAX_SCOPES
            ),
        );
    }
    let mut implies = Vec::new();
    for (from, targets) in raw.implies {
        if !catalogue.contains(&from) {
            let at = targets.first().map(|t| t.span()).unwrap_or(0..0);
            ck.err(at, format!("[scopes.implies] names unknown scope {from:?}"));
            continue;
        }
        let mut to = Vec::new();
        for t in targets {
            if t.get_ref() == "*" || catalogue.contains(t.get_ref()) {
                to.push(t.into_inner());
            } else {
                ck.err(
                    t.span(),
                    format!(
                        "[scopes.implies] {from:?} implies unknown scope {:?}",
                        t.get_ref()
                    ),
                );
            }
        }
        implies.push((from, to));
    }
    ScopesConfig { catalogue, implies }
}

#[cfg(test)]
mod tests {
    use super::super::parse_test_toml as parse;

    #[test]
    fn custom_catalogue_replaces_openclaw() {
        let c = parse(
            "[upstream]\nurl = \"http://x:1\"\n[scopes]\ncatalogue=[\"admin\",\"write\",\"read\"]\n[scopes.implies]\nadmin=[\"*\"]\nwrite=[\"read\"]\n[[api_tokens]]\nsubject=\"ci\"\nsha256=\"0000000000000000000000000000000000000000000000000000000000000000\"\nscopes=[\"write\"]\n",
        )
        .unwrap();
        assert_eq!(c.scopes.catalogue, vec!["admin", "write", "read"]);
        assert_eq!(c.api_tokens[0].scopes, vec!["write"]);
    }
}
