//! Resume after a dropped player link (issue 14): a logged-in player whose
//! connection ends without QUIT keeps the game session for `resume.keep`,
//! and gets what the game said meanwhile when they log in again.

mod common;

use std::time::{Duration, Instant};

use common::*;

const RESUMED: &str = "Your session was kept while you were away";

#[tokio::test]
async fn dropped_player_resumes_with_what_was_said() {
    let dir = TempDir::new("resume");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;
    alice.reset();
    proxy.wait_log("session detached").await;
    for i in 0..5 {
        bob.send(&format!("say line {i} of the scene")).await;
    }
    bob.expect("line 4 of the scene").await;
    // Alice comes back from another address, with the login she knows.
    let t0 = Instant::now();
    let mut alice = Client::connect_from(proxy.addr, "127.0.0.2").await;
    alice.expect("connect").await;
    alice.send("connect alice alicepw").await;
    alice.expect(RESUMED).await;
    eprintln!("resumed notice {:?} after the login line", t0.elapsed());
    for i in 0..5 {
        alice
            .expect(&format!("Bob says, \"line {i} of the scene\""))
            .await;
    }
    // Live again, on the same game connection.
    alice.send("say I'm back").await;
    bob.expect("Alice says, \"I'm back\"").await;
    // The game saw one login more: its check of the password (issue 23).
    assert_eq!(game.logins("Alice").len(), 2, "the game's check");
    assert!(
        !alice.text.contains("Last connect"),
        "no second login screen: {}",
        alice.text
    );
    proxy.assert_no_passwords();
}

#[tokio::test]
async fn a_wrong_password_is_an_ordinary_failed_login() {
    let dir = TempDir::new("resumebad");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    alice.reset();
    proxy.wait_log("session detached").await;
    let mut mallory = Client::connect_from(proxy.addr, "127.0.0.3").await;
    mallory.expect("connect").await;
    mallory.send("connect Alice guess").await;
    mallory
        .expect("Either that player does not exist, or has a different password.")
        .await;
    assert!(!mallory.text.contains(RESUMED));
    assert!(!mallory.text.contains("[holdfast]"), "{}", mallory.text);
    // The real Alice still gets her session.
    let mut alice = Client::connect(proxy.addr).await;
    alice.expect("connect").await;
    alice.send("connect Alice alicepw").await;
    alice.expect(RESUMED).await;
    // The failed attempt was no login; the game's check of hers was.
    assert_eq!(game.logins("Alice").len(), 2);
}

#[tokio::test]
async fn an_expired_detached_session_quits_the_game() {
    let dir = TempDir::new("resumeexp");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], "[resume]\nkeep = \"1s\"\n"));
    let alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let conn = game.logins("Alice")[0].clone();
    alice.reset();
    game.wait_event("Alice quit when her session expired", |e| {
        e["t"] == "close" && e["conn"] == conn && e["why"] == "quit"
    })
    .await;
    proxy.wait_log("reason=\"detach_expired\"").await;
}

#[tokio::test]
async fn resume_off_closes_the_game_session_as_before() {
    let dir = TempDir::new("resumeoff");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], "[resume]\nkeep = \"off\"\n"));
    let alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let conn = game.logins("Alice")[0].clone();
    alice.reset();
    game.wait_event("Alice's game connection closed", |e| {
        e["t"] == "close" && e["conn"] == conn
    })
    .await;
    assert!(!proxy.logs().contains("session detached"));
}

#[tokio::test]
async fn a_detached_player_survives_a_game_restart_and_resumes() {
    let dir = TempDir::new("resumecrash");
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    alice.reset();
    proxy.wait_log("session detached").await;
    game.kill();
    game.restart();
    // Logged back in while away, invisibly: a second login at the game.
    let t0 = Instant::now();
    while game.logins("Alice").len() < 2 {
        assert!(t0.elapsed() < WAIT, "Alice was not logged back in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut alice = Client::connect(proxy.addr).await;
    alice.expect("connect").await;
    alice.send("connect Alice alicepw").await;
    alice.expect(RESUMED).await;
    alice.send("think still me").await;
    alice.expect("still me").await;
    assert!(!alice.text.contains("is down"), "{}", alice.text);
}

/// Whether every loopback TCP connection to or from `port` has nothing
/// queued in the kernel, either way (`/proc/net/tcp`).
fn tcp_queues_empty(port: u16) -> bool {
    let t = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let hex = format!(":{port:04X}");
    t.lines().skip(1).all(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let ours = f.get(1).is_some_and(|a| a.ends_with(&hex))
            || f.get(2).is_some_and(|a| a.ends_with(&hex));
        !ours || f.get(4) == Some(&"00000000:00000000")
    })
}

/// The playback is bounded: 10 MiB of output while away keeps at most
/// `playback_bytes`, and the player is told how much was dropped.
#[tokio::test]
async fn playback_is_bounded() {
    let dir = TempDir::new("resumebig");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start_with(
        &dir,
        &config_for(&[&game], "[resume]\nplayback_bytes = \"64KiB\"\n"),
        "holdfast=info",
        &[],
    );
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    alice.send("spam 10485760").await;
    // (A reset discards what the proxy has not read yet.)
    game.wait_event("the game read the spam command", |e| {
        e["t"] == "line" && e["line"] == "spam 10485760"
    })
    .await;
    alice.reset();
    proxy.wait_log("session detached").await;
    // Wait until the game has written the whole spam, and the proxy has
    // read it (the kernel's queues on the game's port are empty): a pause
    // in the stream on a loaded machine is not its end.
    game.wait_event("the game wrote the spam", |e| e["t"] == "spam_done")
        .await;
    let port = game.addr.port();
    let t0 = std::time::Instant::now();
    while !tcp_queues_empty(port) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the proxy stopped reading"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = proxy.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .to_string();
    eprintln!("proxy {rss}");
    let mut alice = Client::connect(proxy.addr).await;
    alice.expect("connect").await;
    alice.send("connect Alice alicepw").await;
    alice.expect(RESUMED).await;
    alice.expect("older line(s) did not fit").await;
    // The playback, up to the answer to a command typed after it (the
    // spam was over before the resume).
    alice.send("echo SPAM-DONE").await;
    let kept = alice.expect("SPAM-DONE").await;
    assert!(kept.len() <= 70 * 1024, "kept {} bytes", kept.len());
    assert!(kept.len() >= 32 * 1024, "kept {} bytes", kept.len());
}

#[tokio::test]
async fn sigterm_quits_detached_sessions_cleanly() {
    let dir = TempDir::new("resumeterm");
    let game = Game::start(&dir, &[]);
    let mut proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let conn = game.logins("Alice")[0].clone();
    alice.reset();
    proxy.wait_log("session detached").await;
    let code = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    game.wait_event("Alice quit cleanly", |e| {
        e["t"] == "close" && e["conn"] == conn && e["why"] == "quit"
    })
    .await;
}
