//! Writes held back for an upgrade's ask: a leaf that the driver's loop
//! and the write path both import.

use crate::state::upgrade::Ask;

/// An upgrade's ask that came in the middle of a step (a write to a slow
/// reader, a connect), and what the player's writes kept for it.
#[derive(Default)]
pub(super) struct Stopping {
    /// The ask: answered at the top of the loop, once the current step
    /// is done.
    pub asked: Option<Ask>,
    /// Bytes for the player, as they go on the wire (compressed if MCCP2
    /// is on), not yet written when `asked` came: they cross with the
    /// session's state, or are written first if the upgrade fails.
    pub unsent: Vec<u8>,
    /// A write gave way to `asked` (the player reads slowly).
    pub gave_way: bool,
    /// With MCCP2 on a connection that cannot cross: the text behind
    /// `unsent` (compressed, it cannot be kept for a playback).
    pub unsent_text: Vec<u8>,
}

impl Stopping {
    /// Writes to the player go out now: no upgrade's ask is waiting and
    /// none held any back.
    pub fn writes_flow(s: &Option<Box<Stopping>>) -> bool {
        s.as_ref()
            .is_none_or(|s| s.asked.is_none() && s.unsent.is_empty() && !s.gave_way)
    }
}
