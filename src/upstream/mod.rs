//! The upstream side: the pooled clients (hyper's, and `wire` for bodiless requests), streaming
//! bodies, WebSocket relays, and the OpenClaw profile.

pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod handshake;
pub mod injected;
pub(crate) mod openclaw;
pub(crate) mod pool;
pub(crate) mod websocket;
pub mod wire;
