//! Presence on `{prefix}.presence`: an instance says hello whenever it
//! (re)connects to NATS, sends a heartbeat every `bus.presence_interval`,
//! and says goodbye when it stops cleanly. A watcher that stops getting
//! heartbeats without a goodbye knows the instance vanished rather than
//! stopped.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::json;

use super::wire::IdGen;
use super::{rfc3339, BusStats, Subjects, ALL, METHODS, SCHEMA_VERSION};
use crate::state::Shared;

/// A peer counts as gone after this many of its heartbeat intervals
/// without a word.
const MISSED_BEATS: f64 = 3.5;

/// The other instances seen on the presence subject, so `status` can name
/// them and `holdfast status` knows whose answers to wait for.
#[derive(Debug, Default)]
pub struct Peers {
    seen: Mutex<HashMap<String, (Instant, Duration)>>,
}

impl Peers {
    /// A presence message `p` arrived at `now` (ours included; a goodbye
    /// removes its sender).
    pub fn on_presence(&self, p: &serde_json::Value, now: Instant) {
        let Some(name) = p["instance"].as_str() else {
            return;
        };
        let beat = p["heartbeat_s"]
            .as_f64()
            .filter(|b| b.is_finite() && *b > 0.0 && *b < 86_400.0)
            .unwrap_or(10.0);
        // The lock is held for one map operation; a poisoned lock only
        // means a panic elsewhere, and the map is still usable.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if p["type"] == Kind::Goodbye.as_str() {
            seen.remove(name);
        } else {
            let gone = Duration::from_secs_f64(beat * MISSED_BEATS);
            seen.insert(name.to_string(), (now, gone));
        }
    }

    /// Instances heard from recently enough, sorted.
    pub fn names(&self, now: Instant) -> Vec<String> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, (t, gone)| now.saturating_duration_since(*t) < *gone);
        let mut v: Vec<String> = seen.keys().cloned().collect();
        v.sort();
        v
    }
}

/// Which presence message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Just (re)connected.
    Hello,
    /// Still here.
    Heartbeat,
    /// Stopping cleanly.
    Goodbye,
}

impl Kind {
    /// The `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Hello => "presence.hello",
            Kind::Heartbeat => "presence.heartbeat",
            Kind::Goodbye => "presence.goodbye",
        }
    }
}

/// The JSON body of a presence message.
pub fn message(
    kind: Kind,
    shared: &Shared,
    subjects: &Subjects,
    stats: &BusStats,
    ids: &mut IdGen,
) -> Bytes {
    let cfg = shared.config();
    let (total, logged_in, held) = shared.registry.counts();
    let body = json!({
        "type": kind.as_str(),
        "id": ids.next_id(),
        "time": rfc3339(SystemTime::now()),
        "instance": subjects.instance,
        "game": cfg.game,
        "v": SCHEMA_VERSION,
        "version": env!("CARGO_PKG_VERSION"),
        "methods": METHODS,
        // What this instance answers (`bus.rpc_allow`).
        "allowed": cfg.bus.rpc_allow,
        "rpc": subjects.rpc(&subjects.instance, "{method}"),
        "rpc_all": subjects.rpc(ALL, "{method}"),
        // Watchers call an instance vanished after a few missed beats.
        "heartbeat_s": cfg.bus.presence_interval.as_secs_f64(),
        "started": rfc3339(shared.started()),
        "uptime_s": shared.uptime().as_secs(),
        "active": shared.pool.borrow().active.clone(),
        "sessions": { "total": total, "logged_in": logged_in, "held": held },
        "queued": stats.queued.load(Ordering::Relaxed),
    });
    // Serialising a json! value cannot fail.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn peers_come_and_go() {
        let p = Peers::default();
        let t = Instant::now();
        p.on_presence(
            &json!({"type": "presence.hello", "instance": "b", "heartbeat_s": 1.0}),
            t,
        );
        p.on_presence(&json!({"type": "presence.heartbeat", "instance": "a"}), t);
        p.on_presence(&json!({"type": "presence.heartbeat"}), t);
        assert_eq!(p.names(t), ["a", "b"]);
        // b beats every second: silent 3.5 s, it is gone; a (10 s) is not.
        assert_eq!(p.names(t + Duration::from_secs(4)), ["a"]);
        p.on_presence(&json!({"type": "presence.goodbye", "instance": "a"}), t);
        assert!(p.names(t).is_empty());
    }
}
