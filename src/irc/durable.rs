//! Where the relay's events come from: a plain subscription to
//! `{prefix}.event.>`, or, with `bus.jetstream`, a durable JetStream
//! consumer on the events stream, so what happens while the relay is away
//! is posted when it returns.
//!
//! The consumer is named after the relay ([`consumer_name`]: its nick and
//! IRC server), so two relays each see every event and a restarted relay
//! picks up where it stopped. Each event is acked once its notices are
//! queued for IRC (the IRC side's outbox keeps them through IRC outages).
//! A new consumer starts with the events published after it: a relay's
//! first start does not replay a week of history.
//!
//! Notices about events from before the relay started are posted late
//! (with their time); after the first [`MISSED_DIRECT`] of them, the rest
//! of the backlog is summed up in one line ([`Backlog`]).

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::{Client, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::format;
use super::outbox::{Notice, Prio};
use crate::bus::{ensure_stream, EnsureError};
use crate::config::{Bus, Irc};

/// Missed notices posted one by one before the rest is summed up.
pub const MISSED_DIRECT: usize = 10;
/// A backlog being summed up is closed once nothing missed came for this
/// long (or the consumer says nothing is pending).
pub const BACKLOG_QUIET: Duration = Duration::from_secs(2);
/// How long the server waits for an ack before delivering an event again.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Events delivered and not yet acked, at most.
const MAX_ACK_PENDING: i64 = 1000;
/// Pause before trying the stream or consumer again after a failure.
const RETRY: Duration = Duration::from_secs(2);
/// After failing this long to use the stream (no permission, say), the
/// relay reads events plainly rather than not at all.
const GIVE_UP: Duration = Duration::from_secs(30);

/// One event for the relay.
#[derive(Debug)]
pub struct Incoming {
    /// Its subject.
    pub subject: String,
    /// Its JSON body.
    pub payload: Bytes,
    /// Through JetStream: the message to ack, and how many more the
    /// consumer had waiting when it was delivered.
    pub ack: Option<(async_nats::jetstream::Message, u64)>,
}

/// The durable consumer's name for this relay: `irc-{nick}-{server}`,
/// with every character a consumer name cannot hold replaced by `_`.
pub fn consumer_name(irc: &Irc) -> String {
    format!("irc-{}-{}", irc.nick, irc.server)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Feeds `tx` until `stop`: from `plain` (no JetStream), or from the
/// durable consumer `name`, falling back to a plain subscription if the
/// server has no JetStream.
pub async fn feed(
    client: Client,
    bus: Bus,
    name: String,
    plain: Option<Subscriber>,
    tx: mpsc::Sender<Incoming>,
    stop: CancellationToken,
) {
    if let Some(sub) = plain {
        forward_plain(sub, &tx, &stop).await;
        return;
    }
    let mut warned = false;
    let mut failing_since: Option<Instant> = None;
    while !stop.is_cancelled() {
        if failing_since.is_some_and(|t| t.elapsed() >= GIVE_UP) {
            warn!(consumer = %name, "cannot read events through JetStream; reading them plainly (events while the relay is away are not posted)");
            match client
                .subscribe(format!("{}.event.>", bus.subject_prefix))
                .await
            {
                Ok(sub) => forward_plain(sub, &tx, &stop).await,
                Err(e) => warn!(error = %e, "cannot subscribe to events"),
            }
            return;
        }
        if !super::nats::is_up(&client) {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
            }
        }
        match ensure_stream(&client, &bus).await {
            Ok(_) => {}
            Err(EnsureError::Unavailable(e)) => {
                warn!(error = %e, "bus.jetstream is on but NATS has no JetStream: events that happen while the relay is away are not posted");
                match client
                    .subscribe(format!("{}.event.>", bus.subject_prefix))
                    .await
                {
                    Ok(sub) => forward_plain(sub, &tx, &stop).await,
                    Err(e) => warn!(error = %e, "cannot subscribe to events"),
                }
                return;
            }
            Err(EnsureError::Other(e)) => {
                failing_since.get_or_insert_with(Instant::now);
                if !warned {
                    warned = true;
                    warn!(error = %e, "JetStream stream not usable yet; retrying");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            }
        }
        let started = Instant::now();
        if let Err(e) = consume(&client, &bus, &name, &tx, &stop).await {
            // A consumer that ran a while and broke is a new failure; one
            // that never started adds to the old one.
            if started.elapsed() >= GIVE_UP {
                failing_since = None;
            }
            failing_since.get_or_insert_with(Instant::now);
            warn!(error = %e, consumer = %name, "JetStream consumer failed; retrying");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}

async fn forward_plain(mut sub: Subscriber, tx: &mpsc::Sender<Incoming>, stop: &CancellationToken) {
    loop {
        // Both branches are cancel-safe (a token, a subscription's next).
        let m = tokio::select! {
            _ = stop.cancelled() => return,
            m = sub.next() => m,
        };
        let Some(m) = m else {
            warn!("the NATS event subscription ended");
            return;
        };
        let inc = Incoming {
            subject: m.subject.to_string(),
            payload: m.payload,
            ack: None,
        };
        if tx.send(inc).await.is_err() {
            return;
        }
    }
}

/// Reads the durable consumer until it fails or `stop`.
async fn consume(
    client: &Client,
    bus: &Bus,
    name: &str,
    tx: &mpsc::Sender<Incoming>,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let js = crate::bus::jetstream_context(client.clone());
    let stream = js.get_stream(&bus.stream).await?;
    let config = pull::Config {
        durable_name: Some(name.to_string()),
        description: Some("holdfast irc relay".into()),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_ack_pending: MAX_ACK_PENDING,
        // A relay that never comes back does not keep its consumer for
        // longer than the stream keeps events.
        inactive_threshold: bus.stream_max_age,
        ..Default::default()
    };
    let mut consumer = stream.get_or_create_consumer(name, config).await?;
    let waiting = consumer.info().await.map(|i| i.num_pending).unwrap_or(0);
    info!(consumer = %name, stream = %bus.stream, waiting, "reading events through JetStream");
    let mut messages = consumer.messages().await?;
    loop {
        // Both branches are cancel-safe (a token, a stream's next).
        let m = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            m = messages.next() => m,
        };
        let m = match m {
            None => anyhow::bail!("the consumer's message stream ended"),
            Some(Err(e)) => {
                // Missed heartbeats while NATS is away: the stream
                // recovers by itself once the connection is back.
                debug!(error = %e, "JetStream consumer");
                continue;
            }
            Some(Ok(m)) => m,
        };
        let pending = m.info().map(|i| i.pending).unwrap_or(0);
        let inc = Incoming {
            subject: m.subject.to_string(),
            payload: m.payload.clone(),
            ack: Some((m, pending)),
        };
        if tx.send(inc).await.is_err() {
            return Ok(());
        }
    }
}

/// The notices about events from before the relay started: the first
/// [`MISSED_DIRECT`] go out (late), the rest are counted into one line.
#[derive(Debug)]
pub struct Backlog {
    /// When the relay started: older notices are missed ones.
    started: OffsetDateTime,
    posted: usize,
    held: usize,
    first: Option<OffsetDateTime>,
    last: Option<OffsetDateTime>,
    last_offer: Option<Instant>,
}

impl Backlog {
    /// A backlog for a relay started at `started`.
    pub fn new(started: OffsetDateTime) -> Backlog {
        Backlog {
            started,
            posted: 0,
            held: 0,
            first: None,
            last: None,
            last_offer: None,
        }
    }

    /// True if `n` is about an event from before the relay started.
    pub fn is_missed(&self, n: &Notice) -> bool {
        n.time < self.started
    }

    /// A missed notice: true means post it (late), false means it was
    /// counted for the summary.
    pub fn offer(&mut self, n: &Notice, now: Instant) -> bool {
        self.last_offer = Some(now);
        if self.posted < MISSED_DIRECT {
            self.posted += 1;
            return true;
        }
        self.held += 1;
        self.first = Some(self.first.map_or(n.time, |f| f.min(n.time)));
        self.last = Some(self.last.map_or(n.time, |l| l.max(n.time)));
        false
    }

    /// The summary line, once the backlog is over (`drained`: the consumer
    /// has nothing more pending) or quiet for [`BACKLOG_QUIET`].
    pub fn due(&mut self, now: Instant, drained: bool, wall: OffsetDateTime) -> Option<Notice> {
        if self.held == 0 {
            return None;
        }
        let quiet = self
            .last_offer
            .is_some_and(|t| now.saturating_duration_since(t) >= BACKLOG_QUIET);
        if !drained && !quiet {
            return None;
        }
        let (first, last) = (self.first?, self.last?);
        let n = std::mem::take(&mut self.held);
        self.first = None;
        self.last = None;
        let (a, b) = (format::clock(first, wall), format::clock(last, wall));
        let when = if a == b { a } else { format!("{a} to {b}") };
        Some(Notice {
            text: format!(
                "... and {n} more notices from while the relay was away ({when}); !status shows where things stand now"
            ),
            prio: Prio::High,
            time: first,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(t: OffsetDateTime) -> Notice {
        Notice {
            text: "x".into(),
            prio: Prio::High,
            time: t,
        }
    }

    #[test]
    fn consumer_names_are_safe() {
        let mut irc = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            "[[backends]]\nname = \"b\"\naddr = \"127.0.0.1:1\"\n[irc]\nchannels = [\"#c\"]\n",
        )
        .unwrap()
        .irc
        .unwrap();
        irc.nick = "hf[bot]".into();
        irc.server = "irc.example.org:6697".into();
        assert_eq!(consumer_name(&irc), "irc-hf_bot_-irc_example_org_6697");
        assert!(crate::bus::valid_stream_name(&consumer_name(&irc)));
    }

    #[test]
    fn backlog_posts_the_first_then_sums_up() {
        let start = OffsetDateTime::now_utc();
        let t0 = Instant::now();
        let mut b = Backlog::new(start);
        assert!(!b.is_missed(&notice(start)));
        let old = start - time::Duration::minutes(30);
        assert!(b.is_missed(&notice(old)));
        let posted = (0..25)
            .filter(|i| b.offer(&notice(old + time::Duration::seconds(*i)), t0))
            .count();
        assert_eq!(posted, MISSED_DIRECT);
        assert!(b.due(t0, false, start).is_none(), "not over yet");
        let s = b.due(t0, true, start).expect("summary once drained");
        assert!(s.text.contains("15 more notices"), "{}", s.text);
        assert_eq!(s.time, old + time::Duration::seconds(10));
        assert!(b.due(t0 + BACKLOG_QUIET, true, start).is_none(), "once");
        // A later burst held back is closed by quiet time.
        b.offer(&notice(old), t0);
        assert!(b.due(t0 + Duration::from_secs(1), false, start).is_none());
        assert!(b.due(t0 + BACKLOG_QUIET, false, start).is_some());
    }
}
