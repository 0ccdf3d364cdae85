//! Figures for the front doors (issue 15), in one run: bulk MiB/s and
//! round-trip p50/p99 through plain telnet, telnet over TLS and WebSocket
//! (telnet subprotocol), and KiB of proxy memory per idle telnet, TLS and
//! WebSocket connection, silent and then logged in. Not a test (it asserts
//! only that the runs completed): run it in release,
//!
//! ```text
//! cargo nextest run --release --locked --test doors_bench --run-ignored only --no-capture
//! ```
//!
//! Memory is measured the way `scripts/bench.sh` measures it (see
//! `benches/bench/idle.rs`): a fresh proxy for each way in, its RSS once
//! settled with no player, then with `IDLE_N` players who connected, got the
//! connect screen and said nothing, then with the same players logged in;
//! growth over `IDLE_N`. (It used to count 200 logged-in players against a
//! baseline taken after the first one, with no settling: 7.9 KiB where the
//! bench said 2.3, mostly the allocator's start-up costs spread over 200.)

mod common;
#[path = "doors/conn.rs"]
mod conn;

use std::time::{Duration, Instant};

use common::certs::make_cert;
use common::*;
use conn::*;

/// Bytes pulled per bulk repetition.
const BULK: u64 = 32 << 20;
const BULK_REPS: usize = 3;
const RTT_N: usize = 2000;
const IDLE_N: usize = 1000;
/// Least time between the last connection and an RSS reading.
const SETTLE_MIN: Duration = Duration::from_secs(2);
/// Most time to wait for the RSS to stop moving.
const SETTLE_MAX: Duration = Duration::from_secs(15);

/// Reads until `marker` arrived; bytes read.
async fn drain_until<W: Wire>(w: &mut W, marker: &[u8]) -> u64 {
    let mut total = 0u64;
    let mut tail: Vec<u8> = Vec::new();
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < until, "marker never came");
        let b = w.recv().await.expect("connection open");
        total += b.len() as u64;
        tail.extend_from_slice(&b);
        if tail.windows(marker.len()).any(|x| x == marker) {
            return total;
        }
        let keep = tail.len().saturating_sub(marker.len());
        tail.drain(..keep);
    }
}

async fn figures<W: Wire>(name: &str, c: &mut Conn<W>) {
    // Bulk: the game spams, then answers a marker.
    let mut rates = Vec::new();
    for rep in 0..BULK_REPS {
        let marker = format!("bulk-done-{rep}");
        let t0 = Instant::now();
        c.send(&format!("spam {BULK}")).await;
        c.send(&format!("think {marker}")).await;
        let n = drain_until(&mut c.w, marker.as_bytes()).await;
        let s = t0.elapsed().as_secs_f64();
        assert!(n >= BULK);
        rates.push(n as f64 / s / (1 << 20) as f64);
    }
    rates.sort_by(f64::total_cmp);
    // Round trips: one line out, its one-line answer back.
    let mut rtts = Vec::with_capacity(RTT_N);
    for i in 0..RTT_N + 100 {
        let marker = format!("rt{i}x");
        let t0 = Instant::now();
        c.send(&format!("think {marker}")).await;
        drain_until(&mut c.w, marker.as_bytes()).await;
        if i >= 100 {
            rtts.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    rtts.sort_by(f64::total_cmp);
    let pct = |p: f64| rtts[((rtts.len() as f64 * p) as usize).min(rtts.len() - 1)];
    println!(
        "| {name} | {:.0} | {:.0} | {:.0} |",
        rates[rates.len() / 2],
        pct(0.50),
        pct(0.99)
    );
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run it in release, see the file's header"]
async fn front_door_figures() {
    let dir = TempDir::new("doors-bench");
    make_cert(&dir, "a");
    let game = Game::start(&dir, &[]);
    let cfg = config_for(
        &[&game],
        &format!(
            "[listen]\naddrs = [\"127.0.0.1:0\"]\ntls_addrs = [\"127.0.0.1:0\"]\nws_addrs = [\"127.0.0.1:0\"]\n\
             max_per_ip = 100000\n[limits]\nconn_rate_per_ip = 0.0\ninput_lines_per_sec = 0.0\nmax_unauthenticated = 100000\n\
             [tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            dir.path("a.pem").display().to_string(),
            dir.path("a.key").display().to_string(),
        ),
    );
    let proxy = Proxy::start_with(&dir, &cfg, "holdfast=warn", &[]);

    println!(
        "| way in | bulk MiB/s (median of {BULK_REPS} x {} MiB) | RTT p50 µs | RTT p99 µs |",
        BULK >> 20
    );
    println!("| --- | --- | --- | --- |");
    let s = TcpStream::connect(proxy.addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut plain = Conn::new(PlainWire(s));
    plain.login("Alice", "alicepw").await;
    figures("telnet", &mut plain).await;
    let (w, _) = tls_connect(&dir, proxy.door("tls"), "127.0.0.1").await;
    let mut tls = Conn::new(w);
    tls.login("Alice", "alicepw").await;
    figures("telnet over TLS", &mut tls).await;
    let (mut ws, _) = ws_player(
        proxy.door("ws"),
        "127.0.0.1",
        &["telnet.mudstandards.org"],
        &[],
    )
    .await;
    ws.login("Alice", "alicepw").await;
    figures("WebSocket (telnet subprotocol)", &mut ws).await;
    drop((plain, tls, ws));

    drop(proxy);

    // Memory per idle connection: a fresh proxy for each way in, so none
    // reuses what another (or the bulk runs) freed.
    println!();
    println!(
        "| idle connections ({IDLE_N}) | KiB each, silent | KiB each, logged in | RSS after they left ÷ before |"
    );
    println!("| --- | --- | --- | --- |");
    for kind in ["telnet", "telnet over TLS", "WebSocket"] {
        let proxy = Proxy::start_with(&dir, &cfg, "holdfast=warn", &[]);
        let pid = proxy.pid();
        let before = settled_rss_kib(pid).await;
        let mut keep: Vec<Box<dyn Idle>> = Vec::new();
        for _ in 0..IDLE_N {
            let mut c: Box<dyn Idle> = match kind {
                "telnet" => {
                    let s = TcpStream::connect(proxy.addr).await.unwrap();
                    s.set_nodelay(true).unwrap();
                    Box::new(Conn::new(PlainWire(s)))
                }
                "telnet over TLS" => {
                    let (w, _) = tls_connect(&dir, proxy.door("tls"), "127.0.0.1").await;
                    Box::new(Conn::new(w))
                }
                _ => {
                    let (c, _) = ws_player(
                        proxy.door("ws"),
                        "127.0.0.1",
                        &["telnet.mudstandards.org"],
                        &[],
                    )
                    .await;
                    Box::new(c)
                }
            };
            c.screen().await;
            keep.push(c);
        }
        let silent = settled_rss_kib(pid).await;
        for c in keep.iter_mut() {
            c.log_in().await;
        }
        let logged = settled_rss_kib(pid).await;
        // They leave with QUIT: a dropped link would be kept detached.
        for c in keep.iter_mut() {
            c.quit().await;
        }
        drop(keep);
        let left = settled_rss_kib(pid).await;
        let per = |kib: u64| kib.saturating_sub(before) as f64 / IDLE_N as f64;
        println!(
            "| {kind} | {:.2} | {:.2} | {:.2} |",
            per(silent),
            per(logged),
            left as f64 / before as f64
        );
    }
}

/// One step of an idle player (boxed: the trait is used as an object).
type Step<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

/// A player connection of any kind, for the idle figures.
trait Idle {
    /// Waits for the connect screen.
    fn screen(&mut self) -> Step<'_>;
    /// Logs in.
    fn log_in(&mut self) -> Step<'_>;
    /// Types QUIT and waits for the close.
    fn quit(&mut self) -> Step<'_>;
}

impl<W: Wire> Idle for Conn<W> {
    fn screen(&mut self) -> Step<'_> {
        Box::pin(async move {
            self.expect("to connect").await;
        })
    }
    fn log_in(&mut self) -> Step<'_> {
        Box::pin(async move {
            self.send("connect Alice alicepw").await;
            self.expect("Last connect was from").await;
            self.send("think login-settled").await;
            self.expect("login-settled").await;
        })
    }
    fn quit(&mut self) -> Step<'_> {
        Box::pin(async move {
            self.send("QUIT").await;
            self.expect_closed().await;
        })
    }
}

/// The proxy's RSS in KiB once it stopped moving (as the bench reads it).
async fn settled_rss_kib(pid: u32) -> u64 {
    let t0 = Instant::now();
    tokio::time::sleep(SETTLE_MIN).await;
    let mut last = rss_kib(pid);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rss_kib(pid);
        if now.abs_diff(last) * 500 < last || t0.elapsed() >= SETTLE_MAX {
            return now;
        }
        last = now;
    }
}

use tokio::net::TcpStream;
