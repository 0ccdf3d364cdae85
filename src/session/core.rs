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
//! [`Ctx`] and [`Action`] are in [`super::action`].
//!
//! The transitions live in files of their own: [`super::relay`] (the
//! game's output, login confirmation), [`super::held`] (outages, holding,
//! moving between backends), [`super::relogin`] (connecting, logging back
//! in, the end of a login watch), [`super::timer`] (deadlines), and the
//! rest named in [`super`]'s table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use zeroize::Zeroizing;

use super::action::{Action, Actions, Ctx};
use super::input::Input;
use super::rare::Rare;
use super::watch::Watch;
use super::End;
use crate::clientip::Addr;
use crate::config::Config;
use crate::limiter::Bucket1;
use crate::login::Credentials;
use crate::state::{Announcement, Phase, PoolState};
use crate::telnet;

/// The game side of a session, as the core knows it.
#[derive(Debug)]
pub(super) struct Game {
    /// Backend name (shared with [`Core::last_backend`]: no copy of its
    /// own).
    pub name: Arc<str>,
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
    /// Boxed: only a lazy session's first connection has one.
    pub skip: Option<Box<(Arc<[u8]>, usize)>>,
    /// The game's own connect screen as it arrives, until the game is
    /// quiet (then [`Action::ScreenSeen`]) or the player types.
    /// Boxed: only there at the start of a connection.
    pub capture: Option<Box<Capture>>,
    /// A partial line held back while lines are checked for announcements
    /// (boxed: only there between two reads, and rarely).
    pub tail: Option<Box<Tail>>,
}

/// The end of the game's output when it stopped mid-line while lines were
/// being checked for announcements ([`Ctx::quiet`]): the rest of the line
/// is awaited so that "Alice has con" | "nected." is checked as one line.
/// It goes out before anything that follows it (a telnet command, a
/// notice, the next text) and by [`Tail::until`] at the latest (see
/// `relay::TAIL_WAIT`), and never holds more than `relay::TAIL_MAX` bytes.
#[derive(Debug)]
pub(super) struct Tail {
    /// The text, telnet removed and not escaped.
    pub text: Vec<u8>,
    /// Shown by then, complete or not.
    pub until: Instant,
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

/// One player's session state.
#[derive(Debug)]
pub struct Core {
    /// Session id.
    pub id: u64,
    /// The player's address.
    pub peer: Addr,
    /// The proxy address the player connected to.
    pub local: Addr,
    pub(super) input: Input,
    /// Telnet negotiation for both sides and the player's MCCP2 stream.
    pub telnet: telnet::Policy,
    /// The last byte sent to the player ended a line (or a prompt).
    pub(super) at_line_start: bool,
    pub(super) game: Option<Box<Game>>,
    /// A [`Action::Connect`] is outstanding.
    pub(super) connecting: bool,
    /// The logged-in user (shared with the registry's entry).
    pub(super) user: Option<Arc<str>>,
    pub(super) creds: Option<Box<Credentials>>,
    pub(super) phase: Phase,
    /// Close if not logged in by then.
    pub(super) login_deadline: Option<Instant>,
    /// The player sent the quit command to the game.
    pub(super) quit_sent: bool,
    /// Pool epoch seen last (a change means failover).
    pub(super) epoch: u64,
    /// This session has been held by an outage since it last relayed.
    pub(super) was_held: bool,
    /// Input rate limit (`limits.input_lines_per_sec`).
    pub(super) input_rate: Bucket1,
    /// The backend the session is on, or was on last (for the registry).
    pub(super) last_backend: Option<Arc<str>>,
    /// Lazy connect: the player has the cached connect screen and no game
    /// connection yet; the first line opens one. (Not in [`Rare`]: every
    /// silent player of a lazy-connect game has it.)
    pub(super) lazy: Option<Arc<[u8]>>,
    /// What only some sessions have, some of the time (see
    /// [`super::rare`]): read through [`Core::rare`], written through
    /// [`Core::rare_mut`].
    rare: Option<Box<Rare>>,
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
            peer: peer.into(),
            local: local.into(),
            input: Input::new(cfg.limits.max_subnegotiation),
            telnet: telnet::Policy::new(cfg.telnet.mccp, cfg.telnet.backend_mccp)
                .with_mssp(super::mssp::answers(cfg)),
            at_line_start: true,
            game: None,
            connecting: false,
            user: None,
            creds: None,
            phase: Phase::Held,
            login_deadline: None,
            quit_sent: false,
            epoch,
            was_held: false,
            input_rate: Bucket1::new(cfg.limits.input_burst),
            last_backend: None,
            lazy: None,
            rare: None,
        }
    }

    /// The rarely used part of the state ([`super::rare`]); all empty
    /// without the box.
    pub(super) fn rare(&self) -> &Rare {
        static EMPTY: Rare = Rare::EMPTY;
        self.rare.as_deref().unwrap_or(&EMPTY)
    }

    /// The rarely used part, to write to: made if there is none yet.
    /// [`Core::tidy`] drops it once it is all empty again.
    pub(super) fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// The rarely used part, if the session has one: to take or clear
    /// something, which needs no box made for it.
    pub(super) fn rare_mut_if_any(&mut self) -> Option<&mut Rare> {
        self.rare.as_deref_mut()
    }

    /// Drops the rarely used part once everything in it is empty again
    /// (the driver calls this after each step).
    pub fn tidy(&mut self) {
        if self.rare.as_ref().is_some_and(|r| r.is_empty()) {
            self.rare = None;
        }
    }

    /// Whether the rarely used part is there (for tests of its life).
    #[cfg(test)]
    pub(super) fn has_rare(&self) -> bool {
        self.rare.is_some()
    }

    /// The phase, for the registry: [`Phase::Paused`] while the cluster
    /// pauses the session (its own phase stays what it was).
    pub fn phase(&self) -> Phase {
        if self.rare().paused.is_some() {
            return Phase::Paused;
        }
        self.phase
    }

    /// The last the player heard from holdfast is that the game is down
    /// (held, or logging back in): what a player whose link drops now
    /// takes away ([`super::away::Away::told_down`]).
    pub fn told_down(&self) -> bool {
        self.phase != Phase::Relaying
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The backend the session is on (or was on last).
    pub fn backend(&self) -> Option<&str> {
        self.last_backend.as_deref()
    }

    /// [`Core::user`], to share (the registry keeps it).
    pub fn user_shared(&self) -> Option<&Arc<str>> {
        self.user.as_ref()
    }

    /// [`Core::backend`], to share (the registry keeps it).
    pub fn backend_shared(&self) -> Option<&Arc<str>> {
        self.last_backend.as_ref()
    }

    /// The name of the backend of the game connection, or `""` without
    /// one (for logs, events and notices).
    pub(super) fn game_name(&self) -> String {
        self.game
            .as_ref()
            .map(|g| g.name.to_string())
            .unwrap_or_default()
    }

    /// Whether the core expects a game connection to exist.
    pub fn has_game(&self) -> bool {
        self.game.is_some()
    }

    /// Lines waiting to be sent to the game.
    pub fn queued(&self) -> usize {
        self.rare().queue.len()
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

    /// Sends a notice on a line of its own (after any partial line of the
    /// game's held back: see [`Tail`]).
    pub(super) fn notice(&mut self, text: &str, out: &mut Actions) {
        self.flush_tail(out);
        let mut v = Vec::with_capacity(text.len() + 4);
        if !self.at_line_start {
            v.extend_from_slice(b"\r\n");
        }
        telnet::escape_iac(text.as_bytes(), &mut v);
        v.extend_from_slice(b"\r\n");
        self.at_line_start = true;
        out.push(Action::Notice(v));
    }

    /// Game text (telnet-free) for the player, after any partial line held
    /// back before it (see [`Tail`]).
    pub(super) fn write_out(&mut self, text: &[u8], out: &mut Actions) {
        if text.is_empty() {
            return;
        }
        self.flush_tail(out);
        self.write_text(text, out);
    }

    /// The partial line of the game's held back ([`Tail`]), if any, goes
    /// out now (to the player, or to the pause's record).
    pub(super) fn flush_tail(&mut self, out: &mut Actions) {
        if let Some(t) = self.game.as_mut().and_then(|g| g.tail.take()) {
            self.write_text(&t.text, out);
        }
    }

    /// Whether a partial line of the game's is held back (a `Tail`): the
    /// next read's lines are checked too, to find the rest of it.
    pub fn holds_tail(&self) -> bool {
        self.game.as_ref().is_some_and(|g| g.tail.is_some())
    }

    fn write_text(&mut self, text: &[u8], out: &mut Actions) {
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
        if self.game.as_ref().is_some_and(|g| !g.closed) && self.rare().paused.is_none() {
            out.push(Action::Game(bytes));
        }
    }

    /// An announcement from the operator.
    pub fn announce(&mut self, a: &Announcement, out: &mut Actions) {
        let on = self.game.as_ref().map(|g| &*g.name);
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

    /// The proxy is stopping: the player's notice.
    pub fn shutdown(&mut self, cfg: &Config, out: &mut Actions) {
        // The game's last partial line first (into the kept output if
        // paused: it came after it).
        self.flush_tail(out);
        // A paused session's kept output still reaches its player.
        if let Some(p) = self
            .rare_mut_if_any()
            .and_then(|r| r.paused.take())
            .filter(|p| !p.kept.is_empty())
        {
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
