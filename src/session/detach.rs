//! A dropped player link is not a lost session. A logged-in player whose
//! connection ends without `QUIT` is *detached*: the session's task goes on
//! without a player, keeps the game connection (held and logged back in
//! through outages like any other), and records the game's output in a
//! bounded [`Playback`]. When a new connection logs in with the same name
//! and the game accepts that login (checked on the new connection: see
//! `resume`), the task hands its core, its game connection and the
//! playback to that connection's task and ends without a word to the game.

use std::any::Any;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, timeout, Instant};

use super::action::Action;
use super::away::Away;
use super::core::Core;
use super::driver::Driver;
use super::playback::Playback;
use super::snapshot::{snapshot_detached, DetachedWas};
use super::End;
use crate::backend::connect::BackendStream;
use crate::events::Event;
use crate::login::Credentials;
use crate::state::upgrade::{Ask, Parcel, SessionParcel, Verdict, Wake};
use crate::state::DetachMsg;
use crate::transport::PlayerTransport;

/// How long a resuming player's task waits for the detached one to answer.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(2);

/// What a detached session hands to the task of its returning player.
pub struct Handover {
    /// The session's state.
    pub core: Core,
    /// Its game connection, if it has one now.
    pub game: Option<BackendStream>,
    /// The game's output meanwhile.
    pub playback: Playback,
    /// When the player's link dropped.
    pub since: Instant,
    /// The player had last been told the game is down ([`Away::told_down`]).
    pub told_down: bool,
}

/// How a detached session's time ended.
pub enum After {
    /// It ends (expired, booted, shutdown...).
    End(End),
    /// Its player came back: hand over through this.
    TakenOver(oneshot::Sender<Option<Box<dyn Any + Send>>>),
}

impl<P: PlayerTransport> Driver<P> {
    /// Whether the session is kept for its player rather than ended.
    pub fn can_detach(&self, end: End) -> bool {
        self.core.can_detach(&self.shared.config(), end)
    }

    /// Runs the session without a player until it is taken over or ends.
    pub async fn detached(&mut self, why: End) -> After {
        let cfg = self.shared.config();
        let keep = cfg.resume.keep.unwrap_or_default();
        let since = Instant::now();
        let told_down = self.core.told_down();
        match self.away.as_mut() {
            // Begun already when an upgrade that failed dropped the link.
            Some(a) => {
                a.since = since;
                a.told_down = told_down;
            }
            None => self.away = Some(Away::new(since, told_down, &cfg)),
        }
        let id = self.core.id;
        let user = self.core.user().unwrap_or_default().to_string();
        // The player's connection is over (closed, reset, or not read):
        // let it go now rather than when the session ends.
        if let Some(mut p) = self.player.take() {
            let _ = timeout(Duration::from_millis(100), p.shutdown()).await;
        }
        slog!(info, self.core, user = %user, why = why.as_str(), keep = ?keep, "player link dropped; session detached");
        self.shared.events.emit(
            Event::new("session.detached")
                .with("session", id)
                .with("user", user.as_str())
                .with("reason", why.as_str()),
        );
        self.stay_detached(since + keep).await
    }

    /// Kept for its player until `expires`: listed for a returning player
    /// (also in a new process after an upgrade, with what the old one kept).
    pub(super) async fn stay_detached(&mut self, expires: Instant) -> After {
        let cfg = self.shared.config();
        let id = self.core.id;
        let user = self.core.user().unwrap_or_default().to_string();
        let (tx, mut rx) = mpsc::channel(4);
        self.shared
            .detached
            .insert(id, Core::resume_key(&user), tx, cfg.listen.max_detached);
        self.shared.registry.update(id, |s| s.detached = true);
        let after = self.detached_loop(expires, &mut rx).await;
        self.shared.detached.remove(id);
        after
    }

    /// What follows the main loop's end: kept detached if the player's
    /// link dropped, then finished; nothing at all when the session went
    /// to a new process in an upgrade.
    pub(super) async fn after_run(mut self, mut end: End) {
        self.leave_roll().await;
        if end == End::Handover {
            return;
        }
        if self.can_detach(end) {
            match Box::pin(self.detached(end)).await {
                After::End(e) => end = e,
                After::TakenOver(reply) => return self.give_to_returning_player(reply),
            }
        }
        self.after_detached(After::End(end)).await;
    }

    /// What follows a detached session's time.
    pub(super) async fn after_detached(self, after: After) {
        match after {
            After::End(End::Handover) => {}
            After::End(end) => Box::pin(self.finish(end)).await,
            After::TakenOver(reply) => self.give_to_returning_player(reply),
        }
    }

    async fn detached_loop(
        &mut self,
        expires: Instant,
        rx: &mut mpsc::Receiver<DetachMsg>,
    ) -> After {
        // On `self.freeze` (not a local) so that a connect during a
        // re-login gives way to an upgrade's ask too (see `apply`). On the
        // roll before the first look at the pool, the announcements (kept
        // for the player, see `Core::announce`) and the shutdown token:
        // rung for any news after it (see `Driver::news`).
        self.freeze = Some(self.shared.handover.enlist_detached());
        let after = self.detached_turns(expires, rx).await;
        self.freeze = None;
        if let Some(s) = self.stopping.as_mut() {
            s.asked = None;
        }
        after
    }

    async fn detached_turns(
        &mut self,
        expires: Instant,
        rx: &mut mpsc::Receiver<DetachMsg>,
    ) -> After {
        let mut pool_rx = self.shared.pool.subscribe();
        pool_rx.borrow_and_update();
        let mut read = self.shared.announcements.last();
        if self.shared.shutdown.is_cancelled() {
            return After::End(End::Shutdown);
        }
        loop {
            // An ask that came while a connect was under way: the step
            // is done, so this is a clean point.
            if let Some(ask) = self.take_ask() {
                if let Err(end) = self.hand_over_detached(ask, expires, None).await {
                    return After::End(end);
                }
                continue;
            }
            if let Err(end) = self.connect_again().await {
                return After::End(end);
            }
            let deadline = self
                .core
                .next_deadline(&self.shared.config.borrow())
                .map_or(expires, |d| d.min(expires));
            // Cancel-safe branches only (see `Driver::run`).
            let r: Result<(), End> = tokio::select! {
                r = super::wait::game_readable(&self.game) => self.on_game_readable(r.is_err()).await,
                w = super::wait::next_wake(&mut self.freeze) => match w {
                    Wake::News => self.news(&mut pool_rx, &mut read).await,
                    // An upgrade: the session, its playback and its time
                    // left cross to the new process.
                    Wake::Ask(ask) => self.hand_over_detached(ask, expires, None).await,
                },
                m = rx.recv() => match m {
                    Some(DetachMsg::Takeover { reply }) => {
                        if self.core.user().is_some() {
                            return After::TakenOver(reply);
                        }
                        // Stale: its re-login failed while its player was
                        // away (the password changed). The owner, whom the
                        // game just let in, takes another one; this ends.
                        slog!(info, self.core, "a stale detached session gives way to its owner");
                        let _ = reply.send(None);
                        Err(End::DetachExpired)
                    }
                    Some(DetachMsg::Expire) | None => Err(End::DetachExpired),
                },
                _ = sleep_until(deadline) => {
                    if Instant::now() >= expires {
                        Err(End::DetachExpired)
                    } else {
                        self.timer_fired().await
                    }
                }
            };
            if let Err(end) = r {
                return After::End(end);
            }
        }
    }

    /// An upgrade asked this detached session to stop: its state, its
    /// playback and its time away and left go, with its game socket, and
    /// it waits, touching nothing, for the verdict (`End::Handover` when
    /// the new process owns it).
    pub(super) async fn hand_over_detached(
        &mut self,
        ask: Ask,
        expires: Instant,
        why: Option<&str>,
    ) -> Result<(), End> {
        // No player to finish a compressed stream for: it is over (the
        // end of the stream is encoded and thrown away).
        self.core.telnet.out.stop();
        if self.core.telnet.out.has_pending() {
            drop(self.core.telnet.out.encode(&[]));
        }
        let now = Instant::now();
        // The kept output goes into the parcel for a moment, and back.
        let mut away = self.away.take();
        let d = DetachedWas {
            away_ms: away
                .as_ref()
                .map_or(0, |a| now.duration_since(a.since).as_millis() as u64),
            left_ms: expires.saturating_duration_since(now).as_millis() as u64,
            playback: away.as_mut().map_or_else(
                || Playback::new(1, 1),
                |a| std::mem::replace(&mut a.playback, Playback::new(1, 1)),
            ),
            why: why.map(str::to_string),
            told_down: away.as_ref().is_some_and(|a| a.told_down),
        };
        let content = self.detached_parcel(&d);
        if let Some(a) = away.as_mut() {
            a.playback = d.playback;
        }
        self.away = away;
        let (verdict, rx) = oneshot::channel();
        let parcel = Parcel {
            id: self.core.id,
            content,
            verdict,
        };
        if ask.send(parcel).is_ok() && rx.await.ok() == Some(Verdict::Commit) {
            slog!(debug, self.core, "handed over (detached)");
            return Err(End::Handover);
        }
        Ok(())
    }

    fn detached_parcel(&self, d: &DetachedWas) -> Result<SessionParcel, String> {
        let state = snapshot_detached(&self.core, d).map_err(|e| e.to_string())?;
        let (game, game_fd) = self.game_fd()?;
        Ok(SessionParcel {
            state,
            game,
            player_fd: None,
            game_fd,
        })
    }

    /// Hands this session to the task of its returning player and ends
    /// without closing anything.
    pub fn give_to_returning_player(mut self, reply: oneshot::Sender<Option<Box<dyn Any + Send>>>) {
        let id = self.core.id;
        self.shared.registry.remove(id);
        self.shared.detached.remove(id);
        let (playback, since, told_down) = self.away.take().map_or_else(
            || (Playback::new(1, 1), Instant::now(), false),
            |a| (a.playback, a.since, a.told_down),
        );
        let h = Handover {
            core: self.core,
            game: self.game.take(),
            playback,
            since,
            told_down,
        };
        slog!(debug, h.core, "handing the detached session over");
        let _ = reply.send(Some(Box::new(h)));
    }

    /// The player typed a login: if a detached session has that name, the
    /// game is asked (the line goes to it as the login it is, its answer
    /// hidden: see `resume`); else the line goes on as usual.
    pub(super) async fn try_resume(&mut self, creds: Credentials, line: &[u8]) -> Result<(), End> {
        if self
            .shared
            .detached
            .find(&Core::resume_key(&creds.name))
            .is_some()
        {
            self.resume_verify(line).await
        } else {
            self.resume_refused(line).await
        }
    }

    /// The game accepted the login ([`Action::Resume`]): take over the most
    /// recent detached session of that name that is still logged in (stale
    /// ones end themselves), or go on as an ordinary login if none is left.
    pub(super) async fn take_over_verified(&mut self) -> Result<(), End> {
        let Some((creds, took)) = self.core.verified_login() else {
            return Ok(());
        };
        let mut handed: Option<Box<Handover>> = None;
        for (_, tx) in self
            .shared
            .detached
            .find_all(&Core::resume_key(&creds.name))
        {
            let (rtx, rrx) = oneshot::channel();
            if tx.send(DetachMsg::Takeover { reply: rtx }).await.is_err() {
                continue;
            }
            if let Ok(Ok(Some(b))) = timeout(TAKEOVER_TIMEOUT, rrx).await {
                handed = b.downcast::<Handover>().ok();
                if handed.is_some() {
                    break;
                }
            }
        }
        let Some(h) = handed else {
            return self.verified_unclaimed().await;
        };
        // The connection the game just let the player in on was only the
        // check: it quits (in the background: its goodbye is nobody's).
        if let Some(g) = self.game.take() {
            let quit = format!("{}\r\n", self.shared.config().templates.quit).into_bytes();
            self.shared
                .tracker
                .spawn(super::finish::leave_owned(g, quit));
        }
        self.core.clear_verified();
        let queued = self.core.take_queue();
        slog!(info, self.core, user = %creds.name, verify_ms = took.as_millis() as u64, "the game accepted the login; resuming");
        self.resume(*h, took).await?;
        self.resumed_with(creds, queued).await
    }

    async fn resume(&mut self, h: Handover, verify: std::time::Duration) -> Result<(), End> {
        let away = h.since.elapsed();
        let missed = h.playback.len();
        let dropped = h.playback.dropped;
        let playback = h.playback.into_bytes();
        // This connection's own game connection (a connect screen) goes.
        self.game = h.game;
        let new = std::mem::replace(&mut self.core, h.core);
        let previous = self.core.id;
        let cfg = self.shared.config();
        let mut out = Vec::new();
        {
            let mut slot = Instant::now;
            let ctx = super::action::Ctx {
                cfg: &cfg,
                now: Instant::now(),
                relogin_slot: &mut slot,
                quiet: None,
                hold_tail: None,
            };
            self.core.adopt(
                &ctx,
                new,
                away,
                playback,
                missed,
                dropped,
                h.told_down,
                &mut out,
            );
        }
        let id = self.core.id;
        let user = self.core.user().unwrap_or_default().to_string();
        slog!(info, self.core, user = %user, away = ?away, missed, dropped, "session resumed");
        crate::metrics::metrics().resume();
        out.push(Action::Emit(
            Event::new("session.resumed")
                .with("session", id)
                .with("previous", previous)
                .with("user", user.as_str())
                .with("away_s", (away.as_secs_f64() * 10.0).round() / 10.0)
                .with("missed_lines", missed as u64)
                .with("dropped_lines", dropped)
                .with("verify_ms", verify.as_millis() as u64),
        ));
        self.apply_actions(out).await
    }
}
