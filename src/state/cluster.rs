//! The cluster (`bus.cluster`, [`crate::cluster`]) as the rest of the
//! proxy sees it: what `status` shows, and what an upgrade carries from
//! the old process's cluster task to the new one's. Plain values; the
//! cluster task writes them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The value of `active`; its revision is the term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Active {
    /// The backend every instance sends its players to.
    pub backend: String,
    /// The instance whose compare-and-set wrote it.
    pub proposer: String,
    /// `initial`, `automatic`, `request` or `sighup`.
    pub reason: String,
    /// When (RFC 3339), for people reading the bucket.
    pub time: String,
}

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
    /// A newer term seen during an upgrade's handover and left to the new
    /// process: its term and value (for an upgrade).
    #[serde(skip)]
    pub deferred: Option<(u64, Active)>,
}

/// What an upgrade carries from the old process's cluster task to the
/// new one's, so that the new process renews the same member key with the
/// same term (it does not look like a new member that has not confirmed
/// the term) and holds the lease only as long as the old one did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    /// The term the old process followed, or a newer one it saw during
    /// the handover and left to the new process ([`Status::deferred`]).
    pub term: u64,
    /// That term's value of `active`.
    pub active: Option<Active>,
    /// The old process was fenced.
    pub fenced: bool,
    /// Milliseconds since its last stored renewal started, when the
    /// handover's first message was written (renewals during the rest of
    /// the handover are not counted: the new process's idea of the lease
    /// is never later than the old one's).
    pub lease_age_ms: Option<u64>,
    /// The process id in its member value (its `boot`): the new
    /// process writes the same, so nobody takes it for a second instance
    /// of the same name.
    #[serde(default)]
    pub boot: Option<String>,
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
