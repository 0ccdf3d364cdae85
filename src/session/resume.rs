//! Resuming, on the core's side: which sessions are kept for a player
//! whose link dropped, how a returning player is recognised, and how the
//! kept session takes over the new connection's player side.

use zeroize::Zeroizing;

use super::core::{fmt_duration, render, Action, Actions, Core, Ctx};
use super::End;
use crate::config::Config;
use crate::login;

impl Core {
    /// Whether a session that ended with `end` is kept for its player
    /// instead: logged in, left without quitting, and `resume.keep` on.
    pub fn can_detach(&self, cfg: &Config, end: End) -> bool {
        cfg.resume.keep.is_some()
            && self.user.is_some()
            && !self.quit_sent
            && matches!(end, End::PlayerClosed | End::WriteFailed)
    }

    /// The password of the kept login, for a player taking this session
    /// over.
    pub fn password_matches(&self, password: &crate::secret::Secret) -> bool {
        self.creds.as_ref().is_some_and(|c| {
            login::constant_time_eq(c.password.expose().as_bytes(), password.expose().as_bytes())
        })
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
    /// more that did not fit), and the offline notice if the game is down.
    #[allow(clippy::too_many_arguments)]
    pub fn adopt(
        &mut self,
        ctx: &Ctx,
        new: Core,
        away: std::time::Duration,
        playback: Vec<u8>,
        missed: usize,
        dropped: u64,
        out: &mut Actions,
    ) {
        self.id = new.id;
        self.peer = new.peer;
        self.local = new.local;
        self.input = new.input;
        self.input_rate = new.input_rate;
        self.flood_drops = new.flood_drops;
        self.at_line_start = new.at_line_start;
        // What the player sent after the login goes to this session.
        self.after_login = new.after_login;
        let to_game = self.telnet.adopt_player_side(new.telnet);
        if !to_game.is_empty() && self.game.as_ref().is_some_and(|g| !g.closed) {
            out.push(Action::Game(Zeroizing::new(to_game)));
        }
        let cfg = ctx.cfg;
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
        if self.game.is_none() {
            let backend = self.last_backend.clone().unwrap_or_default();
            self.notice(&render(&cfg.notices.offline, cfg, &backend, None), out);
        }
    }

    /// Whether the last byte the player got ended a line (the playback is
    /// written raw, and notices after it need to know).
    pub fn set_line_start(&mut self, at: bool) {
        self.at_line_start = at;
    }
}
