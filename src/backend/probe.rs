//! The probe's connection to a backend and its failures: open (with the
//! client-ip preamble games expect), wait for the connect screen, log in,
//! ask for a nonce. No state beyond one connection; the policy (when to
//! replace a connection, when a backend is down) lives in `health`.

use std::net::SocketAddr;
use std::time::Duration;

use memchr::memmem;
use regex::Regex;
use tokio::io::AsyncWriteExt;
use tokio::time::{timeout_at, Instant};
use tracing::debug;

use super::connect::{connect, BackendStream};
use super::mssp::ProbeTelnet;
use crate::clientip;
use crate::config::{Backend, ClientIpMode, Config};
use crate::login::{new_nonce, render_nonce, strip_ansi, SYNC_RESEND};

/// Bytes of probe-connection output kept while looking for a nonce.
const PROBE_BUF_MAX: usize = 64 * 1024;
/// A connect screen kept for lazy connect is at most this long.
pub const SCREEN_MAX: usize = 16 * 1024;
/// The connect screen is complete once the game is quiet this long.
pub const SCREEN_QUIET: Duration = Duration::from_millis(150);
/// After a probe's answer, how long the game's MSSP answer (asked for on
/// this connection) is waited for, once per connection: between probes
/// the connection's output is drained unread.
const MSSP_WAIT: Duration = Duration::from_millis(500);

/// Why a probe step failed. Callers branch on the kind (a slow answer on a
/// logged-in connection is not a dead game), so it is an enum, not text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The TCP or Unix connect failed (refused, unreachable, timed out).
    #[error("connect: {0}")]
    Connect(String),
    /// Connected, but no connect screen came within the allowance.
    #[error("no connect screen within {}", humantime::format_duration(*.0))]
    NoBanner(Duration),
    /// The nonce did not come back before `heartbeat.timeout`.
    #[error("no answer before heartbeat.timeout")]
    NoAnswer,
    /// The backend closed the connection.
    #[error("connection closed by the backend")]
    Closed,
    /// Reading failed.
    #[error("read: {0}")]
    Read(String),
    /// Writing failed.
    #[error("write: {0}")]
    Write(String),
    /// A write made no progress before the deadline.
    #[error("write timed out")]
    WriteTimeout,
}

/// One connection of the probe.
pub struct ProbeConn {
    pub(super) stream: BackendStream,
    pub(super) buf: Vec<u8>,
    /// When the game process behind this connection was first seen by the
    /// probe: this connection's opening, or that of the one it replaced
    /// while that one was still open (see `ProbeHandle::check_now`).
    pub(super) since: Instant,
    /// Its telnet answers (`DO MSSP` to the game's offer; see `mssp`).
    telnet: ProbeTelnet,
    /// The game's MSSP answer was waited for on this connection.
    mssp_waited: bool,
    /// Whether a login on it was confirmed and counted in the coverage.
    pub(super) proven: bool,
}

impl ProbeConn {
    /// A connection taken over from an older process (already logged in).
    pub(super) fn inherited(stream: BackendStream, since: Instant) -> ProbeConn {
        ProbeConn {
            stream,
            buf: Vec::with_capacity(4096),
            since,
            proven: true,
            telnet: ProbeTelnet::default(),
            // The old process asked for the game's MSSP on it.
            mssp_waited: true,
        }
    }

    /// Whether the game still holds the connection open, without reading
    /// anything from it (`MSG_PEEK`): an end of stream or an error says it
    /// closed, pending data or nothing to read yet says it is open.
    pub(super) fn still_open(&self) -> bool {
        use std::os::fd::AsFd;
        let fd = match &self.stream {
            BackendStream::Tcp(s) => s.as_fd(),
            BackendStream::Unix(s) => s.as_fd(),
        };
        let mut b = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
        match rustix::net::recv(fd, &mut b[..], flags) {
            Ok((_, 0)) => false,
            Ok(_) => true,
            Err(e) => e == rustix::io::Errno::AGAIN,
        }
    }
}

/// What a login on a fresh connection brought.
pub enum LoginOutcome {
    /// The nonce came back: logged in. With it, the rest of the nonce's
    /// line (what `templates.identity` asked for), trimmed.
    Answered(String),
    /// A `login_failure` line: the text.
    Rejected(String),
}

/// Opens a connection within `deadline` (and the backend's connect
/// timeout) and sends the client-ip preamble the game expects first.
pub async fn open(
    backend: &Backend,
    cfg: &Config,
    deadline: Instant,
) -> Result<ProbeConn, ProbeError> {
    // Stamped before connecting: a session whose connection completed
    // while this one was being made is on the same process (a restart in
    // that millisecond window is the only thing this misses), and the two
    // often race when holdfast starts.
    let started = Instant::now();
    let left = deadline.saturating_duration_since(started);
    let t = backend
        .connect_timeout
        .min(left.max(Duration::from_millis(1)));
    let stream = connect(&backend.addr, t)
        .await
        .map_err(|e| ProbeError::Connect(e.to_string()))?;
    let mut c = ProbeConn {
        stream,
        buf: Vec::with_capacity(4096),
        since: started,
        telnet: ProbeTelnet::default(),
        mssp_waited: false,
        proven: false,
    };
    // Games behind a PROXY header or PennMUSH's socket expect it on every
    // connection, the probe's too.
    if matches!(
        cfg.client_ip.mode,
        ClientIpMode::ProxyV1 | ClientIpMode::ProxyV2 | ClientIpMode::Pennmush
    ) {
        let me: SocketAddr = ([127, 0, 0, 1], 0).into();
        let pre = clientip::preamble(&cfg.client_ip, me, me, Some("holdfast-heartbeat"));
        write(&mut c, &pre, deadline).await?;
    }
    Ok(c)
}

/// Waits for the connect screen (any output) until `deadline`; `allowed`
/// is only for the error. Returns the first line matching one of
/// `refused` (the game turning holdfast's address away), if any. With
/// `keep`, the whole connect screen (telnet removed, read until the game
/// is quiet for [`SCREEN_QUIET`]) goes there, for lazy connect.
pub async fn banner(
    c: &mut ProbeConn,
    deadline: Instant,
    allowed: Duration,
    refused: &[Regex],
    keep: Option<&mut Vec<u8>>,
) -> Result<Option<String>, ProbeError> {
    match read_until(c, deadline, |buf| !buf.is_empty()).await {
        Err(ProbeError::NoAnswer) => return Err(ProbeError::NoBanner(allowed)),
        Err(e) => return Err(e),
        Ok(()) => {}
    }
    // Refusals come alone and at once (TinyMUX writes them raw, then
    // closes), so the first read holds them.
    let hit = matching_line(&c.buf, refused);
    if let (Some(keep), None) = (keep, &hit) {
        *keep = rest_of_screen(c, deadline).await;
    }
    c.buf.clear();
    Ok(hit)
}

/// Reads on from what [`banner`] got until the game is quiet (or, while
/// no text came yet, until `deadline`); the text without telnet.
async fn rest_of_screen(c: &mut ProbeConn, deadline: Instant) -> Vec<u8> {
    let mut raw = std::mem::take(&mut c.buf);
    loop {
        let text = strip_telnet(&raw);
        if raw.len() > SCREEN_MAX {
            return Vec::new();
        }
        let step = if text.is_empty() {
            deadline
        } else {
            (Instant::now() + SCREEN_QUIET).min(deadline)
        };
        match read_until(c, step, |b| !b.is_empty()).await {
            Ok(()) => raw.append(&mut c.buf),
            Err(_) => return text,
        }
    }
}

/// The text of `raw` without telnet commands and negotiations.
fn strip_telnet(raw: &[u8]) -> Vec<u8> {
    let mut p = crate::telnet::Parser::new(1024);
    let mut text = Vec::new();
    p.feed(raw, |ev| {
        if let crate::telnet::TelnetEvent::Data(d) = ev {
            text.extend_from_slice(d);
        }
        true
    });
    text
}

/// The first complete line of `buf` that matches one of `res` (ANSI
/// removed, leading spaces ignored).
pub fn matching_line(buf: &[u8], res: &[Regex]) -> Option<String> {
    if res.is_empty() {
        return None;
    }
    buf.split(|b| *b == b'\n').find_map(|l| {
        let l = String::from_utf8_lossy(l);
        let l = strip_ansi(&l);
        let l = l.trim();
        res.iter().any(|re| re.is_match(l)).then(|| l.to_string())
    })
}

/// Sends the probe command with a fresh nonce and waits for it until
/// `deadline`. With `failure` given (right after a login), a failure line
/// ends the wait with [`LoginOutcome::Rejected`]. With `whole_line`, the
/// nonce's line is read to its end (it carries the game's identity).
pub async fn ask(
    c: &mut ProbeConn,
    template: &str,
    deadline: Instant,
    failure: Option<&[Regex]>,
    whole_line: bool,
) -> Result<LoginOutcome, ProbeError> {
    let nonce = new_nonce();
    let cmd = render_nonce(template, &nonce);
    c.buf.clear();
    write(c, &cmd, deadline).await?;
    let mut rejected = None;
    read_until(c, deadline, |buf| {
        if let Some(at) = memmem::find(buf, nonce.as_bytes()) {
            return !whole_line || memchr::memchr(b'\n', &buf[at..]).is_some();
        }
        if let Some(f) = failure {
            rejected = matching_line(buf, f);
        }
        rejected.is_some()
    })
    .await?;
    if rejected.is_none() && !c.mssp_waited && c.telnet.awaiting_answer() {
        // The game was asked for its MSSP on this connection and has not
        // answered yet: give it a moment, once, so the answer is read here
        // rather than drained unread between probes.
        c.mssp_waited = true;
        let until = (Instant::now() + MSSP_WAIT).min(deadline);
        let _ = read_until_conn(c, until, |c| !c.telnet.awaiting_answer()).await;
    }
    Ok(match rejected {
        Some(l) => LoginOutcome::Rejected(l),
        None => LoginOutcome::Answered(rest_of_line(&c.buf, &nonce)),
    })
}

/// The text after `nonce` up to the end of its line (ANSI removed,
/// trimmed).
fn rest_of_line(buf: &[u8], nonce: &str) -> String {
    let Some(at) = memmem::find(buf, nonce.as_bytes()) else {
        return String::new();
    };
    let rest = &buf[at + nonce.len()..];
    let end = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
    let text = String::from_utf8_lossy(&rest[..end]);
    strip_ansi(&text).trim().to_string()
}

/// For `templates.sync` (Evennia): sends the probe command, again every
/// [`SYNC_RESEND`], until its nonce comes back, proving the game has the
/// connection and will not drop the login (Evennia drops input that
/// arrives before its Portal hands the connection to its Server).
pub async fn sync(c: &mut ProbeConn, template: &str, deadline: Instant) -> Result<(), ProbeError> {
    let nonce = new_nonce();
    let cmd = render_nonce(template, &nonce);
    loop {
        write(c, &cmd, deadline).await?;
        let step = (Instant::now() + SYNC_RESEND).min(deadline);
        match read_until(c, step, |buf| memmem::find(buf, nonce.as_bytes()).is_some()).await {
            Ok(()) => {
                c.buf.clear();
                return Ok(());
            }
            Err(ProbeError::NoAnswer) if Instant::now() < deadline => {
                debug!("probe sync: nonce not back yet; sending it again");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `data` before `deadline`.
pub async fn write(c: &mut ProbeConn, data: &[u8], deadline: Instant) -> Result<(), ProbeError> {
    match timeout_at(deadline, c.stream.write_all(data)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ProbeError::Write(e.to_string())),
        Err(_) => Err(ProbeError::WriteTimeout),
    }
}

/// Reads into `c.buf` until `done(buf)` or the deadline.
async fn read_until(
    c: &mut ProbeConn,
    deadline: Instant,
    mut done: impl FnMut(&[u8]) -> bool,
) -> Result<(), ProbeError> {
    read_until_conn(c, deadline, |c| done(&c.buf)).await
}

/// Reads into `c.buf` until `done(c)` or the deadline. What arrives goes
/// through the connection's telnet answers first (see `mssp`).
async fn read_until_conn(
    c: &mut ProbeConn,
    deadline: Instant,
    mut done: impl FnMut(&ProbeConn) -> bool,
) -> Result<(), ProbeError> {
    loop {
        if done(c) {
            return Ok(());
        }
        if c.buf.len() > PROBE_BUF_MAX {
            // Keep the tail: a nonce may straddle the cut.
            let keep = c.buf.len() - 256;
            c.buf.drain(..keep);
        }
        match timeout_at(deadline, c.stream.readable()).await {
            Err(_) => return Err(ProbeError::NoAnswer),
            Ok(Err(e)) => return Err(ProbeError::Read(e.to_string())),
            Ok(Ok(())) => {}
        }
        c.buf.reserve(4096);
        let before = c.buf.len();
        match c.stream.try_read_buf(&mut c.buf) {
            Ok(0) => return Err(ProbeError::Closed),
            Ok(_) => {
                let mut reply = Vec::new();
                if let Some(answer) = c.telnet.feed(&c.buf[before..], &mut reply) {
                    super::mssp::game_said(&answer);
                }
                if c.telnet.offered() {
                    super::mssp::game_offered();
                }
                if !reply.is_empty() {
                    write(c, &reply, deadline).await?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(ProbeError::Read(e.to_string())),
        }
    }
}
