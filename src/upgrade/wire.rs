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
use std::os::fd::{BorrowedFd, OwnedFd};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::doc::{bad, json};
pub use super::doc::{
    doc, read_batch, read_head, BackendWas, Batch, Head, SessionHead, FORMAT, OLDEST_FORMAT,
};
use super::fds::{self, MAX_DATA, MAX_FDS};
pub use crate::state::upgrade::GameFd;

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

fn send_tagged(sock: BorrowedFd<'_>, tag: u8, body: &[u8]) -> io::Result<()> {
    let mut m = Vec::with_capacity(body.len() + 1);
    m.push(tag);
    m.extend_from_slice(body);
    fds::send(sock, &m, &[])
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

/// Sends a document (its descriptors follow with [`send_fds`]).
pub fn send_doc(sock: BorrowedFd<'_>, doc: &[u8]) -> io::Result<()> {
    send_tagged(sock, DOC_SIZE, &(doc.len() as u64).to_be_bytes())?;
    // The tag and the chunk go as two parts of one message: no copy.
    for chunk in doc.chunks(MAX_DATA - 1) {
        fds::send_parts(sock, &[&[DOC_CHUNK], chunk], &[])?;
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
#[path = "wire_tests.rs"]
mod tests;
