//! Many proxies, one truth (`bus.cluster`): several holdfast instances in
//! front of the same game agree on the active backend, so players of two
//! instances are never sent to different backends.
//!
//! # The design, and where it comes from
//!
//! - **A leader key with a TTL, changed by compare-and-set** (Patroni's
//!   `leader` key in etcd/Consul): the JetStream key-value bucket
//!   `holdfast_cluster_<name>` holds `active`, the backend every instance
//!   uses. It changes only by compare-and-set on its revision, and that
//!   revision is the **term**: two instances proposing at once cannot both
//!   win, and everyone can tell an old choice from a new one.
//! - **Leases**: every instance renews `member.<instance>` every
//!   `bus.lease / 3`, with the term it follows, what its probes see, its
//!   process id and its backends' order. An instance that could not renew
//!   for a lease stops relaying ([`crate::state::PoolState::fenced`]): it
//!   no longer knows the cluster's choice, so it does not act on an old
//!   one. Its players are *paused* (`session::pause`): their game
//!   connections stay open and logged in, the game's output is kept and
//!   their input queued; under the same term they go on, and only if the
//!   cluster moved do they leave for its new backend. Leases are timed
//!   on each reader's own clock (`lease.rs` says why that is safe without
//!   per-key TTLs, which nats-server 2.9 lacks).
//! - **Quorum and epochs** (Redis Sentinel): an automatic failover or
//!   failback needs a majority of `bus.cluster_size` to see it the same way
//!   (`quorum.rs`); the term plays the part of Sentinel's configuration
//!   epoch.
//! - **Fencing**: before a compare-and-set, the proposer waits until every
//!   member that has not confirmed the current term has let its lease run
//!   out; after a new term, an instance moves its sessions off the old
//!   backend at once but lets them connect to the new one only when every
//!   other member has confirmed the new term or run out. An instance that
//!   is cut off therefore never relays to an old backend while others use
//!   the new one.
//!
//! A blip shorter than about half the lease changes nothing: renewals
//! fail, the lease still runs, players keep playing. (The last good
//! renewal may be a third of a lease old when the blip starts, and a call
//! in flight when it ends waits up to a quarter of a lease.) Without `bus.cluster` none of this
//! runs and the bus stays out of the players' path.
//!
//! | file | its one job |
//! | --- | --- |
//! | `kv.rs` | the bucket, its keys and values, calls with timeouts; its replicas |
//! | `join.rs` | start-up checks: no second process with this name, one backend order (no I/O) |
//! | `lease.rs` | this instance's lease; others' leases as seen from here; the fencing rule |
//! | `quorum.rs` | when an automatic move may be proposed (no I/O) |
//! | `node.rs` | the task: renew, read, follow, propose, fence |
//! | `watchdog.rs` | fences on time when the lease runs out mid-round |

mod join;
mod kv;
mod lease;
mod node;
mod quorum;
mod watchdog;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use kv::{bucket_name, member_key, Active, Member};
pub use quorum::majority;

use crate::state::{FailoverRequest, Shared};

/// What `status` shows of the cluster, as this instance sees it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Status {
    /// `bus.cluster`.
    pub name: String,
    /// `bus.cluster_size`.
    pub size: usize,
    /// `bus.lease`, seconds.
    pub lease_s: f64,
    /// The revision of `active`.
    pub term: u64,
    /// The cluster's active backend.
    pub active: Option<String>,
    /// Who wrote it.
    pub proposer: Option<String>,
    /// This instance relays nothing (no lease: its players are paused; or
    /// waiting for the others to follow a new term).
    pub fenced: bool,
    /// Seconds since this instance's last stored renewal.
    pub lease_age_s: Option<f64>,
    /// The last error talking to the bucket, while it lasts.
    pub problem: Option<String>,
    /// How many copies of the bucket JetStream keeps (once opened).
    pub replicas: Option<usize>,
    /// Every member, by instance name.
    pub members: Vec<MemberStatus>,
    /// The value of `active` this instance follows (for an upgrade).
    #[serde(skip)]
    pub active_value: Option<Active>,
    /// When this instance's last stored renewal started (for an upgrade).
    #[serde(skip)]
    pub lease_ok: Option<Instant>,
    /// This process's id in its member value (for an upgrade).
    #[serde(skip)]
    pub boot: String,
}

/// The cluster would not let this instance start (`join.rs`): another
/// process runs as the same `bus.instance`, or the members disagree on
/// the backends' order.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// What an upgrade carries from the old process's cluster task to the
/// new one's, so that the new process renews the same member key with the
/// same term (it does not look like a new member that has not confirmed
/// the term) and holds the lease only as long as the old one did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    /// The term the old process followed.
    pub term: u64,
    /// Its value of `active`.
    pub active: Option<Active>,
    /// The old process was fenced.
    pub fenced: bool,
    /// Milliseconds since its last stored renewal started, when the
    /// handover's first message was written (renewals during the rest of
    /// the handover are not counted: the new process's idea of the lease
    /// is never later than the old one's).
    pub lease_age_ms: Option<u64>,
    /// The process id in its member value ([`Member::boot`]): the new
    /// process writes the same, so nobody takes it for a second instance
    /// of the same name.
    #[serde(default)]
    pub boot: Option<String>,
}

/// The cluster state an upgrade hands over (`None` without `bus.cluster`
/// or before the cluster task's first round).
pub fn carry(shared: &Shared) -> Option<Carried> {
    let fenced = shared.pool.borrow().fenced;
    let st = shared.cluster.lock().unwrap_or_else(|e| e.into_inner());
    let st = st.as_ref()?;
    Some(Carried {
        term: st.term,
        active: st.active_value.clone(),
        fenced,
        lease_age_ms: st.lease_ok.map(|t| t.elapsed().as_millis() as u64),
        boot: Some(st.boot.clone()),
    })
}

/// The new process of an upgrade: what it took over, and when it read it.
#[derive(Debug, Clone)]
pub struct TakenOver {
    /// The old process's state.
    pub carried: Carried,
    /// When the new process read it.
    pub at: Instant,
}

impl TakenOver {
    /// When the old process's last stored renewal started, on this
    /// process's clock (`None`: it held no lease).
    pub fn lease_ok(&self) -> Option<Instant> {
        if self.carried.fenced {
            return None;
        }
        let age = Duration::from_millis(self.carried.lease_age_ms?);
        self.at.checked_sub(age)
    }
}

/// One member in [`Status`].
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// `bus.instance`.
    pub instance: String,
    /// The term it follows.
    pub term: u64,
    /// Its lease runs (as seen from here).
    pub alive: bool,
    /// Seconds since this instance saw it renew.
    pub lease_age_s: f64,
    /// What its probes see.
    pub backends: BTreeMap<String, Option<bool>>,
}

/// How often the task reads the bucket: an eighth of the lease, within
/// 50 ms and 1 s. This bounds how late an instance follows a new term.
pub fn poll_interval(lease: Duration) -> Duration {
    (lease / 8).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Runs the cluster task until shutdown (only with `bus.cluster`).
/// `requests` carries the moves the failover manager proposes (operator
/// requests, reloads).
pub async fn run(
    shared: Arc<Shared>,
    requests: mpsc::Receiver<FailoverRequest>,
) -> Result<(), Refused> {
    node::run(shared, requests).await
}

/// Rounds seconds to a tenth.
fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(fenced: bool, age: Option<u64>, at: Instant) -> TakenOver {
        TakenOver {
            carried: Carried {
                term: 7,
                active: None,
                fenced,
                lease_age_ms: age,
                boot: None,
            },
            at,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_upgraded_process_goes_on_from_the_old_lease() {
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        let at = Instant::now();
        assert_eq!(
            taken(false, Some(1200), at).lease_ok(),
            Some(at - Duration::from_millis(1200)),
            "the old renewal, never later"
        );
        assert!(t0 < at - Duration::from_millis(1200));
        assert_eq!(taken(true, Some(100), at).lease_ok(), None, "it was fenced");
        assert_eq!(taken(false, None, at).lease_ok(), None, "it never renewed");
    }
}
