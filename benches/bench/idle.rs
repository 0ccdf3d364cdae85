//! Memory per idle connection, measured the way an operator would: a proxy
//! process that has carried nothing else, its RSS before any player, then
//! with N players who connected, got the connect screen and said nothing,
//! then with the same N logged in, then after they all left. Each figure is
//! read once the RSS has settled (jemalloc hands freed pages back to the
//! system over seconds, not at once), and divided by N.
//!
//! Why a fresh process: a proxy that just relayed bulk output holds freed
//! pages its allocator has not given back yet, and new sessions land in
//! them for free. Measured after the bulk runs, the same binary showed
//! 2.3 KiB per session where a fresh one shows 9 (docs/benchmarks.md).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::load;
use crate::procs;

/// Least time between the last connection and the RSS reading.
const SETTLE_MIN: Duration = Duration::from_secs(2);
/// Most time to wait for the RSS to stop moving.
const SETTLE_MAX: Duration = Duration::from_secs(15);
/// RSS readings this far apart ...
const SETTLE_STEP: Duration = Duration::from_millis(500);
/// ... that differ by less than this fraction count as settled.
const SETTLE_EPS: f64 = 0.002;
/// Connections opened at once.
const CONCURRENCY: usize = 200;

/// What one proxy's idle run measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Idle {
    /// Connections held.
    pub sessions: usize,
    /// Proxy RSS before the first connection (KiB).
    pub before_kib: f64,
    /// With every connection open, not logged in (KiB).
    pub anon_kib: f64,
    /// With every connection logged in (KiB).
    pub logged_kib: f64,
    /// After every connection closed (KiB).
    pub left_kib: f64,
    /// Anonymous and file-backed RSS before the first connection (KiB).
    pub before_split: (u64, u64),
    /// The same after every connection closed.
    pub left_split: (u64, u64),
    /// Seconds each reading waited for the RSS to settle.
    pub settle_s: Vec<f64>,
}

impl Idle {
    /// KiB per connection, connected and silent.
    pub fn per_anon(&self) -> f64 {
        (self.anon_kib - self.before_kib) / self.sessions as f64
    }

    /// KiB per connection, logged in.
    pub fn per_logged(&self) -> f64 {
        (self.logged_kib - self.before_kib) / self.sessions as f64
    }

    /// RSS after they left over RSS before.
    pub fn left_ratio(&self) -> f64 {
        self.left_kib / self.before_kib
    }
}

/// Waits until `pid`'s RSS stops moving; returns it in KiB and the wait.
pub async fn settled_rss(pid: u32) -> (f64, f64) {
    let t0 = Instant::now();
    tokio::time::sleep(SETTLE_MIN).await;
    let mut last = procs::rss(pid) as f64;
    loop {
        tokio::time::sleep(SETTLE_STEP).await;
        let now = procs::rss(pid) as f64;
        let moved = (now - last).abs() / last.max(1.0);
        last = now;
        if moved < SETTLE_EPS || t0.elapsed() >= SETTLE_MAX {
            return (now / 1024.0, t0.elapsed().as_secs_f64());
        }
    }
}

/// Connects and reads the connect screen; says nothing.
async fn silent(addr: SocketAddr) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut buf = Vec::new();
    let end = load::read_until(
        &mut s,
        &mut buf,
        load::SCREEN_END,
        tokio::time::Instant::now() + load::LOGIN_TIMEOUT,
    )
    .await?;
    buf.drain(..end);
    buf.shrink_to_fit();
    Ok((s, buf))
}

/// Types QUIT and waits (bounded) for the proxy to close the connection.
async fn quit(mut s: TcpStream) {
    use tokio::io::AsyncReadExt;
    if s.write_all(b"QUIT\r\n").await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + load::LOGIN_TIMEOUT;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
    }
}

/// The whole run against the proxy `pid` listening on `addr`.
pub async fn measure(pid: u32, addr: SocketAddr, n: usize, label: &str) -> Idle {
    let mut r = Idle {
        sessions: n,
        ..Idle::default()
    };
    let (before, w) = settled_rss(pid).await;
    r.before_kib = before;
    r.before_split = procs::rss_split(pid);
    r.settle_s.push(w);

    let t0 = Instant::now();
    let conns: Vec<_> = stream::iter(0..n)
        .map(|_| silent(addr))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut conns: Vec<(TcpStream, Vec<u8>)> = conns
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{label}: idle connections: {e}"));
    let took = t0.elapsed().as_secs_f64();
    let (anon, w) = settled_rss(pid).await;
    r.anon_kib = anon;
    r.settle_s.push(w);
    eprintln!(
        "idle {label:8} {n} connected, silent ({took:.1}s): RSS {before:.0} -> {anon:.0} KiB, {:.2} KiB each",
        r.per_anon()
    );

    // The same connections log in.
    let t0 = Instant::now();
    let done: Vec<std::io::Result<()>> = stream::iter(conns.iter_mut().enumerate())
        .map(|(i, (s, buf))| load::login_on(s, buf, format!("idle{i}")))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for d in done {
        d.unwrap_or_else(|e| panic!("{label}: idle logins: {e}"));
    }
    let took = t0.elapsed().as_secs_f64();
    let (logged, w) = settled_rss(pid).await;
    r.logged_kib = logged;
    r.settle_s.push(w);
    eprintln!(
        "idle {label:8} {n} logged in ({took:.1}s): RSS {logged:.0} KiB, {:.2} KiB each",
        r.per_logged()
    );

    // They leave the way players do: QUIT, so holdfast keeps no detached
    // session for them (a dropped link would be kept for `resume.keep`).
    let _: Vec<()> = stream::iter(conns)
        .map(|(s, _)| quit(s))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let (left, w) = settled_rss(pid).await;
    r.left_kib = left;
    r.left_split = procs::rss_split(pid);
    r.settle_s.push(w);
    let ((ab, fb), (al, fl)) = (r.before_split, r.left_split);
    eprintln!(
        "idle {label:8} all left: RSS {left:.0} KiB ({:.2}x before; anonymous {ab} -> {al} KiB, file-backed {fb} -> {fl} KiB)",
        r.left_ratio()
    );
    r
}
