//! The connect screen: lazy connect (a new player gets the heartbeat's
//! copy of the game's connect screen, and the game connection waits for
//! the player's first line), and waiting for the game's own screen before
//! sending what was typed meanwhile.
//!
//! Players reading the connect screen then hold no game connection, so a
//! game that limits connections waiting at its connect screen per address
//! (TinyMUX's `max_preauth_sitecons`; every player is at holdfast's
//! address) does not count them. The first line is queued and the
//! connection opened ([`super::player`]); the game's own screen is hidden
//! as far as it repeats the copy ([`super::relay`]), then the queued lines
//! go ([`super::relay`], or [`Core::banner_overdue`] for a game that shows
//! none in time).
//!
//! The cache is the heartbeat's copy, and the game's own screen as a
//! player's connection showed it while the player waited at it
//! ([`Core::capture_done`]): at holdfast's start the players who got in
//! can hold every place the game has for connections at its connect
//! screen, the heartbeat's included, and the others get that copy. A lazy
//! session whose game connection shows another screen than the copy
//! reports it ([`Action::ScreenChanged`], from `relay`): the copy is
//! dropped (at most once in a while, for screens that change all the
//! time), and the next connection that waits at the game's screen keeps
//! the new one.

use std::sync::Arc;

use tokio::time::Instant;

use super::action::{Action, Actions, Ctx};
use super::core::{Core, Game};
use crate::state::{Phase, PoolState};

impl Core {
    /// Starts a lazy session if `listen.lazy_connect` is on, the active
    /// backend may be up and its screen is known. Returns whether it did.
    pub(super) fn start_lazy(
        &mut self,
        ctx: &mut Ctx,
        pool: &PoolState,
        screen: Option<Arc<[u8]>>,
        out: &mut Actions,
    ) -> bool {
        let Some(s) = screen.filter(|s| !s.is_empty()) else {
            return false;
        };
        if !ctx.cfg.listen.lazy_connect || !pool.active_usable() {
            return false;
        }
        slog!(
            debug,
            self,
            "lazy connect: the cached connect screen; the game connection waits"
        );
        self.write_out(&s, out);
        self.lazy = Some(s);
        self.last_backend = Some(pool.active.as_str().into());
        self.phase = Phase::Relaying;
        self.login_deadline = ctx.cfg.listen.login_timeout.map(|t| ctx.now + t);
        true
    }

    /// Whether this session waits for a game connection it could do
    /// without: not logged in, no game connection, none being opened, no
    /// cached screen shown, only a retry timer (the game refused
    /// holdfast's address, or the game was not up at the start). Such a
    /// session takes the cached connect screen as soon as there is one
    /// ([`Core::screen_cached`]).
    pub fn wants_screen(&self) -> bool {
        self.user.is_none()
            && self.creds.is_none()
            && self.game.is_none()
            && !self.connecting
            && self.lazy.is_none()
            && self.rare().screen_shown.is_none()
            && self.rare().relogin_at.is_some()
    }

    /// The heartbeat has the active backend's connect screen: a session
    /// that [wants it](Core::wants_screen) becomes a lazy one at once (the
    /// player gets the screen, the retry timer goes, the next line opens
    /// the game connection), rather than wait out its backoff while the
    /// game's places for connections at its connect screen are taken. A
    /// line the player typed meanwhile opens it now.
    pub fn screen_cached(
        &mut self,
        ctx: &mut Ctx,
        pool: &PoolState,
        screen: Option<Arc<[u8]>>,
        out: &mut Actions,
    ) {
        if !self.wants_screen() {
            return;
        }
        let relogin_at = self.rare_mut_if_any().and_then(|r| r.relogin_at.take());
        if !self.start_lazy(ctx, pool, screen, out) {
            if relogin_at.is_some() {
                self.rare_mut().relogin_at = relogin_at;
            }
            return;
        }
        slog!(
            debug,
            self,
            "the connect screen is known now: shown; waiting for the player's first line"
        );
        if let Some(r) = self.rare_mut_if_any() {
            r.held_since = None;
            if let Some(b) = r.busy.as_mut() {
                // Refusals from here on count afresh (the player was told).
                b.tries = 0;
            }
        }
        if !self.rare().queue.is_empty() {
            self.connecting = true;
            out.push(Action::Connect(pool.active.clone()));
        }
    }

    /// The game has been quiet since the last of its connect screen came:
    /// the screen is complete, for the cache.
    pub(super) fn capture_done(&mut self, now: Instant, out: &mut Actions) {
        let Some(g) = self.game.as_mut() else {
            return;
        };
        if g.capture.as_ref().is_none_or(|c| c.until > now) {
            return;
        }
        let Some(c) = g.capture.take() else {
            return;
        };
        if !c.text.is_empty() {
            out.push(Action::ScreenSeen {
                backend: g.name.to_string(),
                text: c.text.into(),
            });
        }
    }

    /// The player typed, or the game's output is no longer its connect
    /// screen alone: whatever was read is not kept.
    pub(super) fn capture_abandoned(&mut self) {
        if let Some(g) = self.game.as_mut() {
            g.capture = None;
        }
    }

    /// A game that shows no connect screen within its banner wait still
    /// gets the lines queued for it.
    pub(super) fn banner_overdue(&mut self, ctx: &mut Ctx, out: &mut Actions) {
        let cfg = ctx.cfg;
        let due = |g: &Game| {
            g.await_banner
                && !g.closed
                && g.connected_at + cfg.templates.banner_wait + cfg.heartbeat.timeout <= ctx.now
        };
        if let Some(g) = self.game.as_mut().filter(|g| due(g)) {
            slog!(
                debug,
                self,
                "no connect screen in time; sending the queued lines anyway"
            );
            g.await_banner = false;
            self.flush_queue(ctx, out);
        }
    }
}
