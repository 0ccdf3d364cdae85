//! Bus test helpers: a NATS watcher that records every message, a
//! JetStream recorder that survives server restarts, requests, and checks
//! of the common event fields.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use serde_json::Value;

use super::nats::NatsServer;
use super::WAIT;

/// Subject prefix the bus tests use.
pub const PREFIX: &str = "hf.test";

/// A `[bus]` section for `servers`.
pub fn bus_toml(servers: &[String], instance: &str, extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "[bus]\nservers = [{}]\nsubject_prefix = \"{PREFIX}\"\ninstance = \"{instance}\"\npresence_interval = \"300ms\"\nrequest_timeout = \"1s\"\n{extra}\n",
        list.join(", ")
    )
}

/// One message seen on the bus.
#[derive(Debug, Clone)]
pub struct Msg {
    pub subject: String,
    pub raw: String,
    pub json: Value,
}

impl Msg {
    fn new(subject: &str, payload: &[u8]) -> Msg {
        let raw = String::from_utf8_lossy(payload).into_owned();
        Msg {
            subject: subject.to_string(),
            json: serde_json::from_str(&raw).unwrap_or(Value::Null),
            raw,
        }
    }

    /// The `type` field.
    pub fn kind(&self) -> &str {
        self.json["type"].as_str().unwrap_or_default()
    }
}

pub async fn connect(url: &str) -> async_nats::Client {
    connect_with(url, async_nats::ConnectOptions::new()).await
}

pub async fn connect_with(url: &str, opts: async_nats::ConnectOptions) -> async_nats::Client {
    tokio::time::timeout(WAIT, opts.connect(url))
        .await
        .expect("connect to nats-server in time")
        .expect("connect to nats-server")
}

/// Waits until JetStream in the cluster of `nodes` can create streams
/// replicated on all of them (its meta leader is elected).
pub async fn wait_js_ready(nodes: &[NatsServer]) {
    let t0 = Instant::now();
    let js = jetstream::new(connect(&nodes[0].url()).await);
    loop {
        let r = js
            .create_stream(jetstream::stream::Config {
                name: "READY".into(),
                subjects: vec!["ready.probe".into()],
                num_replicas: nodes.len(),
                ..Default::default()
            })
            .await;
        if r.is_ok() {
            let _ = js.delete_stream("READY").await;
            return;
        }
        assert!(
            t0.elapsed() < WAIT * 3,
            "JetStream cluster not ready: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Records every message on a subject (through one server).
pub struct Watch {
    pub client: async_nats::Client,
    msgs: Arc<Mutex<Vec<Msg>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Subscribes to `{PREFIX}.>` and returns once the server has the
    /// subscription.
    pub async fn start(url: &str) -> Watch {
        Self::with_client(connect(url).await).await
    }

    pub async fn with_client(client: async_nats::Client) -> Watch {
        let mut sub = client.subscribe(format!("{PREFIX}.>")).await.unwrap();
        client.flush().await.unwrap();
        let msgs = Arc::new(Mutex::new(Vec::new()));
        let m2 = msgs.clone();
        let task = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                m2.lock().unwrap().push(Msg::new(&m.subject, &m.payload));
            }
        });
        Watch { client, msgs, task }
    }

    pub fn all(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap().clone()
    }

    /// Events (not presence, not requests), in arrival order.
    pub fn events(&self) -> Vec<Msg> {
        events_only(self.all())
    }

    /// Waits for a message matching `pred`.
    pub async fn wait(&self, what: &str, pred: impl Fn(&Msg) -> bool) -> Msg {
        wait_for(what, || self.all(), pred).await
    }

    /// Waits for an event of `kind` matching `pred`.
    pub async fn wait_event(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let k = kind.to_string();
        self.wait(kind, |m| {
            m.kind() == k && m.subject.contains(".event.") && pred(&m.json)
        })
        .await
        .json
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn events_only(v: Vec<Msg>) -> Vec<Msg> {
    v.into_iter()
        .filter(|m| m.subject.starts_with(&format!("{PREFIX}.event.")))
        .collect()
}

async fn wait_for(what: &str, all: impl Fn() -> Vec<Msg>, pred: impl Fn(&Msg) -> bool) -> Msg {
    let t0 = Instant::now();
    loop {
        if let Some(m) = all().into_iter().find(|m| pred(m)) {
            return m;
        }
        if t0.elapsed() > WAIT {
            let seen: Vec<String> = all().iter().map(|m| m.raw.clone()).collect();
            panic!("never saw {what} on the bus; saw:\n{}", seen.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A JetStream stream recording `{PREFIX}.event.>` and presence on the
/// server itself, so messages published while no test client is connected
/// (right after a restart) are kept. Needs a server started with `-js`.
pub struct Recorder {
    url: String,
}

impl Recorder {
    pub async fn create(url: &str) -> Recorder {
        let js = jetstream::new(connect(url).await);
        js.create_stream(jetstream::stream::Config {
            name: "HFTEST".into(),
            subjects: vec![format!("{PREFIX}.event.>"), format!("{PREFIX}.presence")],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create the recording stream");
        Recorder {
            url: url.to_string(),
        }
    }

    /// Everything recorded so far, in server order. Reconnects each time,
    /// so it works across server restarts.
    pub async fn all(&self) -> Vec<Msg> {
        let t0 = Instant::now();
        loop {
            match self.try_all().await {
                Ok(v) => return v,
                Err(e) if t0.elapsed() < WAIT => {
                    eprintln!("recorder not ready yet: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot read the recording stream: {e}"),
            }
        }
    }

    async fn try_all(&self) -> Result<Vec<Msg>, String> {
        let client = tokio::time::timeout(Duration::from_secs(2), async_nats::connect(&self.url))
            .await
            .map_err(|_| "connect timeout".to_string())?
            .map_err(|e| e.to_string())?;
        let js = jetstream::new(client);
        let mut stream = js.get_stream("HFTEST").await.map_err(|e| e.to_string())?;
        let state = stream
            .info()
            .await
            .map_err(|e| e.to_string())?
            .state
            .clone();
        let mut out = Vec::new();
        for seq in state.first_sequence..=state.last_sequence {
            if state.messages == 0 {
                break;
            }
            let m = stream
                .get_raw_message(seq)
                .await
                .map_err(|e| e.to_string())?;
            out.push(Msg::new(&m.subject, &m.payload));
        }
        Ok(out)
    }

    /// Waits until a recorded message matches `pred`; returns all recorded.
    pub async fn wait(&self, what: &str, pred: impl Fn(&Msg) -> bool) -> Vec<Msg> {
        let t0 = Instant::now();
        loop {
            let all = self.all().await;
            if all.iter().any(&pred) {
                return all;
            }
            if t0.elapsed() > WAIT {
                let seen: Vec<String> = all.iter().map(|m| m.raw.clone()).collect();
                panic!("never recorded {what}; recorded:\n{}", seen.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A request to `{PREFIX}.rpc.{target}.{method}`; the reply as JSON.
pub async fn request(client: &async_nats::Client, target: &str, method: &str, body: &str) -> Value {
    let subject = format!("{PREFIX}.rpc.{target}.{method}");
    let t0 = Instant::now();
    loop {
        // Retry while the instance may still be subscribing.
        match tokio::time::timeout(
            Duration::from_secs(2),
            client.request(subject.clone(), body.to_string().into()),
        )
        .await
        {
            Ok(Ok(m)) => return serde_json::from_slice(&m.payload).expect("JSON reply"),
            other => {
                assert!(t0.elapsed() < WAIT, "no reply to {subject}: {other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Asserts the common fields SPEC requires on an event.
pub fn check_common(m: &Msg, instance: &str, game: &str) {
    let e = &m.json;
    let kind = e["type"]
        .as_str()
        .unwrap_or_else(|| panic!("no type: {}", m.raw));
    assert_eq!(m.subject, format!("{PREFIX}.event.{kind}"), "{}", m.raw);
    assert!(e["id"].as_str().is_some_and(|s| !s.is_empty()), "{}", m.raw);
    let t = e["time"].as_str().unwrap_or_default();
    let rfc3339 = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$").unwrap();
    assert!(rfc3339.is_match(t), "time not RFC 3339 UTC: {}", m.raw);
    assert_eq!(e["instance"], instance, "{}", m.raw);
    assert_eq!(e["game"], game, "{}", m.raw);
    assert_eq!(e["v"], 1, "{}", m.raw);
}

/// The sequence number in an event id (`{run}-{seq}`).
pub fn seq_of(m: &Msg) -> u64 {
    m.json["id"]
        .as_str()
        .and_then(|s| s.rsplit('-').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad id: {}", m.raw))
}

/// Drops repeated ids (an outage may cause duplicates), keeping the first.
pub fn dedup(v: Vec<Msg>) -> Vec<Msg> {
    let mut seen = std::collections::HashSet::new();
    v.into_iter()
        .filter(|m| seen.insert(m.json["id"].as_str().unwrap_or_default().to_string()))
        .collect()
}

/// Asserts no payload contains any of `secrets`.
pub fn assert_no_secrets(msgs: &[Msg], secrets: &[&str]) {
    assert!(!msgs.is_empty(), "nothing to scan");
    for m in msgs {
        for s in secrets {
            assert!(
                !m.raw.contains(s),
                "secret {s:?} in {}: {}",
                m.subject,
                m.raw
            );
        }
    }
}
