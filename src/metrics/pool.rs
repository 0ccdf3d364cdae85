//! The pool's changes: backend up/down transitions, failovers and
//! outage durations are counted where the pool's state changes, by one
//! task that watches it (`crate::ops`; the sessions and probes do not
//! call in).

use std::time::Instant;

use super::families::{BackendL, TransitionL};
use super::Metrics;

/// The pool as the metrics count it.
#[derive(Debug, Clone, Default)]
pub struct PoolSeen {
    /// Every backend: name, and up (`None` before its first probe).
    pub backends: Vec<(String, Option<bool>)>,
    /// The failover epoch.
    pub epoch: u64,
    /// The active backend is known to be down: the players lost their game.
    pub active_down: bool,
}

impl Metrics {
    /// The pool changed (called by the task that follows it): counts up
    /// and down transitions and failovers, times outages.
    pub fn pool_changed(&self, pool: &PoolSeen) {
        let mut seen = self.lock();
        for (name, up) in &pool.backends {
            let before = seen.up.insert(name.clone(), *up);
            if before.is_none() {
                // A backend's series exist from the start, at zero, so
                // rate() and alerts see the first change.
                for to in ["up", "down"] {
                    let _ = self.transitions.get_or_create(&TransitionL {
                        backend: name.clone(),
                        to: to.to_string(),
                    });
                }
            }
            if let Some(up) = *up {
                self.backend_up
                    .get_or_create(&BackendL {
                        backend: name.clone(),
                    })
                    .set(i64::from(up));
                // The first probe result is not a transition.
                if matches!(before, Some(Some(was)) if was != up) {
                    self.transitions
                        .get_or_create(&TransitionL {
                            backend: name.clone(),
                            to: if up { "up" } else { "down" }.to_string(),
                        })
                        .inc();
                }
            }
        }
        if seen.epoch.is_some_and(|e| e != pool.epoch) {
            self.failovers.inc();
        }
        seen.epoch = Some(pool.epoch);
        match (pool.active_down, seen.outage_since) {
            (true, None) => seen.outage_since = Some(Instant::now()),
            (false, Some(t0)) => {
                self.outage_duration.observe(t0.elapsed().as_secs_f64());
                seen.outage_since = None;
            }
            _ => {}
        }
    }
}
