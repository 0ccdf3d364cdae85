//! The pool as sessions see it (which backend is active, who is up), and
//! the messages that reach every session: announcements and an operator's
//! failover request.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::oneshot;

/// Health of one backend as its probe sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendView {
    /// Backend name.
    pub name: String,
    /// Address, as configured.
    pub addr: String,
    /// `None` until the first probe finished.
    pub up: Option<bool>,
    /// When `up` last changed.
    pub since: SystemTime,
    /// Why it is down (last probe error).
    pub reason: String,
    /// Why the probe is degraded (game up, probe not fully working).
    pub degraded: Option<String>,
}

/// The pool as sessions see it: which backend is active and who is up.
/// Published through a `watch` channel; changes are rare (up, down,
/// failover, reload), so every session may wake on each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolState {
    /// The backend sessions should be on.
    pub active: String,
    /// Every configured backend, in preference order.
    pub backends: Vec<BackendView>,
    /// Bumped on every failover, so a session notices a move even back to
    /// the backend it was on before.
    pub epoch: u64,
    /// This instance of a cluster (`bus.cluster`) may not relay: it lost
    /// its lease (cannot reach the bus) or is waiting for the others to
    /// follow a new term. Sessions hold as for a game outage. Written by
    /// the cluster task only; always false without `bus.cluster`.
    pub fenced: bool,
}

impl PoolState {
    /// The view of backend `name`.
    pub fn view(&self, name: &str) -> Option<&BackendView> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// Whether `name` is known to be down (unknown counts as not down).
    pub fn is_down(&self, name: &str) -> bool {
        matches!(self.view(name).map(|v| v.up), Some(Some(false)) | None)
    }

    /// Whether a move to backend `name` at `addr` is refused unless forced:
    /// its probe says it is down. A new address is not known yet, so it is
    /// not refused.
    pub fn refuses_move_to(&self, name: &str, addr: &str) -> bool {
        self.view(name)
            .is_some_and(|v| v.up == Some(false) && v.addr == addr)
    }

    /// Whether sessions may use the active backend: it is known to be up
    /// or not probed yet, and this instance is not fenced.
    pub fn active_usable(&self) -> bool {
        !self.fenced && !self.is_down(&self.active)
    }
}

/// A notice for every player (or those on one backend).
#[derive(Debug, Clone)]
pub struct Announcement {
    /// The text.
    pub text: Arc<str>,
    /// Only players on this backend, if set.
    pub backend: Option<String>,
}

/// Announcements a session that falls this far behind misses (the oldest
/// go first), as a broadcast channel of this size would drop them.
const BULLETIN_KEEP: usize = 16;

/// The operator's recent announcements, numbered, for each session to
/// read when it is rung ([`super::Shared::announce`]): a session reads the
/// ones after the last it read, from when it started.
#[derive(Debug, Default)]
pub struct Bulletin {
    posted: std::sync::Mutex<(u64, std::collections::VecDeque<(u64, Announcement)>)>,
}

impl Bulletin {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, (u64, std::collections::VecDeque<(u64, Announcement)>)> {
        self.posted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of the last announcement (0: none yet).
    pub fn last(&self) -> u64 {
        self.lock().0
    }

    /// Posts an announcement.
    pub fn post(&self, a: Announcement) {
        let mut g = self.lock();
        g.0 += 1;
        let n = g.0;
        if g.1.len() == BULLETIN_KEEP {
            g.1.pop_front();
        }
        g.1.push_back((n, a));
    }

    /// The announcements after number `seen` (at most the last
    /// [`BULLETIN_KEEP`]), and `seen` moved past them.
    pub fn since(&self, seen: &mut u64) -> Vec<Announcement> {
        let g = self.lock();
        if g.0 == *seen {
            return Vec::new();
        }
        let out =
            g.1.iter()
                .filter(|(n, _)| *n > *seen)
                .map(|(_, a)| a.clone())
                .collect();
        *seen = g.0;
        out
    }
}

/// An operator's request to move every session to a backend.
#[derive(Debug)]
pub struct FailoverRequest {
    /// Target backend name.
    pub backend: String,
    /// `sighup` or `request`.
    pub reason: &'static str,
    /// Move even if the backend is down.
    pub force: bool,
    /// The outcome.
    pub reply: oneshot::Sender<Result<(), String>>,
}
