//! The session's deadlines: the earliest one, for the driver to sleep
//! until, and what happens when one passes (a login watch or the
//! `login_timeout` running out, a connect screen overdue, a re-login
//! marker sent again, the end of `outage.max_hold`, a re-login due, a
//! partial line held back shown as it is).

use tokio::time::Instant;
use zeroize::Zeroizing;

use super::action::{Action, Actions, Ctx};
use super::core::{render, Core};
use super::End;
use crate::config::Config;
use crate::login;
use crate::state::PoolState;

impl Core {
    /// The earliest time [`Core::timer`] has something to do.
    pub fn next_deadline(&self, cfg: &Config) -> Option<Instant> {
        let rare = self.rare();
        let hold_end = match (rare.held_since, cfg.outage.max_hold) {
            (Some(t), Some(m)) if self.game.is_none() => Some(t + m),
            _ => None,
        };
        let watch = self.game.as_ref().and_then(|g| g.watch.as_deref());
        let banner = self
            .game
            .as_ref()
            .filter(|g| g.await_banner && !g.closed)
            .map(|g| g.connected_at + cfg.templates.banner_wait + cfg.heartbeat.timeout);
        let capture = self
            .game
            .as_ref()
            .and_then(|g| g.capture.as_ref())
            .map(|c| c.until);
        let tail = self
            .game
            .as_ref()
            .and_then(|g| g.tail.as_ref())
            .map(|t| t.until);
        [
            banner,
            capture,
            tail,
            watch.and_then(|w| w.deadline),
            watch.and_then(|w| w.resend_at),
            // Not while paused: a player who could not log in then is not
            // timed out for it (the pause moves the deadline on).
            self.login_deadline.filter(|_| rare.paused.is_none()),
            rare.relogin_at.map(|(t, _)| t),
            hold_end,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// A timer fired (see [`Core::next_deadline`]).
    pub fn timer(&mut self, ctx: &mut Ctx, pool: &PoolState, out: &mut Actions) {
        let now = ctx.now;
        let cfg = ctx.cfg;
        if self.watch_expired(now) {
            self.login_timed_out(ctx, out);
        }
        self.banner_overdue(ctx, out);
        self.capture_done(now, out);
        if self
            .game
            .as_ref()
            .and_then(|g| g.tail.as_ref())
            .is_some_and(|t| t.until <= now)
        {
            // The rest of the line did not come: shown as it is.
            self.flush_tail(out);
        }
        if let Some(w) = self.game.as_mut().and_then(|g| g.watch.as_mut()) {
            if w.syncing && w.resend_at.is_some_and(|t| t <= now) {
                // Not admitted yet (or the marker was dropped): again.
                slog!(
                    debug,
                    self,
                    "re-login: marker not back yet; sending it again"
                );
                w.resend_at = Some(now + login::SYNC_RESEND);
                let m = login::render_nonce(&cfg.templates.marker, &w.nonce);
                out.push(Action::Game(Zeroizing::new(m)));
            }
        }
        if !self.paused()
            && self.login_deadline.is_some_and(|t| t <= now)
            && self.login_deadline_passed(ctx, out)
        {
            return;
        }
        if let (Some(t), Some(m), None) = (self.rare().held_since, cfg.outage.max_hold, &self.game)
        {
            if t + m <= now {
                let msg = render(&cfg.notices.max_hold, cfg, "", Some(now - t));
                self.notice(&msg, out);
                out.push(Action::Close(End::MaxHold));
                return;
            }
        }
        if self.rare().relogin_at.is_some_and(|(t, _)| t <= now) {
            self.relogin_due(ctx, pool, out);
        }
    }

    fn watch_expired(&self, now: Instant) -> bool {
        self.game
            .as_ref()
            .and_then(|g| g.watch.as_ref())
            .and_then(|w| w.deadline)
            .is_some_and(|d| d <= now)
    }

    /// `login_timeout` ran out. A player whose login may have worked (the
    /// game answered it with something other than a failure) is never
    /// closed on a guess: the marker is sent once more and the deadline
    /// extended. Returns true when the session ends.
    fn login_deadline_passed(&mut self, ctx: &mut Ctx, out: &mut Actions) -> bool {
        let cfg = ctx.cfg;
        if let Some(w) = self.game.as_mut().and_then(|g| g.watch.as_mut()) {
            if w.late && w.may_have_worked() && !w.remarked {
                w.remarked = true;
                w.nonce = login::new_nonce();
                let m = login::render_nonce(&cfg.templates.marker, &w.nonce);
                slog!(
                    debug,
                    self,
                    "login timeout with a login in doubt: asking the game again"
                );
                out.push(Action::Game(Zeroizing::new(m)));
                self.login_deadline = Some(ctx.now + cfg.templates.login_confirm_timeout);
                return false;
            }
        }
        self.notice(&render(&cfg.notices.login_timeout, cfg, "", None), out);
        out.push(Action::Close(End::LoginTimeout));
        true
    }
}
