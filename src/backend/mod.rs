//! Backends: connecting to them and probing their health. Choosing which
//! one sessions use is [`crate::pool`]'s.
//!
//! - `connect`: TCP or Unix-socket connections with timeouts and socket options.
//! - `coverage`: quit, boot or crash: the probe's coverage of the game and
//!   its judgement when a game connection closes (no I/O).
//! - `handover`: the probes' connections and coverage across an upgrade.
//! - `health`: one heartbeat probe task per backend (up, down, degraded).
//! - `degraded`: the probe's degraded state and login hold-back, without I/O.
//! - `mssp`: the game's own MSSP (offered? its last answer) and the probe's telnet answers.
//! - `probe`: the probe's connection: connect screen, login, nonce; its errors.
//! - `probes`: a probe's handle, and every running probe's handle by backend name.
//! - `round`: one probe round: the logged-in check, else a fresh connection and login.

pub mod connect;
pub mod coverage;
pub mod degraded;
pub mod handover;
pub mod health;
pub mod mssp;
pub mod probe;
pub mod probes;
mod round;

pub use probes::Probes;
