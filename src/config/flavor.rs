//! Per-flavor presets: how to probe a game, log a player in, confirm that
//! the login worked, what counts as a quit, which lines are the game
//! refusing or throttling holdfast's own address, how the game announces
//! connects, how long its connect screen takes, and what client-ip mode it
//! understands.
//!
//! Every quirk below was read in the server's own source; the comments cite
//! file and line of the revision read (TinyMUX master 2.14.0.11, commit
//! bb9562bf1; PennMUSH master e1512047; TinyMUSH 4.0 master 3ddeba91;
//! TeenyMUSH master 428e89a, all one file `teenymush.pl`). Evennia's come
//! from its Python package (module and name given, no line numbers).
//!
//! Regexes are matched against one line with ANSI codes removed (Evennia
//! colours its answers). MUSH servers answer `think` only to a logged-in
//! player, which makes it a login confirmation as well as a probe; Evennia
//! has no `think`, but echoes an unknown command back inside "Command '...'
//! is not available.", which carries the nonce just as well.
//!
//! Evennia's Portal hands new connections to its Server at most
//! `MAX_CONNECTION_RATE` (default 2) per second and silently drops input
//! that arrives on a connection before that; a login sent right after
//! connecting is lost whenever another connection came in less than half a
//! second earlier (the heartbeat's, another re-login). So for Evennia a new
//! connection first sends the marker, again every half second, until its
//! echo proves the Server has the connection; only then the login.

use std::time::Duration;

use serde::Deserialize;

use super::values::{ClientIpMode, Flavor};

/// How the game recognises its quit command in one phase (connect screen
/// or logged in). `[templates] quit_connect` / `quit_logged_in`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QuitMatch {
    /// Only the exact bytes of `templates.quit` (`QUIT`, not `quit`).
    Exact,
    /// Any upper/lower case (`quit`, `Quit`, `QUIT`).
    AnyCase,
}

impl std::fmt::Display for QuitMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QuitMatch::Exact => "exact",
            QuitMatch::AnyCase => "any-case",
        })
    }
}

/// The preset of one flavor (see [`super::Templates`]).
pub struct Preset {
    /// Command sent by the heartbeat; `{nonce}` must come back.
    pub probe: &'static str,
    /// The heartbeat's login confirmation, reading the game's process
    /// identity after `{nonce}`; empty where the server has none.
    pub identity: &'static str,
    /// Login line; `{verb}`, `{name}` (quoted if needed), `{password}`.
    pub login: &'static str,
    /// Sent after a (re-)login; `{nonce}` must come back.
    pub marker: &'static str,
    /// Regexes: a backend line matching one means the login worked.
    pub login_success: &'static [&'static str],
    /// Regexes: a backend line matching one means the login failed. Includes
    /// the throttle lines ([`Preset::refused`]), so no marker goes to a
    /// connect screen that answered with one.
    pub login_failure: &'static [&'static str],
    /// Regexes: the game refused or throttled this connection or login
    /// because of its per-address limits (every player behind holdfast has
    /// holdfast's address). Worth a retry with backoff, not "log in by hand".
    pub refused: &'static [&'static str],
    /// Regexes with a `name` group: the game's connect / disconnect
    /// announcements about other players (to hold back during a re-login
    /// storm).
    pub announcements: &'static [&'static str],
    /// The game's quit command.
    pub quit: &'static str,
    /// How the quit command is matched at the connect screen.
    pub quit_connect: QuitMatch,
    /// How the quit command is matched once logged in.
    pub quit_logged_in: QuitMatch,
    /// Default client-ip mode.
    pub client_ip: ClientIpMode,
    /// Default `client_ip.command`.
    pub client_ip_command: &'static str,
    /// Before logging in on a new connection, send the marker until it comes
    /// back (see [`super::Templates::sync`]).
    pub sync: bool,
    /// Default `heartbeat.interval`: a rate the game's per-connection
    /// command quota sustains.
    pub probe_interval: Duration,
    /// How long after the TCP connect the game may take to show its connect
    /// screen, on top of `heartbeat.timeout`.
    pub banner_wait: Duration,
    /// `connect <name>` with no password is a login (the game lets a
    /// character without a password in).
    pub passwordless: bool,
    /// `create <name> <password>` at the connect screen logs the new
    /// character in (re-logins then use `connect`).
    pub create_logs_in: bool,
    /// Glob patterns (case-insensitive) of login names that are the game's
    /// guest logins: shared, never resumed (see `docs/resume.md`).
    pub guests: &'static [&'static str],
}

/// Guest login names of every preset flavor. TinyMUX: any name starting
/// with `guest_prefix` (default "Guest", conf.cpp:74) makes a fresh guest
/// (net.cpp:2218-2262). TinyMUSH: any name starting with `guest_basename`
/// (default "Guest", conf_core.c:52), a fresh `Guest<n>` (netcommon.c:2307,
/// mguests.c:250). PennMUSH: characters with the Guest power, password not
/// checked (player.c:291), another free guest picked when taken
/// (bsd.c:5483-5513); conventionally named Guest. TeenyMUSH: the one
/// character `guest`, any password (teenymush.pl:6060). Evennia: `connect
/// guest` with GUEST_ENABLED, accounts Guest1..Guest9 (settings_default.py
/// GUEST_LIST; commands/default/unloggedin.py).
const GUESTS: &[&str] = &["guest*"];

/// TinyMUSH/TinyMUX/TeenyMUSH's bad-login answer: TinyMUX `net.cpp:2175`
/// (`connect_fail`), TinyMUSH `netcommon.c:2281`, TeenyMUSH
/// `teenymush.pl:6130-6134`.
const MUSH_FAILURE: &str = r"^Either that player does not exist, or has a different password\.";

/// TinyMUX 2.14's failed-login throttle, `net.cpp:2295-2298`: once
/// `login_fail_limit` (10) failures per `login_fail_period` (60 s) came from
/// one address (conf.cpp:146-147), every login from it gets this, before
/// the password is even checked, and the socket stays open.
const MUX_FAIL_THROTTLE: &str = r"^Too many failed login attempts from your address";
/// TinyMUX 2.14's `max_preauth_sitecons` (default 2, conf.cpp:169): a third
/// connection from one address while two wait at the connect screen gets
/// this and is closed, `ganl_adapter.cpp:893-950`.
const MUX_PREAUTH: &str = r"^Too many connections from your address are waiting to log in";
/// TinyMUX 2.14's `max_lastsite_cnt` (40 per `min_con_attempt` 60 s,
/// conf.cpp:161-162): over it, this and a close, `ganl_adapter.cpp:853-872`
/// (older 2.14 builds closed without a word).
const MUX_RATE: &str = r"^Too many connections from your address\.";

/// PennMUSH's failed-login throttle, `player.c:83-84`, sent by
/// `check_connect` (`bsd.c:4401-4403`) once `connect_fail_limit` (10 in ten
/// minutes, conf.c:1191) failures came from one address.
const PENN_FAIL_THROTTLE: &str = r"^This IP address has failed too many times";

/// Connect/disconnect announcements of the MUSH family. TinyMUX
/// `engine_com.cpp:4856,4876,5044` ("%s has connected." / "has
/// reconnected." / "has disconnected."), TinyMUSH `netcommon.c:1327,1340,
/// 1428`, PennMUSH `bsd.c:5923-5928,6128` (also "has HIDDEN-connected." and
/// "has partially disconnected."), TeenyMUSH `teenymush.pl:6199-6208`
/// ("has re-connected.").
const MUSH_ANNOUNCE: &[&str] = &[
    r"^(?P<name>.+?) has (?:HIDDEN-)?(?:re-?)?connected\.$",
    r"^(?P<name>.+?) has (?:partially )?disconnected\.$",
];

/// The preset for `flavor`.
pub fn preset(flavor: Flavor) -> Preset {
    match flavor {
        // TinyMUSH 4.0.
        Flavor::Tinymush => Preset {
            probe: "think {nonce}",
            // `starttime()`: `mushstate.start_time` as ctime
            // (funmisc_time.c:871-878), set at the first start
            // (game.c:3369) and read back after `@restart` from the
            // restart db (db_objects.c:1494), which keeps the connections.
            identity: "think {nonce} [starttime()]",
            login: "{verb} {name} {password}",
            marker: "think {nonce}",
            login_success: &[],
            login_failure: &[MUSH_FAILURE],
            // TinyMUSH has no per-address throttle: a socket is closed
            // after `retry_limit` (3, conf_core.c:113) bad passwords.
            refused: &[],
            announcements: MUSH_ANNOUNCE,
            quit: "QUIT",
            // Connect screen: `hashfind(command, &logout_cmd_htab)`
            // (netcommon.c:2773), a `strcmp` table (htab.c:198) holding
            // "QUIT" (nametabs.c:609): exact case only. Logged in: "quit"
            // in the command table (nametabs.c:744), looked up lower-cased
            // (command_core.c:948): any case.
            quit_connect: QuitMatch::Exact,
            quit_logged_in: QuitMatch::AnyCase,
            // No @remotehost, no PROXY protocol, no trusted socket: the
            // game sees every player at holdfast's address.
            client_ip: ClientIpMode::None,
            client_ip_command: "@remotehost {ip}",
            sync: false,
            // Quota: `cmd_quota_max` 100, +`cmd_quota_incr` 1 per 1000 ms
            // `timeslice` (conf_core.c:248-250), and `update_quotas` keeps
            // the remainder of a slice (netcommon.c:79-98): one probe every
            // 2 s is always sustained.
            probe_interval: Duration::from_secs(2),
            // `welcome_user` right after accept (bsd_connection.c:210).
            banner_wait: Duration::from_millis(500),
            // check_pass accepts any password when the character has none
            // (player.c:235-265); `cr...` creates and connects (netcommon.c:2485).
            passwordless: true,
            create_logs_in: true,
            guests: GUESTS,
        },
        // TinyMUX 2.14.
        Flavor::Tinymux => Preset {
            probe: "think {nonce}",
            // `startsecs()`: `mudstate.start_time` in seconds
            // (engine/functions.cpp:12331-12343); `@restart` keeps it and
            // the connections, changing only `restart_time`
            // (engine_com.cpp:3874-3893).
            identity: "think {nonce} [startsecs()]",
            login: "{verb} {name} {password}",
            marker: "think {nonce}",
            login_success: &[],
            login_failure: &[MUSH_FAILURE, MUX_FAIL_THROTTLE, MUX_PREAUTH, MUX_RATE],
            refused: &[MUX_FAIL_THROTTLE, MUX_PREAUTH, MUX_RATE],
            announcements: MUSH_ANNOUNCE,
            quit: "QUIT",
            // Connect screen: `g_logout_cmd_htab.find` on the raw bytes of
            // the first word (net.cpp:2766-2768) over a table holding "QUIT"
            // (net.cpp:1756): exact case. Logged in: the "quit" command
            // (command.cpp:755) in the case-insensitive command table.
            quit_connect: QuitMatch::Exact,
            quit_logged_in: QuitMatch::AnyCase,
            client_ip: ClientIpMode::None,
            client_ip_command: "@remotehost {ip}",
            sync: false,
            // Quota: 100 commands, +1 per whole 1 s `timeslice`
            // (conf.cpp:323-325, session.cpp:60-82), but the main loop
            // stamps every pass as the last slice (ganl_adapter.cpp:
            // 2887-2893), so a loop that wakes more than once a second
            // never refills and a long-lived probe connection runs dry
            // after 100 probes. The probe replaces a connection that stops
            // answering; 5 s makes that happen at most every ~8 minutes.
            probe_interval: Duration::from_secs(5),
            // The banner waits `proto_detect_window` (500 ms, conf.cpp:180;
            // ganl_adapter.cpp:261-287).
            banner_wait: Duration::from_secs(1),
            // check_pass needs a stored hash (player.cpp:825-853); `cr...`
            // creates and connects (net.cpp:2494-2580).
            passwordless: false,
            create_logs_in: true,
            guests: GUESTS,
        },
        // TeenyMUSH (Perl).
        Flavor::Teenymush => Preset {
            probe: "think {nonce}",
            // Not checked in its source: coverage only.
            identity: "",
            login: "{verb} {name} {password}",
            marker: "think {nonce}",
            login_success: &[],
            login_failure: &[MUSH_FAILURE],
            refused: &[],
            announcements: MUSH_ANNOUNCE,
            quit: "QUIT",
            // Both phases: `lookup_command` lower-cases the word
            // (teenymush.pl:20215-20222) and the tables hold "quit"
            // (teenymush.pl:708, 747). At the connect screen prefixes
            // ("q", "qu") quit too (teenymush.pl:870-876); logged in they
            // are removed (teenymush.pl:864-866).
            quit_connect: QuitMatch::AnyCase,
            quit_logged_in: QuitMatch::AnyCase,
            // `@remotehostname <ip>` on the connect screen
            // (teenymush.pl:712), honoured only from the address hard-coded
            // in `cmd_remotehost` (teenymush.pl:989): the game side must put
            // holdfast's address there.
            client_ip: ClientIpMode::Command,
            client_ip_command: "@remotehostname {ip}",
            sync: false,
            probe_interval: Duration::from_secs(2),
            banner_wait: Duration::from_millis(500),
            // `connect <name>` parses without a password (teenymush.pl:
            // 6120-6123); `create` (and `c`, `cr`...) creates then connects
            // (teenymush.pl:707, 868-876, 5707-5731).
            passwordless: true,
            create_logs_in: true,
            guests: GUESTS,
        },
        Flavor::Pennmush => Preset {
            probe: "think {nonce}",
            // `starttime()` is `globals.first_start_time` (funmisc.c:1166-
            // 1169), set once (game.c:737-738) and carried over
            // `@shutdown/reboot` (bsd.c:7432, 7590), which keeps every
            // connection; `restarttime()` would change at a reboot.
            identity: "think {nonce} [starttime()]",
            login: "{verb} \"{name}\" {password}",
            marker: "think {nonce}",
            // player.c:670.
            login_success: &[r"^Last connect was from "],
            // player.c:234-235, 248, 299, and the throttle.
            login_failure: &[
                r"^That is not the correct password\.",
                r"^There is no player with that name\.",
                MUSH_FAILURE,
                PENN_FAIL_THROTTLE,
            ],
            refused: &[PENN_FAIL_THROTTLE],
            announcements: MUSH_ANNOUNCE,
            quit: "QUIT",
            // `!strcmp(command, QUIT_COMMAND)` (bsd.c:4202, conf.h:54) runs
            // before any game command, in both phases: exact case only.
            quit_connect: QuitMatch::Exact,
            quit_logged_in: QuitMatch::Exact,
            client_ip: ClientIpMode::None,
            client_ip_command: "@remotehost {ip}",
            sync: false,
            // COMMAND_BURST_SIZE 100, COMMANDS_PER_SECOND 1 prorated by the
            // millisecond (conf.h:89-100): one probe every 2 s is sustained.
            probe_interval: Duration::from_secs(2),
            // The connect screen comes after two one-second timers, the
            // telnet test then `welcome_user` (bsd.c:2373, 2600-2606).
            banner_wait: Duration::from_millis(2500),
            // No password attribute: any password (player.c:169-175);
            // `create` logs the new player in (bsd.c:4490-4560).
            passwordless: true,
            create_logs_in: true,
            guests: GUESTS,
        },
        Flavor::Evennia => Preset {
            probe: "{nonce}",
            // No start time a player may read: coverage only.
            identity: "",
            login: "{verb} {name} {password}",
            marker: "{nonce}",
            login_success: &[r"^You become "],
            login_failure: &[
                r"^Username and/or password is incorrect",
                // Evennia throttles failed logins per IP, and behind
                // holdfast every player has the proxy's address.
                r"^Too many login failures; please try again",
            ],
            refused: &[r"^Too many login failures; please try again"],
            // DefaultCharacter.at_post_puppet / at_post_unpuppet
            // (evennia/objects/objects.py) tell the room.
            announcements: &[
                r"^(?P<name>.+?) has entered the game\.$",
                r"^(?P<name>.+?) has left the game\.$",
            ],
            quit: "quit",
            // The command parser matches keys case-insensitively
            // (evennia/commands/cmdparser.py); `quit` is CmdUnconnectedQuit
            // (aliases q, qu) before login and CmdQuit after
            // (evennia/commands/default/unloggedin.py, account.py).
            quit_connect: QuitMatch::AnyCase,
            quit_logged_in: QuitMatch::AnyCase,
            client_ip: ClientIpMode::None,
            client_ip_command: "@remotehost {ip}",
            sync: true,
            probe_interval: Duration::from_secs(2),
            banner_wait: Duration::from_secs(1),
            // `connect` needs name and password, `create` only makes the
            // account and says to connect (commands/default/unloggedin.py).
            passwordless: false,
            create_logs_in: false,
            guests: GUESTS,
        },
        // Nothing assumed beyond the classic MUSH texts; set [templates].
        Flavor::Custom => Preset {
            probe: "think {nonce}",
            identity: "",
            login: "{verb} {name} {password}",
            marker: "think {nonce}",
            login_success: &[],
            login_failure: &[MUSH_FAILURE],
            refused: &[],
            announcements: &[],
            quit: "QUIT",
            quit_connect: QuitMatch::AnyCase,
            quit_logged_in: QuitMatch::AnyCase,
            client_ip: ClientIpMode::None,
            client_ip_command: "@remotehost {ip}",
            sync: false,
            probe_interval: Duration::from_secs(2),
            banner_wait: Duration::from_secs(1),
            passwordless: false,
            create_logs_in: false,
            guests: &[],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    const ALL: [Flavor; 6] = [
        Flavor::Tinymush,
        Flavor::Teenymush,
        Flavor::Tinymux,
        Flavor::Pennmush,
        Flavor::Evennia,
        Flavor::Custom,
    ];

    fn any(res: &[&str], line: &str) -> bool {
        res.iter().any(|r| Regex::new(r).unwrap().is_match(line))
    }

    #[test]
    fn refusals_are_failures_and_announcements_name_the_player() {
        for f in ALL {
            let p = preset(f);
            for r in p.refused {
                assert!(p.login_failure.contains(r), "{f}: {r}");
            }
            for r in p.announcements {
                let re = Regex::new(r).unwrap();
                assert!(re.capture_names().any(|n| n == Some("name")), "{f}: {r}");
            }
        }
    }

    #[test]
    fn real_server_lines_match() {
        let mux = preset(Flavor::Tinymux);
        for l in [
            "Too many failed login attempts from your address.  Please wait 42 seconds and try again.",
            "Too many connections from your address are waiting to log in.  Please try again in a moment.",
            "Too many connections from your address.  Please wait a moment and try again.",
        ] {
            assert!(any(mux.refused, l), "{l}");
            assert!(any(mux.login_failure, l), "{l}");
        }
        let penn = preset(Flavor::Pennmush);
        assert!(any(
            penn.refused,
            "This IP address has failed too many times. Please try again in 10 minutes."
        ));
        for (f, l, who) in [
            (Flavor::Tinymux, "Big Bob has connected.", "Big Bob"),
            (Flavor::Tinymush, "Alice has reconnected.", "Alice"),
            (Flavor::Pennmush, "Alice has HIDDEN-connected.", "Alice"),
            (
                Flavor::Pennmush,
                "Alice has partially disconnected.",
                "Alice",
            ),
            (Flavor::Teenymush, "Alice has re-connected.", "Alice"),
            (Flavor::Evennia, "Alice has entered the game.", "Alice"),
        ] {
            let p = preset(f);
            let got = p.announcements.iter().find_map(|r| {
                Regex::new(r)
                    .unwrap()
                    .captures(l)
                    .map(|c| c["name"].to_string())
            });
            assert_eq!(got.as_deref(), Some(who), "{f}: {l}");
        }
        assert!(!any(
            preset(Flavor::Tinymux).announcements,
            "Alice says, \"Bob has connected.\""
        ));
    }
}
