//! The messages of an upgrade, over the private socket of [`super::fds`].
//!
//! ```text
//! new → old   Hello {version}          config read and valid
//!             Error "why"              or not: the new process exits 1
//! old → new   Doc(Head) + Fds          pool view, ids, the listeners
//! new → old   Ready                    listeners checked, proxy built
//!  ┌ old → new   Doc(Batch) + Fds      a batch of sessions: states, then
//!  │                                   per session the player and game fds
//!  └ new → old   Took {sessions}       restored and checked, not started
//! old → new   Doc(Batch{cluster})      in a cluster: its state now (its
//! new → old   Took {0}                 cluster task stopped); then
//! old → new   Commit                   the old process is stopping: the
//!                                      new one starts every session
//! ```
//!
//! Every message is one `SOCK_SEQPACKET` packet: a tag byte, then its
//! payload. A document is its size, then chunks: a 4-byte length, the
//! JSON head, then each session's state (zeroizing, it holds passwords).
//! Descriptors go ≤ [`MAX_FDS`] a message. The format is versioned
//! ([`FORMAT`]); a process reads its own and the one before
//! ([`OLDEST_FORMAT`], whose documents are its own less what was added)
//! and refuses any other rather than guess. A field added to a document
//! with `#[serde(default)]`, which a process that lacks it can leave out
//! or ignore without misreading anything, keeps the format; any other
//! change takes a new [`FORMAT`].

use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::fds::{self, MAX_DATA, MAX_FDS};
pub use crate::state::upgrade::GameFd;

/// Version of the handover document. 4: sessions' states are snapshot
/// version 3 (a binary tail holds the playback and a slow write's unsent
/// output), and the new process starts nothing before `Commit` (an old
/// process of format 3 works with it as it is). 3: sessions' states may
/// carry their player connection's own state (a plain WebSocket's), which
/// an older process would not understand.
pub const FORMAT: u32 = 4;
/// The oldest format read: 3 is 4 with JSON-only states (still read) and
/// a new process that relayed each batch at once (this one waits for
/// `Commit` either way), so an upgrade from it needs no restart.
pub const OLDEST_FORMAT: u32 = 3;

const HELLO: u8 = b'H';
const ERROR: u8 = b'E';
const DOC_SIZE: u8 = b'Z';
const DOC_CHUNK: u8 = b'D';
const FDS: u8 = b'F';
const READY: u8 = b'R';
const TOOK: u8 = b'T';
const COMMIT: u8 = b'C';

/// A message read from the socket.
#[derive(Debug)]
pub enum Msg {
    /// The new process read a valid config.
    Hello {
        /// Its version.
        version: String,
    },
    /// The other side gives up, and why.
    Error(String),
    /// The new process checked the listeners: send the sessions.
    Ready,
    /// The new process runs a batch of sessions.
    Took {
        /// Sessions in the batch.
        sessions: usize,
    },
    /// The old process is stopping: the new one owns everything.
    Commit,
}

#[derive(Serialize, Deserialize)]
struct HelloBody {
    version: String,
}

#[derive(Serialize, Deserialize)]
struct TookBody {
    sessions: usize,
}

/// One backend's health as the old process saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendWas {
    /// Backend name.
    pub name: String,
    /// Its address, as configured then.
    pub addr: String,
    /// Up, down, or not probed yet.
    pub up: Option<bool>,
    /// Why (the last probe's word).
    pub reason: String,
}

/// One session in a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionHead {
    /// Session id.
    pub id: u64,
    /// Unix time the player connected.
    pub connected: u64,
    /// Detached (its player's link had dropped): no player socket.
    #[serde(default)]
    pub detached: bool,
    /// Its game connection, if it has one (sent after the player's).
    pub game: Option<GameFd>,
    /// Length of its state in the batch's tail.
    pub len: usize,
}

/// The first document: what the old process knew besides the sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Head {
    /// [`FORMAT`].
    pub format: u32,
    /// The old process's version.
    pub from_version: String,
    /// Upgrades before this one.
    pub upgrades: u64,
    /// The next session id to hand out.
    pub next_id: u64,
    /// The active backend.
    pub active: String,
    /// The pool's failover epoch.
    pub epoch: u64,
    /// Every backend's health.
    pub backends: Vec<BackendWas>,
    /// The listening sockets (their front door, none for telnet) and
    /// addresses, in the order their fds are sent.
    pub listeners: Vec<(Option<crate::front::Door>, SocketAddr)>,
    /// The per-address connection-rate buckets not full: address, tokens.
    #[serde(default)]
    pub conn_rate: Vec<(std::net::IpAddr, f64)>,
    /// The cluster's term, choice and this instance's lease (`bus.cluster`).
    #[serde(default)]
    pub cluster: Option<crate::cluster::Carried>,
    /// When the proxy first started (UNIX seconds), for `uptime_s` and
    /// MSSP `UPTIME` to count on through upgrades. Added without a new
    /// [`FORMAT`]: an older process leaves it out (the new one counts
    /// from its own start) and ignores it.
    #[serde(default)]
    pub started: Option<u64>,
    /// The heartbeat probes: coverage and logged-in connection (its
    /// descriptor follows the listeners'), so the game sees no heartbeat
    /// logout and login and the new process judges boots from the start.
    /// An older process leaves it out (the new one probes afresh).
    #[serde(default)]
    pub probes: Vec<crate::backend::handover::ProbeCarried>,
}

impl Head {
    /// Descriptors that follow the head: the listeners', then the probes'.
    pub fn fd_count(&self) -> usize {
        self.listeners.len() + self.probes.iter().filter(|p| p.conn.is_some()).count()
    }
}

/// A batch of sessions (their states follow it in the document).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Batch {
    /// The sessions, in the order their fds are sent.
    pub sessions: Vec<SessionHead>,
    /// The last batch of an upgrade in a cluster (no sessions): the
    /// cluster's term, choice and lease when the old process stopped its
    /// cluster task, just before `Commit` (a term may have changed since
    /// the head). A process without it ignores it (an empty batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::Carried>,
}

impl Batch {
    /// Descriptors that follow the document.
    pub fn fd_count(&self) -> usize {
        self.sessions
            .iter()
            .map(|s| usize::from(!s.detached) + usize::from(s.game.is_some()))
            .sum::<usize>()
    }
}

fn send_tagged(sock: BorrowedFd<'_>, tag: u8, body: &[u8]) -> io::Result<()> {
    let mut m = Vec::with_capacity(body.len() + 1);
    m.push(tag);
    m.extend_from_slice(body);
    fds::send(sock, &m, &[])
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain structs of strings and numbers always serialise.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Sends `Hello`.
pub fn send_hello(sock: BorrowedFd<'_>, version: &str) -> io::Result<()> {
    let body = json(&HelloBody {
        version: version.into(),
    });
    send_tagged(sock, HELLO, &body)
}

/// Sends `Error` (cut to fit one message).
pub fn send_error(sock: BorrowedFd<'_>, why: &str) -> io::Result<()> {
    let mut end = why.len().min(MAX_DATA - 1);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    send_tagged(sock, ERROR, &why.as_bytes()[..end])
}

/// Sends `Ready`.
pub fn send_ready(sock: BorrowedFd<'_>) -> io::Result<()> {
    send_tagged(sock, READY, b"")
}

/// Sends `Took`.
pub fn send_took(sock: BorrowedFd<'_>, sessions: usize) -> io::Result<()> {
    send_tagged(sock, TOOK, &json(&TookBody { sessions }))
}

/// Sends `Commit`.
pub fn send_commit(sock: BorrowedFd<'_>) -> io::Result<()> {
    send_tagged(sock, COMMIT, b"")
}

/// Reads one control message. `Ok(None)`: the other side is gone.
pub fn recv_msg(sock: BorrowedFd<'_>) -> io::Result<Option<Msg>> {
    let mut buf = Vec::new();
    let Some(fds) = fds::recv(sock, &mut buf)? else {
        return Ok(None);
    };
    if !fds.is_empty() {
        return Err(bad("descriptors with a control message"));
    }
    let (tag, body) = buf.split_first().ok_or_else(|| bad("empty message"))?;
    let m = match *tag {
        HELLO => {
            let h: HelloBody = serde_json::from_slice(body).map_err(io::Error::other)?;
            Msg::Hello { version: h.version }
        }
        ERROR => Msg::Error(String::from_utf8_lossy(body).into_owned()),
        READY => Msg::Ready,
        TOOK => {
            let t: TookBody = serde_json::from_slice(body).map_err(io::Error::other)?;
            Msg::Took {
                sessions: t.sessions,
            }
        }
        COMMIT => Msg::Commit,
        _ => return Err(bad("unexpected message")),
    };
    Ok(Some(m))
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("upgrade: {what}"))
}

/// Builds a document: the head, then each session's state in order.
pub fn doc<T: Serialize>(head: &T, states: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    let h = json(head);
    let total = 4 + h.len() + states.iter().map(|s| s.len()).sum::<usize>();
    let mut d = Zeroizing::new(Vec::with_capacity(total));
    d.extend_from_slice(&u32::try_from(h.len()).unwrap_or(u32::MAX).to_be_bytes());
    d.extend_from_slice(&h);
    for s in states {
        d.extend_from_slice(s);
    }
    d
}

/// Sends a document (its descriptors follow with [`send_fds`]).
pub fn send_doc(sock: BorrowedFd<'_>, doc: &[u8]) -> io::Result<()> {
    send_tagged(sock, DOC_SIZE, &(doc.len() as u64).to_be_bytes())?;
    let mut m = Zeroizing::new(Vec::with_capacity(MAX_DATA));
    for chunk in doc.chunks(MAX_DATA - 1) {
        m.clear();
        m.push(DOC_CHUNK);
        m.extend_from_slice(chunk);
        fds::send(sock, &m, &[])?;
    }
    Ok(())
}

/// Sends descriptors, in messages of at most [`MAX_FDS`].
pub fn send_fds(sock: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    for batch in fds.chunks(MAX_FDS) {
        fds::send(sock, &[FDS], batch)?;
    }
    Ok(())
}

/// What the old process sends next.
pub enum Next {
    /// A document: its bytes (read on with [`read_head`], [`read_batch`]).
    Doc(Zeroizing<Vec<u8>>),
    /// `Commit`.
    Commit,
    /// `Error`: the old process gives up.
    Error(String),
    /// The old process is gone.
    Gone,
}

fn need_msg(sock: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<()> {
    match fds::recv(sock, buf)? {
        None => Err(bad("the old process went away")),
        Some(f) if !f.is_empty() => Err(bad("descriptors too early")),
        Some(_) => Ok(()),
    }
}

/// Reads the old process's next message: a whole document, or a word.
pub fn recv_next(sock: BorrowedFd<'_>) -> io::Result<Next> {
    let mut buf = Zeroizing::new(Vec::new());
    match fds::recv(sock, &mut buf)? {
        None => return Ok(Next::Gone),
        Some(f) if !f.is_empty() => return Err(bad("descriptors too early")),
        Some(_) => {}
    }
    let size = match buf.as_slice() {
        [ERROR, rest @ ..] => return Ok(Next::Error(String::from_utf8_lossy(rest).into_owned())),
        [COMMIT] => return Ok(Next::Commit),
        [DOC_SIZE, rest @ ..] if rest.len() == 8 => {
            u64::from_be_bytes(rest.try_into().map_err(|_| bad("size"))?)
        }
        _ => return Err(bad("expected a document")),
    };
    let size = usize::try_from(size).map_err(|_| bad("size"))?;
    let mut doc = Zeroizing::new(Vec::with_capacity(size));
    while doc.len() < size {
        need_msg(sock, &mut buf)?;
        match buf.split_first() {
            Some((&DOC_CHUNK, rest)) if doc.len() + rest.len() <= size => {
                doc.extend_from_slice(rest)
            }
            _ => return Err(bad("bad document chunk")),
        }
    }
    Ok(Next::Doc(doc))
}

/// The JSON head of a document, and where the states start.
fn split_head<T: serde::de::DeserializeOwned>(doc: &[u8]) -> io::Result<(T, usize)> {
    let hl = doc
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| bad("short document"))?;
    let h = doc.get(4..4 + hl).ok_or_else(|| bad("short document"))?;
    let head = serde_json::from_slice(h).map_err(|e| bad(&format!("document head: {e}")))?;
    Ok((head, 4 + hl))
}

/// Reads the first document ([`Head`]); any other format is refused.
pub fn read_head(doc: &[u8]) -> io::Result<Head> {
    let (head, end): (Head, usize) = split_head(doc)?;
    if !(OLDEST_FORMAT..=FORMAT).contains(&head.format) {
        return Err(bad(&format!(
            "handover format {} (this holdfast reads {OLDEST_FORMAT} to {FORMAT})",
            head.format
        )));
    }
    if end != doc.len() {
        return Err(bad("trailing bytes in the document"));
    }
    Ok(head)
}

/// Reads a batch document: the batch and each session's state.
pub fn read_batch(doc: &[u8]) -> io::Result<(Batch, Vec<Zeroizing<Vec<u8>>>)> {
    let (batch, mut pos): (Batch, usize) = split_head(doc)?;
    let mut states = Vec::with_capacity(batch.sessions.len());
    for s in &batch.sessions {
        let b = doc
            .get(pos..pos + s.len)
            .ok_or_else(|| bad("short document"))?;
        states.push(Zeroizing::new(b.to_vec()));
        pos += s.len;
    }
    if pos != doc.len() {
        return Err(bad("trailing bytes in the document"));
    }
    Ok((batch, states))
}

/// Reads exactly `want` descriptors (sent after the document).
pub fn recv_fds(sock: BorrowedFd<'_>, want: usize) -> io::Result<Vec<OwnedFd>> {
    let mut buf = Vec::new();
    let mut got = Vec::with_capacity(want);
    while got.len() < want {
        match fds::recv(sock, &mut buf)? {
            Some(f) if buf.as_slice() == [FDS] && !f.is_empty() => got.extend(f),
            Some(_) => return Err(bad("expected descriptors")),
            None => return Err(bad("the old process went away")),
        }
    }
    if got.len() != want {
        return Err(bad(&format!("{} descriptors, expected {want}", got.len())));
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    fn head() -> Head {
        Head {
            format: FORMAT,
            from_version: "0.0.1".into(),
            upgrades: 2,
            next_id: 9,
            active: "a".into(),
            epoch: 3,
            backends: Vec::new(),
            listeners: Vec::new(),
            conn_rate: Vec::new(),
            cluster: None,
            started: Some(1_700_000_000),
            probes: Vec::new(),
        }
    }

    fn expect_doc(n: Next) -> Zeroizing<Vec<u8>> {
        match n {
            Next::Doc(d) => d,
            _ => panic!("expected a document"),
        }
    }

    #[test]
    fn the_head_then_a_large_batch_and_its_descriptors_cross() {
        let (a, b) = fds::pair().unwrap();
        fds::set_timeout(b.as_fd(), Duration::from_secs(5)).unwrap();
        let states: Vec<Vec<u8>> = (0..300u32)
            .map(|i| format!("state {i} {}", "x".repeat(500)).into_bytes())
            .collect();
        let sessions = states
            .iter()
            .enumerate()
            .map(|(i, s)| SessionHead {
                id: i as u64,
                connected: 0,
                detached: false,
                game: None,
                len: s.len(),
            })
            .collect();
        let batch = Batch {
            sessions,
            cluster: None,
        };
        let refs: Vec<&[u8]> = states.iter().map(|s| s.as_slice()).collect();
        let d = doc(&batch, &refs);
        let socks: Vec<UnixStream> = (0..300).map(|_| UnixStream::pair().unwrap().0).collect();
        let fd_refs: Vec<BorrowedFd> = socks.iter().map(|s| s.as_fd()).collect();
        let t = std::thread::spawn(move || {
            let h = read_head(&expect_doc(recv_next(b.as_fd()).unwrap())).unwrap();
            let (batch, states) = read_batch(&expect_doc(recv_next(b.as_fd()).unwrap())).unwrap();
            let fds = recv_fds(b.as_fd(), batch.fd_count()).unwrap();
            let commit = matches!(recv_next(b.as_fd()).unwrap(), Next::Commit);
            let gone = matches!(recv_next(b.as_fd()).unwrap(), Next::Gone);
            (h, states, fds.len(), commit, gone)
        });
        send_doc(a.as_fd(), &doc(&head(), &[])).unwrap();
        send_doc(a.as_fd(), &d).unwrap();
        send_fds(a.as_fd(), &fd_refs).unwrap();
        send_commit(a.as_fd()).unwrap();
        drop(a);
        let (h2, s2, n, commit, gone) = t.join().unwrap();
        assert_eq!(h2.next_id, 9);
        assert_eq!(n, 300);
        assert_eq!(s2.len(), 300);
        assert_eq!(s2[299].as_slice(), states[299].as_slice());
        assert!(commit && gone);
    }

    #[test]
    fn a_head_of_another_format_is_refused() {
        let mut h = head();
        h.format = FORMAT + 1;
        let e = read_head(&doc(&h, &[])).unwrap_err();
        assert!(e.to_string().contains("handover format"), "{e}");
        h.format = OLDEST_FORMAT - 1;
        assert!(read_head(&doc(&h, &[])).is_err());
        // The format before this one is read.
        h.format = OLDEST_FORMAT;
        assert_eq!(read_head(&doc(&h, &[])).unwrap().format, OLDEST_FORMAT);
        // A batch is not a head.
        assert!(read_head(&doc(&Batch::default(), &[])).is_err());
    }

    #[test]
    fn control_messages_and_the_other_side_leaving() {
        let (a, b) = fds::pair().unwrap();
        send_hello(a.as_fd(), "1.2.3").unwrap();
        send_error(a.as_fd(), "config.toml:3:1: bad").unwrap();
        send_ready(a.as_fd()).unwrap();
        send_took(a.as_fd(), 5).unwrap();
        send_commit(a.as_fd()).unwrap();
        drop(a);
        assert!(
            matches!(recv_msg(b.as_fd()).unwrap(), Some(Msg::Hello { version }) if version == "1.2.3")
        );
        assert!(matches!(recv_msg(b.as_fd()).unwrap(), Some(Msg::Error(e)) if e.contains(":3:1")));
        assert!(matches!(recv_msg(b.as_fd()).unwrap(), Some(Msg::Ready)));
        assert!(matches!(
            recv_msg(b.as_fd()).unwrap(),
            Some(Msg::Took { sessions: 5 })
        ));
        assert!(matches!(recv_msg(b.as_fd()).unwrap(), Some(Msg::Commit)));
        assert!(recv_msg(b.as_fd()).unwrap().is_none());
    }

    #[test]
    fn a_short_batch_or_too_few_descriptors_is_an_error() {
        let (a, b) = fds::pair().unwrap();
        fds::set_timeout(b.as_fd(), Duration::from_secs(5)).unwrap();
        let batch = Batch {
            sessions: vec![SessionHead {
                id: 1,
                connected: 0,
                detached: false,
                game: Some(GameFd::Tcp),
                len: 2,
            }],
            cluster: None,
        };
        assert!(read_batch(&doc(&batch, &[b"{"])).is_err());
        let s = UnixStream::pair().unwrap().0;
        send_fds(a.as_fd(), &[s.as_fd()]).unwrap();
        drop(a);
        assert!(recv_fds(b.as_fd(), batch.fd_count()).is_err());
    }
}
