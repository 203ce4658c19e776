//! A set of catalogue scopes as a 128-bit set indexed by catalogue position: closure, intersection
//! and the per-request "are the required scopes satisfied" check are a few machine instructions.
//! The catalogue that gives the bits names lives in `policy::scopes`.

use std::fmt;

use super::MAX_SCOPES;

// One bit per catalogue scope.
const _: () = assert!(MAX_SCOPES == u128::BITS as usize);

/// A set of catalogue scopes.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ScopeSet(u128);

impl ScopeSet {
    pub const EMPTY: ScopeSet = ScopeSet(0);

    pub fn single(id: usize) -> ScopeSet {
        ScopeSet(1u128 << id)
    }
    pub fn insert(&mut self, id: usize) {
        self.0 |= 1u128 << id;
    }
    pub fn contains(self, id: usize) -> bool {
        self.0 & (1u128 << id) != 0
    }
    pub fn union(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 | other.0)
    }
    pub fn intersect(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & other.0)
    }
    pub fn minus(self, other: ScopeSet) -> ScopeSet {
        ScopeSet(self.0 & !other.0)
    }
    pub fn is_subset_of(self, other: ScopeSet) -> bool {
        self.0 & !other.0 == 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }
    /// Catalogue indexes in ascending order.
    pub fn ids(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let id = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(id)
        })
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.ids()).finish()
    }
}
