//! The upstream side: the pooled client, streaming bodies, WebSocket relays, and the OpenClaw profile.

pub mod body;
pub mod client;
pub mod openclaw;
pub mod pool;
pub mod websocket;
