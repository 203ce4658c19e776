//! The scope catalogue and its implication rules, compiled once per config into bit sets.
//!
//! A [`ScopeSet`] is a 128-bit set indexed by catalogue position, so closure, intersection and the
//! per-request "are the required scopes satisfied" check are a few machine instructions. The closure of
//! each scope (everything it satisfies, itself included) is computed at load time.

use std::collections::HashMap;

use crate::config::ScopesConfig;

/// The largest catalogue a [`ScopeSet`] can index (the config refuses a larger one).
pub use crate::values::MAX_SCOPES;

pub use crate::values::ScopeSet;

/// Scope names, implication rules and their precomputed closure.
#[derive(Debug, Clone)]
pub struct Catalogue {
    names: Vec<String>,
    by_name: HashMap<String, usize>,
    direct: Vec<ScopeSet>,
    closure: Vec<ScopeSet>,
}

impl Catalogue {
    /// Compiles a validated [`ScopesConfig`]; unknown names were already refused by config validation
    /// and are ignored here.
    pub fn new(cfg: &ScopesConfig) -> Catalogue {
        let names: Vec<String> = cfg.catalogue.iter().take(MAX_SCOPES).cloned().collect();
        let by_name: HashMap<String, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let all = (0..names.len()).fold(ScopeSet::EMPTY, |mut s, i| {
            s.insert(i);
            s
        });
        let mut direct = vec![ScopeSet::EMPTY; names.len()];
        for (from, targets) in &cfg.implies {
            let Some(&f) = by_name.get(from) else {
                continue;
            };
            for t in targets {
                if t == "*" {
                    direct[f] = direct[f].union(all);
                } else if let Some(&id) = by_name.get(t) {
                    direct[f].insert(id);
                }
            }
            // A scope trivially satisfies itself; keep it out of `direct` so explanations stay honest.
            direct[f] = direct[f].minus(ScopeSet::single(f));
        }
        // Reflexive-transitive closure by fixpoint: catalogues are tiny, a few passes settle it.
        let mut closure: Vec<ScopeSet> = (0..names.len())
            .map(|i| direct[i].union(ScopeSet::single(i)))
            .collect();
        loop {
            let mut changed = false;
            for i in 0..names.len() {
                let mut acc = closure[i];
                for j in closure[i].ids() {
                    acc = acc.union(closure[j]);
                }
                if acc != closure[i] {
                    closure[i] = acc;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        Catalogue {
            names,
            by_name,
            direct,
            closure,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn id(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn name(&self, id: usize) -> &str {
        &self.names[id]
    }

    pub fn all(&self) -> ScopeSet {
        (0..self.names.len()).fold(ScopeSet::EMPTY, |mut s, i| {
            s.insert(i);
            s
        })
    }

    /// Known names become a set; unknown ones are returned so the caller can give a reason for each.
    pub fn parse<'a, I>(&self, names: I) -> (ScopeSet, Vec<String>)
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut set = ScopeSet::EMPTY;
        let mut unknown = Vec::new();
        for n in names {
            match self.id(n) {
                Some(id) => set.insert(id),
                None => {
                    if !n.is_empty() && !unknown.iter().any(|u: &String| u == n) {
                        unknown.push(n.to_string());
                    }
                }
            }
        }
        (set, unknown)
    }

    /// Everything the set satisfies, itself included.
    pub fn closure(&self, set: ScopeSet) -> ScopeSet {
        set.ids()
            .fold(ScopeSet::EMPTY, |acc, id| acc.union(self.closure[id]))
    }

    /// True when holding `granted` (closure applied) satisfies every scope in `required`.
    pub fn satisfies(&self, granted: ScopeSet, required: ScopeSet) -> bool {
        required.is_subset_of(self.closure(granted))
    }

    /// Which granted scope implies `id` (directly if possible), for the "X implies Y" reason.
    pub fn implied_by(&self, granted: ScopeSet, id: usize) -> Option<usize> {
        if granted.contains(id) {
            return None;
        }
        granted
            .ids()
            .find(|&g| self.direct[g].contains(id))
            .or_else(|| granted.ids().find(|&g| self.closure[g].contains(id)))
    }

    /// Names in catalogue order.
    pub fn names(&self, set: ScopeSet) -> Vec<&str> {
        set.ids().map(|id| self.name(id)).collect()
    }

    pub fn names_owned(&self, set: ScopeSet) -> Vec<String> {
        set.ids().map(|id| self.name(id).to_string()).collect()
    }

    pub fn join(&self, set: ScopeSet, sep: &str) -> String {
        let mut out = String::new();
        for (i, id) in set.ids().enumerate() {
            if i > 0 {
                out.push_str(sep);
            }
            out.push_str(self.name(id));
        }
        out
    }

    /// The direct implications of one scope, for `check`'s table.
    pub fn direct(&self, id: usize) -> ScopeSet {
        self.direct[id]
    }

    pub fn closure_of(&self, id: usize) -> ScopeSet {
        self.closure[id]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::openclaw_scopes;

    fn oc() -> Catalogue {
        Catalogue::new(&openclaw_scopes())
    }

    fn set(c: &Catalogue, names: &[&str]) -> ScopeSet {
        let (s, unknown) = c.parse(names.iter().copied());
        assert!(unknown.is_empty(), "{unknown:?}");
        s
    }

    /// Every rule of the gateway contract §2, as a table: (granted, required, satisfied?).
    #[test]
    fn openclaw_implication_table() {
        let c = oc();
        let cases: &[(&[&str], &str, bool)] = &[
            // admin satisfies every operator.* scope
            (&["operator.admin"], "operator.read", true),
            (&["operator.admin"], "operator.write", true),
            (&["operator.admin"], "operator.approvals", true),
            (&["operator.admin"], "operator.questions", true),
            (&["operator.admin"], "operator.pairing", true),
            (&["operator.admin"], "operator.talk", true),
            (&["operator.admin"], "operator.talk.secrets", true),
            (&["operator.admin"], "operator.sessions.read", true),
            (&["operator.admin"], "operator.sessions.write", true),
            // write satisfies read, talk, sessions.read, sessions.write
            (&["operator.write"], "operator.read", true),
            (&["operator.write"], "operator.talk", true),
            (&["operator.write"], "operator.sessions.read", true),
            (&["operator.write"], "operator.sessions.write", true),
            (&["operator.write"], "operator.admin", false),
            (&["operator.write"], "operator.approvals", false),
            (&["operator.write"], "operator.pairing", false),
            (&["operator.write"], "operator.talk.secrets", false),
            (&["operator.write"], "operator.questions", false),
            // read or sessions.write satisfies sessions.read
            (&["operator.read"], "operator.sessions.read", true),
            (&["operator.read"], "operator.write", false),
            (&["operator.read"], "operator.sessions.write", false),
            (&["operator.read"], "operator.talk", false),
            (&["operator.sessions.write"], "operator.sessions.read", true),
            (&["operator.sessions.write"], "operator.read", false),
            (&["operator.sessions.read"], "operator.read", false),
            // the rest need an exact match (or admin)
            (&["operator.approvals"], "operator.approvals", true),
            (&["operator.approvals"], "operator.read", false),
            (&["operator.talk"], "operator.talk.secrets", false),
            (&["operator.talk.secrets"], "operator.talk", false),
            (&["operator.pairing"], "operator.questions", false),
            (&[], "operator.read", false),
        ];
        for (granted, required, expect) in cases {
            let g = set(&c, granted);
            let r = set(&c, &[required]);
            assert_eq!(c.satisfies(g, r), *expect, "{granted:?} ⊢ {required}");
        }
    }

    #[test]
    fn closure_lists_every_name_literally() {
        let c = oc();
        let admin = c.closure(set(&c, &["operator.admin"]));
        assert_eq!(admin.len(), 10);
        let rw = c.closure(set(&c, &["operator.read", "operator.write"]));
        assert_eq!(
            c.names(rw),
            vec![
                "operator.read",
                "operator.write",
                "operator.sessions.read",
                "operator.sessions.write",
                "operator.talk"
            ]
        );
    }

    #[test]
    fn explains_which_grant_implied_a_scope() {
        let c = oc();
        let g = set(&c, &["operator.admin"]);
        let w = c.id("operator.write").unwrap();
        assert_eq!(c.implied_by(g, w), c.id("operator.admin"));
        let g = set(&c, &["operator.write", "operator.read"]);
        let sr = c.id("operator.sessions.read").unwrap();
        assert!(c.implied_by(g, sr).is_some());
        assert_eq!(c.implied_by(g, c.id("operator.read").unwrap()), None);
    }

    #[test]
    fn unknown_names_are_reported_not_dropped_silently() {
        let c = oc();
        let (s, unknown) = c.parse(["operator.read", "openid", "profile", "openid"]);
        assert_eq!(c.names(s), vec!["operator.read"]);
        assert_eq!(unknown, vec!["openid", "profile"]);
    }

    #[test]
    fn transitive_custom_rules() {
        let cfg = ScopesConfig {
            catalogue: vec!["a".into(), "b".into(), "c".into()],
            implies: vec![
                ("a".into(), vec!["b".into()]),
                ("b".into(), vec!["c".into()]),
            ],
        };
        let c = Catalogue::new(&cfg);
        let a = c.parse(["a"]).0;
        assert!(c.satisfies(a, c.parse(["c"]).0));
        assert!(!c.satisfies(c.parse(["c"]).0, a));
    }
}
