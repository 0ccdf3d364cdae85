//! Backends: connecting to them, probing their health, and choosing which
//! one sessions use.
//!
//! - `connect`: TCP or Unix-socket connections with timeouts and socket options.
//! - `health`: one heartbeat probe task per backend.
//! - `pool`: preference order, the active backend, failover decisions.

pub mod connect;
pub mod health;
pub mod pool;
