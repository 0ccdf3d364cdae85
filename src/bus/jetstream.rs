//! JetStream (SPEC "Durable events"): the events stream that the
//! publisher writes through and `holdfast irc` reads with a durable
//! consumer.
//!
//! Both sides make sure the stream exists ([`ensure_stream`]), so whichever
//! starts first creates it. Events go in with `Nats-Msg-Id` = the event id:
//! a batch sent again after a lost connection is stored once, as long as it
//! comes back within the stream's duplicate window (at least
//! [`DUPLICATE_WINDOW`]).

use std::time::Duration;

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config as StreamConfig, StorageType};
use async_nats::jetstream::{self, Context, ErrorCode};
use async_nats::Client;
use futures::future::join_all;
use std::future::IntoFuture;

use super::outbox::Outgoing;
use crate::config;

pub use crate::config::{valid_stream_name, DEFAULT_STREAM, DEFAULT_STREAM_MAX_AGE};
/// The shortest duplicate window the stream may have: a batch is resent
/// after a reconnect, which takes seconds; two minutes (the server's own
/// default) leaves room for a long one.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Timeout of one JetStream API request and of one publish ack.
pub const API_TIMEOUT: Duration = Duration::from_secs(5);

/// A JetStream context on `client` with our timeouts.
pub fn context(client: Client) -> Context {
    jetstream::ContextBuilder::new()
        .timeout(API_TIMEOUT)
        .build(client)
}

/// Why [`ensure_stream`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnsureError {
    /// The server (or our account on it) has no JetStream.
    Unavailable(String),
    /// Anything else (a timeout, a permission, a stream that cannot be
    /// changed); worth trying again after the next reconnect.
    Other(String),
}

impl std::fmt::Display for EnsureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnsureError::Unavailable(e) | EnsureError::Other(e) => f.write_str(e),
        }
    }
}

/// What [`ensure_stream`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ensured {
    /// The stream was created now.
    pub created: bool,
    /// Its replicas.
    pub replicas: usize,
}

/// `{prefix}.event.>`: what the stream stores.
pub fn stream_subject(bus: &config::Bus) -> String {
    format!("{}.event.>", bus.subject_prefix)
}

/// The replica counts to try for a new stream, best first: `bus.replicas`
/// alone when set; else 3 then 1 when the server is in a cluster, 1 when
/// it is not.
///
/// Why not count the servers a client learns of (`connect_urls`): nodes
/// that do not advertise themselves (`no_advertise`, common behind NAT or
/// a load balancer) tell clients of none, and a three-node cluster would
/// get one copy, lost with its node. The cluster itself says whether it
/// can place 3: creating the stream fails if it cannot, and then one copy
/// is made, with a warning.
pub fn replica_candidates(client: &Client, bus: &config::Bus) -> Vec<usize> {
    match bus.replicas {
        Some(n) => vec![n],
        None if client.server_info().cluster.is_some() => vec![3, 1],
        None => vec![1],
    }
}

/// Creates a stream with the first replica count of `candidates` the
/// JetStream cluster accepts; returns that count. `what` names the stream
/// in the warning when a count is refused.
pub async fn create_with_replicas<
    T,
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>>,
>(
    candidates: &[usize],
    what: &str,
    mut create: impl FnMut(usize) -> F,
) -> Result<usize, String> {
    let mut last = String::from("no replica count to try");
    for (i, &n) in candidates.iter().enumerate() {
        match create(n).await {
            Ok(_) => return Ok(n),
            Err(e) => {
                last = e.to_string();
                if let Some(next) = candidates.get(i + 1) {
                    tracing::warn!(stream = what, replicas = n, error = %last, fallback = next, "JetStream cannot keep that many copies; trying fewer (set bus.replicas to choose)");
                }
            }
        }
    }
    Err(last)
}

/// Makes sure the events stream exists with our subjects, file storage, a
/// duplicate window of at least [`DUPLICATE_WINDOW`] and
/// `bus.stream_max_age`; an existing stream is updated where it falls
/// short (its storage and replicas are left as they are).
pub async fn ensure_stream(client: &Client, bus: &config::Bus) -> Result<Ensured, EnsureError> {
    if !client.server_info().jetstream {
        return Err(EnsureError::Unavailable(
            "the NATS server runs without JetStream".into(),
        ));
    }
    let js = context(client.clone());
    let unavailable = |c: ErrorCode| {
        c == ErrorCode::JETSTREAM_NOT_ENABLED || c == ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT
    };
    let subject = stream_subject(bus);
    match js.get_stream(&bus.stream).await {
        Ok(s) => {
            let info = s.cached_info();
            let mut c = info.config.clone();
            let mut changed = false;
            if !c.subjects.contains(&subject) {
                c.subjects.push(subject);
                changed = true;
            }
            if c.duplicate_window < DUPLICATE_WINDOW {
                c.duplicate_window = DUPLICATE_WINDOW;
                changed = true;
            }
            if c.max_age != bus.stream_max_age {
                c.max_age = bus.stream_max_age;
                changed = true;
            }
            let replicas = c.num_replicas.max(1);
            if changed {
                js.update_stream(c).await.map_err(|e| {
                    EnsureError::Other(format!("cannot update stream {}: {e}", bus.stream))
                })?;
            }
            Ok(Ensured {
                created: false,
                replicas,
            })
        }
        Err(e) => {
            let missing = match e.kind() {
                GetStreamErrorKind::JetStream(je) if unavailable(je.error_code()) => {
                    return Err(EnsureError::Unavailable(format!("JetStream: {je}")))
                }
                GetStreamErrorKind::JetStream(je) => je.error_code() == ErrorCode::STREAM_NOT_FOUND,
                // No server answers the JetStream API: none runs it for us.
                _ if format!("{e:?}").contains("NoResponders") => {
                    return Err(EnsureError::Unavailable(
                        "no JetStream API answers on this NATS account".into(),
                    ))
                }
                _ => false,
            };
            if !missing {
                return Err(EnsureError::Other(format!("stream {}: {e}", bus.stream)));
            }
            let cfg = StreamConfig {
                name: bus.stream.clone(),
                description: Some("holdfast events".into()),
                subjects: vec![subject],
                storage: StorageType::File,
                max_age: bus.stream_max_age,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            };
            let replicas =
                create_with_replicas(&replica_candidates(client, bus), &bus.stream, |n| {
                    js.create_stream(StreamConfig {
                        num_replicas: n,
                        ..cfg.clone()
                    })
                })
                .await
                .map_err(|e| {
                    EnsureError::Other(format!("cannot create stream {}: {e}", bus.stream))
                })?;
            Ok(Ensured {
                created: true,
                replicas,
            })
        }
    }
}

/// What a JetStream batch came to.
#[derive(Debug)]
pub struct BatchAck {
    /// The batch's marker.
    pub marker: u64,
    /// `Ok(duplicates)` when the stream stored every event (`duplicates`
    /// of them were already stored); else what went wrong.
    pub result: Result<usize, String>,
}

/// Publishes `batch` through JetStream (events with their id as
/// `Nats-Msg-Id`; anything without an id, the presence goodbye, plainly)
/// and returns a future that waits for the stream's acks (each bounded
/// by [`API_TIMEOUT`]) and says how many were duplicates. Err: the index
/// of a message the client refused, and why.
pub async fn send_batch(
    js: &Context,
    batch: &[Outgoing],
) -> Result<
    impl std::future::Future<Output = Result<usize, String>> + Send + 'static,
    (usize, String),
> {
    let mut acks = Vec::with_capacity(batch.len());
    for (i, m) in batch.iter().enumerate() {
        match &m.id {
            Some(id) => {
                let p = PublishMessage::build()
                    .payload(m.payload.clone())
                    .message_id(id);
                let ack = js
                    .send_publish(m.subject.clone(), p)
                    .await
                    .map_err(|e| (i, e.to_string()))?;
                acks.push(ack.into_future());
            }
            None => js
                .client()
                .publish(m.subject.clone(), m.payload.clone())
                .await
                .map_err(|e| (i, e.to_string()))?,
        }
    }
    Ok(async move {
        let mut duplicates = 0;
        for r in join_all(acks).await {
            duplicates += usize::from(r.map_err(|e| e.to_string())?.duplicate);
        }
        Ok(duplicates)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn three_copies_or_one_with_a_warning() {
        let mut tried = Vec::new();
        let got = create_with_replicas(&[3, 1], "S", |n| {
            tried.push(n);
            std::future::ready(if n == 3 {
                Err("insufficient resources")
            } else {
                Ok(())
            })
        })
        .await;
        assert_eq!((got, tried), (Ok(1), vec![3, 1]));
        let got =
            create_with_replicas(&[3, 1], "S", |_| std::future::ready(Ok::<_, String>(()))).await;
        assert_eq!(got, Ok(3), "three when the cluster can");
        let got = create_with_replicas(&[5], "S", |_| std::future::ready(Err::<(), _>("no"))).await;
        assert_eq!(got, Err("no".to_string()), "bus.replicas set: no fallback");
    }

    #[test]
    fn stream_names() {
        assert!(valid_stream_name("HOLDFAST_EVENTS"));
        assert!(valid_stream_name("irc-holdfast"));
        for bad in ["", "a.b", "a b", "a*", "a>", "a/b"] {
            assert!(!valid_stream_name(bad), "{bad:?}");
        }
    }
}
