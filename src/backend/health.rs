//! One heartbeat probe per backend.
//!
//! The probe keeps a connection to the backend logged in as
//! `heartbeat.user` and, every `heartbeat.interval`, sends the flavor's
//! probe command with a fresh nonce (`think hf-…`); the nonce must come back
//! within `heartbeat.timeout`. `fall` consecutive failures mark the backend
//! down, `rise` successes up. Sessions whose backend connection closed ask
//! for an immediate check ([`ProbeHandle::check_now`]); every request
//! waiting when a probe starts is answered by that probe.
//!
//! **Down** means both: the logged-in probe failed, *and* a new connection
//! got no connect screen within `templates.banner_wait + heartbeat.timeout`.
//! A logged-in connection that stops answering is not evidence on its own:
//! TinyMUX refills a connection's command quota only over whole idle
//! seconds, so on a busy game the heartbeat player's `think` can wait
//! forever while the game runs fine. Such a connection is replaced (fresh
//! connection, fresh login) before anything is concluded.
//!
//! **Degraded** means the game is up but the probe cannot do its whole job:
//! the heartbeat login is rejected (then quit and crash look alike), the
//! game refuses holdfast's address, or only the connect screen has answered
//! for several probes in a row. It is reported (status, `backend.degraded`
//! event) and logged again every [`DEGRADED_WARN_EVERY`] until it is fixed.
//! A rejected login is not retried at every probe (each try is one more
//! failed login the game counts against holdfast's address, which every
//! player shares) but every [`LOGIN_RETRY`], or at once when the heartbeat
//! settings change.
//!
//! Without a heartbeat user every probe is a fresh connection that must
//! show the connect screen.
//!
//! Reports carry the generation of the probe that made them: a probe
//! cancelled by a reload (its address changed) may still be finishing a
//! probe, and its late report must not overwrite the new probe's.
//!
//! Whether a closed game connection was closed by the game itself (a
//! boot) or by a restart is judged from the probe's *coverage* of the game
//! (`backend::coverage`), which the probe keeps here: every answer, lost
//! connection, failed probe and the game's identity read at each login
//! go into it. A session's first connect waits (at most
//! [`FIRST_STAMP_WAIT`]) until the probe has stamped its first connection,
//! so that players who were waiting while holdfast started are covered.
//! In an upgrade the probe's connection and its coverage cross to the new
//! process (`backend::handover`); the old probe is *parked* meanwhile and
//! answers its sessions by peeking at the connection.
//!
//! The game announces the heartbeat player's every login and logout; those
//! are never news to players, so the heartbeat's name is held back always
//! ([`crate::quiet::QuietNames::hold_always`]), from before its first login.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::coverage::Coverage;
use super::degraded::{Alive, Degraded};
pub use super::degraded::{DEGRADED_WARN_EVERY, LOGIN_RETRY};
use super::probe::ProbeConn;
pub use super::probe::ProbeError;
use super::probes::{CheckRequest, Park, CHECK_QUEUE};
pub use super::probes::{
    Inherited, Parked, ProbeHandle, ProbeReport, ReportKind, FIRST_STAMP_WAIT,
};
use crate::config::{Backend, Config, Heartbeat};
use crate::quiet::QuietNames;

/// Probe generations, unique in the process.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// What a probe starts from besides its backend.
pub struct Start {
    /// The config, as it changes.
    pub config: watch::Receiver<Arc<Config>>,
    /// Where reports go.
    pub report: mpsc::Sender<ProbeReport>,
    /// Stops the probe.
    pub cancel: CancellationToken,
    /// The backend's state as already known (taken over from an older
    /// process in an upgrade), so that the new probe needs
    /// `heartbeat.fall` failures to mark it down, as the old one did,
    /// rather than one; `None` at a start.
    pub known: Option<bool>,
    /// Names whose announcements are held back (the heartbeat's, when its
    /// connection is replaced).
    pub quiet: Arc<QuietNames>,
    /// The old process's probe connection and coverage (an upgrade).
    pub inherited: Option<Inherited>,
}

/// Starts the probe task for `backend`.
pub fn spawn(backend: Backend, start: Start) -> ProbeHandle {
    let (check_tx, check_rx) = mpsc::channel(CHECK_QUEUE);
    let (park_tx, park_rx) = mpsc::channel(1);
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let screen = Arc::default();
    let (coverage, conn) = match start.inherited {
        Some(i) => (
            i.coverage,
            i.conn.map(|s| ProbeConn::inherited(s, Instant::now())),
        ),
        None => (Coverage::default(), None),
    };
    // A probe that took a logged-in connection over has stamped it.
    let (stamped_tx, stamped) = watch::channel(conn.is_some());
    let probe = Probe {
        screen: Arc::clone(&screen),
        backend: backend.clone(),
        generation,
        config: start.config,
        report: start.report,
        cancel: start.cancel.clone(),
        conn,
        state: start.known,
        oks: 0,
        fails: 0,
        degraded: Degraded::default(),
        coverage,
        stamped: stamped_tx,
        quiet: start.quiet,
    };
    let verdict = Arc::default();
    tokio::spawn(probe.run(check_rx, park_rx, Arc::clone(&verdict)));
    ProbeHandle {
        check_tx,
        cancel: start.cancel,
        backend,
        generation,
        screen,
        stamped,
        park_tx,
        verdict,
    }
}

/// A running probe: the heartbeat task's state (its rounds are
/// `round.rs`'s).
pub(super) struct Probe {
    /// See [`ProbeHandle::screen`].
    pub(super) screen: Arc<std::sync::Mutex<super::probes::ScreenCache>>,
    pub(super) backend: Backend,
    pub(super) generation: u64,
    pub(super) config: watch::Receiver<Arc<Config>>,
    pub(super) report: mpsc::Sender<ProbeReport>,
    pub(super) cancel: CancellationToken,
    pub(super) conn: Option<ProbeConn>,
    pub(super) state: Option<bool>,
    pub(super) oks: u32,
    pub(super) fails: u32,
    pub(super) degraded: Degraded,
    /// Quit, boot or crash: see `backend::coverage`.
    pub(super) coverage: Coverage,
    /// Set once the first connection was stamped.
    pub(super) stamped: watch::Sender<bool>,
    pub(super) quiet: Arc<QuietNames>,
}

impl Probe {
    async fn run(
        mut self,
        mut check_rx: mpsc::Receiver<CheckRequest>,
        mut park_rx: mpsc::Receiver<Park>,
        verdict: Arc<Mutex<Option<oneshot::Sender<bool>>>>,
    ) {
        let name = self.backend.name.clone();
        let mut period = self.config.borrow().heartbeat.interval;
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let cancel = self.cancel.clone();
        loop {
            // Every branch is cancel-safe: `tick`, `recv`, `readable` and
            // `cancelled` lose nothing when another branch wins. In order:
            // an upgrade waiting to park must not lose to a probe due.
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                park = park_rx.recv() => {
                    // Closed: no handle is left to ask this probe anything.
                    let Some(reply) = park else { break };
                    if self.park(reply, &mut check_rx, &verdict).await {
                        debug!(backend = %name, "probe handed over to the new process");
                        // Its connection is the new process's: only this
                        // process's descriptor closes.
                        break;
                    }
                    interval.reset();
                }
                req = check_rx.recv() => {
                    let Some(first) = req else { break };
                    let mut waiters = vec![first];
                    while let Ok(w) = check_rx.try_recv() {
                        waiters.push(w);
                    }
                    let r = self.timed_probe().await;
                    let ok = r.is_ok();
                    self.record(r, true).await;
                    debug!(backend = %name, ok, waiters = waiters.len(), "immediate check");
                    for (since, closed, w) in waiters {
                        let _ = w.send(ok && self.judge(since, closed));
                    }
                    interval.reset();
                }
                _ = interval.tick() => {
                    let r = self.timed_probe().await;
                    self.record(r, false).await;
                }
                r = readable(&self.conn) => {
                    // Output between probes (pages, shutdown messages) is
                    // drained; a closed connection is probed again at once,
                    // which reconnects or finds the backend gone.
                    if self.drain(r) {
                        let r = self.timed_probe().await;
                        self.record(r, false).await;
                        interval.reset();
                    }
                }
            }
            let p = self.config.borrow().heartbeat.interval;
            if p != period {
                period = p;
                interval = tokio::time::interval_at(Instant::now() + p, p);
                interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            }
        }
        debug!(backend = %name, generation = self.generation, "probe stopped");
    }

    /// The coverage's judgement for a game connection made at `since` whose
    /// close was noticed at `closed` (the game answers).
    fn judge(&self, since: Instant, closed: Instant) -> bool {
        let v = self.coverage.judge(since, closed);
        if v.same_process() {
            info!(backend = %self.backend.name, why = v.why(), "the game closed a connection itself");
        } else {
            info!(backend = %self.backend.name, why = v.why(), "the game restarted since that connection was made");
        }
        v.same_process()
    }

    /// Parks for an upgrade: hands its coverage and a duplicate of its
    /// connection over, then answers checks by peeking at the connection
    /// until the verdict. Returns true when the new process took over.
    async fn park(
        &mut self,
        reply: Park,
        check_rx: &mut mpsc::Receiver<CheckRequest>,
        verdict: &Mutex<Option<oneshot::Sender<bool>>>,
    ) -> bool {
        let now = Instant::now();
        let conn = self
            .conn
            .as_ref()
            .and_then(|c| super::handover::dup(&c.stream).ok());
        let (tx, mut rx) = oneshot::channel();
        *verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let parked = Parked {
            coverage: self.coverage.export(now),
            conn,
        };
        if reply.send(parked).is_err() {
            verdict.lock().unwrap_or_else(|e| e.into_inner()).take();
            return false;
        }
        debug!(backend = %self.backend.name, "probe parked for an upgrade");
        loop {
            // Cancel-safe: a oneshot, a channel receive, a token.
            tokio::select! {
                v = &mut rx => return v.unwrap_or(false),
                _ = self.cancel.cancelled() => return false,
                req = check_rx.recv() => {
                    let Some(first) = req else { return false };
                    let mut waiters = vec![first];
                    while let Ok(w) = check_rx.try_recv() {
                        waiters.push(w);
                    }
                    // The new process may be reading the connection: only
                    // peek. A crash closes it too.
                    let open = self.conn.as_ref().is_some_and(|c| c.still_open());
                    if !open {
                        self.coverage.lost(Instant::now());
                    }
                    for (since, closed, w) in waiters {
                        let _ = w.send(open && self.judge(since, closed));
                    }
                }
            }
        }
    }

    /// The logged-in connection is gone: a break in coverage, and the game
    /// will announce the heartbeat's logout and next login.
    pub(super) fn on_lost(&mut self) {
        self.conn = None;
        self.coverage.lost(Instant::now());
        self.hold_heartbeat_news();
    }

    pub(super) fn hold_heartbeat_news(&self) {
        if let Some(user) = self.config.borrow().heartbeat.user.as_deref() {
            self.quiet.hold_always(user);
        }
    }

    /// [`Probe::probe_once`], counted in the metrics.
    async fn timed_probe(&mut self) -> Result<Alive, ProbeError> {
        let t0 = Instant::now();
        let r = self.probe_once().await;
        crate::metrics::metrics().probe(&self.backend.name, t0.elapsed(), r.is_ok());
        r
    }

    /// Reads what is pending on the idle probe connection. Returns true if
    /// the connection is gone.
    fn drain(&mut self, r: std::io::Result<()>) -> bool {
        let Some(c) = self.conn.as_mut() else {
            return false;
        };
        if r.is_err() {
            self.on_lost();
            return true;
        }
        c.buf.clear();
        c.buf.reserve(4096);
        match c.stream.try_read_buf(&mut c.buf) {
            Ok(0) => {
                self.on_lost();
                true
            }
            Ok(_) => {
                c.buf.clear();
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(_) => {
                self.on_lost();
                true
            }
        }
    }

    async fn send(&self, kind: ReportKind, reason: String) {
        // The manager also drops reports by generation: the cancellation
        // may come while this one waits in the channel.
        let _ = self
            .report
            .send(ProbeReport {
                name: self.backend.name.clone(),
                generation: self.generation,
                kind,
                reason,
            })
            .await;
    }

    async fn record(&mut self, r: Result<Alive, ProbeError>, immediate: bool) {
        if self.cancel.is_cancelled() {
            // A reload replaced this probe while it was probing (its address
            // changed): what it found is about the old address.
            debug!(backend = %self.backend.name, generation = self.generation, "result of a cancelled probe dropped");
            return;
        }
        let cfg = self.config.borrow().clone();
        let (fall, rise) = (cfg.heartbeat.fall, cfg.heartbeat.rise);
        let new_state = match &r {
            Ok(_) => {
                self.oks += 1;
                self.fails = 0;
                if self.state != Some(true) && (self.oks >= rise || self.state.is_none()) {
                    Some(true)
                } else {
                    None
                }
            }
            Err(_) => {
                self.fails += 1;
                self.oks = 0;
                if self.state != Some(false)
                    && (self.fails >= fall || immediate || self.state.is_none())
                {
                    Some(false)
                } else {
                    None
                }
            }
        };
        if let Some(up) = new_state {
            self.state = Some(up);
            let reason = match &r {
                Ok(Alive::Answered) => "probe answered".to_string(),
                Ok(_) => "connect screen shown".to_string(),
                Err(e) => e.to_string(),
            };
            if up {
                info!(backend = %self.backend.name, addr = %self.backend.addr, "backend up");
                self.send(ReportKind::Up, reason).await;
            } else {
                warn!(backend = %self.backend.name, addr = %self.backend.addr, %reason, "backend down");
                self.send(ReportKind::Down, reason).await;
            }
        } else if let Err(e) = &r {
            debug!(backend = %self.backend.name, error = %e, fails = self.fails, "probe failed");
        }
        if let Ok(alive) = r {
            self.note_degraded(alive, &cfg.heartbeat).await;
        }
    }

    /// Updates the degraded state from a probe that found the game alive.
    async fn note_degraded(&mut self, alive: Alive, hb: &Heartbeat) {
        let step = self.degraded.note(alive, hb, Instant::now());
        if step.warn {
            let reason = self.degraded.reason().unwrap_or_default();
            warn!(backend = %self.backend.name, %reason, "heartbeat probe degraded");
        }
        if let Some(reason) = step.degraded {
            self.send(ReportKind::Degraded, reason).await;
        }
        if step.healthy {
            info!(backend = %self.backend.name, "heartbeat probe healthy again");
            self.send(ReportKind::Healthy, "probe answered".into())
                .await;
        }
    }
}

async fn readable(conn: &Option<ProbeConn>) -> std::io::Result<()> {
    match conn {
        Some(c) => c.stream.readable().await,
        None => std::future::pending().await,
    }
}
