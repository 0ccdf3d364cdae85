//! The failover manager: owns the probes, turns their reports into the
//! [`PoolState`](crate::state::PoolState) every session watches, and decides which backend is active.
//!
//! Rules (SPEC "Failover"): the first backend is preferred and is active
//! while it is up. If the active backend has been down for `failover.after`
//! and another is up, the first one up in preference order becomes active.
//! `failover.failback` moves sessions back to the preferred backend when it
//! returns. A reload whose preferred backend differs from the old one moves
//! everyone to the new one (manual failover), as does a `failover` request.
//!
//! In a cluster (`bus.cluster`) this instance does not choose alone: the
//! manager still runs the probes and keeps [`PoolState`](crate::state::PoolState) up to date, but
//! every move goes through `crate::cluster`, which proposes it to the other
//! instances and calls [`move_to`] when the cluster agreed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::backend::health::{self, ProbeReport, ReportKind};
use crate::config::Config;
use crate::events::Event;
use crate::state::{BackendView, FailoverRequest, Shared};

/// The probes' reports, made before the failover manager runs so that the
/// probes start first (before any player is accepted, and in an upgrade
/// before the first session is taken over).
pub struct Reports {
    tx: mpsc::Sender<ProbeReport>,
    rx: mpsc::Receiver<ProbeReport>,
}

/// Starts a probe for every configured backend, from what an older
/// process handed over where it probed the same address.
pub fn start_probes(
    shared: &Arc<Shared>,
    mut inherited: HashMap<String, crate::backend::handover::Inherit>,
) -> Reports {
    let (tx, rx) = mpsc::channel::<ProbeReport>(256);
    let cfg = shared.config();
    let mut probes = shared.probes.lock();
    for b in &cfg.backends {
        if probes.contains_key(&b.name) {
            continue;
        }
        let inh = inherited
            .remove(&b.name)
            .filter(|i| i.addr == b.addr.to_string())
            .map(|i| i.inherited);
        probes.insert(b.name.clone(), spawn_probe(shared, b, tx.clone(), inh));
    }
    Reports { tx, rx }
}

/// Starts the probe of `b` (its state as known after an upgrade).
fn spawn_probe(
    shared: &Arc<Shared>,
    b: &crate::config::Backend,
    report: mpsc::Sender<ProbeReport>,
    inherited: Option<health::Inherited>,
) -> health::ProbeHandle {
    // Known only after an upgrade (`upgrade::new::adopt`).
    let known = shared
        .pool
        .borrow()
        .backends
        .iter()
        .find(|v| v.name == b.name && v.addr == b.addr.to_string())
        .and_then(|v| v.up);
    health::spawn(
        b.clone(),
        health::Start {
            config: shared.config.subscribe(),
            report,
            cancel: shared.shutdown.child_token(),
            known,
            quiet: Arc::clone(&shared.quiet),
            inherited,
        },
    )
}

/// Runs the failover manager until shutdown.
/// With `cluster`, moves are proposed to the cluster task instead of made.
pub async fn run(
    shared: Arc<Shared>,
    mut failover_rx: mpsc::Receiver<FailoverRequest>,
    cluster: Option<mpsc::Sender<FailoverRequest>>,
    reports: Reports,
) {
    let Reports {
        tx: report_tx,
        rx: mut report_rx,
    } = reports;
    let mut config_rx = shared.config.subscribe();
    let mut mgr = Manager {
        shared: shared.clone(),
        report_tx,
        down_since: HashMap::new(),
        config: shared.config(),
        cluster,
    };
    mgr.sync_probes();
    let shutdown = shared.shutdown.clone();
    loop {
        let deadline = mgr.failover_deadline();
        // All branches are cancel-safe (channel receives, `changed`, a sleep).
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(r) = report_rx.recv() => mgr.on_report(r),
            Some(req) = failover_rx.recv() => {
                let res = mgr.requested(&req);
                if let Err(e) = &res {
                    warn!(to = %req.backend, reason = req.reason, error = %e, "failover refused");
                }
                match (&mgr.cluster, res) {
                    // The cluster task answers once the cluster agreed.
                    (Some(c), Ok(())) => mgr.propose(c.clone(), req),
                    (_, res) => {
                        let _ = req.reply.send(res);
                    }
                }
            }
            Ok(()) = config_rx.changed() => {
                let cfg = config_rx.borrow_and_update().clone();
                mgr.on_config(cfg);
            }
            _ = sleep_until_opt(deadline) => {}
        }
        mgr.evaluate();
    }
    for (_, p) in shared.probes.lock().drain() {
        p.cancel.cancel();
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

struct Manager {
    shared: Arc<Shared>,
    report_tx: mpsc::Sender<ProbeReport>,
    /// Monotonic time each backend went down (for `failover.after`).
    down_since: HashMap<String, Instant>,
    config: Arc<Config>,
    /// `bus.cluster`: where moves are proposed.
    cluster: Option<mpsc::Sender<FailoverRequest>>,
}

impl Manager {
    /// Hands a move to the cluster task (which answers `req.reply`).
    fn propose(&self, cluster: mpsc::Sender<FailoverRequest>, req: FailoverRequest) {
        if let Err(e) = cluster.try_send(req) {
            let req = match e {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
            };
            let _ = req
                .reply
                .send(Err("the cluster task is busy or gone; try again".into()));
        }
    }

    /// Starts probes for new or changed backends and stops removed ones.
    fn sync_probes(&mut self) {
        let mut probes = self.shared.probes.lock();
        probes.retain(|name, p| {
            let keep = self.config.backend(name) == Some(&p.backend);
            if !keep {
                p.cancel.cancel();
            }
            keep
        });
        for b in &self.config.backends {
            if !probes.contains_key(&b.name) {
                let h = spawn_probe(&self.shared, b, self.report_tx.clone(), None);
                probes.insert(b.name.clone(), h);
            }
        }
    }

    fn on_config(&mut self, cfg: Arc<Config>) {
        let old_pref = self.config.preferred().name.clone();
        self.config = cfg.clone();
        self.sync_probes();
        self.shared
            .relogin_limiter
            .set_rate(cfg.relogin.rate, cfg.relogin.burst);
        // Rebuild the backend list in the new order, keeping what is known
        // of backends whose address did not change.
        self.shared.pool.send_modify(|st| {
            let old = std::mem::take(&mut st.backends);
            st.backends = cfg
                .backends
                .iter()
                .map(|b| {
                    let addr = b.addr.to_string();
                    old.iter()
                        .find(|o| o.name == b.name && o.addr == addr)
                        .cloned()
                        .unwrap_or(BackendView {
                            name: b.name.clone(),
                            addr,
                            up: None,
                            since: SystemTime::now(),
                            reason: "not probed yet".into(),
                            degraded: None,
                        })
                })
                .collect();
        });
        self.down_since.retain(|n, _| cfg.backend(n).is_some());
        let new_pref = cfg.preferred();
        let active = self.shared.pool.borrow().active.clone();
        if cfg.backend(&active).is_none() {
            // The active backend was removed: nowhere else to be.
            self.switch(&new_pref.name, "sighup");
        } else if new_pref.name != old_pref {
            let down = self
                .shared
                .pool
                .borrow()
                .refuses_move_to(&new_pref.name, &new_pref.addr.to_string());
            if down {
                // Moving everyone off a working game onto a dead one would
                // hold them all; reload.rs says so in `config.reloaded`.
                warn!(to = %new_pref.name, "new preferred backend is down; players stay where they are");
            } else {
                self.switch(&new_pref.name, "sighup");
            }
        }
    }

    /// An operator's failover request: refused for an unknown backend, and
    /// for one that is down unless forced.
    fn requested(&mut self, req: &FailoverRequest) -> Result<(), String> {
        let Some(b) = self.config.backend(&req.backend) else {
            return Err(format!("no backend named {:?}", req.backend));
        };
        let down = self
            .shared
            .pool
            .borrow()
            .refuses_move_to(&b.name, &b.addr.to_string());
        if down && !req.force {
            return Err(format!(
                "backend {:?} is down: players stay where they are (send \"force\": true to move them anyway)",
                req.backend
            ));
        }
        if self.cluster.is_none() {
            // In a cluster the run loop hands the request itself over.
            let to = b.name.clone();
            self.switch(&to, req.reason);
        }
        Ok(())
    }

    fn on_report(&mut self, r: ProbeReport) {
        let Some(b) = self.config.backend(&r.name) else {
            return;
        };
        // A probe cancelled by a reload can still deliver the report of a
        // probe it had started: only the running probe's reports count.
        let current = self.shared.probes.lock().get(&r.name).map(|p| p.generation);
        if current != Some(r.generation) {
            debug!(backend = %r.name, generation = r.generation, ?current, kind = ?r.kind, "stale probe report dropped");
            return;
        }
        let addr = b.addr.to_string();
        if matches!(r.kind, ReportKind::Degraded | ReportKind::Healthy) {
            let degraded = r.kind == ReportKind::Degraded;
            self.shared.pool.send_modify(|st| {
                if let Some(v) = st.backends.iter_mut().find(|v| v.name == r.name) {
                    v.degraded = degraded.then(|| r.reason.clone());
                }
            });
            self.shared.events.emit(
                Event::new("backend.degraded")
                    .with("backend", r.name.as_str())
                    .with("addr", addr)
                    .with("degraded", degraded)
                    .with("reason", r.reason.as_str()),
            );
            return;
        }
        let up = r.kind == ReportKind::Up;
        let mut down_for = None;
        if up {
            if let Some(t) = self.down_since.remove(&r.name) {
                down_for = Some(t.elapsed().as_secs_f64());
            }
        } else {
            self.down_since
                .entry(r.name.clone())
                .or_insert_with(Instant::now);
        }
        self.shared.pool.send_modify(|st| {
            if let Some(v) = st.backends.iter_mut().find(|v| v.name == r.name) {
                v.up = Some(up);
                v.since = SystemTime::now();
                v.reason = r.reason.clone();
            }
        });
        let ev = if up {
            Event::new("backend.up")
                .with("backend", r.name.as_str())
                .with("addr", addr)
                .with("reason", r.reason.as_str())
                .with_opt("down_for_s", down_for.map(|d| (d * 10.0).round() / 10.0))
        } else {
            Event::new("backend.down")
                .with("backend", r.name.as_str())
                .with("addr", addr)
                .with("reason", r.reason.as_str())
                .with("held", self.shared.registry.on_backend(&r.name) as u64)
        };
        self.shared.events.emit(ev);
    }

    /// When the active backend's failover timer runs out.
    fn failover_deadline(&self) -> Option<Instant> {
        let after = self.config.failover.after?;
        let active = self.shared.pool.borrow().active.clone();
        self.down_since.get(&active).map(|t| *t + after)
    }

    fn evaluate(&mut self) {
        if self.cluster.is_some() {
            // Automatic moves need the cluster's majority: its task decides.
            return;
        }
        let st = self.shared.pool.borrow().clone();
        let up = |n: &str| st.view(n).and_then(|v| v.up) == Some(true);
        let pref = self.config.preferred().name.clone();
        if self.config.failover.failback && st.active != pref && up(&pref) {
            self.switch(&pref, "automatic");
            return;
        }
        if up(&st.active) {
            return;
        }
        let Some(deadline) = self.failover_deadline() else {
            return;
        };
        if Instant::now() < deadline {
            return;
        }
        if let Some(to) = self
            .config
            .backends
            .iter()
            .find(|b| b.name != st.active && up(&b.name))
        {
            let to = to.name.clone();
            self.switch(&to, "automatic");
        }
    }

    /// Moves every session to `to`; in a cluster, proposes it instead.
    fn switch(&mut self, to: &str, reason: &'static str) {
        if let Some(c) = self.cluster.clone() {
            let (reply, rx) = tokio::sync::oneshot::channel();
            self.propose(
                c,
                FailoverRequest {
                    backend: to.to_string(),
                    reason,
                    force: true,
                    reply,
                },
            );
            let to = to.to_string();
            tokio::spawn(async move {
                if let Ok(Err(e)) = rx.await {
                    warn!(%to, reason, error = %e, "the cluster did not move");
                }
            });
            return;
        }
        move_to(&self.shared, to, reason, None, false);
    }
}

/// Moves every session to backend `to` (a new epoch) and emits `failover`.
/// `term` is the cluster's term that decided it, if any; `fence` keeps the
/// sessions held until the cluster task lifts [`PoolState::fenced`](crate::state::PoolState::fenced)
/// (set in the same change, so no session connects in between).
pub fn move_to(shared: &Shared, to: &str, reason: &str, term: Option<u64>, fence: bool) {
    let from = shared.pool.borrow().active.clone();
    if from == to {
        return;
    }
    if reason == "automatic" {
        warn!(%from, %to, ?term, "failover");
    } else {
        info!(%from, %to, reason, ?term, "failover");
    }
    shared.pool.send_modify(|st| {
        st.active = to.to_string();
        st.epoch += 1;
        st.fenced |= fence;
    });
    shared.events.emit(
        Event::new("failover")
            .with("from", from)
            .with("to", to)
            .with("reason", reason.to_string())
            .with_opt("term", term),
    );
}
