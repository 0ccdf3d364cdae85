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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::degraded::{Alive, Degraded};
pub use super::degraded::{DEGRADED_WARN_EVERY, LOGIN_RETRY};
pub use super::probe::ProbeError;
use super::probe::{self, LoginOutcome, ProbeConn};
use crate::config::{Backend, Config, Heartbeat};
use crate::login::render_login;
use crate::secret::Secret;

/// Queued immediate-check requests before senders wait.
const CHECK_QUEUE: usize = 1024;

/// Probe generations, unique in the process.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// What a [`ProbeReport`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// The backend is up.
    Up,
    /// The backend is down.
    Down,
    /// The backend is up but the probe is degraded (see the module docs).
    Degraded,
    /// The probe is no longer degraded.
    Healthy,
}

/// A probe's state change, sent to the failover manager.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Backend name.
    pub name: String,
    /// The generation of the probe that sent it ([`ProbeHandle::generation`]):
    /// a report from another generation than the running probe's is stale.
    pub generation: u64,
    /// What changed.
    pub kind: ReportKind,
    /// Why (for `Down`: the failure; for `Degraded`: what is wrong).
    pub reason: String,
}

/// An immediate check: the caller's connection time and where to answer.
type CheckRequest = (Instant, oneshot::Sender<bool>);

/// Handle to a running probe.
#[derive(Clone, Debug)]
pub struct ProbeHandle {
    check_tx: mpsc::Sender<CheckRequest>,
    /// Cancels the probe task.
    pub cancel: CancellationToken,
    /// The backend it probes (a changed address needs a new probe).
    pub backend: Backend,
    /// This probe's generation, carried by its reports.
    pub generation: u64,
    /// The game's connect screen as the probe last saw it (telnet removed),
    /// kept while `listen.lazy_connect` is on.
    screen: Arc<std::sync::Mutex<Option<Arc<[u8]>>>>,
}

impl ProbeHandle {
    /// Asks for an immediate probe and returns whether the backend answered.
    /// A failed immediate probe marks the backend down at once, whatever
    /// `fall` says: a dropped session plus a failed probe is strong evidence.
    ///
    /// `since` is when the caller's own connection to the backend was made:
    /// the answer is "alive" only if the probe's logged-in connection (or
    /// the one it replaced while that was still open) is older than that
    /// and the game still answers. A game that was restarted in the
    /// meantime (a supervisor can do that within milliseconds) answers on a
    /// new probe connection, which proves nothing about the old process the
    /// caller was talking to. Without a logged-in probe connection only
    /// "the game shows its connect screen" is known.
    pub async fn check_now(&self, since: Instant) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.check_tx.send((since, tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// The game's connect screen as the probe last saw it, if kept.
    pub fn screen(&self) -> Option<Arc<[u8]>> {
        self.screen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The game's connect screen as a player's own connection showed it
    /// (the player waited at it: nothing was typed before the game went
    /// quiet). Kept for lazy connect like the probe's: it seeds the cache
    /// when the probe could not get a screen (the game's places for
    /// connections at its connect screen were all taken by players) and
    /// replaces a screen the game has since changed.
    pub fn seen_screen(&self, text: Arc<[u8]>) {
        let mut kept = self.screen.lock().unwrap_or_else(|e| e.into_inner());
        if kept.as_deref() != Some(&text[..]) {
            debug!(backend = %self.backend.name, bytes = text.len(), "connect screen kept for lazy connect (a player's connection showed it)");
            *kept = Some(text);
        }
    }
}

/// Starts the probe task for `backend`. `known`: its state as already
/// known (taken over from an older process in an upgrade), so that the
/// new probe needs `heartbeat.fall` failures to mark it down, as the old
/// one did, rather than one; `None` at a start.
pub fn spawn(
    backend: Backend,
    config: watch::Receiver<Arc<Config>>,
    report: mpsc::Sender<ProbeReport>,
    cancel: CancellationToken,
    known: Option<bool>,
) -> ProbeHandle {
    let (check_tx, check_rx) = mpsc::channel(CHECK_QUEUE);
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let screen = Arc::default();
    let probe = Probe {
        screen: Arc::clone(&screen),
        backend: backend.clone(),
        generation,
        config,
        report,
        cancel: cancel.clone(),
        conn: None,
        state: known,
        oks: 0,
        fails: 0,
        degraded: Degraded::default(),
    };
    tokio::spawn(probe.run(check_rx));
    ProbeHandle {
        check_tx,
        cancel,
        backend,
        generation,
        screen,
    }
}

struct Probe {
    /// See [`ProbeHandle::screen`].
    screen: Arc<std::sync::Mutex<Option<Arc<[u8]>>>>,
    backend: Backend,
    generation: u64,
    config: watch::Receiver<Arc<Config>>,
    report: mpsc::Sender<ProbeReport>,
    cancel: CancellationToken,
    conn: Option<ProbeConn>,
    state: Option<bool>,
    oks: u32,
    fails: u32,
    degraded: Degraded,
}

impl Probe {
    async fn run(mut self, mut check_rx: mpsc::Receiver<CheckRequest>) {
        let name = self.backend.name.clone();
        let mut period = self.config.borrow().heartbeat.interval;
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let cancel = self.cancel.clone();
        loop {
            // Every branch is cancel-safe: `tick`, `recv`, `readable` and
            // `cancelled` lose nothing when another branch wins.
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = interval.tick() => {
                    let r = self.timed_probe().await;
                    self.record(r, false).await;
                }
                req = check_rx.recv() => {
                    let Some(first) = req else { break };
                    let mut waiters = vec![first];
                    while let Ok(w) = check_rx.try_recv() {
                        waiters.push(w);
                    }
                    let r = self.timed_probe().await;
                    let ok = r.is_ok();
                    // The age of the logged-in connection tells whether the
                    // game process is the one the waiters were connected to.
                    let conn_since = self.conn.as_ref().map(|c| c.since);
                    self.record(r, true).await;
                    debug!(backend = %name, ok, waiters = waiters.len(), "immediate check");
                    for (since, w) in waiters {
                        let same_process = conn_since.is_none_or(|c| c <= since);
                        if ok && !same_process {
                            debug!(backend = %name, "game answers, but on a newer connection: it restarted");
                        }
                        let _ = w.send(ok && same_process);
                    }
                    interval.reset();
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
            self.conn = None;
            return true;
        }
        c.buf.clear();
        c.buf.reserve(4096);
        match c.stream.try_read_buf(&mut c.buf) {
            Ok(0) => {
                self.conn = None;
                true
            }
            Ok(_) => {
                c.buf.clear();
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(_) => {
                self.conn = None;
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

    /// One probe: ask on the logged-in connection; if it does not answer,
    /// replace it (fresh connection, connect screen, fresh login).
    async fn probe_once(&mut self) -> Result<Alive, ProbeError> {
        let cfg = self.config.borrow().clone();
        let hb = &cfg.heartbeat;
        let Some(user) = hb.user.clone() else {
            self.conn = None;
            self.screen(&cfg).await?;
            return Ok(Alive::ConnectOnly);
        };
        if self.degraded.login_held(hb, Instant::now()) {
            self.conn = None;
            self.screen(&cfg).await?;
            return Ok(Alive::LoginHeld);
        }
        let mut lineage = None;
        if let Some(c) = self.conn.as_mut() {
            let deadline = Instant::now() + hb.timeout;
            match probe::ask(c, &cfg.templates.probe, deadline, None).await {
                Ok(_) => return Ok(Alive::Answered),
                Err(ProbeError::NoAnswer) => {
                    // Still open, so still the same game process: a stuck
                    // or starved connection, or a frozen game. The connect
                    // screen of a new connection tells which.
                    debug!(backend = %self.backend.name, "probe connection does not answer; replacing it");
                    lineage = Some(c.since);
                }
                Err(e) => {
                    debug!(backend = %self.backend.name, error = %e, "probe connection lost; opening a new one");
                }
            }
            self.conn = None;
        }
        self.fresh(&cfg, &user, lineage).await
    }

    /// Opens a connection and waits for the connect screen. Returns the
    /// connection and the refusal line the game sent instead, if any.
    async fn screen(&self, cfg: &Config) -> Result<(ProbeConn, Option<String>), ProbeError> {
        let allowed = cfg.templates.banner_wait + cfg.heartbeat.timeout;
        let deadline = Instant::now() + allowed;
        let mut c = probe::open(&self.backend, cfg, deadline).await?;
        let mut screen = Vec::new();
        let keep = cfg.listen.lazy_connect.then_some(&mut screen);
        let refused =
            probe::banner(&mut c, deadline, allowed, &cfg.templates.refused, keep).await?;
        let mut kept = self.screen.lock().unwrap_or_else(|e| e.into_inner());
        if !cfg.listen.lazy_connect {
            *kept = None;
        } else if !screen.is_empty() && kept.as_deref() != Some(&screen[..]) {
            debug!(backend = %self.backend.name, bytes = screen.len(), "connect screen kept for lazy connect");
            *kept = Some(screen.into());
        }
        Ok((c, refused))
    }

    /// A fresh probe connection: connect screen, login, first probe. Once
    /// the connect screen came the game is alive, whatever the login does.
    async fn fresh(
        &mut self,
        cfg: &Config,
        user: &str,
        lineage: Option<Instant>,
    ) -> Result<Alive, ProbeError> {
        let (mut c, refused) = self.screen(cfg).await?;
        if let Some(line) = refused {
            return Ok(Alive::Refused(line));
        }
        let hb = &cfg.heartbeat;
        let deadline = Instant::now() + hb.timeout;
        if cfg.templates.sync {
            if let Err(e) = probe::sync(&mut c, &cfg.templates.probe, deadline).await {
                return Ok(Alive::Screen(format!("sync: {e}")));
            }
        }
        let pw = hb.password.clone().unwrap_or_else(|| Secret::new(""));
        let line = render_login(&cfg.templates.login, "connect", user, &pw);
        if let Err(e) = probe::write(&mut c, &line, deadline).await {
            return Ok(Alive::Screen(e.to_string()));
        }
        if let Some(s) = lineage {
            c.since = s;
        }
        let failure = &cfg.templates.login_failure;
        match probe::ask(&mut c, &cfg.templates.probe, deadline, Some(failure)).await {
            Ok(LoginOutcome::Answered) => {
                self.conn = Some(c);
                Ok(Alive::Answered)
            }
            Ok(LoginOutcome::Rejected(line)) => {
                if probe::matching_line(line.as_bytes(), &cfg.templates.refused).is_some() {
                    Ok(Alive::Refused(line))
                } else {
                    Ok(Alive::Rejected(line))
                }
            }
            // A slow login is kept: the next probe asks it again.
            Err(ProbeError::NoAnswer) => {
                self.conn = Some(c);
                Ok(Alive::Screen("login not confirmed in time".into()))
            }
            Err(e) => Ok(Alive::Screen(e.to_string())),
        }
    }
}

async fn readable(conn: &Option<ProbeConn>) -> std::io::Result<()> {
    match conn {
        Some(c) => c.stream.readable().await,
        None => std::future::pending().await,
    }
}
