//! Writes to the player and to the game, each bounded by
//! `limits.write_timeout`: a player who stops reading is dropped, a
//! stopping proxy is not held up, and a write waiting on a slow reader
//! gives way to an upgrade's ask, keeping what it had not written yet.

use std::io;
use std::task::Poll;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, warn};

use super::driver::{next_ask, step, Driver};
use super::End;
use crate::transport::PlayerTransport;

/// A write to the player failed (`None`: it wrote nothing, closed).
fn write_failed(e: Option<io::Error>) -> End {
    match e {
        Some(e) => debug!(error = %e, "write to player failed"),
        None => debug!("write to player failed: closed"),
    }
    End::WriteFailed
}

impl<P: PlayerTransport> Driver<P> {
    /// Writes text for the player, compressed when the player took the
    /// proxy's MCCP2 (see [`Driver::write_player_raw`] for how a slow
    /// reader is handled), within `limit`.
    pub(super) async fn write_player(&mut self, data: &[u8], limit: Duration) -> Result<(), End> {
        // telnet: compressed if the player took the proxy's MCCP2.
        let data = self.core.telnet.out.encode(data);
        self.write_player_raw(&data, limit).await
    }

    /// Writes bytes as they go on the wire. While an upgrade's ask waits
    /// for this session (`asked` is set, or `unsent` is not empty) they
    /// are kept with the unsent ones instead; a write that has to wait on a slow reader
    /// gives way to an upgrade's ask, keeping what it had not written yet
    /// (so a player who reads just fast enough never holds an upgrade).
    pub(super) async fn write_player_raw(
        &mut self,
        data: &[u8],
        limit: Duration,
    ) -> Result<(), End> {
        let Some(player) = self.player.as_mut() else {
            return Ok(());
        };
        if data.is_empty() {
            return Ok(());
        }
        if !self.unsent.is_empty() || self.asked.is_some() {
            self.unsent.extend_from_slice(data);
            return Ok(());
        }
        let shutdown = &self.shared.shutdown;
        if !player.partial_writes() {
            let mut write = std::pin::pin!(timeout(limit, player.write_all(data)));
            // Most writes finish at once; only one that has to wait also
            // watches for shutdown (registering with the token locks it,
            // and every session shares it), so a player who stopped
            // reading cannot keep a stopping proxy past its grace.
            let r = match futures::poll!(write.as_mut()) {
                Poll::Ready(r) => r,
                Poll::Pending if shutdown.is_cancelled() => return Err(End::Shutdown),
                Poll::Pending => tokio::select! {
                    r = write => r,
                    _ = shutdown.cancelled() => return Err(End::Shutdown),
                },
            };
            return match r {
                Ok(Ok(())) => {
                    crate::metrics::metrics()
                        .bytes(crate::metrics::Direction::ToPlayer, data.len() as u64);
                    Ok(())
                }
                Ok(Err(e)) => Err(write_failed(Some(e))),
                Err(_) => {
                    warn!(timeout = ?limit, "player stopped reading; dropping the session");
                    Err(End::WriteFailed)
                }
            };
        }
        // Partial writes (plain TCP): as above, and a write that has to
        // wait gives way to an upgrade's ask too.
        let mut pos = 0;
        while pos < data.len() {
            match futures::poll!(std::pin::pin!(player.write_some(&data[pos..]))) {
                Poll::Ready(Ok(0)) => return Err(write_failed(None)),
                Poll::Ready(Ok(n)) => pos += n,
                Poll::Ready(Err(e)) => return Err(write_failed(Some(e))),
                Poll::Pending => break,
            }
        }
        let until = Instant::now() + limit;
        while pos < data.len() {
            if shutdown.is_cancelled() {
                return Err(End::Shutdown);
            }
            // Every branch is cancel-safe: `write_some` of a connection
            // with partial writes writes nothing when it is not ready.
            let r = tokio::select! {
                r = player.write_some(&data[pos..]) => r,
                _ = sleep_until(until) => {
                    warn!(timeout = ?limit, "player stopped reading; dropping the session");
                    return Err(End::WriteFailed);
                }
                _ = shutdown.cancelled() => return Err(End::Shutdown),
                Some(ask) = next_ask(&mut self.freeze) => {
                    self.asked = Some(ask);
                    self.unsent.extend_from_slice(&data[pos..]);
                    crate::metrics::metrics().bytes(crate::metrics::Direction::ToPlayer, pos as u64);
                    return Ok(());
                }
            };
            match r {
                Ok(0) => return Err(write_failed(None)),
                Ok(n) => pos += n,
                Err(e) => return Err(write_failed(Some(e))),
            }
        }
        crate::metrics::metrics().bytes(crate::metrics::Direction::ToPlayer, data.len() as u64);
        Ok(())
    }

    pub(super) async fn write_game(&mut self, data: &[u8]) -> Result<(), End> {
        let Some(g) = self.game.as_mut() else {
            return Ok(());
        };
        let t = self.shared.config.borrow().limits.write_timeout;
        match timeout(t, g.write_all(data)).await {
            Ok(Ok(())) => Ok(()),
            // The read side will see the close and decide; nothing to do here.
            Ok(Err(e)) => {
                debug!(error = %e, "write to backend failed");
                Ok(())
            }
            Err(_) => {
                warn!("backend stopped reading; treating it as gone");
                step!(self, |core, _ctx, _pool, out| core.game_closed(out))
            }
        }
    }
}
