//! `[metrics]` (issue 16): `/metrics` parses as Prometheus text and its
//! values follow a scripted outage; `/healthz` flips to 503 and back; a
//! slow client does not block a scrape.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use prometheus_parse::{Sample, Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::*;

const OFFLINE: &str = "Test MUSH is down. Your connection is being held";
const ONLINE: &str = "You have been logged back in.";
const METRICS: &str = "[metrics]\naddr = \"127.0.0.1:0\"\n";

/// One HTTP/1.1 GET: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect to metrics");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .expect("metrics answered in time")
        .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("# HELP holdfast_sessions "), "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("/metrics parses")
}

fn num(s: &Sample) -> f64 {
    match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
        Value::Summary(_) => panic!("no summaries here"),
    }
}

/// The value of `name` with (at least) `labels`; panics if absent.
fn value(m: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(num)
        .unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape"))
}

/// Waits until `/healthz` answers `want`.
async fn healthz_becomes(addr: SocketAddr, want: u16) {
    for _ in 0..200 {
        if get(addr, "/healthz").await.0 == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("/healthz never answered {want}");
}

/// Waits until a scrape satisfies `pred`, returns it.
async fn scrape_until(addr: SocketAddr, what: &str, pred: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..200 {
        let m = scrape(addr).await;
        if pred(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the metrics never showed {what}");
}

#[tokio::test]
async fn metrics_follow_an_outage_and_healthz_flips() {
    let dir = TempDir::new("metrics-story");
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], METRICS));
    let maddr = proxy.metrics_addr().await;

    assert_eq!(get(maddr, "/livez").await.0, 200);
    assert_eq!(get(maddr, "/nope").await.0, 404);
    healthz_becomes(maddr, 200).await;
    let m = scrape(maddr).await;
    assert_eq!(value(&m, "holdfast_backend_up", &[("backend", "b0")]), 1.0);
    // Without `bus.cluster` there is no cluster to report on.
    assert!(
        !m.samples
            .iter()
            .any(|s| s.metric.starts_with("holdfast_cluster_")),
        "cluster series without bus.cluster"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&m, "holdfast_build_info", &[("version", version)]),
        1.0
    );
    assert!(value(&m, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(
        value(
            &m,
            "holdfast_probes_total",
            &[("backend", "b0"), ("result", "ok")]
        ) >= 1.0
    );
    assert_eq!(
        value(&m, "holdfast_sessions", &[("state", "relaying")]),
        0.0
    );

    // Two players log in.
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;
    let listener = proxy.addr.to_string();
    let m = scrape_until(maddr, "two players relaying", |m| {
        value(m, "holdfast_sessions", &[("state", "relaying")]) == 2.0
    })
    .await;
    assert_eq!(
        value(&m, "holdfast_connections_total", &[("listener", &listener)]),
        2.0
    );
    assert_eq!(value(&m, "holdfast_sessions", &[("state", "held")]), 0.0);

    // The game dies: both are held, the backend is down, health says so.
    game.kill();
    alice.expect(OFFLINE).await;
    bob.expect(OFFLINE).await;
    healthz_becomes(maddr, 503).await;
    let m = scrape_until(maddr, "two players held", |m| {
        value(m, "holdfast_sessions", &[("state", "held")]) == 2.0
    })
    .await;
    assert_eq!(value(&m, "holdfast_backend_up", &[("backend", "b0")]), 0.0);
    assert_eq!(
        value(
            &m,
            "holdfast_backend_transitions_total",
            &[("backend", "b0"), ("to", "down")]
        ),
        1.0
    );
    assert_eq!(
        value(&m, "holdfast_outage_duration_seconds_count", &[]),
        0.0
    );

    // It returns: both are logged back in, the outage was measured once.
    game.restart();
    alice.expect(ONLINE).await;
    bob.expect(ONLINE).await;
    healthz_becomes(maddr, 200).await;
    let m = scrape_until(maddr, "two players relaying again", |m| {
        value(m, "holdfast_sessions", &[("state", "relaying")]) == 2.0
    })
    .await;
    assert_eq!(value(&m, "holdfast_backend_up", &[("backend", "b0")]), 1.0);
    assert_eq!(
        value(
            &m,
            "holdfast_backend_transitions_total",
            &[("backend", "b0"), ("to", "up")]
        ),
        1.0
    );
    assert_eq!(
        value(&m, "holdfast_outage_duration_seconds_count", &[]),
        1.0
    );
    assert_eq!(value(&m, "holdfast_sessions", &[("state", "held")]), 0.0);
    // Counters only go up.
    assert_eq!(
        value(&m, "holdfast_connections_total", &[("listener", &listener)]),
        2.0
    );
    dashboard_uses_only_these(&m);
}

/// Every series the Grafana dashboard in docs/ queries is one the proxy
/// serves (histograms by their `_bucket`/`_sum`/`_count`).
fn dashboard_uses_only_these(m: &Scrape) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-holdfast.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(exprs.len() > 10, "the dashboard's queries were found");
    let served: std::collections::HashSet<&str> =
        m.samples.iter().map(|s| s.metric.as_str()).collect();
    let mut checked = 0;
    for e in &exprs {
        for w in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if !(w.starts_with("holdfast_") || w.starts_with("process_")) {
                continue;
            }
            let base = w
                .strip_suffix("_bucket")
                .or_else(|| w.strip_suffix("_count"))
                .or_else(|| w.strip_suffix("_sum"))
                .unwrap_or(w);
            assert!(
                served.contains(w) || served.contains(base),
                "the dashboard queries {w}, which /metrics does not serve"
            );
            checked += 1;
        }
    }
    assert!(checked >= exprs.len(), "every query names a series");
}

#[tokio::test]
async fn refusals_are_counted_by_reason() {
    let dir = TempDir::new("metrics-refused");
    let game = Game::start(&dir, &[]);
    let extra = format!("{METRICS}[listen]\naddrs = [\"127.0.0.1:0\"]\nmax_sessions = 1\n");
    let proxy = Proxy::start(&dir, &config_for(&[&game], &extra));
    let maddr = proxy.metrics_addr().await;
    let _alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let mut second = Client::connect(proxy.addr).await;
    second.expect_closed().await;
    let m = scrape_until(maddr, "the refusal", |m| {
        value(
            m,
            "holdfast_connections_refused_total",
            &[("reason", "full")],
        ) == 1.0
    })
    .await;
    for other in ["per_ip", "unauthenticated", "rate"] {
        assert_eq!(
            value(
                &m,
                "holdfast_connections_refused_total",
                &[("reason", other)]
            ),
            0.0
        );
    }
}

#[tokio::test]
async fn a_slow_client_does_not_block_scraping() {
    let dir = TempDir::new("metrics-loris");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], METRICS));
    let maddr = proxy.metrics_addr().await;
    // Half a request head, then nothing.
    let mut loris = TcpStream::connect(maddr).await.unwrap();
    loris
        .write_all(b"GET /metrics HTTP/1.1\r\nHo")
        .await
        .unwrap();
    // An oversized head is refused, not buffered.
    let mut big = TcpStream::connect(maddr).await.unwrap();
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-A: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = big.write_all(huge.as_bytes()).await;
    for _ in 0..3 {
        scrape(maddr).await;
        assert_eq!(get(maddr, "/livez").await.0, 200);
    }
    let mut buf = Vec::new();
    let r = tokio::time::timeout(WAIT, big.read_to_end(&mut buf)).await;
    let answer = String::from_utf8_lossy(&buf);
    assert!(
        matches!(r, Ok(Err(_))) || answer.starts_with("HTTP/1.1 431"),
        "an oversized head is refused: {answer}"
    );
    // The slow one is cut once its time is up.
    let mut rest = Vec::new();
    let r = tokio::time::timeout(WAIT, loris.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "the slow client was never disconnected");
}
