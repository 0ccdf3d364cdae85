//! What a session's task keeps between events, in bytes (issue 25): the
//! driver and the futures its loop waits in. An idle session's memory is
//! mostly its task, and a future keeps room for every future it awaits
//! inline, so a wait that only some sessions ever do (a write to a slow
//! reader, an upgrade) is boxed and the loop's own waits are polls.
//! Prints the rows docs/benchmarks.md gives
//! (`cargo test --lib session::sizes_tests -- --nocapture`).

use std::mem::size_of_val;
use std::sync::Arc;
use std::time::Duration;

use super::core::Core;
use super::driver::Driver;
use super::wait::next_ask;
use crate::config::Config;
use crate::state::Shared;

/// The bound in a debug build (`cargo test`): the same layout keeps a
/// few more bytes there.
const TASK_MAX_DEBUG: usize = 672;

#[tokio::test]
async fn a_sessions_task_keeps_no_room_for_rare_waits() {
    let cfg = Config::parse(
        &std::env::temp_dir().join("sizes.toml"),
        "[[backends]]\nname = \"game\"\naddr = \"127.0.0.1:4201\"\n",
    )
    .expect("config");
    let shared = Arc::new(Shared::new(
        cfg.clone(),
        crate::events::EventSink::disabled(),
        tokio::sync::mpsc::channel(1).0,
        tokio_util::sync::CancellationToken::new(),
    ));
    let peer: std::net::SocketAddr = "127.0.0.1:5555".parse().expect("addr");
    let core = Core::new(1, peer, peer, &cfg, 0);
    let mut d: Driver<tokio::net::TcpStream> = Driver::without_player(shared.clone(), core);
    let driver = size_of_val(&d);
    let run = size_of_val(&d.run());
    let game_read = size_of_val(&d.on_game_readable(false));
    let write = size_of_val(&d.write_player_raw(b"x", Duration::from_secs(1)));
    let ask = size_of_val(&next_ask(&mut d.freeze));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let player = tokio::net::TcpStream::connect(l.local_addr().expect("addr"))
        .await
        .expect("connect");
    let task = size_of_val(&super::run(shared.clone(), 2, player, peer, peer));
    let rows = [
        (
            "the session's task future (`session::run`: the driver and its loop)",
            task,
        ),
        ("driver (core, sockets, what the registry was told)", driver),
        ("  core (session::Core)", std::mem::size_of::<Core>()),
        (
            "  its rare part, boxed while in use (session::rare::Rare)",
            std::mem::size_of::<super::rare::Rare>(),
        ),
        ("the loop's future (`Driver::run`)", run),
        ("  a read of the game's output and its write", game_read),
        ("  a write to the player that finishes at once", write),
        ("  waiting for an upgrade's ask", ask),
    ];
    println!("\n| part | bytes |\n| --- | ---: |");
    for (what, n) in rows {
        println!("| {what} | {n} |");
    }
    // Bounds with room to spare over today's (debug and release alike):
    // the point is that a wait for a slow reader (~600 bytes: its timer,
    // shutdown and ask) or an upgrade (~1 KiB) stays out of every task.
    assert!(write <= 128, "the write's fast path keeps {write} bytes");
    assert!(ask <= 16, "waiting for an ask keeps {ask} bytes");
    assert!(run <= 640, "the loop's future is {run} bytes");
    // What only some sessions use is boxed (`session::rare`, the driver's
    // `Away`): the core and the driver keep what a relaying session reads.
    assert!(driver <= 1040, "the driver is {driver} bytes");
    // Heap parts whose size class matters: a logged-in session's game
    // connection (jemalloc's 112-byte class) and the registry's boxed
    // entry (64).
    let game = std::mem::size_of::<super::core::Game>();
    let entry = std::mem::size_of::<crate::state::SessionInfo>();
    println!("| the game connection (session::core::Game, boxed) | {game} |");
    println!("| the registry's entry (state::SessionInfo, boxed) | {entry} |");
    assert!(game <= 112, "the game connection is {game} bytes");
    assert!(entry <= 64, "the registry's entry is {entry} bytes");
    // tokio keeps a task in one allocation: the future and 112 bytes of
    // its own (header 32; scheduler, id, the tracker's token and the
    // stage's tag 32; trailer 48), padded to 128. Up to 656 bytes of
    // future that is a 768-byte cell, one of jemalloc's size classes; 8
    // bytes more and it is 896 (see docs/benchmarks.md, "Idle memory").
    // What the binary runs is the release build; a debug build keeps
    // some locals an optimised one does not.
    let cell_max = if cfg!(debug_assertions) {
        TASK_MAX_DEBUG
    } else {
        656
    };
    assert!(
        task <= cell_max,
        "the session's future is {task} bytes: its task no longer fits 768 bytes"
    );
}
