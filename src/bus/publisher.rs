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
//! confirmation: plain at-most-once NATS.)

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Event as NatsEvent, Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::outbox::{Outbox, Outgoing};
use super::presence::{self, Kind};
use super::wire::{encode, Common, IdGen};
use super::{BusStats, Subjects, STOP_DEADLINE};
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
/// While events wait and no connection event arrives, look at the
/// connection state this often anyway (a lost notification must not strand
/// the queue).
const STATE_POLL: Duration = Duration::from_secs(1);

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
    /// Marker of the batch in flight and when to give up on it.
    inflight: Option<(u64, Instant)>,
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
        Publisher {
            shared,
            client,
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
        }
    }

    /// Publishes until `stop`, then flushes for at most [`STOP_DEADLINE`].
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
                _ = tokio::time::sleep_until(wake) => self.on_timer().await,
                _ = heartbeat.tick() => self.heartbeat_pending = true,
            }
        }
        self.finish(rx, conn_rx).await;
    }

    /// When the loop must wake up without any input.
    fn wake_at(&self) -> Instant {
        if let Some((_, deadline)) = self.inflight {
            return deadline;
        }
        if let Some(t) = self.retry_at {
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
        let payload = encode(ev, &common, self.ids.next_id());
        let subject = Subject::from(self.subjects.event(ev.kind));
        self.push(Outgoing { subject, payload });
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
        if self.inflight.is_some() || self.outbox.is_empty() {
            return;
        }
        if matches!(self.retry_at, Some(t) if Instant::now() < t) {
            return;
        }
        self.retry_at = None;
        self.send_batch().await;
    }

    /// Hands the front of the outbox and a marker to the client.
    async fn send_batch(&mut self) {
        self.next_marker += 1;
        let marker = self.next_marker;
        let client = self.client.clone();
        let ack_subject = self.ack_subject.clone();
        let confirm = self.confirm;
        let batch: Vec<Outgoing> = self.outbox.send(BATCH).cloned().collect();
        let handoff = async {
            for (i, m) in batch.iter().enumerate() {
                if let Err(e) = client.publish(m.subject.clone(), m.payload.clone()).await {
                    return Err((i, e));
                }
            }
            if !confirm {
                return Ok(());
            }
            client
                .publish(ack_subject, Bytes::from(marker.to_string()))
                .await
                .map_err(|e| (batch.len(), e))
        };
        match timeout(HANDOFF_TIMEOUT, handoff).await {
            Ok(Ok(())) if self.confirm => {
                self.inflight = Some((marker, Instant::now() + ACK_TIMEOUT));
            }
            Ok(Ok(())) => {
                // No confirmations possible: handed over counts as sent.
                let n = self.outbox.confirm() as u64;
                self.stats.published.fetch_add(n, Ordering::Relaxed);
                self.stats
                    .queued
                    .store(self.outbox.len() as u64, Ordering::Relaxed);
            }
            Ok(Err((i, e))) => {
                self.outbox.unsend();
                use async_nats::client::PublishErrorKind as K;
                if matches!(e.kind(), K::MaxPayloadExceeded | K::InvalidSubject) && i < batch.len()
                {
                    // The server will never take this one. Those before it
                    // go again with the next batch (duplicates are fine).
                    warn!(error = %e, subject = %batch[i].subject, "event rejected; dropped");
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    self.outbox.remove(i);
                } else {
                    debug!(error = %e, "bus hand-off failed; retrying");
                    self.retry_at = Some(Instant::now() + RETRY_PAUSE);
                }
            }
            Err(_) => {
                debug!("bus hand-off timed out; retrying");
                self.outbox.unsend();
                self.retry_at = Some(Instant::now() + RETRY_PAUSE);
            }
        }
    }

    fn on_ack(&mut self, payload: &[u8]) {
        let Some((marker, _)) = self.inflight else {
            return;
        };
        // A marker from an abandoned batch proves nothing about this one.
        if payload != marker.to_string().as_bytes() {
            return;
        }
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

    async fn on_timer(&mut self) {
        let Some((marker, deadline)) = self.inflight else {
            return; // a retry pause or a state poll: pump runs next
        };
        if Instant::now() < deadline {
            return;
        }
        // On one live connection a marker cannot get lost, so resending
        // there would only pile up duplicates: keep waiting, and every
        // second miss replace the connection. Its Disconnected/Connected
        // events send the batch again.
        self.ack_misses += 1;
        self.inflight = Some((marker, Instant::now() + ACK_TIMEOUT));
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

    fn on_conn_event(&mut self, ev: NatsEvent) {
        match ev {
            NatsEvent::Connected => {
                self.stats.connects.fetch_add(1, Ordering::Relaxed);
                let info = self.client.server_info();
                // The client does not say which listed server it reached;
                // with one listed, that is the one (the server's own idea of
                // its address is often 0.0.0.0).
                let servers = &self.shared.config().bus.servers;
                let url = match servers.as_slice() {
                    [one] => one.clone(),
                    _ => format!("nats://{}:{}", info.host, info.port),
                };
                info!(
                    server_name = %info.server_name,
                    queued = self.outbox.len(),
                    "bus: connected to {url}"
                );
                self.hello_pending = true;
                // A batch in flight on a connection that was lost goes again
                // on the new one. `Disconnected` already did that when it
                // came first; a `Connected` that arrives with no
                // `Disconnected` since the last one is either the first
                // connection's own event reaching us after we already
                // published on it (resending would only duplicate) or a
                // replacement we were not told about (resend to be safe).
                if self.connected_once && !self.disconnected_since {
                    self.inflight = None;
                    self.outbox.unsend();
                }
                self.connected_once = true;
                self.disconnected_since = false;
                self.retry_at = None;
                self.ack_misses = 0;
            }
            NatsEvent::Disconnected => {
                warn!(
                    queued = self.outbox.len(),
                    "bus lost NATS; events wait in the queue"
                );
                self.outage_logged = true;
                self.disconnected_since = true;
                self.inflight = None;
                self.outbox.unsend();
            }
            NatsEvent::ClientError(e) => {
                // Every failed reconnect attempt lands here: warn once per
                // outage, the rest at debug.
                if self.outage_logged {
                    debug!(error = %e, "NATS connection attempt failed");
                } else if !self.connected_once && nobody_there(&e) {
                    // Running without NATS is a supported way to run (the
                    // sample config does, on a fresh machine): say so once,
                    // plainly, and keep trying in the background.
                    self.outage_logged = true;
                    let servers = self.shared.config().bus.servers.join(", ");
                    info!(error = %e, "bus: no NATS server at {servers} yet; events wait in the queue until one answers");
                } else {
                    self.outage_logged = true;
                    let servers = self.shared.config().bus.servers.join(",");
                    warn!(error = %e, %servers, "cannot reach NATS; events wait in the queue");
                }
            }
            NatsEvent::ServerError(e) => {
                let msg = e.to_string();
                if self.confirm
                    && msg.contains("Permissions Violation")
                    && msg.contains(self.ack_subject.as_str())
                {
                    // Without our inbox we cannot get confirmations; plain
                    // NATS delivery (at most once) is still better than a
                    // queue that never drains.
                    self.confirm = false;
                    self.inflight = None;
                    self.outbox.unsend();
                    warn!(error = %e, "no permission for the publisher's _INBOX subject: events are sent without confirmation");
                } else {
                    warn!(error = %e, "NATS server error");
                }
            }
            NatsEvent::LameDuckMode => info!("NATS server is entering lame duck mode"),
            NatsEvent::SlowConsumer(sid) => warn!(sid, "NATS slow consumer"),
            NatsEvent::Draining | NatsEvent::Closed => debug!(event = %ev, "NATS"),
        }
    }

    /// After `stop`: take the last events (`proxy.stop` among them), add
    /// the presence goodbye and deliver what we can before the deadline.
    async fn finish(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        mut conn_rx: mpsc::Receiver<NatsEvent>,
    ) {
        while let Ok(ev) = rx.try_recv() {
            self.enqueue(&ev);
        }
        let bye = presence::message(
            Kind::Goodbye,
            &self.shared,
            &self.subjects,
            &self.stats,
            &mut self.presence_ids,
        );
        self.push(Outgoing {
            subject: Subject::from(self.subjects.presence()),
            payload: bye,
        });
        // Hello and heartbeats are pointless now; the goodbye is queued.
        self.hello_pending = false;
        let deadline = Instant::now() + STOP_DEADLINE;
        // In the middle of an outage, waiting the whole deadline would only
        // delay the exit; a reconnect that is about to happen gets a moment.
        let give_up_unconnected = Instant::now() + UNCONNECTED_GRACE;
        while !self.outbox.is_empty() && Instant::now() < deadline {
            if !self.connected() && Instant::now() >= give_up_unconnected {
                break;
            }
            self.heartbeat_pending = false;
            self.pump().await;
            let wake = self
                .wake_at()
                .min(deadline)
                .min(Instant::now() + Duration::from_millis(50));
            tokio::select! {
                Some(ev) = conn_rx.recv() => {
                    self.on_conn_event(ev);
                    self.hello_pending = false;
                }
                Some(m) = next_ack(&mut self.acks) => self.on_ack(&m.payload),
                _ = tokio::time::sleep_until(wake) => self.on_timer().await,
            }
        }
        if self.outbox.is_empty() {
            debug!("bus: everything published");
        } else if !self.connected_once {
            // No NATS ever answered: said once at start already.
            info!(
                left = self.outbox.len(),
                "bus: no NATS server answered; events not published"
            );
        } else {
            warn!(
                left = self.outbox.len(),
                "bus: NATS unreachable at shutdown; events not published"
            );
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

/// A failed connection attempt that only says no server answered (refused,
/// timed out, no such host), as opposed to one that found a server and was
/// turned away (authorization, TLS), which the operator must hear about.
/// async-nats reports the kind only as text (`ConnectErrorKind`'s Display).
fn nobody_there(e: &async_nats::ClientError) -> bool {
    let s = e.to_string();
    ["IO error", "timed out", "DNS error"]
        .iter()
        .any(|k| s.ends_with(k))
}
