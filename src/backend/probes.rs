//! A probe's handle ([`ProbeHandle`]: what sessions, the pool and an
//! upgrade ask of a running probe, and the reports it sends), and every
//! backend's handle by name ([`Probes`]). The pool starts and replaces
//! probes; sessions ask one for an immediate check or the cached connect
//! screen; an upgrade parks them all. The task behind a handle is
//! `health.rs`'s.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::coverage::{Carried, Coverage};
use crate::config::Backend;

/// Queued immediate-check requests before senders wait.
pub(super) const CHECK_QUEUE: usize = 1024;

/// How long a session's connect waits for its backend's probe to stamp
/// its first connection (only right after holdfast starts: once stamped,
/// never again). The probe task starts before any player is accepted, so
/// this is the time it takes to be scheduled, not a network round trip.
pub const FIRST_STAMP_WAIT: Duration = Duration::from_millis(250);

/// A cached connect screen found changed is dropped at most once in this
/// long per backend ([`ProbeHandle::screen_changed`]): a screen with
/// something in it that changes all the time (a player count, the time)
/// differs from every copy, and would otherwise cost every other new
/// player a game connection at the connect screen.
pub const SCREEN_DROP_EVERY: Duration = Duration::from_secs(30);

/// The connect screen kept for lazy connect (see [`ProbeHandle::screen`]).
#[derive(Debug, Default)]
pub struct ScreenCache {
    /// The screen (telnet removed), if known.
    pub(super) kept: Option<Arc<[u8]>>,
    /// When a copy was last dropped for being out of date.
    pub(super) dropped_at: Option<Instant>,
}

impl ScreenCache {
    /// Drops the copy if it is still `shown` and none was dropped in the
    /// last [`SCREEN_DROP_EVERY`]; returns whether it did.
    fn drop_if_kept(&mut self, shown: &[u8], now: Instant) -> bool {
        if self.kept.as_deref() != Some(shown) {
            // Replaced meanwhile (or dropped already).
            return false;
        }
        if self
            .dropped_at
            .is_some_and(|t| now.saturating_duration_since(t) < SCREEN_DROP_EVERY)
        {
            return false;
        }
        self.kept = None;
        self.dropped_at = Some(now);
        true
    }
}

/// What a [`ProbeReport`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// The backend is up.
    Up,
    /// The backend is down.
    Down,
    /// The backend is up but the probe is degraded (see the module docs).
    Degraded,
    /// The probe is no longer degraded.
    Healthy,
}

/// A probe's state change, sent to the failover manager.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Backend name.
    pub name: String,
    /// The generation of the probe that sent it ([`ProbeHandle::generation`]):
    /// a report from another generation than the running probe's is stale.
    pub generation: u64,
    /// What changed.
    pub kind: ReportKind,
    /// Why (for `Down`: the failure; for `Degraded`: what is wrong).
    pub reason: String,
}

/// An immediate check: when the caller's game connection was made, when
/// its close was noticed, and where to answer.
pub(super) type CheckRequest = (Instant, Instant, oneshot::Sender<bool>);

/// What a parked probe hands over (see [`ProbeHandle::park`]).
pub struct Parked {
    /// Its coverage, relative to the moment it parked.
    pub coverage: Carried,
    /// A duplicate of its logged-in connection, if it had one.
    pub conn: Option<super::connect::Sock>,
}

/// A request to park, and where the answer goes.
pub(super) type Park = oneshot::Sender<Parked>;

/// What a new process takes over for one probe.
pub struct Inherited {
    /// The coverage, as of the moment it was taken.
    pub coverage: Coverage,
    /// The logged-in connection, if the old probe had one.
    pub conn: Option<super::connect::BackendStream>,
}

/// Handle to a running probe.
#[derive(Clone, Debug)]
pub struct ProbeHandle {
    pub(super) check_tx: mpsc::Sender<CheckRequest>,
    /// Cancels the probe task.
    pub cancel: CancellationToken,
    /// The backend it probes (a changed address needs a new probe).
    pub backend: Backend,
    /// This probe's generation, carried by its reports.
    pub generation: u64,
    /// The game's connect screen as the probe last saw it (telnet removed),
    /// kept while `listen.lazy_connect` is on.
    pub(super) screen: Arc<std::sync::Mutex<ScreenCache>>,
    /// True once the probe stamped its first connection.
    pub(super) stamped: watch::Receiver<bool>,
    /// Parks the probe for an upgrade.
    pub(super) park_tx: mpsc::Sender<Park>,
    /// The parked probe's verdict: true when the new process took over.
    pub(super) verdict: Arc<Mutex<Option<oneshot::Sender<bool>>>>,
}

impl ProbeHandle {
    /// Waits (at most `limit`) until the probe has stamped its first
    /// connection: a game connection made after it is covered.
    pub async fn first_stamp(&self, limit: Duration) {
        if *self.stamped.borrow() {
            return;
        }
        let t0 = Instant::now();
        let mut rx = self.stamped.clone();
        let stamped = tokio::time::timeout(limit, rx.wait_for(|s| *s))
            .await
            .is_ok();
        debug!(backend = %self.backend.name, stamped, waited_us = t0.elapsed().as_micros() as u64,
            "waited for the probe's first connection");
    }

    /// Parks the probe for an upgrade: it stops using its connection and
    /// hands over a duplicate of it with its coverage; while parked it
    /// answers immediate checks by peeking at the connection. It stays
    /// parked until [`ProbeHandle::settle`]. `None`: the probe has ended.
    pub async fn park(&self) -> Option<Parked> {
        let (tx, rx) = oneshot::channel();
        self.park_tx.send(tx).await.ok()?;
        rx.await.ok()
    }

    /// Ends a parked probe (`committed`: the new process owns its
    /// connection) or lets it carry on.
    pub fn settle(&self, committed: bool) {
        let v = self
            .verdict
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(v) = v {
            let _ = v.send(committed);
        }
    }

    /// Asks for an immediate probe and returns whether the backend answered.
    /// A failed immediate probe marks the backend down at once, whatever
    /// `fall` says: a dropped session plus a failed probe is strong evidence.
    ///
    /// `since` is when the caller's own connection to the backend was made:
    /// the answer is "alive" only if the game answers and the probe's
    /// coverage judges the process the same one the caller was talking to
    /// (`backend::coverage`): a game restarted meanwhile (a supervisor can
    /// do that within milliseconds) answers too, but is not the same.
    pub async fn check_now(&self, since: Instant) -> bool {
        let (tx, rx) = oneshot::channel();
        let closed = Instant::now();
        if self.check_tx.send((since, closed, tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// The game's connect screen as the probe last saw it, if kept.
    pub fn screen(&self) -> Option<Arc<[u8]>> {
        self.screen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .kept
            .clone()
    }

    /// The game's connect screen as a player's own connection showed it
    /// (the player waited at it: nothing was typed before the game went
    /// quiet). Kept for lazy connect like the probe's: it seeds the cache
    /// when the probe could not get a screen (the game's places for
    /// connections at its connect screen were all taken by players) and
    /// replaces a screen the game has since changed.
    pub fn seen_screen(&self, text: Arc<[u8]>) {
        let mut c = self.screen.lock().unwrap_or_else(|e| e.into_inner());
        if c.kept.as_deref() != Some(&text[..]) {
            debug!(backend = %self.backend.name, bytes = text.len(), "connect screen kept for lazy connect (a player's connection showed it)");
            c.kept = Some(text);
        }
    }

    /// A lazy session's game connection showed a connect screen that is
    /// not `shown`, the copy its player got: the game's screen changed.
    /// The copy is dropped if it is still the one kept (so the next new
    /// player connects at once, and the connection that waits at the
    /// game's screen keeps the new one: [`ProbeHandle::seen_screen`]),
    /// but at most once in [`SCREEN_DROP_EVERY`]: a screen that changes
    /// all the time is refreshed that often, not at every player. Returns
    /// whether it was dropped.
    pub fn screen_changed(&self, shown: &[u8], now: Instant) -> bool {
        let mut c = self.screen.lock().unwrap_or_else(|e| e.into_inner());
        let dropped = c.drop_if_kept(shown, now);
        if dropped {
            tracing::info!(backend = %self.backend.name, "the game's connect screen changed; the cached copy is dropped until it is seen again");
        } else {
            debug!(backend = %self.backend.name, "the game's connect screen differs from a copy; not dropped (replaced meanwhile, or dropped less than {SCREEN_DROP_EVERY:?} ago)");
        }
        dropped
    }
}

/// The running probes, by backend name.
#[derive(Debug, Default)]
pub struct Probes {
    inner: Mutex<HashMap<String, ProbeHandle>>,
}

impl Probes {
    /// The map itself, to start, replace or stop probes (the pool).
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, ProbeHandle>> {
        // A panic while holding this lock would be a bug elsewhere; the
        // handles stay usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The probe of backend `name`.
    pub fn get(&self, name: &str) -> Option<ProbeHandle> {
        self.lock().get(name).cloned()
    }

    /// Every probe, in no order.
    pub fn all(&self) -> Vec<ProbeHandle> {
        self.lock().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_screen_is_dropped_at_most_once_in_a_while() {
        let t0 = Instant::now();
        let old: Arc<[u8]> = Arc::from(&b"Welcome! 3 players online.\r\n"[..]);
        let mut c = ScreenCache {
            kept: Some(old.clone()),
            dropped_at: None,
        };
        assert!(!c.drop_if_kept(b"another copy", t0), "not the one kept");
        assert!(c.drop_if_kept(&old, t0));
        assert!(c.kept.is_none());
        assert!(!c.drop_if_kept(&old, t0), "gone already");
        // Seen again (a player count that changes all the time): kept for
        // the next players until the wait is over.
        let new: Arc<[u8]> = Arc::from(&b"Welcome! 4 players online.\r\n"[..]);
        c.kept = Some(new.clone());
        assert!(!c.drop_if_kept(&new, t0 + SCREEN_DROP_EVERY / 2));
        assert!(c.kept.is_some());
        assert!(c.drop_if_kept(&new, t0 + SCREEN_DROP_EVERY));
    }
}
