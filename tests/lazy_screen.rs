//! Lazy connect's cached connect screen follows the game's: when a lazy
//! player's game connection shows a screen other than the copy the player
//! got, the copy is dropped, the next new player connects at once and
//! gets the game's new screen, and the connection that waits at it keeps
//! the new copy. A screen that keeps changing (a player count) is dropped
//! at most once in 30 s. Real holdfast, real fakemush whose screen a file
//! sets (`--screen-file`).

mod common;

use std::time::Duration;

use common::*;

const LOGGED_IN: &str = "Last connect was from";

fn set_screen(dir: &TempDir, text: &str) {
    std::fs::write(dir.path("screen.txt"), text).unwrap();
}

/// A new player's connect screen (up to its last line).
async fn screen_of(c: &mut Client) -> String {
    c.expect("to connect.").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_connect_screen_replaces_the_cached_copy() {
    let dir = TempDir::new("lazy-screen");
    set_screen(&dir, "Today: the old news.");
    let file = dir.path("screen.txt").display().to_string();
    let game = Game::start(&dir, &["--screen-file", &file]);
    // TinyMUX, no client address: lazy connect is on by default.
    let proxy = Proxy::start(
        &dir,
        &config_for(
            &[&game],
            "flavor = \"tinymux\"\n[listen]\naddrs = [\"127.0.0.1:0\"]\n",
        ),
    );
    proxy.wait_log("connect screen kept for lazy connect").await;

    // The first player gets the cached (old) screen; the game's changes
    // meanwhile; the player's own connection shows the new one.
    let mut alice = Client::connect(proxy.addr).await;
    assert!(screen_of(&mut alice).await.contains("the old news"));
    set_screen(&dir, "Today: the NEW news.");
    alice.send("connect Alice alicepw").await;
    let seen = alice.expect(LOGGED_IN).await;
    assert!(seen.contains("NEW news"), "{seen:?}");

    // The next player gets the game's new screen, not the stale copy.
    let mut bob = Client::connect(proxy.addr).await;
    let screen = screen_of(&mut bob).await;
    assert!(
        screen.contains("the NEW news") && !screen.contains("old news"),
        "{screen:?}"
    );
    // Bob waits at it: his connection's screen is the new copy, which the
    // next player gets at once (lazily).
    proxy
        .wait_log("connect screen kept for lazy connect (a player's connection showed it)")
        .await;
    let mut carol = Client::connect(proxy.addr).await;
    let screen = screen_of(&mut carol).await;
    assert!(screen.contains("the NEW news"), "{screen:?}");

    // A screen that changes for every connection (a player count): the
    // copy is not dropped again within 30 s; new players still get it at
    // once, and log in.
    set_screen(&dir, "Today: 7 players online.");
    carol.send("connect Wiz wizpw").await;
    carol.expect(LOGGED_IN).await;
    let conns = || game.events().iter().filter(|e| e["t"] == "conn").count();
    let before = conns();
    let mut dave = Client::connect(proxy.addr).await;
    let screen = screen_of(&mut dave).await;
    assert!(
        screen.contains("the NEW news"),
        "the copy is kept: {screen:?}"
    );
    // From the cache: no game connection for Dave yet.
    dave.collect_for(Duration::from_millis(200)).await;
    assert_eq!(conns(), before);
    let logs = proxy.logs();
    assert_eq!(
        logs.matches("the game's connect screen changed").count(),
        1,
        "{logs}"
    );
    assert!(logs.contains("not dropped"), "{logs}");
    dave.send("connect Bob bobpw").await;
    dave.expect(LOGGED_IN).await;
    drop(bob);
}
