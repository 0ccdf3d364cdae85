//! A cluster member that lost its lease *pauses* its sessions (SPEC
//! "Clusters pause"): the game connection stays open and logged in, but
//! nothing is relayed either way. The game's output is kept as for a
//! detached session ([`Playback`]), the player's lines are queued as
//! during an outage. When the fence lifts and the session's game is still
//! the cluster's backend, the kept output goes to the player and the
//! queued lines to the game, once each, in order. If the cluster moved
//! meanwhile, the session leaves the old backend (its quit command) and is
//! held and logged back in on the new one, as for any failover
//! ([`Core::pool`]): the kept output reaches the player first.
//!
//! Why this keeps the promise that two backends are never in use at once:
//! a paused session sends the game nothing the player typed, so an old
//! backend it stays connected to sees no player traffic while the others
//! use a new one; and it relays again only under the term the cluster
//! task has confirmed (the fence lifts only then).
//!
//! What a pause is for the game: an idle player. Their connection is open
//! and logged in, and no command arrives. A pause longer than the game's
//! own idle timeout ends as any idle timeout does: the game closes the
//! connection, the heartbeat says the game is alive, and the player gets
//! the kept output (the game's last words) and is disconnected, never
//! logged back in against the game's decision.
//!
//! Only a session that relays pauses. One that is connecting, waiting for
//! its connect screen or logging back in leaves the game and is held as
//! before: it has no logged-in game session to keep.

use std::time::Duration;

use super::action::{Action, Actions, Ctx};
use super::core::{render, Core};
use super::playback::Playback;
use super::rare::Pause;
use crate::events::Event;

impl Core {
    /// Whether the session is paused (its game connection open, nothing
    /// relayed).
    pub fn paused(&self) -> bool {
        self.rare().paused.is_some()
    }

    /// The pause, for a snapshot.
    pub(super) fn pause_state(&self) -> Option<&Pause> {
        self.rare().paused.as_deref()
    }

    /// Whether a fence pauses this session rather than holding it: it
    /// relays on the backend the pool names.
    pub(super) fn can_pause(&self, active: &str) -> bool {
        self.paused() || (self.relaying() && self.game.as_ref().is_some_and(|g| *g.name == *active))
    }

    /// The cluster fenced this instance: stop relaying, keep the game.
    pub(super) fn pause(&mut self, ctx: &mut Ctx, out: &mut Actions) {
        if self.paused() {
            return;
        }
        let cfg = ctx.cfg;
        let name = self.game_name();
        slog!(info, self, backend = %name, "fenced from the cluster; pausing the session");
        // What came before the pause goes to the player, not to the record.
        self.flush_tail(out);
        self.rare_mut().paused = Some(Box::new(Pause {
            since: ctx.now,
            kept: Playback::new(cfg.resume.playback_lines, cfg.resume.playback_bytes),
        }));
        out.push(Action::Emit(
            Event::new("session.paused")
                .with("session", self.id)
                .with("user", self.user.as_deref())
                .with("backend", name.as_str()),
        ));
        let msg = render(&cfg.notices.paused, cfg, &name, None);
        self.notice(&msg, out);
    }

    /// The game's output (telnet-escaped, for the player): kept while
    /// paused, else sent.
    pub(super) fn game_out(&mut self, bytes: Vec<u8>, out: &mut Actions) {
        match self.rare_mut_if_any().and_then(|r| r.paused.as_mut()) {
            Some(p) => p.kept.record(&bytes),
            None => out.push(Action::Player(bytes)),
        }
    }

    /// Ends a pause, whatever comes next: the kept output goes to the
    /// player first. Returns how long it lasted and how many lines were
    /// kept and dropped.
    pub(super) fn release(&mut self, ctx: &Ctx, out: &mut Actions) -> Option<(Duration, u64, u64)> {
        let p = self.rare_mut_if_any()?.paused.take()?;
        let (lines, dropped) = (p.kept.len() as u64, p.kept.dropped);
        if !p.kept.is_empty() {
            let bytes = p.kept.into_bytes();
            self.at_line_start = bytes.last() == Some(&b'\n');
            out.push(Action::Player(bytes));
        }
        let took = ctx.now.saturating_duration_since(p.since);
        // The time paused does not count against a player who had not
        // logged in yet: they could not.
        if let Some(d) = self.login_deadline.as_mut() {
            *d += took;
        }
        Some((took, lines, dropped))
    }

    /// The fence lifted and the game is still the cluster's backend: the
    /// kept output to the player, the queued lines to the game, and on.
    pub(super) fn unpause(&mut self, ctx: &mut Ctx, out: &mut Actions) {
        let Some((took, kept, dropped)) = self.release(ctx, out) else {
            return;
        };
        let name = self.game_name();
        slog!(info, self, backend = %name, paused = ?took, kept, "cluster lease back; the session goes on");
        out.push(Action::Emit(
            Event::new("session.unpaused")
                .with("session", self.id)
                .with("user", self.user.as_deref())
                .with("backend", name.as_str())
                .with("paused_ms", took.as_millis() as u64)
                .with("kept", kept)
                .with("dropped", dropped)
                .with("queued", self.queued() as u64),
        ));
        self.flush_queue(ctx, out);
    }
}
