//! The relay's memory: which instances exist, which went silent, which UP
//! is still counting its restored players, what a burst has held back.
//! Bus events and presence go in, [`Notice`]s come out.
//!
//! No I/O and no clock of its own: every call takes `now`, so the tests
//! drive it through hours of events in microseconds.
//!
//! A backend's DOWN and UP, and the UP's wait for restored players, are
//! in `updown` beside this file.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use time::OffsetDateTime;

use super::format::{self, Formats, Vars};
use super::outbox::{Notice, Prio};
use super::summary::{Bucket, Summariser};
use crate::config::Irc;
use updown::PendingUp;
pub use updown::{FLAP_ALLOWANCE, RESTORE_MAX, RESTORE_QUIET};

/// Names shown in a login summary.
const SUMMARY_NAMES: usize = 10;

/// What a burst is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// An instance's logins.
    Logins(String),
    /// An instance's logouts.
    Logouts(String),
    /// One backend's ups and downs.
    Backend(String, String),
}

#[derive(Debug)]
struct Instance {
    game: String,
    /// Seen on the presence subject (only those can vanish).
    present: bool,
    goodbye: bool,
    last_seen: Instant,
    last_seen_wall: OffsetDateTime,
    vanished: bool,
    held: HashMap<String, u64>,
    /// Backends seen DOWN and not UP since (an UP for any other is the
    /// proxy's first probe result, not a recovery).
    down: HashSet<String>,
    /// The active backend, from presence and failover events.
    active: Option<String>,
    /// Silence after which this instance counts as vanished: the
    /// configured value, or longer if its heartbeats are slower.
    vanish_after: Duration,
    pending_up: Option<PendingUp>,
}

/// The relay's state.
#[derive(Debug)]
pub struct Relay {
    formats: Formats,
    post_logins: bool,
    vanish_after: Duration,
    instances: HashMap<String, Instance>,
    summary: Summariser<Key>,
    bus_up: bool,
}

fn s(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => crate::irc::proto::clean_text(s),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn event_time(v: &Value, wall: OffsetDateTime) -> OffsetDateTime {
    v["time"]
        .as_str()
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
        .unwrap_or(wall)
}

impl Relay {
    /// A relay configured by `[irc]`.
    pub fn new(cfg: &Irc) -> Relay {
        Relay {
            formats: Formats::new(&cfg.formats, cfg.colors),
            post_logins: cfg.post_logins,
            vanish_after: cfg.vanish_after,
            instances: HashMap::new(),
            summary: Summariser::new(cfg.summarize_window),
            bus_up: false,
        }
    }

    /// The templates in use.
    pub fn formats(&self) -> &Formats {
        &self.formats
    }

    /// Names of the instances known (from presence or events), sorted.
    pub fn instance_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, i)| !i.goodbye)
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }

    fn base_vars(
        &self,
        instance: &str,
        game: &str,
        time: OffsetDateTime,
        wall: OffsetDateTime,
    ) -> Vars {
        let mut v = Vars::new();
        v.insert("instance", instance.to_string());
        v.insert("game", game.to_string());
        v.insert("time", format::clock(time, wall));
        v
    }

    fn touch(
        &mut self,
        name: &str,
        game: &str,
        now: Instant,
        wall: OffsetDateTime,
        out: &mut Vec<Notice>,
    ) {
        let inst = self
            .instances
            .entry(name.to_string())
            .or_insert_with(|| Instance {
                game: String::new(),
                present: false,
                goodbye: false,
                last_seen: now,
                last_seen_wall: wall,
                vanished: false,
                held: HashMap::new(),
                down: HashSet::new(),
                active: None,
                vanish_after: Duration::ZERO,
                pending_up: None,
            });
        if !game.is_empty() {
            inst.game = game.to_string();
        }
        let gone_for = now.saturating_duration_since(inst.last_seen);
        let was_vanished = std::mem::take(&mut inst.vanished);
        inst.last_seen = now;
        inst.last_seen_wall = wall;
        if was_vanished {
            let game = inst.game.clone();
            let mut v = self.base_vars(name, &game, wall, wall);
            v.insert("gone_for", format::duration(gone_for));
            out.push(Notice {
                text: self.formats.render("back", &v),
                prio: Prio::High,
                time: wall,
            });
        }
    }

    /// A presence message: `type` is `presence.hello`, `presence.heartbeat`
    /// or `presence.goodbye` (an `event` field saying `hello` ... is
    /// accepted too).
    pub fn on_presence(&mut self, p: &Value, now: Instant, wall: OffsetDateTime) -> Vec<Notice> {
        let mut out = Vec::new();
        let name = s(p, "instance");
        if name.is_empty() {
            return out;
        }
        self.touch(&name, &s(p, "game"), now, wall, &mut out);
        // `touch` created it.
        let inst = self
            .instances
            .get_mut(&name)
            .expect("instance just touched");
        inst.present = true;
        inst.goodbye = s(p, "type") == "presence.goodbye" || s(p, "event") == "goodbye";
        let active = s(p, "active");
        if !active.is_empty() {
            inst.active = Some(active);
        }
        // Three missed heartbeats and a half, if that is longer.
        let beat = p["heartbeat_s"]
            .as_f64()
            .filter(|b| b.is_finite() && *b > 0.0);
        inst.vanish_after = beat
            .map(|b| Duration::from_secs_f64(b * 3.5))
            .unwrap_or_default()
            .max(self.vanish_after);
        out
    }

    /// An event from `{prefix}.event.>`.
    pub fn on_event(&mut self, ev: &Value, now: Instant, wall: OffsetDateTime) -> Vec<Notice> {
        let mut out = Vec::new();
        let name = s(ev, "instance");
        if name.is_empty() {
            return out;
        }
        let kind = s(ev, "type");
        self.touch(&name, &s(ev, "game"), now, wall, &mut out);
        let t = event_time(ev, wall);
        let game = self.instances[&name].game.clone();
        let mut v = self.base_vars(&name, &game, t, wall);
        match kind.as_str() {
            "backend.down" | "backend.up" => {
                let down = kind == "backend.down";
                out.extend(self.on_backend(&name, down, ev, v, t, now));
            }
            "session.restored" => self.on_restored(&name, now, &mut out),
            "failover" => {
                let to = s(ev, "to");
                if !to.is_empty() {
                    let inst = self.instances.get_mut(&name).expect("touched above");
                    inst.active = Some(to);
                }
                for k in ["from", "to", "reason"] {
                    v.insert(k, s(ev, k));
                }
                let why = match s(ev, "reason").as_str() {
                    "automatic" => "automatic".to_string(),
                    "sighup" => "config reload".to_string(),
                    "request" => "requested".to_string(),
                    "" => "no reason given".to_string(),
                    other => other.to_string(),
                };
                v.insert("why", why);
                out.push(Notice {
                    text: self.formats.render("failover", &v),
                    prio: Prio::High,
                    time: t,
                });
            }
            "config.reloaded" if ev["ok"] == Value::Bool(false) => {
                let e = s(ev, "error");
                v.insert(
                    "error",
                    if e.is_empty() {
                        "unknown error".into()
                    } else {
                        e
                    },
                );
                out.push(Notice {
                    text: self.formats.render("reload_failed", &v),
                    prio: Prio::High,
                    time: t,
                });
            }
            "session.login" | "session.close" if self.post_logins => {
                let user = s(ev, "user");
                if user.is_empty() {
                    // A connection that never logged in: nobody to name.
                    return out;
                }
                let login = kind == "session.login";
                let key = if login {
                    Key::Logins(name.clone())
                } else {
                    Key::Logouts(name.clone())
                };
                if let Some(b) = self.summary.offer(&key, 1, now) {
                    b.add(Some(&user), t);
                    return out;
                }
                v.insert("user", user);
                v.insert("reason", s(ev, "reason"));
                out.push(Notice {
                    text: self
                        .formats
                        .render(if login { "login" } else { "logout" }, &v),
                    prio: Prio::Low,
                    time: t,
                });
            }
            _ => {}
        }
        out
    }

    /// The NATS connection went up or down. While it is down nobody can
    /// vanish (the silence is ours); when it is back everyone starts afresh.
    pub fn on_bus(&mut self, up: bool, now: Instant) {
        if up && !self.bus_up {
            for i in self.instances.values_mut() {
                if !i.vanished {
                    i.last_seen = now;
                }
            }
        }
        self.bus_up = up;
    }

    /// Time-driven work: UPs whose restores are done, closed summary
    /// windows, silent instances.
    pub fn tick(&mut self, now: Instant, wall: OffsetDateTime) -> Vec<Notice> {
        let mut out = Vec::new();
        let ready: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, i)| i.pending_up.as_ref().is_some_and(|p| p.due(now)))
            .map(|(n, _)| n.clone())
            .collect();
        for n in ready {
            self.flush_up(&n, &mut out);
        }
        for (key, b, window) in self.summary.due(now) {
            out.push(self.summary_line(&key, &b, window, wall));
        }
        if self.bus_up {
            let mut gone = Vec::new();
            for (n, i) in self.instances.iter_mut() {
                if i.present
                    && !i.goodbye
                    && !i.vanished
                    && now.saturating_duration_since(i.last_seen)
                        >= i.vanish_after.max(self.vanish_after)
                {
                    i.vanished = true;
                    gone.push((
                        n.clone(),
                        i.game.clone(),
                        now - i.last_seen,
                        i.last_seen_wall,
                    ));
                }
            }
            gone.sort_by(|a, b| a.0.cmp(&b.0));
            for (n, game, silence, last) in gone {
                let mut v = self.base_vars(&n, &game, wall, wall);
                v.insert("silence", format::duration(silence));
                v.insert("last_seen", format::clock(last, wall));
                out.push(Notice {
                    text: self.formats.render("vanished", &v),
                    prio: Prio::High,
                    time: wall,
                });
            }
        }
        out
    }

    fn summary_line(
        &self,
        key: &Key,
        b: &Bucket,
        window: Duration,
        wall: OffsetDateTime,
    ) -> Notice {
        let (inst, kind, prio) = match key {
            Key::Logins(i) => (i, "logins_summary", Prio::Low),
            Key::Logouts(i) => (i, "logouts_summary", Prio::Low),
            Key::Backend(i, _) => (i, "flapping", Prio::High),
        };
        let game = self
            .instances
            .get(inst)
            .map(|i| i.game.clone())
            .unwrap_or_default();
        let t = b.first.unwrap_or(wall);
        let mut v = self.base_vars(inst, &game, t, wall);
        v.insert("count", b.count.to_string());
        v.insert("window", format::duration(window));
        v.insert("names", format::names(&b.names, b.count, SUMMARY_NAMES));
        if let Key::Backend(_, backend) = key {
            v.insert("backend", backend.clone());
            v.insert("downs", b.downs.to_string());
            v.insert("ups", b.ups.to_string());
            v.insert("state", b.state.clone());
        }
        Notice {
            text: self.formats.render(kind, &v),
            prio,
            time: t,
        }
    }
}

#[cfg(test)]
mod tests;
mod updown;
