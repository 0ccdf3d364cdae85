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
//!   `bus.lease / 3`, with the term it follows and what its probes see. An
//!   instance that could not renew for a lease stops relaying and holds its
//!   players ([`crate::state::PoolState::fenced`]): it no longer knows the
//!   cluster's choice, so it does not act on an old one. Leases are timed
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
//! | `kv.rs` | the bucket, its keys and values, calls with timeouts |
//! | `lease.rs` | this instance's lease; others' leases as seen from here; the fencing rule |
//! | `quorum.rs` | when an automatic move may be proposed (no I/O) |
//! | `node.rs` | the task: renew, read, follow, propose, fence |
//! | `watchdog.rs` | fences on time when the lease runs out mid-round |

mod kv;
mod lease;
mod node;
mod quorum;
mod watchdog;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;

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
    /// This instance holds its players (no lease, or waiting for the
    /// others to follow a new term).
    pub fenced: bool,
    /// Seconds since this instance's last stored renewal.
    pub lease_age_s: Option<f64>,
    /// The last error talking to the bucket, while it lasts.
    pub problem: Option<String>,
    /// Every member, by instance name.
    pub members: Vec<MemberStatus>,
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
pub async fn run(shared: Arc<Shared>, requests: mpsc::Receiver<FailoverRequest>) {
    node::run(shared, requests).await
}

/// Rounds seconds to a tenth.
fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}
