//! An upgrade is a transaction (issue 24): at every moment exactly one
//! process owns each session, so a new process that dies mid-handover
//! leaves every stream as the old process last relayed it; nothing a
//! client does (a handshake left half-done, a slow reader) holds or fails
//! an upgrade; the new process has its signal handlers from its first
//! moment; session ids stay unique across upgrades.
//!
//! `HOLDFAST_BIN` runs these against another build (to see them fail on
//! an older one); by default they run this crate's binary.

#[path = "upgrade/bench.rs"]
mod bench;
mod common;
#[path = "doors/conn.rs"]
mod conn;
#[path = "upgrade/mccp.rs"]
mod mccp;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use bench::{print_handover_lines, Pingers};
use common::*;
use mccp::MccpPlayer;

/// Limits out of the way of many players from one address.
const ROOMY: &str =
    "[listen]\naddrs = [\"127.0.0.1:0\"]\nmax_per_ip = 1000\n[limits]\nconn_rate_per_ip = 0.0\n";

/// Starts the proxy (the binary of `HOLDFAST_BIN` if set) at debug level.
fn start(dir: &TempDir, cfg: &str, env: &[(&str, &str)]) -> Proxy {
    Proxy::start_with(dir, cfg, "holdfast=debug", env)
}

/// Waits until the log holds any of `needles`.
fn wait_log_any(p: &Proxy, needles: &[&str]) {
    let t0 = Instant::now();
    loop {
        let logs = p.logs();
        if needles.iter().any(|n| logs.contains(n)) {
            return;
        }
        assert!(t0.elapsed() < WAIT, "never logged {needles:?}:\n{logs}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The children of `pid` (the new process of an upgrade under way).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// Every `You say, "..."` a player saw, in order.
fn says(text: &str) -> Vec<String> {
    text.split("You say, \"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_string)
        .collect()
}

// ----- item 1: a failed upgrade continues from the last relayed state ---

/// The new process is killed (aborts) after `after` of 4 batches. Four
/// players in the first batch: two with MCCP2, one with `say hel` typed
/// before the upgrade and `lo` during it, one at the connect screen who
/// logs in during it. Twelve more in the later batches. When the old
/// process carries on, every MCCP2 stream decodes, `say hello` reached the
/// game once, everyone's lines arrived once, and the login typed in the
/// window is known to the old process: a game restart logs Bob back in.
async fn killed_after(after: usize) {
    let dir = TempDir::new(&format!("upgrade-tx-kill{after}"));
    let mut game = Game::start(&dir, &[]);
    let abort = after.to_string();
    let hf = start(
        &dir,
        &config_for(&[&game], ROOMY),
        &[
            ("HOLDFAST_UPGRADE_BATCH", "4"),
            ("HOLDFAST_UPGRADE_ABORT_AFTER", abort.as_str()),
        ],
    );
    let pid = hf.pid();
    // The first batch: the roll is in the order the sessions started.
    let mut zs = Vec::new();
    for _ in 0..2 {
        zs.push(MccpPlayer::login(hf.addr).await);
    }
    let mut partial = Client::login(hf.addr, "Wiz", "wizpw").await;
    let mut bob = Client::connect(hf.addr).await;
    bob.expect("connect").await;
    let mut others = Vec::new();
    for _ in 0..12 {
        others.push(Client::login(hf.addr, "Alice", "alicepw").await);
    }
    partial.send_raw(b"say hel").await;
    for (i, c) in others.iter_mut().enumerate() {
        c.send(&format!("say p{i} before")).await;
        c.expect(&format!("You say, \"p{i} before\"")).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    proc::send_signal(pid, "USR2");
    // The window: the first batch is with the new process (which may, on
    // a build that relays before its commit, already run it).
    wait_log_any(&hf, &["upgrade: batch taken", "session taken over"]);
    partial.send_raw(b"lo\r\n").await;
    bob.send("connect Bob bobpw").await;
    for z in zs.iter_mut() {
        z.read_for(None, Duration::from_millis(150)).await;
    }
    hf.wait_log_n("upgrade failed; carrying on", 1, WAIT * 2);
    assert!(hf.logs().contains("aborting on purpose"), "{}", hf.logs());
    assert_eq!(hf.pid(), pid, "the old process serves");
    partial.send("say next").await;
    partial.expect("You say, \"next\"").await;
    assert_eq!(says(&partial.text), ["hello", "next"], "{}", partial.text);
    bob.expect("Last connect was from").await;
    for (i, c) in others.iter_mut().enumerate() {
        c.send(&format!("say p{i} after")).await;
        c.expect(&format!("You say, \"p{i} after\"")).await;
        assert_eq!(
            says(&c.text),
            [format!("p{i} before"), format!("p{i} after")],
            "player {i}"
        );
        assert!(!c.closed);
    }
    let hello: Vec<String> = game
        .lines_from("Wiz")
        .into_iter()
        .filter(|l| l.starts_with("say hel"))
        .collect();
    assert_eq!(hello, ["say hello"], "what the game got from Wiz");
    // Every MCCP2 stream intact, every line once.
    for (j, z) in zs.iter_mut().enumerate() {
        z.send(&format!("say z{j} after")).await;
        z.until(&format!("You say, \"z{j} after\"")).await;
        assert_eq!(says(&z.text()), vec![format!("z{j} after")], "{}", z.text());
    }
    // The login typed in the window is the old process's: a game restart
    // logs Bob back in.
    let mark = game.events().len();
    game.restart();
    let t0 = Instant::now();
    loop {
        let back = game
            .events()
            .into_iter()
            .skip(mark)
            .any(|e| e["t"] == "login" && e["user"] == "Bob");
        if back {
            break;
        }
        assert!(
            t0.elapsed() < WAIT * 3,
            "Bob was not logged back in:\n{}",
            hf.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_one_batch_every_stream_goes_on_intact() {
    killed_after(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_two_batches_every_stream_goes_on_intact() {
    killed_after(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_all_but_one_batch_every_stream_goes_on_intact() {
    killed_after(3).await;
}

// ----- item 2: no client holds an upgrade ------------------------------

/// Idle connections to every door and a TLS handshake left half-done,
/// opened before `SIGUSR2`, and one more accepted after it: the upgrade
/// completes in normal time (the handshake timeout is 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_handshakes_never_hold_an_upgrade() {
    let dir = TempDir::new("upgrade-tx-handshakes");
    certs::make_cert(&dir, "a");
    let game = Game::start(&dir, &[]);
    let cfg = config_for(
        &[&game],
        &format!(
            "[listen]\naddrs = [\"127.0.0.1:0\"]\ntls_addrs = [\"127.0.0.1:0\"]\nws_addrs = [\"127.0.0.1:0\"]\n\
             wss_addrs = [\"127.0.0.1:0\"]\nhandshake_timeout = \"30s\"\n\
             [tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            dir.path("a.pem").display().to_string(),
            dir.path("a.key").display().to_string(),
        ),
    );
    let mut hf = start(&dir, &cfg, &[]);
    let mut alice = Client::login(hf.addr, "Alice", "alicepw").await;
    let mut idle = Vec::new();
    for door in ["tls", "ws", "wss"] {
        idle.push(tokio::net::TcpStream::connect(hf.door(door)).await.unwrap());
    }
    // Half a TLS ClientHello: a record header and a few bytes of it.
    let mut half = tokio::net::TcpStream::connect(hf.door("tls"))
        .await
        .unwrap();
    half.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .await
        .unwrap();
    // Half an HTTP request on the WebSocket door.
    let mut half_ws = tokio::net::TcpStream::connect(hf.door("ws")).await.unwrap();
    half_ws
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let t0 = Instant::now();
    let ws = hf.door("ws");
    let upgrade = tokio::task::spawn_blocking(move || {
        hf.upgrade();
        hf
    });
    // One more, accepted after SIGUSR2 (or queued until the new process
    // accepts).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let late = tokio::net::TcpStream::connect(ws).await.unwrap();
    let hf = upgrade.await.unwrap();
    let took = t0.elapsed();
    eprintln!("unfinished handshakes at each door: the upgrade took {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "the upgrade took {took:?}:\n{}",
        hf.logs()
    );
    alice.send("say still here").await;
    alice.expect("You say, \"still here\"").await;
    drop((idle, half, half_ws, late));
}

/// A player who reads just fast enough never to hit `write_timeout`, in
/// the middle of a large output: the upgrade does not wait for the write
/// to end (it would take far longer than the upgrade's 10 s); the output
/// not yet written crosses and arrives once, whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_neither_holds_nor_fails_an_upgrade() {
    let dir = TempDir::new("upgrade-tx-slow");
    let game = Game::start(&dir, &[]);
    let cfg = config_for(
        &[&game],
        "[listen]\naddrs = [\"127.0.0.1:0\"]\nmax_per_ip = 1000\n\
         [limits]\nconn_rate_per_ip = 0.0\nwrite_timeout = \"60s\"\n",
    );
    let mut hf = start(&dir, &cfg, &[]);
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&hf.addr.into()).unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut slow = tokio::net::TcpStream::from_std(sock.into()).unwrap();
    let mut seen: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    async fn read_until(
        s: &mut tokio::net::TcpStream,
        seen: &mut Vec<u8>,
        buf: &mut [u8],
        needle: &str,
    ) {
        let mut from = 0;
        // Only the new bytes are searched (the output is large).
        while !String::from_utf8_lossy(&seen[from..]).contains(needle) {
            from = seen.len().saturating_sub(needle.len());
            let k = tokio::time::timeout(WAIT * 3, s.read(buf))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?}"))
                .unwrap();
            assert!(k > 0, "closed");
            seen.extend_from_slice(&buf[..k]);
        }
    }
    slow.write_all(b"connect Bob bobpw\r\n").await.unwrap();
    read_until(&mut slow, &mut seen, &mut buf, "Last connect").await;
    slow.write_all(b"echo START-MARK\r\n").await.unwrap();
    read_until(&mut slow, &mut seen, &mut buf, "START-MARK\r\n").await;
    let start = String::from_utf8_lossy(&seen)
        .find("START-MARK\r\n")
        .unwrap()
        + 12;
    let mut alice = Client::login(hf.addr, "Alice", "alicepw").await;
    // Far more than the kernel's buffers hold, so that a write waits.
    const SPAM: usize = 32 << 20;
    slow.write_all(format!("spam {SPAM}\r\necho END-MARK\r\n").as_bytes())
        .await
        .unwrap();
    // About 40 KB/s: a 512 KiB write takes 13 s, far below write_timeout.
    let t0 = Instant::now();
    let mut usr2_at = None;
    let old = hf.pid();
    let reader = async {
        let mut small = [0u8; 2048];
        loop {
            let k = tokio::time::timeout(WAIT, slow.read(&mut small))
                .await
                .expect("the proxy kept writing")
                .unwrap();
            assert!(k > 0, "closed");
            seen.extend_from_slice(&small[..k]);
            tokio::time::sleep(Duration::from_millis(50)).await;
            if usr2_at.is_none() && t0.elapsed() > Duration::from_millis(700) {
                proc::send_signal(old, "USR2");
                usr2_at = Some(Instant::now());
            }
            // Done once the ready file names the new process.
            if hf.ready_pid().is_some_and(|p| p != old) {
                return usr2_at.unwrap().elapsed();
            }
            assert!(
                usr2_at.is_none_or(|t| t.elapsed() < Duration::from_secs(15)),
                "no upgrade while the slow player read:\n{}",
                hf.logs()
            );
        }
    };
    let took = reader.await;
    eprintln!("a slow reader: the upgrade waited {took:?} for it");
    assert!(
        took < Duration::from_secs(5),
        "the upgrade waited {took:?} for the slow reader:\n{}",
        hf.logs()
    );
    hf.upgrade_done(old);
    // Now read at full speed: everything once and in order.
    read_until(&mut slow, &mut seen, &mut buf, "END-MARK").await;
    let text = &seen[start..];
    let end = String::from_utf8_lossy(text).find("END-MARK").unwrap();
    let body = &text[..end];
    assert_eq!(body.len(), SPAM, "the spam arrived once, whole");
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    assert!(lines.len() > 100);
    alice.send("say after").await;
    alice.expect("You say, \"after\"").await;
}

// ----- item 4: signals in the new process ------------------------------

/// `systemctl kill -s HUP` (every process of the unit) and a quick second
/// `SIGUSR2` during a handover: the new process is not killed; it reloads
/// after its commit and ignores the second `SIGUSR2`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_sigusr2_during_a_handover_kill_nobody() {
    let dir = TempDir::new("upgrade-tx-hup");
    let game = Game::start(&dir, &[]);
    let mut hf = start(
        &dir,
        &config_for(&[&game], ROOMY),
        &[("HOLDFAST_UPGRADE_BATCH", "1")],
    );
    let mut cs = Vec::new();
    for _ in 0..40 {
        cs.push(Client::login(hf.addr, "Alice", "alicepw").await);
    }
    let old = hf.pid();
    proc::send_signal(old, "USR2");
    // The new process exists and the handover is under way.
    let t0 = Instant::now();
    let new = loop {
        if let Some(&c) = children(old).first() {
            break c;
        }
        assert!(t0.elapsed() < WAIT, "no new process");
        std::thread::sleep(Duration::from_millis(1));
    };
    // As soon as it speaks (its handlers must be there by then).
    let t0 = Instant::now();
    while !hf.logs().contains("upgrade: batch taken")
        && !hf.logs().contains("session taken over")
        && t0.elapsed() < WAIT
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    for pid in [old, new] {
        proc::send_signal(pid, "HUP");
    }
    proc::send_signal(new, "USR2");
    hf.upgrade_done(old);
    assert_eq!(hf.pid(), new, "the new process took over");
    let logs = hf.logs();
    // The SIGHUP was held and carried out after the commit; or, on a
    // starved machine, the new process's runtime read it only after the
    // commit and reloaded then as for any SIGHUP. Either way it reloaded
    // once it owned everything, and nothing was killed.
    let after = &logs[logs
        .find("upgrade: took everything over")
        .expect("commit logged")..];
    let held = logs.contains("SIGHUP during a handover")
        && logs.contains("reloading the config (SIGHUP held during the handover)");
    assert!(
        held || after.contains("SIGHUP: reloading the config"),
        "the new process reloaded after its commit:\n{logs}"
    );
    for (i, c) in cs.iter_mut().enumerate() {
        c.send(&format!("say p{i}")).await;
        c.expect(&format!("You say, \"p{i}\"")).await;
    }
    // And it upgrades again later.
    hf.upgrade();
}

// ----- item 5: session ids ---------------------------------------------

/// `holdfast_sessions` summed over its states.
async fn sessions_metric(addr: SocketAddr) -> u64 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body.lines()
        .filter(|l| l.starts_with("holdfast_sessions{"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Twenty upgrades, each with a WebSocket player behind a trusted proxy
/// whose handshake is under way when it begins and another player after
/// it: every session has its own id (the metrics count every player, the
/// log never shows two sessions with one id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ids_stay_unique_across_twenty_upgrades() {
    let dir = TempDir::new("upgrade-tx-ids");
    let game = Game::start(&dir, &[]);
    let cfg = config_for(
        &[&game],
        "[listen]\naddrs = [\"127.0.0.1:0\"]\nws_addrs = [\"127.0.0.1:0\"]\nmax_per_ip = 1000\n\
         ws_trusted_proxies = [\"127.0.0.0/8\"]\n\
         [limits]\nconn_rate_per_ip = 0.0\n[metrics]\naddr = \"127.0.0.1:0\"\n",
    );
    let mut hf = start(&dir, &cfg, &[]);
    let ws = hf.door("ws");
    let mut players = Vec::new();
    let mut wss = Vec::new();
    for k in 0..20 {
        // A WebSocket player whose handshake is under way when the
        // upgrade begins (its request comes after `SIGUSR2`).
        let tcp = tokio::net::TcpStream::connect(ws).await.unwrap();
        let old = hf.pid();
        proc::send_signal(old, "USR2");
        tokio::time::sleep(Duration::from_millis(150)).await;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{ws}/").into_client_request().unwrap();
        req.headers_mut()
            .insert("X-Forwarded-For", format!("10.9.0.{k}").parse().unwrap());
        let ws_conn = tokio_tungstenite::client_async(req, tcp).await.ok();
        hf.upgrade_done(old);
        match ws_conn {
            Some((w, _)) => wss.push(w),
            // Closed by the upgrade: it connects again.
            None => {
                let (w, _) = conn::ws_connect(
                    ws,
                    "127.0.0.1",
                    &[],
                    &[("X-Forwarded-For", &format!("10.9.0.{k}"))],
                )
                .await;
                wss.push(w);
            }
        }
        players.push(Client::login(hf.addr, "Alice", "alicepw").await);
    }
    let want = (players.len() + wss.len()) as u64;
    // Each process serves metrics on a port of its own: the last one.
    let logs = hf.logs();
    let line = logs
        .lines()
        .rfind(|l| l.contains("metrics: serving"))
        .expect("metrics served");
    let metrics: SocketAddr = line
        .split("addr=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let got = sessions_metric(metrics).await;
        if got == want {
            break;
        }
        assert!(
            t0.elapsed() < WAIT,
            "holdfast_sessions counts {got} of {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (i, c) in players.iter_mut().enumerate() {
        c.send(&format!("say p{i}")).await;
        c.expect(&format!("You say, \"p{i}\"")).await;
    }
}

// ----- figures -----------------------------------------------------------

/// Figures, not a check: an upgrade with `HOLDFAST_UPGRADE_DETACHED`
/// detached sessions (default 1000), each with a full playback (256 KiB),
/// and 20 players pinging in the first batch: the handover's time, the
/// bytes of state sent and the longest stall. `HOLDFAST_BIN` picks the
/// binary (a release build for real figures); `scripts/upgrade_bench.sh`
/// runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_detached_sessions_at_full_playback() {
    let n: usize = std::env::var("HOLDFAST_UPGRADE_DETACHED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let dir = TempDir::new("upgrade-tx-bench-detached");
    let game = Game::start(&dir, &[]);
    let cfg = config_for(
        &[&game],
        "[listen]\naddrs = [\"127.0.0.1:0\"]\nmax_sessions = 20000\nmax_per_ip = 20000\nmax_detached = 20000\n\
         [limits]\nconn_rate_per_ip = 0.0\nmax_unauthenticated = 20000\n\
         input_lines_per_sec = 100000\ninput_burst = 100000\n\
         [resume]\nkeep = \"30m\"\nplayback_lines = 100000\n",
    );
    let mut hf = Proxy::start_with(&dir, &cfg, "holdfast=info", &[]);
    const PINGERS: usize = 20;
    let mut pingers = Pingers::new(Duration::from_secs(60));
    for _ in 0..PINGERS {
        pingers.add(Client::login(hf.addr, "Wiz", "wizpw").await);
    }
    // All log in first (a login would resume a detached session of the
    // same name); then each asks for 300 KB of output and closes its side
    // at once: the session detaches, and the output fills its playback.
    let t0 = Instant::now();
    let mut gone = Vec::with_capacity(n);
    for _ in 0..n {
        gone.push(Client::login(hf.addr, "Alice", "alicepw").await);
    }
    for c in gone.iter_mut() {
        c.send("spam 300000").await;
        c.stream().shutdown().await.unwrap();
    }
    hf.wait_log_n("session detached", n, Duration::from_secs(300));
    // The playbacks fill (the game's output is read and kept).
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!("{n} detached sessions up in {:?}", t0.elapsed());
    pingers.measure();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t_up = Instant::now();
    tokio::task::block_in_place(|| hf.upgrade());
    let to_ready = t_up.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (worst, pings) = pingers.stop().await;
    print_handover_lines(&hf.logs());
    println!(
        "detached {n}: SIGUSR2 to the new pid in the ready file {to_ready:?}; longest round trip of {pings} pings by {PINGERS} players around it: {worst:?}"
    );
    drop(gone);
}
