//! Quit, boot or crash: the probe's *coverage* of the game, and the
//! judgement it gives when a player's game connection closes. No I/O and
//! no clock: the probe tells it what happened and when.
//!
//! Coverage is the time since which the probe has proved the same game
//! process without a gap. Its logged-in connection answering proves it; a
//! replaced connection continues it when the new one logged in while the
//! old one was still open, or when the game's own process identity (its
//! start time, for flavors that have one: `templates.identity`) is the
//! same as before, which bridges any gap. Anything else is a *break*,
//! remembered with its kind and time until coverage is proved again.
//!
//! When a player's game connection closes and the game still answers:
//! - connected after coverage began: the same process closed it (`@boot`,
//!   idle timeout, softcode): **closed**, never logged back in;
//! - the game's identity changed after the player connected: it
//!   restarted: **held** and logged back in;
//! - connected before a break, and closed at most [`CRASH_WINDOW`] after
//!   it (a crash closes every connection of a game at once, the probe's
//!   too; a boot closes one): **held**;
//! - the game stopped answering after the player connected and they were
//!   closed while it did not answer: **held**;
//! - otherwise nothing proves a restart: **closed**: holdfast does not log
//!   a player back in against the game (docs/quit-or-crash.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// A player's connection that closes at most this long after the probe's
/// own connection broke is taken to have closed with it (a crash). Local
/// games close every socket of a dying process within milliseconds; the
/// rest is the time a session or the probe takes to notice.
pub const CRASH_WINDOW: Duration = Duration::from_secs(1);

/// How a gap in coverage came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BreakKind {
    /// The probe's logged-in connection was closed (by the game, the
    /// network, or a crash) while the game went on answering.
    Lost,
    /// The game did not answer at all (no connect screen, connect refused).
    Down,
}

/// A gap in coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Break {
    /// What it was.
    pub kind: BreakKind,
    /// When the probe noticed it.
    pub at: Instant,
}

/// How the current coverage began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Began {
    /// With the probe's first connection: nothing known before it.
    Start,
    /// After a break that nothing bridged.
    After(Break),
    /// After the game's identity changed: the process before it was last
    /// proved alive at `last_proof`.
    Changed {
        /// The last proof of the process before.
        last_proof: Instant,
    },
}

/// What closing a game connection means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The game closed it itself: close the player after its last words.
    Closed(&'static str),
    /// The game process went away or changed: hold and log back in.
    Restarted(&'static str),
}

impl Verdict {
    /// Whether the game is alive and the same: the player is closed.
    pub fn same_process(self) -> bool {
        matches!(self, Verdict::Closed(_))
    }

    /// Why, for the log.
    pub fn why(self) -> &'static str {
        match self {
            Verdict::Closed(w) | Verdict::Restarted(w) => w,
        }
    }
}

/// The probe's coverage of one backend.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    /// Since when the same process is proved (none: never proved).
    since: Option<Instant>,
    /// The last proof.
    last_proof: Option<Instant>,
    /// The game's process identity on this coverage, if read.
    identity: Option<String>,
    /// How this coverage began.
    began: Option<Began>,
    /// A break not yet followed by a new proof (the earliest one; `Down`
    /// wins over `Lost`).
    pending: Option<Break>,
}

impl Coverage {
    /// Since when coverage runs, if it does (no pending break).
    pub fn since(&self) -> Option<Instant> {
        self.pending.is_none().then_some(self.since).flatten()
    }

    /// The identity last read.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// The logged-in connection answered again.
    pub fn answered(&mut self, now: Instant) {
        if self.pending.is_none() && self.since.is_some() {
            self.last_proof = Some(now);
        }
    }

    /// The probe's logged-in connection is gone.
    pub fn lost(&mut self, now: Instant) {
        self.broke(BreakKind::Lost, now);
    }

    /// The game did not answer.
    pub fn down(&mut self, now: Instant) {
        self.broke(BreakKind::Down, now);
    }

    fn broke(&mut self, kind: BreakKind, now: Instant) {
        if self.since.is_none() && self.pending.is_none() && kind == BreakKind::Lost {
            // Nothing was covered: nothing to break.
            return;
        }
        self.pending = Some(match self.pending {
            None => Break { kind, at: now },
            Some(b) if kind == BreakKind::Down && b.kind == BreakKind::Lost => {
                Break { kind, at: b.at }
            }
            Some(b) => b,
        });
    }

    /// A fresh logged-in connection opened at `opened` answered at `now`.
    /// `identity`: the game's process identity it read, if any;
    /// `overlapped`: the connection it replaced was still open when it
    /// logged in. Returns false if coverage broke here.
    pub fn fresh(
        &mut self,
        opened: Instant,
        now: Instant,
        identity: Option<String>,
        overlapped: bool,
    ) -> bool {
        let same_identity = match (&self.identity, &identity) {
            (Some(a), Some(b)) => Some(a == b),
            _ => None,
        };
        let continues = self.since.is_some()
            && match same_identity {
                Some(same) => same,
                None => overlapped && self.pending.is_none_or(|b| b.kind == BreakKind::Lost),
            };
        if continues {
            self.pending = None;
            self.last_proof = Some(now);
            if identity.is_some() {
                self.identity = identity;
            }
            return true;
        }
        self.began = Some(match (same_identity, self.last_proof, self.pending) {
            (Some(false), Some(last_proof), _) => Began::Changed { last_proof },
            (_, _, Some(b)) => Began::After(b),
            (_, Some(last), None) => Began::After(Break {
                kind: BreakKind::Lost,
                at: last,
            }),
            (_, None, None) => Began::Start,
        });
        self.since = Some(opened);
        self.last_proof = Some(now);
        self.identity = identity;
        self.pending = None;
        false
    }

    /// The judgement for a game connection made at `connected` whose close
    /// the session noticed at `closed`, after an immediate probe found the
    /// game answering.
    pub fn judge(&self, connected: Instant, closed: Instant) -> Verdict {
        if let Some(b) = self.pending {
            // The game answers but the probe has not proved it since the
            // break (the heartbeat login failed, or is under way).
            if b.kind == BreakKind::Down && connected <= b.at {
                return Verdict::Restarted(
                    "the game stopped answering after this connection was made",
                );
            }
            if closed <= b.at + CRASH_WINDOW && connected <= b.at {
                return Verdict::Restarted("closed together with the probe's connection");
            }
            return Verdict::Closed("nothing proves a restart");
        }
        let Some(since) = self.since else {
            return Verdict::Closed("no heartbeat coverage; nothing proves a restart");
        };
        if connected >= since {
            return Verdict::Closed("the probe covered the game since before this connection");
        }
        match self.began {
            Some(Began::Changed { last_proof }) if connected <= last_proof => {
                Verdict::Restarted("the game's start time changed since this connection was made")
            }
            Some(Began::Changed { .. }) | Some(Began::After(_))
                if closed <= since + CRASH_WINDOW =>
            {
                Verdict::Restarted("closed together with the probe's connection")
            }
            _ => Verdict::Closed("nothing proves a restart"),
        }
    }

    /// The coverage as carried to a new process (times relative to `now`).
    pub fn export(&self, now: Instant) -> Carried {
        let ago = |t: Instant| now.saturating_duration_since(t).as_micros() as u64;
        Carried {
            since_us: self.since.map(ago),
            last_proof_us: self.last_proof.map(ago),
            identity: self.identity.clone(),
            began: self.began.map(|b| match b {
                Began::Start => CarriedBegan::Start,
                Began::After(b) => CarriedBegan::After {
                    kind: b.kind,
                    at_us: ago(b.at),
                },
                Began::Changed { last_proof } => CarriedBegan::Changed {
                    last_proof_us: ago(last_proof),
                },
            }),
            pending: self.pending.map(|b| (b.kind, ago(b.at))),
        }
    }

    /// The coverage carried by an older process, as of `now`.
    pub fn import(c: &Carried, now: Instant) -> Coverage {
        let at = |us: u64| now.checked_sub(Duration::from_micros(us)).unwrap_or(now);
        Coverage {
            since: c.since_us.map(at),
            last_proof: c.last_proof_us.map(at),
            identity: c.identity.clone(),
            began: c.began.map(|b| match b {
                CarriedBegan::Start => Began::Start,
                CarriedBegan::After { kind, at_us } => Began::After(Break {
                    kind,
                    at: at(at_us),
                }),
                CarriedBegan::Changed { last_proof_us } => Began::Changed {
                    last_proof: at(last_proof_us),
                },
            }),
            pending: c.pending.map(|(kind, us)| Break { kind, at: at(us) }),
        }
    }
}

/// [`Coverage`] on the wire of an upgrade: microseconds before the moment
/// it was written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    /// [`Coverage::since`].
    pub since_us: Option<u64>,
    /// The last proof.
    pub last_proof_us: Option<u64>,
    /// The game's identity.
    pub identity: Option<String>,
    /// How it began.
    pub began: Option<CarriedBegan>,
    /// A pending break: its kind and age.
    pub pending: Option<(BreakKind, u64)>,
}

/// [`Began`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CarriedBegan {
    /// [`Began::Start`].
    Start,
    /// [`Began::After`].
    After {
        /// The break's kind.
        kind: BreakKind,
        /// Its age.
        at_us: u64,
    },
    /// [`Began::Changed`].
    Changed {
        /// The age of the last proof of the process before.
        last_proof_us: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_millis(n * 1000)
    }

    fn covered_from(t0: Instant, id: Option<&str>) -> Coverage {
        let mut c = Coverage::default();
        c.fresh(t0, t0 + s(0), id.map(String::from), false);
        c
    }

    #[test]
    fn a_connection_made_while_covered_was_closed_by_the_game() {
        let t0 = Instant::now();
        let mut c = covered_from(t0, None);
        c.answered(t0 + s(5));
        assert!(c.judge(t0 + s(1), t0 + s(9)).same_process());
        // Before coverage, at the very start: nothing proves a restart.
        assert!(c.judge(t0 - s(1), t0 + s(9)).same_process());
    }

    #[test]
    fn an_unchanged_start_time_bridges_a_replaced_connection() {
        let t0 = Instant::now();
        let mut c = covered_from(t0, Some("Mon 1"));
        c.lost(t0 + s(10));
        assert!(c.fresh(t0 + s(10), t0 + s(11), Some("Mon 1".into()), false));
        assert_eq!(c.since(), Some(t0));
        // A player of before the gap, booted at once: the same process.
        assert!(c.judge(t0 + s(2), t0 + s(11)).same_process());
    }

    #[test]
    fn a_changed_start_time_is_a_restart() {
        let t0 = Instant::now();
        let mut c = covered_from(t0, Some("Mon 1"));
        c.answered(t0 + s(8));
        c.lost(t0 + s(10));
        assert!(!c.fresh(t0 + s(10), t0 + s(10), Some("Mon 2".into()), false));
        let v = c.judge(t0 + s(2), t0 + s(10));
        assert!(!v.same_process(), "{v:?}");
        // Even when the session noticed late.
        assert!(!c.judge(t0 + s(2), t0 + s(40)).same_process());
        // A player who connected to the new process.
        assert!(c.judge(t0 + s(12), t0 + s(40)).same_process());
    }

    #[test]
    fn without_identity_a_close_with_the_probes_is_a_crash_a_later_one_a_boot() {
        let t0 = Instant::now();
        let mut c = covered_from(t0, None);
        c.answered(t0 + s(9));
        // The probe's connection drops (its player booted, or a crash).
        c.lost(t0 + s(10));
        // Checked while not yet proved again: closed with it.
        assert!(!c.judge(t0 + s(1), t0 + s(10)).same_process());
        assert!(!c.fresh(t0 + s(10), t0 + s(10), None, false));
        // A player closed at the same moment: a crash.
        assert!(!c.judge(t0 + s(1), t0 + s(10)).same_process());
        // Three seconds later: a boot.
        assert!(c.judge(t0 + s(1), t0 + s(13)).same_process());
    }

    #[test]
    fn overlapping_connections_continue_coverage() {
        let t0 = Instant::now();
        let mut c = covered_from(t0, None);
        assert!(c.fresh(t0 + s(20), t0 + s(21), None, true));
        assert_eq!(c.since(), Some(t0));
    }

    #[test]
    fn the_game_going_down_is_a_restart_for_those_connected_before() {
        let t0 = Instant::now();
        let mut c = covered_from(t0, None);
        c.answered(t0 + s(4));
        c.down(t0 + s(5));
        // Still unproved when the player's close comes in: held.
        assert!(!c.judge(t0 + s(1), t0 + s(30)).same_process());
        // A down is not bridged by an overlap.
        assert!(!c.fresh(t0 + s(30), t0 + s(30), None, true));
        assert!(!c.judge(t0 + s(1), t0 + s(30)).same_process());
    }

    #[test]
    fn carried_coverage_keeps_its_times() {
        let t0 = Instant::now() + s(100);
        let mut c = covered_from(t0, Some("x"));
        c.lost(t0 + s(3));
        c.fresh(t0 + s(4), t0 + s(4), Some("y".into()), false);
        let now = t0 + s(10);
        let w = c.export(now);
        let back: Carried = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        let d = Coverage::import(&back, now);
        assert_eq!(d.since(), c.since());
        assert_eq!(d.identity(), Some("y"));
        assert_eq!(d.judge(t0 + s(1), now), c.judge(t0 + s(1), now));
    }
}
