//! A backend's DOWN and UP: the proxy's first probe told apart from a
//! recovery, flapping summed up, standbys named as such, and an UP that
//! waits for its players to be restored before it is posted.

use std::time::{Duration, Instant};

use serde_json::Value;
use time::OffsetDateTime;

use super::{s, Key, Relay};
use crate::irc::format::{self, Vars};
use crate::irc::outbox::{Notice, Prio};

/// An UP waits at most this long for `session.restored` events before it
/// is posted with the count so far.
pub const RESTORE_MAX: Duration = Duration::from_secs(20);
/// An UP is posted once no `session.restored` came for this long.
pub const RESTORE_QUIET: Duration = Duration::from_secs(3);
/// Backend UP/DOWN lines posted per backend per summary window before the
/// rest is summed up as flapping.
pub const FLAP_ALLOWANCE: u32 = 4;

/// An UP that waits for its players to be restored.
#[derive(Debug)]
pub(super) struct PendingUp {
    vars: Vars,
    time: OffsetDateTime,
    expected: Option<u64>,
    restored: u64,
    started: Instant,
    last: Instant,
}

impl PendingUp {
    /// True once it is time to post it: no restore came for
    /// [`RESTORE_QUIET`], or it has waited [`RESTORE_MAX`].
    pub(super) fn due(&self, now: Instant) -> bool {
        let quiet = now.saturating_duration_since(self.last) >= RESTORE_QUIET;
        let max = now.saturating_duration_since(self.started) >= RESTORE_MAX;
        quiet || max
    }
}

impl Relay {
    /// A `backend.down` (`down`) or `backend.up` event of instance `name`,
    /// already touched; `v` holds its base template variables, `t` its time.
    pub(super) fn on_backend(
        &mut self,
        name: &str,
        down: bool,
        ev: &Value,
        mut v: Vars,
        t: OffsetDateTime,
        now: Instant,
    ) -> Vec<Notice> {
        let mut out = Vec::new();
        // A new state change for this instance settles a waiting UP.
        self.flush_up(name, &mut out);
        let backend = s(ev, "backend");
        let inst = self.instances.get_mut(name).expect("touched above");
        let recovered = inst.down.remove(&backend);
        if down {
            inst.down.insert(backend.clone());
        } else if !recovered && ev["down_for_s"].is_null() {
            // The proxy's first probe found it up: nothing recovered.
            return out;
        }
        // A backend that is not the active one: its state matters
        // to operators, but the game is not down.
        let standby = inst.active.as_ref().is_some_and(|a| *a != backend);
        let key = Key::Backend(name.to_string(), backend.clone());
        if let Some(b) = self.summary.offer(&key, FLAP_ALLOWANCE, now) {
            b.add(None, t);
            if down {
                b.downs += 1;
            } else {
                b.ups += 1;
            }
            b.state = if down { "DOWN" } else { "UP" }.into();
            return out;
        }
        for k in ["backend", "addr", "reason"] {
            v.insert(k, s(ev, k));
        }
        if standby {
            let kind = if down { "standby_down" } else { "standby_up" };
            out.push(Notice {
                text: self.formats.render(kind, &v),
                prio: Prio::High,
                time: t,
            });
            return out;
        }
        let inst = self.instances.get_mut(name).expect("touched above");
        if down {
            let held = ev["held"].as_u64();
            if let Some(h) = held {
                inst.held.insert(backend, h);
            }
            v.insert("held", held.map(|h| h.to_string()).unwrap_or("?".into()));
            v.insert(
                "players",
                held.map(format::players).unwrap_or("? players".into()),
            );
            out.push(Notice {
                text: self.formats.render("down", &v),
                prio: Prio::High,
                time: t,
            });
        } else {
            let down_for = ev["down_for_s"].as_f64().unwrap_or(0.0).max(0.0);
            v.insert(
                "downtime",
                format::duration(Duration::from_secs_f64(down_for)),
            );
            // The proxy may say how many it is restoring; else the
            // DOWN told us how many were held.
            let expected = ev["held"].as_u64().or_else(|| inst.held.remove(&backend));
            inst.pending_up = Some(PendingUp {
                vars: v,
                time: t,
                expected,
                restored: 0,
                started: now,
                last: now,
            });
            if expected == Some(0) {
                self.flush_up(name, &mut out);
            }
        }
        out
    }

    /// A `session.restored` event of instance `name`, already touched: one
    /// more player back for its waiting UP, which is posted once all are.
    pub(super) fn on_restored(&mut self, name: &str, now: Instant, out: &mut Vec<Notice>) {
        let inst = self.instances.get_mut(name).expect("touched above");
        if let Some(p) = inst.pending_up.as_mut() {
            p.restored += 1;
            p.last = now;
            if p.expected.is_some_and(|e| p.restored >= e) {
                self.flush_up(name, out);
            }
        }
    }

    /// Posts instance `name`'s waiting UP, if it has one, with the players
    /// restored so far.
    pub(super) fn flush_up(&mut self, name: &str, out: &mut Vec<Notice>) {
        let Some(inst) = self.instances.get_mut(name) else {
            return;
        };
        let Some(mut p) = inst.pending_up.take() else {
            return;
        };
        let players = match p.expected {
            Some(e) if p.restored < e => format!("{} of {}", p.restored, format::players(e)),
            _ => format::players(p.restored),
        };
        p.vars.insert("restored", p.restored.to_string());
        p.vars.insert("players", players);
        out.push(Notice {
            text: self.formats.render("up", &p.vars),
            prio: Prio::High,
            time: p.time,
        });
    }
}
