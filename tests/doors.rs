//! Front doors (issue 15): telnet over TLS, WebSocket players, MSSP.
//! Real holdfast, real fakemush, real rustls and WebSocket clients.

mod common;
#[path = "doors/conn.rs"]
mod conn;

use std::process::Command;
use std::time::Duration;

use common::*;
use conn::*;

const OFFLINE: &str = "Test MUSH is down. Your connection is being held";
const ONLINE: &str = "You have been logged back in.";

/// The config for one game with a TLS listener on `cert`/`key` in `dir`.
fn tls_config(game: &Game, dir: &TempDir, name: &str, extra: &str) -> String {
    config_for(
        &[game],
        &format!(
            "[listen]\naddrs = [\"127.0.0.1:0\"]\ntls_addrs = [\"127.0.0.1:0\"]\n{extra}\n\
             [tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            dir.path(&format!("{name}.pem")).display().to_string(),
            dir.path(&format!("{name}.key")).display().to_string(),
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_player_logs_in_and_survives_a_game_restart() {
    let dir = TempDir::new("doors-tls");
    make_cert(&dir, "a");
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &tls_config(&game, &dir, "a", ""));
    let (w, cert) = tls_connect(&dir, proxy.door("tls"), "127.0.0.2").await;
    assert_eq!(cert, cert_der(&dir.path("a.pem")));
    let mut c = Conn::new(w);
    c.expect("connect <name>").await;
    c.send("connect Alice alicepw").await;
    c.expect("Last connect was from 127.0.0.2").await;
    c.send("think [host(me)]").await;
    c.expect("127.0.0.2").await;
    let login = game.wait_event("Alice login", |e| e["t"] == "login" && e["user"] == "Alice");
    assert_eq!(login["host"], "127.0.0.2");

    game.kill();
    c.expect(OFFLINE).await;
    c.expect_open_for(Duration::from_millis(200)).await;
    game.restart();
    c.expect(ONLINE).await;
    c.send("say over TLS again").await;
    c.expect("You say, \"over TLS again\"").await;
    let logins: Vec<_> = game
        .events()
        .into_iter()
        .filter(|e| e["t"] == "login" && e["user"] == "Alice")
        .collect();
    assert_eq!(logins.len(), 2, "{logins:?}");
    assert!(
        logins.iter().all(|e| e["host"] == "127.0.0.2"),
        "{logins:?}"
    );
    proxy.assert_no_passwords();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_new_certificate_and_keeps_sessions() {
    let dir = TempDir::new("doors-tls-hup");
    make_cert(&dir, "a");
    make_cert(&dir, "b");
    // The operator's paths; renewing overwrites them, as certbot does.
    std::fs::copy(dir.path("a.pem"), dir.path("live.pem")).unwrap();
    std::fs::copy(dir.path("a.key"), dir.path("live.key")).unwrap();
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &tls_config(&game, &dir, "live", ""));
    let (w, cert) = tls_connect(&dir, proxy.door("tls"), "127.0.0.1").await;
    assert_eq!(cert, cert_der(&dir.path("a.pem")));
    let mut first = Conn::new(w);
    first.login("Alice", "alicepw").await;

    std::fs::copy(dir.path("b.pem"), dir.path("live.pem")).unwrap();
    std::fs::copy(dir.path("b.key"), dir.path("live.key")).unwrap();
    proxy.sighup();
    proxy.wait_log("config reloaded");
    let (w, cert) = tls_connect(&dir, proxy.door("tls"), "127.0.0.1").await;
    assert_eq!(cert, cert_der(&dir.path("b.pem")), "the new pair is served");
    let mut second = Conn::new(w);
    second.login("Bob", "bobpw").await;
    first.send("say still here").await;
    first.expect("You say, \"still here\"").await;
    second.expect("Alice says, \"still here\"").await;

    // A broken pair (b's certificate with a's key) changes nothing.
    std::fs::copy(dir.path("a.key"), dir.path("live.key")).unwrap();
    proxy.sighup();
    proxy.wait_log("config reload failed");
    assert!(
        proxy
            .logs()
            .contains("the key does not match the certificate"),
        "{}",
        proxy.logs()
    );
    let (_w, cert) = tls_connect(&dir, proxy.door("tls"), "127.0.0.1").await;
    assert_eq!(cert, cert_der(&dir.path("b.pem")), "the running pair stays");
    first.send("say after the broken reload").await;
    first.expect("You say, \"after the broken reload\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tls_handshake_is_closed_and_not_counted_after() {
    let dir = TempDir::new("doors-tls-slow");
    make_cert(&dir, "a");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &tls_config(
            &game,
            &dir,
            "a",
            "handshake_timeout = \"500ms\"\n[limits]\nmax_unauthenticated = 1\n",
        ),
    );
    // Connect and say nothing: the handshake holds the one slot for
    // players not logged in, until its timeout closes it.
    let mut idle = tokio::net::TcpStream::connect(proxy.door("tls"))
        .await
        .unwrap();
    assert!(
        try_tls_connect(&dir, proxy.door("tls"), "127.0.0.1")
            .await
            .is_none(),
        "a handshake in progress counts as a player not logged in"
    );
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut idle, &mut buf))
        .await
        .expect("the proxy closes a stalled handshake");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    // The slot is free again (the proxy frees it just after closing, so
    // a refused attempt may come first): a real player gets in.
    let t0 = std::time::Instant::now();
    let mut c = loop {
        if let Some((w, _)) = try_tls_connect(&dir, proxy.door("tls"), "127.0.0.1").await {
            break Conn::new(w);
        }
        assert!(t0.elapsed() < WAIT, "the handshake's slot was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    c.login("Alice", "alicepw").await;
}

fn check(config: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["check", "-c"])
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_reports_tls_file_problems_at_their_key() {
    let dir = TempDir::new("doors-check");
    make_cert(&dir, "a");
    make_cert(&dir, "b");
    let write = |cert: &str, key: &str| {
        let p = dir.path("check.toml");
        std::fs::write(
            &p,
            format!(
                "[listen]\ntls_addrs = [\"127.0.0.1:4203\"]\n[tls]\ncert_file = {:?}\nkey_file = {:?}\n\
                 [[backends]]\nname = \"a\"\naddr = \"127.0.0.1:4202\"\n",
                dir.path(cert).display().to_string(),
                dir.path(key).display().to_string()
            ),
        )
        .unwrap();
        p
    };
    let (ok, text) = check(&write("a.pem", "a.key"));
    assert!(ok, "{text}");
    let (ok, text) = check(&write("missing.pem", "a.key"));
    assert!(!ok);
    assert!(text.contains("check.toml:4:13: cannot read"), "{text}");
    let (ok, text) = check(&write("a.pem", "missing.key"));
    assert!(!ok);
    assert!(text.contains("check.toml:5:12: cannot read"), "{text}");
    let (ok, text) = check(&write("a.pem", "b.key"));
    assert!(!ok);
    assert!(
        text.contains("check.toml:5:12:")
            && text.contains("the key does not match the certificate"),
        "{text}"
    );
    let (ok, text) = check(&write("a.pem", "a.pem"));
    assert!(!ok);
    assert!(
        text.contains("check.toml:5:12:") && text.contains("no usable private key"),
        "{text}"
    );
    // TLS listeners without [tls].
    let p = dir.path("notls.toml");
    std::fs::write(
        &p,
        "[listen]\ntls_addrs = [\"127.0.0.1:4203\"]\n[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:4202\"\n",
    )
    .unwrap();
    let (ok, text) = check(&p);
    assert!(!ok);
    assert!(
        text.contains("notls.toml:2:13: TLS listeners need a [tls] section"),
        "{text}"
    );
}
