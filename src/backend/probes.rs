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
    pub(super) screen: Arc<std::sync::Mutex<Option<Arc<[u8]>>>>,
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
            .clone()
    }

    /// The game's connect screen as a player's own connection showed it
    /// (the player waited at it: nothing was typed before the game went
    /// quiet). Kept for lazy connect like the probe's: it seeds the cache
    /// when the probe could not get a screen (the game's places for
    /// connections at its connect screen were all taken by players) and
    /// replaces a screen the game has since changed.
    pub fn seen_screen(&self, text: Arc<[u8]>) {
        let mut kept = self.screen.lock().unwrap_or_else(|e| e.into_inner());
        if kept.as_deref() != Some(&text[..]) {
            debug!(backend = %self.backend.name, bytes = text.len(), "connect screen kept for lazy connect (a player's connection showed it)");
            *kept = Some(text);
        }
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
