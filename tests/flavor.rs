//! Real servers as they are (issue 19, issue 12 bugs 4 and 7): a heartbeat
//! starved of command quota is not an outage, a frozen game still is, a
//! rejected heartbeat login is a degraded probe, quit rules follow the
//! flavor, and a probe cancelled by a reload cannot mark the new address
//! down. Real holdfast, real fakemush, real nats-server.

mod common;

use std::time::{Duration, Instant};

use common::bus::*;
use common::nats::*;
use common::*;

const OFFLINE: &str = "Test MUSH is down. Your connection is being held";
const ONLINE: &str = "You have been logged back in.";

/// Waits (without blocking the runtime) until the proxy logged one of
/// `needles`; returns which.
async fn wait_log_any(p: &Proxy, needles: &[&str], within: Duration) -> String {
    let t0 = Instant::now();
    loop {
        let logs = p.logs();
        if let Some(n) = needles.iter().find(|n| logs.contains(**n)) {
            return n.to_string();
        }
        assert!(
            t0.elapsed() < within,
            "proxy logged none of {needles:?}; logs:\n{logs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A heartbeat player starved of command quota (TinyMUX refills it only
/// over whole idle seconds, and another connection keeps the game busy)
/// while the game shows its connect screen to new connections: the probe
/// replaces its connection, the backend is never declared down, and the
/// players are never held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starved_heartbeat_is_replaced_not_declared_down() {
    let dir = TempDir::new("starved");
    // Six commands per connection: the heartbeat's login and five probes;
    // a player's @remotehost, login, marker, one `think` and one `say`.
    let game = Game::start(&dir, &["--quota", "6"]);
    let proxy = Proxy::start(
        &dir,
        &config_for(
            &[&game],
            "[heartbeat]\nuser = \"heartbeat\"\npassword = \"hbpass\"\ninterval = \"1s\"\ntimeout = \"1s\"\nfall = 1\n[templates]\nbanner_wait = \"500ms\"\n",
        ),
    );
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    // Keep the game's main loop awake: a line every 200 ms, so no second
    // is ever idle and no connection's quota refills.
    let game_addr = game.addr;
    let stop = tokio_util::sync::CancellationToken::new();
    let noise = {
        let stop = stop.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut s = tokio::net::TcpStream::connect(game_addr).await.unwrap();
            // Bounded: at most 70 s of noise whatever happens.
            for _ in 0..350 {
                if stop.is_cancelled() {
                    break;
                }
                if s.write_all(b"\r\n").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    // A minute, as issue 19 asks (a real TinyMUX starved the heartbeat
    // for minutes).
    let starved_for = Duration::from_secs(60);
    let t0 = Instant::now();
    alice.expect_open_for(starved_for).await;
    let ran = t0.elapsed();
    stop.cancel();
    noise.await.unwrap();
    assert!(
        !alice.text.contains("[holdfast]"),
        "a player was told of an outage while the game ran: {}",
        alice.text
    );
    let logs = proxy.logs();
    assert!(
        !logs.contains("backend down"),
        "false outage after {ran:?} of starvation:\n{logs}"
    );
    // The starvation really happened: the probe had to log in again, more
    // than once.
    let hb_logins = game
        .events()
        .iter()
        .filter(|e| e["t"] == "login" && e["user"] == "heartbeat")
        .count();
    eprintln!("{ran:?} of starvation: {hb_logins} heartbeat logins, no outage");
    assert!(
        hb_logins >= 3,
        "the heartbeat was never starved ({hb_logins} logins)"
    );
    // The game still serves new players.
    let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;
    bob.send("say still here").await;
    bob.expect("You say, \"still here\"").await;
}

/// A frozen game (SIGSTOP: connections accepted by the kernel, no connect
/// screen, no answers) is still declared down, within the documented
/// `fall * interval + 2 * timeout + banner_wait`, with the tinymux
/// flavor's defaults (interval 5 s, timeout 2 s, fall 2, banner_wait 1 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_game_is_declared_down_with_flavor_defaults() {
    let dir = TempDir::new("frozen");
    let game = Game::start(&dir, &["--quit-case", "mux"]);
    let proxy = Proxy::start(
        &dir,
        &config_for(
            &[&game],
            "flavor = \"tinymux\"\n[heartbeat]\nuser = \"heartbeat\"\npassword = \"hbpass\"\n",
        ),
    );
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    game.freeze();
    let t0 = Instant::now();
    // 2 * 5 s + 2 * 2 s + 1 s, plus slack for a loaded 2-core machine.
    alice
        .expect_within(OFFLINE, Duration::from_secs(15 + 5))
        .await;
    eprintln!(
        "tinymux defaults: frozen game detected after {:?}",
        t0.elapsed()
    );
    game.thaw();
    alice.expect(ONLINE).await;
    alice.send("say thawed").await;
    alice.expect("You say, \"thawed\"").await;
}

/// A wrong heartbeat password: the backend stays up, the probe is
/// degraded (event, status, a warning), the login is not retried at every
/// probe (each try would count against holdfast's address), and fixing
/// the password with a reload ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_heartbeat_login_is_a_degraded_probe() {
    let dir = TempDir::new("degraded");
    let nats = NatsServer::start();
    let watch = Watch::start(&nats.url()).await;
    let client = connect(&nats.url()).await;
    let game = Game::start(&dir, &[]);
    let hb = |pw: &str| {
        format!(
            "[heartbeat]\nuser = \"heartbeat\"\npassword = \"{pw}\"\ninterval = \"300ms\"\ntimeout = \"2s\"\n{}",
            bus_toml(&[nats.url()], "hf1", "")
        )
    };
    let proxy = Proxy::start(&dir, &config_for(&[&game], &hb("wrong")));
    let ev = watch
        .wait_event("backend.degraded", |e| e["degraded"] == true)
        .await;
    assert!(
        ev["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("heartbeat login rejected"),
        "{ev}"
    );
    watch
        .wait_event("backend.up", |e| e["backend"] == "b0")
        .await;
    let status = request(&client, "hf1", "status", "{}").await;
    let b0 = &status["backends"][0];
    assert_eq!(b0["state"], "up", "{status}");
    assert!(
        b0["degraded"]
            .as_str()
            .unwrap_or_default()
            .contains("rejected"),
        "{status}"
    );
    proxy.wait_log("heartbeat probe degraded").await;
    // Players still get in.
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    // Ten probe intervals later the game has seen one failed heartbeat
    // login, not ten.
    alice.collect_for(Duration::from_secs(3)).await;
    let failed = game
        .events()
        .iter()
        .filter(|e| e["t"] == "login_failed" && e["user"] == "heartbeat")
        .count();
    assert_eq!(failed, 1, "the rejected login was retried at every probe");
    // Fixing the password ends it at once.
    proxy.rewrite(&config_for(&[&game], &hb("hbpass")));
    proxy.sighup();
    watch
        .wait_event("backend.degraded", |e| e["degraded"] == false)
        .await;
    let status = request(&client, "hf1", "status", "{}").await;
    assert!(status["backends"][0]["degraded"].is_null(), "{status}");
    alice.send("say fine").await;
    alice.expect("You say, \"fine\"").await;
}

/// PennMUSH quits only on exact `QUIT`: a lower-case `quit` is an ordinary
/// (unknown) command there, so the next crash must hold the player, not
/// close them as if they had quit.
#[tokio::test]
async fn lowercase_quit_at_pennmush_is_not_a_quit() {
    let dir = TempDir::new("pennquit");
    let mut game = Game::start(&dir, &["--flavor", "pennmush", "--quit-case", "exact"]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], "flavor = \"pennmush\""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    alice.send("quit").await;
    alice.expect("Huh?").await;
    game.kill();
    alice.expect(OFFLINE).await;
    game.restart();
    alice.expect(ONLINE).await;
    alice.send("say still playing").await;
    alice.expect("You say, \"still playing\"").await;
}

/// TinyMUX quits on any case once logged in: `quit` closes the player
/// after the game's goodbye.
#[tokio::test]
async fn lowercase_quit_at_tinymux_quits_once_logged_in() {
    let dir = TempDir::new("muxquit");
    let game = Game::start(&dir, &["--quit-case", "mux"]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], "flavor = \"tinymux\""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    alice.send("quit").await;
    alice.expect("Goodbye. Come back soon!").await;
    alice.expect_closed().await;
    assert!(
        !alice.text.contains("[holdfast]"),
        "a quit was taken for a crash: {}",
        alice.text
    );
}

/// Issue 12 bug 7: a probe cancelled by a reload (the backend's address
/// changed) used to deliver its report when its probe finished, marking
/// the new address down for good while the new probe had already said up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_cancelled_by_reload_cannot_mark_the_new_address_down() {
    let dir = TempDir::new("stale");
    let old = Game::start(&dir, &[]);
    let new = Game::start(&dir, &[]);
    let hb = "[heartbeat]\nuser = \"heartbeat\"\npassword = \"hbpass\"\ninterval = \"300ms\"\ntimeout = \"3s\"\nfall = 1\n[templates]\nbanner_wait = \"500ms\"\n";
    let proxy = Proxy::start(&dir, &config_for(&[&old], hb));
    let mut first = Client::connect(proxy.addr).await;
    first.expect("connect <name>").await;
    // The old game freezes; its probe is stuck for 3 s on the logged-in
    // connection, then 3.5 s on a new one, and fails.
    old.freeze();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    proxy.rewrite(&config_for(&[&new], hb));
    proxy.sighup();
    let seen = wait_log_any(
        &proxy,
        &["result of a cancelled probe dropped", "backend down"],
        Duration::from_secs(20),
    )
    .await;
    // The new address is up: a new player gets its connect screen and
    // plays, with no outage notice.
    let mut c = Client::connect(proxy.addr).await;
    c.expect("connect <name>").await;
    c.send("connect Alice alicepw").await;
    c.expect("Last connect was from").await;
    c.collect_for(Duration::from_millis(300)).await;
    assert!(
        !c.text.contains("[holdfast]"),
        "the stale report ({seen}) marked the new address down: {}",
        c.text
    );
    assert!(new
        .events()
        .iter()
        .any(|e| e["t"] == "login" && e["user"] == "Alice"));
    old.thaw();
}

/// `holdfast check` says that TinyMUX and TinyMUSH show every player at
/// holdfast's address.
#[test]
fn check_says_the_game_sees_holdfasts_address() {
    let dir = TempDir::new("checkaddr");
    for (flavor, says) in [("tinymux", true), ("tinymush", true), ("teenymush", false)] {
        let f = dir.path(&format!("{flavor}.toml"));
        std::fs::write(
            &f,
            format!("flavor = \"{flavor}\"\n[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n"),
        )
        .unwrap();
        let out = holdfast_check(&f);
        assert!(out.status.success(), "{flavor}");
        let summary = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            summary.contains("holdfast's address"),
            says,
            "{flavor}: {summary}"
        );
        if flavor == "teenymush" {
            assert!(summary.contains("@remotehostname {ip}"), "{summary}");
        }
    }
}

/// The test game's limits behave like TinyMUX's (connections from one
/// address waiting at the connect screen, new connections per window,
/// failed logins) and PennMUSH's exact `QUIT`.
#[tokio::test]
async fn test_game_limits_behave_like_the_real_servers() {
    let dir = TempDir::new("limits");
    let game = Game::start(
        &dir,
        &[
            "--max-preauth",
            "2",
            "--login-fail-limit",
            "2/60",
            "--quit-case",
            "exact",
            "--banner-delay",
            "100",
        ],
    );
    let mut a = Client::connect(game.addr).await;
    a.expect("connect <name>").await;
    let mut b = Client::connect(game.addr).await;
    b.expect("connect <name>").await;
    let mut c = Client::connect(game.addr).await;
    c.expect("Too many connections from your address are waiting to log in")
        .await;
    c.expect_closed().await;
    // Failed logins: two answered, then the throttle line, even for the
    // right password.
    for _ in 0..2 {
        a.send("connect Alice wrong").await;
        a.expect("Either that player does not exist").await;
    }
    a.send("connect Alice alicepw").await;
    a.expect("Too many failed login attempts from your address")
        .await;
    // Exact QUIT only.
    b.send("quit").await;
    b.expect("connect <name>").await;
    b.send("QUIT").await;
    b.expect("Goodbye.").await;
    b.expect_closed().await;

    // New connections per address per window: the third is closed without
    // a word.
    let rated = Game::start(&dir, &["--conn-rate", "2/60"]);
    let mut keep = Vec::new();
    for _ in 0..2 {
        let mut x = Client::connect(rated.addr).await;
        x.expect("connect <name>").await;
        keep.push(x);
    }
    let mut y = Client::connect(rated.addr).await;
    y.expect_closed().await;
    assert!(y.raw.is_empty(), "refused with words: {:?}", y.text);
    assert!(rated
        .events()
        .iter()
        .any(|e| e["t"] == "refused" && e["why"] == "rate"));
}
