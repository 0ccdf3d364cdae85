//! When the cluster may move: the quorum rule, without I/O.
//!
//! Redis Sentinel's rule: a failover needs a *quorum* of observers to agree
//! the primary is down, and is recorded under a new *configuration epoch*
//! that every observer follows. Here the observers are the instances whose
//! lease is running, the quorum is a majority of `bus.cluster_size` (of the
//! configured size, not of who is alive: two halves of a split cluster can
//! never both have one), and the epoch is the term (the revision of
//! `active`).
//!
//! - **Failover**: this instance's probe has seen the active backend down
//!   for `failover.after`, a majority reports it down, and a majority
//!   reports the target up (the first such backend in preference order).
//! - **Failback** (`failover.failback`): the preferred backend is up here
//!   and a majority reports it up.
//! - Operator moves (`failover` request, a reload that reorders the
//!   backends) need no majority: the operator decided. They still go
//!   through the fencing rule and the compare-and-set.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::kv::Member;
use crate::config::Config;
use crate::state::PoolState;

/// The majority of `size` instances.
pub fn majority(size: usize) -> usize {
    size / 2 + 1
}

/// The views that vote: this instance's and every live member's.
pub struct Votes<'a> {
    /// Each voter's backends (up, down, unknown).
    pub views: Vec<&'a BTreeMap<String, Option<bool>>>,
}

impl Votes<'_> {
    fn count(&self, backend: &str, up: bool) -> usize {
        self.views
            .iter()
            .filter(|v| v.get(backend).copied().flatten() == Some(up))
            .count()
    }

    /// How many see `backend` down.
    pub fn down(&self, backend: &str) -> usize {
        self.count(backend, false)
    }

    /// How many see `backend` up.
    pub fn up(&self, backend: &str) -> usize {
        self.count(backend, true)
    }
}

/// This instance's view of the backends, as its member value carries it.
pub fn view_of(pool: &PoolState) -> BTreeMap<String, Option<bool>> {
    pool.backends
        .iter()
        .map(|b| (b.name.clone(), b.up))
        .collect()
}

/// The automatic move this instance should propose now, if any, with its
/// reason and the votes it had.
pub fn automatic(
    cfg: &Config,
    pool: &PoolState,
    mine: &BTreeMap<String, Option<bool>>,
    others: &[&Member],
    size: usize,
    now: SystemTime,
) -> Option<(String, usize)> {
    let mut views = vec![mine];
    views.extend(others.iter().map(|m| &m.backends));
    let votes = Votes { views };
    let need = majority(size);
    let up_here = |n: &str| pool.view(n).and_then(|v| v.up) == Some(true);
    let pref = &cfg.preferred().name;
    if cfg.failover.failback && &pool.active != pref && up_here(pref) && votes.up(pref) >= need {
        return Some((pref.clone(), votes.up(pref)));
    }
    let active = pool.view(&pool.active)?;
    if active.up != Some(false) {
        return None;
    }
    let after = cfg.failover.after?;
    if now.duration_since(active.since).unwrap_or_default() < after {
        return None;
    }
    let down = votes.down(&pool.active);
    if down < need {
        return None;
    }
    cfg.backends
        .iter()
        .find(|b| b.name != pool.active && up_here(&b.name) && votes.up(&b.name) >= need)
        .map(|b| (b.name.clone(), down))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::BackendView;
    use std::path::Path;
    use std::time::Duration;

    const CFG: &str = "[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n[[backends]]\nname = \"b\"\naddr = \"127.0.0.1:2\"\n[failover]\nafter = \"1s\"\n";

    fn pool(a: Option<bool>, b: Option<bool>, since: SystemTime) -> PoolState {
        let v = |name: &str, up| BackendView {
            name: name.into(),
            addr: String::new(),
            up,
            since,
            reason: String::new(),
            degraded: None,
        };
        PoolState {
            active: "a".into(),
            backends: vec![v("a", a), v("b", b)],
            epoch: 0,
            fenced: false,
        }
    }

    fn member(name: &str, a: Option<bool>, b: Option<bool>) -> Member {
        Member {
            instance: name.into(),
            term: 1,
            backends: [("a".to_string(), a), ("b".to_string(), b)].into(),
            time: String::new(),
            boot: String::new(),
            order: Vec::new(),
        }
    }

    #[test]
    fn majorities() {
        assert_eq!(
            [1, 2, 3, 4, 5].map(majority),
            [1, 2, 2, 3, 3],
            "of the configured size"
        );
    }

    #[test]
    fn failover_needs_a_majority_and_the_timer() {
        let cfg = Config::parse(Path::new("t.toml"), CFG).unwrap();
        let t0 = SystemTime::now();
        let p = pool(Some(false), Some(true), t0);
        let mine = view_of(&p);
        let down = member("y", Some(false), Some(true));
        let up = member("z", Some(true), Some(true));
        let later = t0 + Duration::from_secs(2);
        // Alone (the others see a up): no majority.
        assert_eq!(automatic(&cfg, &p, &mine, &[&up], 3, later), None);
        // Two of three: yes, once failover.after has passed here.
        assert_eq!(automatic(&cfg, &p, &mine, &[&down, &up], 3, t0), None);
        assert_eq!(
            automatic(&cfg, &p, &mine, &[&down, &up], 3, later),
            Some(("b".into(), 2))
        );
        // Of the configured size: two live members of five are no majority.
        assert_eq!(automatic(&cfg, &p, &mine, &[&down], 5, later), None);
        // The target must be up for a majority too.
        let b_down = member("y", Some(false), Some(false));
        assert_eq!(automatic(&cfg, &p, &mine, &[&b_down], 3, later), None);
    }

    #[test]
    fn failback_needs_a_majority_seeing_the_preferred_up() {
        let cfg = Config::parse(Path::new("t.toml"), &format!("{CFG}failback = true\n")).unwrap();
        let mut p = pool(Some(true), Some(true), SystemTime::now());
        p.active = "b".into();
        let mine = view_of(&p);
        let down = member("y", Some(false), Some(true));
        let up = member("z", Some(true), Some(true));
        assert_eq!(
            automatic(&cfg, &p, &mine, &[&down], 3, SystemTime::now()),
            None
        );
        assert_eq!(
            automatic(&cfg, &p, &mine, &[&down, &up], 3, SystemTime::now()),
            Some(("a".into(), 2))
        );
    }
}
