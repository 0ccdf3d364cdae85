//! The NATS bus: publishes events (placeholder until the bus work lands).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::events::Event;
use crate::state::Shared;

/// Publishes events until `stop`.
pub async fn run(_shared: Arc<Shared>, mut rx: mpsc::Receiver<Event>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            e = rx.recv() => if e.is_none() { break },
        }
    }
}

/// `holdfast status`.
pub async fn status_command(_cfg: &Config, _json: bool) -> anyhow::Result<()> {
    anyhow::bail!("holdfast status needs the bus, which is not built yet")
}
