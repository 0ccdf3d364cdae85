//! A minimal, fast game-like backend for the benchmarks.
//!
//! It speaks just enough TinyMUSH for holdfast to treat it as a game: a
//! connect screen on accept, `connect <name> <password>` (any name and
//! password work) answered with a MOTD and `Last connect was from ...`,
//! `think <text>` echoed only to a logged-in player (that is how holdfast's
//! heartbeat and login marker work), `@remotehost` accepted silently, and
//! `QUIT`. For the measurements it adds `echo <text>` (one-line answer, no
//! login needed) and `spam <bytes>` (that many bytes of 80-byte lines, as
//! fast as the socket takes them).
//!
//! It runs as its own process (the bench binary started with
//! `--serve-backend`), so it can be SIGKILLed and restarted on the same port
//! for the re-login storm, and so its CPU is never counted as the proxy's.

use std::net::SocketAddr;
use std::sync::OnceLock;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Length of one spam line, CRLF included (like fakemush).
const SPAM_LINE: usize = 80;
/// Prebuilt spam written per call: 3,277 lines, about 256 KiB.
const SPAM_CHUNK: usize = 3277 * SPAM_LINE;
/// Input buffer per connection.
const READ_BUF: usize = 4096;
/// Longest input line kept; longer ones are answered as unknown.
const MAX_LINE: usize = 8192;
/// Listen backlog: a re-login storm connects thousands at once.
const BACKLOG: u32 = 4096;

const CONNECT_SCREEN: &[u8] = b"Welcome to BenchMUSH (tinymush flavor)\r\n\
This is a benchmark backend for holdfast.\r\n\
Use \"connect <name> <password>\" to connect.\r\n";
const MOTD: &[u8] = b"*** MOTD: Welcome to BenchMUSH.\r\n\
Last connect was from 127.0.0.1 on Thu Jan  1 00:00:00 1970.\r\n";

fn spam_buf() -> &'static [u8] {
    static BUF: OnceLock<Vec<u8>> = OnceLock::new();
    BUF.get_or_init(|| {
        let mut v = Vec::with_capacity(SPAM_CHUNK);
        for i in 0..SPAM_CHUNK / SPAM_LINE {
            for j in 0..SPAM_LINE - 2 {
                v.push(b'!' + ((i * 7 + j) % 94) as u8);
            }
            v.extend_from_slice(b"\r\n");
        }
        v
    })
}

/// Serves on `addr` until killed; writes the bound address to `ready`.
pub fn serve(addr: SocketAddr, ready: &str) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("backend runtime");
    rt.block_on(async move {
        let sock = TcpSocket::new_v4().expect("socket");
        sock.set_reuseaddr(true).expect("SO_REUSEADDR");
        sock.bind(addr)
            .unwrap_or_else(|e| panic!("backend cannot bind {addr}: {e}"));
        let listener = sock.listen(BACKLOG).expect("listen");
        let local = listener.local_addr().expect("local_addr");
        let tmp = format!("{ready}.tmp");
        std::fs::write(&tmp, format!("{local}\n")).expect("ready file");
        std::fs::rename(&tmp, ready).expect("ready file");
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(async move {
                        let _ = conn(s).await;
                    });
                }
                // Out of descriptors, most likely: wait for some to close.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        }
    })
}

async fn conn(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.write_all(CONNECT_SCREEN).await?;
    let mut buf = Vec::with_capacity(READ_BUF);
    let mut logged_in = false;
    let mut out = Vec::new();
    loop {
        if buf.len() > MAX_LINE {
            buf.clear();
            s.write_all(b"Huh?  (Type \"help\" for help.)\r\n").await?;
        }
        buf.reserve(READ_BUF);
        if s.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut start = 0;
        while let Some(nl) = memchr::memchr(b'\n', &buf[start..]) {
            let end = start + nl;
            let mut line = &buf[start..end];
            start = end + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            match command(line, &mut logged_in, &mut out) {
                Action::Reply => {}
                Action::Spam(n) => {
                    s.write_all(&out).await?;
                    out.clear();
                    spam(&mut s, n).await?;
                }
                Action::Quit => {
                    s.write_all(&out).await?;
                    s.write_all(b"Goodbye. Come back soon!\r\n").await?;
                    return s.shutdown().await;
                }
            }
        }
        buf.drain(..start);
        if !out.is_empty() {
            s.write_all(&out).await?;
            out.clear();
        }
    }
}

enum Action {
    Reply,
    Spam(u64),
    Quit,
}

fn command(line: &[u8], logged_in: &mut bool, out: &mut Vec<u8>) -> Action {
    let (verb, rest) = match memchr::memchr(b' ', line) {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, &b""[..]),
    };
    match verb {
        b"echo" => {
            out.extend_from_slice(rest);
            out.extend_from_slice(b"\r\n");
        }
        b"think" if *logged_in => {
            out.extend_from_slice(rest);
            out.extend_from_slice(b"\r\n");
        }
        b"connect" | b"co" | b"conn" if !*logged_in => {
            *logged_in = true;
            out.extend_from_slice(MOTD);
        }
        b"spam" => {
            let n = std::str::from_utf8(rest)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            return Action::Spam(n);
        }
        b"QUIT" => return Action::Quit,
        b"@remotehost" | b"" => {}
        _ if !*logged_in => out.extend_from_slice(CONNECT_SCREEN),
        _ => out.extend_from_slice(b"Huh?  (Type \"help\" for help.)\r\n"),
    }
    Action::Reply
}

/// Sends exactly `n` bytes of spam lines (the last one cut short if needed).
async fn spam(s: &mut TcpStream, mut n: u64) -> std::io::Result<()> {
    let buf = spam_buf();
    while n > 0 {
        let k = n.min(buf.len() as u64) as usize;
        s.write_all(&buf[..k]).await?;
        n -= k as u64;
    }
    Ok(())
}
