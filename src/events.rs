//! Events: what happens to players and backends, as the bus publishes them.
//!
//! Sessions, probes and the failover manager build an [`Event`] and hand it
//! to an [`EventSink`], which never waits: it `try_send`s into a bounded
//! channel owned by the bus publisher (see `bus.rs`) and counts what it had
//! to drop. With no bus configured the sink simply discards events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

/// One event: a kind such as `backend.down` and its extra fields. The
/// publisher adds the common fields (`type`, `id`, `time`, `instance`,
/// `game`, `v`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The kind, also the last part of the subject (`{prefix}.event.{kind}`).
    pub kind: &'static str,
    /// Kind-specific fields.
    pub fields: Map<String, Value>,
    /// When it happened (the publisher may send it much later).
    pub time: std::time::SystemTime,
}

impl Event {
    /// A new event of `kind`, stamped now.
    pub fn new(kind: &'static str) -> Self {
        Event {
            kind,
            fields: Map::new(),
            time: std::time::SystemTime::now(),
        }
    }

    /// Adds a field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_string(), value.into());
        self
    }

    /// Adds a field if `value` is `Some`.
    pub fn with_opt(self, key: &str, value: Option<impl Into<Value>>) -> Self {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }
}

/// Where events go. Cheap to clone; never blocks.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: Option<mpsc::Sender<Event>>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// A sink feeding `tx`.
    pub fn new(tx: mpsc::Sender<Event>) -> Self {
        EventSink {
            tx: Some(tx),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A sink that discards everything (no bus configured).
    pub fn disabled() -> Self {
        EventSink {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Hands `ev` to the publisher without waiting. If its channel is full
    /// the event is dropped and counted: the data path never waits for the
    /// bus.
    pub fn emit(&self, ev: Event) {
        if let Some(tx) = &self.tx {
            if tx.try_send(ev).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events dropped because the publisher's channel was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// True if events go anywhere.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }
}
