//! The soak's view of the NATS bus: a subscriber that counts the proxy's
//! events (surviving nats-server restarts), and requests (`status`,
//! `failover`, `announce`) sent from the chaos thread.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde_json::Value;

/// Subject prefix and instance name in the soak's proxy config.
pub const PREFIX: &str = "soak.holdfast";
/// The proxy's `bus.instance`.
pub const INSTANCE: &str = "soak-1";
/// How long a request waits for its reply.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// What the subscriber saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Seen {
    /// Distinct events (by `id`), by `type`.
    pub by_type: BTreeMap<String, u64>,
    /// Distinct events.
    pub unique: u64,
    /// Events seen again (a batch re-sent after a cut: allowed, by id).
    pub repeats: u64,
    /// Highest event number per proxy run (ids are `{run}-{n}`).
    pub max_n: BTreeMap<String, u64>,
    #[serde(skip)]
    ids: HashSet<String>,
}

impl Seen {
    /// Event numbers never seen: published while this subscriber was itself
    /// cut off by a nats-server restart (core NATS does not keep them), or
    /// dropped by the proxy (its `status` counts those).
    pub fn missed(&self) -> u64 {
        let expected: u64 = self.max_n.values().sum();
        expected.saturating_sub(self.unique)
    }

    fn add(&mut self, v: &Value) {
        let id = v["id"].as_str().unwrap_or_default().to_string();
        if !self.ids.insert(id.clone()) {
            self.repeats += 1;
            return;
        }
        self.unique += 1;
        let kind = v["type"].as_str().unwrap_or("?").to_string();
        *self.by_type.entry(kind).or_default() += 1;
        if let Some((run, n)) = id.rsplit_once('-') {
            if let Ok(n) = n.parse::<u64>() {
                let m = self.max_n.entry(run.to_string()).or_default();
                *m = (*m).max(n);
            }
        }
    }
}

/// A NATS client for the soak and what its subscriber has seen.
#[derive(Clone)]
pub struct Bus {
    /// The client (reconnects on its own).
    pub client: async_nats::Client,
    /// Events seen so far.
    pub seen: Arc<Mutex<Seen>>,
    /// A runtime handle, for the chaos thread's blocking calls.
    pub rt: tokio::runtime::Handle,
}

impl Bus {
    /// Connects (retrying in the background) and subscribes to every event.
    pub async fn start(url: &str) -> Result<Bus, String> {
        let client = async_nats::ConnectOptions::new()
            .name("holdfast-soak")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(|_| Duration::from_millis(100))
            .request_timeout(Some(REQUEST_TIMEOUT))
            .connect(url)
            .await
            .map_err(|e| format!("nats connect: {e}"))?;
        let mut sub = client
            .subscribe(format!("{PREFIX}.event.>"))
            .await
            .map_err(|e| format!("nats subscribe: {e}"))?;
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, client.flush()).await;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s2 = seen.clone();
        // Ends when the client is dropped (the stream ends).
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Ok(v) = serde_json::from_slice::<Value>(&m.payload) {
                    s2.lock().unwrap_or_else(|e| e.into_inner()).add(&v);
                }
            }
        });
        Ok(Bus {
            client,
            seen,
            rt: tokio::runtime::Handle::current(),
        })
    }

    /// A request to the proxy (`method` on its instance subject).
    pub async fn request(&self, method: &str, body: Value) -> Result<Value, String> {
        let subject = format!("{PREFIX}.rpc.{INSTANCE}.{method}");
        let payload = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let r = tokio::time::timeout(
            REQUEST_TIMEOUT + Duration::from_secs(1),
            self.client.request(subject, payload.into()),
        )
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
        let v: Value = serde_json::from_slice(&r.payload).map_err(|e| e.to_string())?;
        match v.get("error") {
            Some(e) => Err(e.to_string()),
            None => Ok(v),
        }
    }

    /// [`Bus::request`] from a thread outside the runtime.
    pub fn request_blocking(&self, method: &str, body: Value) -> Result<Value, String> {
        self.rt.block_on(self.request(method, body))
    }

    /// A snapshot of what the subscriber saw.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
