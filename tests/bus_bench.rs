//! Bus benchmarks (ignored by default; they print figures, assert nothing
//! about speed). Run in release:
//!
//! ```sh
//! cargo nextest run --release --test bus_bench --run-ignored ignored-only --no-capture
//! ```
//!
//! - `publisher_throughput`: events per second the publisher sustains into
//!   a real nats-server, counted at a subscriber.
//! - `publisher_throughput_jetstream_vs_plain`: the same, through a
//!   JetStream stream (`bus.jetstream = true`, acks from the stream, file
//!   storage) against plain publishes, on the same `-js` server build.
//! - `relay_latency_bus_on_off`: a player's round-trip latency through the
//!   proxy with the bus off, on, and on with NATS down (events queueing),
//!   while other players connect and leave (two events each).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bus::*;
use common::nats::*;
use common::*;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use holdfast::config::Config;
use holdfast::events::{Event, EventSink};
use holdfast::state::Shared;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --run-ignored and --release"]
async fn publisher_throughput() {
    const N: u64 = 200_000;
    let nats = NatsServer::start();
    let text = format!(
        "game = \"Bench\"\n[[backends]]\nname = \"b0\"\naddr = \"127.0.0.1:1\"\n{}",
        bus_toml(&[nats.url()], "bench", "queue_size = 300000")
    );
    let cfg = Config::parse(Path::new("bench.toml"), &text).unwrap();
    let (tx, rx) = mpsc::channel(holdfast::EVENT_CHANNEL);
    let (ftx, _frx) = mpsc::channel(1);
    let shared = Arc::new(Shared::new(
        cfg,
        EventSink::new(tx.clone()),
        ftx,
        CancellationToken::new(),
    ));

    let sub_client = connect(&nats.url()).await;
    let mut sub = sub_client
        .subscribe(format!("{PREFIX}.event.bench.tick"))
        .await
        .unwrap();
    sub_client.flush().await.unwrap();
    let got = Arc::new(AtomicU64::new(0));
    let g2 = got.clone();
    let counter = tokio::spawn(async move {
        while sub.next().await.is_some() {
            if g2.fetch_add(1, Ordering::Relaxed) + 1 == N {
                break;
            }
        }
    });

    let w = Watch::start(&nats.url()).await;
    let stop = CancellationToken::new();
    let bus = tokio::spawn(holdfast::bus::run(shared.clone(), rx, stop.clone()));
    // Wait for the connection (the presence hello) before timing.
    w.wait("hello", |m| m.kind() == "presence.hello").await;

    let t0 = Instant::now();
    for i in 0..N {
        // A blocking send measures what the publisher can take; sessions
        // use try_send and would drop instead.
        tx.send(
            Event::new("bench.tick")
                .with("session", i)
                .with("user", "Someone"),
        )
        .await
        .unwrap();
    }
    let sent = t0.elapsed();
    tokio::time::timeout(Duration::from_secs(120), counter)
        .await
        .expect("all events delivered")
        .unwrap();
    let all = t0.elapsed();
    println!(
        "publisher: {N} events accepted in {:.2}s, delivered in {:.2}s: {:.0} events/s sustained (end to end, confirmed batches of 256)",
        sent.as_secs_f64(),
        all.as_secs_f64(),
        N as f64 / all.as_secs_f64()
    );
    stop.cancel();
    let _ = bus.await;
    assert_eq!(got.load(Ordering::Relaxed), N);
}

/// Publishes `n` events through the bus task into a fresh `-js` server,
/// with or without `bus.jetstream`. Returns (events/s delivered to a
/// subscriber, events/s stored in the stream, when `jetstream`).
async fn throughput(jetstream: bool, n: u64) -> (f64, Option<f64>) {
    let dir = TempDir::new("bench-js");
    let nats = NatsServer::start_js(&dir);
    let extra = format!(
        "queue_size = 300000
jetstream = {jetstream}"
    );
    let text = format!(
        "game = \"Bench\"\n[[backends]]\nname = \"b0\"\naddr = \"127.0.0.1:1\"\n{}",
        bus_toml(&[nats.url()], "bench", &extra)
    );
    let cfg = Config::parse(Path::new("bench.toml"), &text).unwrap();
    let (tx, rx) = mpsc::channel(holdfast::EVENT_CHANNEL);
    let (ftx, _frx) = mpsc::channel(1);
    let shared = Arc::new(Shared::new(
        cfg,
        EventSink::new(tx.clone()),
        ftx,
        CancellationToken::new(),
    ));
    let sub_client = connect(&nats.url()).await;
    let mut sub = sub_client
        .subscribe(format!("{PREFIX}.event.bench.tick"))
        .await
        .unwrap();
    sub_client.flush().await.unwrap();
    let counter = tokio::spawn(async move {
        let mut got = 0;
        while sub.next().await.is_some() {
            got += 1;
            if got == n {
                break;
            }
        }
    });
    let w = Watch::start(&nats.url()).await;
    let stop = CancellationToken::new();
    let bus = tokio::spawn(holdfast::bus::run(shared.clone(), rx, stop.clone()));
    w.wait("hello", |m| m.kind() == "presence.hello").await;
    let js = async_nats::jetstream::new(sub_client.clone());
    if jetstream {
        // The stream is made right after connecting; time from when it is.
        let t0 = Instant::now();
        while js.get_stream("HOLDFAST_EVENTS").await.is_err() {
            assert!(t0.elapsed() < WAIT, "no stream");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let t0 = Instant::now();
    for i in 0..n {
        tx.send(
            Event::new("bench.tick")
                .with("session", i)
                .with("user", "Someone"),
        )
        .await
        .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(120), counter)
        .await
        .expect("all events delivered")
        .unwrap();
    let delivered = n as f64 / t0.elapsed().as_secs_f64();
    let stored = if jetstream {
        let mut s = js.get_stream("HOLDFAST_EVENTS").await.unwrap();
        loop {
            let m = s.info().await.unwrap().state.messages;
            if m >= n {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "only {m} stored");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Some(n as f64 / t0.elapsed().as_secs_f64())
    } else {
        None
    };
    stop.cancel();
    let _ = bus.await;
    (delivered, stored)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --run-ignored and --release"]
async fn publisher_throughput_jetstream_vs_plain() {
    const N: u64 = 100_000;
    for round in 1..=2 {
        let (plain, _) = throughput(false, N).await;
        let (js_delivered, js_stored) = throughput(true, N).await;
        let js_stored = js_stored.expect("stored rate");
        println!(
            "round {round}: {N} events: plain {plain:.0} events/s; JetStream {js_delivered:.0} events/s delivered, {js_stored:.0} events/s stored (file storage, acked per event, batches of 256): {:.0}% of plain",
            100.0 * js_stored / plain
        );
        assert!(plain > 0.0 && js_stored > 0.0);
    }
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

async fn round_trips(addr: std::net::SocketAddr, n: usize) -> Stats {
    let mut c = Client::login(addr, "Alice", "alicepw").await;
    // Warm up.
    for i in 0..50 {
        c.send(&format!("think warm{i}")).await;
        c.expect(&format!("warm{i}")).await;
    }
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        c.send(&format!("think rt{i}x")).await;
        c.expect(&format!("rt{i}x")).await;
        v.push(t.elapsed());
    }
    v.sort();
    let mean = v.iter().sum::<Duration>() / n as u32;
    Stats {
        p50: v[n / 2],
        p99: v[n * 99 / 100],
        mean,
    }
}

/// Other players arriving and leaving: two events each.
fn churn(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut c = Client::connect(addr).await;
            c.expect("connect <name>").await;
            drop(c);
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run with --run-ignored and --release"]
async fn relay_latency_bus_on_off() {
    const N: usize = 20_000;
    let dir = TempDir::new("bench-latency");
    let game = Game::start(&dir, &[]);
    let nats = NatsServer::start();
    let limits = "[limits]\nconn_rate_per_ip = 0\ninput_lines_per_sec = 0\n";
    let off = Proxy::start_with(&dir, &config_for(&[&game], limits), "warn", &[]);
    let on = Proxy::start_with(
        &dir,
        &config_for(
            &[&game],
            &format!("{limits}{}", bus_toml(&[nats.url()], "bench-on", "")),
        ),
        "warn",
        &[],
    );
    let down_url = format!("nats://127.0.0.1:{}", free_port());
    let down = Proxy::start_with(
        &dir,
        &config_for(
            &[&game],
            &format!("{limits}{}", bus_toml(&[down_url], "bench-down", "")),
        ),
        "warn",
        &[],
    );
    let w = Watch::start(&nats.url()).await;
    w.wait("bench-on's presence", |m| m.json["instance"] == "bench-on")
        .await;

    // Interleaved rounds, so background noise on a shared machine hits
    // every configuration alike.
    let configs = [
        ("bus off", &off),
        ("bus on", &on),
        ("bus on, NATS down", &down),
    ];
    for round in 1..=3 {
        for (name, p) in configs {
            let stop = Arc::new(AtomicBool::new(false));
            let ch = churn(p.addr, stop.clone());
            let t0 = Instant::now();
            let s = round_trips(p.addr, N).await;
            let secs = t0.elapsed().as_secs_f64();
            stop.store(true, Ordering::Relaxed);
            let joins = ch.await.unwrap();
            println!(
                "round {round}, {name:<18}: p50 {:>7.1?}  p99 {:>7.1?}  mean {:>7.1?}  ({N} round trips in {secs:.1}s, {:.0} events/s from players coming and going)",
                s.p50,
                s.p99,
                s.mean,
                joins as f64 * 2.0 / secs
            );
        }
    }
    let published = w
        .all()
        .iter()
        .filter(|m| m.json["instance"] == "bench-on" && m.subject.contains(".event."))
        .count();
    println!("events published by the bus-on proxy: {published}");
    assert!(published > 0);
}
