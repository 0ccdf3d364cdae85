//! Prometheus metrics: the series of SPEC "Metrics and health" and the
//! small API the rest of the proxy calls where things happen. The
//! `/metrics`, `/healthz`, `/livez` server, and the task that reads the
//! proxy's shared state at each scrape, are `crate::ops`'s: this module
//! knows only plain values, so every layer can count.
//!
//! Hot-path calls ([`Metrics::bytes`], [`Metrics::connection`]) are one
//! atomic add on a counter handle fetched once. What is already known
//! elsewhere (sessions by state, backend up, the bus queue, the process's
//! RSS) is read when Prometheus scrapes ([`Metrics::refresh`], fed by
//! `crate::ops`), so the
//! sessions pay nothing for it. No label carries a player or an address
//! of a player: listener, backend, state, reason, result, direction and
//! cluster label values are bounded by the config. Series are registered
//! in `families.rs`; `pool.rs` counts the pool's changes.
//!
//! One proxy runs per process, so the metrics are process-wide
//! ([`metrics()`]): any module can count without a handle threaded to it.

mod families;
mod pool;
mod process;

pub use pool::PoolSeen;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use families::{BackendL, ClusterL, ListenerL, ProbeL, ReasonL, ResultL, StateL, TransitionL};

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// How a re-login ended (`holdfast_relogins_total{result}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloginResult {
    /// The game confirmed the login.
    Ok,
    /// The game refused it (bad password, no such player).
    Failed,
    /// No confirmation in time.
    Timeout,
}

impl ReloginResult {
    fn label(self) -> &'static str {
        match self {
            ReloginResult::Ok => "ok",
            ReloginResult::Failed => "failed",
            ReloginResult::Timeout => "timeout",
        }
    }
}

/// Which way bytes went, seen from the player (`holdfast_bytes_total{direction}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the game to the player.
    ToPlayer,
    /// From the player to the game.
    FromPlayer,
}

/// Why the listener refused a connection
/// (`holdfast_connections_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedReason {
    /// `listen.max_sessions`.
    Full,
    /// `listen.max_per_ip`.
    PerIp,
    /// `limits.max_unauthenticated`.
    Unauthenticated,
    /// `limits.conn_rate_per_ip`.
    Rate,
}

impl RefusedReason {
    fn label(self) -> &'static str {
        match self {
            RefusedReason::Full => "full",
            RefusedReason::PerIp => "per_ip",
            RefusedReason::Unauthenticated => "unauthenticated",
            RefusedReason::Rate => "rate",
        }
    }
}

/// The states of `holdfast_sessions{state}`.
pub const STATES: [&str; 5] = ["login", "relaying", "relogin", "held", "paused"];

/// What a scrape reads from elsewhere ([`Metrics::refresh`]).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Sessions in each of [`STATES`].
    pub sessions: [u64; 5],
    /// Events the sessions' sink dropped, since start.
    pub events_dropped: u64,
    /// The cluster's gauges (`bus.cluster`, after its first round).
    pub cluster: Option<ClusterGauges>,
}

/// The cluster as a scrape sees it.
#[derive(Debug, Clone)]
pub struct ClusterGauges {
    /// `bus.cluster`.
    pub name: String,
    /// The term this instance follows.
    pub term: u64,
    /// This instance relays nothing.
    pub fenced: bool,
    /// Members whose lease runs.
    pub alive: usize,
}

/// The bus publisher's counters as a scrape reads them.
#[derive(Debug, Clone, Copy, Default)]
pub struct BusGauges {
    /// Events waiting in the outage queue.
    pub queued: u64,
    /// Events dropped (queue overflow, refused by the server), since start.
    pub dropped: u64,
}

/// Every series, and the state needed to turn totals kept elsewhere into
/// counters.
pub struct Metrics {
    registry: Registry,
    sessions: Family<StateL, Gauge>,
    backend_up: Family<BackendL, Gauge>,
    transitions: Family<TransitionL, Counter>,
    failovers: Counter,
    connections: Family<ListenerL, Counter>,
    refused: Family<ReasonL, Counter>,
    relogins: Family<ResultL, Counter>,
    relogin_duration: Histogram,
    outage_duration: Histogram,
    probe_duration: Family<BackendL, Histogram>,
    probes: Family<ProbeL, Counter>,
    to_player: Counter,
    from_player: Counter,
    bus_queue: Gauge,
    bus_dropped: Counter,
    upgrades: Family<ResultL, Counter>,
    resumes: Counter,
    game_refusals: Counter,
    cluster_term: Family<ClusterL, Gauge>,
    cluster_fenced: Family<ClusterL, Gauge>,
    cluster_members_alive: Family<ClusterL, Gauge>,
    process: process::ProcessMetrics,
    /// What the pool watcher and the scrape remember between calls.
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    /// Each backend's last known state.
    up: HashMap<String, Option<bool>>,
    /// Last failover epoch seen.
    epoch: Option<u64>,
    /// When the players lost their game (the active backend went down).
    outage_since: Option<Instant>,
    /// The publisher's counters, once it runs.
    bus: Option<Arc<dyn Fn() -> BusGauges + Send + Sync>>,
    /// Bus drops already counted.
    bus_dropped: u64,
}

impl Metrics {
    // ----- the API the proxy calls -----------------------------------

    /// A player connection was accepted on `listener` (its local address).
    pub fn connection(&self, listener: &str) {
        self.connections
            .get_or_create(&ListenerL {
                listener: listener.to_string(),
            })
            .inc();
    }

    /// A player connection was refused.
    pub fn refused(&self, why: RefusedReason) {
        self.refused
            .get_or_create(&ReasonL {
                reason: why.label().to_string(),
            })
            .inc();
    }

    /// A re-login ended after `took` (from reconnecting to the answer).
    pub fn relogin(&self, result: ReloginResult, took: Duration) {
        self.relogins
            .get_or_create(&ResultL {
                result: result.label().to_string(),
            })
            .inc();
        self.relogin_duration.observe(took.as_secs_f64());
    }

    /// `n` bytes were relayed in `direction`.
    pub fn bytes(&self, direction: Direction, n: u64) {
        match direction {
            Direction::ToPlayer => self.to_player.inc_by(n),
            Direction::FromPlayer => self.from_player.inc_by(n),
        };
    }

    /// A heartbeat probe of `backend` finished after `took`.
    pub fn probe(&self, backend: &str, took: Duration, ok: bool) {
        self.probe_duration
            .get_or_create(&BackendL {
                backend: backend.to_string(),
            })
            .observe(took.as_secs_f64());
        self.probes
            .get_or_create(&ProbeL {
                backend: backend.to_string(),
                result: if ok { "ok" } else { "failed" }.to_string(),
            })
            .inc();
    }

    /// A hand-over to a new process ended (`ok` or why not).
    pub fn upgrade(&self, result: &'static str) {
        self.upgrades
            .get_or_create(&ResultL {
                result: result.to_string(),
            })
            .inc();
    }

    /// A player came back to a detached session.
    pub fn resume(&self) {
        self.resumes.inc();
    }

    /// The game refused a connection or re-login for holdfast's address.
    pub fn game_refusal(&self) {
        self.game_refusals.inc();
    }

    /// The bus publisher's counters, read at each scrape by `read`.
    pub fn watch_bus(&self, read: Arc<dyn Fn() -> BusGauges + Send + Sync>) {
        self.lock().bus = Some(read);
    }

    // ----- scraping ---------------------------------------------------

    /// Sets the gauges kept elsewhere, read at a scrape (`crate::ops`):
    /// sessions by state, the bus queue and drops, the cluster, the process.
    pub fn refresh(&self, scrape: &Scrape) {
        for (s, n) in STATES.iter().zip(scrape.sessions) {
            self.sessions
                .get_or_create(&StateL {
                    state: s.to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let mut seen = self.lock();
        let mut dropped = scrape.events_dropped;
        if let Some(read) = &seen.bus {
            let b = read();
            self.bus_queue.set(b.queued.try_into().unwrap_or(i64::MAX));
            dropped += b.dropped;
        }
        // Totals kept elsewhere only grow; count what is new.
        self.bus_dropped
            .inc_by(dropped.saturating_sub(seen.bus_dropped));
        seen.bus_dropped = seen.bus_dropped.max(dropped);
        drop(seen);
        if let Some(c) = &scrape.cluster {
            let l = ClusterL {
                cluster: c.name.clone(),
            };
            self.cluster_term
                .get_or_create(&l)
                .set(i64::try_from(c.term).unwrap_or(i64::MAX));
            self.cluster_fenced
                .get_or_create(&l)
                .set(i64::from(c.fenced));
            self.cluster_members_alive
                .get_or_create(&l)
                .set(i64::try_from(c.alive).unwrap_or(i64::MAX));
        }
        self.process.refresh();
    }

    /// The Prometheus text of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
