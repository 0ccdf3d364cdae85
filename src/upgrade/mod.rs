//! Upgrading holdfast without dropping anyone (`SIGUSR2`, bus request
//! `upgrade`).
//!
//! The old process starts the binary found at the path it was started
//! from, with the same arguments, and gives it one end of a private
//! `SOCK_SEQPACKET` socketpair as its stdin (the only descriptor that
//! crosses `exec` on purpose: no file on disk, no `unsafe` to name a raw
//! fd number). The new process reads its config and says `Hello` (or why
//! not, and exits 1). The old one then stops accepting, asks every session
//! to stop at a clean point ([`Handover::freeze`]) and sends the listeners,
//! each player and game socket and each session's state; the new process
//! checks and takes them, says `Taken`, the old one says `Commit` and
//! exits 0. If anything fails or takes longer than [`DEADLINE`], the old
//! process thaws its sessions and listeners and carries on.
//!
//! | file | its one job |
//! | --- | --- |
//! | `fds` | `SCM_RIGHTS` with rustix, descriptor checks |
//! | `wire` | the messages and the handover document |
//! | `old` | the old process: spawn, freeze, send, commit or thaw |
//! | `new` | the new process: check, take over, confirm |
//! | `notify` | `--ready-file` and systemd's `NOTIFY_SOCKET` |

pub mod fds;
pub mod new;
pub mod notify;
pub mod old;
pub mod wire;

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use zeroize::Zeroizing;

/// How long the whole upgrade may take, from starting the new binary to
/// its confirmation; past it the old process carries on.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// The environment variable that tells a starting holdfast that its stdin
/// is the upgrade socket.
pub const ENV: &str = "HOLDFAST_UPGRADE";

/// Where the running binary came from: started again on an upgrade.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The path the process was started from.
    pub exe: PathBuf,
    /// Its arguments (without `argv[0]`).
    pub args: Vec<OsString>,
}

impl Origin {
    /// The path and arguments of this process, taken at start (before the
    /// file may be replaced): `argv[0]` when it names a path (made
    /// absolute, symlinks kept, so a replaced link target is followed),
    /// else the resolved executable.
    pub fn capture() -> std::io::Result<Origin> {
        let mut argv = std::env::args_os();
        let argv0 = argv.next().map(PathBuf::from);
        let args = argv.collect();
        let exe = match argv0 {
            Some(p) if p.components().count() > 1 => {
                if p.is_absolute() {
                    p
                } else {
                    std::env::current_dir()?.join(p)
                }
            }
            _ => std::env::current_exe()?,
        };
        Ok(Origin { exe, args })
    }
}

/// A session's answer to a freeze.
pub struct Parcel {
    /// Session id.
    pub id: u64,
    /// Its state and sockets, or why it cannot cross.
    pub content: Result<SessionParcel, String>,
    /// What becomes of it.
    pub verdict: oneshot::Sender<Verdict>,
}

/// A frozen session, ready to send.
pub struct SessionParcel {
    /// The state ([`crate::session::snapshot`]), with the password.
    pub state: Zeroizing<Vec<u8>>,
    /// Its game connection's kind, if it has one.
    pub game: Option<wire::GameFd>,
    /// Asks the session for duplicates of its sockets. They are lent one
    /// batch at a time, just before they are sent, so a handover needs
    /// only a batch's worth of extra descriptors, not twice the process's.
    pub lend: mpsc::Sender<oneshot::Sender<Result<Lent, String>>>,
}

/// Duplicates of a frozen session's sockets, for sending.
pub struct Lent {
    /// The player's socket.
    pub player: OwnedFd,
    /// The game's, if there is one.
    pub game: Option<OwnedFd>,
}

/// What a frozen session does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The new process owns it: end the task without a word to anyone.
    Commit,
    /// The upgrade failed: carry on.
    Thaw,
}

/// An operator's upgrade request, with where to send the outcome.
pub struct Request {
    /// `sigusr2` or `request`.
    pub reason: &'static str,
    /// The outcome: the number of sessions handed over, or why not.
    pub reply: Option<oneshot::Sender<Result<usize, String>>>,
}

/// What the sessions and the signal handlers share about upgrades (one per
/// proxy, in [`crate::state::Shared`]).
pub struct Handover {
    freeze: watch::Sender<u64>,
    parcels: Mutex<Option<mpsc::UnboundedSender<Parcel>>>,
    requests: mpsc::Sender<Request>,
    requests_rx: Mutex<Option<mpsc::Receiver<Request>>>,
    busy: AtomicBool,
    origin: OnceLock<Origin>,
    /// Upgrades this proxy went through (carried to each new process).
    pub upgrades: AtomicU64,
}

impl Default for Handover {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(1);
        Handover {
            freeze: watch::Sender::new(0),
            parcels: Mutex::new(None),
            requests: tx,
            requests_rx: Mutex::new(Some(rx)),
            busy: AtomicBool::new(false),
            origin: OnceLock::new(),
            upgrades: AtomicU64::new(0),
        }
    }
}

impl Handover {
    /// Sets the binary an upgrade starts (`main` does, at start).
    pub fn set_origin(&self, o: Origin) {
        let _ = self.origin.set(o);
    }

    /// The binary an upgrade starts, if known.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.get()
    }

    /// Asks for an upgrade. `false`: one is already under way (the request
    /// is ignored, as a second `SIGUSR2` is).
    pub fn request(&self, r: Request) -> bool {
        if self.busy.load(Ordering::Acquire) {
            return false;
        }
        self.requests.try_send(r).is_ok()
    }

    /// Whether an upgrade is under way.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// The request queue (taken once, by [`crate::Proxy::run`]).
    pub fn take_requests(&self) -> Option<mpsc::Receiver<Request>> {
        self.requests_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// A session subscribes to freezes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.freeze.subscribe()
    }

    /// Where a frozen session sends its parcel, while a freeze is on.
    pub fn parcel_sender(&self) -> Option<mpsc::UnboundedSender<Parcel>> {
        self.parcels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks every session to stop at a clean point and send a parcel.
    fn freeze(&self) -> mpsc::UnboundedReceiver<Parcel> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.parcels.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        self.freeze.send_modify(|g| *g += 1);
        rx
    }

    /// Ends a freeze: late sessions carry on without sending.
    fn unfreeze(&self) {
        *self.parcels.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The bus request `upgrade`: starts one (the outcome is the
/// `proxy.upgrade` event), or says why not.
pub fn bus_request(shared: &crate::state::Shared) -> Result<serde_json::Value, serde_json::Value> {
    let h = &shared.handover;
    if h.origin().is_none() {
        return Err(serde_json::json!({
            "error": "this process does not know the binary it was started from"
        }));
    }
    if h.request(Request {
        reason: "request",
        reply: None,
    }) {
        Ok(serde_json::json!({ "ok": true, "started": true }))
    } else {
        Err(serde_json::json!({ "error": "an upgrade is already under way" }))
    }
}
