//! `--mssp-penn`: MSSP offered the way PennMUSH 1.8.8 offers it (its
//! `bsd.c`), unlike `--mssp`, which offers it at once:
//! - a new connection gets `IAC DO LINEMODE` (PennMUSH's telnet test);
//! - its offers (`WILL MSSP` here) come only once the client answered with
//!   any telnet command, so a client that never speaks telnet (holdfast's
//!   probe until issue 27) never sees the offer;
//! - `DO MSSP` is answered each time with `NAME`, `PLAYERS`, `UPTIME`,
//!   `PORT` and `CODEBASE`, where `PLAYERS` counts every logged-in
//!   connection (the proxy's heartbeat too) and `PORT` is the port the
//!   game listens on, as PennMUSH's `report_mssp` says them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc::UnboundedSender;

use crate::game::{Game, Out};
use crate::telnet::{self, Event, IAC};

const OPT_LINEMODE: u8 = 34;
const OPT_MSSP: u8 = 70;

static ON: AtomicBool = AtomicBool::new(false);
static PORT: AtomicU16 = AtomicU16::new(0);
static STARTED: OnceLock<u64> = OnceLock::new();
/// Connections that were sent the offers.
static OFFERED: Mutex<Option<HashSet<u64>>> = Mutex::new(None);

/// `--mssp-penn` was given.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
    STARTED.get_or_init(now);
}

/// The first TCP port the game listens on (its `PORT`).
pub fn listening_on(port: u16) {
    let _ = PORT.compare_exchange(0, port, Ordering::Relaxed, Ordering::Relaxed);
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a new telnet connection gets first.
pub fn greeting() -> Vec<u8> {
    if ON.load(Ordering::Relaxed) {
        vec![IAC, telnet::DO, OPT_LINEMODE]
    } else {
        Vec::new()
    }
}

/// Looks at a player's input event; true if it was handled here (`DO
/// MSSP`), false to go on as usual.
pub fn input(game: &Game, id: u64, tx: &UnboundedSender<Out>, e: &Event) -> bool {
    if !ON.load(Ordering::Relaxed) {
        return false;
    }
    let send = |v: Vec<u8>| {
        let _ = tx.send(Out::Bytes(v));
    };
    let telnet = !matches!(e, Event::Line(_));
    if telnet {
        let mut offered = OFFERED.lock().unwrap_or_else(|e| e.into_inner());
        if offered.get_or_insert_with(HashSet::new).insert(id) {
            send(vec![IAC, telnet::WILL, OPT_MSSP]);
        }
    }
    if let Event::Do(OPT_MSSP) = e {
        send(answer(game));
        return true;
    }
    matches!(e, Event::Will(OPT_LINEMODE) | Event::Wont(OPT_LINEMODE))
}

fn answer(game: &Game) -> Vec<u8> {
    let players = game
        .lock()
        .sess
        .values()
        .filter(|s| s.player.is_some())
        .count();
    let mut v = vec![IAC, telnet::SB, OPT_MSSP];
    for (k, val) in [
        ("NAME", "FakeMUSH".to_string()),
        ("PLAYERS", players.to_string()),
        ("UPTIME", STARTED.get_or_init(now).to_string()),
        ("PORT", PORT.load(Ordering::Relaxed).to_string()),
        ("CODEBASE", "fakemush 1.0".to_string()),
    ] {
        v.push(1);
        v.extend_from_slice(k.as_bytes());
        v.push(2);
        v.extend_from_slice(val.as_bytes());
    }
    v.extend_from_slice(&[IAC, telnet::SE]);
    v
}
