//! The sessions' side of an upgrade ([`crate::upgrade`]): the roll of
//! session tasks that can be asked to stop, the ask, the parcel a session
//! answers with and the verdict it waits for; the request queue; the
//! handshakes an upgrade closes rather than waits for. One per proxy, in
//! [`crate::state::Shared`]; the upgrade itself drives it from above.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeroize::Zeroizing;

/// How long an upgrade waits for the handshakes it cancelled to end (a
/// cancelled handshake ends at its next await; this is only a bound).
const HANDSHAKE_STOP: Duration = Duration::from_millis(500);
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

/// An upgrade's request to one session: stop at a clean point and send
/// back a [`Parcel`]. Dropped unanswered when the session has ended.
pub type Ask = oneshot::Sender<Parcel>;

/// A session's answer to an [`Ask`].
pub struct Parcel {
    /// Session id.
    pub id: u64,
    /// Its state and sockets, or why it cannot cross.
    pub content: Result<SessionParcel, String>,
    /// What becomes of it. Until it is sent (or dropped) the session does
    /// nothing at all: it keeps its sockets and its state as they were.
    pub verdict: oneshot::Sender<Verdict>,
}

/// A frozen session, ready to send.
pub struct SessionParcel {
    /// The state ([`crate::session::snapshot`]), with the password.
    pub state: Zeroizing<Vec<u8>>,
    /// Its game connection's kind, if it has one.
    pub game: Option<GameFd>,
    /// A close-on-exec duplicate of the player's socket, to be sent (none
    /// for a detached session: its player's link had dropped).
    pub player_fd: Option<OwnedFd>,
    /// And of the game's, if there is one.
    pub game_fd: Option<OwnedFd>,
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

/// Every session task that can be asked to stop, in the order they
/// enlisted (a session re-enlists when it detaches, so it is never missed).
#[derive(Default)]
struct Roll {
    next: u64,
    /// Where each one's ask goes. Values of one pointer: the map's nodes
    /// are 192 bytes instead of 320 (issue 25).
    map: BTreeMap<u64, Arc<Slot>>,
}

/// Where one session's [`Ask`] is put, and how it is woken. An ask comes
/// once per upgrade, so this is kept as small as it can be: every idle
/// session has one (a `mpsc::channel(1)` here cost ~800 bytes a session,
/// its cache-padded halves and first block).
/// The session polls it in its one `select!` with no future of its own
/// (an `AtomicWaker`, not a `Notify` whose wait is a ~100-byte future in
/// every session's task).
///
/// The roll is every session task, so the slot is also how news for every
/// session reaches it ([`Handover::ring`]): the pool changed, an
/// announcement, the proxy stopping. The session then looks at each; a
/// watch, a broadcast and a cancellation future per session would cost
/// ~260 bytes in every task.
#[derive(Default)]
struct Slot {
    ask: Mutex<Option<Ask>>,
    rung: AtomicBool,
    /// The session is detached (no player waits on it: it goes first,
    /// see `crate::upgrade::old`). In the padding after `rung`.
    detached: bool,
    wake: futures::task::AtomicWaker,
}

/// What woke a session on the roll.
pub enum Wake {
    /// An upgrade's ask.
    Ask(Ask),
    /// News for every session ([`Handover::ring`]): look at the pool, the
    /// announcements and the shutdown token.
    News,
}

/// A session task's place on the roll: where its [`Ask`] arrives. Leaves
/// the roll when dropped.
pub struct Enlisted {
    key: u64,
    slot: Arc<Slot>,
    roll: Arc<Mutex<Roll>>,
}

impl Enlisted {
    /// The next request to stop. Cancel-safe: the ask waits in the slot
    /// until a call takes it (a wake-up that finds nothing waits again).
    pub async fn asked(&mut self) -> Option<Ask> {
        std::future::poll_fn(|cx| self.poll_asked(cx)).await
    }

    /// [`Enlisted::asked`] as a poll: ready with the ask once there is one.
    /// News is left for [`Enlisted::poll_wake`].
    pub fn poll_asked(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Ask>> {
        if let Some(a) = lock(&self.slot.ask).take() {
            return std::task::Poll::Ready(Some(a));
        }
        self.slot.wake.register(cx.waker());
        // An ask put in between the look and the registration.
        match lock(&self.slot.ask).take() {
            Some(a) => std::task::Poll::Ready(Some(a)),
            None => std::task::Poll::Pending,
        }
    }

    /// An ask, or news for every session (the first wins; the other waits
    /// for the next poll). Cancel-safe.
    pub fn poll_wake(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Wake> {
        let look = |s: &Slot| {
            if let Some(a) = lock(&s.ask).take() {
                return Some(Wake::Ask(a));
            }
            s.rung.swap(false, Ordering::AcqRel).then_some(Wake::News)
        };
        if let Some(w) = look(&self.slot) {
            return std::task::Poll::Ready(w);
        }
        self.slot.wake.register(cx.waker());
        match look(&self.slot) {
            Some(w) => std::task::Poll::Ready(w),
            None => std::task::Poll::Pending,
        }
    }
}

impl Drop for Enlisted {
    fn drop(&mut self) {
        lock(&self.roll).map.remove(&self.key);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the sessions and the signal handlers share about upgrades (one per
/// proxy, in [`crate::state::Shared`]).
pub struct Handover {
    roll: Arc<Mutex<Roll>>,
    requests: mpsc::Sender<Request>,
    requests_rx: Mutex<Option<mpsc::Receiver<Request>>>,
    busy: AtomicBool,
    origin: OnceLock<Origin>,
    /// Upgrades this proxy went through (carried to each new process).
    pub upgrades: AtomicU64,
    /// The new process of an upgrade: the old one's cluster state, for the
    /// cluster task to start from (taken once).
    pub cluster: Mutex<Option<super::cluster::TakenOver>>,
    /// The cluster task runs a round only while holding this; the old
    /// process of an upgrade takes it before it sends its last cluster
    /// state and keeps it past `Commit` ([`Handover::cluster_stopped`]), so
    /// that nothing here renews the member key or confirms a term for
    /// sessions the new process owns.
    pub cluster_round: Arc<tokio::sync::Mutex<()>>,
    /// Where the old process keeps [`Handover::cluster_round`] after
    /// `Commit` (never given back).
    cluster_stopped: Mutex<Option<tokio::sync::OwnedMutexGuard<()>>>,
    /// TLS and WebSocket handshakes in progress: not sessions yet, so an
    /// upgrade never waits for them ([`Handover::stop_handshakes`]).
    handshakes: TaskTracker,
    /// Cancelled when an upgrade begins (a fresh one replaces it).
    handshake_stop: Mutex<CancellationToken>,
}

impl Default for Handover {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(1);
        Handover {
            roll: Arc::default(),
            requests: tx,
            requests_rx: Mutex::new(Some(rx)),
            busy: AtomicBool::new(false),
            origin: OnceLock::new(),
            upgrades: AtomicU64::new(0),
            cluster: Mutex::new(None),
            cluster_round: Arc::default(),
            cluster_stopped: Mutex::new(None),
            handshakes: TaskTracker::new(),
            handshake_stop: Mutex::new(CancellationToken::new()),
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

    /// The old process, past `Commit`: keeps the cluster task's round
    /// lock for good (its cluster task is aborted next).
    pub fn cluster_stopped(&self, round: tokio::sync::OwnedMutexGuard<()>) {
        *lock(&self.cluster_stopped) = Some(round);
    }

    /// Whether an upgrade is under way.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// An upgrade begins (`true`) or has ended (`false`): requests made
    /// meanwhile are refused.
    pub fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Release);
    }

    /// Runs a front door's handshake `f` as a task of its own, outside the
    /// sessions' tracker. `f` gets a token that is cancelled when an
    /// upgrade begins: it then closes its connection (a client connects
    /// again, to whichever process accepts by then) rather than hold the
    /// upgrade. A handshake that succeeds spawns its session on the
    /// sessions' tracker before its task ends.
    pub fn spawn_handshake<F, Fut>(&self, f: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let stop = lock(&self.handshake_stop).clone();
        self.handshakes.spawn(f(stop));
    }

    /// An upgrade begins (the acceptors are stopped): closes every
    /// handshake in progress and waits, briefly, for their tasks to end,
    /// so that a session whose handshake had just finished is on the
    /// sessions' tracker. Handshakes started later get a fresh token.
    pub async fn stop_handshakes(&self) {
        let stop = std::mem::take(&mut *lock(&self.handshake_stop));
        stop.cancel();
        self.handshakes.close();
        if tokio::time::timeout(HANDSHAKE_STOP, self.handshakes.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.handshakes.len(),
                "upgrade: handshakes did not close in time"
            );
        }
        self.handshakes.reopen();
    }

    /// The request queue (taken once, by [`crate::Proxy::run`]).
    pub fn take_requests(&self) -> Option<mpsc::Receiver<Request>> {
        lock(&self.requests_rx).take()
    }

    /// A session task enlists while it is at a point where it can stop
    /// (its main loop).
    pub fn enlist(&self) -> Enlisted {
        self.enlist_as(false)
    }

    /// A detached session enlists while it is kept for its player.
    pub fn enlist_detached(&self) -> Enlisted {
        self.enlist_as(true)
    }

    /// Wakes every session on the roll to look at what they share (the
    /// pool, the announcements, the shutdown token): call after changing
    /// it. Sessions enlist before their first look, so none misses news
    /// that comes after it.
    pub fn ring(&self) {
        for slot in lock(&self.roll).map.values() {
            slot.rung.store(true, Ordering::Release);
            slot.wake.wake();
        }
    }

    fn enlist_as(&self, detached: bool) -> Enlisted {
        let slot = Arc::new(Slot {
            detached,
            ..Slot::default()
        });
        let mut r = lock(&self.roll);
        let key = r.next;
        r.next += 1;
        r.map.insert(key, slot.clone());
        Enlisted {
            key,
            slot,
            roll: self.roll.clone(),
        }
    }

    /// The old process of an upgrade ([`crate::upgrade`]): asks up to `n` sessions enlisted at or after `from` to stop (only
    /// detached ones if `detached_only`; none already in `asked`, to which
    /// they are added): the key to go on from, and the answers to wait for
    /// (a session that ends meanwhile drops its answer).
    pub fn ask(
        &self,
        from: u64,
        n: usize,
        detached_only: bool,
        asked: &mut std::collections::HashSet<u64>,
    ) -> (u64, Vec<oneshot::Receiver<Parcel>>) {
        let r = lock(&self.roll);
        let mut next = from;
        let mut out = Vec::with_capacity(n);
        let mut tried = 0;
        for (k, slot) in r.map.range(from..) {
            if tried == n {
                break;
            }
            next = k + 1;
            if (detached_only && !slot.detached) || !asked.insert(*k) {
                continue;
            }
            tried += 1;
            // Taken: an earlier upgrade's ask is still unread (the session
            // is stuck writing); it is left out, the tracker still counts
            // it, and this upgrade waits for it and fails at its deadline
            // rather than leave it behind. (A session that ends leaves the
            // roll under this lock first, so a slot here has its session;
            // one that ends right after drops the ask with its slot, and
            // the answer with it.)
            let mut put = lock(&slot.ask);
            if put.is_none() {
                let (ask, answer) = oneshot::channel();
                *put = Some(ask);
                drop(put);
                slot.wake.wake();
                out.push(answer);
            }
        }
        (next, out)
    }
}

/// The game connection of a session, as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GameFd {
    /// A TCP connection.
    Tcp,
    /// A Unix socket connection.
    Unix,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every session has a slot: with the `Arc`'s counts at most 72
    /// bytes (the allocator's 80-byte class; `detached` sits in its
    /// padding), and the roll's map keeps one pointer per session.
    #[test]
    fn a_slot_and_its_place_on_the_roll_stay_small() {
        assert!(
            std::mem::size_of::<Slot>() <= 56,
            "{}",
            std::mem::size_of::<Slot>()
        );
        let h = Handover::default();
        let kept = h.enlist_detached();
        let live = h.enlist();
        let mut asked = std::collections::HashSet::new();
        // Detached ones first: only `kept` is asked.
        let (next, answers) = h.ask(0, 10, true, &mut asked);
        assert_eq!((next, answers.len()), (2, 1));
        assert!(lock(&kept.slot.ask).is_some() && lock(&live.slot.ask).is_none());
        let (_, answers) = h.ask(0, 10, false, &mut asked);
        assert_eq!(answers.len(), 1, "the live one, not `kept` again");
        drop((kept, live));
        assert!(
            lock(&h.roll).map.is_empty(),
            "a slot leaves the roll when dropped"
        );
    }
}
