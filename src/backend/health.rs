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
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::coverage::{Carried, Coverage};
use super::degraded::{Alive, Degraded};
pub use super::degraded::{DEGRADED_WARN_EVERY, LOGIN_RETRY};
pub use super::probe::ProbeError;
use super::probe::{self, LoginOutcome, ProbeConn};
use crate::config::{Backend, Config, Heartbeat};
use crate::login::render_login;
use crate::quiet::QuietNames;
use crate::secret::Secret;

/// Queued immediate-check requests before senders wait.
const CHECK_QUEUE: usize = 1024;

/// How long a session's connect waits for its backend's probe to stamp
/// its first connection (only right after holdfast starts: once stamped,
/// never again). The probe task starts before any player is accepted, so
/// this is the time it takes to be scheduled, not a network round trip.
pub const FIRST_STAMP_WAIT: Duration = Duration::from_millis(250);

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

/// An immediate check: when the caller's game connection was made, when
/// its close was noticed, and where to answer.
type CheckRequest = (Instant, Instant, oneshot::Sender<bool>);

/// What a parked probe hands over (see [`ProbeHandle::park`]).
pub struct Parked {
    /// Its coverage, relative to the moment it parked.
    pub coverage: Carried,
    /// A duplicate of its logged-in connection, if it had one.
    pub conn: Option<super::handover::Sock>,
}

/// A request to park, and where the answer goes.
type Park = oneshot::Sender<Parked>;

/// What a new process takes over for one probe.
pub struct Inherited {
    /// The coverage, as of the moment it was taken.
    pub coverage: Coverage,
    /// The logged-in connection, if the old probe had one.
    pub conn: Option<super::connect::BackendStream>,
}

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
    /// True once the probe stamped its first connection.
    stamped: watch::Receiver<bool>,
    /// Parks the probe for an upgrade.
    park_tx: mpsc::Sender<Park>,
    /// The parked probe's verdict: true when the new process took over.
    verdict: Arc<Mutex<Option<oneshot::Sender<bool>>>>,
}

impl ProbeHandle {
    /// Waits (at most `limit`) until the probe has stamped its first
    /// connection: a game connection made after it is covered.
    pub async fn first_stamp(&self, limit: Duration) {
        if *self.stamped.borrow() {
            return;
        }
        let t0 = Instant::now();
        let mut rx = self.stamped.clone();
        let stamped = tokio::time::timeout(limit, rx.wait_for(|s| *s))
            .await
            .is_ok();
        debug!(backend = %self.backend.name, stamped, waited_us = t0.elapsed().as_micros() as u64,
            "waited for the probe's first connection");
    }

    /// Parks the probe for an upgrade: it stops using its connection and
    /// hands over a duplicate of it with its coverage; while parked it
    /// answers immediate checks by peeking at the connection. It stays
    /// parked until [`ProbeHandle::settle`]. `None`: the probe has ended.
    pub async fn park(&self) -> Option<Parked> {
        let (tx, rx) = oneshot::channel();
        self.park_tx.send(tx).await.ok()?;
        rx.await.ok()
    }

    /// Ends a parked probe (`committed`: the new process owns its
    /// connection) or lets it carry on.
    pub fn settle(&self, committed: bool) {
        let v = self
            .verdict
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(v) = v {
            let _ = v.send(committed);
        }
    }

    /// Asks for an immediate probe and returns whether the backend answered.
    /// A failed immediate probe marks the backend down at once, whatever
    /// `fall` says: a dropped session plus a failed probe is strong evidence.
    ///
    /// `since` is when the caller's own connection to the backend was made:
    /// the answer is "alive" only if the game answers and the probe's
    /// coverage judges the process the same one the caller was talking to
    /// (`backend::coverage`): a game restarted meanwhile (a supervisor can
    /// do that within milliseconds) answers too, but is not the same.
    pub async fn check_now(&self, since: Instant) -> bool {
        let (tx, rx) = oneshot::channel();
        let closed = Instant::now();
        if self.check_tx.send((since, closed, tx)).await.is_err() {
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
    /// Quit, boot or crash: see `backend::coverage`.
    coverage: Coverage,
    /// Set once the first connection was stamped.
    stamped: watch::Sender<bool>,
    quiet: Arc<QuietNames>,
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
    fn on_lost(&mut self) {
        self.conn = None;
        self.coverage.lost(Instant::now());
        self.hold_heartbeat_news();
    }

    fn hold_heartbeat_news(&self) {
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

    /// One probe (see [`Probe::probe_inner`]); a probe that found no game
    /// at all is a break in coverage.
    async fn probe_once(&mut self) -> Result<Alive, ProbeError> {
        let r = self.probe_inner().await;
        if r.is_err() {
            self.coverage.down(Instant::now());
        }
        r
    }

    /// Ask on the logged-in connection; if it does not answer, replace it
    /// (fresh connection, connect screen, fresh login).
    async fn probe_inner(&mut self) -> Result<Alive, ProbeError> {
        let cfg = self.config.borrow().clone();
        let hb = &cfg.heartbeat;
        let Some(user) = hb.user.clone() else {
            self.conn = None;
            self.screen(&cfg).await?;
            return Ok(Alive::ConnectOnly);
        };
        if self.degraded.login_held(hb, Instant::now()) {
            if self.conn.is_some() {
                self.on_lost();
            }
            self.screen(&cfg).await?;
            return Ok(Alive::LoginHeld);
        }
        let mut old = None;
        if let Some(c) = self.conn.as_mut() {
            let deadline = Instant::now() + hb.timeout;
            match probe::ask(c, &cfg.templates.probe, deadline, None, false).await {
                Ok(_) => {
                    let now = Instant::now();
                    if c.proven {
                        self.coverage.answered(now);
                    } else {
                        // A login that was slow to confirm.
                        c.proven = true;
                        self.coverage.fresh(c.since, now, None, false);
                    }
                    return Ok(Alive::Answered);
                }
                Err(ProbeError::NoAnswer) => {
                    // Still open, so still the same game process: a stuck
                    // or starved connection, or a frozen game. The connect
                    // screen of a new connection tells which; the old one
                    // is kept open until the new one logged in, to prove
                    // the two overlapped.
                    debug!(backend = %self.backend.name, "probe connection does not answer; replacing it");
                    old = self.conn.take();
                }
                Err(e) => {
                    debug!(backend = %self.backend.name, error = %e, "probe connection lost; opening a new one");
                    self.on_lost();
                }
            }
        }
        let r = self.fresh(&cfg, &user, old.as_ref()).await;
        if old.is_some() {
            // The game announces the old connection's logout.
            self.hold_heartbeat_news();
            if !self.conn.as_ref().is_some_and(|c| c.proven) && r.is_ok() {
                self.coverage.lost(Instant::now());
            }
        }
        r
    }

    /// Opens a connection and waits for the connect screen. Returns the
    /// connection and the refusal line the game sent instead, if any.
    async fn screen(&self, cfg: &Config) -> Result<(ProbeConn, Option<String>), ProbeError> {
        let allowed = cfg.templates.banner_wait + cfg.heartbeat.timeout;
        let deadline = Instant::now() + allowed;
        // `open` stamps the connection before connecting: from here on a
        // session's game connection is younger than the probe's.
        self.stamped
            .send_if_modified(|s| !std::mem::replace(s, true));
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

    /// A fresh probe connection: connect screen, login, first probe (which
    /// reads the game's identity where the flavor has one). Once the
    /// connect screen came the game is alive, whatever the login does.
    /// `old`: the connection it replaces, still open (for the coverage).
    async fn fresh(
        &mut self,
        cfg: &Config,
        user: &str,
        old: Option<&ProbeConn>,
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
        // The game tells everyone this login: not news.
        self.quiet.hold_always(user);
        if let Err(e) = probe::write(&mut c, &line, deadline).await {
            return Ok(Alive::Screen(e.to_string()));
        }
        let failure = &cfg.templates.login_failure;
        let t = &cfg.templates;
        let (confirm, whole_line) = match t.identity.is_empty() {
            true => (&t.probe, false),
            false => (&t.identity, true),
        };
        match probe::ask(&mut c, confirm, deadline, Some(failure), whole_line).await {
            Ok(LoginOutcome::Answered(rest)) => {
                let identity = whole_line.then(|| identity(&rest)).flatten();
                let overlapped = old.is_some_and(|o| o.still_open());
                let now = Instant::now();
                let went_on = self.coverage.fresh(c.since, now, identity, overlapped);
                debug!(backend = %self.backend.name, coverage_went_on = went_on,
                    identity = ?self.coverage.identity(), "heartbeat logged in");
                c.proven = true;
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

/// The game's identity from the rest of the confirmation line: none if
/// empty or an error (`#-1 FUNCTION (STARTTIME) NOT FOUND`).
fn identity(rest: &str) -> Option<String> {
    let rest = rest.trim();
    (!rest.is_empty() && !rest.starts_with("#-1")).then(|| rest.to_string())
}

async fn readable(conn: &Option<ProbeConn>) -> std::io::Result<()> {
    match conn {
        Some(c) => c.stream.readable().await,
        None => std::future::pending().await,
    }
}
