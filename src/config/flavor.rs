//! Per-flavor presets: how to probe a game, log a player in, confirm that
//! the login worked, and what client-ip mode the game understands.
//!
//! Texts come from the servers themselves: TinyMUSH/TinyMUX say "Either that
//! player does not exist, or has a different password." on a bad login,
//! PennMUSH "That is not the correct password." / "There is no player with
//! that name.", Evennia "Username and/or password is incorrect." and
//! "You become NAME." on success. MUSH servers answer `think` only to a
//! logged-in player, which makes it a login confirmation as well as a probe;
//! Evennia has no `think`, but echoes an unknown command back inside
//! "Command '...' is not available.", which carries the nonce just as well.

use super::raw::{ClientIpMode, Flavor};

/// The preset templates of one flavor (see [`super::Templates`]).
pub struct Preset {
    /// Command sent by the heartbeat; `{nonce}` must come back.
    pub probe: &'static str,
    /// Login line; `{verb}`, `{name}` (quoted if needed), `{password}`.
    pub login: &'static str,
    /// Sent after a (re-)login; `{nonce}` must come back.
    pub marker: &'static str,
    /// Regexes: a backend line matching one means the login worked.
    pub login_success: &'static [&'static str],
    /// Regexes: a backend line matching one means the login failed.
    pub login_failure: &'static [&'static str],
    /// The game's quit command.
    pub quit: &'static str,
    /// Default client-ip mode.
    pub client_ip: ClientIpMode,
}

const MUSH_FAILURE: &str = r"^Either that player does not exist, or has a different password\.";

/// The preset for `flavor`.
pub fn preset(flavor: Flavor) -> Preset {
    match flavor {
        Flavor::Tinymush | Flavor::Tinymux | Flavor::Custom => Preset {
            probe: "think {nonce}",
            login: "{verb} {name} {password}",
            marker: "think {nonce}",
            login_success: &[],
            login_failure: &[MUSH_FAILURE],
            quit: "QUIT",
            client_ip: if flavor == Flavor::Custom {
                ClientIpMode::None
            } else {
                ClientIpMode::Command
            },
        },
        Flavor::Pennmush => Preset {
            probe: "think {nonce}",
            login: "{verb} \"{name}\" {password}",
            marker: "think {nonce}",
            login_success: &[r"^Last connect was from "],
            login_failure: &[
                r"^That is not the correct password\.",
                r"^There is no player with that name\.",
                MUSH_FAILURE,
            ],
            quit: "QUIT",
            client_ip: ClientIpMode::None,
        },
        Flavor::Evennia => Preset {
            probe: "{nonce}",
            login: "{verb} {name} {password}",
            marker: "{nonce}",
            login_success: &[r"^You become "],
            login_failure: &[r"^Username and/or password is incorrect"],
            quit: "quit",
            client_ip: ClientIpMode::None,
        },
    }
}
