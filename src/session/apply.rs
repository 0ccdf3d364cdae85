//! The core's actions carried out, in order: bytes to the player (or to
//! the playback while the player is away), to the game, connections
//! opened, the heartbeat asked, bus events, the registry told. An action
//! that asks a question feeds its answer back to the core, and what that
//! step pushed is carried out before the next action.

use std::time::Duration;

use tokio::time::{timeout, Instant};

use super::action::{Action, Actions};
use super::driver::{step, Driver};
use super::finish::leave;
use super::wait::next_ask;
use super::End;
use crate::backend::connect::connect;
use crate::clientip::peer_ip;
use crate::transport::PlayerTransport;

/// Grace for an immediate probe beyond `interval + timeout`.
const CHECK_GRACE: Duration = Duration::from_secs(1);

impl<P: PlayerTransport> Driver<P> {
    /// Carries out `actions` in order; the answers to questions are fed
    /// back to the core and their actions carried out first.
    pub(super) async fn apply(&mut self, actions: Actions) -> Result<(), End> {
        // The registry first: a player who reads a reply to their login
        // may act on it at once (another connection that counts on a
        // place for a session not logged in).
        self.core.tidy();
        self.publish();
        // A player who quits leaves for real: the game's "has
        // disconnected." about them is shown to the others even while
        // their re-login's announcements are still held back. Before the
        // quit command is written, so the game cannot answer it first.
        if self.core.quit_sent {
            if let Some(user) = self.core.user() {
                self.shared.quiet.release(user);
            }
        }
        let r = self.apply_inner(actions).await;
        self.core.tidy();
        self.publish();
        r
    }

    async fn apply_inner(&mut self, actions: Actions) -> Result<(), End> {
        for a in actions {
            match a {
                Action::Player(bytes) => match self.away.as_mut() {
                    Some(a) => a.playback.record(&bytes),
                    None => self.write_player(&bytes, self.write_timeout()).await?,
                },
                // Notices are for a player who is there to read them.
                Action::Notice(bytes) if self.away.is_none() => {
                    self.write_player(&bytes, self.write_timeout()).await?
                }
                Action::Notice(_) => {}
                Action::TryResume { creds, line } => {
                    Box::pin(self.try_resume(creds, &line)).await?;
                    step!(self, |core, ctx, _pool, out| core.resume_settled(ctx, out))?
                }
                Action::Resume => Box::pin(self.take_over_verified()).await?,
                Action::Game(bytes) => self.write_game(&bytes).await?,
                Action::Connect(backend) => Box::pin(self.connect(backend)).await?,
                Action::AskAlive { backend, since } => {
                    let cfg = self.shared.config();
                    let grace = cfg.heartbeat.interval + cfg.heartbeat.timeout + CHECK_GRACE;
                    let alive = match self.shared.probe(&backend) {
                        Some(p) => timeout(grace, p.check_now(since)).await.unwrap_or(false),
                        None => false,
                    };
                    step!(self, |core, ctx, pool, out| core
                        .alive(ctx, alive, pool, out))?;
                }
                Action::Leave { quit } => {
                    if let Some(g) = self.game.take() {
                        leave(g, &quit).await;
                    }
                }
                Action::DropGame => self.game = None,
                Action::Mssp(req) => {
                    use super::mssp;
                    let bytes = match req {
                        mssp::Request::Telnet => {
                            mssp::telnet_answer(&mssp::variables(&self.shared))
                        }
                        mssp::Request::Text => mssp::text_answer(&mssp::variables(&self.shared)),
                        mssp::Request::GameSaid(d) => {
                            mssp::game_said(&d);
                            continue;
                        }
                    };
                    self.write_player(&bytes, self.write_timeout()).await?
                }
                Action::Emit(ev) => self.shared.events.emit(ev),
                Action::Refused => self.shared.relogin_limiter.slow_down(),
                Action::Quiet { name, for_ } => self.shared.quiet.hold(&name, for_),
                Action::ScreenSeen { backend, text } => {
                    if let Some(p) = self.shared.probe(&backend) {
                        p.seen_screen(text);
                    }
                }
                Action::ScreenChanged { backend, shown } => {
                    if let Some(p) = self.shared.probe(&backend) {
                        p.screen_changed(&shown, Instant::now());
                    }
                }
                Action::Close(end) => return Err(end),
            }
        }
        Ok(())
    }

    /// A connect given up for an upgrade (see `connect`) is made again:
    /// at the top of a session's loop, in the process that carries on.
    pub(super) async fn connect_again(&mut self) -> Result<(), End> {
        if !self.core.connect_pending() {
            return Ok(());
        }
        step!(self, |core, ctx, pool, out| core
            .connect_again(ctx, pool, out))
    }

    async fn connect(&mut self, backend: String) -> Result<(), End> {
        let cfg = self.shared.config();
        let Some(b) = cfg.backend(&backend).cloned() else {
            return step!(self, |core, ctx, pool, out| core.connect_failed(
                ctx,
                &pool.active,
                out
            ));
        };
        let probe = self.shared.probe(&b.name);
        let opened = async {
            if let Some(p) = &probe {
                // Right after holdfast starts: let the probe stamp its
                // first connection, so that this one is covered by it.
                p.first_stamp(crate::backend::health::FIRST_STAMP_WAIT)
                    .await;
            }
            connect(&b.addr, b.connect_timeout).await
        };
        // A connect may wait up to `connect_timeout` (a game that does not
        // answer): it gives way to an upgrade's ask. The connection being
        // opened is dropped (nothing was sent on it); the core still waits
        // for its answer (`Core::connect_pending`), so whichever process
        // carries on asks for it again at once (`Driver::connect_again`).
        // Cancel-safe: the ask waits in its slot until taken.
        let r = tokio::select! {
            r = opened => r,
            Some(ask) = next_ask(&mut self.freeze) => {
                slog!(debug, self.core, backend = %b.name, "connect given up for an upgrade; tried again after it");
                self.stopping().asked = Some(ask);
                return Ok(());
            }
        };
        match r {
            Ok(s) => {
                self.game = Some(s);
                let host = if cfg.client_ip.reverse_dns {
                    self.shared.rdns.cached(peer_ip(&self.core.peer.get()))
                } else {
                    None
                };
                step!(self, |core, ctx, _pool, out| core.connected(
                    ctx,
                    &backend,
                    host.as_deref(),
                    out
                ))
            }
            Err(e) => {
                slog!(debug, self.core, backend = %b.name, error = %e, "connect failed");
                if let Some(p) = self.shared.probe(&b.name) {
                    // Let the probe find out (in the background) so the pool
                    // learns of the outage without waiting for the interval.
                    tokio::spawn(async move {
                        p.check_now(Instant::now()).await;
                    });
                }
                step!(self, |core, ctx, pool, out| core.connect_failed(
                    ctx,
                    &pool.active,
                    out
                ))
            }
        }
    }
}
