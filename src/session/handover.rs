//! A session's part in an upgrade ([`crate::upgrade`]): stopping at a clean
//! point and handing its state and sockets over, and starting again from
//! them in the new process.
//!
//! The driver reads into a buffer and feeds the core at once, and finishes
//! every write before it looks at the next event, so at the top of its
//! `select!` nothing was read and not yet processed: the player's bytes
//! not yet read are still in the kernel's socket buffer, which the new
//! process shares; the partial line and the telnet parser's position are
//! in the core's snapshot. A plain WebSocket stops between two messages
//! (its gate keeps a message not finished yet, see `crate::front`), which
//! crosses with the snapshot ([`PlayerWas`]).

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::core::render;
use super::driver::Driver;
use super::snapshot::{resume_bytes, snapshot, Restored};
use super::stopping::Stopping;
use super::End;
use crate::backend::connect::BackendStream;
use crate::events::Event;
use crate::state::upgrade::GameFd;
use crate::state::upgrade::{Ask, Parcel, SessionParcel, Verdict};
use crate::state::Shared;
use crate::transport::{PlayerTransport, PlayerWas};

impl<P: PlayerTransport> Driver<P> {
    /// An upgrade asked this session to stop. The player's MCCP2 stream
    /// is ended (its zlib state cannot cross), the state and duplicates of
    /// the sockets go to the upgrade, and the session waits, touching
    /// nothing, for the verdict: `Err(End::Handover)` when the new process
    /// owns it, else it carries on (offering MCCP2 again if it ended the
    /// stream).
    pub(super) async fn hand_over(&mut self, ask: Ask) -> Result<(), End> {
        if self.player.as_ref().is_some_and(|p| p.socket().is_none()) {
            return self.leave_for_upgrade(ask).await;
        }
        let mccp = self.core.telnet.out.compressing();
        if mccp {
            self.core.telnet.out.stop();
            self.write_player(&[], self.write_timeout()).await?;
        }
        let was = match self.player.as_mut() {
            // Boxed: the session task does not carry its state while it runs.
            Some(p) => match Box::pin(p.freeze()).await {
                Ok(was) => was,
                Err(why) => {
                    slog!(debug, self.core, %why, "the player's connection cannot stop now");
                    return self.leave_for_upgrade(ask).await;
                }
            },
            None => None,
        };
        let content = self.parcel(mccp, was.as_ref());
        drop(was);
        let (verdict, rx) = oneshot::channel();
        let parcel = Parcel {
            id: self.core.id,
            content,
            verdict,
        };
        if ask.send(parcel).is_err() {
            return self.thaw(mccp).await;
        }
        if rx.await.ok() == Some(Verdict::Commit) {
            slog!(debug, self.core, "handed over");
            return Err(End::Handover);
        }
        self.thaw(mccp).await
    }

    /// A player whose connection cannot cross (TLS, WebSocket over TLS:
    /// rustls's state stays here; a WebSocket that could not stop) is told to connect again
    /// (`notices.upgrade_reconnect`) and its connection closed. Logged in
    /// with `[resume]` on, its game session crosses detached, for it to
    /// resume in the new process; otherwise the session ends here as if the
    /// player had closed (its game hears `QUIT` as usual). If the upgrade
    /// fails, it is detached here as any dropped link.
    ///
    /// A player who reads too slowly for a write to finish (the write gave
    /// way to this ask) is not waited for: the connection is dropped as it
    /// is, without the notice, as a link that failed. The output it had
    /// not handed to the connection yet is the first thing in the
    /// playback its resume replays (with MCCP2 the whole of the write that
    /// had not all gone; over a WebSocket the whole message whose frame
    /// had not all gone: its client could use none of it).
    async fn leave_for_upgrade(&mut self, ask: Ask) -> Result<(), End> {
        let cfg = self.shared.config();
        let keep = self.can_detach(End::PlayerClosed);
        let Stopping {
            gave_way: slow,
            unsent,
            unsent_text,
            ..
        } = self.stopping.take().map(|s| *s).unwrap_or_default();
        let mut missed = Vec::new();
        if slow {
            // Compressed (MCCP2), the bytes left say nothing: the text of
            // the writes they came from instead.
            let undelivered = self.player.as_mut().map(|p| p.undelivered());
            if unsent_text.is_empty() {
                missed = undelivered.unwrap_or_default();
                missed.extend_from_slice(&unsent);
            } else {
                missed = unsent_text;
            }
            slog!(
                debug,
                self.core,
                bytes = missed.len(),
                "a slow reader's link is dropped for the upgrade"
            );
            self.player = None;
        } else {
            // Bytes held back for the ask (a connect gave way to it).
            let _ = self.write_player_raw(&unsent, Duration::from_secs(1)).await;
            let text = render(
                &cfg.notices.upgrade_reconnect,
                &cfg,
                self.core.backend().unwrap_or(""),
                None,
            );
            let bye = resume_bytes(&mut self.core, false, &text);
            let _ = self.write_player(&bye, Duration::from_secs(1)).await;
            if let Some(mut p) = self.player.take() {
                let _ = tokio::time::timeout(Duration::from_millis(100), p.shutdown()).await;
            }
        }
        if !keep {
            // The ask is dropped: the upgrade waits for this session to end.
            return Err(End::PlayerClosed);
        }
        slog!(
            debug,
            self.core,
            "player told to reconnect; the session crosses detached"
        );
        let now = Instant::now();
        let told_down = self.core.told_down();
        let mut away = super::away::Away::new(now, told_down, &cfg);
        away.playback.record(&missed);
        self.away = Some(away);
        let expires = now + cfg.resume.keep.unwrap_or_default();
        if let Err(End::Handover) = self.hand_over_detached(ask, expires, Some("upgrade")).await {
            return Err(End::Handover);
        }
        // The upgrade failed: detached here as any dropped link, with the
        // playback begun (`detached` keeps it and starts the time away).
        Err(End::PlayerClosed)
    }

    /// Carries on after a failed upgrade from the state it froze, which
    /// nothing else touched (the new process relays nothing before the
    /// commit): first the output a slow write had not got out, then the
    /// MCCP2 offer again if the stream was ended for it.
    async fn thaw(&mut self, mccp: bool) -> Result<(), End> {
        let unsent = self.stopping.take().map(|s| s.unsent).unwrap_or_default();
        let limit = self.write_timeout();
        // What the connection still holds (a WebSocket's frames) goes first.
        self.drain_player(Instant::now() + limit, limit).await?;
        self.write_player_raw(&unsent, self.write_timeout()).await?;
        if mccp {
            let again = resume_bytes(&mut self.core, true, "");
            self.write_player(&again, self.write_timeout()).await?;
        }
        Ok(())
    }

    /// The game connection's kind and a duplicate of its descriptor (the
    /// session keeps its own until the commit), checked against the
    /// core's idea of whether there is one.
    pub(super) fn game_fd(&self) -> Result<(Option<GameFd>, Option<std::os::fd::OwnedFd>), String> {
        let id = self.core.id;
        if self.core.has_game() != self.game.is_some() {
            return Err(format!("session {id}: game connection in an odd state"));
        }
        let err = |e: std::io::Error| format!("session {id}: {e}");
        Ok(match &self.game {
            None => (None, None),
            Some(BackendStream::Tcp(s)) => (
                Some(GameFd::Tcp),
                Some(s.as_fd().try_clone_to_owned().map_err(err)?),
            ),
            Some(BackendStream::Unix(s)) => (
                Some(GameFd::Unix),
                Some(s.as_fd().try_clone_to_owned().map_err(err)?),
            ),
        })
    }

    /// The state, and close-on-exec duplicates of the sockets to send.
    fn parcel(&self, mccp: bool, player: Option<&PlayerWas>) -> Result<SessionParcel, String> {
        let unsent = self.stopping.as_ref().map_or(&[][..], |s| &s.unsent[..]);
        let state = snapshot(&self.core, mccp, player, unsent).map_err(|e| e.to_string())?;
        let id = self.core.id;
        let err = |e: std::io::Error| format!("session {id}: {e}");
        let Some(player) = self.player.as_ref().and_then(|p| p.socket()) else {
            return Err(format!(
                "session {id}: this kind of player connection cannot be handed over"
            ));
        };
        let (game, game_fd) = self.game_fd()?;
        Ok(SessionParcel {
            state,
            game,
            player_fd: Some(player.try_clone_to_owned().map_err(err)?),
            game_fd,
        })
    }
}

/// The pool changed since the session was frozen (the cluster moved, or
/// fenced this instance, during the handover): the session's watch starts
/// from the pool as it is now, so it is told at once.
fn moved_meanwhile(core: &super::core::Core, shared: &Shared) -> bool {
    let pool = shared.pool.borrow();
    pool.epoch != core.epoch || pool.fenced
}

/// Runs a session taken over from an older process (an upgrade): no
/// `session.open`, no greeting; the player gets `notices.upgraded` (if
/// set) and the MCCP2 offer again if it had MCCP2, then the session goes
/// on where it stopped. A detached session (no player) goes on being kept
/// for its player, with its playback and the time it had left.
pub fn resume(
    shared: Arc<Shared>,
    restored: Restored,
    player: Option<TcpStream>,
    game: Option<BackendStream>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    let Restored {
        core,
        mccp_was_on,
        detached,
        player: player_was,
        unsent,
    } = restored;
    let player = match (player, detached) {
        (None, Some(was)) => {
            let mut d = Driver::<TcpStream>::without_player(shared, core);
            d.started = true;
            d.game = game;
            let now = Instant::now();
            let away = Duration::from_millis(was.away_ms);
            d.away = Some(Box::new(super::away::Away {
                since: now.checked_sub(away).unwrap_or(now),
                told_down: was.told_down,
                playback: was.playback,
            }));
            let expires = now + Duration::from_millis(was.left_ms);
            if let Some(why) = &was.why {
                d.shared.events.emit(
                    Event::new("session.detached")
                        .with("session", d.core.id)
                        .with("user", d.core.user().unwrap_or_default())
                        .with("reason", why.as_str()),
                );
            }
            return Box::pin(async move {
                slog!(debug, d.core, user = %d.core.user_field(), "detached session taken over");
                // Paused by the cluster in the old process: on only if
                // the lease is back here (see `carry_on`).
                if d.core.paused() || moved_meanwhile(&d.core, &d.shared) {
                    if let Err(end) = d.pool_changed().await {
                        return d.after_detached(super::detach::After::End(end)).await;
                    }
                }
                let after = d.stay_detached(expires).await;
                d.after_detached(after).await;
            });
        }
        (Some(p), _) => p,
        // `upgrade::new` lets no session without a player or a detached
        // state through.
        (None, None) => return Box::pin(async {}),
    };
    let cfg = shared.config();
    match player_was {
        None => carry_on(shared, core, player, game, (mccp_was_on, unsent)),
        Some(PlayerWas::Ws(was)) => {
            match crate::transport::WsConn::resumed(player, was, cfg.doors.ws_ping_interval) {
                Some(ws) => carry_on(shared, core, ws, game, (mccp_was_on, unsent)),
                // `resumed` is ready at once; should it not be, the
                // session goes on as for a link that dropped.
                None => {
                    let mut d = Driver::<TcpStream>::without_player(shared, core);
                    d.started = true;
                    d.game = game;
                    Box::pin(async move {
                        slog!(warn, d.core, "a WebSocket taken over could not be rebuilt");
                        d.after_run(End::PlayerClosed).await;
                    })
                }
            }
        }
    }
}

/// Runs a session taken over with its player: the output a slow write had
/// not got out, `notices.upgraded` (if set) and the MCCP2 offer again,
/// then on where it stopped.
fn carry_on<P: PlayerTransport>(
    shared: Arc<Shared>,
    core: super::Core,
    player: P,
    game: Option<BackendStream>,
    (mccp_was_on, unsent): (bool, Vec<u8>),
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    let cfg = shared.config();
    let notice = render(
        &cfg.notices.upgraded,
        &cfg,
        core.backend().unwrap_or(""),
        None,
    );
    let mut d = Driver::new(shared, core, player);
    d.started = true;
    d.game = game;
    Box::pin(async move {
        slog!(debug, d.core, user = %d.core.user_field(), "session taken over");
        let hello = resume_bytes(&mut d.core, mccp_was_on, &notice);
        let limit = d.write_timeout();
        // Frames a WebSocket had not got out first, then the rest.
        let mut first = d.drain_player(Instant::now() + limit, limit).await;
        if first.is_ok() {
            first = d.write_player_raw(&unsent, limit).await;
        }
        drop(unsent);
        let mut r = match first {
            Ok(()) => d.write_player(&hello, d.write_timeout()).await,
            Err(end) => Err(end),
        };
        if r.is_ok() && (d.core.paused() || moved_meanwhile(&d.core, &d.shared)) {
            // Paused by the cluster in the old process: this process's
            // pool says whether the lease is back (the pool changes
            // the session waits for may have happened already).
            r = d.pool_changed().await;
        }
        let end = match r {
            Ok(()) => d.run().await,
            Err(end) => end,
        };
        d.after_run(end).await;
    })
}
