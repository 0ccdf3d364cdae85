//! The busy and lazy paths at holdfast's own start (issue 27, part 3):
//! players reconnecting the moment a restarted holdfast listens, in front
//! of a game that lets two connections per address wait at its connect
//! screen (TinyMUX's `max_preauth_sitecons`). Real holdfast, real fakemush.

mod common;
#[path = "busy/support.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use support::*;

/// Six players connect within the first 100 ms after holdfast starts,
/// before its heartbeat has the game's connect screen. Those who get the
/// game's own screen read it (they hold the game's two places) until all
/// six have a screen: every one sees the screen within 3 s (those the game
/// turned away get the heartbeat's copy as soon as it has one) and every
/// one logs in, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_players_in_the_first_100ms_all_see_the_screen_and_log_in() {
    let dir = TempDir::new("startup-busy");
    let game = two_preauth_game(&dir, 6);
    let proxy = Proxy::start(&dir, &mux_config(&game, ""));
    let t0 = Instant::now();
    let clients = futures::future::join_all((0..6).map(|_| Client::connect(proxy.addr))).await;
    // About 5 ms here; a loaded CI machine may take longer, which only
    // makes it easier for holdfast.
    eprintln!("the six connected {:?} after the start", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let screens = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let i = i + 1;
            let screens = screens.clone();
            tokio::spawn(async move {
                let seen = c
                    .expect_within("connect <name>", Duration::from_secs(3))
                    .await;
                let at = t0.elapsed();
                assert!(!seen.contains("Too many"), "p{i:02}: {seen:?}");
                // Reading the screen (holding the game's place) until
                // everyone has one.
                screens.fetch_add(1, Ordering::SeqCst);
                while screens.load(Ordering::SeqCst) < 6 && t0.elapsed() < Duration::from_secs(4) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                c.send(&format!("connect p{i:02} pw")).await;
                c.expect_within("Last connect was from", Duration::from_secs(10))
                    .await;
                c.send(&format!("think p{i:02} is in")).await;
                c.expect(&format!("p{i:02} is in")).await;
                (c, at)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        match t.await {
            Ok(x) => out.push(x),
            Err(e) => panic!("a player: {e}\nholdfast's log:\n{}", proxy.logs()),
        }
    }
    for (i, (c, at)) in out.iter().enumerate() {
        assert!(!c.closed);
        assert_eq!(
            c.text.matches("connect <name>").count(),
            1,
            "p{:02} got the screen once: {}",
            i + 1,
            c.text
        );
        eprintln!(
            "p{:02} saw the connect screen {at:?} after the start",
            i + 1
        );
    }
    for i in 1..=6 {
        let name = format!("p{i:02}");
        // (The game's log may still be writing the last of them.)
        game.wait_event(&format!("{name}'s login"), |e| {
            e["t"] == "login" && e["user"] == name.as_str()
        })
        .await;
    }
    assert_each_logged_in_once(&game, 6);
}

/// Two players logged back in after a game restart; one quits a moment
/// later: the other sees the game's "p01 has disconnected." at once,
/// though announcements about p01 are held back for 10 s after its
/// re-login (and none of the restore's own shows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_player_who_quits_is_announced_at_once() {
    let dir = TempDir::new("restored-quits");
    let args = users(2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut game = Game::start(&dir, &args);
    let proxy = Proxy::start(
        &dir,
        &config_for(
            &[&game],
            "[listen]\naddrs = [\"127.0.0.1:0\"]\nmax_per_ip = 100\n",
        ),
    );
    proxy.wait_log("backend up").await;
    let mut a = Client::login(proxy.addr, "p01", "pw").await;
    let mut b = Client::login(proxy.addr, "p02", "pw").await;
    game.restart();
    a.expect("You have been logged back in.").await;
    b.expect("You have been logged back in.").await;
    // Whatever the game said to p02 about the restore came before this.
    b.send("think settled").await;
    b.expect("settled").await;
    a.send("QUIT").await;
    a.expect_closed().await;
    let seen = b
        .expect_within("p01 has disconnected.", Duration::from_secs(3))
        .await;
    assert!(!seen.contains("p01 has connected."), "{seen:?}");
}
