//! A resume needs the game's own yes (issue 23, part 2): a detached
//! session is taken over only with credentials the game accepts now, guest
//! and shared logins are never kept, and a stale entry under the same name
//! does not keep the owner from their session.

mod common;

use std::time::{Duration, Instant};

use common::*;

const RESUMED: &str = "Your session was kept while you were away";
const BAD_LOGIN: &str = "Either that player does not exist, or has a different password.";

/// Waits until the proxy's log holds `needle` `n` times.
async fn wait_log_count(proxy: &Proxy, needle: &str, n: usize) {
    let t0 = Instant::now();
    while proxy.logs().matches(needle).count() < n {
        assert!(t0.elapsed() < WAIT, "{needle:?} fewer than {n} times");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn after_a_password_change_the_old_password_does_not_resume() {
    let dir = TempDir::new("rvpass");
    let accounts = dir.path("accounts");
    let mut game = Game::start(&dir, &["--accounts", accounts.to_str().unwrap()]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    bob.expect("Alice has connected.").await;
    let bob_from = bob.text.len();
    alice.send("@password alicepw=brand-new-secret").await;
    alice.expect("Password changed.").await;
    alice.reset();
    proxy.wait_log("session detached").await;

    // The game no longer takes the old password, and neither does holdfast:
    // the game's own answer, nothing from holdfast.
    let mut old = Client::connect_from(proxy.addr, "127.0.0.3").await;
    old.expect("connect").await;
    old.send("connect Alice alicepw").await;
    old.expect(BAD_LOGIN).await;
    old.collect_for(Duration::from_millis(300)).await;
    assert!(!old.text.contains(RESUMED), "{}", old.text);
    assert!(!old.text.contains("[holdfast]"), "{}", old.text);
    assert_eq!(game.logins("Alice").len(), 1);

    // The new password resumes; what that costs.
    let mut alice = Client::connect_from(proxy.addr, "127.0.0.2").await;
    alice.expect("connect").await;
    let t0 = Instant::now();
    alice.send("connect Alice brand-new-secret").await;
    alice.expect(RESUMED).await;
    let took = t0.elapsed();
    alice.send("think still me").await;
    alice.expect("still me").await;
    assert!(!alice.text.contains("Last connect"), "{}", alice.text);
    // What the game saw: one login more (the check) and its clean quit.
    let seen = game.logins("Alice");
    assert_eq!(seen.len(), 2, "{seen:?}");
    let check = seen[1].clone();
    game.wait_event("the check's connection quit", |e| {
        e["t"] == "close" && e["conn"] == check && e["why"] == "quit"
    })
    .await;
    let log = proxy.logs();
    let verify_ms = log
        .lines()
        .find_map(|l| l.split("verify_ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    eprintln!("resume with the game's check: {took:?} from the login line to the notice; the game answered in {verify_ms} ms");
    // Bob heard nothing of the check (its connect and disconnect).
    bob.send("think bob-settled").await;
    bob.expect("bob-settled").await;
    let heard = &bob.text[bob_from..];
    assert!(!heard.contains("Alice has"), "{heard}");

    // The password the game accepted is the one kept: after a restart she
    // is logged back in with it.
    game.kill();
    game.restart();
    alice.expect("You have been logged back in").await;
    assert_eq!(game.logins("Alice").len(), 3);
    assert!(!proxy.logs().contains("re-login failed"));
    proxy.assert_no_passwords();
}

#[tokio::test]
async fn a_guest_login_is_never_kept_nor_resumed() {
    let dir = TempDir::new("rvguest");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], "[resume]\nnever = [\"b?b\"]\n"));
    let g1 = Client::login_with(proxy.addr, "connect guest guest").await;
    let first = game
        .events()
        .into_iter()
        .find(|e| e["t"] == "login" && e["user"] != "heartbeat")
        .expect("the guest's login");
    assert_eq!(first["user"], "Guest1");
    let conn = first["conn"].clone();
    g1.reset();
    // Its game session ends with the link, as without holdfast; nothing
    // is kept for a stranger.
    game.wait_event("the guest's link closed", |e| {
        e["t"] == "close" && e["conn"] == conn
    })
    .await;
    let g2 = Client::login_with(proxy.addr, "connect guest guest").await;
    assert!(!g2.text.contains(RESUMED), "{}", g2.text);
    // A fresh guest character: the game saw a second guest login.
    let guests = game
        .events()
        .into_iter()
        .filter(|e| e["t"] == "login" && e["user"].as_str().is_some_and(|u| u.starts_with("Guest")))
        .count();
    assert_eq!(guests, 2);
    // A `resume.never` pattern: the same for Bob.
    let bob = Client::login(proxy.addr, "Bob", "bobpw").await;
    let conn = game.logins("Bob")[0].clone();
    bob.reset();
    game.wait_event("Bob's link closed", |e| {
        e["t"] == "close" && e["conn"] == conn
    })
    .await;
    assert!(!proxy.logs().contains("session detached"));
}

#[tokio::test]
async fn the_owner_resumes_past_a_stale_entry_under_the_same_name() {
    let dir = TempDir::new("rvstale");
    let accounts = dir.path("accounts");
    let mut game = Game::start(&dir, &["--accounts", accounts.to_str().unwrap()]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    // Two of Alice's connections; from one she changes her password and
    // leaves, then logs in with the new one.
    let old = Client::login(proxy.addr, "Alice", "alicepw").await;
    let mut c2 = Client::login(proxy.addr, "Alice", "alicepw").await;
    c2.send("@password alicepw=newpw").await;
    c2.expect("Password changed.").await;
    c2.send("QUIT").await;
    c2.expect_closed().await;
    let new = Client::login(proxy.addr, "Alice", "newpw").await;
    // Both links drop, the old one last: two detached sessions.
    new.reset();
    wait_log_count(&proxy, "session detached", 1).await;
    old.reset();
    wait_log_count(&proxy, "session detached", 2).await;
    // A restart: the old one's re-login fails (stale), the new one's works.
    game.kill();
    game.restart();
    wait_log_count(&proxy, "re-login failed", 1).await;
    let t0 = Instant::now();
    while game.logins("Alice").len() < 4 {
        assert!(
            t0.elapsed() < WAIT,
            "the kept session was not logged back in"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut alice = Client::connect(proxy.addr).await;
    alice.expect("connect").await;
    alice.send("connect Alice newpw").await;
    alice.expect(RESUMED).await;
    alice.send("think still me").await;
    alice.expect("still me").await;
    proxy.wait_log("stale detached session gives way").await;
}

/// The same at a PennMUSH: its own messages for `@password` and for the
/// old password (`player.c:234-235, 633-640`).
#[tokio::test]
async fn at_a_pennmush_too() {
    let dir = TempDir::new("rvpenn");
    let game = Game::start(&dir, &["--flavor", "pennmush"]);
    let extra = "flavor = \"pennmush\"\n[client_ip]\nmode = \"command\"\n";
    let proxy = Proxy::start(&dir, &config_for(&[&game], extra));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    alice.send("@password alicepw=brand-new-secret").await;
    alice.expect("You have changed your password.").await;
    alice.reset();
    proxy.wait_log("session detached").await;
    let mut old = Client::connect(proxy.addr).await;
    old.expect("connect").await;
    old.send("connect Alice alicepw").await;
    old.expect("That is not the correct password.").await;
    old.collect_for(Duration::from_millis(300)).await;
    assert!(!old.text.contains(RESUMED), "{}", old.text);
    let mut alice = Client::connect(proxy.addr).await;
    alice.expect("connect").await;
    alice.send("connect Alice brand-new-secret").await;
    alice.expect(RESUMED).await;
    alice.send("think still me").await;
    alice.expect("still me").await;
    assert!(!alice.text.contains("Last connect"), "{}", alice.text);
}
