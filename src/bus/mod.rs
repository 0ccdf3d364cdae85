//! The NATS bus (SPEC "Bus (NATS)"): events out, requests in, presence.
//!
//! [`run`] is one task that owns the NATS client. It never makes the proxy
//! wait: the client connects (and re-connects, failing over between the
//! listed cluster nodes) in the background, and events reach the task over
//! a bounded channel that sessions `try_send` into.
//!
//! | file | its one job |
//! | --- | --- |
//! | `publisher.rs` | the task: events and presence out, confirmations, reconnects |
//! | `publisher/conn.rs` | its reactions to connection events and the stream check |
//! | `publisher/send.rs` | handing a batch over: with a marker, or to JetStream |
//! | `publisher/finish.rs` | delivering what is left at shutdown |
//! | `outbox.rs` | the bounded outage queue (drops the oldest when full) |
//! | `wire.rs` | event ids and JSON bodies with the common fields |
//! | `jetstream.rs` | the events stream (`bus.jetstream`): create, publish with ids |
//! | `rpc.rs` | requests in: `{prefix}.rpc.{instance\|all}.{method}` |
//! | `presence.rs` | hello / heartbeat / goodbye messages on `{prefix}.presence` |
//! | `status.rs` | `holdfast status`: ask every instance, print a table |
//!
//! Wire format: every message is a JSON object with `type`, `id` (unique,
//! so consumers can drop the duplicates an outage may cause), `time`
//! (RFC 3339, UTC), `instance`, `game` and `v` (the schema version,
//! [`SCHEMA_VERSION`]).

mod jetstream;
mod outbox;
mod presence;
mod publisher;
mod rpc;
mod status;
mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use async_nats::{ConnectOptions, ServerAddr};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::config::{self, Config};
use crate::events::Event;
use crate::state::Shared;

pub use jetstream::{
    context as jetstream_context, create_with_replicas, ensure_stream, replica_candidates,
    stream_subject, valid_stream_name, EnsureError, Ensured, DEFAULT_STREAM,
    DEFAULT_STREAM_MAX_AGE, DUPLICATE_WINDOW,
};
pub use status::{ask_all, render_table, status_command};

/// Version of the JSON layout of events, presence messages and replies
/// (the `v` field). Bumped when a field changes meaning or disappears;
/// new fields do not bump it.
pub const SCHEMA_VERSION: u64 = 1;

/// The request methods every instance serves.
pub const METHODS: &[&str] = &[
    "status", "sessions", "failover", "announce", "reload", "upgrade",
];

pub use crate::config::{DEFAULT_RPC_ALLOW, RPC_METHODS};

/// The instance token that addresses every instance at once
/// (`{prefix}.rpc.all.{method}`).
pub const ALL: &str = "all";

/// How long the publisher keeps trying to deliver the last events and the
/// presence goodbye when the proxy stops.
pub const STOP_DEADLINE: Duration = Duration::from_secs(3);

/// How often the client pings the server. async-nats declares a connection
/// dead after two unanswered pings, so this bounds how long a silently
/// vanished server goes unnoticed (the publisher's own ack timeout usually
/// notices sooner).
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// Timeout of one TCP + TLS + NATS handshake with one server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Counters the publisher keeps and `status` reports.
#[derive(Debug, Default)]
pub struct BusStats {
    /// Connected to a NATS server right now.
    pub connected: AtomicBool,
    /// Events waiting in the outage queue.
    pub queued: AtomicU64,
    /// Events the server confirmed.
    pub published: AtomicU64,
    /// Events dropped because the outage queue was full (oldest first).
    pub overflow: AtomicU64,
    /// Events dropped because the server refused them (too large).
    pub rejected: AtomicU64,
    /// Times the client (re)connected.
    pub connects: AtomicU64,
    /// Events go through the JetStream stream right now (`bus.jetstream`
    /// and the stream is usable).
    pub stream: AtomicBool,
    /// Instances seen on the presence subject.
    pub peers: presence::Peers,
}

/// Subjects of one instance.
#[derive(Debug, Clone)]
pub struct Subjects {
    /// `bus.subject_prefix`.
    pub prefix: String,
    /// `bus.instance`.
    pub instance: String,
}

impl Subjects {
    /// From the bus config.
    pub fn new(bus: &config::Bus) -> Self {
        Subjects {
            prefix: bus.subject_prefix.clone(),
            instance: bus.instance.clone(),
        }
    }

    /// `{prefix}.event.{kind}`.
    pub fn event(&self, kind: &str) -> String {
        format!("{}.event.{kind}", self.prefix)
    }

    /// `{prefix}.presence`.
    pub fn presence(&self) -> String {
        format!("{}.presence", self.prefix)
    }

    /// `{prefix}.rpc.{target}.{method}`; `target` is an instance or [`ALL`].
    pub fn rpc(&self, target: &str, method: &str) -> String {
        format!("{}.rpc.{target}.{method}", self.prefix)
    }
}

/// Runs the bus until `stop`: connects in the background, publishes events
/// from `rx`, serves requests and presence. After `stop` it publishes what
/// is still queued (and the presence goodbye) for at most
/// [`STOP_DEADLINE`], then returns.
pub async fn run(shared: Arc<Shared>, rx: mpsc::Receiver<Event>, stop: CancellationToken) {
    let cfg = shared.config();
    let (conn_tx, conn_rx) = mpsc::channel(64);
    let client = match connect_background(&cfg, conn_tx).await {
        Ok(c) => c,
        Err(e) => {
            // The proxy must run without its bus rather than not at all.
            error!(error = %format!("{e:#}"), "the bus cannot start; events are discarded");
            discard(rx, stop).await;
            return;
        }
    };
    info!(servers = %cfg.bus.servers.join(","), instance = %cfg.bus.instance, "bus: connecting to NATS in the background");
    let stats = Arc::new(BusStats::default());
    let read = stats.clone();
    crate::metrics::metrics().watch_bus(Arc::new(move || crate::metrics::BusGauges {
        queued: read.queued.load(std::sync::atomic::Ordering::Relaxed),
        dropped: read.overflow.load(std::sync::atomic::Ordering::Relaxed)
            + read.rejected.load(std::sync::atomic::Ordering::Relaxed),
    }));
    let subjects = Subjects::new(&cfg.bus);
    let rpc_task = tokio::spawn(rpc::serve(
        shared.clone(),
        client.clone(),
        subjects.clone(),
        stats.clone(),
        stop.clone(),
    ));
    publisher::Publisher::new(shared, client, subjects, stats)
        .await
        .run(rx, conn_rx, stop)
        .await;
    // The request task saw `stop` too; it only has to leave its select.
    let _ = tokio::time::timeout(Duration::from_secs(1), rpc_task).await;
}

/// Drains the channel until stop, so senders never see it full for long.
async fn discard(mut rx: mpsc::Receiver<Event>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            e = rx.recv() => if e.is_none() { return },
        }
    }
}

/// The connect options from `[bus]`: authentication, TLS, timeouts.
/// `name` is the client name the server shows in its monitoring.
pub async fn connect_options(bus: &config::Bus, name: &str) -> anyhow::Result<ConnectOptions> {
    let mut o = ConnectOptions::new()
        .name(name)
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(PING_INTERVAL);
    if let Some(user) = &bus.user {
        let pass = bus
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        o = o.user_and_password(user.clone(), pass);
    }
    if let Some(t) = &bus.token {
        o = o.token(t.expose().to_string());
    }
    if let Some(seed) = &bus.nkey_seed {
        o = o.nkey(seed.expose().trim().to_string());
    }
    if let Some(f) = &bus.credentials_file {
        o = o
            .credentials_file(f)
            .await
            .with_context(|| format!("bus.credentials_file {}", f.display()))?;
    }
    let tls_url = bus.servers.iter().any(|s| s.starts_with("tls://"));
    if bus.tls || tls_url || bus.tls_ca_file.is_some() {
        o = o.require_tls(true);
    }
    if let Some(ca) = &bus.tls_ca_file {
        o = o.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&bus.tls_cert_file, &bus.tls_key_file) {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(o)
}

/// Parses `bus.servers`.
pub fn server_addrs(bus: &config::Bus) -> anyhow::Result<Vec<ServerAddr>> {
    bus.servers
        .iter()
        .map(|s| {
            s.parse::<ServerAddr>()
                .map_err(|e| anyhow::anyhow!("bad NATS server {s:?}: {e}"))
        })
        .collect()
}

/// A client that connects (and keeps re-connecting) in the background, so
/// the proxy starts whether or not NATS is up. Connection events go to
/// `events` without ever blocking the client.
async fn connect_background(
    cfg: &Config,
    events: mpsc::Sender<async_nats::Event>,
) -> anyhow::Result<async_nats::Client> {
    let servers = server_addrs(&cfg.bus)?;
    let opts = connect_options(&cfg.bus, &format!("holdfast:{}", cfg.bus.instance))
        .await?
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |ev| {
            let tx = events.clone();
            async move {
                let _ = tx.try_send(ev);
            }
        });
    // With retry_on_initial_connect this returns at once.
    opts.connect(servers)
        .await
        .context("cannot create the NATS client")
}

/// Back-off between connection attempts: immediate at first (a node of a
/// cluster died: try the next one now), then doubling up to 2 s, with
/// jitter so a fleet of instances does not reconnect in lockstep.
pub fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = (attempts - 1).min(10) as u32;
    let base = Duration::from_millis(50u64.saturating_mul(1 << exp)).min(Duration::from_secs(2));
    let jitter = rand::random_range(0..=base.as_millis() as u64 / 4);
    base + Duration::from_millis(jitter)
}

/// `t` as RFC 3339 in UTC, always with three fractional digits, so the
/// strings are fixed-width and sort like the times they stand for.
pub fn rfc3339(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_with_millis() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_200);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.200Z");
    }

    #[test]
    fn reconnect_delay_grows_and_is_capped() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert!(reconnect_delay(2) >= Duration::from_millis(100));
        for n in 3..50 {
            assert!(reconnect_delay(n) <= Duration::from_millis(2500), "{n}");
        }
    }
}
