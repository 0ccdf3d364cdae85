//! An upgrade is a transaction (issue 24), the leftovers: a session busy
//! with something slow gives way to the upgrade's ask instead of holding
//! everyone in its batch (a connect to a game that does not answer, a
//! write to a TLS or WebSocket player who reads slowly), and a handshake
//! an upgrade closes is told to come back.
//!
//! `HOLDFAST_BIN` runs these against another build (to see them fail on
//! an older one); by default they run this crate's binary.

mod common;
#[path = "doors/conn.rs"]
mod conn;

use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

/// Starts the proxy (the binary of `HOLDFAST_BIN` if set) at debug level.
fn start(dir: &TempDir, cfg: &str) -> Proxy {
    Proxy::start_with(dir, cfg, "holdfast=debug", &[])
}

/// A game address that answers nothing yet: a listener whose accept queue
/// is full, so the kernel drops every new SYN and a connect waits (up to
/// the backend's `connect_timeout`). [`Gatekeeper::open`] starts
/// accepting and forwards every connection to the game.
struct Gatekeeper {
    addr: SocketAddr,
    listener: Option<std::net::TcpListener>,
    fillers: Vec<std::net::TcpStream>,
}

impl Gatekeeper {
    fn full() -> Gatekeeper {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        s.listen(0).unwrap();
        let listener: std::net::TcpListener = s.into();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        // Until a connect goes unanswered: the queue is full.
        loop {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(c) => fillers.push(c),
                Err(_) => break,
            }
            assert!(fillers.len() < 64, "the accept queue never filled");
        }
        Gatekeeper {
            addr,
            listener: Some(listener),
            fillers,
        }
    }

    /// Accepts from now on, forwarding each connection to `game`.
    fn open(&mut self, game: SocketAddr) {
        self.fillers.clear();
        let l = self.listener.take().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut a) = c else { return };
                let Ok(mut b) = std::net::TcpStream::connect(game) else {
                    continue;
                };
                let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a2, &mut b2);
                    let _ = b2.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match b.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if std::io::Write::write_all(&mut a, &buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = a.shutdown(std::net::Shutdown::Write);
                });
            }
        });
    }
}

/// A player connects while the game answers nothing (its connect waits
/// up to `connect_timeout`, 10 s by default) and types a login meanwhile;
/// `SIGUSR2`: the connect gives way to the upgrade at once, the new
/// process connects again, and once the game accepts the player gets the
/// connect screen and is logged in by the line typed before the upgrade,
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_to_a_silent_game_does_not_hold_an_upgrade() {
    let dir = TempDir::new("upgrade-giveway-connect");
    let game = Game::start(&dir, &[]);
    let mut gk = Gatekeeper::full();
    // A slow heartbeat: the pool keeps the backend "not probed yet"
    // (usable) rather than mark it down while the test runs. A connect
    // may wait 9 s (the default is 5 s), within the upgrade's 10 s.
    let cfg = format!(
        "game = \"Test MUSH\"\n[listen]\naddrs = [\"127.0.0.1:0\"]\n\
         [heartbeat]\nuser = \"heartbeat\"\npassword = \"hbpass\"\ninterval = \"30s\"\ntimeout = \"20s\"\n\
         [client_ip]\nmode = \"command\"\n\
         [[backends]]\nname = \"b0\"\naddr = \"{}\"\nconnect_timeout = \"9s\"\n",
        gk.addr
    );
    let hf = start(&dir, &cfg);
    let mut alice = Client::connect(hf.addr).await;
    // Queued while the connect waits: it must cross and go once.
    alice.send("connect Alice alicepw").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let t0 = Instant::now();
    let hf = tokio::task::spawn_blocking(move || {
        let mut hf = hf;
        hf.upgrade();
        hf
    })
    .await
    .unwrap();
    let took = t0.elapsed();
    eprintln!("a connect to a silent game: the upgrade took {took:?}");
    assert!(
        took < Duration::from_secs(4),
        "the upgrade waited {took:?} for the connect:\n{}",
        hf.logs()
    );
    // The game answers now: the new process's connect gets through.
    gk.open(game.addr);
    alice.expect("Welcome to FakeMUSH").await;
    alice.logged_in().await;
    alice.send("say across").await;
    alice.expect("You say, \"across\"").await;
    assert_eq!(game.logins("Alice").len(), 1, "one login");
}

/// Config with every front door, TLS from `dir`'s certificate `a`.
fn doors_config(dir: &TempDir, game: &Game, extra: &str) -> String {
    certs::make_cert(dir, "a");
    config_for(
        &[game],
        &format!(
            "[listen]\naddrs = [\"127.0.0.1:0\"]\ntls_addrs = [\"127.0.0.1:0\"]\nws_addrs = [\"127.0.0.1:0\"]\n\
             wss_addrs = [\"127.0.0.1:0\"]\nhandshake_timeout = \"30s\"\nmax_per_ip = 1000\n\
             [tls]\ncert_file = {:?}\nkey_file = {:?}\n{extra}",
            dir.path("a.pem").display().to_string(),
            dir.path("a.key").display().to_string(),
        ),
    )
}

/// Reads until the peer closes (or `WAIT`).
async fn read_to_close(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    out
}

/// A WebSocket client whose HTTP request is not finished when `SIGUSR2`
/// comes gets `503 Service Unavailable` with `Retry-After: 1` and
/// `Connection: close`, and connects again to the new process; a TLS
/// client whose ClientHello is not finished gets a fatal TLS alert
/// (`internal_error`) rather than a bare close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_closed_by_an_upgrade_are_told_to_come_back() {
    use tokio::io::AsyncWriteExt;
    let dir = TempDir::new("upgrade-giveway-503");
    let game = Game::start(&dir, &[]);
    let hf = start(&dir, &doors_config(&dir, &game, ""));
    let mut half_ws = tokio::net::TcpStream::connect(hf.door("ws")).await.unwrap();
    half_ws
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    let mut half_tls = tokio::net::TcpStream::connect(hf.door("tls"))
        .await
        .unwrap();
    half_tls
        .write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hf = tokio::task::spawn_blocking(move || {
        let mut hf = hf;
        hf.upgrade();
        hf
    })
    .await
    .unwrap();
    let answer = read_to_close(&mut half_ws).await;
    let answer = String::from_utf8_lossy(&answer);
    eprintln!("the unfinished WebSocket request got:\n{answer}");
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer:?}"
    );
    let head = answer.to_ascii_lowercase();
    assert!(head.contains("\r\nretry-after: 1\r\n"), "{answer:?}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{answer:?}");
    let alert = read_to_close(&mut half_tls).await;
    assert_eq!(
        alert,
        [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50],
        "a fatal internal_error alert"
    );
    // It comes back: the new process serves it.
    let (mut ws, _) =
        conn::ws_player(hf.door("ws"), "127.0.0.1", &["telnet.mudstandards.org"], &[]).await;
    ws.login("Alice", "alicepw").await;
    ws.send("say back").await;
    ws.expect("You say, \"back\"").await;
    let _ = hf;
}
