//! Leases, measured without trusting anyone's clock but our own.
//!
//! An instance renews `member.<instance>` every `lease / 3`. A reader does
//! not compare the time written in the value with its own clock (two hosts'
//! clocks may disagree by more than a lease); it notes *when it saw the
//! revision change*, on its own monotonic clock. Since it can only see a
//! renewal after it was written, its idea of when a lease runs out is never
//! earlier than the holder's own: the holder fences itself at `renewal
//! start + lease - margin` ([`Lease`]), the reader counts it as gone at
//! `renewal seen + lease` ([`Table`]). So when a reader counts an instance
//! as gone, that instance has already stopped relaying: this is the lease
//! half of Patroni's leader key, without the server-side TTL that
//! nats-server 2.9 does not have per key.
//!
//! A bucket `max_age` would also expire keys, but it would expire `active`
//! too (a cluster whose backend did not change for `max_age` would forget
//! its choice), and it expires on the server's clock: not used.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::kv::Member;

/// This instance's own lease: when its last successful renewal *started*.
#[derive(Debug, Clone)]
pub struct Lease {
    lease: Duration,
    last_ok: Option<Instant>,
}

impl Lease {
    /// No renewal yet: `grace` counts as one (an upgraded process goes on
    /// from its predecessor's last renewal).
    pub fn new(lease: Duration, grace: Option<Instant>) -> Lease {
        Lease {
            lease,
            last_ok: grace,
        }
    }

    /// A renewal that started at `at` was stored.
    pub fn renewed(&mut self, at: Instant) {
        if self.last_ok.is_none_or(|t| at > t) {
            self.last_ok = Some(at);
        }
    }

    /// What this instance keeps back from its lease: readers may see a
    /// renewal at once, and its sessions need a moment to leave the game.
    pub fn margin(&self) -> Duration {
        (self.lease / 10).min(Duration::from_millis(500))
    }

    /// When this instance must stop relaying unless it renews first.
    pub fn deadline(&self) -> Option<Instant> {
        self.last_ok.map(|t| t + self.lease - self.margin())
    }

    /// Whether the lease ran out (or was never held).
    pub fn lost(&self, now: Instant) -> bool {
        self.deadline().is_none_or(|d| now >= d)
    }

    /// When the last renewal that was stored started.
    pub fn last_ok(&self) -> Option<Instant> {
        self.last_ok
    }

    /// Time since the last renewal that was stored.
    pub fn age(&self, now: Instant) -> Option<Duration> {
        self.last_ok.map(|t| now.saturating_duration_since(t))
    }
}

/// A member as this instance has seen it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its last value.
    pub value: Member,
    revision: u64,
    /// When this instance saw `revision` first.
    pub at: Instant,
}

/// Every member's last renewal, as seen from here.
#[derive(Debug, Clone)]
pub struct Table {
    lease: Duration,
    members: BTreeMap<String, Seen>,
}

impl Table {
    /// An empty table for leases of `lease`.
    pub fn new(lease: Duration) -> Table {
        Table {
            lease,
            members: BTreeMap::new(),
        }
    }

    /// Takes a fresh read of every member key at `now`. A member seen for
    /// the first time counts as renewed now (it may be alive: waiting a
    /// lease before calling it gone is the safe side). Keys that vanished
    /// are forgotten.
    pub fn observe(&mut self, now: Instant, read: Vec<(Member, u64)>) {
        let mut next = BTreeMap::new();
        for (value, revision) in read {
            let at = match self.members.get(&value.instance) {
                Some(s) if s.revision == revision => s.at,
                _ => now,
            };
            next.insert(
                value.instance.clone(),
                Seen {
                    value,
                    revision,
                    at,
                },
            );
        }
        self.members = next;
    }

    /// Every member, by name.
    pub fn members(&self) -> impl Iterator<Item = &Seen> {
        self.members.values()
    }

    /// Whether `s` renewed within the lease (as seen from here).
    pub fn alive(&self, s: &Seen, now: Instant) -> bool {
        now.saturating_duration_since(s.at) <= self.lease
    }

    /// Members whose lease is running, but not `me` (the caller adds its
    /// own view, fresher than what it stored).
    pub fn live_others<'a>(
        &'a self,
        me: &'a str,
        now: Instant,
    ) -> impl Iterator<Item = &'a Member> {
        self.members
            .values()
            .filter(move |s| s.value.instance != me && self.alive(s, now))
            .map(|s| &s.value)
    }

    /// The fencing rule: true when every other member follows `term` (or a
    /// later one) or has let its lease run out, so nobody is still
    /// relaying to an older term's backend. Before a compare-and-set on
    /// term `term`, and before relaying on a new term.
    pub fn settled(&self, me: &str, term: u64, now: Instant) -> bool {
        self.members
            .values()
            .filter(|s| s.value.instance != me)
            .all(|s| s.value.term >= term || !self.alive(s, now))
    }

    /// Members that must still confirm `term` or run out, for logs.
    pub fn waiting_for(&self, me: &str, term: u64, now: Instant) -> Vec<String> {
        self.members
            .values()
            .filter(|s| s.value.instance != me && s.value.term < term && self.alive(s, now))
            .map(|s| s.value.instance.clone())
            .collect()
    }

    /// Members gone for ten leases: their keys can be removed.
    pub fn long_gone(&self, now: Instant) -> Vec<String> {
        self.members
            .values()
            .filter(|s| now.saturating_duration_since(s.at) > self.lease * 10)
            .map(|s| s.value.instance.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, term: u64) -> Member {
        Member {
            instance: name.into(),
            term,
            backends: BTreeMap::new(),
            time: String::new(),
            boot: String::new(),
            order: Vec::new(),
        }
    }

    const LEASE: Duration = Duration::from_secs(2);

    #[tokio::test(start_paused = true)]
    async fn own_lease_runs_out_before_readers_count_it_gone() {
        let t0 = Instant::now();
        let mut l = Lease::new(LEASE, None);
        assert!(l.lost(t0), "never renewed");
        l.renewed(t0);
        assert!(!l.lost(t0 + Duration::from_millis(1700)));
        assert!(l.lost(t0 + Duration::from_millis(1800)));
        // A reader that saw that renewal at once still counts it alive.
        let mut t = Table::new(LEASE);
        t.observe(t0, vec![(m("b", 1), 5)]);
        let s = t.members().next().unwrap().clone();
        assert!(t.alive(&s, t0 + Duration::from_millis(1800)));
        assert!(!t.alive(&s, t0 + LEASE + Duration::from_millis(1)));
        // An older renewal that completes late does not move it back.
        l.renewed(t0 - Duration::from_secs(1));
        assert_eq!(l.deadline(), Some(t0 + LEASE - l.margin()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_is_timed_when_its_revision_changes() {
        let t0 = Instant::now();
        let mut t = Table::new(LEASE);
        t.observe(t0, vec![(m("b", 1), 5)]);
        // Same revision a second later: still the first sighting.
        t.observe(t0 + Duration::from_secs(1), vec![(m("b", 1), 5)]);
        assert_eq!(t.members().next().unwrap().at, t0);
        t.observe(t0 + Duration::from_millis(1500), vec![(m("b", 1), 6)]);
        assert_eq!(
            t.members().next().unwrap().at,
            t0 + Duration::from_millis(1500)
        );
        t.observe(t0 + Duration::from_secs(2), vec![]);
        assert_eq!(t.members().count(), 0, "a purged key is forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn settled_waits_for_the_unconfirmed_to_run_out() {
        let t0 = Instant::now();
        let mut t = Table::new(LEASE);
        t.observe(t0, vec![(m("a", 3), 1), (m("b", 3), 1), (m("c", 2), 1)]);
        assert!(!t.settled("a", 3, t0), "c follows term 2");
        assert_eq!(t.waiting_for("a", 3, t0), ["c"]);
        assert!(t.settled("c", 3, t0), "c does not wait for itself");
        // c's lease runs out: it has fenced itself.
        let later = t0 + LEASE + Duration::from_millis(1);
        t.observe(later, vec![(m("a", 3), 2), (m("b", 3), 2), (m("c", 2), 1)]);
        assert!(t.settled("a", 3, later));
        assert_eq!(t.live_others("a", later).count(), 1);
        assert!(t.long_gone(t0 + LEASE * 11).contains(&"c".to_string()));
    }
}
