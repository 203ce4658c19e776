//! scopegate: an identity-aware reverse proxy for gateways that authorise "operator" scopes.
//!
//! A request travels through the phases of the product design, each in its own module:
//!
//! ```text
//! listener ─► limits ─► hygiene ─► identify ─► authorise ─► inject ─► forward
//! server/     server/   identity/  identity/   policy/      upstream/  upstream/
//! ```
//!
//! Deciding is kept apart from doing I/O: `identity`, `policy` and `assertion` are plain functions over
//! plain data and are tested without sockets; `server` and `upstream` move bytes and call them.
//! [`runtime::Snapshot`] is one immutable, compiled configuration; a request takes one snapshot at its
//! start and keeps it to the end, so a reload never changes a request halfway.
//!
//! Layers point one way. [`values`] is the floor: the value types several layers share (path
//! patterns, key material, algorithms, the scope limit, the OpenClaw default routes), parsed once and
//! importing none of the layers above; `config` parses into them and imports no domain module; the
//! domain modules build from `config` without parsing again.

pub mod assertion;
pub mod audit;
pub mod cli;
pub mod config;
pub(crate) mod demo;
pub(crate) mod error;
pub(crate) mod header_names;
pub mod identity;
pub(crate) mod limits;
pub(crate) mod log_scope;
pub(crate) mod metrics;
pub mod policy;
pub mod properties;
pub mod proxy;
pub(crate) mod runtime;
pub mod server;
pub(crate) mod sessions;
pub(crate) mod stream;
pub(crate) mod tls;
pub mod tokens;
pub mod upstream;
pub mod util;
pub mod values;

pub use error::{Refusal, RefusalKind};
