//! The floor: value types that several layers need, each parsed once from text into a form that cannot
//! be invalid — route path patterns, the request-path canonical form they share, JWT verification keys,
//! the assertion signing key, the algorithms keys are pinned to, the scope-catalogue limit, scope
//! sets and an identity's standing (its grants and scopes, as policy computed them), and the OpenClaw
//! default route table.
//!
//! It sits below everything else: `config` parses into these types and stores them, and `policy`,
//! `identity`, `assertion` and `upstream` use them as they are, without parsing again. So this module
//! imports nothing from `config`, `identity`, `policy`, `assertion`, `upstream`, `server`, `runtime` or
//! `cli` (only the leaf helpers of `util`); layers point one way, down to here.
//!
//! (Not to be confused with `config::values`, the serde leaf values of the TOML file.)

mod algorithm;
mod openclaw_routes;
mod path;
mod path_pattern;
mod scope_limits;
mod scope_set;
mod signing_key;
mod standing;
mod verification_key;

pub use algorithm::{AssertionAlgorithm, JwtAlgorithm};
pub(crate) use openclaw_routes::{ProfileAccess, OPENCLAW_ROUTES};
pub use path::{canonical_path, PathRejection};
pub use path_pattern::PathPattern;
pub use scope_limits::MAX_SCOPES;
pub use scope_set::ScopeSet;
pub use signing_key::{generate_pkcs8, pem_encode, AssertionKey};
pub use standing::{subject_eq, GrantMatch, GrantVia, Standing};
pub(crate) use verification_key::VerificationKey;
