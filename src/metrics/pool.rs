//! Following the pool: backend up/down transitions, failovers and
//! outage durations are counted where the pool's state changes, by one
//! task that watches it (the sessions and probes do not call in).

use std::sync::Arc;
use std::time::Instant;

use super::families::{BackendL, TransitionL};
use super::Metrics;
use crate::state::{PoolState, Shared};

impl Metrics {
    /// The pool changed (called by the task that follows it): counts up
    /// and down transitions and failovers, times outages.
    pub fn pool_changed(&self, pool: &PoolState) {
        let mut seen = self.lock();
        for b in &pool.backends {
            let before = seen.up.insert(b.name.clone(), b.up);
            if before.is_none() {
                // A backend's series exist from the start, at zero, so
                // rate() and alerts see the first change.
                for to in ["up", "down"] {
                    let _ = self.transitions.get_or_create(&TransitionL {
                        backend: b.name.clone(),
                        to: to.to_string(),
                    });
                }
            }
            if let Some(up) = b.up {
                self.backend_up
                    .get_or_create(&BackendL {
                        backend: b.name.clone(),
                    })
                    .set(i64::from(up));
                // The first probe result is not a transition.
                if matches!(before, Some(Some(was)) if was != up) {
                    self.transitions
                        .get_or_create(&TransitionL {
                            backend: b.name.clone(),
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
        let down =
            pool.is_down(&pool.active) && pool.view(&pool.active).is_some_and(|v| v.up.is_some());
        match (down, seen.outage_since) {
            (true, None) => seen.outage_since = Some(Instant::now()),
            (false, Some(t0)) => {
                self.outage_duration.observe(t0.elapsed().as_secs_f64());
                seen.outage_since = None;
            }
            _ => {}
        }
    }

    /// Follows the pool until shutdown (spawned by the proxy).
    pub async fn follow_pool(&self, shared: Arc<Shared>) {
        let mut rx = shared.pool.subscribe();
        loop {
            self.pool_changed(&rx.borrow_and_update().clone());
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    }
}
