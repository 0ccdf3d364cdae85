//! The game's per-address limits met by many players behind holdfast's one
//! address (issue 19): connect-screen limits with lazy connect and with
//! retry alone, a restore through a connection-rate limit, and a restore
//! whose "X has connected." announcements stay between the game and
//! holdfast. Real holdfast, real fakemush.

mod common;
#[path = "busy/support.rs"]
mod support;

use std::time::{Duration, Instant};

use common::*;
use support::*;

const ONLINE: &str = "You have been logged back in.";
const BUSY: &str = "is busy; holdfast will connect you in a moment.";

/// Logs `n` players in at once, each as soon as it sees a connect screen;
/// returns the clients, logged in.
async fn log_in_together(proxy: &Proxy, n: usize) -> Vec<Client> {
    let mut cs = Vec::new();
    for _ in 0..n {
        cs.push(Client::connect(proxy.addr).await);
    }
    log_in_all(cs).await
}

/// Logs the clients in as `p01`, `p02`… at once, each as soon as it sees a
/// connect screen.
async fn log_in_all(clients: Vec<Client>) -> Vec<Client> {
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let i = i + 1;
            tokio::spawn(async move {
                c.expect_within("connect <name>", Duration::from_secs(30))
                    .await;
                c.send(&format!("connect p{i:02} pw")).await;
                c.expect_within("Last connect was from", Duration::from_secs(30))
                    .await;
                c.send(&format!("think p{i:02} is in")).await;
                c.expect(&format!("p{i:02} is in")).await;
                c
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("a player task"));
    }
    out
}

async fn wait_up(proxy: &Proxy) {
    proxy.wait_log("backend up").await;
}

/// Six players behind one address at a game that lets two wait at its
/// connect screen (TinyMUX's `max_preauth_sitecons`): with lazy connect
/// each gets the screen at once (from the heartbeat's copy) and all six
/// log in; the game saw each login once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_players_at_a_two_preauth_game_all_get_in_with_lazy_connect() {
    let dir = TempDir::new("busy-lazy");
    let game = two_preauth_game(&dir, 6);
    let proxy = Proxy::start(&dir, &mux_config(&game, ""));
    wait_up(&proxy).await;
    proxy.wait_log("connect screen kept for lazy connect").await;
    // Every screen comes from the cache: none waits for the game.
    let mut waiting = Vec::new();
    for _ in 0..6 {
        let mut c = Client::connect(proxy.addr).await;
        c.expect_within("connect <name>", Duration::from_secs(2))
            .await;
        waiting.push(c);
    }
    let logins_before = count(&game, "login");
    for (i, c) in waiting.iter_mut().enumerate() {
        c.send(&format!("connect p{:02} pw", i + 1)).await;
    }
    for (i, c) in waiting.iter_mut().enumerate() {
        let seen = c
            .expect_within("Last connect was from", Duration::from_secs(30))
            .await;
        assert!(!seen.contains("Too many"), "player {i}: {seen:?}");
        assert!(
            !seen.contains("Welcome to FakeMUSH ("),
            "player {i} got the screen twice: {seen:?}"
        );
        c.send("think settled").await;
        c.expect("settled").await;
    }
    for c in &waiting {
        assert!(!c.closed);
        assert!(c.text.matches(BUSY).count() <= 1, "{}", c.text);
    }
    assert_eq!(count(&game, "login") - logins_before, 6);
    assert_each_logged_in_once(&game, 6);
    let refused = game
        .events()
        .iter()
        .filter(|e| e["t"] == "refused" && e["why"] == "preauth")
        .count();
    eprintln!("lazy: the game refused {refused} connection(s) at its connect screen");
}

/// The same without lazy connect: four of the six are refused at once
/// ("Too many connections from your address are waiting to log in") and
/// come in by retrying; each is told once that the game is busy, none sees
/// the refusal, none is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_players_at_a_two_preauth_game_all_get_in_by_retrying() {
    let dir = TempDir::new("busy-retry");
    let game = two_preauth_game(&dir, 6);
    let proxy = Proxy::start(
        &dir,
        &mux_config(
            &game,
            "lazy_connect = false\n[metrics]\naddr = \"127.0.0.1:0\"",
        ),
    );
    wait_up(&proxy).await;
    // All six at once: two get the screen, four are refused (and told),
    // and stay refused while the two wait at the connect screen.
    let mut first = Vec::new();
    for _ in 0..6 {
        first.push(Client::connect(proxy.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut screens = 0;
    for c in first.iter_mut() {
        let seen = c.collect_for(Duration::from_millis(100)).await;
        assert!(!seen.contains("Too many"), "{seen:?}");
        if seen.contains("connect <name>") {
            screens += 1;
        } else {
            assert!(seen.contains(BUSY), "{seen:?}");
        }
    }
    assert_eq!(screens, 2, "max-preauth 2");
    // Now each logs in as soon as it has a screen: all get in.
    let clients = log_in_all(first).await;
    let mut told = 0;
    for c in &clients {
        assert!(!c.closed);
        assert!(!c.text.contains("Too many"), "{}", c.text);
        let n = c.text.matches(BUSY).count();
        assert!(n <= 1, "told {n} times: {}", c.text);
        told += n;
    }
    let refused = game
        .events()
        .iter()
        .filter(|e| e["t"] == "refused" && e["why"] == "preauth")
        .count();
    assert!(refused >= 4, "the limit was not met: {refused} refusals");
    assert!(told >= 4, "{told} players told the game is busy");
    let body = metrics(proxy.metrics_addr().await).await;
    let counted: usize =
        body.lines()
            .find_map(|l| l.strip_prefix("holdfast_game_refusals_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no refusal counter in:\n{body}")) as usize;
    assert_eq!(
        counted, refused,
        "each refusal the game logged, counted once"
    );
    assert_each_logged_in_once(&game, 6);
}

/// The proxy's `/metrics` text.
async fn metrics(addr: std::net::SocketAddr) -> String {
    common::scrape::metrics_text(addr).await
}

fn count(game: &Game, t: &str) -> usize {
    game.events().iter().filter(|e| e["t"] == t).count()
}

/// 25 players held through a game kill; the game comes back admitting 20
/// new connections per address per `window` seconds (older TinyMUX closes
/// the rest without a word). All 25 are logged back in, each once, none
/// is disconnected.
async fn restore_through_conn_rate(window: u32) {
    let dir = TempDir::new("busy-rate");
    let mut args = users(25);
    let plain: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut game = Game::start(&dir, &plain);
    let proxy = Proxy::start(&dir, &mux_config(&game, ""));
    wait_up(&proxy).await;
    let mut clients = log_in_together(&proxy, 25).await;

    let addr = game.addr;
    game.kill();
    for c in clients.iter_mut() {
        c.expect("Test MUSH is down").await;
    }
    args.extend(["--conn-rate".into(), format!("20/{window}")]);
    let limited: Vec<&str> = args.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    let game = Game::start_on(&dir, addr, &limited);
    for (i, c) in clients.iter_mut().enumerate() {
        let seen = c
            .expect_within(ONLINE, Duration::from_secs(u64::from(window) * 3 + 30))
            .await;
        assert!(!seen.contains("log in by hand"), "p{:02}: {seen:?}", i + 1);
    }
    let took = t0.elapsed();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&format!("think p{:02} back", i + 1)).await;
        c.expect(&format!("p{:02} back", i + 1)).await;
        assert!(!c.closed);
        assert!(c.text.matches(BUSY).count() <= 1, "{}", c.text);
    }
    let ev = game.events();
    let refused = ev
        .iter()
        .filter(|e| e["t"] == "refused" && e["why"] == "rate")
        .count();
    assert!(refused > 0, "the connection rate was never met");
    assert_each_logged_in_once(&game, 25);
    eprintln!(
        "restore of 25 through --conn-rate 20/{window}: {:.1} s, {refused} connection(s) refused by the game",
        took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_restored_through_a_5s_connection_rate() {
    restore_through_conn_rate(5).await;
}

/// The figure: 20 per 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_five_restored_through_a_20s_connection_rate() {
    restore_through_conn_rate(20).await;
}

/// Ten players restored after a game restart: the game announces each
/// re-login ("p03 has connected.") to the players already back; none of
/// that reaches them. A player who was not held still is announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_does_not_announce_the_restored_to_each_other() {
    let dir = TempDir::new("busy-quiet");
    let mut args = users(10);
    args.extend(["--user".into(), "Bob:bobpw".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut game = Game::start(&dir, &args);
    let config = config_for(
        &[&game],
        "[listen]\naddrs = [\"127.0.0.1:0\"]\nmax_per_ip = 100\n",
    );
    let proxy = Proxy::start(&dir, &config);
    wait_up(&proxy).await;
    let mut clients = log_in_together(&proxy, 10).await;
    game.restart();
    for c in clients.iter_mut() {
        c.expect(ONLINE).await;
    }
    // Everyone is back; let the game's announcements arrive (or not).
    tokio::time::sleep(Duration::from_secs(1)).await;
    for c in clients.iter_mut() {
        let after = c.collect_for(Duration::from_millis(200)).await;
        assert!(!after.contains("has connected."), "{after:?}");
        let all = &c.text;
        assert_eq!(all.matches(ONLINE).count(), 1);
        for i in 1..=10 {
            // Only announcements from the first logins (before the
            // restart), none from the restore.
            let a = format!("p{i:02} has connected.");
            let before_restart = all[..all.find("is down").unwrap()].matches(&a).count();
            assert_eq!(all.matches(&a).count(), before_restart, "{a} in:\n{all}");
        }
    }
    // Someone who was not being restored is announced as ever.
    let _bob = Client::login(proxy.addr, "Bob", "bobpw").await;
    for c in clients.iter_mut() {
        c.expect("Bob has connected.").await;
    }
}

/// A client that sends its login and first command in one packet, with
/// lazy connect and resume both on (the tinymux defaults): the game gets
/// the login first, then the command, and the player sees the connect
/// screen once. (The command used to overtake the login while the login
/// was checked against detached sessions; seen with a real TinyMUX.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_and_a_command_in_one_packet_arrive_in_order() {
    let dir = TempDir::new("busy-one-packet");
    let game = two_preauth_game(&dir, 3);
    let proxy = Proxy::start(&dir, &mux_config(&game, ""));
    wait_up(&proxy).await;
    proxy.wait_log("connect screen kept for lazy connect").await;
    for i in 1..=3 {
        let mut c = Client::connect(proxy.addr).await;
        c.expect_within("connect <name>", Duration::from_secs(5))
            .await;
        c.send_raw(format!("connect p{i:02} pw\r\nthink p{i:02} first\r\n").as_bytes())
            .await;
        let seen = c.expect(&format!("p{i:02} first")).await;
        assert!(seen.contains("Last connect was from"), "{seen:?}");
        assert_eq!(
            c.text.matches("connect <name>").count(),
            1,
            "the screen once: {}",
            c.text
        );
        let name = format!("p{i:02}");
        assert_eq!(
            game.lines_from(&name).first().map(String::as_str),
            Some(format!("think p{i:02} first").as_str()),
            "the game got the command after the login"
        );
    }
}
