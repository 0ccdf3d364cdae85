//! State shared by the tasks of one running proxy: the live config, the
//! backend pool's view, the session registry and the channels that reach
//! every session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::health::ProbeHandle;
use crate::config::Config;
use crate::events::EventSink;
use crate::limiter::RateLimiter;

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

/// What a session is doing, for `status` and `sessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Connected to a backend, output flowing.
    Relaying,
    /// Reconnecting and logging back in (output hidden).
    Relogin,
    /// No backend: the player is being held.
    Held,
}

/// One session as the registry knows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// Session id (unique in this process).
    pub id: u64,
    /// The player's address.
    #[serde(skip)]
    pub ip: IpAddr,
    /// Logged-in user, if any.
    pub user: Option<String>,
    /// Backend the session is on (or was on, when held).
    pub backend: Option<String>,
    /// Current phase.
    pub phase: Phase,
    /// Unix time of the connection.
    pub connected: u64,
    /// The player's link dropped; the game session is kept for them.
    pub detached: bool,
}

/// All live sessions, plus per-IP counts for the listener's limits.
#[derive(Default, Debug)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

impl Default for RegistryInner {
    fn default() -> Self {
        RegistryInner {
            sessions: HashMap::new(),
            per_ip: HashMap::new(),
            unauthenticated: 0,
            conn_rate: HashMap::new(),
            grouped_by: crate::config::defaults::IPV6_PREFIX,
        }
    }
}

#[derive(Debug)]
struct RegistryInner {
    sessions: HashMap<u64, SessionInfo>,
    /// Sessions per address group ([`crate::config::Limits::ip_group`]:
    /// an IPv4 address, an IPv6 prefix).
    per_ip: HashMap<IpAddr, usize>,
    unauthenticated: usize,
    /// New-connection buckets per address group; pruned of idle entries
    /// when large.
    conn_rate: HashMap<IpAddr, crate::limiter::Bucket1>,
    /// The `limits.ipv6_prefix` the two maps above are grouped by.
    grouped_by: u8,
}

impl RegistryInner {
    /// `ip`'s key in `per_ip` and `conn_rate`.
    fn group(&self, ip: IpAddr) -> IpAddr {
        crate::config::Limits::group_by(ip, self.grouped_by)
    }

    /// Groups the per-IP counts by `prefix` from now on (a reload changed
    /// `limits.ipv6_prefix`): the counts are rebuilt from the sessions;
    /// the connection-rate buckets start afresh.
    fn regroup(&mut self, prefix: u8) {
        if self.grouped_by == prefix {
            return;
        }
        self.grouped_by = prefix;
        let mut per_ip = HashMap::new();
        for s in self.sessions.values() {
            *per_ip
                .entry(crate::config::Limits::group_by(s.ip, prefix))
                .or_insert(0) += 1;
        }
        self.per_ip = per_ip;
        self.conn_rate.clear();
    }
}

/// Maps this small keep their capacity.
const SHRINK_FLOOR: usize = 256;

/// Shrinks `m` to twice its length once it is under a quarter full.
fn shrink_sparse<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, V>) {
    if m.capacity() > SHRINK_FLOOR && m.len() * 4 < m.capacity() {
        m.shrink_to((m.len() * 2).max(SHRINK_FLOOR));
    }
}

/// Entries in the per-IP connection-rate table before idle ones are pruned.
const CONN_RATE_PRUNE_AT: usize = 4096;

/// Why a connection was refused by [`Registry::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `listen.max_sessions` reached.
    Full,
    /// `listen.max_per_ip` reached.
    PerIp,
    /// `limits.max_unauthenticated` reached.
    Unauthenticated,
    /// `limits.conn_rate_per_ip` exceeded.
    Rate,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        // A panic while holding this lock would be a bug elsewhere; the data
        // (counts and infos) stays usable, so recover rather than cascade.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty registry whose per-IP counts group IPv6 addresses by
    /// `ipv6_prefix` bits (`limits.ipv6_prefix`; a reload that changes it
    /// regroups them at the next admission).
    pub fn grouped_by(ipv6_prefix: u8) -> Registry {
        let r = Registry::default();
        r.lock().grouped_by = ipv6_prefix;
        r
    }

    /// Registers a new session if the limits allow it.
    pub fn admit(&self, info: SessionInfo, cfg: &Config) -> Result<(), Refusal> {
        let mut g = self.lock();
        let l = &cfg.limits;
        g.regroup(l.ipv6_prefix);
        let group = g.group(info.ip);
        if l.conn_rate_per_ip > 0.0 {
            if g.conn_rate.len() >= CONN_RATE_PRUNE_AT {
                // A bucket idle long enough to be full again carries no
                // state; dropping those keeps the table bounded.
                let full_after = std::time::Duration::from_secs_f64(
                    f64::from(l.conn_burst_per_ip) / l.conn_rate_per_ip,
                );
                g.conn_rate
                    .retain(|_, b| b.last_used().elapsed() < full_after);
            }
            let b = g
                .conn_rate
                .entry(group)
                .or_insert_with(|| crate::limiter::Bucket1::new(l.conn_burst_per_ip));
            if !b.take(l.conn_rate_per_ip, l.conn_burst_per_ip) {
                return Err(Refusal::Rate);
            }
        }
        if g.sessions.len() >= cfg.listen.max_sessions {
            return Err(Refusal::Full);
        }
        let n = g.per_ip.get(&group).copied().unwrap_or(0);
        if n >= cfg.listen.max_per_ip {
            return Err(Refusal::PerIp);
        }
        if g.unauthenticated >= cfg.limits.max_unauthenticated {
            return Err(Refusal::Unauthenticated);
        }
        *g.per_ip.entry(group).or_insert(0) += 1;
        g.unauthenticated += 1;
        g.sessions.insert(info.id, info);
        Ok(())
    }

    /// The per-address connection-rate buckets that are not full, with
    /// their tokens now (carried to a new process in an upgrade).
    pub fn conn_rate_export(&self, cfg: &Config) -> Vec<(IpAddr, f64)> {
        let l = &cfg.limits;
        self.lock()
            .conn_rate
            .iter()
            .map(|(ip, b)| (*ip, b.tokens_now(l.conn_rate_per_ip, l.conn_burst_per_ip)))
            .filter(|(_, t)| *t < f64::from(l.conn_burst_per_ip))
            .collect()
    }

    /// Takes the old process's connection-rate buckets over (an upgrade).
    pub fn conn_rate_import(&self, buckets: &[(IpAddr, f64)]) {
        let mut g = self.lock();
        for (ip, t) in buckets {
            g.conn_rate
                .insert(*ip, crate::limiter::Bucket1::with_tokens(*t));
        }
    }

    /// Registers a session taken over from an older process (an upgrade):
    /// it was admitted there, so no limit applies.
    pub fn restore(&self, info: SessionInfo) {
        let mut g = self.lock();
        let group = g.group(info.ip);
        *g.per_ip.entry(group).or_insert(0) += 1;
        if info.user.is_none() {
            g.unauthenticated += 1;
        }
        g.sessions.insert(info.id, info);
    }

    /// Updates a session's entry.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut SessionInfo)) {
        let mut g = self.lock();
        let g = &mut *g;
        if let Some(s) = g.sessions.get_mut(&id) {
            let was_anon = s.user.is_none();
            f(s);
            match (was_anon, s.user.is_none()) {
                (true, false) => g.unauthenticated -= 1,
                (false, true) => g.unauthenticated += 1,
                _ => {}
            }
        }
    }

    /// Removes a session.
    pub fn remove(&self, id: u64) {
        let mut g = self.lock();
        if let Some(s) = g.sessions.remove(&id) {
            if s.user.is_none() {
                g.unauthenticated -= 1;
            }
            let group = g.group(s.ip);
            if let Some(n) = g.per_ip.get_mut(&group) {
                *n -= 1;
                if *n == 0 {
                    g.per_ip.remove(&group);
                }
            }
            // After a crowd leaves, give back what it grew (a map keeps
            // its capacity): once a quarter full, down to twice its size.
            shrink_sparse(&mut g.sessions);
            shrink_sparse(&mut g.per_ip);
        }
    }

    /// A snapshot of every session, sorted by id.
    pub fn snapshot(&self) -> Vec<SessionInfo> {
        let mut v: Vec<SessionInfo> = self.lock().sessions.values().cloned().collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Counts: (total, logged in, held).
    pub fn counts(&self) -> (usize, usize, usize) {
        let g = self.lock();
        let total = g.sessions.len();
        let held = g
            .sessions
            .values()
            .filter(|s| s.phase == Phase::Held)
            .count();
        (total, total - g.unauthenticated, held)
    }

    /// Detached sessions (kept for a player whose link dropped).
    pub fn detached(&self) -> usize {
        self.lock().sessions.values().filter(|s| s.detached).count()
    }

    /// Sessions currently on backend `name` (or held from it).
    pub fn on_backend(&self, name: &str) -> usize {
        self.lock()
            .sessions
            .values()
            .filter(|s| s.backend.as_deref() == Some(name))
            .count()
    }
}

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

/// A notice for every player (or those on one backend).
#[derive(Debug, Clone)]
pub struct Announcement {
    /// The text.
    pub text: Arc<str>,
    /// Only players on this backend, if set.
    pub backend: Option<String>,
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

/// Everything the tasks of one proxy share.
pub struct Shared {
    /// The live configuration; replaced on reload.
    pub config: watch::Sender<Arc<Config>>,
    /// Pool state; written by the failover manager only.
    pub pool: watch::Sender<PoolState>,
    /// Probe handles by backend name (for immediate checks).
    pub probes: Mutex<HashMap<String, ProbeHandle>>,
    /// Live sessions.
    pub registry: Registry,
    /// Detached sessions by login name.
    pub detached: DetachIndex,
    /// Events toward the bus.
    pub events: EventSink,
    /// Notices for every player.
    pub announce: broadcast::Sender<Announcement>,
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
    pub handover: crate::upgrade::Handover,
    /// The cluster as this instance sees it (`bus.cluster`), for `status`.
    pub cluster: Mutex<Option<crate::cluster::Status>>,
}

impl Shared {
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
            probes: Mutex::new(HashMap::new()),
            registry,
            detached: DetachIndex::default(),
            events,
            announce: broadcast::channel(16).0,
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
            handover: crate::upgrade::Handover::default(),
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
        self.probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        let text = format!(
            "[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:4202\"\n[listen]\nmax_per_ip = 2\n{extra}"
        );
        Config::parse(std::path::Path::new("t.toml"), &text).unwrap()
    }

    fn info(id: u64, ip: &str) -> SessionInfo {
        SessionInfo {
            id,
            ip: ip.parse().unwrap(),
            user: None,
            backend: None,
            phase: Phase::Held,
            connected: 0,
            detached: false,
        }
    }

    #[test]
    fn one_ipv6_slash_64_shares_one_allowance() {
        let c = cfg("");
        let r = Registry::grouped_by(c.limits.ipv6_prefix);
        assert_eq!(r.admit(info(1, "2001:db8:7:7::1"), &c), Ok(()));
        assert_eq!(r.admit(info(2, "2001:db8:7:7:ffff::9"), &c), Ok(()));
        assert_eq!(
            r.admit(info(3, "2001:db8:7:7::3"), &c),
            Err(Refusal::PerIp),
            "a third address of the same /64"
        );
        assert_eq!(
            r.admit(info(4, "2001:db8:7:8::1"), &c),
            Ok(()),
            "the next /64"
        );
        r.remove(1);
        assert_eq!(
            r.admit(info(5, "2001:db8:7:7::3"), &c),
            Ok(()),
            "a place freed"
        );
    }

    #[test]
    fn a_changed_prefix_regroups_the_counts() {
        let c = cfg("");
        let r = Registry::grouped_by(c.limits.ipv6_prefix);
        assert_eq!(r.admit(info(1, "2001:db8:7:7::1"), &c), Ok(()));
        assert_eq!(r.admit(info(2, "2001:db8:7:7::2"), &c), Ok(()));
        // /128: every address apart, so both have room again.
        let c128 = cfg("[limits]\nipv6_prefix = 128\n");
        assert_eq!(r.admit(info(3, "2001:db8:7:7::1"), &c128), Ok(()));
        assert_eq!(
            r.admit(info(4, "2001:db8:7:7::1"), &c128),
            Err(Refusal::PerIp)
        );
        // Every session leaves without a count going wrong.
        for id in 1..=3 {
            r.remove(id);
        }
        assert!(r.lock().per_ip.is_empty(), "{:?}", r.lock().per_ip);
    }
}
