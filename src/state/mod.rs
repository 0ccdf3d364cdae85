//! State shared by the tasks of one running proxy: the live config, the
//! backend pool's view, the session registry and the channels that reach
//! every session.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod cluster;
mod detach;
mod pool;
mod registry;
pub mod upgrade;

pub use detach::{DetachIndex, DetachMsg};
pub use pool::{Announcement, BackendView, Bulletin, FailoverRequest, PoolState};
pub use registry::{unix_secs, Phase, Refusal, Registry, SessionInfo};
pub use upgrade::Handover;

use crate::backend::health::ProbeHandle;
use crate::backend::Probes;
use crate::config::Config;
use crate::events::EventSink;
use crate::limiter::RateLimiter;

/// Everything the tasks of one proxy share.
pub struct Shared {
    /// The live configuration; replaced on reload.
    pub config: watch::Sender<Arc<Config>>,
    /// Pool state; written by the failover manager only.
    pub pool: watch::Sender<PoolState>,
    /// Probe handles by backend name (for immediate checks).
    pub probes: Probes,
    /// Live sessions.
    pub registry: Registry,
    /// Detached sessions by login name.
    pub detached: DetachIndex,
    /// Events toward the bus.
    pub events: EventSink,
    /// Notices for every player ([`Shared::announce`]).
    pub announcements: Bulletin,
    /// Operator failover requests, to the failover manager.
    pub failover_tx: mpsc::Sender<FailoverRequest>,
    /// Spreads re-logins out.
    pub relogin_limiter: RateLimiter,
    /// Players being logged back in: their announcements are held back.
    pub quiet: Arc<crate::quiet::QuietNames>,
    /// Cancelled when the proxy stops.
    pub shutdown: CancellationToken,
    /// Every session task, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Session id source.
    next_id: AtomicU64,
    /// The first start: this process's, or the one before the first
    /// upgrade ([`Shared::carry_start`]).
    first_start: Mutex<SystemTime>,
    /// This process's start (monotonic).
    started_at: Instant,
    /// Uptime before this process started: the processes before it
    /// (upgrades), measured on the wall clock when it took over.
    uptime_before: Mutex<std::time::Duration>,
    /// Sessions refused by a limit, since start.
    pub refused: AtomicU64,
    /// Reloads that failed, since start.
    pub reload_failures: AtomicU64,
    /// Reverse-DNS cache (PennMUSH header with `client_ip.reverse_dns`).
    pub rdns: crate::rdns::Resolver,
    /// Upgrades: requests, freezing sessions, the count.
    pub handover: Handover,
    /// The cluster as this instance sees it (`bus.cluster`), for `status`.
    pub cluster: Mutex<Option<cluster::Status>>,
}

impl Shared {
    /// An announcement for every session (or those on its backend): each
    /// reads it when rung.
    pub fn announce(&self, a: Announcement) {
        self.announcements.post(a);
        self.handover.ring();
    }

    /// Rings every session ([`Handover::ring`]) when the pool changes and
    /// when the proxy stops, for as long as the proxy runs; once at the
    /// start too, for sessions that started before it (taken over in an
    /// upgrade). Sessions read the pool and the shutdown token then, rather
    /// than each keep a wait on them.
    pub async fn ring_on_news(self: Arc<Self>) {
        let mut pool_rx = self.pool.subscribe();
        let stop = self.shutdown.clone();
        let mut stopped = false;
        self.handover.ring();
        loop {
            tokio::select! {
                r = pool_rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    self.handover.ring();
                }
                () = stop.cancelled(), if !stopped => {
                    stopped = true;
                    self.handover.ring();
                }
            }
        }
    }

    /// When the proxy first started: upgrades do not change it.
    pub fn started(&self) -> SystemTime {
        *self.first_start.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Shared::started`] in UNIX seconds (carried over an upgrade).
    pub fn started_unix(&self) -> u64 {
        self.started()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Time since the first start, counted on through upgrades.
    pub fn uptime(&self) -> std::time::Duration {
        *self.uptime_before.lock().unwrap_or_else(|e| e.into_inner()) + self.started_at.elapsed()
    }

    /// The new process of an upgrade: goes on from the first start
    /// (`unix`, seconds). Its uptime is the wall-clock time since then,
    /// and counts on with this process's monotonic clock.
    pub fn carry_start(&self, unix: u64) {
        let first = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
        let since = SystemTime::now().duration_since(first).unwrap_or_default();
        *self.first_start.lock().unwrap_or_else(|e| e.into_inner()) = first;
        *self.uptime_before.lock().unwrap_or_else(|e| e.into_inner()) =
            since.saturating_sub(self.started_at.elapsed());
    }

    /// Builds the shared state for `config`.
    pub fn new(
        config: Config,
        events: EventSink,
        failover_tx: mpsc::Sender<FailoverRequest>,
        shutdown: CancellationToken,
    ) -> Shared {
        let pool = PoolState {
            active: config.preferred().name.clone(),
            backends: config
                .backends
                .iter()
                .map(|b| BackendView {
                    name: b.name.clone(),
                    addr: b.addr.to_string(),
                    up: None,
                    since: SystemTime::now(),
                    reason: "not probed yet".into(),
                    degraded: None,
                })
                .collect(),
            epoch: 0,
            // A cluster member relays only once it has reached the cluster
            // and knows its choice.
            fenced: config.bus.cluster.is_some(),
        };
        let limiter = RateLimiter::new(config.relogin.rate, config.relogin.burst);
        let registry = Registry::grouped_by(config.limits.ipv6_prefix);
        Shared {
            config: watch::Sender::new(Arc::new(config)),
            pool: watch::Sender::new(pool),
            probes: Probes::default(),
            registry,
            detached: DetachIndex::default(),
            events,
            announcements: Bulletin::default(),
            failover_tx,
            relogin_limiter: limiter,
            quiet: Arc::default(),
            shutdown,
            tracker: TaskTracker::new(),
            next_id: AtomicU64::new(1),
            first_start: Mutex::new(SystemTime::now()),
            started_at: Instant::now(),
            uptime_before: Mutex::new(std::time::Duration::ZERO),
            refused: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            rdns: crate::rdns::Resolver::default(),
            handover: Handover::default(),
            cluster: Mutex::new(None),
        }
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    /// A fresh session id.
    pub fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Session ids from here on are at least `next` (a process that took
    /// sessions over in an upgrade goes on from the old one's ids).
    pub fn continue_session_ids(&self, next: u64) {
        self.next_id.fetch_max(next, Ordering::Relaxed);
    }

    /// The probe handle of backend `name`.
    pub fn probe(&self, name: &str) -> Option<ProbeHandle> {
        self.probes.get(name)
    }
}
