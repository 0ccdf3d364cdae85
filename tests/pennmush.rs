//! PennMUSH behind holdfast (issue 9): a Unix-socket backend that reads the
//! `IP^HOSTNAME` header, for players and the heartbeat alike.

mod common;

use std::time::Duration;

use common::*;

const PENN: &[&str] = &["--flavor", "pennmush", "--pennmush-socket-header"];

#[tokio::test]
async fn game_sees_player_address_over_unix_socket() {
    let dir = TempDir::new("penn");
    let sock = dir.path("netmush.sock");
    let mut game = Game::start_unix(&dir, &sock, PENN);
    // flavor pennmush with only Unix backends defaults to the header mode.
    let proxy = Proxy::start(&dir, &config_for(&[&game], "flavor = \"pennmush\""));
    let mut c = Client::connect_from(proxy.addr, "127.0.0.2").await;
    c.expect("Welcome to FakeMUSH (pennmush flavor)").await;
    c.send("connect Alice alicepw").await;
    c.expect("Last connect was from 127.0.0.2").await;
    c.send("think [host(me)]").await;
    c.expect("127.0.0.2").await;
    let h = game
        .wait_event("header", |e| e["t"] == "header" && e["ip"] == "127.0.0.2")
        .await;
    assert_eq!(h["host"], "127.0.0.2", "no reverse DNS: the host is the IP");
    // The game must have had the header within its 100 ms window: a late
    // one would have made the host "localhost".
    let login = game
        .wait_event("login", |e| e["t"] == "login" && e["user"] == "Alice")
        .await;
    assert_eq!(login["host"], "127.0.0.2");

    // Restart over the same socket: re-login works, still with the address.
    game.kill();
    c.expect("is down").await;
    game.restart();
    c.expect("You have been logged back in.").await;
    c.send("think [host(me)]").await;
    c.expect("127.0.0.2").await;
    let logins: Vec<_> = game
        .events()
        .into_iter()
        .filter(|e| e["t"] == "login" && e["user"] == "Alice")
        .collect();
    // The log spans both runs of the game: the login and the re-login.
    assert_eq!(logins.len(), 2, "{logins:#?}");
    assert!(
        logins.iter().all(|l| l["host"] == "127.0.0.2"),
        "{logins:#?}"
    );
}

#[tokio::test]
async fn pennmush_failure_text_is_recognised() {
    let dir = TempDir::new("pennfail");
    let sock = dir.path("netmush.sock");
    let game = Game::start_unix(&dir, &sock, PENN);
    let proxy = Proxy::start(&dir, &config_for(&[&game], "flavor = \"pennmush\""));
    let mut c = Client::connect(proxy.addr).await;
    c.expect("connect <name>").await;
    c.send("connect Alice wrong").await;
    c.expect("That is not the correct password.").await;
    proxy.wait_log("login not confirmed").await;
    c.send("connect \"Alice\" alicepw").await;
    c.expect("Last connect was from").await;
    c.send("think settled").await;
    c.expect("settled").await;
    proxy.wait_log("logged in").await;
    c.expect_open_for(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn reverse_dns_names_the_host() {
    let dir = TempDir::new("pennrdns");
    let sock = dir.path("netmush.sock");
    let game = Game::start_unix(&dir, &sock, PENN);
    let proxy = Proxy::start(
        &dir,
        &config_for(
            &[&game],
            "flavor = \"pennmush\"\n[client_ip]\nreverse_dns = true",
        ),
    );
    // 127.0.0.1 is "localhost" in /etc/hosts: no network needed. The first
    // connection may beat the lookup (it never waits); a later one has it.
    let t0 = std::time::Instant::now();
    loop {
        let mut c = Client::connect(proxy.addr).await;
        c.expect("connect <name>").await;
        if game
            .events()
            .iter()
            .any(|e| e["t"] == "header" && e["host"] == "localhost")
        {
            break;
        }
        assert!(
            t0.elapsed() < WAIT,
            "no header with the host name: {:#?}",
            game.events()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn check_rejects_bad_socket_paths() {
    let dir = TempDir::new("penncheck");
    let not_sock = dir.path("plain-file");
    std::fs::write(&not_sock, "x").unwrap();
    for (addr, msg) in [
        (
            dir.path("missing.sock").display().to_string(),
            "does not exist",
        ),
        (not_sock.display().to_string(), "is not a Unix socket"),
    ] {
        let f = dir.path("c.toml");
        std::fs::write(
            &f,
            format!("[[backends]]\nname = \"p\"\naddr = \"unix:{addr}\"\n"),
        )
        .unwrap();
        let out = holdfast_check(&f);
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8_lossy(&out.stdout);
        let want = format!("{}:3:8: ", f.display());
        assert!(text.starts_with(&want) && text.contains(msg), "{text}");
    }
}
