//! Every live session, with the per-address counts the listener's limits
//! read.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::config::Config;

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
    /// Connected and logged in, but a cluster member that lost its lease
    /// relays nothing meanwhile (the game's output is kept, the player's
    /// lines queued). Only what the registry shows: a session's own phase
    /// stays `Relaying` while paused.
    Paused,
}

/// One session as the registry knows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    /// Session id (unique in this process).
    pub id: u64,
    /// The player's address.
    #[serde(skip)]
    pub ip: IpAddr,
    /// Logged-in user, if any (shared with the session's driver).
    pub user: Option<Arc<str>>,
    /// Backend the session is on (or was on, when held); shared with the
    /// session.
    pub backend: Option<Arc<str>>,
    /// Current phase.
    pub phase: Phase,
    /// Unix time of the connection, in seconds (`u32`: until 2106; the
    /// entry is 64 bytes, one of the allocator's size classes).
    pub connected: u32,
    /// The player's link dropped; the game session is kept for them.
    pub detached: bool,
}

/// `t` as a [`SessionInfo::connected`]: Unix seconds, 0 before 1970 and
/// `u32::MAX` after 2106.
pub fn unix_secs(t: std::time::SystemTime) -> u32 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
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
    /// Boxed: the map's table is sized in powers of two, so an entry
    /// inline would keep up to twice its 64 bytes per session; a box
    /// keeps 16 (issue 25).
    sessions: HashMap<u64, Box<SessionInfo>>,
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
        g.sessions.insert(info.id, Box::new(info));
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
        g.sessions.insert(info.id, Box::new(info));
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
        let mut v: Vec<SessionInfo> = self
            .lock()
            .sessions
            .values()
            .map(|s| (**s).clone())
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// The live sessions counted into `N` kinds by `kind` (an index below
    /// `N`; others are not counted), under the lock and without copying
    /// any: what a metrics scrape needs of ten thousand sessions.
    pub fn tally<const N: usize>(&self, kind: impl Fn(&SessionInfo) -> usize) -> [u64; N] {
        let mut n = [0u64; N];
        for s in self.lock().sessions.values() {
            if let Some(c) = n.get_mut(kind(s)) {
                *c += 1;
            }
        }
        n
    }

    /// Live sessions (detached ones too).
    pub fn live(&self) -> usize {
        self.lock().sessions.len()
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

    /// Sessions paused by the cluster ([`Phase::Paused`]).
    pub fn paused(&self) -> usize {
        self.lock()
            .sessions
            .values()
            .filter(|s| s.phase == Phase::Paused)
            .count()
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

    #[test]
    fn a_tally_counts_each_kind_and_skips_what_it_cannot_place() {
        let c = cfg("");
        let r = Registry::grouped_by(c.limits.ipv6_prefix);
        for id in 1..=5 {
            r.restore(info(id, "127.0.0.1"));
        }
        r.update(2, |s| s.phase = Phase::Relaying);
        r.update(3, |s| s.phase = Phase::Relaying);
        // Kind 7 has no place in a tally of three: not counted.
        let n = r.tally::<3>(|s| match s.phase {
            Phase::Held => 0,
            Phase::Relaying => 1,
            _ => 7,
        });
        assert_eq!(n, [3, 2, 0]);
        r.update(4, |s| s.phase = Phase::Paused);
        let n = r.tally::<3>(|s| match s.phase {
            Phase::Held => 0,
            Phase::Relaying => 1,
            _ => 7,
        });
        assert_eq!(n, [2, 2, 0], "the paused session is skipped");
    }
}
