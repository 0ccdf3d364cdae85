//! One player's session: the state machine that relays, holds and logs the
//! player back in, and the driver that feeds it from the sockets.
//!
//! ```text
//!            connect ok                 backend closed, probe says dead
//!  (start) ───────────▶ Relaying ─────────────────────────────────────▶ Held
//!     │                 ▲   │  backend marked down / failover            │
//!     │ backend down    │   └──────────────────────────────────────────▶ │
//!     └───────────────▶ │                                                │
//!                       │   marker back        connect + login + marker  │
//!                       └──────────── Relogin ◀──────────────────────────┘
//! ```
//!
//! | file | its one job |
//! | --- | --- |
//! | `core` | the session as plain data: its parts, notices, announcements ([`Core`]) |
//! | `rare` | the part of the state only some sessions have, some of the time: boxed |
//! | `action` | what the core is given for a step and what it asks of the driver ([`Ctx`], [`Action`]) |
//! | `timer` | the session's deadlines: the next one, and what happens when one passes |
//! | `player` | the player's lines: flood limit, spoof filter, quit and login capture, the queue |
//! | `resume` | which sessions are kept for a dropped player, and taking one over |
//! | `relay` | the game's output on its way to the player |
//! | `held` | outages: the probe's verdict, holding, moving, pacing the way back |
//! | `relogin` | connecting, logging back in, the end of a login watch |
//! | `lazy` | lazy connect from the cached connect screen; waiting for the game's own |
//! | `pause` | a fenced cluster member's sessions: paused, kept, then on or moved |
//! | `busy` | the game refusing holdfast's address: backoff; its announcements of re-logins held back |
//! | `watch` | reading the game's output to confirm a login |
//! | `input` | the player's bytes cut into lines and telnet items |
//! | `mssp` | MSSP answered by holdfast itself, also while the game is down |
//! | `playback` | the game's output kept, bounded, for a player who is away or paused |
//! | `driver` | the sockets, one `select!`, each event fed to the core |
//! | `wait` | what the loop waits on, as polls that keep nothing in the task |
//! | `apply` | the core's actions carried out in order |
//! | `write` | writes to the player and the game: timeouts, slow readers, an upgrade's ask |
//! | `stopping` | the writes held back for an upgrade's ask (a leaf the loop and `write` share) |
//! | `finish` | how a session ends: owed quits, last notices, the close event |
//! | `detach` | a session kept for a player whose link dropped; resuming |
//! | `away` | a detached session's player side: since when, the playback (a leaf the loop and `detach` share) |
//! | `handover` | a session's part in an upgrade: stopping at a clean point, starting again |
//! | `snapshot` | a session's state written out and read back for an upgrade |
//! | `encoding` | how that state's fields are written: byte strings in its tail, times, credentials |
//! | `transport` | the player's connection as the driver sees it (re-exported from [`crate::transport`]) |

/// A session's log line, in a `session{id peer}` span made for the line:
/// `slog!(info, core, "...")` where `core` is the session's
/// [`core::Core`] (or anything with its `id` and `peer`).
///
/// The span is not kept for the session's life: `tracing`'s registry
/// keeps a slot and the formatted fields of every live span, ~340 bytes
/// of each idle session (issue 25). A line reads as it did when the
/// session's task ran in a span of its own.
macro_rules! slog {
    (error, $c:expr, $($a:tt)+) => { slog!(@ ERROR, $c, $($a)+) };
    (warn, $c:expr, $($a:tt)+) => { slog!(@ WARN, $c, $($a)+) };
    (info, $c:expr, $($a:tt)+) => { slog!(@ INFO, $c, $($a)+) };
    (debug, $c:expr, $($a:tt)+) => { slog!(@ DEBUG, $c, $($a)+) };
    (trace, $c:expr, $($a:tt)+) => { slog!(@ TRACE, $c, $($a)+) };
    (@ $lvl:ident, $c:expr, $($a:tt)+) => {
        if tracing::enabled!(tracing::Level::$lvl) {
            let (id, peer) = (&$c.id, &$c.peer);
            let span = tracing::info_span!("session", id, peer = %peer);
            tracing::event!(parent: &span, tracing::Level::$lvl, $($a)+);
        }
    };
}

mod action;
mod apply;
mod away;
mod busy;
pub mod core;
pub mod detach;
mod driver;
mod encoding;
mod finish;
mod handover;
mod held;
pub mod input;
mod lazy;
pub mod mssp;
mod pause;
pub mod playback;
mod player;
mod rare;
mod relay;
mod relogin;
mod resume;
pub mod snapshot;
mod stopping;
mod timer;
mod wait;
mod watch;
mod write;

#[cfg(test)]
mod busy_tests;
#[cfg(test)]
mod detach_tests;
#[cfg(test)]
mod held_tests;
#[cfg(test)]
mod login_tests;
#[cfg(test)]
mod pause_tests;
#[cfg(test)]
mod relay_tests;
#[cfg(test)]
mod relogin_tests;
#[cfg(test)]
mod resume_tests;
#[cfg(test)]
mod screen_tests;
#[cfg(test)]
mod sizes_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tail_tests;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

pub use self::action::{Action, Actions, Ctx};
pub use self::core::{fmt_duration, Core};
use crate::clientip::peer_ip;
use crate::events::Event;
use crate::state::Shared;
/// The player's side of a session (moved to [`crate::transport`]).
pub use crate::transport;
pub use crate::transport::{CloseWhy, PlayerTransport};
pub use handover::resume;

/// Why a session ended (the `reason` of `session.close`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The player closed the connection.
    PlayerClosed,
    /// The player typed QUIT.
    Quit,
    /// The game closed the connection while alive (e.g. `@boot`).
    Booted,
    /// Not logged in within `login_timeout`.
    LoginTimeout,
    /// Held longer than `outage.max_hold`.
    MaxHold,
    /// The proxy is stopping.
    Shutdown,
    /// The player stopped reading (write timed out or failed).
    WriteFailed,
    /// The player kept sending faster than `limits.input_lines_per_sec`.
    Flood,
    /// Handed to a new holdfast process (an upgrade): nothing is closed.
    Handover,
    /// Detached, and the player did not come back within `resume.keep`
    /// (or `listen.max_detached` made room for a newer one).
    DetachExpired,
}

impl End {
    /// The close that ends a session for this end (a WebSocket's code).
    pub fn close_why(self) -> CloseWhy {
        match self {
            End::Quit => CloseWhy::Quit,
            End::Booted | End::Flood => CloseWhy::Booted,
            End::LoginTimeout | End::MaxHold => CloseWhy::Timeout,
            End::Shutdown => CloseWhy::Shutdown,
            End::PlayerClosed | End::WriteFailed | End::Handover | End::DetachExpired => {
                CloseWhy::Reconnect
            }
        }
    }

    /// The reason string used in events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            End::PlayerClosed => "disconnected",
            End::Quit => "quit",
            End::Booted => "booted",
            End::LoginTimeout => "login_timeout",
            End::MaxHold => "max_hold",
            End::Shutdown => "shutdown",
            End::WriteFailed => "write_failed",
            End::Flood => "flood",
            End::Handover => "upgrade",
            End::DetachExpired => "detach_expired",
        }
    }
}

/// Runs one player's session to its end. `local` is the proxy address the
/// player connected to.
///
/// The session is built here, before the task's future, so the task stores
/// it once rather than also the arguments it was made from: an idle
/// session's memory is mostly its task.
pub fn run<P: PlayerTransport>(
    shared: Arc<Shared>,
    id: u64,
    player: P,
    peer: SocketAddr,
    local: SocketAddr,
) -> impl std::future::Future<Output = ()> + Send {
    let cfg = shared.config();
    if cfg.client_ip.reverse_dns {
        shared.rdns.prefetch(peer_ip(&peer));
    }
    shared.events.emit(
        Event::new("session.open")
            .with("session", id)
            .with_opt("ip", cfg.bus.publish_ip.then(|| peer_ip(&peer).to_string())),
    );
    let epoch = shared.pool.borrow().epoch;
    let core = Core::new(id, peer, local, &cfg, epoch);
    slog!(info, core, "session open");
    let mut d = driver::Driver::new(shared, core, player);
    async move {
        let end = d.run().await;
        // Boxed: the session's end (kept detached, the last notices) moves
        // the driver into a future of its own; inline, every live session's
        // task kept room for that second driver (5.5 KiB instead of 2.3).
        Box::pin(d.after_run(end)).await;
    }
}
