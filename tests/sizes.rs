//! What one idle session is made of, in bytes (issue 25): the session's task
//! future and the parts of it, the registry entry and the per-address
//! entries. Prints the breakdown docs/benchmarks.md gives:
//!
//! ```text
//! cargo test --release --test sizes -- --nocapture
//! ```
//!
//! The heap a session holds besides these (buffers, tokio's I/O
//! registrations, its span) is measured on the running binary instead:
//! docs/benchmarks.md, "Idle memory".

use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use holdfast::config::Config;
use holdfast::events::EventSink;
use holdfast::limiter::Bucket1;
use holdfast::session::{self, input::Input, Core};
use holdfast::state::{SessionInfo, Shared};
use holdfast::telnet;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Bytes a hashbrown map spends on one entry of `T` at full load (7/8),
/// counting its control byte; at the worst point after a resize it is
/// about twice this.
fn map_entry<T>() -> usize {
    (size_of::<T>() + 1) * 8 / 7
}

/// The tokio task around a future of `n` bytes: header, scheduler handle,
/// task id, the future, trailer; the cell is aligned to 128 bytes on x86-64.
fn task_cell(n: usize) -> usize {
    (n + 192).div_ceil(128) * 128
}

#[tokio::test]
async fn print_session_sizes() {
    let dir = std::env::temp_dir();
    let cfg = Config::parse(
        &dir.join("sizes.toml"),
        "[[backends]]\nname = \"game\"\naddr = \"127.0.0.1:4201\"\n",
    )
    .expect("config");
    let shared = Arc::new(Shared::new(
        cfg.clone(),
        EventSink::disabled(),
        tokio::sync::mpsc::channel(1).0,
        CancellationToken::new(),
    ));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let player = TcpStream::connect(addr).await.expect("connect");
    let peer: SocketAddr = "127.0.0.1:5555".parse().expect("peer");

    let fut = session::run(shared.clone(), 1, player, peer, addr);
    let future = std::mem::size_of_val(&fut);
    let tracked = shared
        .tracker
        .track_future(async {}.instrument(tracing::info_span!("x")));
    let wrap = std::mem::size_of_val(&tracked);
    drop(fut);

    let core = Core::new(1, peer, addr, &cfg, 0);
    let rows: Vec<(&str, usize)> = vec![
        ("session task future (plain TCP player)", future),
        ("  + TaskTracker and tracing span wrappers", wrap),
        ("  = tokio task cell (approx.)", task_cell(future + wrap)),
        ("core (session::Core)", size_of::<Core>()),
        ("  telnet::Policy", size_of::<telnet::Policy>()),
        ("  session::input::Input", size_of::<Input>()),
        ("    telnet::Parser", size_of::<telnet::Parser>()),
        (
            "  telnet::Inbound (game side, when connected)",
            size_of::<telnet::Inbound>(),
        ),
        (
            "  telnet::memory::Memory",
            size_of::<telnet::memory::Memory>(),
        ),
        ("  Bucket1 (input rate)", size_of::<Bucket1>()),
        (
            "tokio TcpStream (each of player, game)",
            size_of::<TcpStream>(),
        ),
        ("registry entry: SessionInfo", size_of::<SessionInfo>()),
        (
            "  map slot (u64, SessionInfo) at 7/8 load",
            map_entry::<(u64, SessionInfo)>(),
        ),
        (
            "per-IP count slot (IpAddr, usize)",
            map_entry::<(IpAddr, usize)>(),
        ),
        (
            "per-IP rate bucket slot (IpAddr, Bucket1)",
            map_entry::<(IpAddr, Bucket1)>(),
        ),
    ];
    println!("\n| part | bytes |\n| --- | ---: |");
    for (what, n) in &rows {
        println!("| {what} | {n} |");
    }
    drop(core);
    // Not a limit on anyone's work: a sanity bound, so a future that
    // doubles shows here first (the bench's guard is the real one).
    assert!(future < 8192, "the session's task future is {future} bytes");
}
