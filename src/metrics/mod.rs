//! Prometheus metrics: the series of SPEC "Metrics and health", the small
//! API the rest of the proxy calls where things happen, and (in [`http`])
//! the `/metrics`, `/healthz`, `/livez` server.
//!
//! Hot-path calls ([`Metrics::bytes`], [`Metrics::connection`]) are one
//! atomic add on a counter handle fetched once. What is already known
//! elsewhere (sessions by state, backend up, the bus queue, the process's
//! RSS) is read when Prometheus scrapes ([`Metrics::refresh`]), so the
//! sessions pay nothing for it. No label carries a player or an address
//! of a player: listener, backend, state, reason, result and direction
//! label values are bounded by the config.
//!
//! One proxy runs per process, so the metrics are process-wide
//! ([`metrics()`]): any module can count without a handle threaded to it.

pub mod http;
mod process;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::bus::BusStats;
use crate::state::{Phase, PoolState, Shared};

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
const STATES: [&str; 4] = ["login", "relaying", "relogin", "held"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateL {
    state: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendL {
    backend: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionL {
    backend: String,
    to: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerL {
    listener: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonL {
    reason: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultL {
    result: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeL {
    backend: String,
    result: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionL {
    direction: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionL {
    version: String,
}

fn probe_histogram() -> Histogram {
    // 1 ms .. ~33 s: a local game answers in a millisecond, a loaded one
    // in seconds, and the timeout is the upper end.
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
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
    bus: Option<Arc<BusStats>>,
    /// Bus drops already counted.
    bus_dropped: u64,
}

impl Metrics {
    fn new() -> Metrics {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("holdfast");
        let sessions = Family::<StateL, Gauge>::default();
        r.register("sessions", "Player sessions by state", sessions.clone());
        let backend_up = Family::<BackendL, Gauge>::default();
        r.register(
            "backend_up",
            "1 while the backend's probe says it is up, 0 while down",
            backend_up.clone(),
        );
        let transitions = Family::<TransitionL, Counter>::default();
        r.register(
            "backend_transitions",
            "Backend up/down changes, by backend and new state",
            transitions.clone(),
        );
        let failovers = Counter::default();
        r.register(
            "failovers",
            "Times the active backend changed",
            failovers.clone(),
        );
        let connections = Family::<ListenerL, Counter>::default();
        r.register(
            "connections",
            "Player connections accepted, by listener",
            connections.clone(),
        );
        let refused = Family::<ReasonL, Counter>::default();
        r.register(
            "connections_refused",
            "Player connections refused, by reason",
            refused.clone(),
        );
        let relogins = Family::<ResultL, Counter>::default();
        r.register(
            "relogins",
            "Re-logins after an outage or failover, by result",
            relogins.clone(),
        );
        // 10 ms .. ~40 min.
        let relogin_duration = Histogram::new([
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ]);
        r.register_with_unit(
            "relogin_duration",
            "Time from reconnecting to the game's login confirmation",
            Unit::Seconds,
            relogin_duration.clone(),
        );
        // 1 s .. 6 h: a restart, a crash, a night.
        let outage_duration = Histogram::new([
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
        ]);
        r.register_with_unit(
            "outage_duration",
            "Time the players were without a game (active backend down until one is up)",
            Unit::Seconds,
            outage_duration.clone(),
        );
        let probe_duration =
            Family::<BackendL, Histogram>::new_with_constructor(probe_histogram as fn() -> _);
        r.register_with_unit(
            "probe_duration",
            "Heartbeat probe round trips, by backend",
            Unit::Seconds,
            probe_duration.clone(),
        );
        let probes = Family::<ProbeL, Counter>::default();
        r.register(
            "probes",
            "Heartbeat probes, by backend and result",
            probes.clone(),
        );
        let bytes = Family::<DirectionL, Counter>::default();
        r.register(
            "bytes",
            "Bytes relayed, by direction seen from the player",
            bytes.clone(),
        );
        let dir = |d: &str| {
            bytes
                .get_or_create(&DirectionL {
                    direction: d.to_string(),
                })
                .clone()
        };
        let (to_player, from_player) = (dir("to_player"), dir("from_player"));
        let bus_queue = Gauge::default();
        r.register(
            "bus_queue_events",
            "Events waiting for NATS in the outage queue",
            bus_queue.clone(),
        );
        let bus_dropped = Counter::default();
        r.register(
            "bus_events_dropped",
            "Events never published: channel full, queue overflow or refused by the server",
            bus_dropped.clone(),
        );
        let upgrades = Family::<ResultL, Counter>::default();
        r.register(
            "upgrades",
            "Hand-overs to a new process, by result",
            upgrades.clone(),
        );
        let resumes = Counter::default();
        r.register(
            "resumes",
            "Players who came back to a detached session",
            resumes.clone(),
        );
        let game_refusals = Counter::default();
        r.register(
            "game_refusals",
            "Connections and re-logins the game refused for holdfast's address (retried)",
            game_refusals.clone(),
        );
        let build_info = Family::<VersionL, Gauge>::default();
        build_info
            .get_or_create(&VersionL {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        r.register("build_info", "The running version (always 1)", build_info);
        // Every state and result is in the first scrape, at zero.
        for s in STATES {
            let _ = sessions.get_or_create(&StateL {
                state: s.to_string(),
            });
        }
        for res in ["ok", "failed", "timeout"] {
            let _ = relogins.get_or_create(&ResultL {
                result: res.to_string(),
            });
        }
        for r in [
            RefusedReason::Full,
            RefusedReason::PerIp,
            RefusedReason::Unauthenticated,
            RefusedReason::Rate,
        ] {
            let _ = refused.get_or_create(&ReasonL {
                reason: r.label().to_string(),
            });
        }
        let process = process::ProcessMetrics::register(&mut root);
        Metrics {
            registry: root,
            sessions,
            backend_up,
            transitions,
            failovers,
            connections,
            refused,
            relogins,
            relogin_duration,
            outage_duration,
            probe_duration,
            probes,
            to_player,
            from_player,
            bus_queue,
            bus_dropped,
            upgrades,
            resumes,
            game_refusals,
            process,
            seen: Mutex::new(Seen::default()),
        }
    }

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

    /// The bus publisher's counters, read at each scrape.
    pub fn watch_bus(&self, stats: Arc<BusStats>) {
        self.lock().bus = Some(stats);
    }

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

    // ----- scraping ---------------------------------------------------

    /// Reads the gauges kept elsewhere: sessions by state (one short pass
    /// over the registry), the bus queue and drops, the process.
    pub fn refresh(&self, shared: &Shared) {
        let mut by = [0i64; 4];
        for s in shared.registry.snapshot() {
            let i = match (s.user.is_some(), s.phase) {
                (false, _) => 0,
                (true, Phase::Relaying) => 1,
                (true, Phase::Relogin) => 2,
                (true, Phase::Held) => 3,
            };
            by[i] += 1;
        }
        for (s, n) in STATES.iter().zip(by) {
            self.sessions
                .get_or_create(&StateL {
                    state: s.to_string(),
                })
                .set(n);
        }
        let mut seen = self.lock();
        let mut dropped = shared.events.dropped();
        if let Some(b) = &seen.bus {
            self.bus_queue.set(
                b.queued
                    .load(Ordering::Relaxed)
                    .try_into()
                    .unwrap_or(i64::MAX),
            );
            dropped += b.overflow.load(Ordering::Relaxed) + b.rejected.load(Ordering::Relaxed);
        }
        // Totals kept elsewhere only grow; count what is new.
        self.bus_dropped
            .inc_by(dropped.saturating_sub(seen.bus_dropped));
        seen.bus_dropped = seen.bus_dropped.max(dropped);
        drop(seen);
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
