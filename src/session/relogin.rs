//! Connecting to a game and the end of a login watch: the client-address
//! preamble, the automatic re-login (hidden output, marker), and what a
//! confirmed, failed or timed-out login does to the session.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::action::{Action, Actions, Ctx};
use super::core::{render, Core, Game};
use super::rare::Verified;
use super::watch::{Kind, Watch};
use crate::events::Event;
use crate::metrics::ReloginResult;
use crate::state::{Phase, PoolState};
use crate::{clientip, login, telnet};

impl Core {
    /// The connection asked for by [`Action::Connect`] is open. `host` is
    /// the player's reverse-DNS name, if known. Pushes the first bytes for
    /// the game (client address, then the login and marker if the player
    /// was logged in), then whatever follows.
    pub fn connected(
        &mut self,
        ctx: &mut Ctx,
        backend: &str,
        host: Option<&str>,
        out: &mut Actions,
    ) {
        let cfg = ctx.cfg;
        let now = ctx.now;
        self.connecting = false;
        let mut first = Zeroizing::new(clientip::preamble(
            &cfg.client_ip,
            self.peer.get(),
            self.local.get(),
            host,
        ));
        let mut watch = None;
        let t = &cfg.templates;
        if self.creds.is_some() && t.sync && !t.marker.is_empty() {
            // Sync first: the login follows once the marker comes back.
            let nonce = login::new_nonce();
            first.extend_from_slice(&login::render_nonce(&t.marker, &nonce));
            watch = Some(Box::new(Watch::syncing(
                nonce,
                now + cfg.relogin.timeout,
                now + login::SYNC_RESEND,
            )));
        } else if let Some(c) = &self.creds {
            first.extend_from_slice(&login::render_login(&t.login, c.verb, &c.name, &c.password));
            let nonce = login::new_nonce();
            let marker = !t.marker.is_empty();
            if marker {
                first.extend_from_slice(&login::render_nonce(&t.marker, &nonce));
            }
            watch = Some(Box::new(Watch::new(
                Kind::Relogin,
                nonce,
                marker,
                now + cfg.relogin.timeout,
            )));
        }
        let relogin = watch.is_some();
        if relogin {
            if let Some(c) = &self.creds {
                // Its connect announcement is not news to anyone.
                out.push(Action::Quiet {
                    name: c.name.clone(),
                    for_: cfg.relogin.timeout + super::busy::QUIET_AFTER,
                });
            }
        }
        // A lazy session's player has the connect screen already.
        let skip = self
            .lazy
            .take()
            .or_else(|| self.rare_mut_if_any().and_then(|r| r.screen_shown.take()))
            .map(|s| Box::new((s, 0)));
        // One copy of the name for the connection and the registry's
        // `last_backend` (usually the one the session had already).
        let name: Arc<str> = match self.last_backend.take() {
            Some(b) if *b == *backend => b,
            _ => backend.into(),
        };
        self.last_backend = Some(name.clone());
        self.game = Some(Box::new(Game {
            name,
            parser: telnet::Inbound::new(cfg.limits.max_subnegotiation),
            watch,
            connected_at: now,
            closed: false,
            seen_output: false,
            await_banner: !relogin,
            skip,
            capture: None,
            tail: None,
        }));
        out.push(Action::Game(first));
        // telnet: nothing is agreed with the new backend yet.
        self.telnet.backend_started();
        self.quit_sent = false;
        if let Some(r) = self.rare_mut_if_any() {
            r.relogin_at = None;
        }
        slog!(debug, self, backend, relogin, "connected to backend");
        if relogin {
            self.phase = Phase::Relogin;
            return;
        }
        self.phase = Phase::Relaying;
        if self.rare().busy.is_none() || self.login_deadline.is_none() {
            // (A retry after a refusal keeps the first connection's limit.)
            self.login_deadline = cfg.listen.login_timeout.map(|t| now + t);
        }
        let held_since = self.rare_mut_if_any().and_then(|r| r.held_since.take());
        if held_since.is_some() && self.was_held {
            self.was_held = false;
            out.push(Action::Emit(
                Event::new("session.restored")
                    .with("session", self.id)
                    .with("user", self.user.as_deref())
                    .with("backend", backend),
            ));
        }
        // Queued lines wait for the game's connect screen (`relay`).
    }

    /// The connection asked for by [`Action::Connect`] could not be made.
    /// The probe will tell the pool; try again after an interval anyway.
    pub fn connect_failed(&mut self, ctx: &mut Ctx, active: &str, out: &mut Actions) {
        self.connecting = false;
        // A lazy session found the game gone: held like any other.
        self.lazy = None;
        if self.phase != Phase::Held || self.rare().held_since.is_none() {
            // The very first contact: the player hears why nothing shows.
            self.first_contact_failed(ctx, active, out);
        }
        self.rare_mut().relogin_at = Some((ctx.now + ctx.cfg.heartbeat.interval, false));
    }

    /// Whether an [`Action::Connect`] is still unanswered between two
    /// steps: the driver gave that connection up (an upgrade asked the
    /// session to stop; a connect can take up to `connect_timeout`) and
    /// must ask for it again ([`Core::connect_again`]). The state crosses
    /// an upgrade that way, so lines typed meanwhile are queued for the
    /// game as during any connect.
    pub fn connect_pending(&self) -> bool {
        self.connecting
    }

    /// The connection given up (see [`Core::connect_pending`]) is asked for
    /// again, to the active backend (the pool may have moved meanwhile);
    /// with none usable it failed, as a connect that failed does.
    pub fn connect_again(&mut self, ctx: &mut Ctx, pool: &PoolState, out: &mut Actions) {
        if pool.active_usable() {
            self.connecting = true;
            out.push(Action::Connect(pool.active.clone()));
        } else {
            self.connect_failed(ctx, &pool.active, out);
        }
    }

    /// The watch's marker came back or a success line was seen.
    pub(super) fn login_confirmed(&mut self, ctx: &mut Ctx, out: &mut Actions) {
        let Some(mut w) = self.game.as_mut().and_then(|g| g.watch.take()) else {
            return;
        };
        let backend = self.last_backend.clone().unwrap_or_default();
        // Output held back while deciding (a partial line) goes out now;
        // for a re-login the hidden transcript is dropped.
        let held = w.take_held();
        let relogin = w.relogin;
        match w.kind {
            Kind::First(creds) => {
                self.write_out(&held, out);
                self.user = Some(creds.name.clone());
                self.creds = Some(Box::new(creds));
                self.login_deadline = None;
                if relogin {
                    // A re-login whose marker came back late.
                    self.restored(ctx, &backend, out);
                } else {
                    slog!(info, self, user = %self.user_field(), backend = %backend, "logged in");
                    out.push(Action::Emit(
                        Event::new("session.login")
                            .with("session", self.id)
                            .with("user", self.user.as_deref()),
                    ));
                }
            }
            Kind::Relogin => self.restored(ctx, &backend, out),
            Kind::Verify(creds) => {
                // The game said yes: the driver takes the detached session
                // over ([`Core::resumed_with`]), or, with none left to take,
                // this is an ordinary login ([`Core::verified_unclaimed`]).
                let took = self
                    .rare_mut_if_any()
                    .and_then(|r| r.verify_started.take())
                    .map(|t| ctx.now.saturating_duration_since(t))
                    .unwrap_or_default();
                self.rare_mut().verified = Some(Box::new(Verified { creds, held, took }));
                out.push(Action::Resume);
            }
        }
    }

    /// How long the re-login on the current connection has taken.
    fn relogin_took(&self, ctx: &Ctx) -> std::time::Duration {
        self.game
            .as_ref()
            .map(|g| ctx.now.saturating_duration_since(g.connected_at))
            .unwrap_or_default()
    }

    /// Logged back in: the online notice, then the lines typed meanwhile.
    fn restored(&mut self, ctx: &mut Ctx, backend: &str, out: &mut Actions) {
        crate::metrics::metrics().relogin(ReloginResult::Ok, self.relogin_took(ctx));
        let cfg = ctx.cfg;
        if let Some(r) = self.rare_mut_if_any() {
            r.busy = None;
        }
        if let Some(name) = &self.user {
            out.push(Action::Quiet {
                name: name.clone(),
                for_: super::busy::QUIET_AFTER,
            });
        }
        let down = self
            .rare_mut_if_any()
            .and_then(|r| r.held_since.take())
            .map(|t| ctx.now - t);
        slog!(info, self, user = %self.user_field(), backend, "logged back in");
        self.phase = Phase::Relaying;
        self.login_deadline = None;
        out.push(Action::Emit(
            Event::new("session.restored")
                .with("session", self.id)
                .with("user", self.user.as_deref())
                .with("backend", backend),
        ));
        self.notice(&render(&cfg.notices.online, cfg, backend, down), out);
        self.was_held = false;
        self.flush_queue(ctx, out);
    }

    /// The game said no (a failure line, or a marker echo without proof).
    pub(super) fn login_failed(&mut self, ctx: &mut Ctx, why: &'static str, out: &mut Actions) {
        let Some(mut w) = self.game.as_mut().and_then(|g| g.watch.take()) else {
            return;
        };
        let held = w.take_held();
        self.write_out(&held, out);
        if w.late {
            // The player was already told when it went late.
            slog!(debug, self, why, "late login watch ended without a login");
            return;
        }
        match w.kind {
            Kind::First(creds) => {
                slog!(debug, self, user = %creds.name, why, "login not confirmed");
            }
            Kind::Verify(creds) => {
                // The game's no, shown above as its answer to the login;
                // the detached session stays for its owner.
                slog!(info, self, user = %creds.name, why, "resume refused by the game");
                if let Some(r) = self.rare_mut_if_any() {
                    r.verify_started = None;
                }
                self.flush_queue(ctx, out);
            }
            Kind::Relogin => self.relogin_failed(ctx, why, out),
        }
    }

    /// A re-login did not work: the player is on the connect screen and
    /// logs in by hand.
    fn relogin_failed(&mut self, ctx: &mut Ctx, why: &'static str, out: &mut Actions) {
        let result = if why == "timed out" {
            ReloginResult::Timeout
        } else {
            ReloginResult::Failed
        };
        crate::metrics::metrics().relogin(result, self.relogin_took(ctx));
        let cfg = ctx.cfg;
        let backend = self.last_backend.clone().unwrap_or_default();
        slog!(warn, self, user = %self.user_field(), backend = %backend, why, "re-login failed");
        if let Some(r) = self.rare_mut_if_any() {
            r.busy = None;
            r.held_since = None;
        }
        self.creds = None;
        self.user = None;
        self.phase = Phase::Relaying;
        self.login_deadline = cfg.listen.login_timeout.map(|t| ctx.now + t);
        self.notice(
            &render(&cfg.notices.relogin_failed, cfg, &backend, None),
            out,
        );
        // Lines typed during the re-login would land on the connect screen.
        self.drop_queue(out);
    }

    /// The watch's deadline passed with no verdict. The login may still
    /// have worked (a slow game, a marker queued behind a command quota):
    /// the output flows again, the watch keeps looking for the marker
    /// without a deadline, and a late marker still logs the player in. A
    /// re-login that timed out tells the player, as a failure does, and
    /// keeps the credentials in the watch for that late marker.
    pub(super) fn login_timed_out(&mut self, ctx: &mut Ctx, out: &mut Actions) {
        let Some(g) = self.game.as_mut() else {
            return;
        };
        let Some(w) = g.watch.as_mut() else {
            return;
        };
        if w.syncing || !w.may_have_worked() {
            // Never admitted, or the game said no: a plain failure.
            let why = if w.failed() {
                "login rejected"
            } else {
                "timed out"
            };
            return self.login_failed(ctx, why, out);
        }
        let held = w.take_held();
        w.go_late();
        let relogin = w.relogin;
        if relogin {
            if let Some(creds) = self.creds.take() {
                w.kind = Kind::First(*creds);
            }
        }
        let verify = matches!(w.kind, Kind::Verify(_));
        if verify {
            if let Kind::Verify(creds) = std::mem::replace(&mut w.kind, Kind::Relogin) {
                // No verdict in time: an ordinary login from here on, shown.
                w.kind = Kind::First(creds);
            }
        }
        self.write_out(&held, out);
        if verify {
            if let Some(r) = self.rare_mut_if_any() {
                r.verify_started = None;
            }
            self.flush_queue(ctx, out);
        }
        if relogin {
            self.relogin_failed(ctx, "timed out", out);
        } else {
            slog!(
                debug,
                self,
                "login not confirmed in time; still watching for the marker"
            );
        }
    }
}
