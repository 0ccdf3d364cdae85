//! One heartbeat probe per backend.
//!
//! The probe keeps a connection to the backend logged in as
//! `heartbeat.user` and, every `heartbeat.interval`, sends the flavor's
//! probe command with a fresh nonce (`think hf-…`); the backend is alive if
//! the nonce comes back within `heartbeat.timeout`. `fall` consecutive
//! failures mark it down, `rise` successes up. Sessions whose backend
//! connection closed ask for an immediate check ([`ProbeHandle::check_now`]);
//! every request waiting when a probe starts is answered by that probe.
//!
//! Without a heartbeat user the probe opens a fresh connection each time and
//! counts any output (the connect screen) as alive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use memchr::memmem;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{timeout_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::connect::{connect, BackendStream};
use crate::clientip;
use crate::config::{Backend, ClientIpMode, Config};
use crate::login::{new_nonce, render_login, render_nonce};

/// Bytes of probe-connection output kept while looking for a nonce.
const PROBE_BUF_MAX: usize = 64 * 1024;
/// Queued immediate-check requests before senders wait.
const CHECK_QUEUE: usize = 1024;
/// `read_until`'s error when the deadline passes.
const NO_ANSWER: &str = "no answer before heartbeat.timeout";

/// A probe's state change, sent to the failover manager.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// Backend name.
    pub name: String,
    /// New state.
    pub up: bool,
    /// Why (for `down`: the failure).
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
}

impl ProbeHandle {
    /// Asks for an immediate probe and returns whether the backend answered.
    /// A failed immediate probe marks the backend down at once, whatever
    /// `fall` says: a dropped session plus a failed probe is strong evidence.
    ///
    /// `since` is when the caller's own connection to the backend was made:
    /// the answer is "alive" only if the probe's logged-in connection is
    /// older than that and still answers. A game that was restarted in the
    /// meantime (a supervisor can do that within milliseconds) answers on a
    /// new probe connection, which proves nothing about the old process
    /// the caller was talking to. Without a heartbeat user every probe is a
    /// fresh connection and only "the game accepts connections" is known.
    pub async fn check_now(&self, since: Instant) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.check_tx.send((since, tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

/// Starts the probe task for `backend`.
pub fn spawn(
    backend: Backend,
    config: watch::Receiver<Arc<Config>>,
    report: mpsc::Sender<ProbeReport>,
    cancel: CancellationToken,
) -> ProbeHandle {
    let (check_tx, check_rx) = mpsc::channel(CHECK_QUEUE);
    let probe = Probe {
        backend: backend.clone(),
        config,
        report,
        conn: None,
        state: None,
        oks: 0,
        fails: 0,
        login_warned: false,
    };
    tokio::spawn(probe.run(check_rx, cancel.clone()));
    ProbeHandle {
        check_tx,
        cancel,
        backend,
    }
}

struct ProbeConn {
    stream: BackendStream,
    buf: Vec<u8>,
    /// When this connection was opened (see [`ProbeHandle::check_now`]).
    since: Instant,
}

struct Probe {
    backend: Backend,
    config: watch::Receiver<Arc<Config>>,
    report: mpsc::Sender<ProbeReport>,
    conn: Option<ProbeConn>,
    state: Option<bool>,
    oks: u32,
    fails: u32,
    login_warned: bool,
}

impl Probe {
    async fn run(mut self, mut check_rx: mpsc::Receiver<CheckRequest>, cancel: CancellationToken) {
        let name = self.backend.name.clone();
        let mut interval = tokio::time::interval(self.config.borrow().heartbeat.interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut period = self.config.borrow().heartbeat.interval;
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
                    // With a heartbeat user the probe answered on its
                    // long-lived connection; its age tells whether the game
                    // process is the one the waiters were connected to.
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
        debug!(backend = %name, "probe stopped");
    }

    /// [`Probe::probe_once`], counted in the metrics.
    async fn timed_probe(&mut self) -> Result<(), String> {
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

    async fn record(&mut self, r: Result<(), String>, immediate: bool) {
        let cfg = self.config.borrow().clone();
        let (fall, rise) = (cfg.heartbeat.fall, cfg.heartbeat.rise);
        let new_state = match &r {
            Ok(()) => {
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
                Ok(()) => "probe answered".to_string(),
                Err(e) => e.clone(),
            };
            if up {
                info!(backend = %self.backend.name, addr = %self.backend.addr, "backend up");
            } else {
                warn!(backend = %self.backend.name, addr = %self.backend.addr, %reason, "backend down");
            }
            let _ = self
                .report
                .send(ProbeReport {
                    name: self.backend.name.clone(),
                    up,
                    reason,
                })
                .await;
        } else if let Err(e) = &r {
            debug!(backend = %self.backend.name, error = %e, fails = self.fails, "probe failed");
        }
    }

    /// One probe: (re)connect and log in if needed, send the probe command,
    /// wait for its nonce.
    async fn probe_once(&mut self) -> Result<(), String> {
        let cfg = self.config.borrow().clone();
        let hb = &cfg.heartbeat;
        let deadline = Instant::now() + hb.timeout;
        let Some(user) = hb.user.clone() else {
            // No heartbeat user: a fresh connection that shows its connect
            // screen is alive.
            self.conn = None;
            let mut c = self.open(&cfg, deadline).await?;
            return read_until(&mut c, deadline, |buf| !buf.is_empty()).await;
        };
        let mut fresh = false;
        if self.conn.is_none() {
            let mut c = self.open(&cfg, deadline).await?;
            if cfg.templates.sync {
                sync(&mut c, &cfg.templates.probe, deadline).await?;
            }
            let pw = hb
                .password
                .clone()
                .unwrap_or_else(|| crate::secret::Secret::new(""));
            let line = render_login(&cfg.templates.login, "connect", &user, &pw);
            write(&mut c, &line, deadline).await?;
            self.conn = Some(c);
            fresh = true;
        }
        let nonce = new_nonce();
        let cmd = render_nonce(&cfg.templates.probe, &nonce);
        let c = self.conn.as_mut().expect("connected above");
        c.buf.clear();
        let res = async {
            write(c, &cmd, deadline).await?;
            let failure = &cfg.templates.login_failure;
            let mut rejected = false;
            read_until(c, deadline, |buf| {
                if memmem::find(buf, nonce.as_bytes()).is_some() {
                    return true;
                }
                if fresh
                    && buf.split(|b| *b == b'\n').any(|l| {
                        let l = String::from_utf8_lossy(l);
                        let l = crate::login::strip_ansi(&l);
                        failure.iter().any(|re| re.is_match(l.trim_start()))
                    })
                {
                    rejected = true;
                    return true;
                }
                false
            })
            .await?;
            Ok::<bool, String>(rejected)
        }
        .await;
        match res {
            Ok(false) => Ok(()),
            Ok(true) => {
                // The game answered, so it is alive; but the heartbeat user
                // cannot log in, so quit-or-crash checks will be weaker.
                // Reconnect next time rather than probe a logged-out link.
                if !self.login_warned {
                    warn!(backend = %self.backend.name, user = %user,
                        "heartbeat login rejected: check heartbeat.user and its password");
                    self.login_warned = true;
                }
                self.conn = None;
                Ok(())
            }
            // A logged-in connection that was merely slow to answer is
            // kept: the game may be lagging, and the connection's age is
            // what tells a quit from a restart (see `check_now`). Anything
            // else, or a slow fresh login, starts over next time.
            Err(e) if e == NO_ANSWER && !fresh => Err(e),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    async fn open(&self, cfg: &Config, deadline: Instant) -> Result<ProbeConn, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        let t = self
            .backend
            .connect_timeout
            .min(left.max(Duration::from_millis(1)));
        let stream = connect(&self.backend.addr, t)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut c = ProbeConn {
            stream,
            buf: Vec::with_capacity(4096),
            since: Instant::now(),
        };
        // Games behind a PROXY header or PennMUSH's socket expect it on
        // every connection, the probe's too.
        if matches!(
            cfg.client_ip.mode,
            ClientIpMode::ProxyV1 | ClientIpMode::ProxyV2 | ClientIpMode::Pennmush
        ) {
            let me: SocketAddr = ([127, 0, 0, 1], 0).into();
            let pre = clientip::preamble(&cfg.client_ip, me, me, Some("holdfast-heartbeat"));
            write(&mut c, &pre, deadline).await?;
        }
        Ok(c)
    }
}

async fn readable(conn: &Option<ProbeConn>) -> std::io::Result<()> {
    match conn {
        Some(c) => c.stream.readable().await,
        None => std::future::pending().await,
    }
}

async fn write(c: &mut ProbeConn, data: &[u8], deadline: Instant) -> Result<(), String> {
    match timeout_at(deadline, c.stream.write_all(data)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write: {e}")),
        Err(_) => Err("write timed out".into()),
    }
}

/// For `templates.sync` (Evennia): sends the probe command, again every
/// [`crate::session::SYNC_RESEND`], until its nonce comes back, proving the
/// game has the connection and will not drop the login (Evennia drops input
/// that arrives before its Portal hands the connection to its Server).
async fn sync(c: &mut ProbeConn, template: &str, deadline: Instant) -> Result<(), String> {
    let nonce = new_nonce();
    let cmd = render_nonce(template, &nonce);
    loop {
        write(c, &cmd, deadline).await?;
        let step = (Instant::now() + crate::session::SYNC_RESEND).min(deadline);
        match read_until(c, step, |buf| memmem::find(buf, nonce.as_bytes()).is_some()).await {
            Ok(()) => {
                c.buf.clear();
                return Ok(());
            }
            Err(e) if e == NO_ANSWER && Instant::now() < deadline => {
                debug!("probe sync: nonce not back yet; sending it again");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads into `c.buf` until `done(buf)` or the deadline.
async fn read_until(
    c: &mut ProbeConn,
    deadline: Instant,
    mut done: impl FnMut(&[u8]) -> bool,
) -> Result<(), String> {
    loop {
        if done(&c.buf) {
            return Ok(());
        }
        if c.buf.len() > PROBE_BUF_MAX {
            // Keep the tail: a nonce may straddle the cut.
            let keep = c.buf.len() - 256;
            c.buf.drain(..keep);
        }
        match timeout_at(deadline, c.stream.readable()).await {
            Err(_) => return Err(NO_ANSWER.into()),
            Ok(Err(e)) => return Err(format!("read: {e}")),
            Ok(Ok(())) => {}
        }
        c.buf.reserve(4096);
        match c.stream.try_read_buf(&mut c.buf) {
            Ok(0) => return Err("connection closed by the backend".into()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}
