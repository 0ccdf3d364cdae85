//! Outages: the game connection closing, the probe's verdict, holding the
//! player, moving between backends and pacing the way back.

use super::action::{Action, Actions, Ctx};
use super::core::{render, Core};
use super::End;
use crate::events::Event;
use crate::state::{Phase, PoolState};

impl Core {
    /// The game connection closed (or stopped taking writes). Decided by
    /// the heartbeat: the player quit or was booted if the game is alive,
    /// else the game went away and the player is held.
    pub fn game_closed(&mut self, out: &mut Actions) {
        if self.game.as_ref().is_none_or(|g| g.closed) {
            return;
        }
        // The game's last words, to the last partial line, before anything
        // is decided.
        self.flush_tail(out);
        let Some(g) = self.game.as_mut() else {
            return;
        };
        g.closed = true;
        if self.quit_sent {
            out.push(Action::Close(End::Quit));
            return;
        }
        out.push(Action::AskAlive {
            backend: g.name.to_string(),
            since: g.connected_at,
        });
    }

    /// The heartbeat's answer to [`Action::AskAlive`].
    pub fn alive(&mut self, ctx: &mut Ctx, alive: bool, pool: &PoolState, out: &mut Actions) {
        let Some(name) = self.game.as_ref().map(|g| g.name.clone()) else {
            return;
        };
        // A pause ends here: the game's last words reach the player first.
        self.release(ctx, out);
        if alive {
            if self.game.as_ref().is_some_and(|g| !g.seen_output) && !self.quit_sent {
                // Not a word, not even the connect screen: a per-address
                // limit (TinyMUX's connection rate), not a boot.
                return self.refused(ctx, "closed before its connect screen", out);
            }
            slog!(info, self, backend = %name, "game closed the connection while alive");
            out.push(Action::Close(End::Booted));
            return;
        }
        slog!(info, self, backend = %name, "backend gone; holding the session");
        self.hold(ctx, "backend_down", pool, out);
    }

    /// Drops the game connection and holds the player with the offline
    /// notice.
    pub(super) fn hold(
        &mut self,
        ctx: &mut Ctx,
        why: &'static str,
        pool: &PoolState,
        out: &mut Actions,
    ) {
        let cfg = ctx.cfg;
        self.flush_tail(out);
        self.release(ctx, out);
        let (name, watch) = self
            .game
            .take()
            .map(|g| (g.name, g.watch))
            .unwrap_or_default();
        out.push(Action::DropGame);
        if let Some(super::watch::Kind::Verify(creds)) = watch.as_ref().map(|w| &w.kind) {
            // The game went away while checking a login for a resume: it is
            // checked again when the game is back (the line waits first).
            let line = crate::login::render_login(
                &cfg.templates.login,
                creds.verb,
                &creds.name,
                &creds.password,
            );
            let line = line.strip_suffix(b"\r\n").unwrap_or(&line).to_vec();
            let r = self.rare_mut();
            r.verify = Some(Core::resume_key(&creds.name));
            r.verify_started = None;
            r.queue.push_front((ctx.now, line));
        } else if let Some(creds) = watch.and_then(|w| w.probable_credentials()) {
            // The game went away while confirming this player's login: try
            // it on re-login rather than make the player start over.
            slog!(debug, self, user = %creds.name, "keeping an unconfirmed login for re-login");
            self.user = Some(creds.name.clone());
            self.creds = Some(Box::new(creds));
        }
        let msg = render(&cfg.notices.offline, cfg, &name, None);
        // An outage is news of its own: a later refusal is told again.
        if let Some(r) = self.rare_mut_if_any() {
            r.busy = None;
        }
        self.enter_held(ctx, true);
        out.push(Action::Emit(
            // SPEC lists `user` for held/restored: null before a login.
            Event::new("session.held")
                .with("session", self.id)
                .with("user", self.user.as_deref())
                .with("backend", &*name)
                .with("reason", why),
        ));
        self.notice(&msg, out);
        // Try again as soon as the pool says so (see `pool`), or after a
        // probe interval in case the pool has not noticed yet. That retry
        // goes through the re-login pacer when it is due, so a game that a
        // supervisor restarts at once does not get every held player in
        // the same instant.
        if pool.active_usable() {
            self.rare_mut().relogin_at = Some((ctx.now + cfg.heartbeat.interval, false));
        }
    }

    pub(super) fn enter_held(&mut self, ctx: &Ctx, outage: bool) {
        self.game = None;
        self.connecting = false;
        self.login_deadline = None;
        self.rare_mut().held_since.get_or_insert(ctx.now);
        self.was_held |= outage;
        self.phase = Phase::Held;
    }

    /// The pool changed: a failover moves the session, a backend marked
    /// down holds it, a backend back up brings it back.
    pub fn pool(&mut self, ctx: &mut Ctx, st: &PoolState, out: &mut Actions) {
        let moved = st.epoch != self.epoch;
        self.epoch = st.epoch;
        let cfg = ctx.cfg;
        if let Some(g) = &self.game {
            if g.closed {
                return;
            }
            if moved && *g.name != *st.active {
                slog!(info, self, from = %g.name, to = %st.active, "moving to another backend");
                // Paused while the cluster moved: what the old backend
                // said meanwhile first, then its quit.
                self.flush_tail(out);
                self.release(ctx, out);
                if let Some(a) = self.leave_action(cfg) {
                    out.push(a);
                }
                self.enter_held(ctx, false);
                let msg = render(&cfg.notices.failover, cfg, &st.active, None);
                self.notice(&msg, out);
                if st.active_usable() {
                    self.schedule_relogin(ctx);
                }
                return;
            }
            if st.fenced {
                if self.quit_sent && self.rare().paused.is_none() {
                    // The player quit: the game's goodbye and close are
                    // all that is left, and they go to the player.
                    return;
                }
                if self.can_pause(&st.active) {
                    self.pause(ctx, out);
                } else {
                    self.fence(ctx, out);
                }
                return;
            }
            if st.is_down(&g.name) && st.view(&g.name).is_some() {
                // The probe says the backend is gone though our connection
                // is still open: a frozen host. Do not wait for TCP to notice.
                slog!(info, self, backend = %g.name, "backend marked down; holding the session");
                self.hold(ctx, "backend_down", st, out);
            } else if self.rare().paused.is_some() {
                if *g.name == *st.active {
                    self.unpause(ctx, out);
                } else {
                    // Not the cluster's backend, and no move said so: do
                    // not go on there.
                    self.release(ctx, out);
                    self.fence(ctx, out);
                }
            }
            return;
        }
        if self.connecting {
            return;
        }
        if self.lazy.is_some() {
            // Not connected yet: the first line goes to whatever is active.
            self.last_backend = Some(st.active.as_str().into());
            return;
        }
        if self.rare().busy.is_some() && self.rare().relogin_at.is_some() {
            // Backing off after a refusal: the backoff stands.
            return;
        }
        if st.active_usable() && self.rare().relogin_at.is_none_or(|(_, paced)| !paced) {
            self.schedule_relogin(ctx);
        }
    }

    /// This cluster member is fenced (`PoolState::fenced`: it lost its
    /// lease, or waits for the others to follow a new term) and the
    /// session cannot pause (see [`super::pause`]: it was not relaying on
    /// the cluster's backend): another instance may be moving players
    /// elsewhere, so the session leaves the game cleanly (its quit
    /// command, as for a failover) and is held with the offline notice
    /// until the fence lifts.
    fn fence(&mut self, ctx: &mut Ctx, out: &mut Actions) {
        let cfg = ctx.cfg;
        let name = self.game_name();
        slog!(info, self, backend = %name, "fenced from the cluster; holding the session");
        self.flush_tail(out);
        if let Some(a) = self.leave_action(cfg) {
            out.push(a);
        }
        self.enter_held(ctx, true);
        out.push(Action::Emit(
            Event::new("session.held")
                .with("session", self.id)
                .with("user", self.user.as_deref())
                .with("backend", name.as_str())
                .with("reason", "fenced"),
        ));
        let msg = render(&cfg.notices.offline, cfg, &name, None);
        self.notice(&msg, out);
    }

    /// A paced time to connect again.
    pub(super) fn schedule_relogin(&mut self, ctx: &mut Ctx) {
        let at = (ctx.relogin_slot)();
        self.rare_mut().relogin_at = Some((at, true));
    }

    /// The re-login time came: connect, or take a paced slot first if this
    /// time was a plain retry.
    pub(super) fn relogin_due(&mut self, ctx: &mut Ctx, pool: &PoolState, out: &mut Actions) {
        let Some((_, paced)) = self.rare_mut_if_any().and_then(|r| r.relogin_at.take()) else {
            return;
        };
        if self.game.is_some() || self.connecting {
            return;
        }
        if !pool.active_usable() {
            return;
        }
        if !paced {
            self.schedule_relogin(ctx);
            if self.rare().relogin_at.is_some_and(|(t, _)| t > ctx.now) {
                return;
            }
            if let Some(r) = self.rare_mut_if_any() {
                r.relogin_at = None;
            }
        }
        self.connecting = true;
        out.push(Action::Connect(pool.active.clone()));
    }

    /// Lines typed while held or during a re-login go to the game, through
    /// the same quit and login capture as typed ones.
    pub(super) fn flush_queue(&mut self, ctx: &Ctx, out: &mut Actions) {
        if self.rare().queue.is_empty() {
            return;
        }
        let mut data = Vec::new();
        let mut stale = 0;
        while let Some((t, line)) = self.rare_mut_if_any().and_then(|r| r.queue.pop_front()) {
            if ctx.now.saturating_duration_since(t) > ctx.cfg.outage.queue_max_age {
                stale += 1;
                continue;
            }
            self.send_line(ctx, line, &mut data, out);
            let verifying = self
                .game
                .as_ref()
                .and_then(|g| g.watch.as_ref())
                .is_some_and(|w| matches!(w.kind, super::watch::Kind::Verify(_)));
            if verifying {
                // What follows a login being checked for a resume goes to
                // whichever session it ends up in: it waits.
                break;
            }
        }
        if stale > 0 {
            self.notice(
                &format!("[holdfast] {stale} queued line(s) were too old and were not sent."),
                out,
            );
        }
        self.flush_game(&mut data, out);
    }

    /// Lines queued during a re-login that failed are not sent to a game
    /// that is not logged in (they would be answered by the connect screen).
    pub(super) fn drop_queue(&mut self, out: &mut Actions) {
        let Some(r) = self.rare_mut_if_any().filter(|r| !r.queue.is_empty()) else {
            return;
        };
        let n = r.queue.len();
        r.queue.clear();
        self.notice(
            &format!("[holdfast] {n} line(s) you typed while being logged back in were not sent."),
            out,
        );
    }
}
