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

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, Event as NatsEvent, Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::{interval_at, timeout, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::presence::{self, Kind};
use super::{rfc3339, BusStats, Subjects, SCHEMA_VERSION, STOP_DEADLINE};
use crate::events::Event;
use crate::secret::Secret;
use crate::state::Shared;

/// Events per confirmed batch.
const BATCH: usize = 256;
/// How long the server may take to confirm a batch before it is resent.
/// Two misses in a row force a reconnect: a server that stopped reading is
/// not worth waiting for (async-nats's own pings take longer to notice).
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

/// One message ready to go.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Where it goes.
    pub subject: Subject,
    /// The JSON body.
    pub payload: Bytes,
}

/// The bounded FIFO that holds events until the server confirmed them. Its
/// front `inflight` entries have been sent and await confirmation.
#[derive(Debug)]
pub struct Outbox {
    items: VecDeque<Outgoing>,
    cap: usize,
    inflight: usize,
    dropped: u64,
}

impl Outbox {
    /// An empty outbox holding at most `cap` messages.
    pub fn new(cap: usize) -> Self {
        Outbox {
            items: VecDeque::new(),
            cap: cap.max(1),
            inflight: 0,
            dropped: 0,
        }
    }

    /// Appends `m`; when full, drops the oldest first. Returns true if one
    /// was dropped.
    pub fn push(&mut self, m: Outgoing) -> bool {
        let mut dropped = false;
        if self.items.len() >= self.cap {
            self.items.pop_front();
            // If the dropped one was in flight, its confirmation now covers
            // one entry fewer.
            self.inflight = self.inflight.saturating_sub(1);
            self.dropped += 1;
            dropped = true;
        }
        self.items.push_back(m);
        dropped
    }

    /// Marks the first `n` entries as sent.
    fn send(&mut self, n: usize) -> impl Iterator<Item = &Outgoing> {
        self.inflight = n.min(self.items.len());
        self.items.iter().take(self.inflight)
    }

    /// The server confirmed what is in flight: remove it. Returns how many.
    pub fn confirm(&mut self) -> usize {
        let n = self.inflight;
        self.items.drain(..n);
        self.inflight = 0;
        n
    }

    /// What was in flight will be sent again.
    pub fn unsend(&mut self) {
        self.inflight = 0;
    }

    /// Drops entry `i` (one the server will never accept). Only while
    /// nothing is in flight.
    fn remove(&mut self, i: usize) {
        debug_assert_eq!(self.inflight, 0);
        self.items.remove(i);
    }

    /// Messages waiting (in flight included).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Messages dropped by overflow so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// Unique ids: `{run}-{n}`, a random per-process prefix and a sequence
/// number, so ids never repeat across restarts and instances. Events get
/// consecutive numbers in emission order, so a consumer that sees a gap
/// knows the outage queue overflowed; presence messages number on their
/// own (`{run}-p{n}`) and leave no gaps in the events.
#[derive(Debug)]
pub struct IdGen {
    run: u64,
    tag: &'static str,
    seq: u64,
}

impl IdGen {
    /// A generator with a fresh random prefix.
    pub fn new() -> Self {
        IdGen {
            run: rand::random(),
            tag: "",
            seq: 0,
        }
    }

    /// A generator with the same prefix numbering separately under `tag`.
    pub fn sibling(&self, tag: &'static str) -> Self {
        IdGen {
            run: self.run,
            tag,
            seq: 0,
        }
    }

    /// The next id.
    pub fn next_id(&mut self) -> String {
        self.seq += 1;
        format!("{:016x}-{}{}", self.run, self.tag, self.seq)
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

/// The common fields every bus message carries.
#[derive(Debug, Clone)]
pub struct Common<'a> {
    /// `bus.instance`.
    pub instance: &'a str,
    /// `game`.
    pub game: &'a str,
    /// `bus.publish_ip`.
    pub publish_ip: bool,
    /// Configured secrets, blanked from string fields should one ever slip
    /// into an event (a config error message quoting a value, say).
    pub secrets: &'a [&'a Secret],
}

/// The JSON body of `ev`: its fields, then the common fields (which win
/// over an event field of the same name).
pub fn encode(ev: &Event, common: &Common<'_>, id: String) -> Bytes {
    let mut m: Map<String, Value> = ev.fields.clone();
    if !common.publish_ip {
        m.remove("ip");
    }
    for v in m.values_mut() {
        scrub(v, common.secrets);
    }
    m.insert("type".into(), ev.kind.into());
    m.insert("id".into(), id.into());
    m.insert("time".into(), rfc3339(ev.time).into());
    m.insert("instance".into(), common.instance.into());
    m.insert("game".into(), common.game.into());
    m.insert("v".into(), SCHEMA_VERSION.into());
    // Serialising a Map of plain values cannot fail.
    Bytes::from(serde_json::to_vec(&Value::Object(m)).unwrap_or_default())
}

/// Replaces every configured secret inside string values with `***`.
fn scrub(v: &mut Value, secrets: &[&Secret]) {
    match v {
        Value::String(s) => {
            for sec in secrets {
                // Very short secrets would blank innocent text; they are
                // not worth protecting this way anyway.
                if sec.expose().len() >= 4 && s.contains(sec.expose()) {
                    *s = s.replace(sec.expose(), "***");
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| scrub(x, secrets)),
        Value::Object(o) => o.values_mut().for_each(|x| scrub(x, secrets)),
        _ => {}
    }
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
    /// Marker of the batch in flight and when to give up on it.
    inflight: Option<(u64, Instant)>,
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
                info!(
                    server = %format!("{}:{}", info.host, info.port),
                    server_name = %info.server_name,
                    queued = self.outbox.len(),
                    "bus connected to NATS"
                );
                self.hello_pending = true;
                // Whatever was in flight may be lost with the old
                // connection: send it again on the new one.
                self.inflight = None;
                self.outbox.unsend();
                self.retry_at = None;
                self.ack_misses = 0;
            }
            NatsEvent::Disconnected => {
                warn!(
                    queued = self.outbox.len(),
                    "bus lost NATS; events wait in the queue"
                );
                self.outage_logged = true;
                self.inflight = None;
                self.outbox.unsend();
            }
            NatsEvent::ClientError(e) => {
                // Every failed reconnect attempt lands here: warn once per
                // outage, the rest at debug.
                if self.outage_logged {
                    debug!(error = %e, "NATS connection attempt failed");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(n: u32) -> Outgoing {
        Outgoing {
            subject: Subject::from("s"),
            payload: Bytes::from(n.to_string()),
        }
    }

    fn contents(o: &Outbox) -> Vec<String> {
        o.items
            .iter()
            .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn overflow_drops_the_oldest_and_counts() {
        let mut o = Outbox::new(3);
        for i in 1..=5 {
            o.push(msg(i));
        }
        assert_eq!(contents(&o), ["3", "4", "5"]);
        assert_eq!(o.dropped(), 2);
    }

    #[test]
    fn confirm_removes_only_what_was_in_flight() {
        let mut o = Outbox::new(10);
        for i in 1..=4 {
            o.push(msg(i));
        }
        assert_eq!(o.send(2).count(), 2);
        o.push(msg(5));
        assert_eq!(o.confirm(), 2);
        assert_eq!(contents(&o), ["3", "4", "5"]);
        // Unsent means sent again from the front, in order.
        o.send(10).count();
        o.unsend();
        assert_eq!(o.send(1).next().unwrap().payload, "3");
    }

    #[test]
    fn overflow_while_in_flight_shrinks_the_confirmation() {
        let mut o = Outbox::new(3);
        for i in 1..=3 {
            o.push(msg(i));
        }
        o.send(2).count();
        o.push(msg(4)); // drops "1", which was in flight
        assert_eq!(o.confirm(), 1); // only "2" is confirmed
        assert_eq!(contents(&o), ["3", "4"]);
    }

    #[test]
    fn ids_are_unique_and_ordered() {
        let mut a = IdGen::new();
        let mut b = IdGen::new();
        let (a1, a2, b1) = (a.next_id(), a.next_id(), b.next_id());
        assert_ne!(a1, a2);
        assert_ne!(a1, b1);
        assert!(a1.ends_with("-1") && a2.ends_with("-2"));
        let mut p = a.sibling("p");
        assert_eq!(p.next_id(), format!("{}p1", &a1[..a1.len() - 1]));
    }

    #[test]
    fn encode_adds_common_fields_hides_ip_and_secrets() {
        let pw = Secret::new("hunter22");
        let secrets = [&pw];
        let common = Common {
            instance: "i1",
            game: "G",
            publish_ip: false,
            secrets: &secrets,
        };
        let ev = Event::new("config.reloaded")
            .with("ok", false)
            .with("error", "bad value hunter22 here")
            .with("ip", "10.0.0.1")
            .with("type", "spoofed");
        let v: Value = serde_json::from_slice(&encode(&ev, &common, "x-1".into())).unwrap();
        assert_eq!(v["type"], "config.reloaded");
        assert_eq!(v["id"], "x-1");
        assert_eq!(v["instance"], "i1");
        assert_eq!(v["game"], "G");
        assert_eq!(v["v"], SCHEMA_VERSION);
        assert_eq!(v["error"], "bad value *** here");
        assert!(v.get("ip").is_none());
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        let with_ip = Common {
            publish_ip: true,
            ..common
        };
        let v: Value = serde_json::from_slice(&encode(&ev, &with_ip, "x-2".into())).unwrap();
        assert_eq!(v["ip"], "10.0.0.1");
    }
}
