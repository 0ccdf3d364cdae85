//! Proposing a move (`cluster/node.rs`'s rounds call it): an operator's
//! request or an automatic failover or failback once a quorum agrees,
//! written by compare-and-set on `active` only when the fencing rule
//! allows; the new term announced; requests refused while this instance
//! may not propose.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{info, warn};

use super::kv::{Active, Cas, Member};
use super::node::Node;
use super::quorum;
use crate::events::Event;

/// An operator's move that waits for the fencing rule gives up after three
/// leases, and within the 5 s the `failover` request waits for an answer.
fn request_patience(lease: Duration) -> Duration {
    (lease * 3).min(Duration::from_secs(4))
}

impl Node {
    /// Operator moves first, then the automatic rule.
    pub(super) async fn propose(&mut self) {
        let now = Instant::now();
        let settled = self.table.settled(&self.me, self.term, now);
        let pending = std::mem::take(&mut self.pending);
        for (r, at) in pending {
            if !settled || self.kv.is_none() {
                if now.duration_since(at) > request_patience(self.cl.lease) {
                    let who = self.table.waiting_for(&self.me, self.term, now).join(", ");
                    let _ = r.reply.send(Err(format!(
                        "the cluster did not settle: {who} neither confirmed term {} nor let its lease run out",
                        self.term
                    )));
                } else {
                    self.pending.push((r, at));
                }
                continue;
            }
            if self.cas(&r.backend, r.reason, None).await {
                let _ = r.reply.send(Ok(()));
            } else if now.duration_since(at) > request_patience(self.cl.lease) {
                let _ = r
                    .reply
                    .send(Err("the cluster's choice kept changing; try again".into()));
            } else {
                self.pending.push((r, at));
            }
        }
        if !self.pending.is_empty() || !settled {
            return;
        }
        let pool = self.shared.pool.borrow().clone();
        let mine = quorum::view_of(&pool);
        let others: Vec<&Member> = self.table.live_others(&self.me, now).collect();
        let cfg = self.shared.config();
        let want = quorum::automatic(&cfg, &pool, &mine, &others, self.cl.size, SystemTime::now());
        if let Some((to, votes)) = want {
            info!(cluster = %self.cl.name, to = %to, votes, "cluster: proposing a failover");
            self.cas(&to, "automatic", Some(votes)).await;
        }
    }

    /// Compare-and-set `active` to `to` on the current term. True if the
    /// cluster's backend is `to` afterwards.
    pub(super) async fn cas(&mut self, to: &str, reason: &str, votes: Option<usize>) -> bool {
        if self.active.as_ref().is_some_and(|a| a.backend == to) {
            return true;
        }
        let Some(kv) = self.kv.as_ref() else {
            return false;
        };
        let a = self.value(to, reason);
        match kv.cas_active(&a, self.term).await {
            Ok(Cas::Won(term)) => {
                let prev = self.active.as_ref().map(|a| a.backend.clone());
                self.emit_term(&a, term, prev, votes);
                self.follow(a, term);
                let _ = self.renew(true).await;
                true
            }
            Ok(Cas::Lost) => {
                info!(cluster = %self.cl.name, to, term = self.term, "cluster: another instance changed the term first");
                false
            }
            Err(e) => {
                warn!(cluster = %self.cl.name, to, error = %e, "cluster: proposal failed");
                false
            }
        }
    }

    pub(super) fn emit_term(
        &self,
        a: &Active,
        term: u64,
        previous: Option<String>,
        votes: Option<usize>,
    ) {
        self.shared.events.emit(
            Event::new("cluster.term")
                .with("cluster", self.cl.name.as_str())
                .with("term", term)
                .with("active", a.backend.as_str())
                .with_opt("previous", previous)
                .with("proposer", a.proposer.as_str())
                .with("reason", a.reason.as_str())
                .with_opt("votes", votes.map(|v| v as u64))
                .with("size", self.cl.size as u64),
        );
    }

    pub(super) fn refuse_requests(&mut self) {
        for (r, _) in self.pending.drain(..) {
            if self.active.as_ref().is_some_and(|a| a.backend == r.backend) {
                let _ = r.reply.send(Ok(()));
                continue;
            }
            let _ = r.reply.send(Err(format!(
                "this instance holds no lease in cluster {:?} (it cannot reach the bus): it cannot move the cluster",
                self.cl.name
            )));
        }
    }
}
