//! The player's lines on their way in: the flood limit, the client-address
//! spoof filter, a login that may resume a detached session, quit and login
//! capture, and the queue while there is no game to take them.

use zeroize::Zeroizing;

use super::action::{Action, Actions, Ctx};
use super::core::{render, Core, Game};
use super::input::Item;
use super::watch::{Kind, Watch};
use super::End;
use crate::config::Config;
use crate::{clientip, login, telnet};

impl Core {
    /// Bytes from the player.
    pub fn player_data(&mut self, ctx: &mut Ctx, data: &[u8], out: &mut Actions) {
        let mut items = Vec::new();
        self.input.feed(data, ctx.cfg.limits.max_line, &mut items);
        if !self.rare().after_login.is_empty() {
            // (The driver settles a login check within its step, so this
            // does not happen; if it did, the order would still hold.)
            self.rare_mut().after_login.extend(items);
            return;
        }
        self.player_items(ctx, items, out);
    }

    /// The driver has settled an [`Action::TryResume`] (the login took a
    /// detached session over, or went on as an ordinary line): what the
    /// player sent after it in the same read goes on now, in order.
    pub fn resume_settled(&mut self, ctx: &mut Ctx, out: &mut Actions) {
        let items = self
            .rare_mut_if_any()
            .map(|r| std::mem::take(&mut r.after_login))
            .unwrap_or_default();
        if !items.is_empty() {
            self.player_items(ctx, items, out);
        }
    }

    fn player_items(&mut self, ctx: &mut Ctx, items: Vec<Item>, out: &mut Actions) {
        let cfg = ctx.cfg;
        let mut to_game: Vec<u8> = Vec::new();
        let mut to_player: Vec<u8> = Vec::new();
        let mut items = items.into_iter();
        while let Some(item) = items.next() {
            match item {
                Item::Line(line) => {
                    let before = out.len();
                    if self.player_line(ctx, line, &mut to_game, out).is_err() {
                        return;
                    }
                    if out.len() > before && matches!(out.last(), Some(Action::TryResume { .. })) {
                        // Whether this login resumes a detached session
                        // decides where the rest goes: it waits.
                        let rest: Vec<Item> = items.collect();
                        if !rest.is_empty() {
                            self.rare_mut().after_login.extend(rest);
                        }
                        break;
                    }
                }
                Item::TooLong => {
                    self.flush_game(&mut to_game, out);
                    let msg = render(&cfg.notices.line_too_long, cfg, "", None);
                    self.notice(&msg, out);
                }
                // telnet: commands pass; negotiations go through the policy,
                // which remembers them and answers what the player need not.
                Item::Command(c) => telnet::write_command(c, &mut to_game),
                Item::Negotiation(verb, opt) => {
                    self.telnet
                        .from_player(verb, opt, &mut to_game, &mut to_player)
                }
                Item::Subneg(opt, data) => self.telnet.from_player_sub(opt, &data, &mut to_game),
            }
        }
        // (An empty write still lets the driver start or end the player's
        // MCCP2 stream if the player asked.)
        out.push(Action::Player(to_player));
        if self.telnet.take_mssp_request() {
            out.push(Action::Mssp(super::mssp::Request::Telnet));
        }
        self.flush_game(&mut to_game, out);
    }

    /// One line from the player. `Err` means the session ends (the action
    /// is pushed).
    fn player_line(
        &mut self,
        ctx: &mut Ctx,
        line: Vec<u8>,
        to_game: &mut Vec<u8>,
        out: &mut Actions,
    ) -> Result<(), ()> {
        let cfg = ctx.cfg;
        let l = &cfg.limits;
        if !self.input_rate.take(l.input_lines_per_sec, l.input_burst) {
            // Over the rate: warn once, drop the excess, and disconnect a
            // player who keeps it up for another burst's worth of lines.
            let drops = {
                let r = self.rare_mut();
                r.flood_drops += 1;
                r.flood_drops
            };
            if drops == 1 {
                slog!(warn, self, "player is flooding; dropping input");
                self.flush_game(to_game, out);
                self.notice(&render(&cfg.notices.flood, cfg, "", None), out);
            }
            if drops > l.input_burst {
                slog!(
                    warn,
                    self,
                    dropped = drops,
                    "disconnecting a flooding player"
                );
                // The game's last partial line is theirs all the same.
                self.flush_tail(out);
                out.push(Action::Close(End::Flood));
                return Err(());
            }
            return Ok(());
        }
        if self.rare().flood_drops > 0 && self.input_rate_recovered(cfg) {
            self.rare_mut().flood_drops = 0;
        }
        if clientip::is_spoof(&cfg.client_ip, &line) {
            slog!(
                warn,
                self,
                "dropped a player line that would set the client address"
            );
            return Ok(());
        }
        // A crawler's plain-text MSSP request on the connect screen is
        // answered by holdfast, the game up or down.
        if self.user.is_none() && super::mssp::is_text_request(&line) && super::mssp::answers(cfg) {
            self.flush_game(to_game, out);
            out.push(Action::Mssp(super::mssp::Request::Text));
            return Ok(());
        }
        if self.user.is_none() && cfg.resume.keep.is_some() {
            match login::parse_login(&line, login::LoginForms::of(&cfg.templates)) {
                // Maybe a player coming back to a detached session: the
                // driver looks before the line goes anywhere. (A guest or
                // shared login never is; nor is a new character.)
                Some((creds, false)) if !cfg.resume.never_resumes(&creds.name) => {
                    self.flush_game(to_game, out);
                    out.push(Action::TryResume {
                        creds,
                        line: Zeroizing::new(line),
                    });
                    return Ok(());
                }
                _ => {}
            }
        }
        self.route_line(ctx, line, to_game, out)
    }

    /// No detached session took this login: it goes where any line would.
    pub fn resume_refused(&mut self, ctx: &mut Ctx, line: &[u8], out: &mut Actions) {
        let mut to_game = Vec::new();
        let _ = self.route_line(ctx, line.to_vec(), &mut to_game, out);
        self.flush_game(&mut to_game, out);
    }

    /// A detached session has this login's name: the line goes to the game
    /// as the login it is, its answer hidden, and the game's yes resumes
    /// that session ([`Action::Resume`]); its no is shown as the answer to
    /// an ordinary login. With no game to ask (down, or not connected yet)
    /// the line waits for one, whatever `outage.queue_input` says.
    pub fn resume_verify(&mut self, ctx: &mut Ctx, line: &[u8], out: &mut Actions) {
        let Some((creds, _)) = login::parse_login(line, login::LoginForms::of(&ctx.cfg.templates))
        else {
            return self.resume_refused(ctx, line, out);
        };
        self.rare_mut().verify = Some(Core::resume_key(&creds.name));
        let waits = self.game.is_none() && !self.connecting && self.lazy.is_none();
        if waits && self.rare().busy.is_none() {
            let cfg = ctx.cfg;
            self.queue_line(ctx, line.to_vec(), out);
            self.notice(&render(&cfg.notices.resume_waiting, cfg, "", None), out);
            return;
        }
        self.resume_refused(ctx, line, out);
    }

    /// A line goes to the game, or is queued or refused while there is
    /// none. `Err` means the session ends (the action is pushed).
    fn route_line(
        &mut self,
        ctx: &mut Ctx,
        line: Vec<u8>,
        to_game: &mut Vec<u8>,
        out: &mut Actions,
    ) -> Result<(), ()> {
        let cfg = ctx.cfg;
        let quit = self.is_quit(cfg, &line);
        if quit && self.paused() && self.game.as_ref().is_some_and(|g| !g.closed) {
            // A paused player who quits leaves on purpose: the game hears
            // it, as after any quit (a logout uses nothing of the game's,
            // wherever the cluster goes: the same as the quit a paused
            // session sends when the cluster moved). What the game said
            // meanwhile reaches the player first; the lines queued while
            // paused are not sent.
            self.release(ctx, out);
            if let Some(r) = self.rare_mut_if_any() {
                r.queue.clear();
            }
            self.send_line(ctx, line, to_game, out);
            return Ok(());
        }
        if !self.relaying() || self.paused() {
            if quit {
                self.notice("[holdfast] Goodbye.", out);
                out.push(Action::Close(End::Quit));
                return Err(());
            }
            let lazy_to = self.lazy.as_ref().and(self.last_backend.clone());
            if let Some(backend) = lazy_to {
                // Lazy connect: the first line opens the game connection
                // and goes once its connect screen came.
                self.queue_line(ctx, line, out);
                if !self.connecting {
                    slog!(debug, self, backend = %backend, "lazy connect: the player typed; connecting");
                    self.connecting = true;
                    out.push(Action::Connect(backend.to_string()));
                }
            } else if self.game.is_some() || self.connecting || self.rare().busy.is_some() {
                // Re-login in progress: keep the line for right after it
                // (whatever `outage.queue_input` says: the game is back).
                self.queue_line(ctx, line, out);
            } else if cfg.outage.queue_input {
                self.queue_line(ctx, line, out);
                self.notice(&render(&cfg.notices.queued_input, cfg, "", None), out);
            } else {
                self.notice(&render(&cfg.notices.held_input, cfg, "", None), out);
            }
            return Ok(());
        }
        self.send_line(ctx, line, to_game, out);
        Ok(())
    }

    /// A line goes to the game: quit and login capture first. Used for
    /// typed lines and for queued ones alike, so a queued `connect` is
    /// remembered like a typed one.
    pub(super) fn send_line(
        &mut self,
        ctx: &Ctx,
        line: Vec<u8>,
        to_game: &mut Vec<u8>,
        out: &mut Actions,
    ) {
        // What the game says from now on answers the player.
        self.capture_abandoned();
        if self.is_quit(ctx.cfg, &line) {
            self.quit_sent = true;
        }
        if self.user.is_none() {
            let forms = login::LoginForms::of(&ctx.cfg.templates);
            if let Some((creds, _)) = login::parse_login(&line, forms) {
                // A new attempt replaces a late watch (the player gave up
                // waiting and typed it again, maybe with another name).
                let free =
                    |g: &&mut Box<Game>| g.watch.as_ref().is_none_or(|w| w.late && !w.relogin);
                let verify = self
                    .rare_mut_if_any()
                    .and_then(|r| r.verify.take())
                    .is_some_and(|k| k == Core::resume_key(&creds.name));
                if let Some(g) = self.game.as_mut().filter(free) {
                    slog!(debug, self, user = %creds.name, verify, "login attempt");
                    let deadline = ctx.now + ctx.cfg.templates.login_confirm_timeout;
                    let name = creds.name.clone();
                    let kind = if verify {
                        Kind::Verify(creds)
                    } else {
                        Kind::First(creds)
                    };
                    g.watch = Some(Box::new(Watch::new(
                        kind,
                        login::new_nonce(),
                        false,
                        deadline,
                    )));
                    if verify {
                        self.rare_mut().verify_started = Some(ctx.now);
                        // The game announces this login (and the quit that
                        // follows a resume) to everyone: not news.
                        out.push(Action::Quiet {
                            name,
                            for_: ctx.cfg.templates.login_confirm_timeout
                                + super::busy::QUIET_AFTER,
                        });
                    }
                }
            }
        }
        telnet::escape_iac(&line, to_game);
        to_game.extend_from_slice(b"\r\n");
    }

    /// Whether `line` quits the game, as this game decides it.
    pub(super) fn is_quit(&self, cfg: &Config, line: &[u8]) -> bool {
        login::is_quit(line, &cfg.templates, self.user.is_some())
    }

    /// Connected to a game whose output flows to the player (not a re-login
    /// hiding it, not closed).
    pub(super) fn relaying(&self) -> bool {
        matches!(&self.game, Some(g) if !g.closed && !g.await_banner && g.watch.as_ref().is_none_or(|w| !w.hiding()))
    }

    /// The flood counter resets once the player is back under the rate
    /// with half a burst in hand.
    fn input_rate_recovered(&self, cfg: &Config) -> bool {
        let mut probe = self.input_rate;
        let half = (cfg.limits.input_burst / 2).max(1);
        (0..half).all(|_| probe.take(cfg.limits.input_lines_per_sec, cfg.limits.input_burst))
    }

    fn queue_line(&mut self, ctx: &Ctx, line: Vec<u8>, out: &mut Actions) {
        if self.queued() >= ctx.cfg.outage.queue_max_lines {
            self.notice(
                "[holdfast] Too many lines waiting; that one was not kept.",
                out,
            );
            return;
        }
        self.rare_mut().queue.push_back((ctx.now, line));
    }
}
