//! A boot stays a boot (issue 23): a player the game closes while the
//! same game process runs is closed after the game's last words, never
//! held and logged back in, whatever holdfast did meanwhile (started,
//! upgraded, replaced its heartbeat connection); a crash after each still
//! holds everyone and logs them back in.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

const OFFLINE: &str = "Test MUSH is down. Your connection is being held";
const ONLINE: &str = "You have been logged back in.";
const BOOTED: &str = "You have been booted off the game by Wiz.";

/// A wizard logged in to the game directly (not through holdfast).
async fn wizard(game: &Game) -> Client {
    Client::login(game.addr, "Wiz", "wizpw").await
}

/// `@boot <who>` from `wiz`, and the game's confirmation.
async fn boot(wiz: &mut Client, who: &str) {
    wiz.send(&format!("@boot {who}")).await;
    wiz.expect(&format!("You booted {who} off!")).await;
}

/// The booted player got the game's last words, then was closed, with no
/// word from holdfast.
async fn assert_closed_after_last_words(p: &mut Client) {
    p.expect(BOOTED).await;
    p.expect_closed().await;
    assert!(
        !p.text.contains("[holdfast]") && !p.text.contains(OFFLINE),
        "the booted player was held: {}",
        p.text
    );
}

/// kill -9 and restart the game: `p` is held and logged back in.
async fn assert_crash_still_holds(game: &mut Game, p: &mut Client) {
    game.restart();
    p.expect(OFFLINE).await;
    p.expect(ONLINE).await;
    p.send("say back again").await;
    p.expect("You say, \"back again\"").await;
}

#[tokio::test]
async fn a_boot_right_after_start_is_a_boot() {
    // Players who connect as holdfast starts may reach the game before its
    // probe does; their boot must not read as a restart.
    for round in 0..6 {
        let dir = TempDir::new("boot-start");
        let mut game = Game::start(&dir, &[]);
        let mut wiz = wizard(&game).await;
        let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
        // Three connections of Alice's: each one must not be held.
        let (mut a1, mut a2, mut a3, mut bob) = tokio::join!(
            Client::login(proxy.addr, "Alice", "alicepw"),
            Client::login(proxy.addr, "Alice", "alicepw"),
            Client::login(proxy.addr, "Alice", "alicepw"),
            Client::login(proxy.addr, "Bob", "bobpw"),
        );
        boot(&mut wiz, "Alice").await;
        for a in [&mut a1, &mut a2, &mut a3] {
            assert_closed_after_last_words(a).await;
        }
        proxy.wait_log("reason=\"booted\"").await;
        assert!(
            !proxy.logs().contains("backend gone; holding"),
            "round {round}: held after a boot:\n{}",
            proxy.logs()
        );
        assert_crash_still_holds(&mut game, &mut bob).await;
    }
}

#[tokio::test]
async fn a_boot_after_an_upgrade_is_a_boot() {
    let dir = TempDir::new("boot-upgrade");
    let mut game = Game::start(&dir, &[]);
    let mut proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;
    let mut wiz = wizard(&game).await;
    proxy.upgrade();
    boot(&mut wiz, "Alice").await;
    assert_closed_after_last_words(&mut alice).await;
    // Twice: the coverage crosses every upgrade.
    proxy.upgrade();
    bob.send("say still here").await;
    bob.expect("You say, \"still here\"").await;
    assert_crash_still_holds(&mut game, &mut bob).await;
}

#[tokio::test]
async fn a_boot_after_the_heartbeat_was_booted_is_a_boot() {
    let dir = TempDir::new("boot-hb");
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;
    let mut wiz = wizard(&game).await;
    boot(&mut wiz, "heartbeat").await;
    // The probe logs in again at once; the recipe waits 3 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    boot(&mut wiz, "Alice").await;
    assert_closed_after_last_words(&mut alice).await;
    // Players are not told about the heartbeat's logout and login.
    let seen = bob.collect_for(Duration::from_millis(300)).await;
    assert!(!bob.text.contains("heartbeat has"), "{seen}");
    assert_crash_still_holds(&mut game, &mut bob).await;
}

#[tokio::test]
async fn without_a_start_time_a_later_boot_is_still_a_boot() {
    // Evennia has no start time to read: coverage alone decides. The
    // heartbeat's connection is replaced, then a boot seconds later is
    // still a boot, and a crash still holds.
    let dir = TempDir::new("boot-evennia");
    let mut game = Game::start(&dir, &["--flavor", "evennia"]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], "flavor = \"evennia\""));
    let mut alice = evennia_login(proxy.addr, "Alice", "alicepw").await;
    let mut bob = evennia_login(proxy.addr, "Bob", "bobpw").await;
    let mut wiz = evennia_login(game.addr, "Wiz", "wizpw").await;
    wiz.send("@boot heartbeat").await;
    wiz.expect("You booted heartbeat off!").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    wiz.send("@boot Alice").await;
    wiz.expect("You booted Alice off!").await;
    assert_closed_after_last_words(&mut alice).await;
    game.restart();
    bob.expect(OFFLINE).await;
    bob.expect(ONLINE).await;
}

async fn evennia_login(addr: SocketAddr, user: &str, pass: &str) -> Client {
    let mut c = Client::connect(addr).await;
    c.expect("connect").await;
    c.send(&format!("connect {user} {pass}")).await;
    c.expect(&format!("You become {user}.")).await;
    c
}

#[tokio::test]
async fn a_boot_during_an_upgrade_is_a_boot() {
    let dir = TempDir::new("boot-handover");
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start_with(
        &dir,
        &config_for(&[&game], ""),
        "holdfast=debug",
        &[("HOLDFAST_UPGRADE_BATCH", "1")],
    );
    // Alice is the first session, so the first to cross.
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;
    // A player who stops reading while the game floods them: their
    // session cannot stop until they read again, so the handover lasts
    // until then, with Alice already in the new process.
    let mut slow = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0; 4096];
        let _ = slow.read(&mut buf).await.unwrap();
        slow.write_all(b"connect Bob bobpw\r\nspam 40000000\r\n")
            .await
            .unwrap();
    }
    let mut wiz = wizard(&game).await;
    // Wait until the flood has filled the socket buffers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let upgrade = tokio::task::spawn_blocking(move || {
        let mut proxy = proxy;
        proxy.upgrade();
        proxy
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Alice runs in the new process; the old one still waits for the
    // slow reader.
    boot(&mut wiz, "Alice").await;
    assert_closed_after_last_words(&mut alice).await;
    // The slow reader reads again: the handover finishes.
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0; 1 << 16];
        while let Ok(n) = slow.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    let proxy = upgrade.await.unwrap();
    proxy.wait_log("reason=\"booted\"").await;
    assert_crash_still_holds(&mut game, &mut bob).await;
    reader.abort();
}

#[tokio::test]
async fn players_see_no_heartbeat_news_across_an_upgrade() {
    let dir = TempDir::new("boot-hbnews");
    let game = Game::start(&dir, &[]);
    let mut proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    for _ in 0..3 {
        proxy.upgrade();
    }
    // The heartbeat was not logged in again: the game saw no new login.
    let hb_logins = game
        .events()
        .into_iter()
        .filter(|e| e["t"] == "login" && e["user"] == "heartbeat")
        .count();
    assert_eq!(hb_logins, 1, "the heartbeat's connection crossed");
    alice.send("say after").await;
    alice.expect("You say, \"after\"").await;
    alice.collect_for(Duration::from_millis(300)).await;
    assert!(
        !alice.text.contains("heartbeat has"),
        "a heartbeat announcement reached a player: {}",
        alice.text
    );
}
