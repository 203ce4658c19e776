//! How large a scope catalogue may be: the config refuses a bigger one when it is read, and
//! `policy::scopes` sizes its bit set (`ScopeSet`, one `u128`) to exactly this.

/// The largest catalogue a scope set can index.
pub const MAX_SCOPES: usize = 128;
