//! The player side of every measurement: log in like a MUSH client, then
//! pull bulk output, time round trips, sit idle, or ride out a restart.
//!
//! Every wait has a deadline, every loop a bound: a stuck proxy fails the
//! benchmark instead of hanging it.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use memchr::memmem;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How long one login may take (the screen, the MOTD, the settle marker).
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a bulk transfer may take before the benchmark gives up.
const BULK_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one round trip may take.
const RTT_TIMEOUT: Duration = Duration::from_secs(5);
/// Logins in flight at once when opening many sessions.
const LOGIN_CONCURRENCY: usize = 200;
/// Bytes read per call while pulling bulk output.
const BULK_READ: usize = 256 * 1024;

pub const SCREEN_END: &[u8] = b"to connect.\r\n";
const MOTD_END: &[u8] = b"Last connect was from";

// ----- blocking client (one connection: lowest client overhead) ---------

/// A logged-in player on a blocking socket.
pub struct Player {
    s: std::net::TcpStream,
    /// Bytes received after the login settled (none, normally).
    pending: Vec<u8>,
}

fn read_until_blocking(
    s: &mut std::net::TcpStream,
    buf: &mut Vec<u8>,
    needle: &[u8],
    deadline: Instant,
) -> std::io::Result<usize> {
    let mut from = 0;
    let mut tmp = [0u8; 16 * 1024];
    loop {
        if let Some(i) = memmem::find(&buf[from..], needle) {
            return Ok(from + i + needle.len());
        }
        from = buf.len().saturating_sub(needle.len());
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("never saw {:?}", String::from_utf8_lossy(needle)),
            ));
        }
        s.set_read_timeout(Some(left))?;
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

impl Player {
    /// Connects, waits for the connect screen, logs in as `name` and waits
    /// until a command sent after the login has been answered (so holdfast
    /// has confirmed the login and is plainly relaying).
    pub fn login(addr: SocketAddr, name: &str) -> std::io::Result<Player> {
        let deadline = Instant::now() + LOGIN_TIMEOUT;
        let mut s = std::net::TcpStream::connect_timeout(&addr, LOGIN_TIMEOUT)?;
        s.set_nodelay(true)?;
        let mut buf = Vec::new();
        let end = read_until_blocking(&mut s, &mut buf, SCREEN_END, deadline)?;
        buf.drain(..end);
        s.write_all(format!("connect {name} benchpw\r\n").as_bytes())?;
        let end = read_until_blocking(&mut s, &mut buf, MOTD_END, deadline)?;
        buf.drain(..end);
        let marker = format!("settled-{name}\r\n");
        s.write_all(format!("think {marker}").as_bytes())?;
        let end = read_until_blocking(&mut s, &mut buf, marker.as_bytes(), deadline)?;
        buf.drain(..end);
        Ok(Player { s, pending: buf })
    }

    /// Asks for `bytes` of spam and returns the seconds until the last
    /// byte arrived.
    pub fn bulk(&mut self, bytes: u64) -> std::io::Result<f64> {
        let deadline = Instant::now() + BULK_TIMEOUT;
        let mut got = std::mem::take(&mut self.pending).len() as u64;
        let mut buf = vec![0u8; BULK_READ];
        let t0 = Instant::now();
        self.s.write_all(format!("spam {bytes}\r\n").as_bytes())?;
        self.s.set_read_timeout(Some(RTT_TIMEOUT))?;
        while got < bytes {
            if Instant::now() > deadline {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            let n = self.s.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            got += n as u64;
        }
        Ok(t0.elapsed().as_secs_f64())
    }

    /// Times `n` round trips of `echo` (after `warmup` untimed ones);
    /// returns each in microseconds.
    pub fn round_trips(&mut self, warmup: usize, n: usize) -> std::io::Result<Vec<f64>> {
        let mut out = Vec::with_capacity(n);
        let mut buf = [0u8; 256];
        self.s.set_read_timeout(Some(RTT_TIMEOUT))?;
        for i in 0..warmup + n {
            let cmd = format!("echo r{i:08}\r\n");
            let t0 = Instant::now();
            self.s.write_all(cmd.as_bytes())?;
            // The answer is `r<i>\r\n`: 11 bytes.
            let mut got = 0;
            while got < 11 {
                let k = self.s.read(&mut buf[got..])?;
                if k == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                got += k;
            }
            let dt = t0.elapsed();
            if got != 11 || buf[..9] != cmd.as_bytes()[5..14] {
                return Err(std::io::Error::other(format!(
                    "unexpected answer {:?}",
                    String::from_utf8_lossy(&buf[..got])
                )));
            }
            if i >= warmup {
                out.push(dt.as_secs_f64() * 1e6);
            }
        }
        Ok(out)
    }
}

// ----- async clients (many connections) ---------------------------------

pub async fn read_until(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    needle: &[u8],
    deadline: tokio::time::Instant,
) -> std::io::Result<usize> {
    let mut from = 0;
    loop {
        if let Some(i) = memmem::find(&buf[from..], needle) {
            return Ok(from + i + needle.len());
        }
        from = buf.len().saturating_sub(needle.len());
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline, s.read_buf(buf)).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("never saw {:?}", String::from_utf8_lossy(needle)),
                ))
            }
        }
    }
}

/// Async [`Player::login`]; returns the stream and what followed the login.
pub async fn login(addr: SocketAddr, name: String) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + LOGIN_TIMEOUT;
    let mut s = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    s.set_nodelay(true)?;
    let mut buf = Vec::new();
    let end = read_until(&mut s, &mut buf, SCREEN_END, deadline).await?;
    buf.drain(..end);
    login_on(&mut s, &mut buf, name).await?;
    Ok((s, buf))
}

/// Logs in as `name` on a connection that already has its connect screen
/// (`buf` holds what came after it) and waits until a command sent after
/// the login was answered.
pub async fn login_on(s: &mut TcpStream, buf: &mut Vec<u8>, name: String) -> std::io::Result<()> {
    let deadline = tokio::time::Instant::now() + LOGIN_TIMEOUT;
    s.write_all(format!("connect {name} benchpw\r\n").as_bytes())
        .await?;
    let end = read_until(s, buf, MOTD_END, deadline).await?;
    buf.drain(..end);
    let marker = format!("settled-{name}\r\n");
    s.write_all(format!("think {marker}").as_bytes()).await?;
    let end = read_until(s, buf, marker.as_bytes(), deadline).await?;
    buf.drain(..end);
    buf.shrink_to_fit();
    Ok(())
}

/// Logs in `n` players named `{prefix}{i}`, `LOGIN_CONCURRENCY` at a time.
pub async fn login_many(
    addr: SocketAddr,
    prefix: &str,
    n: usize,
) -> std::io::Result<Vec<(TcpStream, Vec<u8>)>> {
    let results: Vec<_> = stream::iter(0..n)
        .map(|i| login(addr, format!("{prefix}{i}")))
        .buffer_unordered(LOGIN_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// `conns` logged-in players named `{prefix}{i}` each pull `each` bytes at
/// once; returns the seconds from the first request to the last byte.
/// Each run needs names of its own: a player whose link drops is kept for
/// resume, and the same name logging in again resumes that session (its
/// screen is the resume's, not the game's answer to a login).
pub async fn bulk_many(
    addr: SocketAddr,
    prefix: &str,
    conns: usize,
    each: u64,
) -> std::io::Result<f64> {
    let players = login_many(addr, prefix, conns).await?;
    let start = Arc::new(tokio::sync::Barrier::new(conns + 1));
    let mut tasks = Vec::with_capacity(conns);
    for (mut s, pending) in players {
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + BULK_TIMEOUT;
            let mut got = pending.len() as u64;
            let mut buf = vec![0u8; 64 * 1024];
            start.wait().await;
            s.write_all(format!("spam {each}\r\n").as_bytes()).await?;
            while got < each {
                match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                    Ok(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(Ok(n)) => got += n as u64,
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
                }
            }
            Ok::<Instant, std::io::Error>(Instant::now())
        }));
    }
    start.wait().await;
    let t0 = Instant::now();
    let mut last = t0;
    for t in tasks {
        let end = t.await.map_err(std::io::Error::other)??;
        last = last.max(end);
    }
    Ok(last.duration_since(t0).as_secs_f64())
}

/// What a storm session saw, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The offline notice (the session is held).
    Offline,
    /// The online notice (logged back in).
    Online,
}

/// Watches each stream for the offline then the online notice and reports
/// `(index, what, when)` on `tx`. The tasks end after the online notice,
/// on EOF, or after `limit`.
pub fn watch_notices(
    streams: Vec<(TcpStream, Vec<u8>)>,
    offline: &'static str,
    online: &'static str,
    limit: Duration,
    tx: mpsc::UnboundedSender<(usize, Seen, Instant)>,
) -> Vec<tokio::task::JoinHandle<TcpStream>> {
    streams
        .into_iter()
        .enumerate()
        .map(|(i, (mut s, _))| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + limit;
                let mut buf = Vec::new();
                for (needle, what) in [(offline, Seen::Offline), (online, Seen::Online)] {
                    match read_until(&mut s, &mut buf, needle.as_bytes(), deadline).await {
                        Ok(end) => {
                            let _ = tx.send((i, what, Instant::now()));
                            buf.drain(..end);
                        }
                        Err(_) => break,
                    }
                }
                s
            })
        })
        .collect()
}
