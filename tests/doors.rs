//! Front doors (issue 15): telnet over TLS, WebSocket players, MSSP.
//! Real holdfast, real fakemush, real rustls and WebSocket clients.

mod common;
#[path = "doors/conn.rs"]
mod conn;

use std::time::Duration;

use common::certs::make_cert;
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
    let login = game
        .wait_event("Alice login", |e| e["t"] == "login" && e["user"] == "Alice")
        .await;
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
    proxy.wait_log("config reloaded").await;
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
    proxy.wait_log("config reload failed").await;
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
    let out = holdfast_check(config);
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
    assert!(
        text.contains("tls 127.0.0.1:4203") && text.contains("(the key matches)"),
        "{text}"
    );
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

fn ws_config(game: &Game, extra: &str) -> String {
    config_for(
        &[game],
        &format!("[listen]\naddrs = [\"127.0.0.1:0\"]\nws_addrs = [\"127.0.0.1:0\"]\n{extra}\n"),
    )
}

const TELNET: &str = "telnet.mudstandards.org";
const TERMINAL: &str = "terminal.mudstandards.org";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_players_of_each_subprotocol_log_in_and_survive_a_restart() {
    let dir = TempDir::new("doors-ws");
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &ws_config(&game, "ws_trusted_proxies = [\"127.0.0.1/32\"]"),
    );
    let addr = proxy.door("ws");
    // The telnet stream, through a trusted reverse proxy.
    let (mut alice, p) = ws_player(
        addr,
        "127.0.0.1",
        &["x.example", TERMINAL, TELNET],
        &[("X-Forwarded-For", "203.0.113.9")],
    )
    .await;
    assert_eq!(
        p.as_deref(),
        Some(TELNET),
        "holdfast prefers the telnet stream"
    );
    alice.login("Alice", "alicepw").await;
    // Terminal text from an untrusted peer: its X-Forwarded-For is ignored.
    let (mut bob, p) = ws_player(
        addr,
        "127.0.0.2",
        &[TERMINAL],
        &[("X-Forwarded-For", "6.6.6.6")],
    )
    .await;
    assert_eq!(p.as_deref(), Some(TERMINAL));
    bob.login("Bob", "bobpw").await;
    // No subprotocol: text frames.
    let (mut wiz, p) = ws_player(addr, "127.0.0.3", &[], &[]).await;
    assert_eq!(p, None);
    wiz.login("Wiz", "wizpw").await;

    for (u, want) in [
        ("Alice", "203.0.113.9"),
        ("Bob", "127.0.0.2"),
        ("Wiz", "127.0.0.3"),
    ] {
        let e = game
            .wait_event(u, |e| e["t"] == "login" && e["user"] == u)
            .await;
        assert_eq!(e["host"].as_str().unwrap(), want);
    }
    // Terminal and text players get no telnet at all.
    assert!(!bob.raw.contains(&255), "telnet reached a terminal player");
    assert!(!wiz.raw.contains(&255), "telnet reached a text player");
    assert!(alice.raw.contains(&255), "the telnet player gets telnet");

    game.kill();
    alice.expect(OFFLINE).await;
    bob.expect(OFFLINE).await;
    wiz.expect(OFFLINE).await;
    game.restart();
    alice.expect(ONLINE).await;
    bob.expect(ONLINE).await;
    wiz.expect(ONLINE).await;
    bob.send("say from a terminal").await;
    bob.expect("You say, \"from a terminal\"").await;
    alice.expect("Bob says, \"from a terminal\"").await;
    wiz.expect("Bob says, \"from a terminal\"").await;
    assert!(!bob.raw.contains(&255));
    proxy.assert_no_passwords();
}

/// Waits for the proxy's close frame; returns its code.
async fn close_code(c: &mut Conn<WsWire>) -> u16 {
    c.expect_closed().await;
    c.w.closed_with.as_ref().map(|f| f.0).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_websocket_input_is_refused_with_the_right_close_code() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new("doors-ws-bad");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &ws_config(&game, "handshake_timeout = \"500ms\""));
    let addr = proxy.door("ws");

    // A frame without the client's mask: protocol error, 1002.
    let (mut c, _) = ws_player(addr, "127.0.0.1", &[TELNET], &[]).await;
    c.expect("connect <name>").await;
    c.w.ws
        .get_mut()
        .write_all(&[0x82, 3, b'a', b'b', b'c'])
        .await
        .unwrap();
    assert_eq!(close_code(&mut c).await, 1002);

    // A message over the limit: 1009.
    let (mut c, _) = ws_player(addr, "127.0.0.1", &[TELNET], &[]).await;
    c.expect("connect <name>").await;
    c.w.send_bytes(&vec![b'x'; 100 * 1024]).await;
    assert_eq!(close_code(&mut c).await, 1009);

    // Text that is not UTF-8 on the terminal subprotocol: 1007.
    let (mut c, _) = ws_player(addr, "127.0.0.1", &[TERMINAL], &[]).await;
    c.expect("connect <name>").await;
    c.w.send_bytes(b"say \xC0\xFF\r\n").await;
    assert_eq!(close_code(&mut c).await, 1007);

    // A handshake that stalls halfway is closed after handshake_timeout.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(WAIT, slow.read(&mut buf))
        .await
        .expect("a stalled handshake is closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

    // Not a WebSocket request at all: 400, and a wrong path 404.
    for (req, want) in [
        (
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "400 Bad Request",
        ),
        ("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", "404 Not Found"),
        ("\x16\x03\x01garbage\r\n\r\n", "400 Bad Request"),
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        let out = String::from_utf8_lossy(&out);
        assert!(
            out.starts_with(&format!("HTTP/1.1 {want}")),
            "{req:?}: {out}"
        );
    }

    // The proxy is still there for everyone else.
    let (mut c, _) = ws_player(addr, "127.0.0.1", &[TELNET], &[]).await;
    c.login("Alice", "alicepw").await;
    assert!(proxy.logs().contains("WebSocket session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_player_logs_in_over_tls_and_the_page_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new("doors-wss");
    make_cert(&dir, "a");
    let game = Game::start(&dir, &[]);
    let cfg = tls_config(
        &game,
        &dir,
        "a",
        "wss_addrs = [\"127.0.0.1:0\"]\nws_addrs = [\"127.0.0.1:0\"]",
    );
    let proxy = Proxy::start(&dir, &cfg);
    let mut c = wss_player(&dir, proxy.door("wss")).await;
    c.login("Alice", "alicepw").await;
    c.send("say over wss").await;
    c.expect("You say, \"over wss\"").await;
    // GET / serves the web client.
    let mut s = tokio::net::TcpStream::connect(proxy.door("ws"))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(
        out.contains("text/html") && out.contains("<title>holdfast"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_keepalive_keeps_live_clients_and_closes_silent_ones() {
    let dir = TempDir::new("doors-ws-ping");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &ws_config(&game, "ws_ping_interval = \"200ms\""));
    let (mut live, _) = ws_player(proxy.door("ws"), "127.0.0.1", &[TELNET], &[]).await;
    live.login("Alice", "alicepw").await;
    let (mut silent, _) = ws_player(proxy.door("ws"), "127.0.0.1", &[TELNET], &[]).await;
    silent.login("Bob", "bobpw").await;
    // The live client reads (and so answers pings) for many intervals;
    // the silent one reads nothing meanwhile.
    live.expect_open_for(Duration::from_millis(1500)).await;
    live.send("say still alive").await;
    live.expect("You say, \"still alive\"").await;
    assert_eq!(close_code(&mut silent).await, 1001);
}
