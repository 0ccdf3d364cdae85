//! Resuming, on the core's side: which sessions are kept for a player
//! whose link dropped, how a returning player is recognised, and how the
//! kept session takes over the new connection's player side.
//!
//! A returning player is recognised by the game, not by holdfast: the
//! login line goes to the game on the player's new connection with its
//! answer hidden ([`super::watch::Kind::Verify`]); only the game's yes
//! resumes the kept session, which then keeps the password the game just
//! accepted. That connection, logged in for the check, then quits. The
//! game's no is shown as it is (an ordinary failed login). Guest and
//! shared logins (`resume.never`, the flavor's guests) are never kept.

use std::time::Duration;

use zeroize::Zeroizing;

use super::action::{Action, Actions, Ctx};
use super::core::{fmt_duration, render, Core};
use super::End;
use crate::config::Config;
use crate::events::Event;
use crate::login::Credentials;

impl Core {
    /// Whether a session that ended with `end` is kept for its player
    /// instead: logged in (not as a guest or shared login), left without
    /// quitting, and `resume.keep` on.
    pub fn can_detach(&self, cfg: &Config, end: End) -> bool {
        cfg.resume.keep.is_some()
            && self
                .user
                .as_deref()
                .is_some_and(|u| !cfg.resume.never_resumes(u))
            && !self.quit_sent
            && matches!(end, End::PlayerClosed | End::WriteFailed)
    }

    /// The game accepted the login a driver is resuming with: its
    /// credentials, and how long the game took.
    pub fn verified_login(&self) -> Option<(Credentials, Duration)> {
        self.rare()
            .verified
            .as_ref()
            .map(|v| (v.creds.clone(), v.took))
    }

    /// The verified login was taken over by the driver: nothing more of
    /// it is needed.
    pub(super) fn clear_verified(&mut self) {
        if let Some(r) = self.rare_mut_if_any() {
            r.verified = None;
        }
    }

    /// The session was taken over with credentials the game accepted just
    /// now (`creds`): they replace the ones kept (a password changed while
    /// away), and what the player typed meanwhile (`queued`) goes on.
    pub fn resumed_with(
        &mut self,
        ctx: &mut Ctx,
        creds: Credentials,
        queued: std::collections::VecDeque<(tokio::time::Instant, Vec<u8>)>,
        out: &mut Actions,
    ) {
        self.creds = Some(Box::new(creds));
        if !queued.is_empty() {
            self.rare_mut().queue.extend(queued);
        }
        if self.relaying() {
            self.flush_queue(ctx, out);
        }
    }

    /// The lines this session's player typed while a login was checked.
    pub fn take_queue(&mut self) -> std::collections::VecDeque<(tokio::time::Instant, Vec<u8>)> {
        self.rare_mut_if_any()
            .map(|r| std::mem::take(&mut r.queue))
            .unwrap_or_default()
    }

    /// The game accepted the login but no detached session was left to
    /// take over (it expired, or another connection took it): an ordinary
    /// login, its answer shown now.
    pub fn verified_unclaimed(&mut self, ctx: &mut Ctx, out: &mut Actions) {
        let Some(v) = self.rare_mut_if_any().and_then(|r| r.verified.take()) else {
            return;
        };
        self.write_out(&v.held, out);
        self.user = Some(v.creds.name.clone());
        self.creds = Some(Box::new(v.creds));
        self.login_deadline = None;
        slog!(info, self, user = %self.user_field(), "logged in (nothing left to resume)");
        out.push(Action::Emit(
            Event::new("session.login")
                .with("session", self.id)
                .with("user", self.user.as_deref()),
        ));
        self.flush_queue(ctx, out);
    }

    /// The name detached sessions are found by: the login name as MUSH
    /// servers and Evennia compare it (case-insensitive).
    pub fn resume_key(name: &str) -> String {
        name.trim().to_lowercase()
    }

    /// This is a detached session being taken over by `new`, the session
    /// of the connection its player came back on. The game side (and the
    /// login) stays; the player's side comes from `new`. Pushes what the
    /// game should hear (the new window size), the `resumed` notice, the
    /// kept output (`playback`, telnet-escaped; `missed` lines, `dropped`
    /// more that did not fit), and the offline notice if the game is down
    /// — or the online notice if it is up and the player left while it was
    /// down (`told_down`): the notice of its return went to nobody.
    #[allow(clippy::too_many_arguments)]
    pub fn adopt(
        &mut self,
        ctx: &Ctx,
        mut new: Core,
        away: std::time::Duration,
        playback: Vec<u8>,
        missed: usize,
        dropped: u64,
        told_down: bool,
        out: &mut Actions,
    ) {
        // The player side's flood count, and what the player sent after
        // the login, go to this session.
        let (flood_drops, after_login) = new
            .rare_mut_if_any()
            .map(|r| (r.flood_drops, std::mem::take(&mut r.after_login)))
            .unwrap_or_default();
        self.id = new.id;
        self.peer = new.peer;
        self.local = new.local;
        self.input = new.input;
        self.input_rate = new.input_rate;
        self.at_line_start = new.at_line_start;
        let r = self.rare_mut();
        r.flood_drops = flood_drops;
        r.after_login = after_login;
        let to_game = self.telnet.adopt_player_side(new.telnet);
        if !to_game.is_empty() && self.game.as_ref().is_some_and(|g| !g.closed) {
            out.push(Action::Game(Zeroizing::new(to_game)));
        }
        let cfg = ctx.cfg;
        // A partial line held back is the newest of the game's output: it
        // goes on waiting for its rest after the kept output, not before
        // the notices.
        let tail = self.game.as_mut().and_then(|g| g.tail.take());
        let msg = render(&cfg.notices.resumed, cfg, "", None)
            .replace("{missed}", &missed.to_string())
            .replace("{away}", &fmt_duration(away));
        self.notice(&msg, out);
        if dropped > 0 {
            self.notice(
                &format!("[holdfast] {dropped} older line(s) did not fit and were not kept."),
                out,
            );
        }
        if let Some(&last) = playback.last() {
            self.at_line_start = last == b'\n';
            out.push(Action::Player(playback));
        }
        if let Some(g) = self.game.as_mut() {
            g.tail = tail;
        }
        let backend = self.last_backend.clone().unwrap_or_default();
        if self.game.is_none() {
            self.notice(&render(&cfg.notices.offline, cfg, &backend, None), out);
        } else if told_down && self.phase == crate::state::Phase::Relaying {
            self.notice(&render(&cfg.notices.online, cfg, &backend, None), out);
        }
    }

    /// Whether the last byte the player got ended a line (the playback is
    /// written raw, and notices after it need to know).
    pub fn set_line_start(&mut self, at: bool) {
        self.at_line_start = at;
    }
}
