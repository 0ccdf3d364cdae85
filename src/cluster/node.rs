//! The cluster task of one instance. Every [`poll_interval`] (and when its
//! probes' view changes, or a move is requested) it does one round:
//! renew its lease, read `active` and follow a new term, read the members,
//! then decide whether this instance may relay ([`PoolState::fenced`]) and
//! whether to propose a move. A round stops at its first failed call; the
//! lease decides what a failure means.
//!
//! [`PoolState::fenced`]: crate::state::PoolState::fenced

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::join::{Check, Verdict};
use super::kv::{Active, Cas, Kv, Member};
use super::lease::{Lease, Table};
use super::{poll_interval, quorum, secs, MemberStatus, Refused, Status};
use crate::bus::rfc3339;
use crate::config::Cluster;
use crate::events::Event;
use crate::pool::move_to;
use crate::state::{FailoverRequest, Shared};

pub(super) async fn run(
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<FailoverRequest>,
) -> Result<(), Refused> {
    let cfg = shared.config();
    let Some(cl) = cfg.bus.cluster.clone() else {
        return Ok(());
    };
    let client = match connect(&cfg).await {
        Ok(c) => c,
        Err(e) => {
            error!(error = %format!("{e:#}"), cluster = %cl.name, "the cluster task cannot start; players stay held");
            return Ok(());
        }
    };
    info!(cluster = %cl.name, size = cl.size, lease = ?cl.lease, "cluster: joining");
    // After an upgrade: go on from the old process's term and lease (its
    // member key is this one's), so the others see no new member.
    let taken = shared
        .handover
        .cluster
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let grace = taken.as_ref().and_then(|t| t.lease_ok());
    // The same instance going on after an upgrade keeps its process id in
    // the bucket and is not checked again (`join.rs`).
    let upgraded = taken.is_some() || shared.handover.upgrades.load(Ordering::Relaxed) > 0;
    let boot = taken
        .as_ref()
        .and_then(|t| t.carried.boot.clone())
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    let order: Vec<String> = cfg.backends.iter().map(|b| b.name.clone()).collect();
    let check =
        (!upgraded).then(|| Check::new(&cfg.bus.instance, &boot, order, &cl.name, cl.lease));
    let lease = Lease::new(cl.lease, grace);
    let (term, active) = taken
        .map(|t| (t.carried.term, t.carried.active))
        .unwrap_or((0, None));
    if grace.is_some() {
        info!(cluster = %cl.name, term, "cluster: going on from the process before the upgrade");
    }
    let (deadline_tx, deadline_rx) = watch::channel(lease.deadline());
    tokio::spawn(super::watchdog::run(shared.clone(), deadline_rx));
    let mut node = Node {
        me: cfg.bus.instance.clone(),
        shared: shared.clone(),
        client,
        kv: None,
        table: Table::new(cl.lease),
        lease,
        deadline_tx,
        cl: cl.clone(),
        term,
        active,
        // Fenced (and `cluster.fenced`) if that lease runs out first.
        joined: grace.is_some(),
        settling: None,
        unknown: false,
        fenced_since: None,
        published: None,
        last_try: None,
        pending: Vec::new(),
        problem: None,
        boot,
        check,
        refused: None,
        shared_key: false,
        deferred: None,
    };
    let mut tick = tokio::time::interval(poll_interval(cl.lease));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pool_rx = shared.pool.subscribe();
    let shutdown = shared.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            Some(r) = requests.recv() => node.pending.push((r, Instant::now())),
            Ok(()) = pool_rx.changed() => {
                let view = quorum::view_of(&pool_rx.borrow_and_update());
                if node.published.as_ref().is_some_and(|(v, _)| *v == view) {
                    continue;
                }
            }
        }
        {
            // An upgrade's old process holds this from its last cluster
            // state to its end (`upgrade::old`).
            let _round = shared.handover.cluster_round.lock().await;
            node.round().await;
        }
        if let Some(why) = node.refused.take() {
            // Not `leave`: the member key is the other process's.
            error!(cluster = %cl.name, "cluster: {why}");
            return Err(Refused(why));
        }
    }
    node.leave().await;
    Ok(())
}

/// A client of its own: the cluster's calls never queue behind events.
async fn connect(cfg: &crate::config::Config) -> anyhow::Result<async_nats::Client> {
    let servers = crate::bus::server_addrs(&cfg.bus)?;
    let opts =
        crate::bus::connect_options(&cfg.bus, &format!("holdfast-cluster:{}", cfg.bus.instance))
            .await?
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(crate::bus::reconnect_delay);
    Ok(opts.connect(servers).await?)
}

pub(super) struct Node {
    pub(super) me: String,
    pub(super) shared: Arc<Shared>,
    pub(super) client: async_nats::Client,
    pub(super) kv: Option<Kv>,
    pub(super) table: Table,
    pub(super) lease: Lease,
    pub(super) deadline_tx: watch::Sender<Option<Instant>>,
    pub(super) cl: Cluster,
    /// The term this instance follows (0: none yet).
    pub(super) term: u64,
    pub(super) active: Option<Active>,
    /// A full round went through since the lease was last lost.
    pub(super) joined: bool,
    /// Moved to a new term: waiting for the others to confirm it.
    pub(super) settling: Option<u64>,
    /// The cluster's backend is not in this instance's config.
    pub(super) unknown: bool,
    /// When the lease was lost (for `cluster.fenced` / `cluster.rejoined`).
    pub(super) fenced_since: Option<Instant>,
    /// The view and term last stored.
    pub(super) published: Option<(std::collections::BTreeMap<String, Option<bool>>, u64)>,
    pub(super) last_try: Option<Instant>,
    pub(super) pending: Vec<(FailoverRequest, Instant)>,
    pub(super) problem: Option<String>,
    /// This process, in its member value ([`Member::boot`]).
    pub(super) boot: String,
    /// The start-up checks, until they pass (none after an upgrade).
    pub(super) check: Option<Check>,
    /// The start-up checks refused: the instance must not start.
    pub(super) refused: Option<String>,
    /// Another process was seen writing this instance's key (logged once).
    pub(super) shared_key: bool,
    /// A new term seen during an upgrade's handover, not followed: the new
    /// process follows it (it is carried at the end of the handover), or
    /// this one does at its next round if the upgrade failed.
    pub(super) deferred: Option<(u64, Active)>,
}

impl Node {
    async fn round(&mut self) {
        if let Err(e) = self.exchange().await {
            if self.problem.as_ref() != Some(&e) {
                warn!(cluster = %self.cl.name, error = %e, "cluster: the bucket cannot be reached");
            }
            self.problem = Some(e);
        } else {
            self.problem = None;
        }
        let now = Instant::now();
        self.fence(now);
        if self.joined && self.term != 0 && !self.lease.lost(now) && !self.unknown {
            // Fenced only while the others follow a new term: operator
            // moves wait for that (`propose` checks the fencing rule).
            self.propose().await;
        } else {
            self.refuse_requests();
        }
        self.publish_status();
    }

    /// Renew, read `active`, read the members. Stops at the first error.
    async fn exchange(&mut self) -> Result<(), String> {
        if self.kv.is_none() {
            if self.client.connection_state() != async_nats::connection::State::Connected {
                return Err("not connected to NATS".into());
            }
            let js = async_nats::jetstream::ContextBuilder::new()
                .timeout(self.op_timeout())
                .build(self.client.clone());
            let replicas = crate::bus::replica_candidates(&self.client, &self.shared.config().bus);
            self.kv = Some(Kv::open(&js, &self.cl.name, &replicas, self.op_timeout()).await?);
        }
        if let Some(check) = self.check.as_mut() {
            // Nothing is written before the start-up checks pass.
            let read = self.kv.as_ref().expect("opened above").members().await?;
            match check.observe(Instant::now(), &read) {
                Verdict::Wait => return Ok(()),
                Verdict::Go => self.check = None,
                Verdict::Refuse(why) => {
                    self.refused = Some(why);
                    return Ok(());
                }
            }
        }
        // Without a term yet, the first renewal waits until it is known:
        // a renewal with term 0 would look like a member that has not
        // confirmed the cluster's choice.
        if self.term != 0 {
            self.renew(false).await?;
        }
        let kv = self.kv.as_ref().expect("opened above");
        match kv.active().await? {
            None => {
                let a = self.value(&self.shared.config().preferred().name, "initial");
                if let Cas::Won(term) = kv.cas_active(&a, 0).await? {
                    self.emit_term(&a, term, None, None);
                    self.follow(a, term);
                }
            }
            // The old process of an upgrade, in its handover: its
            // sessions are frozen on the old backend and cannot move, so
            // it does not follow (its renewals keep the old term, and the
            // others wait for this instance as the fencing rule says). The
            // new process follows from its first round after `Commit`; a
            // failed upgrade follows here at the next round.
            Some((a, term)) if term > self.term && self.shared.handover.busy() => {
                if self.deferred.as_ref().map(|(t, _)| *t) != Some(term) {
                    info!(cluster = %self.cl.name, term, active = %a.backend, "cluster: new term during an upgrade's handover; followed once it ends");
                    self.deferred = Some((term, a));
                }
            }
            // A replica that lags may answer with an older revision.
            Some((a, term)) if term > self.term => self.follow(a, term),
            Some(_) => self.reconcile(),
        }
        if self.published.as_ref().is_none_or(|(_, t)| *t != self.term) {
            self.renew(true).await?;
        }
        let read = self.kv.as_ref().expect("opened above").members().await?;
        let now = Instant::now();
        let theirs = read
            .iter()
            .find(|(m, _)| m.instance == self.me && !m.boot.is_empty() && m.boot != self.boot);
        if let Some((m, _)) = theirs.filter(|_| !self.shared_key) {
            // Started at the same moment as this one, past the start-up
            // check: that one refuses; this one says so.
            error!(cluster = %self.cl.name, other = %m.boot, "cluster: another process writes this instance's member key; bus.instance must differ between instances");
            self.shared_key = true;
        }
        self.table.observe(now, read);
        for gone in self.table.long_gone(now) {
            if gone != self.me {
                let _ = self.kv.as_ref().expect("opened").remove(&gone).await;
            }
        }
        if !self.joined && !self.lease.lost(now) {
            self.joined = true;
            // Rejoining: relay only once nobody follows an older term.
            self.settling = Some(self.term);
        }
        Ok(())
    }

    fn op_timeout(&self) -> Duration {
        self.cl.lease / 4
    }

    pub(super) fn value(&self, backend: &str, reason: &str) -> Active {
        Active {
            backend: backend.to_string(),
            proposer: self.me.clone(),
            reason: reason.to_string(),
            time: rfc3339(SystemTime::now()),
        }
    }

    /// Stores this instance's member value when due (every lease / 3, or
    /// its view or term changed), or now with `force`.
    pub(super) async fn renew(&mut self, force: bool) -> Result<(), String> {
        let view = quorum::view_of(&self.shared.pool.borrow());
        let now = Instant::now();
        // After a failed renewal (`published` cleared) retry at every
        // round, not a third of a lease later.
        let due = force
            || self.published.is_none()
            || self.last_try.is_none_or(|t| now >= t + self.cl.lease / 3)
            || self.published.as_ref() != Some(&(view.clone(), self.term));
        if !due {
            return Ok(());
        }
        self.last_try = Some(now);
        let m = Member {
            instance: self.me.clone(),
            term: self.term,
            backends: view.clone(),
            time: rfc3339(SystemTime::now()),
            boot: self.boot.clone(),
            order: self
                .shared
                .config()
                .backends
                .iter()
                .map(|b| b.name.clone())
                .collect(),
        };
        if let Err(e) = self.kv.as_ref().ok_or("no bucket")?.renew(&m).await {
            self.published = None;
            return Err(e);
        }
        self.lease.renewed(now);
        self.deadline_tx.send_replace(self.lease.deadline());
        self.published = Some((view, self.term));
        Ok(())
    }

    /// A new term: move the sessions (held until the others confirm it).
    pub(super) fn follow(&mut self, a: Active, term: u64) {
        info!(cluster = %self.cl.name, term, active = %a.backend, proposer = %a.proposer, reason = %a.reason, "cluster: new term");
        self.deferred = None;
        self.term = term;
        self.active = Some(a);
        self.reconcile();
        let done: Vec<usize> = (0..self.pending.len())
            .filter(|&i| {
                self.active
                    .as_ref()
                    .is_some_and(|a| a.backend == self.pending[i].0.backend)
            })
            .collect();
        for i in done.into_iter().rev() {
            let (r, _) = self.pending.remove(i);
            let _ = r.reply.send(Ok(()));
        }
    }

    /// Puts the sessions on the cluster's backend if they are not (a new
    /// term, or a reload that brought the backend into this instance's
    /// config); one this instance does not know keeps its players held.
    fn reconcile(&mut self) {
        let Some(a) = self.active.clone() else {
            return;
        };
        let known = self.shared.config().backend(&a.backend).is_some();
        if !known && !self.unknown {
            error!(cluster = %self.cl.name, backend = %a.backend, "cluster: the cluster's active backend is not in this instance's [[backends]]; players stay held");
        }
        self.unknown = !known;
        if known && self.shared.pool.borrow().active != a.backend {
            move_to(&self.shared, &a.backend, &a.reason, Some(self.term), true);
            self.settling = Some(self.term);
        }
    }

    /// Sets [`PoolState::fenced`](crate::state::PoolState::fenced) from the
    /// lease, the fencing rule and the config; emits `cluster.fenced` and
    /// `cluster.rejoined`.
    fn fence(&mut self, now: Instant) {
        let lost = self.lease.lost(now);
        if lost && self.joined {
            self.joined = false;
            self.fenced_since = Some(now);
            let age = self.lease.age(now).map(secs);
            warn!(cluster = %self.cl.name, last_renewal_s = ?age, "cluster: lease lost; pausing players (holding those not relaying)");
            self.shared.events.emit(
                Event::new("cluster.fenced")
                    .with("cluster", self.cl.name.as_str())
                    .with("term", self.term)
                    .with("lease_s", secs(self.cl.lease))
                    .with_opt("last_renewal_s", age)
                    .with("held", self.shared.registry.counts().0 as u64),
            );
        }
        if let Some(t) = self.settling {
            if self.joined && self.table.settled(&self.me, t, now) {
                self.settling = None;
            } else if self.joined {
                debug!(term = t, waiting_for = ?self.table.waiting_for(&self.me, t, now), "cluster: waiting for the others to follow");
            }
        }
        let fenced = lost || !self.joined || self.settling.is_some() || self.unknown;
        if !fenced {
            if let Some(since) = self.fenced_since.take() {
                info!(cluster = %self.cl.name, term = self.term, "cluster: rejoined");
                self.shared.events.emit(
                    Event::new("cluster.rejoined")
                        .with("cluster", self.cl.name.as_str())
                        .with("term", self.term)
                        .with_opt("active", self.active.as_ref().map(|a| a.backend.clone()))
                        .with("fenced_for_s", secs(now - since)),
                );
            }
        }
        let lease = &self.lease;
        self.shared.pool.send_if_modified(|st| {
            let f = fenced || lease.lost(Instant::now());
            let changed = st.fenced != f;
            st.fenced = f;
            changed
        });
    }

    fn publish_status(&self) {
        let now = Instant::now();
        let members = self
            .table
            .members()
            .map(|s| MemberStatus {
                instance: s.value.instance.clone(),
                term: s.value.term,
                alive: self.table.alive(s, now),
                lease_age_s: secs(now.saturating_duration_since(s.at)),
                backends: s.value.backends.clone(),
            })
            .collect();
        let st = Status {
            name: self.cl.name.clone(),
            size: self.cl.size,
            lease_s: secs(self.cl.lease),
            term: self.term,
            active: self.active.as_ref().map(|a| a.backend.clone()),
            proposer: self.active.as_ref().map(|a| a.proposer.clone()),
            fenced: self.shared.pool.borrow().fenced,
            lease_age_s: self.lease.age(now).map(secs),
            problem: self.problem.clone(),
            replicas: self.kv.as_ref().map(Kv::replicas),
            members,
            active_value: self.active.clone(),
            lease_ok: self.lease.last_ok(),
            boot: self.boot.clone(),
            deferred: self.deferred.clone(),
        };
        *self
            .shared
            .cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(st);
    }

    /// Removes this instance's key so the others need not wait for its
    /// lease to run out; not after an upgrade, whose new process renews the
    /// same key.
    async fn leave(&self) {
        if self.shared.handover.busy() {
            return;
        }
        if let Some(kv) = &self.kv {
            match kv.remove(&self.me).await {
                Ok(()) => info!(cluster = %self.cl.name, "cluster: left"),
                Err(e) => debug!(error = %e, "cluster: could not remove the member key"),
            }
        }
    }
}
