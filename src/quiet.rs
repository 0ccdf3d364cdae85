//! The names of players holdfast is logging back in, shared by every
//! session: the game's announcements about them ("Alice has connected.")
//! are held back while they are here (see `session::busy`).
//!
//! Checked on every read of game output while anything is held, so the
//! common case (nothing held) is one atomic load, and entries expire by
//! themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Player names (lower-cased) and until when they are held.
#[derive(Debug, Default)]
pub struct QuietNames {
    names: Mutex<HashMap<String, Instant>>,
    /// Some name may be held (cleared when the last one expires).
    any: AtomicBool,
}

impl QuietNames {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `name` for `for_` from now (or longer, if already held longer).
    pub fn hold(&self, name: &str, for_: Duration) {
        let until = Instant::now() + for_;
        let mut g = self.lock();
        let e = g.entry(name.to_lowercase()).or_insert(until);
        *e = (*e).max(until);
        self.any.store(true, Ordering::Release);
    }

    /// Whether any name may be held.
    pub fn active(&self) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let now = Instant::now();
        let mut g = self.lock();
        g.retain(|_, t| *t > now);
        if g.is_empty() {
            self.any.store(false, Ordering::Release);
            return false;
        }
        true
    }

    /// Whether `name` is held now.
    pub fn contains(&self, name: &str) -> bool {
        if !self.any.load(Ordering::Acquire) {
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
}
