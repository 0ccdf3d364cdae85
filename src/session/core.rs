//! The session core: one player's state as plain data, and the transitions
//! that turn what happened into what to do. No sockets, no clock, no tasks.
//!
//! The driver ([`super::driver`]) owns the player's transport and the game
//! connection. It calls the core's methods with the event (bytes from the
//! player or the game, a pool change, a timer, the answer to a question the
//! core asked) and a [`Ctx`] (the config, the time, the re-login pacer); the
//! core pushes [`Action`]s, which the driver carries out in order. Actions
//! that need an answer ([`Action::Connect`], [`Action::AskAlive`]) are
//! answered by calling [`Core::connected`], [`Core::connect_failed`] or
//! [`Core::alive`] before anything else happens to the session, so the
//! core never sees two things at once. This is the shape of quinn-proto's
//! connection and rustls' `read_tls`/`process_new_packets`/`write_tls`.
//!
//! The transitions live in files of their own: [`super::relay`] (the
//! game's output, login confirmation), [`super::held`] (outages, holding,
//! moving between backends), [`super::relogin`] (connecting, logging back
//! in, the end of a login watch).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;
use zeroize::Zeroizing;

use super::input::{Input, Item};
use super::watch::Watch;
use super::End;
use crate::config::Config;
use crate::events::Event;
use crate::limiter::Bucket1;
use crate::login::{self, Credentials};
use crate::state::{Announcement, Phase, PoolState};
use crate::telnet;

/// What the core needs from the world for one step.
pub struct Ctx<'a> {
    /// The live configuration.
    pub cfg: &'a Config,
    /// The time of the event.
    pub now: Instant,
    /// Reserves the next re-login slot (shared pacing plus jitter). Tests
    /// pass a closure that returns `now`.
    pub relogin_slot: &'a mut dyn FnMut() -> Instant,
    /// Whether the game's connect/disconnect announcements about this
    /// player name are held back (holdfast is logging that player back in:
    /// see [`Action::Quiet`]). `None`: nobody is being restored.
    pub quiet: Option<&'a dyn Fn(&str) -> bool>,
}

/// Something the driver must do, in the order pushed.
#[derive(Debug)]
pub enum Action {
    /// Bytes for the player (telnet-escaped, before the player's MCCP2):
    /// the game's output.
    Player(Vec<u8>),
    /// A notice of holdfast's own for the player (not kept for a player
    /// who is away: see [`super::detach`]).
    Notice(Vec<u8>),
    /// The player typed a login while not logged in: if a detached session
    /// of that name exists, call [`Core::resume_verify`] with the line (the
    /// game is asked), else [`Core::resume_refused`].
    TryResume {
        /// The login.
        creds: Credentials,
        /// The line as typed (it holds the password: wiped on drop).
        line: Zeroizing<Vec<u8>>,
    },
    /// The game accepted a login that may take a detached session over
    /// (see [`Core::resume_verify`]): take the most recent live one of that
    /// name over (then [`Core::resumed_with`]), or, with none left, call
    /// [`Core::verified_unclaimed`].
    Resume,
    /// Bytes for the game connection (may hold a password: wiped on drop).
    Game(Zeroizing<Vec<u8>>),
    /// Open a connection to this backend, then call [`Core::connected`] or
    /// [`Core::connect_failed`].
    Connect(String),
    /// Ask the backend's heartbeat whether the game is alive, counting only
    /// an answer from a probe connection older than `since`; then call
    /// [`Core::alive`].
    AskAlive {
        /// The backend.
        backend: String,
        /// When the session's connection to it was made.
        since: Instant,
    },
    /// End the game connection cleanly: send `quit`, discard the game's
    /// goodbye, close.
    Leave {
        /// The game's quit command line.
        quit: Vec<u8>,
    },
    /// Drop the game connection without a word (the game is gone).
    DropGame,
    /// MSSP for the player, or the game's MSSP to remember (holdfast
    /// answers MSSP itself: `front::mssp`).
    Mssp(super::mssp::Request),
    /// A bus event.
    Emit(Event),
    /// The game refused a connection or login for a per-address limit
    /// (holdfast's address): slow the shared re-login pacer down.
    Refused,
    /// Hold back the game's announcements about player `name` from every
    /// session for `for_` (it is being logged back in).
    Quiet {
        /// The player's name.
        name: String,
        /// For how long from now.
        for_: Duration,
    },
    /// The game's connect screen as this connection showed it (telnet
    /// removed), for the connect-screen cache of lazy connect.
    ScreenSeen {
        /// The backend that showed it.
        backend: String,
        /// The screen's text.
        text: Arc<[u8]>,
    },
    /// End the session.
    Close(End),
}

/// The pushed actions of one step.
pub type Actions = Vec<Action>;

/// The game side of a session, as the core knows it.
#[derive(Debug)]
pub(super) struct Game {
    /// Backend name.
    pub name: String,
    /// Telnet events out of the game's bytes, MCCP2 undone.
    pub parser: telnet::Inbound,
    /// Boxed: only there while a login is being confirmed.
    pub watch: Option<Box<Watch>>,
    /// When the connection was started: the heartbeat's answer about this
    /// backend counts only if its own connection is older.
    pub connected_at: Instant,
    /// The connection closed; the core waits for [`Core::alive`].
    pub closed: bool,
    /// The game has sent text on this connection (a close before any is
    /// a refusal when the game is alive, not a boot).
    pub seen_output: bool,
    /// Waiting for the connect screen: the first text is checked for a
    /// refusal, and queued lines go out once the screen came.
    pub await_banner: bool,
    /// The connect screen the player already got from the cache (lazy
    /// connect) and how much of it this connection has repeated: hidden.
    pub skip: Option<(Arc<[u8]>, usize)>,
    /// The game's own connect screen as it arrives, until the game is
    /// quiet (then [`Action::ScreenSeen`]) or the player types.
    pub capture: Option<Capture>,
}

/// A connect screen being read off a player's game connection (see
/// [`Game::capture`]).
#[derive(Debug)]
pub(super) struct Capture {
    /// The text so far, telnet removed.
    pub text: Vec<u8>,
    /// Complete once nothing more came by then.
    pub until: Instant,
}

/// A session retrying a connection the game refused for holdfast's
/// address (see [`super::busy`]).
#[derive(Debug)]
pub(super) struct Busy {
    /// Refusals in a row.
    pub tries: u32,
    /// The player was told.
    pub told: bool,
}

/// One player's session state.
#[derive(Debug)]
pub struct Core {
    /// Session id.
    pub id: u64,
    /// The player's address.
    pub peer: SocketAddr,
    /// The proxy address the player connected to.
    pub local: SocketAddr,
    pub(super) input: Input,
    /// Telnet negotiation for both sides and the player's MCCP2 stream.
    pub telnet: telnet::Policy,
    /// The last byte sent to the player ended a line (or a prompt).
    pub(super) at_line_start: bool,
    pub(super) game: Option<Game>,
    /// A [`Action::Connect`] is outstanding.
    pub(super) connecting: bool,
    pub(super) user: Option<String>,
    pub(super) creds: Option<Credentials>,
    pub(super) phase: Phase,
    /// When the current hold began.
    pub(super) held_since: Option<Instant>,
    /// When to try connecting again (held), and whether that time already
    /// went through the re-login pacer.
    pub(super) relogin_at: Option<(Instant, bool)>,
    /// Close if not logged in by then.
    pub(super) login_deadline: Option<Instant>,
    /// The player sent the quit command to the game.
    pub(super) quit_sent: bool,
    /// Lines typed while held or during a re-login, with their time.
    pub(super) queue: VecDeque<(Instant, Vec<u8>)>,
    /// Pool epoch seen last (a change means failover).
    pub(super) epoch: u64,
    /// This session has been held by an outage since it last relayed.
    pub(super) was_held: bool,
    /// Input rate limit (`limits.input_lines_per_sec`).
    pub(super) input_rate: Bucket1,
    /// Lines dropped for flooding since the player was last warned.
    pub(super) flood_drops: u32,
    /// The backend the session is on, or was on last (for the registry).
    pub(super) last_backend: Option<String>,
    /// Lazy connect: the player has the cached connect screen and no game
    /// connection yet; the first line opens one.
    pub(super) lazy: Option<Arc<[u8]>>,
    /// Retrying after the game refused holdfast's address.
    pub(super) busy: Option<Busy>,
    /// The cached connect screen a lazy session's player has, kept for the
    /// next try when the game refused the connection it opened.
    pub(super) screen_shown: Option<Arc<[u8]>>,
    /// Player input that came in the same read after a login the driver
    /// is checking against detached sessions ([`Action::TryResume`]): it
    /// goes on, in order, once that is settled ([`Core::resume_settled`]),
    /// in whichever session the login ends up in. Always empty between
    /// steps, so it is not part of a snapshot.
    pub(super) after_login: Vec<Item>,
    /// A login of this name (resume key) may take a detached session over:
    /// the next such login sent to the game is checked ([`Core::resume_verify`]).
    pub(super) verify: Option<String>,
    /// When that login went to the game.
    pub(super) verify_started: Option<Instant>,
    /// The game accepted it; the driver is taking the session over.
    pub(super) verified: Option<super::resume::Verified>,
    /// Paused by the cluster: the game connection is kept, nothing is
    /// relayed (see [`super::pause`]).
    pub(super) paused: Option<super::pause::Pause>,
}

/// Renders a notice template.
pub fn render(text: &str, cfg: &Config, backend: &str, downtime: Option<Duration>) -> String {
    text.replace("{game}", &cfg.game)
        .replace("{backend}", backend)
        .replace(
            "{downtime}",
            &downtime
                .map(fmt_duration)
                .unwrap_or_else(|| "a moment".into()),
        )
}

/// `93s` -> `1m 33s`: short and readable for notices.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// A user name for log fields: the name, or `-` before a login.
pub struct UserField<'a>(pub Option<&'a str>);

impl std::fmt::Display for UserField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.unwrap_or("-"))
    }
}

impl Core {
    /// A new session for a player from `peer` on proxy address `local`;
    /// `epoch` is the pool epoch at the start.
    pub fn new(id: u64, peer: SocketAddr, local: SocketAddr, cfg: &Config, epoch: u64) -> Core {
        Core {
            id,
            peer,
            local,
            input: Input::new(cfg.limits.max_subnegotiation),
            telnet: telnet::Policy::new(cfg.telnet.mccp, cfg.telnet.backend_mccp)
                .with_mssp(super::mssp::answers(cfg)),
            at_line_start: true,
            game: None,
            connecting: false,
            user: None,
            creds: None,
            phase: Phase::Held,
            held_since: None,
            relogin_at: None,
            login_deadline: None,
            quit_sent: false,
            queue: VecDeque::new(),
            epoch,
            was_held: false,
            input_rate: Bucket1::new(cfg.limits.input_burst),
            flood_drops: 0,
            last_backend: None,
            lazy: None,
            busy: None,
            screen_shown: None,
            after_login: Vec::new(),
            verify: None,
            verify_started: None,
            verified: None,
            paused: None,
        }
    }

    /// The phase, for the registry.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The backend the session is on (or was on last).
    pub fn backend(&self) -> Option<&str> {
        self.last_backend.as_deref()
    }

    /// Whether the core expects a game connection to exist.
    pub fn has_game(&self) -> bool {
        self.game.is_some()
    }

    /// Lines waiting to be sent to the game.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The user, for log fields.
    pub fn user_field(&self) -> UserField<'_> {
        UserField(self.user.as_deref())
    }

    /// The session starts: the proxy's own telnet offers, then the first
    /// connection if the active backend may be up, else a hold.
    pub fn start(&mut self, ctx: &mut Ctx, pool: &PoolState, out: &mut Actions) {
        self.start_with_screen(ctx, pool, None, out);
    }

    /// [`Core::start`] with the active backend's connect screen as the
    /// heartbeat last saw it (telnet removed): with `listen.lazy_connect`
    /// the player gets that screen and the game connection waits for the
    /// player's first line.
    pub fn start_with_screen(
        &mut self,
        ctx: &mut Ctx,
        pool: &PoolState,
        screen: Option<Arc<[u8]>>,
        out: &mut Actions,
    ) {
        let mut greeting = Vec::new();
        self.telnet.greet(&mut greeting);
        if !greeting.is_empty() {
            out.push(Action::Player(greeting));
        }
        self.epoch = pool.epoch;
        if self.start_lazy(ctx, pool, screen, out) {
            return;
        }
        if pool.active_usable() {
            self.connecting = true;
            out.push(Action::Connect(pool.active.clone()));
        } else {
            self.first_contact_failed(ctx, &pool.active, out);
        }
    }

    /// Nothing to connect to at the start: the `connecting` notice and a hold.
    pub(super) fn first_contact_failed(&mut self, ctx: &mut Ctx, active: &str, out: &mut Actions) {
        let msg = render(&ctx.cfg.notices.connecting, ctx.cfg, active, None);
        self.notice(&msg, out);
        self.enter_held(ctx, false);
    }

    /// The earliest time [`Core::timer`] has something to do.
    pub fn next_deadline(&self, cfg: &Config) -> Option<Instant> {
        let hold_end = match (self.held_since, cfg.outage.max_hold) {
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
        [
            banner,
            capture,
            watch.and_then(|w| w.deadline),
            watch.and_then(|w| w.resend_at),
            // Not while paused: a player who could not log in then is not
            // timed out for it (the pause moves the deadline on).
            self.login_deadline.filter(|_| self.paused.is_none()),
            self.relogin_at.map(|(t, _)| t),
            hold_end,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Sends a notice on a line of its own.
    pub(super) fn notice(&mut self, text: &str, out: &mut Actions) {
        let mut v = Vec::with_capacity(text.len() + 4);
        if !self.at_line_start {
            v.extend_from_slice(b"\r\n");
        }
        telnet::escape_iac(text.as_bytes(), &mut v);
        v.extend_from_slice(b"\r\n");
        self.at_line_start = true;
        out.push(Action::Notice(v));
    }

    /// Game text (telnet-free) for the player.
    pub(super) fn write_out(&mut self, text: &[u8], out: &mut Actions) {
        if text.is_empty() {
            return;
        }
        let mut v = Vec::with_capacity(text.len());
        telnet::escape_iac(text, &mut v);
        self.at_line_start = text.last() == Some(&b'\n');
        self.game_out(v, out);
    }

    /// Bytes for the game, if there is one to take them.
    pub(super) fn flush_game(&mut self, data: &mut Vec<u8>, out: &mut Actions) {
        if data.is_empty() {
            return;
        }
        let bytes = Zeroizing::new(std::mem::take(data));
        // Paused: nothing the player sends reaches the game (their lines
        // are queued before they get here; this is telnet).
        if self.game.as_ref().is_some_and(|g| !g.closed) && self.paused.is_none() {
            out.push(Action::Game(bytes));
        }
    }

    /// An announcement from the operator.
    pub fn announce(&mut self, a: &Announcement, out: &mut Actions) {
        let on = self.game.as_ref().map(|g| g.name.as_str());
        if a.backend.is_some() && a.backend.as_deref() != on {
            return;
        }
        // Unlike holdfast's own notices, an operator's announcement is
        // content: a player who is away gets it in the playback.
        self.notice(&a.text, out);
        if let Some(Action::Notice(b)) = out.pop() {
            out.push(Action::Player(b));
        }
    }

    /// The player's connection ended.
    pub fn player_closed(&mut self, out: &mut Actions) {
        out.push(Action::Close(End::PlayerClosed));
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
        if let Some(w) = self.game.as_mut().and_then(|g| g.watch.as_mut()) {
            if w.syncing && w.resend_at.is_some_and(|t| t <= now) {
                // Not admitted yet (or the marker was dropped): again.
                debug!("re-login: marker not back yet; sending it again");
                w.resend_at = Some(now + login::SYNC_RESEND);
                let m = login::render_nonce(&cfg.templates.marker, &w.nonce);
                out.push(Action::Game(Zeroizing::new(m)));
            }
        }
        if self.paused.is_none()
            && self.login_deadline.is_some_and(|t| t <= now)
            && self.login_deadline_passed(ctx, out)
        {
            return;
        }
        if let (Some(t), Some(m), None) = (self.held_since, cfg.outage.max_hold, &self.game) {
            if t + m <= now {
                let msg = render(&cfg.notices.max_hold, cfg, "", Some(now - t));
                self.notice(&msg, out);
                out.push(Action::Close(End::MaxHold));
                return;
            }
        }
        if self.relogin_at.is_some_and(|(t, _)| t <= now) {
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
                debug!("login timeout with a login in doubt: asking the game again");
                out.push(Action::Game(Zeroizing::new(m)));
                self.login_deadline = Some(ctx.now + cfg.templates.login_confirm_timeout);
                return false;
            }
        }
        self.notice(&render(&cfg.notices.login_timeout, cfg, "", None), out);
        out.push(Action::Close(End::LoginTimeout));
        true
    }

    /// The proxy is stopping: the player's notice.
    pub fn shutdown(&mut self, cfg: &Config, out: &mut Actions) {
        // A paused session's kept output still reaches its player.
        if let Some(p) = self.paused.take().filter(|p| !p.kept.is_empty()) {
            out.push(Action::Player(p.kept.into_bytes()));
            self.at_line_start = true;
        }
        self.notice(&render(&cfg.notices.stopping, cfg, "", None), out);
    }

    /// What to send the game when leaving it: the quit command if logged in.
    pub fn leave_action(&mut self, cfg: &Config) -> Option<Action> {
        let g = self.game.take()?;
        if self.user.is_some() && !g.closed {
            Some(Action::Leave {
                quit: format!("{}\r\n", cfg.templates.quit).into_bytes(),
            })
        } else {
            Some(Action::DropGame)
        }
    }
}
