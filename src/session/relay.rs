//! The game's output on its way to the player: telnet answered by the
//! policy, MCCP2 undone, a login being confirmed watched line by line,
//! announcements about players being logged back in held back (a line cut
//! by the end of a read waits for its rest: [`Tail`]), and a lazy
//! session's cached connect screen hidden as far as the game repeats it
//! (and found out of date where it does not: [`Action::ScreenChanged`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use zeroize::Zeroizing;

use super::action::{Action, Actions, Ctx};
use super::core::{Capture, Core, Game, Tail};
use super::watch::Outcome;
use crate::backend::probe;
use crate::login;
use crate::state::PoolState;
use crate::telnet::{self, TelnetEvent};

/// Plain bytes one step may inflate out of a compressed game stream before
/// they are written to the player and the rest is looked at: a zlib bomb
/// costs this much memory at a time, not what it inflates to.
pub const INFLATE_BUDGET: usize = 256 * 1024;
/// The longest partial line held back for the rest of it while lines are
/// checked for announcements ([`Tail`]); a longer one is no announcement
/// and goes out at once.
pub const TAIL_MAX: usize = 256;
/// How long a partial line held back ([`Tail`]) waits for the rest of it
/// before it goes out as it is: a prompt with neither newline nor GA/EOR
/// is that much late while names are held back. The rest of a line a game
/// writes in two pieces comes within a millisecond or two, even from a
/// busy game or a loaded host.
pub const TAIL_WAIT: Duration = Duration::from_millis(50);

impl Core {
    /// Whether `data` from the game can go to the player exactly as it is:
    /// plain text with no IAC, between telnet sequences, while no login is
    /// being confirmed. This is the bulk of all traffic; checking for IAC is
    /// the whole parse, and the driver writes its read buffer as it is (no
    /// copy). Records where the player's line will stand afterwards.
    pub fn game_passthrough(&mut self, data: &[u8]) -> bool {
        let paused = self.paused();
        let Some(g) = &mut self.game else {
            return false;
        };
        if !data.is_empty() {
            g.seen_output = true;
        }
        if g.closed
            || paused
            || g.watch.is_some()
            || g.await_banner
            || g.skip.is_some()
            || g.capture.is_some()
            || g.tail.is_some()
            || !g.parser.is_idle()
            || memchr::memchr(telnet::IAC, data).is_some()
        {
            return false;
        }
        if let Some(&last) = data.last() {
            self.at_line_start = last == b'\n';
        }
        true
    }

    /// Bytes from the game (when [`Core::game_passthrough`] said no).
    /// Returns how many of them were taken: the driver carries out the
    /// actions and calls again with the rest (see [`INFLATE_BUDGET`]).
    pub fn game_data(
        &mut self,
        ctx: &mut Ctx,
        data: &[u8],
        pool: &PoolState,
        out: &mut Actions,
    ) -> usize {
        let Some(g) = self.game.as_mut() else {
            return data.len();
        };
        if g.closed {
            return data.len();
        }
        let allow_mccp = self.telnet.backend_mccp_agreed();
        let cfg = ctx.cfg;
        let mut shown = Vec::with_capacity(data.len() + 16);
        // May hold a re-login (password): wiped when dropped.
        let mut to_game = Zeroizing::new(Vec::new());
        let mut outcome = Outcome::Pending;
        // The first text instead of a connect screen was a refusal.
        let mut refusal = false;
        let mut banner_now = false;
        // The cached connect screen the player got, when this connection's
        // screen turned out to differ from it.
        let mut changed: Option<Arc<[u8]>> = None;
        // Where the player's line will stand once `shown` is written (which
        // happens last, see below).
        let mut line_start_after = self.at_line_start;
        // The partial line this read leaves (see `Tail`): kept apart until
        // this read's output is out, so that a notice this read brings
        // (a login decided) cannot go out before the text that came first.
        let mut next_tail = None;
        let decoded = {
            let at_line_start = &mut line_start_after;
            let policy = &mut self.telnet;
            let creds = self.creds.as_ref();
            let t = &cfg.templates;
            let quiet = ctx.quiet;
            let now = ctx.now;
            let keep_screen = cfg.listen.lazy_connect;
            let Game {
                parser,
                watch,
                seen_output,
                await_banner,
                skip,
                capture,
                tail,
                ..
            } = &mut **g;
            let mut tails = Tails {
                held: tail,
                next: &mut next_tail,
                now,
                may_hold: ctx.hold_tail,
            };
            let was_compressed = parser.compressed();
            let r = parser.feed_bounded(data, allow_mccp, INFLATE_BUDGET, |ev| match ev {
                TelnetEvent::Data(mut d) => {
                    if refusal || d.is_empty() {
                        return;
                    }
                    *seen_output = true;
                    if *await_banner && watch.is_none() {
                        // Refusals come alone, at once, instead of the screen.
                        if probe::matching_line(d, &t.refused).is_some() {
                            refusal = true;
                            return;
                        }
                        *await_banner = false;
                        banner_now = true;
                        if skip.is_none() && keep_screen {
                            // The game's own screen, for the cache.
                            *capture = Some(Box::new(Capture {
                                text: Vec::new(),
                                until: now,
                            }));
                        }
                    }
                    if let Some(c) = capture.as_mut() {
                        c.text.extend_from_slice(d);
                        c.until = now + probe::SCREEN_QUIET;
                        if c.text.len() > probe::SCREEN_MAX {
                            *capture = None;
                        }
                    }
                    if let Some((s, pos)) = skip.as_deref_mut() {
                        // The cached screen the player already has: hidden
                        // as far as this connection repeats it.
                        let rest = &s[*pos..];
                        let n = rest.iter().zip(d).take_while(|(a, b)| a == b).count();
                        *pos += n;
                        d = &d[n..];
                        if !d.is_empty() && *pos < s.len() {
                            // Not the screen the player got: the game's
                            // screen changed since the copy was taken.
                            changed = Some(s.clone());
                        }
                        if !d.is_empty() || *pos == s.len() {
                            *skip = None;
                        }
                    }
                    if let Some(w) = watch.as_mut() {
                        if outcome == Outcome::Pending {
                            let mut plain = Vec::new();
                            let mut send_marker = false;
                            let mut send_login = false;
                            let (o, used) =
                                w.feed(d, t, &mut plain, &mut send_marker, &mut send_login);
                            if send_login {
                                // Synced: the game has the connection.
                                slog!(debug, self, "re-login: marker back; sending the login");
                                if let Some(c) = creds {
                                    to_game.extend_from_slice(&login::render_login(
                                        &t.login,
                                        c.verb,
                                        &c.name,
                                        &c.password,
                                    ));
                                }
                                send_marker = true;
                            }
                            if send_marker {
                                to_game
                                    .extend_from_slice(&login::render_nonce(&t.marker, &w.nonce));
                            }
                            show(cfg, quiet, &plain, &mut shown, at_line_start, &mut tails);
                            outcome = o;
                            d = &d[used..];
                        }
                    }
                    show(cfg, quiet, d, &mut shown, at_line_start, &mut tails);
                }
                TelnetEvent::Command(c) => {
                    // A prompt's GA/EOR, or any command: what came before
                    // it goes first, as it is.
                    tails.flush(&mut shown, at_line_start);
                    let hiding =
                        matches!(watch, Some(w) if w.hiding()) && outcome == Outcome::Pending;
                    if !hiding {
                        telnet::write_command(c, &mut shown);
                        if c == telnet::GA || c == telnet::EOR {
                            *at_line_start = true;
                        }
                    }
                }
                // telnet: the policy answers what the player already did.
                TelnetEvent::Negotiation { verb, option } => {
                    tails.flush(&mut shown, at_line_start);
                    policy.from_backend(verb, option, &mut to_game, &mut shown)
                }
                TelnetEvent::Subnegotiation { option, data } => {
                    tails.flush(&mut shown, at_line_start);
                    policy.from_backend_sub(option, data, &mut to_game, &mut shown)
                }
            });
            if !was_compressed && parser.compressed() {
                slog!(debug, self, "backend compresses (MCCP2)");
            }
            r
        };
        // Order matters. The marker goes to the game before the player sees
        // the line that triggered it, so anything the player types next is
        // answered after the marker. A decided login takes effect (and its
        // notices go out) before the output that followed the marker: the
        // player reads "logged back in" first, and whatever reacts to the
        // output (a test, a client trigger) finds the session logged in.
        if !to_game.is_empty() {
            out.push(Action::Game(to_game));
        }
        if let Some(shown) = changed {
            out.push(Action::ScreenChanged {
                backend: self.game_name(),
                shown,
            });
        }
        if let Some(m) = self.telnet.take_game_mssp() {
            out.push(Action::Mssp(super::mssp::Request::GameSaid(m.into())));
        }
        let used = match decoded {
            Ok(used) => used,
            Err(e) => {
                // telnet: nothing after a corrupt MCCP stream can be trusted;
                // what decoded before it is delivered.
                let backend = self.last_backend.clone().unwrap_or_default();
                slog!(warn, self, error = %e, backend = %backend, "corrupt compressed stream from the backend");
                if let Some(t) = next_tail.take() {
                    telnet::escape_iac(&t.text, &mut shown);
                    line_start_after = false;
                }
                self.at_line_start = line_start_after;
                self.game_out(shown, out);
                self.hold(ctx, "backend_error", pool, out);
                return data.len();
            }
        };
        if refusal {
            self.refused(ctx, "refused at the connect screen", out);
            return data.len();
        }
        match outcome {
            Outcome::Pending => {}
            Outcome::Confirmed => self.login_confirmed(ctx, out),
            Outcome::Failed(why) => self.login_failed(ctx, why, out),
            Outcome::Refused => {
                self.refused(ctx, "refused the re-login", out);
                return data.len();
            }
        }
        if !shown.is_empty() {
            self.at_line_start = line_start_after;
            self.game_out(shown, out);
        }
        if let Some(t) = next_tail {
            match self.game.as_mut() {
                Some(g) => g.tail = Some(t),
                None => self.write_out(&t.text, out),
            }
        }
        if banner_now {
            // The game has the connection: what was typed meanwhile (the
            // line that opened a lazy connection) goes now, and what the
            // game says after it is not its connect screen.
            if !self.rare().queue.is_empty() {
                self.capture_abandoned();
            }
            if let Some(r) = self.rare_mut_if_any() {
                r.busy = None;
            }
            self.flush_queue(ctx, out);
        }
        used
    }
}

/// Where a partial line of shown text waits for the rest of it ([`Tail`]):
/// the one the game connection holds from an earlier read, and the one
/// this read leaves.
struct Tails<'a> {
    held: &'a mut Option<Box<Tail>>,
    next: &'a mut Option<Box<Tail>>,
    now: Instant,
    /// See [`Ctx::hold_tail`].
    may_hold: Option<&'a super::action::HoldTail<'a>>,
}

impl Tails<'_> {
    /// The partial line waiting, if any.
    fn take(&mut self) -> Option<Box<Tail>> {
        self.next.take().or_else(|| self.held.take())
    }

    /// The partial line waiting goes out, before what follows it.
    fn flush(&mut self, shown: &mut Vec<u8>, at_line_start: &mut bool) {
        if let Some(t) = self.take() {
            telnet::escape_iac(&t.text, shown);
            *at_line_start = false;
        }
    }
}

/// Game text for the player: line by line when names are held, holding
/// back the game's announcements about them (players being logged back in,
/// the heartbeat; see `busy` and `quiet`), whether it came while a login
/// was being confirmed or not. A line cut by the end of a read waits for
/// its rest ([`Tail`]), so it is checked whole.
fn show(
    cfg: &crate::config::Config,
    quiet: Option<&dyn Fn(&str) -> bool>,
    d: &[u8],
    shown: &mut Vec<u8>,
    at_line_start: &mut bool,
    tails: &mut Tails<'_>,
) {
    if d.is_empty() {
        return;
    }
    let Some(q) = quiet else {
        tails.flush(shown, at_line_start);
        telnet::escape_iac(d, shown);
        *at_line_start = d.last() == Some(&b'\n');
        return;
    };
    let prev = tails.take();
    let joined;
    let d = match &prev {
        Some(t) => {
            joined = [&t.text[..], d].concat();
            &joined[..]
        }
        None => d,
    };
    for l in d.split_inclusive(|b| *b == b'\n') {
        if l.last() == Some(&b'\n') {
            if Core::quiet_line(cfg, q, l) {
                continue;
            }
        } else if l.len() <= TAIL_MAX && tails.may_hold.is_none_or(|f| f(l)) {
            // The last piece, cut by the read: it waits for its rest. A
            // line that goes on and on is shown by the first piece's time.
            let until = match &prev {
                Some(t) if l.len() == d.len() => t.until,
                _ => tails.now + TAIL_WAIT,
            };
            *tails.next = Some(Box::new(Tail {
                text: l.to_vec(),
                until,
            }));
            continue;
        }
        telnet::escape_iac(l, shown);
        *at_line_start = l.last() == Some(&b'\n');
    }
}
