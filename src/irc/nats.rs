//! The relay's NATS connection: options from `[bus]`, and requests that
//! expect one answer or gather the answers of every instance.
//!
//! async-nats reconnects by itself (with its own backoff, capped at 4 s)
//! and re-subscribes after a reconnect; `retry_on_initial_connect` makes a
//! relay started before NATS wait for it instead of exiting.

use std::time::Duration;

use anyhow::Context;
use async_nats::connection::State;
use async_nats::Client;
use futures::StreamExt;
use serde_json::Value;
use tracing::{info, warn};

use crate::config::Bus;

/// Connects (in the background if NATS is not up yet).
pub async fn connect(bus: &Bus) -> anyhow::Result<Client> {
    anyhow::ensure!(
        !bus.servers.is_empty(),
        "holdfast irc needs the bus: set [bus] servers"
    );
    // The proxy's own options: the same auth and TLS keys mean the same.
    let o = crate::bus::connect_options(bus, "holdfast-irc")
        .await?
        .retry_on_initial_connect()
        .event_callback(|ev| async move {
            match ev {
                async_nats::Event::Connected => info!("NATS connected"),
                async_nats::Event::Disconnected => warn!("NATS disconnected; reconnecting"),
                other => info!(event = %other, "NATS"),
            }
        });
    let servers = crate::bus::server_addrs(bus)?;
    o.connect(servers)
        .await
        .context("cannot set up the NATS connection")
}

/// True while connected to a NATS server.
pub fn is_up(c: &Client) -> bool {
    c.connection_state() == State::Connected
}

/// Publishes `payload` on `subject` and gathers JSON answers until
/// `timeout`, or earlier once every instance in `expect` has answered.
pub async fn gather(
    c: &Client,
    subject: String,
    payload: Value,
    timeout: Duration,
    expect: &[String],
) -> anyhow::Result<Vec<Value>> {
    let inbox = c.new_inbox();
    let mut sub = c.subscribe(inbox.clone()).await?;
    c.publish_with_reply(subject, inbox, payload.to_string().into())
        .await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out: Vec<Value> = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await {
        let v: Value = serde_json::from_slice(&m.payload)
            .unwrap_or_else(|_| serde_json::json!({"error": "answer is not JSON"}));
        out.push(v);
        let all = !expect.is_empty()
            && expect
                .iter()
                .all(|e| out.iter().any(|v| v["instance"].as_str() == Some(e)));
        if all {
            break;
        }
    }
    let _ = sub.unsubscribe().await;
    Ok(out)
}

/// One request, one answer.
pub async fn request(
    c: &Client,
    subject: String,
    payload: Value,
    timeout: Duration,
) -> anyhow::Result<Value> {
    let m = tokio::time::timeout(timeout, c.request(subject, payload.to_string().into()))
        .await
        .map_err(|_| anyhow::anyhow!("no answer"))?
        .map_err(|e| match e.kind() {
            async_nats::RequestErrorKind::NoResponders => anyhow::anyhow!("no such instance"),
            async_nats::RequestErrorKind::TimedOut => anyhow::anyhow!("no answer"),
            _ => anyhow::anyhow!("{e}"),
        })?;
    serde_json::from_slice(&m.payload).context("the answer is not JSON")
}
