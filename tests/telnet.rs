//! The proxy owns the telnet layer (issue 4): negotiations settled once by
//! the player are answered and replayed to every new backend process, the
//! player's MCCP2 stream is the proxy's own and survives restarts, GMCP and
//! GA prompts pass at once. Real binaries over loopback, with a scripted
//! MUD client (`telnet/player.rs`) that decodes MCCP2 with its own zlib.

mod common;
#[path = "telnet/player.rs"]
mod player;
use common::*;
use holdfast::telnet::{opt, Verb, GA, IAC};
use player::{Caps, Got, Player};
use serde_json::Value;

/// Events the game logged since its `n`-th start (1 = first process).
fn since_start(game: &Game, n: usize) -> Vec<Value> {
    let evs = game.events();
    let mut starts = 0;
    let mut out = Vec::new();
    for e in evs {
        if e["t"] == "start" {
            starts += 1;
        }
        if starts == n {
            out.push(e);
        }
    }
    out
}

/// Waits until the game's `n`-th process logged an event matching `pred`.
async fn wait_since_start(
    game: &Game,
    n: usize,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    common::proc::until(
        &format!("process {n} of the game never logged {what}"),
        WAIT,
        || since_start(game, n).into_iter().find(|e| pred(e)),
        || format!("its log: {:#?}", since_start(game, n)),
    )
    .await
}

/// The conn id of the player's connection in the game's `n`-th process.
async fn player_conn(game: &Game, n: usize, user: &str) -> u64 {
    let e = wait_since_start(game, n, "the login", |e| {
        e["t"] == "login" && e["user"] == user
    })
    .await;
    e["conn"].as_u64().expect("login event has a conn")
}

/// Every notice starts a line: right after a newline or a GA/EOR prompt,
/// never inside a line or a telnet sequence.
fn assert_notices_at_line_starts(plain: &[u8]) {
    let needle = b"[holdfast]";
    let mut found = 0;
    for i in 0..plain.len().saturating_sub(needle.len() - 1) {
        if &plain[i..i + needle.len()] != needle {
            continue;
        }
        found += 1;
        let before = &plain[..i];
        let ok = before.is_empty()
            || before.ends_with(b"\n")
            || before.ends_with(&[IAC, GA])
            || before.ends_with(&[IAC, holdfast::telnet::EOR]);
        assert!(
            ok,
            "notice not at a line start: ...{:?}",
            String::from_utf8_lossy(&before[before.len().saturating_sub(40)..])
        );
    }
    assert!(found > 0, "no notice found at all");
}

/// Restarts the game and waits until the player is logged back in.
async fn restart_and_wait(proxy: &Proxy, game: &mut Game, p: &mut Player) {
    // Only a confirmed login is restored: wait for the proxy to know it.
    proxy.wait_log("logged in").await;
    // Down first, then up: a game back within the probe's check would
    // look alive and the closed connection like a boot (see ha.rs).
    game.kill();
    p.expect("is down").await;
    game.restart();
    p.expect("is back").await;
}

#[tokio::test]
async fn restarted_game_gets_the_window_size_without_asking_the_player() {
    let dir = TempDir::new("naws");
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut p = Player::login(proxy.addr, Caps::default(), "Alice", "alicepw").await;
    let c1 = player_conn(&game, 1, "Alice").await;
    wait_since_start(&game, 1, "NAWS 132x50", |e| {
        e["t"] == "naws" && e["conn"] == c1 && e["w"] == 132 && e["h"] == 50
    })
    .await;
    wait_since_start(&game, 1, "TTYPE", |e| {
        e["t"] == "ttype" && e["conn"] == c1 && e["value"] == "TESTCLIENT"
    })
    .await;

    restart_and_wait(&proxy, &mut game, &mut p).await;
    let c2 = player_conn(&game, 2, "Alice").await;
    // The new process got the size and terminal type.
    let naws = wait_since_start(&game, 2, "the replayed NAWS", |e| {
        e["t"] == "naws" && e["conn"] == c2
    })
    .await;
    assert_eq!(
        (naws["w"].as_u64(), naws["h"].as_u64()),
        (Some(132), Some(50))
    );
    wait_since_start(&game, 2, "the replayed TTYPE", |e| {
        e["t"] == "ttype" && e["conn"] == c2 && e["value"] == "TESTCLIENT"
    })
    .await;
    // The player was asked once, by the first process, and never again.
    p.send("say still here").await;
    p.expect("You say, \"still here\"").await;
    for g in [
        Got::Neg(Verb::Do, opt::NAWS),
        Got::Neg(Verb::Do, opt::TTYPE),
        Got::Neg(Verb::Will, opt::EOR_OPT),
        Got::Neg(Verb::Will, opt::GMCP),
    ] {
        assert_eq!(p.count(&g), 1, "{g:?} seen {} times", p.count(&g));
    }
    assert_eq!(
        p.count(&Got::Sub(opt::TTYPE, vec![1])),
        1,
        "TTYPE SEND repeated"
    );
    assert_notices_at_line_starts(&p.plain);
}

#[tokio::test]
async fn options_the_player_refused_are_refused_to_the_next_game() {
    let dir = TempDir::new("refused");
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let caps = Caps {
        naws: Some((100, 40)),
        ttype: None,
        gmcp_hello: None,
        mccp: false,
    };
    let mut p = Player::login(proxy.addr, caps, "Bob", "bobpw").await;
    restart_and_wait(&proxy, &mut game, &mut p).await;
    let c2 = player_conn(&game, 2, "Bob").await;
    wait_since_start(&game, 2, "NAWS 100x40", |e| {
        e["t"] == "naws" && e["conn"] == c2 && e["w"] == 100
    })
    .await;
    p.send("say ok").await;
    p.expect("You say, \"ok\"").await;
    let evs = since_start(&game, 2);
    assert!(
        !evs.iter()
            .any(|e| e["conn"] == c2 && (e["t"] == "ttype" || e["t"] == "gmcp")),
        "refused options reached the new game: {evs:#?}"
    );
    assert_eq!(p.count(&Got::Neg(Verb::Do, opt::TTYPE)), 1);
    assert_eq!(p.count(&Got::Neg(Verb::Will, opt::GMCP)), 1);
    assert_eq!(p.mccp_starts, 0, "the player refused MCCP2");
}

#[tokio::test]
async fn player_mccp_stream_survives_two_restarts_of_a_compressing_game() {
    let dir = TempDir::new("mccp");
    let mut game = Game::start(&dir, &["--mccp"]);
    let proxy = Proxy::start(
        &dir,
        &config_for(&[&game], "[telnet]\nbackend_mccp = true\n"),
    );
    let mut p = Player::login(proxy.addr, Caps::default(), "Alice", "alicepw").await;
    assert_eq!(
        p.mccp_starts, 1,
        "the proxy's MCCP2 should be on from the start"
    );
    proxy.wait_log("backend compresses").await;
    p.send("say before").await;
    p.expect("You say, \"before\"").await;

    for round in 1..=2 {
        restart_and_wait(&proxy, &mut game, &mut p).await;
        p.send(&format!("say after restart {round}")).await;
        p.expect(&format!("You say, \"after restart {round}\""))
            .await;
    }
    // A bigger page of output to measure the player's stream.
    let (wire0, plain0) = (p.wire.len(), p.plain.len());
    p.send("spam 200000").await;
    p.expect_plain("200000 bytes of spam", |b| b.len() >= plain0 + 200_000)
        .await;
    p.send("prompt").await;
    p.expect_plain("the prompt", |b| b.ends_with(&[b'>', b' ', IAC, GA]))
        .await;

    // One compressed stream from the proxy, never restarted or ended; the
    // game's own MCCP2 (offer, start, zlib) never reached the player.
    assert_eq!((p.mccp_starts, p.mccp_ends), (1, 0));
    assert_eq!(p.count(&Got::Neg(Verb::Will, opt::MCCP2)), 1, "{:?}", p.got);
    assert_eq!(p.count(&Got::Sub(opt::MCCP2, vec![])), 1);
    let logs = proxy.logs();
    assert_eq!(
        logs.matches("backend compresses").count(),
        3,
        "each of the three game processes compressed toward the proxy"
    );
    assert!(!logs.contains("corrupt compressed stream"), "{logs}");
    assert_notices_at_line_starts(&p.plain);
    let (wire, plain) = (p.wire.len() - wire0, p.plain.len() - plain0);
    assert!(wire < plain, "compressed {wire} > plain {plain}");
    eprintln!(
        "MCCP2 to the player: session {} -> {} bytes; 200 kB spam page {plain} -> {wire} bytes ({:.1}x)",
        p.plain.len(),
        p.wire.len(),
        plain as f64 / wire as f64
    );
}

#[tokio::test]
async fn player_refusing_mccp_gets_plain_text_from_a_compressing_game() {
    let dir = TempDir::new("nomccp");
    let mut game = Game::start(&dir, &["--mccp"]);
    let proxy = Proxy::start(
        &dir,
        &config_for(&[&game], "[telnet]\nbackend_mccp = true\n"),
    );
    let caps = Caps {
        mccp: false,
        ..Caps::default()
    };
    let mut p = Player::login(proxy.addr, caps, "Alice", "alicepw").await;
    restart_and_wait(&proxy, &mut game, &mut p).await;
    p.send("say plain").await;
    p.expect("You say, \"plain\"").await;
    assert_eq!(p.mccp_starts, 0);
    assert_eq!(p.wire, p.plain, "no compression toward the player");
    assert!(proxy.logs().contains("backend compresses"));
}

#[tokio::test]
async fn game_mccp_is_refused_unless_configured() {
    let dir = TempDir::new("mccpoff");
    let game = Game::start(&dir, &["--mccp"]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], "[telnet]\nmccp = false\n"));
    let mut p = Player::login(proxy.addr, Caps::default(), "Alice", "alicepw").await;
    p.send("say hi").await;
    p.expect("You say, \"hi\"").await;
    assert_eq!(p.count(&Got::Neg(Verb::Will, opt::MCCP2)), 0, "not offered");
    assert_eq!(p.mccp_starts, 0);
    assert!(!proxy.logs().contains("backend compresses"));
}

#[tokio::test]
async fn gmcp_passes_both_ways_and_hello_is_replayed() {
    let dir = TempDir::new("gmcp");
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut p = Player::login(proxy.addr, Caps::default(), "Alice", "alicepw").await;
    let c1 = player_conn(&game, 1, "Alice").await;
    wait_since_start(&game, 1, "Core.Hello", |e| {
        e["t"] == "gmcp" && e["conn"] == c1 && e["data"].as_str().unwrap().starts_with("Core.Hello")
    })
    .await;
    p.send_gmcp(r#"Core.Supports.Set ["Room 1","Char 1"]"#)
        .await;

    for n in 1..=2 {
        let c = player_conn(&game, n, "Alice").await;
        // Game -> player.
        p.send(r#"gmcp Room.Info {"num":12}"#).await;
        let want = Got::Sub(opt::GMCP, br#"Room.Info {"num":12}"#.to_vec());
        p.expect_got(want, n).await;
        // Player -> game, and the game's answer back.
        p.send_gmcp("Core.Ping").await;
        wait_since_start(&game, n, "Core.Ping", |e| {
            e["t"] == "gmcp" && e["conn"] == c && e["data"] == "Core.Ping"
        })
        .await;
        p.expect_got(Got::Sub(opt::GMCP, b"Core.Ping".to_vec()), n)
            .await;
        if n == 1 {
            restart_and_wait(&proxy, &mut game, &mut p).await;
            let c2 = player_conn(&game, 2, "Alice").await;
            let evs = |pkg: &'static str| {
                wait_since_start(&game, 2, pkg, move |e| {
                    e["t"] == "gmcp"
                        && e["conn"] == c2
                        && e["data"].as_str().unwrap().starts_with(pkg)
                })
            };
            evs("Core.Hello").await;
            let sup = evs("Core.Supports.Set").await;
            assert_eq!(sup["data"], r#"Core.Supports.Set ["Room 1","Char 1"]"#);
        }
    }
    assert_eq!(p.count(&Got::Neg(Verb::Will, opt::GMCP)), 1);
}

#[tokio::test]
async fn ga_prompt_reaches_the_player_at_once() {
    let dir = TempDir::new("prompt");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    for mccp in [false, true] {
        let caps = Caps {
            mccp,
            ..Caps::default()
        };
        let user = if mccp { "Alice" } else { "Bob" };
        let pw = if mccp { "alicepw" } else { "bobpw" };
        let mut p = Player::login(proxy.addr, caps, user, pw).await;
        p.send("prompt").await;
        // Nothing follows the prompt: if the proxy waited for a newline (or
        // did not flush its compressor) this would never arrive.
        p.expect_plain("'> ' IAC GA", |b| b.ends_with(&[b'>', b' ', IAC, GA]))
            .await;
        assert_eq!(p.mccp_starts, usize::from(mccp));
    }
}

#[tokio::test]
async fn iac_in_player_data_reaches_the_game_as_one_byte() {
    let dir = TempDir::new("iac");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut p = Player::login(proxy.addr, Caps::default(), "Alice", "alicepw").await;
    // `say a<0xFF>b`, the 0xFF escaped as IAC IAC on the wire.
    p.send_raw(b"say a\xff\xffb\r\n").await;
    p.expect("You say, \"a").await;
    let line = wait_since_start(&game, 1, "the say", |e| {
        e["t"] == "line" && e["line"].as_str().unwrap().starts_with("say a")
    })
    .await;
    // fakemush decodes lossily: a lone 0xFF byte becomes U+FFFD. Had the
    // proxy not re-escaped it, the game would have eaten `IAC b` instead.
    assert_eq!(line["line"], "say a\u{fffd}b");
}

#[tokio::test]
async fn iac_bytes_are_escaped_both_ways_on_the_wire() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    let dir = TempDir::new("iacwire");
    // A bare backend: greets with a Latin-1 line holding a 0xFF data byte
    // (sent as IAC IAC), then reports every byte each connection sent.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let baddr = backend.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = s.write_all(b"caf\xe9 \xff\xff!\r\n").await;
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let cfg = format!(
        "[heartbeat]\n[client_ip]\nmode = \"none\"\n[[backends]]\nname = \"raw\"\naddr = \"{baddr}\"\n"
    );
    let proxy = Proxy::start(&dir, &cfg);
    let mut p = Player::connect(proxy.addr, Caps::default()).await;
    p.expect("caf").await;
    p.expect_plain("the escaped 0xFF", |b| {
        b.windows(9).any(|w| w == b"caf\xe9 \xff\xff!\r")
    })
    .await;
    // (Whether the greeting came before or inside the proxy's MCCP2 stream
    // depends on when the player's DO MCCP2 arrived: either way the escape
    // must survive, which is what is checked.)
    assert!(p.mccp_starts <= 1, "one compressed stream at most");
    p.send_raw(b"say \xff\xff\r\n").await;
    let mut got = Vec::new();
    while !got.windows(8).any(|w| w == b"say \xff\xff\r\n") {
        let chunk = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("the backend never got the line; got {got:?}"))
            .unwrap();
        got.extend_from_slice(&chunk);
    }
}
