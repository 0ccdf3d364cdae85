//! The names of players holdfast is logging back in, shared by every
//! session: the game's announcements about them ("Alice has connected.")
//! are held back while they are here (see `session::busy`).
//!
//! Every session asks [`QuietNames::active`] on every read of game output,
//! so that is one atomic load and no lock; entries expire by themselves
//! and are pruned when names are added.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Entries kept before expired ones are pruned.
const PRUNE_AT: usize = 256;

/// Player names (lower-cased) and until when they are held.
#[derive(Debug)]
pub struct QuietNames {
    names: Mutex<HashMap<String, Instant>>,
    /// When the last hold ends, in milliseconds after `base` (0: none).
    until_ms: AtomicU64,
    base: Instant,
}

impl Default for QuietNames {
    fn default() -> Self {
        QuietNames {
            names: Mutex::default(),
            until_ms: AtomicU64::new(0),
            base: Instant::now(),
        }
    }
}

impl QuietNames {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `name` for `for_` from now (or longer, if already held longer).
    pub fn hold(&self, name: &str, for_: Duration) {
        let now = Instant::now();
        let until = now + for_;
        let mut g = self.lock();
        if g.len() >= PRUNE_AT {
            g.retain(|_, t| *t > now);
        }
        let e = g.entry(name.to_lowercase()).or_insert(until);
        *e = (*e).max(until);
        let ms = u64::try_from((until - self.base).as_millis()).unwrap_or(u64::MAX);
        self.until_ms.fetch_max(ms.max(1), Ordering::AcqRel);
    }

    /// Stops holding `name`: its player is leaving the game on purpose
    /// (sent the quit command), so the game's "has disconnected." about
    /// them is news again.
    pub fn release(&self, name: &str) {
        if !self.active() {
            return;
        }
        self.lock().remove(&name.to_lowercase());
    }

    /// Whether any name may be held now.
    pub fn active(&self) -> bool {
        let until = self.until_ms.load(Ordering::Acquire);
        until != 0 && (self.base.elapsed().as_millis() as u64) < until
    }

    /// Whether `name` is held now.
    pub fn contains(&self, name: &str) -> bool {
        if !self.active() {
            return false;
        }
        let now = Instant::now();
        self.lock()
            .get(&name.to_lowercase())
            .is_some_and(|t| *t > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn names_expire() {
        let q = QuietNames::default();
        assert!(!q.active());
        q.hold("Alice", Duration::from_secs(5));
        assert!(q.active());
        assert!(q.contains("alice") && q.contains("ALICE") && !q.contains("Bob"));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!q.contains("Alice"));
        assert!(!q.active());
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_name_is_shown_again() {
        let q = QuietNames::default();
        q.hold("Alice", Duration::from_secs(10));
        q.hold("Bob", Duration::from_secs(10));
        q.release("ALICE");
        assert!(!q.contains("Alice") && q.contains("Bob"));
    }
}
