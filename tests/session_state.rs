//! Session state against the real binary (issue 12): the control-plane and
//! shutdown bugs that only show with real sockets. The login-state bugs are
//! covered by the core's unit tests (src/session/tests.rs).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The game's connection id of `user`'s (first) login.
fn conn_of(game: &Game, user: &str) -> serde_json::Value {
    game.events()
        .into_iter()
        .find(|e| e["t"] == "login" && e["user"] == user)
        .map(|e| e["conn"].clone())
        .unwrap_or_else(|| panic!("{user} never logged in"))
}

/// Bug: a SIGHUP reorder to a backend that is down moved every player off
/// a working game and held them.
#[tokio::test]
async fn sighup_to_a_down_backend_moves_nobody() {
    let dir = TempDir::new("hupdown");
    let first = Game::start(&dir, &[]);
    let mut second = Game::start(&dir, &[]);
    let cfg1 = config_for(&[&first, &second], "");
    let proxy = Proxy::start(&dir, &cfg1);
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    second.kill();
    proxy.wait_log("backend down").await;
    // Reorder: the dead second game is now preferred.
    let cfg2 = prefer_second(&cfg1, &first, &second);
    proxy.rewrite(&cfg2);
    proxy.sighup();
    proxy
        .wait_log("new preferred backend is down; players stay where they are")
        .await;
    alice.send("say still on the first game").await;
    alice.expect("You say, \"still on the first game\"").await;
    assert!(!alice.text.contains("Moving you"), "{}", alice.text);
    assert!(!alice.text.contains("[holdfast]"), "{}", alice.text);
}

/// Bug: a player who stopped reading kept the session in a write for
/// `write_timeout`, past the shutdown grace, so the game never got QUIT.
#[tokio::test]
async fn sigterm_with_a_player_who_stopped_reading_still_quits_the_game() {
    let dir = TempDir::new("stuckreader");
    let game = Game::start(&dir, &[]);
    let mut proxy = Proxy::start(
        &dir,
        &config_for(&[&game], "[limits]\nwrite_timeout = \"120s\"\n"),
    );
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let conn = conn_of(&game, "Alice");
    // 64 MiB that Alice never reads: the proxy's writes to her block.
    alice.send("spam 67108864").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    let code = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    eprintln!("stopped {:?} after SIGTERM", t0.elapsed());
    assert_eq!(code, Some(0));
    game.wait_event("Alice quit cleanly", |e| {
        e["t"] == "close" && e["conn"] == conn && e["why"] == "quit"
    })
    .await;
    drop(alice);
}

/// The proxy's peak resident memory so far, in MiB (Linux: VmHWM).
fn peak_rss_mib(proxy: &Proxy) -> u64 {
    let pid = proxy.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc status");
    kb / 1024
}

/// Reads and discards up to `n` bytes from the player's socket (the bomb's
/// output must not be kept in the test either), for at most `within`, or
/// until nothing came for a second.
async fn drain(c: &mut Client, n: u64, within: Duration) -> u64 {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    let t0 = Instant::now();
    while got < n && t0.elapsed() < within {
        match tokio::time::timeout(Duration::from_secs(1), c.stream().read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(k)) => got += k as u64,
            Err(_) if got > 0 => break,
            Err(_) => {}
        }
    }
    got
}

/// Bug: a game could start MCCP2 though holdfast refused it, and one read
/// of a zlib bomb inflated to hundreds of MiB at once. Now an unagreed
/// start is ignored and an agreed stream inflates a step at a time, each
/// written before the next: memory stays bounded and other players are
/// answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zlib_bomb_is_bounded_and_does_not_stall_others() {
    const BOMB: u64 = 256 << 20;
    for agreed in [false, true] {
        let dir = TempDir::new("bomb");
        let args: &[&str] = if agreed { &["--mccp"] } else { &[] };
        let game = Game::start(&dir, args);
        let extra = if agreed {
            "[telnet]\nbackend_mccp = true\n"
        } else {
            ""
        };
        let proxy = Proxy::start_with(&dir, &config_for(&[&game], extra), "holdfast=info", &[]);
        let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
        let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;
        let before = peak_rss_mib(&proxy);
        alice.send(&format!("bomb {BOMB}")).await;
        let reader = tokio::spawn(async move {
            let got = drain(&mut alice, BOMB, Duration::from_secs(60)).await;
            (alice, got)
        });
        let t0 = Instant::now();
        bob.send("think still answered").await;
        bob.expect("still answered").await;
        eprintln!(
            "agreed={agreed}: Bob answered {:?} into the bomb",
            t0.elapsed()
        );
        let (_alice, got) = reader.await.unwrap();
        let peak = peak_rss_mib(&proxy);
        eprintln!(
            "agreed={agreed}: Alice got {} MiB; proxy peak RSS {before} -> {peak} MiB",
            got >> 20
        );
        if agreed {
            assert!(got >= BOMB, "the inflated bomb reached its player: {got}");
        }
        assert!(peak < 200, "peak RSS {peak} MiB");
    }
}
