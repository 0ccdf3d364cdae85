//! How a session ends: the game's quit where one is owed (a shutdown, a
//! detached session that expired), the player's notice and the end of
//! their MCCP2 stream, the registry and the `session.close` event. Every
//! step is bounded, so a stopping proxy ends within its grace.

use std::io;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::timeout;

use super::action::Action;
use super::driver::Driver;
use super::End;
use crate::backend::connect::BackendStream;
use crate::events::Event;
use crate::transport::PlayerTransport;

/// How long a game gets to close after the quit command when a session
/// leaves it (failover, shutdown).
const LEAVE_TIMEOUT: Duration = Duration::from_secs(1);
/// Each write to the player while a session ends (the stopping notice, the
/// end of its MCCP2 stream) waits at most this long, so a player who stopped
/// reading cannot keep the proxy past its shutdown grace.
const FINISH_WRITE: Duration = Duration::from_secs(1);

impl<P: PlayerTransport> Driver<P> {
    /// Closes both sides and reports the end. Every step is bounded, so a
    /// shutdown ends within its grace and the game always gets its quit.
    pub async fn finish(mut self, end: End) {
        let cfg = self.shared.config();
        if self.away.take().is_some() {
            // A detached session ends: the game hears QUIT, as from a
            // player who quit.
            if let Some(Action::Leave { quit }) = self.core.leave_action(&cfg) {
                if let Some(g) = self.game.take() {
                    leave(g, &quit).await;
                }
            }
        } else if end == End::Shutdown {
            let mut out = Vec::new();
            // The notice first: it brings the game's last partial line.
            self.core.shutdown(&cfg, &mut out);
            let leaving = self.core.leave_action(&cfg);
            let notice: Vec<u8> = out
                .into_iter()
                .filter_map(|a| match a {
                    Action::Player(b) | Action::Notice(b) => Some(b),
                    _ => None,
                })
                .flatten()
                .collect();
            // The game's quit and the player's notice at the same time: a
            // player who stopped reading does not delay the game's quit.
            let game = self.game.take();
            let quit = async move {
                if let (Some(g), Some(Action::Leave { quit })) = (game, leaving) {
                    leave(g, &quit).await;
                }
            };
            let _ = tokio::join!(quit, self.write_player(&notice, FINISH_WRITE));
        }
        self.game = None;
        // telnet: end the player's zlib stream cleanly.
        self.core.telnet.out.stop();
        let _ = self.write_player(&[], FINISH_WRITE).await;
        let (plain, wire) = self.core.telnet.out.totals();
        if plain > 0 {
            slog!(
                debug,
                self.core,
                mccp_in = plain,
                mccp_out = wire,
                "player compression"
            );
        }
        if let Some(mut p) = self.player.take() {
            p.closing(end.close_why());
            let _ = timeout(FINISH_WRITE, p.shutdown()).await;
        }
        slog!(info, self.core, reason = end.as_str(), user = %self.core.user_field(), "session closed");
        let id = self.core.id;
        self.shared.registry.remove(id);
        self.shared.events.emit(
            Event::new("session.close")
                .with("session", id)
                .with_opt("user", self.core.user().map(str::to_string))
                .with("reason", end.as_str()),
        );
    }
}

/// [`leave`] for a task of its own.
pub(super) async fn leave_owned(g: BackendStream, quit: Vec<u8>) {
    leave(g, &quit).await
}

/// Ends a game connection cleanly: the quit command, then the game closes
/// the connection itself (its goodbye is discarded), so it logs a clean
/// quit rather than a dropped link.
pub(super) async fn leave(mut g: BackendStream, quit: &[u8]) {
    let _ = timeout(LEAVE_TIMEOUT, async {
        g.write_all(quit).await?;
        let mut sink = Vec::with_capacity(4096);
        loop {
            g.readable().await?;
            sink.clear();
            match g.try_read_buf(&mut sink) {
                Ok(0) => return Ok::<(), io::Error>(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    let _ = timeout(LEAVE_TIMEOUT, g.shutdown()).await;
}
