//! Writes to the player and to the game, each bounded by
//! `limits.write_timeout`: a player who stops reading is dropped, a
//! stopping proxy is not held up, and a write waiting on a slow reader
//! gives way to an upgrade's ask, keeping what it had not written yet.

use std::io;
use std::task::Poll;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::{sleep_until, timeout, Instant};

use super::driver::{step, Driver};
use super::stopping::Stopping;
use super::wait::next_ask;
use super::End;
use crate::transport::PlayerTransport;

/// A write to the player failed (`None`: it wrote nothing, closed).
fn write_failed(core: &super::Core, e: Option<io::Error>) -> End {
    match e {
        Some(e) => slog!(debug, core, error = %e, "write to player failed"),
        None => slog!(debug, core, "write to player failed: closed"),
    }
    End::WriteFailed
}

impl<P: PlayerTransport> Driver<P> {
    /// Writes text for the player, compressed when the player took the
    /// proxy's MCCP2 (see [`Driver::write_player_raw`] for how a slow
    /// reader is handled), within `limit`.
    pub(super) async fn write_player(&mut self, data: &[u8], limit: Duration) -> Result<(), End> {
        // telnet: compressed if the player took the proxy's MCCP2. Boxed:
        // the compressed path keeps more across its wait, and every
        // session's task would keep room for it (issue 25).
        if !self.core.telnet.out.plain() {
            return Box::pin(self.write_player_compressed(data, limit)).await;
        }
        // `write_player_raw` by hand: what the socket takes now needs no
        // future and a wait is boxed, so the loop's read of the game
        // keeps no room for either.
        let pos = self.write_player_now(data)?;
        if pos == data.len() {
            return Ok(());
        }
        Box::pin(self.write_player_wait(&data[pos..], limit)).await
    }

    /// [`Driver::write_player`] to a player who took MCCP2 (or whose
    /// stream starts or ends with this write).
    pub(super) async fn write_player_compressed(
        &mut self,
        data: &[u8],
        limit: Duration,
    ) -> Result<(), End> {
        let compressed = self.core.telnet.out.compressing();
        let wire = self.core.telnet.out.encode(data);
        let held = |d: &Self| d.stopping.as_ref().map(|s| (s.unsent.len(), s.gave_way));
        let before = held(self);
        let r = self.write_player_raw(&wire, limit).await;
        if compressed
            && held(self) != before
            && self.player.as_ref().is_some_and(|p| p.socket().is_none())
        {
            // Kept for a playback if this connection is dropped for the
            // upgrade (see `handover`): the text, not its compressed form.
            self.stopping().unsent_text.extend_from_slice(data);
        }
        r
    }

    /// Writes bytes as they go on the wire. While an upgrade's ask waits
    /// for this session (`asked` is set, or `unsent` is not empty, or a
    /// write gave way) they are kept with the unsent ones instead; a write that has to wait on a slow reader
    /// gives way to an upgrade's ask, keeping what it had not written yet
    /// (so a player who reads just fast enough never holds an upgrade).
    pub(super) async fn write_player_raw(
        &mut self,
        data: &[u8],
        limit: Duration,
    ) -> Result<(), End> {
        let pos = self.write_player_now(data)?;
        if pos == data.len() {
            return Ok(());
        }
        Box::pin(self.write_player_wait(&data[pos..], limit)).await
    }

    /// The part of [`Driver::write_player_raw`] that does not wait: writes
    /// what the player's socket takes now and returns how much of `data`
    /// is done (all of it when there is no player). Most writes finish
    /// here: that path keeps nothing across a wait, so the room for a
    /// wait (its timer, the shutdown and ask futures, ~600 bytes) is
    /// boxed, taken only by a write that waits, instead of kept in every
    /// session's task.
    pub(super) fn write_player_now(&mut self, data: &[u8]) -> Result<usize, End> {
        let Some(player) = self.player.as_mut() else {
            return Ok(data.len());
        };
        let mut pos = 0;
        if Stopping::writes_flow(&self.stopping) {
            while pos < data.len() {
                match player.try_write_some(&data[pos..]) {
                    Some(Ok(0)) => return Err(write_failed(&self.core, None)),
                    Some(Ok(n)) => pos += n,
                    Some(Err(e)) => return Err(write_failed(&self.core, Some(e))),
                    None => break,
                }
            }
            if pos > 0 {
                crate::metrics::metrics().bytes(crate::metrics::Direction::ToPlayer, pos as u64);
            }
        }
        Ok(pos)
    }

    /// [`Driver::write_player_raw`] that may wait on the player.
    pub(super) async fn write_player_wait(
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
        if !Stopping::writes_flow(&self.stopping) {
            self.stopping
                .get_or_insert_default()
                .unsent
                .extend_from_slice(data);
            return Ok(());
        }
        if player.queued_writes() {
            // Queued whole (a WebSocket's frames, in its gate); the drain
            // gives way to an upgrade's ask, and what the socket has not
            // taken stays queued: it crosses with the connection.
            player
                .queue(data)
                .map_err(|e| write_failed(&self.core, Some(e)))?;
            crate::metrics::metrics().bytes(crate::metrics::Direction::ToPlayer, data.len() as u64);
            return self.drain_player(Instant::now() + limit, limit).await;
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
                Ok(Err(e)) => Err(write_failed(&self.core, Some(e))),
                Err(_) => {
                    slog!(warn, self.core, timeout = ?limit, "player stopped reading; dropping the session");
                    Err(End::WriteFailed)
                }
            };
        }
        // Partial writes (plain TCP, TLS): as above, and a write that has
        // to wait gives way to an upgrade's ask too.
        let mut pos = 0;
        while pos < data.len() {
            match futures::poll!(std::pin::pin!(player.write_some(&data[pos..]))) {
                Poll::Ready(Ok(0)) => return Err(write_failed(&self.core, None)),
                Poll::Ready(Ok(n)) => pos += n,
                Poll::Ready(Err(e)) => return Err(write_failed(&self.core, Some(e))),
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
                    slog!(warn, self.core, timeout = ?limit, "player stopped reading; dropping the session");
                    return Err(End::WriteFailed);
                }
                _ = shutdown.cancelled() => return Err(End::Shutdown),
                Some(ask) = next_ask(&mut self.freeze) => {
                    slog!(debug, self.core, unsent = data.len() - pos, "a write to a slow reader gives way to an upgrade");
                    let s = self.stopping.get_or_insert_default();
                    s.asked = Some(ask);
                    s.gave_way = true;
                    s.unsent.extend_from_slice(&data[pos..]);
                    crate::metrics::metrics().bytes(crate::metrics::Direction::ToPlayer, pos as u64);
                    return Ok(());
                }
            };
            match r {
                Ok(0) => return Err(write_failed(&self.core, None)),
                Ok(n) => pos += n,
                Err(e) => return Err(write_failed(&self.core, Some(e))),
            }
        }
        crate::metrics::metrics().bytes(crate::metrics::Direction::ToPlayer, data.len() as u64);
        // What the connection took and still holds (TLS records).
        self.drain_player(until, limit).await
    }

    /// Waits until what the player's connection holds (queued WebSocket
    /// frames, TLS records) is on its way, by `until` (`limit` is for the
    /// log), giving way to an upgrade's ask: what is left stays held by
    /// the connection, and the write counts as done.
    pub(super) async fn drain_player(
        &mut self,
        until: Instant,
        limit: Duration,
    ) -> Result<(), End> {
        let Some(player) = self.player.as_mut() else {
            return Ok(());
        };
        let r = match futures::poll!(std::future::poll_fn(|cx| player.poll_drain(cx))) {
            Poll::Ready(r) => r,
            Poll::Pending => {
                let shutdown = &self.shared.shutdown;
                if shutdown.is_cancelled() {
                    return Err(End::Shutdown);
                }
                // Cancel-safe: a drain that loses writes nothing more and
                // keeps what it holds; the ask waits in its slot.
                tokio::select! {
                    r = std::future::poll_fn(|cx| player.poll_drain(cx)) => r,
                    _ = sleep_until(until) => {
                        slog!(warn, self.core, timeout = ?limit, "player stopped reading; dropping the session");
                        return Err(End::WriteFailed);
                    }
                    _ = shutdown.cancelled() => return Err(End::Shutdown),
                    Some(ask) = next_ask(&mut self.freeze) => {
                        slog!(debug, self.core, "a drain to a slow reader gives way to an upgrade");
                        let s = self.stopping.get_or_insert_default();
                        s.asked = Some(ask);
                        s.gave_way = true;
                        return Ok(());
                    }
                }
            }
        };
        r.map_err(|e| write_failed(&self.core, Some(e)))
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
                slog!(debug, self.core, error = %e, "write to backend failed");
                Ok(())
            }
            Err(_) => {
                slog!(
                    warn,
                    self.core,
                    "backend stopped reading; treating it as gone"
                );
                step!(self, |core, _ctx, _pool, out| core.game_closed(out))
            }
        }
    }
}
