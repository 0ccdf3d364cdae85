//! What operators reach over HTTP: `/metrics`, `/healthz`, `/livez`
//! ([`http`]), and what feeds the metrics from the proxy's shared state:
//! the gauges read at each scrape ([`scrape`]) and the task that counts
//! the pool's changes ([`follow_pool`]). The series and the counting API
//! are [`crate::metrics`]'s, which knows only plain values.

pub mod http;

use std::sync::Arc;

use crate::metrics::{metrics, ClusterGauges, PoolSeen, Scrape};
use crate::state::{Phase, PoolState, Shared};

/// Reads what the metrics show but do not count (sessions by state, the
/// sinks' drops, the cluster) and hands it to them.
pub fn scrape(shared: &Shared) {
    let sessions = shared
        .registry
        .tally::<5>(|s| match (s.user.is_some(), s.phase) {
            (false, _) => 0,
            (true, Phase::Relaying) => 1,
            (true, Phase::Relogin) => 2,
            (true, Phase::Held) => 3,
            (true, Phase::Paused) => 4,
        });
    let fenced = shared.pool.borrow().fenced;
    let cluster = shared
        .cluster
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|st| ClusterGauges {
            name: st.name.clone(),
            term: st.term,
            fenced,
            alive: st.members.iter().filter(|m| m.alive).count(),
        });
    metrics().refresh(&Scrape {
        sessions,
        events_dropped: shared.events.dropped(),
        cluster,
    });
}

/// The pool as the metrics count it.
fn seen(pool: &PoolState) -> PoolSeen {
    PoolSeen {
        backends: pool
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.up))
            .collect(),
        epoch: pool.epoch,
        active_down: pool.is_down(&pool.active)
            && pool.view(&pool.active).is_some_and(|v| v.up.is_some()),
    }
}

/// Follows the pool until shutdown, counting transitions, failovers and
/// outages (spawned by the proxy).
pub async fn follow_pool(shared: Arc<Shared>) {
    let mut rx = shared.pool.subscribe();
    loop {
        metrics().pool_changed(&seen(&rx.borrow_and_update()));
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}
