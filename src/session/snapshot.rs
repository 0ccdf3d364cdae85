//! A session's state written out and read back: what crosses to a new
//! holdfast process on an upgrade (see [`crate::upgrade`]).
//!
//! Everything in the [`Core`] that matters goes: the phase, the user and
//! the credentials, the telnet option memory and negotiation state, the
//! input splitter's partial line and telnet parser position, the queued
//! lines, a login watch (with the output it held back), the game's telnet
//! parser position and a partial line held back for its rest, a cluster
//! pause with the output it kept, and the
//! timers as durations from now. What does not
//! go:
//!
//! * The player's MCCP2 zlib stream. The driver ends it cleanly before the
//!   snapshot ([`crate::telnet::Outbound::stop`] and a flush), the
//!   snapshot records that it was on, and the new process offers MCCP2
//!   again ([`resume_bytes`]).
//! * A game's compressed stream (`telnet.backend_mccp`, off by default):
//!   zlib's inflate state cannot be written out, so such a session refuses
//!   the snapshot ([`SnapError::GameCompressed`]) and the whole upgrade is
//!   refused with that reason (nothing is half handed over).
//! * The input flood limiter: it restarts full.
//!
//! A player's connection that needs more than its socket to go on (a
//! plain WebSocket: its subprotocol, a message it was in the middle of)
//! carries that too ([`PlayerWas`]).
//!
//! A detached session (its player's link had dropped, see
//! [`super::detach`]) also carries its time away, the time it is still to
//! be kept and its playback ([`DetachedWas`]).
//!
//! Bytes for the player that a write to a slow reader had not got out when
//! the upgrade asked (`unsent`) cross too, to be written first.
//!
//! The encoding is versioned ([`VERSION`]): [`MAGIC`], the length of a
//! JSON document, the document, then a binary tail that holds the large
//! byte strings (the playback, the unsent output) as they are; the
//! document names them by offset and length ([`blob`], with the other
//! field helpers in [`super::encoding`]). Before version 3 a state was
//! the JSON document alone with every byte a JSON number (about 3.6 bytes
//! each); that is still read. It holds the password, so it lives in a
//! zeroizing buffer, is sent only over the upgrade's private socket and is
//! never written to disk.

use std::collections::VecDeque;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::action::{Action, Actions};
use super::core::{Core, Game};
use super::encoding::{abs, blob, creds, rel, Rel};
use super::input::Input;
use super::playback::Playback;
use super::rare::{Busy, Pause, Rare};
use super::watch::Watch;
use crate::config::Config;
use crate::login::Credentials;
use crate::state::Phase;
use crate::telnet::{Inbound, Policy};
use crate::transport::PlayerWas;

/// Version of the snapshot encoding. 3: a binary tail after the JSON
/// document holds the playback and the unsent output ([`blob`]). 2: a
/// player's connection may carry state of its own (`player`). Versions 1
/// and 2 (JSON alone) are read too; any other is refused.
pub const VERSION: u32 = 3;
/// What a version-3 state starts with (a JSON document never does).
pub const MAGIC: &[u8; 4] = b"HFS\x03";
/// The oldest version read.
const OLDEST: u32 = 1;

/// Why a session's state cannot be written out or read back.
#[derive(Debug, thiserror::Error)]
pub enum SnapError {
    /// The game compresses its output: zlib state cannot cross.
    #[error(
        "session {0}: the game's MCCP2 stream (telnet.backend_mccp) cannot be handed to a new process"
    )]
    GameCompressed(u64),
    /// The player's MCCP2 stream was not ended before the snapshot.
    #[error("session {0}: the player's MCCP2 stream is still running")]
    PlayerCompressed(u64),
    /// A snapshot of another version.
    #[error("snapshot version {0}, this holdfast reads {OLDEST} to {VERSION}")]
    Version(u32),
    /// Not a snapshot (where it went wrong; never serde's message, which
    /// may quote a value, and a value may be a password).
    #[error("bad snapshot: {0}")]
    Decode(String),
}

impl From<serde_json::Error> for SnapError {
    fn from(e: serde_json::Error) -> SnapError {
        SnapError::Decode(format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    }
}

/// The version alone, read before the rest.
#[derive(Deserialize)]
struct Version {
    v: u32,
}

#[derive(Serialize)]
struct CredsOut<'a> {
    #[serde(with = "creds")]
    c: &'a Credentials,
}

#[derive(Serialize)]
struct GameOut<'a> {
    name: &'a str,
    parser: &'a Inbound,
    watch: Option<&'a Watch>,
    connected_at: Rel,
    closed: bool,
    /// A partial line held back for its rest (`core::Tail`).
    #[serde(skip_serializing_if = "Option::is_none")]
    tail: Option<&'a [u8]>,
}

#[derive(Serialize)]
struct Out<'a> {
    v: u32,
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    input: &'a Input,
    telnet: &'a Policy,
    mccp_was_on: bool,
    at_line_start: bool,
    game: Option<GameOut<'a>>,
    connecting: bool,
    user: Option<&'a str>,
    creds: Option<CredsOut<'a>>,
    phase: Phase,
    held_since: Option<Rel>,
    relogin_at: Option<(Rel, bool)>,
    login_deadline: Option<Rel>,
    quit_sent: bool,
    queue: Vec<(Rel, &'a [u8])>,
    epoch: u64,
    was_held: bool,
    last_backend: Option<&'a str>,
    /// Lazy connect: the cached connect screen the player has (no game
    /// connection yet).
    lazy: Option<&'a [u8]>,
    /// Refusals in a row while backing off (the player was told).
    busy: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detached: Option<&'a DetachedWas>,
    #[serde(skip_serializing_if = "Option::is_none")]
    player: Option<&'a PlayerWas>,
    #[serde(with = "blob", skip_serializing_if = "<[u8]>::is_empty")]
    unsent: &'a [u8],
    /// Paused by the cluster: since when, and the output kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    paused: Option<(Rel, &'a Playback)>,
}

#[derive(Deserialize)]
struct CredsIn {
    #[serde(with = "creds")]
    c: Credentials,
}

#[derive(Deserialize)]
struct GameIn {
    name: String,
    parser: Inbound,
    watch: Option<Box<Watch>>,
    connected_at: Rel,
    closed: bool,
    #[serde(default)]
    tail: Option<Vec<u8>>,
}

/// The snapshot read back (its `v` was checked through [`Version`]).
#[derive(Deserialize)]
struct In {
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    input: Input,
    telnet: Policy,
    mccp_was_on: bool,
    at_line_start: bool,
    game: Option<GameIn>,
    connecting: bool,
    user: Option<String>,
    creds: Option<CredsIn>,
    phase: Phase,
    held_since: Option<Rel>,
    relogin_at: Option<(Rel, bool)>,
    login_deadline: Option<Rel>,
    quit_sent: bool,
    queue: Vec<(Rel, Vec<u8>)>,
    epoch: u64,
    was_held: bool,
    last_backend: Option<String>,
    #[serde(default)]
    lazy: Option<Vec<u8>>,
    #[serde(default)]
    busy: Option<u32>,
    #[serde(default)]
    detached: Option<DetachedWas>,
    #[serde(default)]
    player: Option<PlayerWas>,
    #[serde(default, with = "blob")]
    unsent: Vec<u8>,
    #[serde(default)]
    paused: Option<(Rel, Playback)>,
}

/// Counts bytes, to size the zeroizing buffer before the real write (a
/// growing `Vec` would leave copies of the password in freed memory).
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0 += b.len();
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes `core` out. `mccp_was_on`: the player's MCCP2 stream was running
/// and has been ended by the driver (the new process offers it again).
/// `player`: what the player's connection needs besides its socket. The
/// player's stream must be plain by now, and the game's must not be
/// compressed. `unsent`: bytes for the player as they go on the wire, to
/// be written before anything else.
pub fn snapshot(
    core: &Core,
    mccp_was_on: bool,
    player: Option<&PlayerWas>,
    unsent: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SnapError> {
    write(core, mccp_was_on, None, player, unsent)
}

/// Writes a detached session out: its core (the player's telnet output
/// state must be plain; there is no player) and its time away and
/// playback.
pub fn snapshot_detached(core: &Core, d: &DetachedWas) -> Result<Zeroizing<Vec<u8>>, SnapError> {
    write(core, false, Some(d), None, &[])
}

fn write(
    core: &Core,
    mccp_was_on: bool,
    detached: Option<&DetachedWas>,
    player: Option<&PlayerWas>,
    unsent: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SnapError> {
    if core.telnet.out.compressing() || core.telnet.out.has_pending() {
        return Err(SnapError::PlayerCompressed(core.id));
    }
    if core.game.as_ref().is_some_and(|g| g.parser.compressed()) {
        return Err(SnapError::GameCompressed(core.id));
    }
    let now = Instant::now();
    let rare = core.rare();
    let out = Out {
        v: VERSION,
        id: core.id,
        peer: core.peer.get(),
        local: core.local.get(),
        input: &core.input,
        telnet: &core.telnet,
        mccp_was_on,
        at_line_start: core.at_line_start,
        game: core.game.as_ref().map(|g| GameOut {
            name: &g.name,
            parser: &g.parser,
            watch: g.watch.as_deref(),
            connected_at: rel(g.connected_at, now),
            closed: g.closed,
            tail: g.tail.as_ref().map(|t| &t.text[..]),
        }),
        connecting: core.connecting,
        user: core.user.as_deref(),
        creds: core.creds.as_ref().map(|c| CredsOut { c }),
        phase: core.phase,
        held_since: rare.held_since.map(|t| rel(t, now)),
        relogin_at: rare.relogin_at.map(|(t, paced)| (rel(t, now), paced)),
        login_deadline: core.login_deadline.map(|t| rel(t, now)),
        quit_sent: core.quit_sent,
        queue: rare
            .queue
            .iter()
            .map(|(t, l)| (rel(*t, now), l.as_slice()))
            .collect(),
        epoch: core.epoch,
        was_held: core.was_held,
        last_backend: core.last_backend.as_deref(),
        lazy: core.lazy.as_deref(),
        busy: rare.busy.as_ref().map(|b| b.tries),
        detached,
        player,
        unsent,
        paused: core.pause_state().map(|p| (rel(p.since, now), &p.kept)),
    };
    // Counted first, so the zeroizing buffer is the right size at once.
    let (r, tail) = blob::writing(|| {
        let mut n = Count(0);
        serde_json::to_writer(&mut n, &out).map(|()| n.0)
    });
    let size = MAGIC.len() + 4 + r? + tail.len();
    drop(tail);
    let mut buf = Zeroizing::new(Vec::with_capacity(size));
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&[0; 4]);
    let (r, tail) = blob::writing(|| serde_json::to_writer(&mut *buf, &out));
    r?;
    let json = u32::try_from(buf.len() - MAGIC.len() - 4)
        .map_err(|_| SnapError::Decode("a state document over 4 GiB".into()))?;
    buf[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&json.to_be_bytes());
    buf.extend_from_slice(&tail);
    Ok(buf)
}

/// A session read back: its core, and whether its player had MCCP2.
pub struct Restored {
    /// The session's core, as it was.
    pub core: Core,
    /// The player's MCCP2 stream was ended for the handover.
    pub mccp_was_on: bool,
    /// It was detached (its player's link had dropped): for how long, for
    /// how much longer, and what the game said meanwhile.
    pub detached: Option<DetachedWas>,
    /// What the player's connection needs besides its socket, if anything
    /// (none: plain TCP).
    pub player: Option<PlayerWas>,
    /// Bytes for the player, as they go on the wire, that a write had not
    /// got out: written before anything else.
    pub unsent: Vec<u8>,
}

/// A detached session's own state ([`super::detach`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct DetachedWas {
    /// How long its player had been away, ms.
    pub away_ms: u64,
    /// How long it was still to be kept, ms.
    pub left_ms: u64,
    /// The game's output kept for the player.
    pub playback: Playback,
    /// Set when the upgrade itself detached it (a TLS player told to
    /// reconnect): the new process publishes `session.detached`
    /// with this reason.
    #[serde(default)]
    pub why: Option<String>,
    /// Its player had last been told the game is down (see
    /// `detach::Away::told_down`); absent from older processes' states.
    #[serde(default)]
    pub told_down: bool,
}

/// Reads a session back from [`snapshot`]'s bytes.
pub fn restore(bytes: &[u8], cfg: &Config) -> Result<Restored, SnapError> {
    let v = match bytes.strip_prefix(MAGIC) {
        Some(rest) => {
            let short = || SnapError::Decode("short state".into());
            let len = rest.get(..4).ok_or_else(short)?;
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let json = rest.get(4..4 + len).ok_or_else(short)?;
            let ver: Version = serde_json::from_slice(json)?;
            if ver.v < 3 || ver.v > VERSION {
                return Err(SnapError::Version(ver.v));
            }
            blob::reading(&rest[4 + len..], || serde_json::from_slice::<In>(json))?
        }
        None => {
            let ver: Version = serde_json::from_slice(bytes)?;
            if !(OLDEST..3).contains(&ver.v) {
                return Err(SnapError::Version(ver.v));
            }
            serde_json::from_slice::<In>(bytes)?
        }
    };
    let now = Instant::now();
    let mut core = Core::new(v.id, v.peer, v.local, cfg, v.epoch);
    core.input = v.input;
    core.telnet = v.telnet;
    core.at_line_start = v.at_line_start;
    core.game = v.game.map(|g| {
        Box::new(Game {
            name: g.name.into(),
            parser: g.parser,
            watch: g.watch,
            connected_at: abs(g.connected_at, now),
            closed: g.closed,
            seen_output: true,
            await_banner: false,
            skip: None,
            // A screen being read when the process changed is read again by
            // the next connection that shows one.
            capture: None,
            // Its rest may be in the game's socket: it gets the usual wait.
            tail: g.tail.map(|text| {
                Box::new(super::core::Tail {
                    text,
                    until: now + super::relay::TAIL_WAIT,
                })
            }),
        })
    });
    core.connecting = v.connecting;
    core.creds = v.creds.map(|c| Box::new(c.c));
    // One string for the user and the credentials' name, as a login makes.
    core.user = v.user.map(|u| match &core.creds {
        Some(c) if *c.name == *u => c.name.clone(),
        _ => u.into(),
    });
    core.phase = v.phase;
    let rare = Rare {
        held_since: v.held_since.map(|r| abs(r, now)),
        relogin_at: v.relogin_at.map(|(r, paced)| (abs(r, now), paced)),
        queue: v
            .queue
            .into_iter()
            .map(|(r, l)| (abs(r, now), l))
            .collect::<VecDeque<_>>(),
        busy: v.busy.map(|tries| Busy { tries, told: true }),
        paused: v.paused.map(|(since, kept)| {
            Box::new(Pause {
                since: abs(since, now),
                kept,
            })
        }),
        ..Rare::EMPTY
    };
    core.login_deadline = v.login_deadline.map(|r| abs(r, now));
    core.quit_sent = v.quit_sent;
    core.was_held = v.was_held;
    core.last_backend = v.last_backend.map(Into::into);
    core.lazy = v.lazy.map(Into::into);
    *core.rare_mut() = rare;
    core.tidy();
    Ok(Restored {
        core,
        mccp_was_on: v.mccp_was_on,
        detached: v.detached,
        player: v.player,
        unsent: v.unsent,
    })
}

/// What a session's player gets when it resumes after a handover (in the
/// new process, or in the old one when the upgrade failed): the MCCP2
/// offer again if it had MCCP2, and `notice` on a line of its own if not
/// empty.
pub fn resume_bytes(core: &mut Core, mccp_was_on: bool, notice: &str) -> Vec<u8> {
    let mut v = Vec::new();
    if mccp_was_on {
        core.telnet.reoffer_mccp(&mut v);
    }
    if !notice.is_empty() {
        let mut out: Actions = Vec::new();
        core.notice(notice, &mut out);
        for a in out {
            if let Action::Player(b) | Action::Notice(b) = a {
                v.extend_from_slice(&b);
            }
        }
    }
    v
}
