//! Start-up checks, without I/O: an instance joins only if no other live
//! process renews its member key (two instances with the same
//! `bus.instance` would share one lease, so neither could be fenced on
//! time), and if every live member lists the backends in the same order
//! (the first is the preferred one: instances that disagree would fail
//! back and forth).
//!
//! A member key alone does not say whether its holder is alive: a process
//! that crashed leaves its key behind. So the check reads every member key,
//! then watches: a key whose revision changes (or that appears) is live; a
//! key that stays as it was for [`patience`] is a leftover. Its own key
//! written by this very process ([`Member::boot`]) is never a conflict;
//! the new process of an upgrade carries the old one's boot id, and skips
//! the check anyway (the handover says it is the same instance).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::kv::Member;

/// How long a member key must stay unchanged to count as left over: two
/// renewals' worth (renewals go every third of the lease).
pub fn patience(lease: Duration) -> Duration {
    lease * 2 / 3
}

/// What the check says after a read of the members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keys not seen renewing yet: read again.
    Wait,
    /// Join.
    Go,
    /// Do not start: why.
    Refuse(String),
}

/// The check's state.
#[derive(Debug, Clone)]
pub struct Check {
    me: String,
    boot: String,
    order: Vec<String>,
    cluster: String,
    lease: Duration,
    /// When the keys were first read, and their revisions then.
    first: Option<(Instant, BTreeMap<String, u64>)>,
}

impl Check {
    /// The check for instance `me` (this process is `boot`) whose config
    /// lists the backends in `order`.
    pub fn new(me: &str, boot: &str, order: Vec<String>, cluster: &str, lease: Duration) -> Check {
        Check {
            me: me.to_string(),
            boot: boot.to_string(),
            order,
            cluster: cluster.to_string(),
            lease,
            first: None,
        }
    }

    /// Takes a read of every member key at `now`.
    pub fn observe(&mut self, now: Instant, read: &[(Member, u64)]) -> Verdict {
        let (t0, revs) = self.first.get_or_insert_with(|| {
            let revs = read.iter().map(|(m, r)| (m.instance.clone(), *r)).collect();
            (now, revs)
        });
        let settled = now.saturating_duration_since(*t0) >= patience(self.lease);
        let mut wait = false;
        for (m, rev) in read {
            let live = revs.get(&m.instance) != Some(rev);
            if m.instance == self.me {
                if m.boot == self.boot {
                    continue;
                }
                if live {
                    return Verdict::Refuse(format!(
                        "another holdfast process is already instance {:?} of cluster {:?} (it renews member.{} as process {}); every instance needs its own bus.instance",
                        self.me, self.cluster, m.instance, if m.boot.is_empty() { "?" } else { &m.boot }
                    ));
                }
            } else if live {
                if !m.order.is_empty() && m.order != self.order {
                    return Verdict::Refuse(format!(
                        "instance {:?} of cluster {:?} lists the backends as [{}], this one as [{}]; every instance must list the cluster's backends in the same order (the first is the preferred one)",
                        m.instance,
                        self.cluster,
                        m.order.join(", "),
                        self.order.join(", ")
                    ));
                }
                continue;
            }
            // Not seen renewing yet: alive or left over.
            wait |= !settled;
        }
        if wait {
            Verdict::Wait
        } else {
            Verdict::Go
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(3);

    fn m(name: &str, boot: &str, order: &[&str]) -> Member {
        Member {
            instance: name.into(),
            term: 1,
            backends: BTreeMap::new(),
            time: String::new(),
            boot: boot.into(),
            order: order.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn check() -> Check {
        Check::new("a", "me", vec!["b0".into(), "b1".into()], "test", LEASE)
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_bucket_joins_at_once() {
        assert_eq!(check().observe(Instant::now(), &[]), Verdict::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_duplicate_is_refused() {
        let mut c = check();
        let t0 = Instant::now();
        assert_eq!(c.observe(t0, &[(m("a", "other", &[]), 4)]), Verdict::Wait);
        // Renewed: someone is running as "a".
        let v = c.observe(t0 + Duration::from_secs(1), &[(m("a", "other", &[]), 5)]);
        assert!(
            matches!(&v, Verdict::Refuse(e) if e.contains("already instance \"a\"") && e.contains("own bus.instance")),
            "{v:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_leftover_key_is_taken_over_after_two_renewals_time() {
        let mut c = check();
        let t0 = Instant::now();
        let old = [
            (m("a", "crashed", &[]), 4),
            (m("z", "gone", &["b1", "b0"]), 9),
        ];
        assert_eq!(c.observe(t0, &old), Verdict::Wait);
        assert_eq!(c.observe(t0 + Duration::from_secs(1), &old), Verdict::Wait);
        // A dead member's order does not count either.
        assert_eq!(c.observe(t0 + patience(LEASE), &old), Verdict::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn its_own_key_is_no_conflict() {
        let mut c = check();
        let t0 = Instant::now();
        assert_eq!(c.observe(t0, &[(m("a", "me", &[]), 4)]), Verdict::Go);
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_member_with_another_order_is_refused() {
        let mut c = check();
        let t0 = Instant::now();
        assert_eq!(
            c.observe(
                t0,
                &[
                    (m("b", "x", &["b0", "b1"]), 2),
                    (m("c", "y", &["b1", "b0"]), 3)
                ]
            ),
            Verdict::Wait
        );
        let later = t0 + Duration::from_secs(1);
        // b renews with the same order: fine; c has not renewed yet.
        assert_eq!(
            c.observe(
                later,
                &[
                    (m("b", "x", &["b0", "b1"]), 5),
                    (m("c", "y", &["b1", "b0"]), 3)
                ]
            ),
            Verdict::Wait
        );
        let v = c.observe(
            later,
            &[
                (m("b", "x", &["b0", "b1"]), 5),
                (m("c", "y", &["b1", "b0"]), 6),
            ],
        );
        assert!(
            matches!(&v, Verdict::Refuse(e) if e.contains("[b1, b0]") && e.contains("same order")),
            "{v:?}"
        );
        // A member of an older holdfast publishes no order: not judged.
        let mut c = check();
        c.observe(t0, &[(m("b", "x", &[]), 2)]);
        assert_eq!(c.observe(later, &[(m("b", "x", &[]), 3)]), Verdict::Go);
    }
}
