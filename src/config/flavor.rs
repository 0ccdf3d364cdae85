//! Per-flavor presets: how to probe a game, log a player in, confirm that
//! the login worked, and what client-ip mode the game understands.
//!
//! Texts come from the servers themselves: TinyMUSH/TinyMUX say "Either that
//! player does not exist, or has a different password." on a bad login,
//! PennMUSH "That is not the correct password." / "There is no player with
//! that name.", Evennia "Username and/or password is incorrect." (or, after
//! five failures from one address, "Too many login failures; please try
//! again in a few minutes.") and "You become NAME." on success. Evennia
//! colours these lines; the regexes are matched with ANSI codes removed. MUSH servers answer `think` only to a
//! logged-in player, which makes it a login confirmation as well as a probe;
//! Evennia has no `think`, but echoes an unknown command back inside
//! "Command '...' is not available.", which carries the nonce just as well.
//!
//! Evennia's Portal hands new connections to its Server at most
//! `MAX_CONNECTION_RATE` (default 2) per second and silently drops input
//! that arrives on a connection before that; a login sent right after
//! connecting is lost whenever another connection came in less than half a
//! second earlier (the heartbeat's, another re-login). So for Evennia a new
//! connection first sends the marker, again every half second, until its
//! echo proves the Server has the connection; only then the login.

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
    /// Before logging in on a new connection, send the marker until it comes
    /// back (see [`super::Templates::sync`]).
    pub sync: bool,
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
            sync: false,
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
            sync: false,
        },
        Flavor::Evennia => Preset {
            probe: "{nonce}",
            login: "{verb} {name} {password}",
            marker: "{nonce}",
            login_success: &[r"^You become "],
            login_failure: &[
                r"^Username and/or password is incorrect",
                // Evennia throttles failed logins per IP, and behind
                // holdfast every player has the proxy's address.
                r"^Too many login failures; please try again",
            ],
            quit: "quit",
            client_ip: ClientIpMode::None,
            sync: true,
        },
    }
}
