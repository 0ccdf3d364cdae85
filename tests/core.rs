//! Core scenarios (issue 2): relay, login, real client IP, limits, QUIT,
//! PROXY headers, password hygiene. Real binaries over loopback.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn banner_login_and_say_round_trip() {
    let dir = TempDir::new("banner");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut c = Client::connect(proxy.addr).await;
    c.expect("Welcome to FakeMUSH").await;
    c.expect("connect <name> <password>").await;
    c.send("connect Alice alicepw").await;
    c.expect("Last connect was from").await;
    c.send("say hello through the proxy").await;
    c.expect("You say, \"hello through the proxy\"").await;
    // Besides the player's own line the game saw only the login marker.
    let lines = game.lines_from("Alice");
    let own: Vec<_> = lines
        .iter()
        .filter(|l| !l.starts_with("think hf-"))
        .collect();
    assert_eq!(own, vec!["say hello through the proxy"], "{lines:?}");
    proxy.wait_log("logged in").await;
}

#[tokio::test]
async fn game_sees_real_address_via_remotehost() {
    let dir = TempDir::new("remotehost");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut c = Client::connect_from(proxy.addr, "127.0.0.2").await;
    c.expect("connect <name>").await;
    c.send("connect Alice alicepw").await;
    c.expect("Last connect was from 127.0.0.2").await;
    c.send("think [host(me)]").await;
    c.expect("127.0.0.2").await;
    let login = game
        .wait_event("Alice login", |e| e["t"] == "login" && e["user"] == "Alice")
        .await;
    assert_eq!(login["host"], "127.0.0.2");
}

#[tokio::test]
async fn player_cannot_spoof_remotehost() {
    let dir = TempDir::new("spoof");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut c = Client::connect_from(proxy.addr, "127.0.0.2").await;
    c.expect("connect <name>").await;
    c.send("@remotehost 6.6.6.6").await;
    c.send("  @REMOTEHOST 6.6.6.6").await;
    c.send("connect Alice alicepw").await;
    c.expect("Last connect was from 127.0.0.2").await;
    c.send("@remotehost 6.6.6.6").await;
    c.send("think [host(me)]").await;
    c.expect("127.0.0.2").await;
    let ev = game.events();
    let spoofs: Vec<_> = ev
        .iter()
        .filter(|e| e.to_string().contains("6.6.6.6"))
        .collect();
    assert!(
        spoofs.is_empty(),
        "the game saw a spoof attempt: {spoofs:?}"
    );
    // The proxy's own @remotehost was accepted exactly once.
    let rh: Vec<_> = ev.iter().filter(|e| e["t"] == "remotehost").collect();
    assert_eq!(rh.len(), 1, "{ev:#?}");
    assert_eq!(rh[0]["ip"], "127.0.0.2");
}

#[tokio::test]
async fn quit_closes_after_goodbye() {
    let dir = TempDir::new("quit");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut c = Client::login(proxy.addr, "Alice", "alicepw").await;
    c.send("QUIT").await;
    c.expect("Goodbye. Come back soon!").await;
    c.expect_closed().await;
    assert!(
        !c.text.contains("[holdfast]"),
        "no proxy notice on a quit: {}",
        c.text
    );
    proxy.wait_log("reason=\"quit\"").await;
}

#[tokio::test]
async fn max_per_ip_and_max_sessions() {
    let dir = TempDir::new("limits");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &config_for(
            &[&game],
            "[listen]\naddrs = [\"127.0.0.1:0\"]\nmax_per_ip = 2\nmax_sessions = 3\n",
        ),
    );
    let mut a = Client::connect_from(proxy.addr, "127.0.0.2").await;
    a.expect("connect <name>").await;
    let mut b = Client::connect_from(proxy.addr, "127.0.0.2").await;
    b.expect("connect <name>").await;
    let mut refused = Client::connect_from(proxy.addr, "127.0.0.2").await;
    refused
        .expect("Too many connections from your address")
        .await;
    refused.expect_closed().await;
    // Another address still gets in, up to max_sessions.
    let mut c = Client::connect_from(proxy.addr, "127.0.0.3").await;
    c.expect("connect <name>").await;
    let mut full = Client::connect_from(proxy.addr, "127.0.0.4").await;
    full.expect("is full right now").await;
    full.expect_closed().await;
    // Leaving frees a place.
    drop(a);
    let t0 = std::time::Instant::now();
    loop {
        let mut d = Client::connect_from(proxy.addr, "127.0.0.4").await;
        let got = d.collect_for(Duration::from_millis(300)).await;
        if got.contains("Welcome to FakeMUSH") {
            break;
        }
        assert!(t0.elapsed() < WAIT, "place never freed: {got}");
    }
    b.expect_open_for(Duration::from_millis(10)).await;
}

#[tokio::test]
async fn login_timeout_closes_idle_session() {
    let dir = TempDir::new("logintimeout");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &config_for(
            &[&game],
            "[listen]\naddrs = [\"127.0.0.1:0\"]\nlogin_timeout = \"700ms\"\n",
        ),
    );
    let mut idle = Client::connect(proxy.addr).await;
    idle.expect("connect <name>").await;
    let mut player = Client::login(proxy.addr, "Alice", "alicepw").await;
    idle.expect("You did not log in in time").await;
    idle.expect_closed().await;
    // A logged-in player is not affected.
    player.expect_open_for(Duration::from_millis(900)).await;
    player.send("say still here").await;
    player.expect("You say, \"still here\"").await;
}

#[tokio::test]
async fn password_never_logged() {
    let dir = TempDir::new("pwlog");
    let game = Game::start(&dir, &["--user", "Carol:zq-UniquePw-77"]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut c = Client::connect(proxy.addr).await;
    c.expect("connect <name>").await;
    c.send("connect Carol zq-UniquePw-77").await;
    c.expect("Last connect was from").await;
    c.send("QUIT").await;
    c.expect_closed().await;
    proxy.wait_log("logged in").await;
    let logs = proxy.logs();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "logs were captured at a low level"
    );
    assert!(
        !logs.contains("zq-UniquePw-77"),
        "password in logs:\n{logs}"
    );
    assert!(!logs.contains("hbpass"), "heartbeat password in logs");
}

#[tokio::test]
async fn proxy_v1_and_v2_headers_are_exact() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    for (mode, want_v2) in [("proxy-v1", false), ("proxy-v2", true)] {
        let dir = TempDir::new(mode);
        // A bare TCP backend that greets every connection, keeps it open
        // and reports the first bytes it received.
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let baddr = backend.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = backend.accept().await else {
                    return;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = s.write_all(b"Welcome to a raw game\r\n").await;
                    let mut buf = vec![0u8; 256];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    buf.truncate(n);
                    let _ = tx.send(buf);
                    let mut sink = [0u8; 256];
                    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        let cfg = format!(
            "[heartbeat]\n[client_ip]\nmode = \"{mode}\"\n[[backends]]\nname = \"raw\"\naddr = \"{baddr}\"\n"
        );
        let proxy = Proxy::start(&dir, &cfg);
        let mut c = Client::connect_from(proxy.addr, "127.0.0.2").await;
        c.expect("Welcome to a raw game").await;
        let cport = c.stream().local_addr().unwrap().port();
        // Probe connections (no heartbeat user: connect-only) carry a
        // header too; find the player's by its source port.
        let header = loop {
            let buf = tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("player's header never arrived")
                .unwrap();
            let is_player = if want_v2 {
                buf.len() >= 28 && u16::from_be_bytes([buf[24], buf[25]]) == cport
            } else {
                String::from_utf8_lossy(&buf).contains(&format!(" {cport} "))
            };
            if is_player {
                break buf;
            }
        };
        let pport = proxy.addr.port();
        if want_v2 {
            let mut want = vec![
                0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
            ];
            want.extend_from_slice(&[0x21, 0x11, 0x00, 0x0C, 127, 0, 0, 2, 127, 0, 0, 1]);
            want.extend_from_slice(&cport.to_be_bytes());
            want.extend_from_slice(&pport.to_be_bytes());
            assert_eq!(header, want, "v2 header");
        } else {
            let want = format!("PROXY TCP4 127.0.0.2 127.0.0.1 {cport} {pport}\r\n");
            assert_eq!(String::from_utf8_lossy(&header), want);
        }
    }
}

#[test]
fn check_reports_errors_with_positions() {
    let dir = TempDir::new("check");
    let cases = [
        ("[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\nbogus = 1\n", "4:1", "bogus"),
        ("[heartbeat]\ninterval = \"fast\"\n[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n", "2:12", "invalid duration"),
        ("game = \"x\"\nbackends = []\n", "2:12", "empty"),
        (
            "[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:2\"\n",
            "5:8",
            "duplicate backend name",
        ),
    ];
    for (i, (text, pos, msg)) in cases.iter().enumerate() {
        let f = dir.path(&format!("c{i}.toml"));
        std::fs::write(&f, text).unwrap();
        let out = holdfast_check(&f);
        assert_eq!(out.status.code(), Some(1), "case {i}");
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("{}:{pos}: ", f.display());
        assert!(
            err.starts_with(&want),
            "case {i}: want prefix {want:?}, got {err:?}"
        );
        assert!(err.contains(msg), "case {i}: {err}");
    }
    // The sample config is valid (its heartbeat password comes from the
    // environment, as scripts/run.sh provides it).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .env("HOLDFAST_HEARTBEAT_PASSWORD", "hbpass")
        .args([
            "check",
            "-c",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("primary 127.0.0.1:4202 (preferred)"),
        "{summary}"
    );
}

#[test]
fn check_warns_about_world_readable_passwords() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("perm");
    let f = dir.path("c.toml");
    std::fs::write(&f, "[heartbeat]\nuser = \"hb\"\npassword = \"pw\"\n[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n").unwrap();
    let run = || {
        let out = holdfast_check(&f);
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(run().contains("readable by every user"));
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!run().contains("warning"));
}
