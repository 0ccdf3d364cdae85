//! `holdfast irc`: bus events to IRC channels, and `!status` back.
//!
//! Three tasks:
//!
//! - the **bus loop** (here): subscribes to `{prefix}.event.>` and
//!   `{prefix}.presence`, feeds the [`relay::Relay`] state machine, which
//!   turns events into lines (summarising bursts, waiting for an UP's
//!   restores, noticing silent instances), and runs commands;
//! - the **IRC side** ([`conn`]): one connection at a time, reconnecting
//!   with backoff, posting from an outbox that outlives connections, at a
//!   token-bucket pace;
//! - a short task per command, so a slow `!status` never holds up events.
//!
//! # Layout
//!
//! | module | its one job |
//! | --- | --- |
//! | `proto` | IRC messages, text clean-up, masks, SASL payload (no I/O) |
//! | `transport` | TCP or TLS to the server |
//! | `conn` | one connection at a time: reconnects, sending at the paced rate |
//! | `conn/incoming` | what the server says: CAP, SASL, nick fallback, joins, commands |
//! | `outbox` | notices waiting (bounded, outlives connections) and the rate limit |
//! | `relay` | event memory: instances, presence, vanish, logins, summaries |
//! | `relay/updown` | a backend's DOWN and UP; an UP waiting for restores |
//! | `summary` | burst windows |
//! | `format` | templates, defaults, colours |
//! | `commands` | `!status`, `!failover`, `!announce` |
//! | `nats` | the bus connection and requests |
//! | `durable` | events from a subscription or a durable JetStream consumer; the missed backlog |
//!
//! The IRC protocol code is our own and small: the `irc` crate brings its
//! own config format, TLS choice and client model but no reconnect, no
//! outage queue and no SASL flow we would not have to drive by hand; the
//! relay needs about a dozen commands.

pub mod commands;
pub mod conn;
pub mod durable;
pub mod format;
pub mod nats;
pub mod outbox;
pub mod proto;
pub mod relay;
pub mod summary;
pub mod transport;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use conn::{Command, ToIrc};
use outbox::Reply;
use relay::Relay;

/// How often the relay looks at its timers (UPs waiting for restores,
/// summary windows, silent instances).
pub const TICK: Duration = Duration::from_millis(250);
/// Capacity of the channel from the relay to the IRC side (which drains it
/// into its own bounded outbox at once).
const TO_IRC: usize = 1024;
/// Commands waiting for the relay; more are dropped.
const COMMANDS: usize = 32;
/// Events read ahead of the relay.
const EVENTS: usize = 256;
/// How long acking one JetStream event may take.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// The IRC side's task went away: at a stop that is the stop itself (it
/// follows the same token and may end first), not an error.
fn side_stopped(shutdown: &CancellationToken) -> anyhow::Result<()> {
    stopped_or(shutdown, "the IRC side stopped")
}

/// `Ok` when the relay is stopping (what ended did so because of it), else
/// the error `what`.
fn stopped_or(shutdown: &CancellationToken, what: &str) -> anyhow::Result<()> {
    if shutdown.is_cancelled() {
        Ok(())
    } else {
        Err(anyhow::anyhow!("{what}"))
    }
}

/// `holdfast irc`: runs until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Some(irc) = cfg.irc.clone() else {
        anyhow::bail!("{}: no [irc] section", cfg.path.display());
    };
    anyhow::ensure!(
        !irc.channels.is_empty(),
        "{}: irc.channels is empty: nowhere to post",
        cfg.path.display()
    );
    let irc = Arc::new(irc);
    let prefix = cfg.bus.subject_prefix.clone();
    let client = nats::connect(&cfg.bus).await?;
    // With JetStream the feed task makes the stream and the consumer once
    // NATS is there; without, the subscription is made here so that a
    // refusal stops the relay at once.
    let plain = if cfg.bus.jetstream {
        None
    } else {
        Some(
            client
                .subscribe(format!("{prefix}.event.>"))
                .await
                .map_err(|e| anyhow::anyhow!("cannot subscribe to events: {e}"))?,
        )
    };
    let (ev_tx, mut events) = mpsc::channel(EVENTS);
    let feed = tokio::spawn(durable::feed(
        client.clone(),
        cfg.bus.clone(),
        durable::consumer_name(&irc),
        plain,
        ev_tx,
        shutdown.clone(),
    ));
    let mut presence = client
        .subscribe(format!("{prefix}.presence"))
        .await
        .map_err(|e| anyhow::anyhow!("cannot subscribe to presence: {e}"))?;
    info!(subjects = %format!("{prefix}.event.>, {prefix}.presence"), jetstream = cfg.bus.jetstream, "bus subscribed");

    let mut relay = Relay::new(&irc);
    let mut backlog = durable::Backlog::new(time::OffsetDateTime::now_utc());
    let (to_irc, irc_rx) = mpsc::channel(TO_IRC);
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(COMMANDS);
    let irc_task = tokio::spawn(conn::run(
        irc.clone(),
        relay.formats().clone(),
        irc_rx,
        cmd_tx,
        shutdown.clone(),
    ));
    // Targets with a command running: one at a time each, so a channel
    // cannot pile up requests.
    let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
    let admin_enabled = !irc.admins.is_empty() || !irc.admin_accounts.is_empty();

    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = 'main: loop {
        // The JetStream message whose notices are being queued, acked once
        // they are.
        let mut acks = None;
        // The consumer has delivered all it had: a missed backlog is over.
        let mut drained = false;
        let notices = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            // Subscriber streams and mpsc receivers are cancel-safe.
            m = events.recv() => match m {
                Some(m) => {
                    let wall = time::OffsetDateTime::now_utc();
                    let out = match serde_json::from_slice(&m.payload) {
                        Ok(v) => relay.on_event(&v, Instant::now(), wall),
                        Err(e) => {
                            debug!(subject = %m.subject, err = %e, "event is not JSON");
                            Vec::new()
                        }
                    };
                    drained = matches!(m.ack, Some((_, 0)));
                    acks = m.ack.map(|(msg, _)| msg);
                    out
                }
                None => break stopped_or(&shutdown, "the event feed ended"),
            },
            m = presence.next() => match m {
                Some(m) => match serde_json::from_slice(&m.payload) {
                    Ok(v) => relay.on_presence(&v, Instant::now(), time::OffsetDateTime::now_utc()),
                    Err(_) => Vec::new(),
                },
                None => break stopped_or(&shutdown, "the NATS presence subscription ended"),
            },
            c = cmd_rx.recv() => {
                if let Some(c) = c {
                    start_command(c, &irc, &client, &prefix, cfg.bus.request_timeout, relay.instance_names(), &busy, &to_irc, admin_enabled);
                }
                Vec::new()
            }
            _ = tick.tick() => {
                let now = Instant::now();
                relay.on_bus(nats::is_up(&client), now);
                let wall = time::OffsetDateTime::now_utc();
                relay.tick(now, wall)
            }
        };
        for n in notices {
            debug!(text = %n.text, "notice");
            let m = if !backlog.is_missed(&n) {
                ToIrc::Notice(n)
            } else if backlog.offer(&n, Instant::now()) {
                ToIrc::Missed(n)
            } else {
                continue;
            };
            // The IRC side drains this channel into its outbox at once,
            // connected or not, so this wait is short.
            if to_irc.send(m).await.is_err() {
                break 'main side_stopped(&shutdown);
            }
        }
        let summary = backlog.due(Instant::now(), drained, time::OffsetDateTime::now_utc());
        if let Some(n) = summary {
            if to_irc.send(ToIrc::Missed(n)).await.is_err() {
                break 'main side_stopped(&shutdown);
            }
        }
        if let Some(m) = acks {
            // Not acked (NATS gone): the server delivers it again, and the
            // relay posts it twice rather than never.
            match tokio::time::timeout(ACK_TIMEOUT, m.ack()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(error = %e, "event not acked"),
                Err(_) => debug!("event not acked in time"),
            }
        }
    };
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(1), feed).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), irc_task).await;
    result
}

/// Checks and starts one command in its own task.
#[allow(clippy::too_many_arguments)]
fn start_command(
    c: Command,
    irc: &Arc<crate::config::Irc>,
    client: &async_nats::Client,
    prefix: &str,
    timeout: Duration,
    known: Vec<String>,
    busy: &Arc<Mutex<HashSet<String>>>,
    to_irc: &mpsc::Sender<ToIrc>,
    admin_enabled: bool,
) {
    let Some(cmd) = commands::parse(&c.text) else {
        return;
    };
    let reply = |text: String| {
        let _ = to_irc.try_send(ToIrc::Reply(Reply {
            target: c.reply_to.clone(),
            text,
        }));
    };
    if commands::is_admin_only(&cmd) {
        // `-` for no services account, like `user=-` in the session logs.
        let account = c.account.as_deref().unwrap_or("-");
        if let Err(why) = commands::allowed(irc, &c.mask, c.account.as_deref()) {
            warn!(from = %c.mask, %account, command = %c.text, "command refused");
            reply(format!("{}: {why}", c.nick));
            return;
        }
        info!(from = %c.mask, %account, command = %c.text, "admin command");
    }
    let key = proto::fold(&c.reply_to);
    // The lock is only held for a set insert or remove; a poisoned lock
    // means a panic elsewhere, and the set is still usable.
    if !busy
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key.clone())
    {
        debug!(target = %c.reply_to, "command ignored: one is already running there");
        return;
    }
    let ctx = commands::Ctx {
        client: client.clone(),
        prefix: prefix.to_string(),
        timeout,
        known,
    };
    let (busy, to_irc) = (busy.clone(), to_irc.clone());
    tokio::spawn(async move {
        let lines = commands::execute(&ctx, cmd, admin_enabled).await;
        for text in lines {
            let _ = to_irc
                .send(ToIrc::Reply(Reply {
                    target: c.reply_to.clone(),
                    text,
                }))
                .await;
        }
        busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    });
}
