//! Detached sessions (a player's link dropped, the game session kept) by
//! the name their player logs in with.

use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot};

/// A message to a detached session's task.
#[derive(Debug)]
pub enum DetachMsg {
    /// The game accepted a login with this session's name: hand the
    /// session over (the reply carries the session's state, type-erased so
    /// this module need not know the session's types), or answer `None` if
    /// it is no longer logged in (a re-login failed while away) and end.
    Takeover {
        /// The answer.
        reply: oneshot::Sender<Option<Box<dyn std::any::Any + Send>>>,
    },
    /// `listen.max_detached` was reached and this is the oldest: end now.
    Expire,
}

/// Detached sessions by the name their player logs in with.
#[derive(Debug, Default)]
pub struct DetachIndex {
    inner: Mutex<Vec<DetachEntry>>,
}

#[derive(Debug)]
struct DetachEntry {
    id: u64,
    key: String,
    tx: mpsc::Sender<DetachMsg>,
}

impl DetachIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<DetachEntry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds session `id` under `key` (the login name as the game compares
    /// it). With `max` entries already there, the oldest is told to end.
    pub fn insert(&self, id: u64, key: String, tx: mpsc::Sender<DetachMsg>, max: usize) {
        let mut g = self.lock();
        while !g.is_empty() && g.len() >= max {
            let oldest = g.remove(0);
            let _ = oldest.tx.try_send(DetachMsg::Expire);
        }
        g.push(DetachEntry { id, key, tx });
    }

    /// The most recently detached session under `key`.
    pub fn find(&self, key: &str) -> Option<(u64, mpsc::Sender<DetachMsg>)> {
        self.lock()
            .iter()
            .rev()
            .find(|e| e.key == key)
            .map(|e| (e.id, e.tx.clone()))
    }

    /// Every detached session under `key`, the most recent first.
    pub fn find_all(&self, key: &str) -> Vec<(u64, mpsc::Sender<DetachMsg>)> {
        self.lock()
            .iter()
            .rev()
            .filter(|e| e.key == key)
            .map(|e| (e.id, e.tx.clone()))
            .collect()
    }

    /// Forgets session `id`.
    pub fn remove(&self, id: u64) {
        self.lock().retain(|e| e.id != id);
    }

    /// How many are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when none is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
