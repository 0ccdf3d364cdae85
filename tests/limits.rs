//! Abuse limits: connection rate per IP, unauthenticated sessions, input
//! floods, over-long lines, players who stop reading.

mod common;

use std::time::Duration;

use common::*;

fn listen(extra: &str) -> String {
    format!("[listen]\naddrs = [\"127.0.0.1:0\"]\n{extra}")
}

#[tokio::test]
async fn connection_rate_per_ip() {
    let dir = TempDir::new("connrate");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &config_for(
            &[&game],
            &format!(
                "{}\n[limits]\nconn_rate_per_ip = 0.5\nconn_burst_per_ip = 2\n",
                listen("")
            ),
        ),
    );
    let mut a = Client::connect_from(proxy.addr, "127.0.0.5").await;
    a.expect("Welcome").await;
    let mut b = Client::connect_from(proxy.addr, "127.0.0.5").await;
    b.expect("Welcome").await;
    let mut c = Client::connect_from(proxy.addr, "127.0.0.5").await;
    c.expect("Too many connections from your address").await;
    c.expect_closed().await;
    // Another address has its own bucket.
    let mut d = Client::connect_from(proxy.addr, "127.0.0.6").await;
    d.expect("Welcome").await;
    proxy.wait_log("connecting too fast").await;
}

#[tokio::test]
async fn unauthenticated_sessions_are_capped() {
    let dir = TempDir::new("unauth");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &config_for(&[&game], "[limits]\nmax_unauthenticated = 2\n"),
    );
    let mut a = Client::connect_from(proxy.addr, "127.0.0.7").await;
    a.expect("connect <name>").await;
    let mut b = Client::connect_from(proxy.addr, "127.0.0.8").await;
    b.expect("connect <name>").await;
    let mut c = Client::connect_from(proxy.addr, "127.0.0.9").await;
    c.expect("is full right now").await;
    c.expect_closed().await;
    // Once one logs in, a place for an anonymous session opens.
    a.send("connect Alice alicepw").await;
    a.expect("Last connect").await;
    a.send("think settled").await;
    a.expect("settled").await;
    let mut d = Client::connect_from(proxy.addr, "127.0.0.9").await;
    d.expect("connect <name>").await;
}

#[tokio::test]
async fn input_flood_gets_a_notice_then_a_disconnect() {
    let dir = TempDir::new("flood");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &config_for(
            &[&game],
            "[limits]\ninput_lines_per_sec = 5\ninput_burst = 10\n",
        ),
    );
    let mut c = Client::login(proxy.addr, "Alice", "alicepw").await;
    // Login and the settle command used 2 of the 10: a paste of 12 lines
    // goes over by a few and earns a warning, not a disconnect.
    let burst: String = (0..12).map(|i| format!("say flood {i}\r\n")).collect();
    c.send_raw(burst.as_bytes()).await;
    c.expect("You are sending too fast").await;
    c.expect_open_for(Duration::from_millis(200)).await;
    assert!(
        c.text.contains("You say, \"flood 0\""),
        "the start of the paste got through"
    );
    let flood: String = (0..40).map(|i| format!("say more {i}\r\n")).collect();
    c.send_raw(flood.as_bytes()).await;
    c.expect_closed().await;
    proxy.wait_log("reason=\"flood\"").await;
    let said = game
        .lines_from("Alice")
        .into_iter()
        .filter(|l| l.starts_with("say "))
        .count();
    assert!(said <= 10, "only the burst reached the game, got {said}");
}

#[tokio::test]
async fn over_long_line_is_cut_with_a_notice() {
    let dir = TempDir::new("longline");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], "[limits]\nmax_line = 1000\n"));
    let mut c = Client::login(proxy.addr, "Alice", "alicepw").await;
    let long = format!("say {}", "x".repeat(200_000));
    c.send_raw(long.as_bytes()).await;
    c.expect("That line was too long and has been cut").await;
    c.send_raw(b"\r\nsay short\r\n").await;
    c.expect("You say, \"short\"").await;
    let lines = game.lines_from("Alice");
    assert!(
        lines.iter().all(|l| l.len() <= 1000),
        "nothing longer than the cap reached the game"
    );
}

#[tokio::test]
async fn slow_loris_is_bounded_by_the_login_timeout() {
    let dir = TempDir::new("loris");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &config_for(&[&game], &listen("login_timeout = \"600ms\"")),
    );
    let mut c = Client::connect(proxy.addr).await;
    c.expect("connect <name>").await;
    // Dribble a line that never ends.
    for _ in 0..5 {
        c.send_raw(b"co").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.expect("You did not log in in time").await;
    c.expect_closed().await;
}

#[tokio::test]
async fn player_who_stops_reading_is_dropped() {
    let dir = TempDir::new("slowreader");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &config_for(&[&game], "[limits]\nwrite_timeout = \"1s\"\n"),
    );
    let mut c = Client::login(proxy.addr, "Alice", "alicepw").await;
    // Ask for far more than the socket buffers hold, then stop reading.
    c.send("spam 200000000").await;
    proxy.wait_log("player stopped reading").await;
    // A logged-in player is detached (resume.keep), not logged out; the
    // connection is closed all the same.
    proxy.wait_log("why=\"write_failed\"").await;
    c.expect_closed().await;
    // The proxy stays healthy for others.
    let mut b = Client::login(proxy.addr, "Bob", "bobpw").await;
    b.send("say fine").await;
    b.expect("You say, \"fine\"").await;
}
