//! Presence on `{prefix}.presence`: an instance says hello whenever it
//! (re)connects to NATS, sends a heartbeat every `bus.presence_interval`,
//! and says goodbye when it stops cleanly. A watcher that stops getting
//! heartbeats without a goodbye knows the instance vanished rather than
//! stopped.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use serde_json::json;

use super::wire::IdGen;
use super::{rfc3339, BusStats, Subjects, ALL, METHODS, SCHEMA_VERSION};
use crate::state::Shared;

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
        "rpc": subjects.rpc(&subjects.instance, "{method}"),
        "rpc_all": subjects.rpc(ALL, "{method}"),
        // Watchers call an instance vanished after a few missed beats.
        "heartbeat_s": cfg.bus.presence_interval.as_secs_f64(),
        "started": rfc3339(shared.started),
        "uptime_s": shared.started_at.elapsed().as_secs(),
        "active": shared.pool.borrow().active.clone(),
        "sessions": { "total": total, "logged_in": logged_in, "held": held },
        "queued": stats.queued.load(Ordering::Relaxed),
    });
    // Serialising a json! value cannot fail.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}
