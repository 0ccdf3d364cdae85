//! One probe round of the heartbeat task (`health.rs`): ask on the
//! logged-in connection; if it does not answer, replace it (fresh
//! connection, connect screen, fresh login) and read the game's identity
//! from the login's confirmation.

use tokio::time::Instant;
use tracing::debug;

use super::degraded::Alive;
use super::health::Probe;
use super::probe::{self, LoginOutcome, ProbeConn, ProbeError};
use crate::config::Config;
use crate::login::render_login;
use crate::secret::Secret;

impl Probe {
    /// One probe (see [`Probe::probe_inner`]); a probe that found no game
    /// at all is a break in coverage.
    pub(super) async fn probe_once(&mut self) -> Result<Alive, ProbeError> {
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
        let mut cache = self.screen.lock().unwrap_or_else(|e| e.into_inner());
        if !cfg.listen.lazy_connect {
            cache.kept = None;
        } else if !screen.is_empty() && cache.kept.as_deref() != Some(&screen[..]) {
            debug!(backend = %self.backend.name, bytes = screen.len(), "connect screen kept for lazy connect");
            cache.kept = Some(screen.into());
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
