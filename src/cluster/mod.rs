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
//! | `node.rs` | the task: renew, read, follow, fence |
//! | `propose.rs` | proposing a move: requests, quorum, compare-and-set, the new term |
//! | `watchdog.rs` | fences on time when the lease runs out mid-round |

mod join;
mod kv;
mod lease;
mod node;
mod propose;
mod quorum;
mod watchdog;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

pub use crate::state::cluster::{Active, Carried, MemberStatus, Status, TakenOver};
pub use kv::{bucket_name, member_key, Member};
pub use quorum::majority;

use crate::state::{FailoverRequest, Shared};

/// The cluster would not let this instance start (`join.rs`): another
/// process runs as the same `bus.instance`, or the members disagree on
/// the backends' order.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The cluster state an upgrade hands over (`None` without `bus.cluster`
/// or before the cluster task's first round).
pub fn carry(shared: &Shared) -> Option<Carried> {
    let fenced = shared.pool.borrow().fenced;
    let st = shared.cluster.lock().unwrap_or_else(|e| e.into_inner());
    let st = st.as_ref()?;
    // A term this process left to the new one (its sessions were frozen):
    // the new process starts from it, as if this one had followed it.
    let (term, active) = match &st.deferred {
        Some((t, a)) => (*t, Some(a.clone())),
        None => (st.term, st.active_value.clone()),
    };
    Some(Carried {
        term,
        active,
        fenced,
        lease_age_ms: st.lease_ok.map(|t| t.elapsed().as_millis() as u64),
        boot: Some(st.boot.clone()),
    })
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
