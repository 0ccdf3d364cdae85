//! A detached session's player side, kept in the session's driver while
//! the player is away: a leaf that the driver and the files that extend it
//! import, so the driver's loop never imports back up into them.

use tokio::time::Instant;

use super::playback::Playback;
use crate::config::Config;

/// A detached session's player side: when the link dropped, and what the
/// game said since.
pub(super) struct Away {
    /// When the player's link dropped.
    pub since: Instant,
    /// The last the player heard from holdfast was that the game is down
    /// (the session was held or logging back in when the link dropped):
    /// a player who comes back once it is up is told so.
    pub told_down: bool,
    /// The game's output kept for the player.
    pub playback: Playback,
}

impl Away {
    /// Away from `since`, keeping as much output as the config says.
    pub fn new(since: Instant, told_down: bool, cfg: &Config) -> Box<Away> {
        Box::new(Away {
            since,
            told_down,
            playback: Playback::new(cfg.resume.playback_lines, cfg.resume.playback_bytes),
        })
    }
}
