//! The upstream side: the pooled clients (hyper's, and `wire` for bodiless requests), streaming
//! bodies, WebSocket relays, and the OpenClaw profile.

pub mod body;
pub mod client;
pub(crate) mod handshake;
pub mod openclaw;
pub mod pool;
pub mod websocket;
pub mod wire;
