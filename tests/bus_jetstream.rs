//! Durable events (issue 17): `bus.jetstream = true` stores events in a
//! JetStream stream with `Nats-Msg-Id` = the event id, so a batch sent
//! again is stored once; a server without JetStream gets plain publishes.
//! Real nats-server processes (`-js`) on dynamic loopback ports.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::bus::*;
use common::nats::*;
use common::*;

const STREAM: &str = "HOLDFAST_EVENTS";

fn cfg(games: &[&Game], servers: &[String], extra: &str) -> String {
    config_for(games, &bus_toml(servers, "hf1", extra))
}

/// Every message in the events stream, in order.
async fn stream_msgs(url: &str) -> Vec<Msg> {
    let js = jetstream::new(connect(url).await);
    let mut s = js
        .get_stream(STREAM)
        .await
        .expect("the events stream exists");
    let st = s.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    if st.messages == 0 {
        return out;
    }
    for seq in st.first_sequence..=st.last_sequence {
        let m = s.get_raw_message(seq).await.unwrap();
        let raw = String::from_utf8_lossy(&m.payload).into_owned();
        out.push(Msg {
            subject: m.subject.to_string(),
            json: serde_json::from_str(&raw).unwrap(),
            raw,
        });
    }
    out
}

/// Waits until the stream holds a message matching `pred`; returns all.
async fn wait_stream(url: &str, what: &str, pred: impl Fn(&[Msg]) -> bool) -> Vec<Msg> {
    let t0 = Instant::now();
    loop {
        let js = jetstream::new(connect(url).await);
        if js.get_stream(STREAM).await.is_ok() {
            let all = stream_msgs(url).await;
            if pred(&all) {
                return all;
            }
            if t0.elapsed() > WAIT * 3 {
                let seen: Vec<&str> = all.iter().map(|m| m.raw.as_str()).collect();
                panic!("never stored {what}; stored:\n{}", seen.join("\n"));
            }
        }
        assert!(t0.elapsed() < WAIT * 3, "the stream never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bob_closes(m: &[Msg]) -> usize {
    m.iter()
        .filter(|m| m.kind() == "session.close" && m.json["user"] == "Bob")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_is_created_and_a_resent_batch_is_stored_once() {
    let dir = TempDir::new("js-dedup");
    let nodes = js_cluster(&dir, 3);
    let nats = &nodes[0];
    wait_js_ready(&nodes).await;
    // The proxy reaches NATS through a gate that can swallow what the
    // server says: its publishes are stored, their acks never arrive.
    let gate = MuteGate::new(nats.port).await;
    let watch = Watch::start(&nodes[1].url()).await;
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &cfg(
            &[&game],
            &[gate.url()],
            "jetstream = true\nstream_max_age = \"1h\"",
        ),
    );
    let t0 = Instant::now();
    while !proxy.logs().contains("created the JetStream stream") {
        assert!(t0.elapsed() < WAIT, "{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_stream(&nats.url(), "proxy.start", |m| {
        m.iter().any(|m| m.kind() == "proxy.start")
    })
    .await;
    let js = jetstream::new(connect(&nats.url()).await);
    let mut s = js.get_stream(STREAM).await.unwrap();
    let c = s.info().await.unwrap().config.clone();
    assert_eq!(c.subjects, vec![format!("{PREFIX}.event.>")]);
    assert_eq!(c.storage, jetstream::stream::StorageType::File);
    assert!(c.duplicate_window >= Duration::from_secs(120), "{c:?}");
    assert_eq!(c.max_age, Duration::from_secs(3600));
    assert_eq!(c.num_replicas, 3, "one copy per node of the cluster");
    assert!(proxy.logs().contains("created the JetStream stream"));

    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    watch
        .wait_event("session.login", |e| e["user"] == "Alice")
        .await;
    gate.mute(true);
    for i in 0..10 {
        let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;
        bob.send("QUIT").await;
        bob.expect_closed().await;
        alice.send(&format!("say muted {i}")).await;
        alice.expect(&format!("You say, \"muted {i}\"")).await;
    }
    // The stream stored them, the acks were lost: the publisher sends the
    // batch again (after the 5 s ack timeout), and after a second miss
    // replaces the connection and sends it again on the new one.
    wait_stream(&nats.url(), "Bob's 10 closes", |m| bob_closes(m) == 10).await;
    let t0 = Instant::now();
    while !proxy
        .logs()
        .contains("NATS server stopped answering; reconnecting")
    {
        assert!(t0.elapsed() < WAIT * 3, "{}", proxy.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(proxy
        .logs()
        .contains("JetStream did not store events; retrying"));
    gate.mute(false);
    // Once an ack gets through, the queue drains.
    let t0 = Instant::now();
    loop {
        let st = request(&watch.client, "hf1", "status", "").await;
        if st["events"]["queued"] == 0 {
            assert_eq!(st["bus"]["stream"], true, "{st}");
            break;
        }
        assert!(t0.elapsed() < WAIT * 3, "queue never drained: {st}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = stream_msgs(&nats.url()).await;
    let ids: HashSet<&str> = stored
        .iter()
        .map(|m| m.json["id"].as_str().unwrap())
        .collect();
    let sent = watch
        .events()
        .iter()
        .filter(|m| m.kind() == "session.close" && m.json["user"] == "Bob")
        .count();
    eprintln!(
        "Bob's closes published {sent} times, stored {}; stream {} messages, {} ids",
        bob_closes(&stored),
        stored.len(),
        ids.len()
    );
    assert!(sent > 10, "the batch was never sent again ({sent})");
    assert_eq!(bob_closes(&stored), 10);
    assert_eq!(stored.len(), ids.len(), "a resent event was stored twice");
    let connects = proxy.logs().matches("bus: connected to").count();
    assert!(connects >= 2, "no reconnect happened ({connects})");
    for m in &stored {
        check_common(m, "hf1", "Test MUSH");
    }
    alice.send("say still here").await;
    alice.expect("You say, \"still here\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_jetstream_it_says_so_once_and_publishes_plainly() {
    let dir = TempDir::new("js-none");
    let nats = NatsServer::start();
    let watch = Watch::start(&nats.url()).await;
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &cfg(&[&game], &[nats.url()], "jetstream = true"));
    let _alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    watch
        .wait_event("session.login", |e| e["user"] == "Alice")
        .await;
    // Plain publishes are confirmed by the inbox marker, a moment after
    // the watcher saw them.
    let t0 = Instant::now();
    let st = loop {
        let st = request(&watch.client, "hf1", "status", "").await;
        if st["events"]["queued"] == 0 {
            break st;
        }
        assert!(t0.elapsed() < WAIT, "queue never drained: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(st["bus"]["jetstream"], true, "{st}");
    assert_eq!(st["bus"]["stream"], false, "{st}");
    let logs = proxy.logs();
    assert_eq!(logs.matches("NATS has no JetStream").count(), 1, "{logs}");
}
