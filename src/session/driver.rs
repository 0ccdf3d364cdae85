//! The session driver: owns the player's transport and the game
//! connection, waits on both, its timer and its slot on the upgrade roll
//! (an upgrade's ask, or news for every session: the pool, announcements,
//! the stop; see [`Shared::ring_on_news`]) in one `select!` of polls that
//! keep nothing of their own, feeds what happened to the [`Core`] and
//! carries out the [`Action`](super::Action)s it returns, in order
//! ([`super::apply`]; the writes themselves are in [`super::write`]).
//!
//! Writes to the player happen before the next event is looked at, so the
//! game's output always reaches the player before anything that follows it
//! (half-close: the game's last words arrive before a decision is made).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use rand::Rng;
use tokio::time::{Instant, Sleep};

use super::action::Actions;
use super::away::Away;
use super::core::Core;
use super::stopping::Stopping;
use super::wait::{game_readable, next_wake, read_game, set_timer, timer_due};
use super::End;
use crate::backend::connect::BackendStream;
use crate::config::Config;
use crate::state::upgrade::Wake;
use crate::state::{Phase, Shared};
use crate::transport::PlayerTransport;

/// What the loop's `select!` saw (see [`Driver::run`]).
enum Ev {
    /// The player's bytes; `None`: the connection closed or failed.
    Player(Option<Vec<u8>>),
    /// The game's socket is readable (`false`) or failed (`true`).
    Game(bool),
    /// The core's deadline passed.
    Timer,
    /// An upgrade's ask, or news for every session.
    Wake(Wake),
}

/// One session's sockets around its core.
pub(super) struct Driver<P> {
    pub shared: Arc<Shared>,
    pub core: Core,
    /// `None` once the player's connection is given up (detached).
    pub player: Option<P>,
    pub game: Option<BackendStream>,
    /// What the registry was last told: the phase, and which user and
    /// backend strings, by address (0: none). The registry's entry holds
    /// the strings told, so no other string can have that address while
    /// it does; 24 bytes instead of 40 in every task (issue 25).
    published: (Phase, usize, usize),
    /// The core was started (a session taken over in an upgrade is).
    pub started: bool,
    /// While detached: since when, and the game's output kept for the
    /// player. Boxed: only a detached session has one.
    pub away: Option<Box<Away>>,
    /// This session's place on the upgrade roll while [`Driver::run`]
    /// runs: a write that waits on a slow reader watches it too.
    pub freeze: Option<crate::state::upgrade::Enlisted>,
    /// An upgrade's ask that came while a step was under way, and the
    /// writes held for it. Boxed: only a session an upgrade stopped in
    /// the middle of a step has one (see [`Stopping`]).
    pub stopping: Option<Box<Stopping>>,
    /// The game output being read mentions a name held always (the
    /// heartbeat's), may begin one, or ends a line held back from the
    /// last read: its lines are checked for announcements.
    pub(super) quiet_mention: bool,
    /// The core's next deadline, while it has one (see [`set_timer`]).
    timer: Option<Pin<Box<Sleep>>>,
}

/// The next re-login slot: the shared pacer plus this session's jitter.
pub(super) fn relogin_slot(shared: &Shared, cfg: &Config) -> Instant {
    let at = shared.relogin_limiter.reserve();
    let jitter = cfg.relogin.jitter;
    if jitter.is_zero() {
        at
    } else {
        at + jitter.mul_f64(rand::rng().random::<f64>())
    }
}

/// Runs one step of the core with a fresh [`Ctx`](super::Ctx) and carries
/// out what it pushed. `$body` runs with `(core, ctx, pool, out)` named as the closure-like head says.
macro_rules! step {
    ($d:expr, |$core:ident, $ctx:ident, $pool:ident, $out:ident| $body:expr) => {{
        let cfg = $d.shared.config();
        let mut out: $crate::session::Actions = Vec::new();
        {
            let shared = &$d.shared;
            let mut slot = || $crate::session::driver::relogin_slot(shared, &cfg);
            let quiet = |name: &str| shared.quiet.contains(name);
            let hold_tail = |piece: &[u8]| {
                shared.quiet.active()
                    || shared.quiet.mentions_always(piece)
                    || shared.quiet.may_begin_always(piece)
            };
            let mut ctx = $crate::session::Ctx {
                cfg: &cfg,
                now: ::tokio::time::Instant::now(),
                relogin_slot: &mut slot,
                quiet: (shared.quiet.active() || $d.quiet_mention)
                    .then_some(&quiet as &dyn Fn(&str) -> bool),
                hold_tail: Some(&hold_tail),
            };
            let pool_guard = shared.pool.borrow();
            let $pool: &$crate::state::PoolState = &pool_guard;
            let $core = &mut $d.core;
            let $ctx = &mut ctx;
            let $out = &mut out;
            $body;
        }
        Box::pin($d.apply(out)).await
    }};
}
// Also used where actions are carried out (`apply`, `write`): the macro
// names what it uses by full path, so it expands the same there.
pub(super) use step;

impl<P: PlayerTransport> Driver<P> {
    pub fn new(shared: Arc<Shared>, core: Core, player: P) -> Self {
        let mut d = Self::without_player(shared, core);
        d.player = Some(player);
        d
    }

    /// A session whose player's link is gone (a detached session taken
    /// over in an upgrade).
    pub fn without_player(shared: Arc<Shared>, core: Core) -> Self {
        Driver {
            shared,
            core,
            player: None,
            game: None,
            published: (Phase::Held, 0, 0),
            started: false,
            away: None,
            freeze: None,
            stopping: None,
            quiet_mention: false,
            timer: None,
        }
    }

    /// Runs the session until it ends; returns why. Its end
    /// ([`Driver::after_run`]) starts with [`Driver::leave_roll`].
    ///
    /// Not an `async fn` of its own around the loop's: that would keep
    /// `self` twice, padded, in every task (24 bytes, issue 25).
    pub fn run(&mut self) -> impl std::future::Future<Output = End> + Send + '_ {
        self.freeze = Some(self.shared.handover.enlist());
        self.run_enlisted()
    }

    /// Off the roll once the loop ended: a detached session enlists on its
    /// own. An ask that came during the last step is dropped (the upgrade
    /// waits for this task to end or enlist again), and the bytes held
    /// back for it go before anything else this session still writes.
    pub(super) async fn leave_roll(&mut self) {
        self.freeze = None;
        let unsent = self.stopping.take().map(|s| s.unsent).unwrap_or_default();
        if !unsent.is_empty() {
            let _ = self.write_player_raw(&unsent, self.write_timeout()).await;
        }
    }

    async fn run_enlisted(&mut self) -> End {
        // The pool, the announcements and the shutdown token are looked at
        // when the session is rung (`Wake::News`, see `Shared::ring_on_news`),
        // not each waited on: it is on the roll from `run`, so it misses no
        // news after this look.
        let mut pool_rx = self.shared.pool.subscribe();
        pool_rx.borrow_and_update();
        let mut read = self.shared.announcements.last();
        if self.shared.shutdown.is_cancelled() {
            return End::Shutdown;
        }
        if !self.started {
            self.started = true;
            let screen = self.active_screen();
            if let Err(e) = step!(self, |core, ctx, pool, out| core
                .start_with_screen(ctx, pool, screen, out))
            {
                return e;
            }
        }
        loop {
            // An upgrade asked while a write waited: the step that wrote
            // is done, so this is a clean point (see `handover`).
            if let Some(ask) = self.take_ask() {
                if let Err(end) = Box::pin(self.hand_over(ask)).await {
                    return end;
                }
                continue;
            }
            if let Err(end) = self.connect_again().await {
                return end;
            }
            let deadline = self.core.next_deadline(&self.shared.config.borrow());
            set_timer(&mut self.timer, deadline);
            // Not `biased`: a player who floods input must not starve the
            // game's output (or the other way round); tokio polls the
            // branches in random order.
            // What happened, taken out of the `select!` before it is
            // carried out: the select's output and the player's read
            // buffer are then not kept across the waits that follow (48
            // bytes of every task, issue 25).
            let ev = tokio::select! {
                // Every branch is cancel-safe: readiness and the slot's
                // wake consume nothing when they lose the race, and
                // `poll_read` reads only once it is ready (the buffer is
                // empty, with no capacity, while it is not).
                r = poll_fn(|cx| match self.player.as_mut() {
                    Some(p) => {
                        let mut buf = Vec::new();
                        p.poll_read(cx, &mut buf).map(|r| match r {
                            Ok(0) | Err(_) => None,
                            Ok(_) => Some(buf),
                        })
                    }
                    None => Poll::Pending,
                }) => Ev::Player(r),
                r = game_readable(&self.game) => Ev::Game(r.is_err()),
                () = timer_due(&mut self.timer) => Ev::Timer,
                w = next_wake(&mut self.freeze) => Ev::Wake(w),
            };
            let r: Result<(), End> = match ev {
                Ev::Player(None) => Err(End::PlayerClosed),
                Ev::Player(Some(data)) => {
                    crate::metrics::metrics()
                        .bytes(crate::metrics::Direction::FromPlayer, data.len() as u64);
                    step!(self, |core, ctx, _pool, out| core
                        .player_data(ctx, &data, out))
                }
                Ev::Game(failed) => self.on_game_readable(failed).await,
                Ev::Timer => self.timer_fired().await,
                // Boxed: news is rare, and what it awaits (a move, the
                // screen, announcements) is the largest wait of the loop.
                Ev::Wake(Wake::News) => Box::pin(self.news(&mut pool_rx, &mut read)).await,
                // An upgrade: every event before it was carried out in
                // full, so this is a clean point to stop (see `handover`).
                // Boxed: once per upgrade, it need not take room in every
                // task.
                Ev::Wake(Wake::Ask(ask)) => Box::pin(self.hand_over(ask)).await,
            };
            if let Err(end) = r {
                return end;
            }
        }
    }

    /// Rung: the proxy stopping, the pool changed, announcements after the
    /// last one `read`.
    pub(super) async fn news(
        &mut self,
        pool_rx: &mut tokio::sync::watch::Receiver<crate::state::PoolState>,
        read: &mut u64,
    ) -> Result<(), End> {
        if self.shared.shutdown.is_cancelled() {
            return Err(End::Shutdown);
        }
        if pool_rx.has_changed().unwrap_or(false) {
            pool_rx.borrow_and_update();
            self.pool_changed().await?;
        }
        for a in self.shared.announcements.since(read) {
            self.announced(&a).await?;
        }
        Ok(())
    }

    pub(super) async fn pool_changed(&mut self) -> Result<(), End> {
        step!(self, |core, ctx, pool, out| core.pool(ctx, pool, out))?;
        self.offer_screen().await
    }

    /// A session waiting to try the game again gets the heartbeat's copy
    /// of the connect screen if there is one now (see
    /// [`Core::screen_cached`]). Asked when the pool changes (the backend
    /// came up: its probe has just seen the screen) and before a retry.
    async fn offer_screen(&mut self) -> Result<(), End> {
        if !self.core.wants_screen() {
            return Ok(());
        }
        let screen = self.active_screen();
        if screen.is_none() {
            return Ok(());
        }
        step!(self, |core, ctx, pool, out| core
            .screen_cached(ctx, pool, screen, out))
    }

    /// The heartbeat's copy of the active backend's connect screen, if
    /// it has one.
    fn active_screen(&self) -> Option<Arc<[u8]>> {
        self.shared
            .probe(&self.shared.pool.borrow().active)
            .and_then(|p| p.screen())
    }

    pub(super) async fn announced(&mut self, a: &crate::state::Announcement) -> Result<(), End> {
        step!(self, |core, _ctx, _pool, out| core.announce(a, out))
    }

    pub(super) async fn timer_fired(&mut self) -> Result<(), End> {
        // Boxed, and only when wanted: few timers have a screen to offer,
        // and inline its wait took room in every task.
        if self.core.wants_screen() {
            Box::pin(self.offer_screen()).await?;
        }
        step!(self, |core, ctx, pool, out| core.timer(ctx, pool, out))
    }

    pub(super) async fn resume_refused(&mut self, line: &[u8]) -> Result<(), End> {
        step!(self, |core, ctx, _pool, out| core
            .resume_refused(ctx, line, out))
    }

    pub(super) async fn resume_verify(&mut self, line: &[u8]) -> Result<(), End> {
        step!(self, |core, ctx, _pool, out| core
            .resume_verify(ctx, line, out))
    }

    pub(super) async fn verified_unclaimed(&mut self) -> Result<(), End> {
        step!(self, |core, ctx, _pool, out| core
            .verified_unclaimed(ctx, out))
    }

    pub(super) async fn resumed_with(
        &mut self,
        creds: crate::login::Credentials,
        queued: std::collections::VecDeque<(Instant, Vec<u8>)>,
    ) -> Result<(), End> {
        step!(self, |core, ctx, _pool, out| core
            .resumed_with(ctx, creds, queued, out))
    }

    pub(super) async fn apply_actions(&mut self, out: Actions) -> Result<(), End> {
        Box::pin(self.apply(out)).await
    }

    /// The game's socket is readable, or `failed`.
    pub(super) async fn on_game_readable(&mut self, failed: bool) -> Result<(), End> {
        // The read's result is decided before any wait, so that it is not
        // kept across one (it would take room in every task).
        let mut buf = Vec::new();
        let closed = failed
            || match &self.game {
                None => return Ok(()),
                Some(g) => match read_game(g, &mut buf) {
                    Ok(n) => n == 0,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(_) => true,
                },
            };
        if closed {
            drop(buf);
            return step!(self, |core, _ctx, _pool, out| core.game_closed(out));
        }
        // A partial line held back (or one that may begin the heartbeat's
        // announcement) is checked with its rest.
        let q = &self.shared.quiet;
        self.quiet_mention =
            self.core.holds_tail() || q.mentions_always(&buf) || q.may_begin_always(&buf);
        if !self.shared.quiet.active() && !self.quiet_mention && self.core.game_passthrough(&buf) {
            if let Some(a) = self.away.as_mut() {
                a.playback.record(&buf);
                return Ok(());
            }
            // `write_player` by hand, each wait boxed: what the socket
            // takes at once (most reads) needs no future, and the loop
            // keeps no room for a wait (issue 25).
            if !self.core.telnet.out.plain() {
                let limit = self.write_timeout();
                return Box::pin(self.write_player_compressed(&buf, limit)).await;
            }
            let pos = self.write_player_now(&buf)?;
            if pos == buf.len() {
                return Ok(());
            }
            let limit = self.write_timeout();
            return Box::pin(self.write_player_wait(&buf[pos..], limit)).await;
        }
        // Boxed: this path keeps more across its waits than the
        // passthrough above, which most reads take; inline, every
        // session's task would keep room for it (issue 25).
        Box::pin(self.game_data(&buf)).await
    }

    /// The game's output through the core: telnet, MCCP2, logins being
    /// watched, announcements held back.
    async fn game_data(&mut self, buf: &[u8]) -> Result<(), End> {
        // A step at a time (see `relay::INFLATE_BUDGET`), each written
        // before the next, yielding between them so one player's flood
        // does not stall others.
        let mut pos = 0;
        while pos < buf.len() {
            let rest = &buf[pos..];
            let used;
            step!(self, |core, ctx, pool, out| used =
                core.game_data(ctx, rest, pool, out))?;
            // zlib takes input or gives output on every step, so this
            // ends; `used` may be 0 while it drains output it already
            // holds.
            pos += used.min(rest.len());
            if pos < buf.len() {
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }

    /// The upgrade's ask that came in the middle of a step, if one did.
    pub(super) fn take_ask(&mut self) -> Option<crate::state::upgrade::Ask> {
        self.stopping.as_mut().and_then(|s| s.asked.take())
    }

    /// What an upgrade's ask in the middle of a step keeps (made on first
    /// use).
    pub(super) fn stopping(&mut self) -> &mut Stopping {
        self.stopping.get_or_insert_default()
    }

    pub(super) fn write_timeout(&self) -> Duration {
        self.shared.config.borrow().limits.write_timeout
    }

    /// Tells the registry what changed.
    pub(super) fn publish(&mut self) {
        let c = &self.core;
        let now = (
            c.phase(),
            address(c.user_shared()),
            address(c.backend_shared()),
        );
        if self.published == now {
            return;
        }
        self.published = now;
        let (phase, user, backend) = (
            c.phase(),
            c.user_shared().cloned(),
            c.backend_shared().cloned(),
        );
        self.shared.registry.update(c.id, |s| {
            s.phase = phase;
            s.user = user;
            if backend.is_some() {
                s.backend = backend;
            }
        });
    }
}

/// A shared string's address, 0 for none: what [`Driver::publish`]
/// compares.
fn address(s: Option<&Arc<str>>) -> usize {
    s.map_or(0, |s| Arc::as_ptr(s).cast::<u8>() as usize)
}
