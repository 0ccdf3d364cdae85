//! Upgrading holdfast without dropping anyone (`SIGUSR2`, bus request
//! `upgrade`).
//!
//! The old process starts the binary found at the path it was started
//! from, with the same arguments, and gives it one end of a private
//! `SOCK_SEQPACKET` socketpair as its stdin (the only descriptor that
//! crosses `exec` on purpose: no file on disk, no `unsafe` to name a raw
//! fd number). The new process reads its config and says `Hello` (or why
//! not, and exits 1). The old one stops accepting and sends the listeners
//! and its view of the pool; the new one checks them and says `Ready`.
//!
//! Then the sessions go **in batches** ([`batch::BATCH`] sessions, at most
//! [`batch::BATCH_BYTES`] of state): the old process asks a batch of
//! sessions to stop at a clean point ([`Enlisted`], [`Ask`]), sends their
//! states and duplicates of their sockets; the new process reads them
//! back, checks them, readies their tasks **without starting them** and
//! says `Took`. When every session has gone the old process says `Commit`
//! and exits 0 without a word to anyone; the new one starts every session
//! and accepts.
//!
//! ## An upgrade is a transaction
//!
//! At every moment exactly one process owns each session's state. Until
//! `Commit` that is the old process: a session handed over stays *parked*
//! there, holding its own copies of its sockets and its state as they
//! were when it stopped, and the new process neither reads nor writes its
//! sockets nor runs its core. `Commit` moves the ownership in one step:
//! the old process ends its parked sessions ([`Verdict::Commit`]; their
//! sockets stay open because the new process holds them) and the new one
//! starts them.
//!
//! If anything fails before `Commit` (the new process refuses a batch,
//! crashes, exits or stops answering within [`DEADLINE`]), the old process
//! kills it (`SIGKILL`), waits until it is gone, thaws every session and
//! accepts again. What it thaws is exactly what its players and games
//! last saw from it: no line is sent twice, a partial line goes on from
//! where it was, an MCCP2 stream it ended is offered again by the one
//! process that ended it, a login typed meanwhile is read (from the
//! kernel's buffer) by the process that will log it back in later.
//!
//! The price is that every session is still from its freeze to `Commit`,
//! so the handover is made short: the new process is started, reads its
//! config, takes the listeners and exchanges the head before the first
//! freeze; states are compact (the playback crosses as bytes, see
//! `crate::session::snapshot`); nothing a client does can hold it: TLS
//! and WebSocket handshakes in progress are closed when it begins
//! ([`Handover::stop_handshakes`]; the client connects again), and a
//! session whose write to a slow reader waits gives way to the ask and
//! crosses with the bytes it had not written yet (written first by
//! whichever process carries on). A new process that loses its old one
//! without a `Commit` (the old one crashed) starts what it took: the old
//! process thaws only after killing it, so, alive, it owns them.
//!
//! The new process has its signal handlers from its first moment; until
//! `Commit` a `SIGHUP` or `SIGTERM` is kept for after it and a `SIGUSR2`
//! is refused, each with a log line (`main.rs`).
//!
//! ## WebSocket and TLS players
//!
//! A plain WebSocket (`listen.ws_addrs`) crosses like a telnet player: its
//! socket goes with `SCM_RIGHTS`, and with its session's state go its
//! subprotocol, the telnet-to-text adapter's state and the bytes of a
//! message it had not finished sending. tungstenite keeps bytes it has
//! read but not parsed where they cannot be taken out, so a gate in front
//! of it (`crate::front`) gives it whole messages only: between two
//! messages it holds nothing, and the new process starts a new one over
//! the same socket.
//!
//! TLS connections (`tls_addrs`, and WebSocket over TLS, `wss_addrs`) do
//! not cross: rustls's session state cannot be handed to another process
//! in safe Rust (kernel TLS would be the way). Such a player is told to
//! connect again (`notices.upgrade_reconnect`), its connection is closed,
//! and a logged-in player's game session crosses detached
//! ([`crate::session::detach`]) for it to resume by logging in as before.
//! Their listeners cross like the others.
//!
//! | file | its one job |
//! | --- | --- |
//! | `fds` | `SCM_RIGHTS` with rustix, descriptor checks |
//! | `wire` | the messages: framing, descriptors |
//! | `doc` | the documents: head and batches, their format |
//! | `acceptors` | the accept loops: stopped, handed over, or started again |
//! | `old` | the old process: spawn, batches, commit, or kill and thaw |
//! | `batch` | the old process's batches: their size, the answers collected, a batch packed |
//! | `new` | the new process: check, take over batch by batch, confirm |
//! | `notify` | `--ready-file` and systemd's `NOTIFY_SOCKET` |

pub mod acceptors;
mod batch;
pub mod doc;
pub mod fds;
pub mod new;
pub mod notify;
pub mod old;
pub mod wire;

pub use crate::state::upgrade::{
    Ask, Enlisted, Handover, Origin, Parcel, Request, SessionParcel, Verdict,
};

use std::time::Duration;

/// How long the whole upgrade may take, from starting the new binary to
/// its confirmation; past it the old process carries on.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// The environment variable that tells a starting holdfast that its stdin
/// is the upgrade socket.
pub const ENV: &str = "HOLDFAST_UPGRADE";
/// For tests and benchmarks: sessions per batch ([`batch::BATCH`] unless
/// set; read by the old process).
pub const ENV_BATCH: &str = "HOLDFAST_UPGRADE_BATCH";
/// For tests only: the new process aborts (as a crash would) 200 ms after
/// confirming this many batches (its players may type meanwhile), to show
/// that the old one then carries on with every session from the state it
/// froze. Read by the new process; never set it in production.
pub const ENV_ABORT_AFTER: &str = "HOLDFAST_UPGRADE_ABORT_AFTER";

/// For tests only: the new process waits this many milliseconds before
/// confirming each batch (a long handover, for something to happen
/// meanwhile). Never set it in production.
pub const ENV_TOOK_DELAY_MS: &str = "HOLDFAST_UPGRADE_TOOK_DELAY_MS";

/// The seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
