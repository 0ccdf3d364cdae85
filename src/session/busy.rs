//! The game turning holdfast's own address away, and keeping that from the
//! players.
//!
//! Every player behind holdfast has holdfast's address as far as a game
//! without a client-address mechanism can tell (TinyMUX, TinyMUSH), so the
//! game's per-address limits count all of them together: TinyMUX's
//! `max_preauth_sitecons` (two connections waiting at the connect screen),
//! its connection rate (`max_lastsite_cnt` per `min_con_attempt`), the
//! failed-login throttle. A connection or re-login such a limit refuses
//! (a `templates.refused` line, or a close before the connect screen while
//! the heartbeat says the game is alive) is not the player's failure: it
//! is tried again after a backoff (1 s, 2 s, 4 s … up to
//! [`BACKOFF_MAX`], with jitter), through the shared re-login pacer, which
//! the refusal also slows down ([`Action::Refused`]). The player is told
//! once (`notices.busy`) and never disconnected for it; the wait is
//! bounded by `listen.login_timeout` (a new player) or `outage.max_hold`
//! (a held one), as any wait for the game is.
//!
//! After a restart the game announces every re-login ("Alice has
//! connected.") to everyone already back. Those are not news: the names
//! being logged back in are held in a shared set for a few seconds
//! ([`Action::Quiet`]), and announcement lines (`templates.announcements`)
//! naming one of them are not shown ([`Core::quiet_line`]).

use std::time::Duration;

use super::action::{Action, Actions, Ctx};
use super::core::{render, Core};
use super::rare::Busy;
use crate::config::Config;
use crate::state::Phase;

/// The first wait after a refusal.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between tries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// How long after a player is logged back in the game's announcements
/// about them are still held back.
pub const QUIET_AFTER: Duration = Duration::from_secs(10);

/// The wait before try `tries + 1`: doubling from [`BACKOFF_FIRST`] up to
/// [`BACKOFF_MAX`], plus up to a quarter more so sessions refused together
/// do not come back together. The jitter comes from the session id and
/// the try (no clock, no randomness: the core stays deterministic).
pub fn backoff(tries: u32, id: u64) -> Duration {
    let base = BACKOFF_FIRST
        .saturating_mul(1u32 << tries.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let h = id
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(tries).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let frac = (h >> 40) as f64 / (1u64 << 24) as f64;
    base + base.mul_f64(frac / 4.0)
}

impl Core {
    /// The game refused this connection or re-login for holdfast's
    /// address: drop the connection, tell the player once, try again after
    /// a backoff (then through the re-login pacer).
    pub(super) fn refused(&mut self, ctx: &mut Ctx, why: &str, out: &mut Actions) {
        let cfg = ctx.cfg;
        self.flush_tail(out);
        let (backend, skip) = self
            .game
            .take()
            .map(|g| (g.name, g.skip))
            .unwrap_or_default();
        if let Some((screen, _)) = skip.map(|s| *s) {
            // The player has the cached screen: the next try hides it too.
            self.rare_mut().screen_shown = Some(screen);
        }
        out.push(Action::DropGame);
        out.push(Action::Refused);
        crate::metrics::metrics().game_refusal();
        self.connecting = false;
        let b = self.rare_mut().busy.get_or_insert(Busy {
            tries: 0,
            told: false,
        });
        b.tries = b.tries.saturating_add(1);
        let tries = b.tries;
        let tell = !b.told;
        b.told = true;
        let delay = backoff(tries, self.id);
        slog!(info, self, user = %self.user_field(), backend = %backend, tries, delay = ?delay, why,
            "the game refused holdfast's address; trying again");
        if tell {
            self.notice(&render(&cfg.notices.busy, cfg, &backend, None), out);
        }
        self.phase = Phase::Held;
        self.rare_mut().relogin_at = Some((ctx.now + delay, false));
    }

    /// Whether `line` (one complete line of game output) is an
    /// announcement about a player holdfast is logging back in.
    pub(super) fn quiet_line(cfg: &Config, quiet: &dyn Fn(&str) -> bool, line: &[u8]) -> bool {
        let t = &cfg.templates;
        if t.announcements.is_empty() {
            return false;
        }
        let text = String::from_utf8_lossy(line);
        let text = crate::login::strip_ansi(&text);
        let text = text.trim();
        t.announcements.iter().any(|re| {
            re.captures(text)
                .and_then(|c| c.name("name"))
                .is_some_and(|n| quiet(n.as_str()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_bounded_jitter() {
        for id in [1, 2, 99, u64::MAX] {
            let waits: Vec<Duration> = (1..=8).map(|n| backoff(n, id)).collect();
            for (n, w) in waits.iter().enumerate() {
                let base = Duration::from_secs(1 << n.min(4)).min(BACKOFF_MAX);
                assert!(*w >= base && *w <= base + base / 4, "{id} {n}: {w:?}");
            }
        }
        assert_ne!(backoff(1, 1), backoff(1, 2), "sessions spread out");
    }
}
