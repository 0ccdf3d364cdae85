//! Logins besides `connect <name> <password>` (issue 23, part 3): a
//! character without a password and a player who entered with `create`
//! are logins where the game takes them as such, and are logged back in
//! after a restart; a failed re-login shows the connect screen once.

mod common;

use std::time::Duration;

use common::*;

/// The last line of fakemush's connect screen.
const SCREEN_END: &str = "Use \"connect <name> <password>\" to connect.";

/// Kills and restarts the game; `c` must be logged back in.
async fn restart_and_expect_relogin(game: &mut Game, c: &mut Client, user: &str) {
    let before = game.logins(user).len();
    game.kill();
    game.restart();
    c.expect("You have been logged back in").await;
    assert_eq!(game.logins(user).len(), before + 1);
    c.send("think still me").await;
    c.expect("still me").await;
}

#[tokio::test]
async fn a_character_without_a_password_is_logged_back_in() {
    for flavor in ["tinymush", "pennmush"] {
        let dir = TempDir::new("lfnopass");
        let mut game = Game::start(
            &dir,
            &[
                "--flavor",
                flavor,
                "--user",
                "heartbeat:hbpass:wizard",
                "--user",
                "One:",
            ],
        );
        let extra = format!("flavor = \"{flavor}\"\n[client_ip]\nmode = \"command\"\n");
        let proxy = Proxy::start(&dir, &config_for(&[&game], &extra));
        let mut one = Client::login_with(proxy.addr, "connect One").await;
        proxy.wait_log("user=One").await;
        restart_and_expect_relogin(&mut game, &mut one, "One").await;
        assert!(
            !one.text.contains("log in by hand"),
            "{flavor}: {}",
            one.text
        );
    }
}

#[tokio::test]
async fn a_player_who_entered_with_create_is_logged_back_in() {
    let dir = TempDir::new("lfcreate");
    let accounts = dir.path("accounts");
    let mut game = Game::start(&dir, &["--accounts", accounts.to_str().unwrap()]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut newbie = Client::login_with(proxy.addr, "create Newbie newbiepw").await;
    proxy.wait_log("user=Newbie").await;
    restart_and_expect_relogin(&mut game, &mut newbie, "Newbie").await;
    // Logged back in with `connect`, not by creating it again.
    let lines: Vec<String> = game
        .events()
        .into_iter()
        .filter(|e| e["t"] == "line")
        .filter_map(|e| e["line"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("create")).count(),
        1,
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("connect Newbie")),
        "{lines:?}"
    );
    proxy.assert_no_passwords();
}

#[tokio::test]
async fn a_failed_relogin_shows_the_connect_screen_once() {
    let dir = TempDir::new("lfscreen");
    let accounts = dir.path("accounts");
    let mut game = Game::start(&dir, &["--accounts", accounts.to_str().unwrap()]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    // Her password changes from another connection; holdfast cannot know.
    let mut other = Client::login(proxy.addr, "Alice", "alicepw").await;
    other.send("@password alicepw=changed").await;
    other.expect("Password changed.").await;
    other.send("QUIT").await;
    other.expect_closed().await;
    let from = alice.text.len();
    game.kill();
    game.restart();
    alice.expect("logging you back in failed").await;
    alice.collect_for(Duration::from_millis(800)).await;
    let after = &alice.text[from..];
    assert_eq!(after.matches(SCREEN_END).count(), 1, "{after}");
    let refusal = after
        .find("Either that player")
        .expect("the game's refusal");
    assert!(after.find(SCREEN_END).unwrap() < refusal, "{after}");
    // And the player logs in by hand on that screen.
    alice.send("connect Alice changed").await;
    alice.expect("Last connect was from").await;
}
