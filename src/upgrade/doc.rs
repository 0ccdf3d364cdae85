//! The documents of an upgrade ([`super::wire`] carries them): the head
//! (the pool view, ids, the listeners, the probes) and each batch of
//! sessions, with their format version. A document is a 4-byte length,
//! the JSON head, then each session's state (zeroizing: it holds
//! passwords).

use std::io;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::state::upgrade::GameFd;

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

/// Reads a batch document: the batch and each session's state (read in
/// place, not copied out of the zeroizing document).
pub fn read_batch(doc: &[u8]) -> io::Result<(Batch, Vec<&[u8]>)> {
    let (batch, mut pos): (Batch, usize) = split_head(doc)?;
    let mut states = Vec::with_capacity(batch.sessions.len());
    for s in &batch.sessions {
        let b = pos
            .checked_add(s.len)
            .and_then(|end| doc.get(pos..end))
            .ok_or_else(|| bad("short document"))?;
        states.push(b);
        pos += s.len;
    }
    if pos != doc.len() {
        return Err(bad("trailing bytes in the document"));
    }
    Ok((batch, states))
}

pub(super) fn json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain structs of strings and numbers always serialise.
    serde_json::to_vec(v).unwrap_or_default()
}

pub(super) fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("upgrade: {what}"))
}
