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
    let (mut ws, _) = conn::ws_player(
        hf.door("ws"),
        "127.0.0.1",
        &["telnet.mudstandards.org"],
        &[],
    )
    .await;
    ws.login("Alice", "alicepw").await;
    ws.send("say back").await;
    ws.expect("You say, \"back\"").await;
    let _ = hf;
}

// ----- slow TLS and WebSocket readers -----------------------------------

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client socket that reads 2 KiB every 50 ms (about 40 KB/s) until
/// `fast` is set: a player who reads just fast enough never to hit a
/// `write_timeout` of a minute.
struct Slow {
    inner: tokio::net::TcpStream,
    fast: Arc<AtomicBool>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Slow {
    /// Connects with a small receive buffer, so the kernel holds little.
    fn connect(addr: SocketAddr, fast: Arc<AtomicBool>) -> Slow {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&addr.into()).unwrap();
        sock.set_nonblocking(true).unwrap();
        Slow {
            inner: tokio::net::TcpStream::from_std(sock.into()).unwrap(),
            fast,
            wait: None,
        }
    }
}

impl AsyncRead for Slow {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let s = self.get_mut();
        if s.fast.load(Ordering::Relaxed) {
            return Pin::new(&mut s.inner).poll_read(cx, buf);
        }
        if let Some(w) = s.wait.as_mut() {
            std::task::ready!(std::future::Future::poll(w.as_mut(), cx));
            s.wait = None;
        }
        let mut chunk = [0u8; 2048];
        let n = chunk.len().min(buf.remaining());
        let mut rb = ReadBuf::new(&mut chunk[..n]);
        std::task::ready!(Pin::new(&mut s.inner).poll_read(cx, &mut rb))?;
        buf.put_slice(rb.filled());
        s.wait = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Slow {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A slow player over TLS, a plain WebSocket or a WebSocket over TLS
/// (telnet subprotocol).
enum SlowPlayer {
    Tls(Box<tokio_rustls::client::TlsStream<Slow>>),
    Ws(Box<tokio_tungstenite::WebSocketStream<Slow>>),
    Wss(Box<tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<Slow>>>),
}

impl SlowPlayer {
    async fn tls(dir: &TempDir, addr: SocketAddr, fast: Arc<AtomicBool>) -> SlowPlayer {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let s = tokio_rustls::TlsConnector::from(conn::client_config(dir))
            .connect(name, Slow::connect(addr, fast))
            .await
            .expect("TLS handshake");
        SlowPlayer::Tls(Box::new(s))
    }

    async fn wss(dir: &TempDir, addr: SocketAddr, fast: Arc<AtomicBool>) -> SlowPlayer {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let SlowPlayer::Tls(tls) = SlowPlayer::tls(dir, addr, fast).await else {
            unreachable!()
        };
        let mut req = format!("wss://{addr}/").into_client_request().unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "telnet.mudstandards.org".parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::client_async(req, *tls)
            .await
            .expect("WebSocket handshake over TLS");
        SlowPlayer::Wss(Box::new(ws))
    }

    async fn ws(addr: SocketAddr, fast: Arc<AtomicBool>) -> SlowPlayer {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{addr}/").into_client_request().unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "telnet.mudstandards.org".parse().unwrap(),
        );
        let (ws, _) = tokio_tungstenite::client_async(req, Slow::connect(addr, fast))
            .await
            .expect("WebSocket handshake");
        SlowPlayer::Ws(Box::new(ws))
    }

    async fn send(&mut self, line: &str) {
        let line = format!("{line}\r\n");
        match self {
            SlowPlayer::Tls(s) => {
                use tokio::io::AsyncWriteExt;
                s.write_all(line.as_bytes()).await.unwrap();
                s.flush().await.unwrap();
            }
            SlowPlayer::Ws(w) => {
                use futures::SinkExt;
                w.send(tokio_tungstenite::tungstenite::Message::binary(
                    line.into_bytes(),
                ))
                .await
                .unwrap();
            }
            SlowPlayer::Wss(w) => {
                use futures::SinkExt;
                w.send(tokio_tungstenite::tungstenite::Message::binary(
                    line.into_bytes(),
                ))
                .await
                .unwrap();
            }
        }
    }

    /// The next bytes, `None` once the connection is over.
    async fn recv(&mut self) -> Option<Vec<u8>> {
        match self {
            SlowPlayer::Tls(s) => common::player::read_chunk(s.as_mut()).await,
            SlowPlayer::Ws(w) => ws_recv(w).await,
            SlowPlayer::Wss(w) => ws_recv(w).await,
        }
    }

    /// Reads until `needle` shows in what came after `from`.
    async fn read_until(&mut self, seen: &mut Vec<u8>, needle: &str) {
        let mut from = 0;
        while !String::from_utf8_lossy(&seen[from..]).contains(needle) {
            from = seen.len().saturating_sub(needle.len());
            let b = tokio::time::timeout(WAIT * 3, self.recv())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?}"))
                .unwrap_or_else(|| panic!("closed before {needle:?}"));
            seen.extend_from_slice(&b);
        }
    }
}

/// The next binary message's bytes, `None` once the WebSocket is over.
async fn ws_recv<S: AsyncRead + AsyncWrite + Unpin>(
    w: &mut tokio_tungstenite::WebSocketStream<S>,
) -> Option<Vec<u8>> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match w.next().await? {
            Ok(Message::Binary(b)) => return Some(b.to_vec()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Where `needle` first is in `hay` (bytes: telnet is not UTF-8).
fn find(hay: &[u8], needle: &str) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w == needle.as_bytes())
}

/// What fakemush's `spam n` sends (80-byte lines, 819 to a pattern).
fn spam_expected(n: usize) -> Vec<u8> {
    let mut chunk = Vec::new();
    for i in 0..819 {
        for j in 0..78 {
            chunk.push(b'!' + ((i * 7 + j) % 94) as u8);
        }
        chunk.extend_from_slice(b"\r\n");
    }
    assert_eq!(n % chunk.len(), 0, "whole patterns only");
    chunk.repeat(n / chunk.len())
}

/// The player asks for `spam` bytes and reads slowly; `SIGUSR2` after
/// 700 ms. Returns how long the upgrade took from the signal, with the
/// player reading slowly all along, and what the player got after
/// `START-MARK`; the player reads fast from then on.
async fn slow_reader_through_an_upgrade(
    hf: &mut Proxy,
    p: &mut SlowPlayer,
    fast: &AtomicBool,
    spam: usize,
) -> (Duration, Vec<u8>) {
    let mut seen = Vec::new();
    p.send("connect Bob bobpw").await;
    p.read_until(&mut seen, "Last connect").await;
    p.send("echo START-MARK").await;
    p.read_until(&mut seen, "START-MARK\r\n").await;
    let start = find(&seen, "START-MARK\r\n").unwrap() + 12;
    let mut body = seen.split_off(start);
    p.send(&format!("spam {spam}")).await;
    p.send("echo END-MARK").await;
    let t0 = Instant::now();
    let old = hf.pid();
    let mut usr2_at: Option<Instant> = None;
    let took = loop {
        match tokio::time::timeout(Duration::from_millis(200), p.recv()).await {
            Ok(Some(b)) => body.extend_from_slice(&b),
            // Dropped for the upgrade (a TLS link): the rest is read below.
            Ok(None) => {}
            Err(_) => {}
        }
        if usr2_at.is_none() && t0.elapsed() > Duration::from_millis(700) {
            assert!(
                body.len() < spam / 2,
                "the player read too fast for the test"
            );
            proc::send_signal(old, "USR2");
            usr2_at = Some(Instant::now());
        }
        if hf.ready_pid().is_some_and(|p| p != old) {
            break usr2_at.unwrap().elapsed();
        }
        assert!(
            usr2_at.is_none_or(|t| t.elapsed() < Duration::from_secs(15)),
            "no upgrade while the slow player read:\n{}",
            hf.logs()
        );
    };
    fast.store(true, Ordering::Relaxed);
    hf.upgrade_done(old);
    (took, body)
}

fn giveway_config(dir: &TempDir, game: &Game) -> String {
    doors_config(
        dir,
        game,
        "[limits]\nconn_rate_per_ip = 0.0\nwrite_timeout = \"60s\"\n\
         [resume]\nplayback_lines = 1000000\nplayback_bytes = \"64MiB\"\n",
    )
}

/// A plain WebSocket player who reads slowly, in the middle of a large
/// output: the upgrade does not wait for the write; the frames not yet
/// written cross with the connection and the output arrives once, whole
/// and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_websocket_reader_neither_holds_nor_fails_an_upgrade() {
    let dir = TempDir::new("upgrade-giveway-slow-ws");
    let game = Game::start(&dir, &[]);
    let mut hf = start(&dir, &giveway_config(&dir, &game));
    let fast = Arc::new(AtomicBool::new(false));
    let mut p = SlowPlayer::ws(hf.door("ws"), fast.clone()).await;
    // Far more than the kernel's buffers hold, so that a write waits.
    const SPAM: usize = 512 * 65520;
    let (took, mut body) = slow_reader_through_an_upgrade(&mut hf, &mut p, &fast, SPAM).await;
    eprintln!("a slow WebSocket reader: the upgrade waited {took:?} for it");
    assert!(
        took < Duration::from_secs(5),
        "the upgrade waited {took:?} for the slow reader:\n{}",
        hf.logs()
    );
    p.read_until(&mut body, "END-MARK").await;
    let end = find(&body, "END-MARK").unwrap();
    assert!(
        body[..end] == spam_expected(SPAM)[..],
        "the output arrived once, whole and in order ({} bytes of {SPAM})",
        end
    );
    p.send("say after").await;
    let mut rest = Vec::new();
    p.read_until(&mut rest, "You say, \"after\"").await;
}

/// A TLS player (telnet over TLS) who reads slowly, in the middle of a
/// large output: the upgrade does not wait for the write; the link, which
/// cannot cross, is dropped as a failed link would be, and the resume
/// replays what holdfast had not handed to TLS yet: no byte twice, in
/// order, and at most what TLS itself held lost with the link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tls_reader_neither_holds_nor_fails_an_upgrade() {
    slow_reader_over_tls(false).await;
}

/// The same over a WebSocket over TLS (`wss_addrs`): the end of the
/// message the gate had not handed to TLS begins the replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_wss_reader_neither_holds_nor_fails_an_upgrade() {
    slow_reader_over_tls(true).await;
}

/// A slow reader over TLS (`wss`: a WebSocket over TLS) through an
/// upgrade, then its resume over the TLS door.
async fn slow_reader_over_tls(wss: bool) {
    let dir = TempDir::new("upgrade-giveway-slow-tls");
    let game = Game::start(&dir, &[]);
    let mut hf = start(&dir, &giveway_config(&dir, &game));
    let fast = Arc::new(AtomicBool::new(false));
    let mut p = match wss {
        false => SlowPlayer::tls(&dir, hf.door("tls"), fast.clone()).await,
        true => SlowPlayer::wss(&dir, hf.door("wss"), fast.clone()).await,
    };
    // More than the kernel's buffers hold (a few MB on loopback), so that
    // a write waits; all of it fits in the playback.
    const SPAM: usize = 128 * 65520;
    let (took, mut before) = slow_reader_through_an_upgrade(&mut hf, &mut p, &fast, SPAM).await;
    eprintln!(
        "a slow {} reader: the upgrade waited {took:?} for it",
        if wss { "WSS" } else { "TLS" }
    );
    assert!(
        took < Duration::from_secs(5),
        "the upgrade waited {took:?} for the slow reader:\n{}",
        hf.logs()
    );
    // What the kernel still had for it, then the close.
    while let Ok(Some(b)) = tokio::time::timeout(WAIT, p.recv()).await {
        before.extend_from_slice(&b);
    }
    let expected = spam_expected(SPAM);
    assert!(
        !String::from_utf8_lossy(&before).contains("END-MARK"),
        "the link was dropped before the end:\n{}",
        hf.logs()
    );
    assert!(
        before[..] == expected[..before.len()],
        "what came before the drop is the start of the output"
    );
    // It resumes, and gets the rest.
    let mut again = conn::tls_connect(&dir, hf.door("tls"), "127.0.0.1").await.0;
    let mut seen = Vec::new();
    loop {
        let b = tokio::time::timeout(WAIT, again.recv())
            .await
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&b);
        if String::from_utf8_lossy(&seen).contains("connect") {
            break;
        }
    }
    again.send_bytes(b"connect Bob bobpw\r\n").await;
    let mut kept = Vec::new();
    loop {
        let b = tokio::time::timeout(WAIT * 3, again.recv())
            .await
            .expect("the kept output")
            .expect("open");
        kept.extend_from_slice(&b);
        if String::from_utf8_lossy(&kept).contains("END-MARK") {
            break;
        }
    }
    let notice = find(&kept, "line(s) follow.\r\n")
        .unwrap_or_else(|| panic!("no resume notice: {:?}", String::from_utf8_lossy(&kept)))
        + "line(s) follow.\r\n".len();
    let end = find(&kept, "END-MARK").unwrap();
    let replay = &kept[notice..end];
    let lost = SPAM as i64 - (before.len() + replay.len()) as i64;
    eprintln!(
        "a slow {} reader: {} bytes before the drop, {} replayed, {lost} lost with the link",
        if wss { "WSS" } else { "TLS" },
        before.len(),
        replay.len()
    );
    assert!(lost >= 0, "{} bytes twice", -lost);
    // What rustls held (64 KiB of records) and, over a WebSocket, the
    // rest of the message it belonged to (holdfast reads the game up to
    // 512 KiB at a time, a message each).
    let bound = if wss { (96 + 512) * 1024 } else { 96 * 1024 };
    assert!(
        lost <= bound,
        "{lost} bytes lost: more than TLS's own buffer"
    );
    let tail = &expected[SPAM - replay.len()..];
    if let Some(i) = (0..replay.len()).find(|&i| replay[i] != tail[i]) {
        panic!(
            "the replay is not the end of the output: at {i} of {}: {:?} where {:?}",
            replay.len(),
            String::from_utf8_lossy(&replay[i.saturating_sub(100)..(i + 100).min(replay.len())]),
            String::from_utf8_lossy(&tail[i.saturating_sub(100)..(i + 100).min(tail.len())]),
        );
    }
}
