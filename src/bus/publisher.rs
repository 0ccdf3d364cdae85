//! The event publisher: the one place that writes events to NATS.
//!
//! Events arrive over a bounded channel (sessions `try_send`, see
//! `events.rs`), are stamped with their common fields and an id, and go
//! into the *outbox*, a bounded FIFO of `bus.queue_size` entries that
//! drops (and counts) the oldest when full. The outbox is what holds events
//! through a NATS outage, not the client library: we only hand events to
//! async-nats while it says it is connected, and an event leaves the outbox
//! only once the server has *confirmed* it.
//!
//! Confirmation: after a batch we publish a marker to a private inbox we
//! are subscribed to. NATS keeps one connection's messages in order, so
//! when the marker comes back the server has processed the whole batch.
//! If the connection drops first, or the server stops answering (then we
//! replace the connection ourselves), the batch is sent again from the
//! start on the next connection; consumers drop the duplicates by `id`.
//! Batches are sent one at a time, so the queue goes out in order. (A
//! server that forbids our `_INBOX` subscription gets events without
//! confirmation: plain at-most-once NATS.) A marker carries a random
//! token, so another client that may publish to our inbox cannot confirm a
//! batch the server never saw.
//!
//! With `bus.jetstream`, each (re)connection first makes sure the stream
//! exists (`jetstream.rs`); batches then go through JetStream with
//! `Nats-Msg-Id` = the event id, and the stream's acks confirm them instead
//! of the marker, so a batch sent again is stored once. A server without
//! JetStream is reported once and gets plain publishes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Event as NatsEvent, Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod conn;
mod finish;
mod send;

use super::jetstream::{self, BatchAck, EnsureError, Ensured};
use super::outbox::{Outbox, Outgoing};
use super::presence::{self, Kind};
use super::wire::{encode, Common, IdGen};
use super::{BusStats, Subjects};
use crate::events::Event;
use crate::secret::Secret;
use crate::state::Shared;

/// Events per confirmed batch.
const BATCH: usize = 256;
/// How long the server may take to confirm a batch. Every second miss
/// replaces the connection: a server that stopped reading is not worth
/// waiting for (async-nats's own pings take longer to notice).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for handing one batch to the client library. It only waits
/// when the library's own channel is full, which means it is not connected.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause before retrying after a failed hand-off.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// At shutdown while not connected: how long to hope for a reconnect.
const UNCONNECTED_GRACE: Duration = Duration::from_millis(500);
/// After a passing failure to use the stream, check it again this soon.
const JS_RETRY: Duration = Duration::from_secs(3);
/// While events wait and no connection event arrives, look at the
/// connection state this often anyway (a lost notification must not strand
/// the queue).
const STATE_POLL: Duration = Duration::from_secs(1);

/// Where JetStream stands on the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Js {
    /// `bus.jetstream` is off.
    Off,
    /// Making sure the stream exists; batches wait.
    Checking,
    /// Publishing through the stream.
    Stream,
    /// No usable stream on this connection: plain publishes.
    Plain,
}

/// What the JetStream helper tasks report.
#[derive(Debug)]
enum JsNote {
    /// The stream check of connection `gen`.
    Ensured(u64, Result<Ensured, EnsureError>),
    /// The acks of a batch.
    Acked(BatchAck),
}

/// The payload of batch `marker`'s marker: its number and 128 random
/// bits, which a client that may publish to our inbox cannot guess.
fn marker_token(marker: u64) -> Bytes {
    Bytes::from(format!("{marker}.{:032x}", rand::random::<u128>()))
}

/// True if `payload` is the marker of the batch in flight `f`.
fn confirms(f: &Inflight, payload: &[u8]) -> bool {
    !f.token.is_empty() && f.token == payload
}

/// The batch waiting for its confirmation.
#[derive(Debug, Clone)]
struct Inflight {
    marker: u64,
    /// The marker's payload: its number and a random token.
    token: Bytes,
    deadline: Instant,
}

/// The publisher task's state.
pub struct Publisher {
    shared: Arc<Shared>,
    client: Client,
    subjects: Subjects,
    stats: Arc<BusStats>,
    outbox: Outbox,
    ids: IdGen,
    presence_ids: IdGen,
    /// Our private inbox for batch markers; `None` once the client closed.
    acks: Option<Subscriber>,
    ack_subject: Subject,
    /// The batch in flight and when to give up on it.
    inflight: Option<Inflight>,
    /// A `Connected` event has been seen.
    connected_once: bool,
    /// A `Disconnected` event came after the last `Connected`.
    disconnected_since: bool,
    next_marker: u64,
    ack_misses: u32,
    /// False if the server does not let us use our inbox for markers.
    confirm: bool,
    retry_at: Option<Instant>,
    hello_pending: bool,
    heartbeat_pending: bool,
    /// For logs: did we warn about the outage / overflow yet.
    outage_logged: bool,
    overflow_logged: bool,
    /// JetStream context when `bus.jetstream` is on.
    js: Option<async_nats::jetstream::Context>,
    js_state: Js,
    /// Counts connections, so a stream check about an older one is ignored.
    js_gen: u64,
    js_tx: mpsc::Sender<JsNote>,
    js_rx: mpsc::Receiver<JsNote>,
    /// Said once that the server has no JetStream.
    js_unavailable_logged: bool,
    /// When to check the stream again after a passing failure (a
    /// cluster still electing its JetStream leader, say).
    js_retry: Option<Instant>,
}

impl Publisher {
    /// Sets up the publisher on `client` (connected or not).
    pub async fn new(
        shared: Arc<Shared>,
        client: Client,
        subjects: Subjects,
        stats: Arc<BusStats>,
    ) -> Publisher {
        let cap = shared.config().bus.queue_size;
        let ack_subject = Subject::from(client.new_inbox());
        // Subscribing only queues a command; it fails only on a closed client.
        let acks = client.subscribe(ack_subject.clone()).await.ok();
        let ids = IdGen::new();
        let js_on = shared.config().bus.jetstream;
        let (js_tx, js_rx) = mpsc::channel(16);
        Publisher {
            shared,
            subjects,
            stats,
            outbox: Outbox::new(cap),
            presence_ids: ids.sibling("p"),
            ids,
            acks,
            ack_subject,
            inflight: None,
            connected_once: false,
            disconnected_since: false,
            next_marker: 0,
            ack_misses: 0,
            confirm: true,
            retry_at: None,
            hello_pending: false,
            heartbeat_pending: false,
            outage_logged: false,
            overflow_logged: false,
            js: js_on.then(|| jetstream::context(client.clone())),
            js_state: if js_on { Js::Checking } else { Js::Off },
            js_gen: 0,
            js_tx,
            js_rx,
            js_unavailable_logged: false,
            js_retry: None,
            client,
        }
    }

    /// Publishes until `stop`, then flushes for at most [`super::STOP_DEADLINE`].
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        mut conn_rx: mpsc::Receiver<NatsEvent>,
        stop: CancellationToken,
    ) {
        let every = self.shared.config().bus.presence_interval;
        let mut heartbeat = interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut buf = Vec::with_capacity(BATCH);
        loop {
            self.pump().await;
            let wake = self.wake_at();
            // Every branch is cancel-safe: channel receives, a subscription's
            // `next`, timers. Losing a race consumes nothing.
            tokio::select! {
                _ = stop.cancelled() => break,
                n = rx.recv_many(&mut buf, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    for ev in buf.drain(..) {
                        self.enqueue(&ev);
                    }
                }
                Some(ev) = conn_rx.recv() => self.on_conn_event(ev),
                Some(m) = next_ack(&mut self.acks) => self.on_ack(&m.payload),
                Some(n) = self.js_rx.recv() => self.on_js(n),
                _ = tokio::time::sleep_until(wake) => self.on_timer().await,
                _ = heartbeat.tick() => self.heartbeat_pending = true,
            }
        }
        self.finish(rx, conn_rx).await;
    }

    /// When the loop must wake up without any input.
    fn wake_at(&self) -> Instant {
        if let Some(f) = &self.inflight {
            return f.deadline;
        }
        if let Some(t) = self.retry_at.or(self.js_retry) {
            return t;
        }
        Instant::now() + STATE_POLL
    }

    fn connected(&self) -> bool {
        let c = self.client.connection_state() == async_nats::connection::State::Connected;
        self.stats.connected.store(c, Ordering::Relaxed);
        c
    }

    /// Stamps `ev` and appends it to the outbox.
    fn enqueue(&mut self, ev: &Event) {
        let cfg = self.shared.config();
        let b = &cfg.bus;
        let secrets: Vec<&Secret> = [
            cfg.heartbeat.password.as_ref(),
            b.password.as_ref(),
            b.token.as_ref(),
            b.nkey_seed.as_ref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let common = Common {
            instance: &self.subjects.instance,
            game: &cfg.game,
            publish_ip: b.publish_ip,
            secrets: &secrets,
        };
        let id = self.ids.next_id();
        let payload = encode(ev, &common, id.clone());
        let subject = Subject::from(self.subjects.event(ev.kind));
        self.push(Outgoing {
            subject,
            payload,
            id: Some(id),
        });
    }

    fn push(&mut self, m: Outgoing) {
        if self.outbox.push(m) {
            self.stats.overflow.fetch_add(1, Ordering::Relaxed);
            if !self.overflow_logged {
                self.overflow_logged = true;
                warn!(
                    queue_size = self.outbox.cap,
                    "bus queue full: dropping the oldest events"
                );
            }
        }
        self.stats
            .queued
            .store(self.outbox.len() as u64, Ordering::Relaxed);
    }

    /// Sends what can be sent now: presence, then the next batch.
    async fn pump(&mut self) {
        if !self.connected() {
            // Stale heartbeats are worthless; the hello after reconnecting
            // says everything they would.
            self.heartbeat_pending = false;
            return;
        }
        if self.hello_pending || self.heartbeat_pending {
            let kind = if self.hello_pending {
                Kind::Hello
            } else {
                Kind::Heartbeat
            };
            let body = presence::message(
                kind,
                &self.shared,
                &self.subjects,
                &self.stats,
                &mut self.presence_ids,
            );
            let subj = Subject::from(self.subjects.presence());
            // Best effort: a presence message is not worth queueing.
            if timeout(HANDOFF_TIMEOUT, self.client.publish(subj, body))
                .await
                .is_ok()
            {
                self.hello_pending = false;
                self.heartbeat_pending = false;
            }
        }
        if matches!(self.js_retry, Some(t) if Instant::now() >= t) {
            self.js_retry = None;
            self.start_ensure();
        }
        if self.inflight.is_some() || self.outbox.is_empty() || self.js_state == Js::Checking {
            return;
        }
        if matches!(self.retry_at, Some(t) if Instant::now() < t) {
            return;
        }
        self.retry_at = None;
        self.send_batch().await;
    }

    /// The batch in flight is stored: take it out of the outbox.
    fn confirmed(&mut self) {
        self.inflight = None;
        self.ack_misses = 0;
        let n = self.outbox.confirm() as u64;
        self.stats.published.fetch_add(n, Ordering::Relaxed);
        self.stats
            .queued
            .store(self.outbox.len() as u64, Ordering::Relaxed);
        if self.outbox.is_empty() && (self.outage_logged || self.overflow_logged) {
            info!(
                dropped_total = self.outbox.dropped(),
                "bus queue flushed after the outage"
            );
            self.outage_logged = false;
            self.overflow_logged = false;
        }
    }

    fn on_ack(&mut self, payload: &[u8]) {
        // A marker from an abandoned batch (or a forged one) proves
        // nothing about this one.
        if self.inflight.as_ref().is_some_and(|f| confirms(f, payload)) {
            self.confirmed();
        }
    }

    async fn on_timer(&mut self) {
        let Some(f) = &mut self.inflight else {
            return; // a retry pause or a state poll: pump runs next
        };
        if Instant::now() < f.deadline {
            return;
        }
        // On one live connection a marker cannot get lost, so resending
        // there would only pile up duplicates: keep waiting, and every
        // second miss replace the connection. Its Disconnected/Connected
        // events send the batch again.
        f.deadline = Instant::now() + ACK_TIMEOUT;
        self.ack_misses += 1;
        warn!(
            misses = self.ack_misses,
            queued = self.outbox.len(),
            "NATS has not confirmed events in time"
        );
        if self.ack_misses.is_multiple_of(2) && self.connected() {
            warn!("NATS server stopped answering; reconnecting");
            let _ = timeout(HANDOFF_TIMEOUT, self.client.force_reconnect()).await;
        }
    }
}

/// The next marker, or never once the subscription is gone.
async fn next_ack(acks: &mut Option<Subscriber>) -> Option<async_nats::Message> {
    match acks {
        Some(s) => match s.next().await {
            Some(m) => Some(m),
            None => {
                // The client closed; without markers nothing can be
                // confirmed, which the ack timeout reports.
                *acks = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_marker_confirms() {
        let f = Inflight {
            marker: 7,
            token: marker_token(7),
            deadline: Instant::now(),
        };
        assert!(confirms(&f, &f.token));
        // The guesses a forger could make without reading our inbox.
        for forged in ["7", "7.", "8", ""] {
            assert!(!confirms(&f, forged.as_bytes()), "{forged:?}");
        }
        assert_ne!(marker_token(7), f.token, "every batch has its own token");
        // A JetStream batch has no marker: nothing on the inbox confirms it.
        let js = Inflight {
            token: Bytes::new(),
            ..f
        };
        assert!(!confirms(&js, b""));
    }
}
