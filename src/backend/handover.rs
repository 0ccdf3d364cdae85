//! The probes' part of an upgrade: each probe's logged-in connection and
//! its coverage cross to the new process like any other game socket, so
//! that the game sees no heartbeat logout and login, and the new process
//! judges quit, boot or crash (`backend::coverage`) from the first session
//! it takes over.
//!
//! The old process parks its probes ([`export`]) before it sends the
//! listeners: a parked probe does not touch its connection (the new one
//! probes on it from then on) and answers its own sessions' checks by
//! peeking at it. [`settle`] ends them once the new process committed, or
//! lets them carry on if the upgrade failed.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::connect::BackendStream;
pub use super::connect::{dup, Sock, SockKind};
use super::coverage::{Carried, Coverage};
use super::probes::{Inherited, Probes};

/// How long the upgrade waits for a probe to park.
pub const PARK_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

/// One probe in the upgrade's head document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeCarried {
    /// The backend's name.
    pub backend: String,
    /// Its address, as configured then.
    pub addr: String,
    /// The coverage, relative to when it was written.
    pub coverage: Carried,
    /// The logged-in connection's kind, if one is sent (the descriptors
    /// follow the listeners', in this order).
    pub conn: Option<SockKind>,
}

/// The old process: parks every probe and returns what goes in the head
/// document and the descriptors to send after the listeners'.
pub async fn export(probes: &Probes) -> (Vec<ProbeCarried>, Vec<OwnedFd>) {
    let probes = probes.all();
    let mut carried = Vec::with_capacity(probes.len());
    let mut fds = Vec::new();
    for p in probes {
        // A probe in the middle of a slow probe (a frozen game: seconds)
        // is left out rather than hold the upgrade up: the new process
        // probes afresh, and the late request finds no one waiting.
        let Ok(Some(parked)) = tokio::time::timeout(PARK_WAIT, p.park()).await else {
            debug!(backend = %p.backend.name, "probe busy; the new process probes afresh");
            continue;
        };
        let conn = parked.conn.map(|s| {
            fds.push(s.fd);
            s.kind
        });
        carried.push(ProbeCarried {
            backend: p.backend.name.clone(),
            addr: p.backend.addr.to_string(),
            coverage: parked.coverage,
            conn,
        });
    }
    debug!(
        probes = carried.len(),
        connections = fds.len(),
        "probes parked for the upgrade"
    );
    (carried, fds)
}

/// The old process: ends the parked probes (the new process committed) or
/// lets them carry on (the upgrade failed).
pub fn settle(probes: &Probes, committed: bool) {
    for p in probes.lock().values() {
        p.settle(committed);
    }
}

/// The new process: what each probe starts from, by backend name. `fds`
/// are the descriptors of the carried connections, in order; each was
/// checked to be of its kind.
pub fn import(carried: &[ProbeCarried], fds: Vec<OwnedFd>) -> HashMap<String, Inherit> {
    let now = Instant::now();
    let mut fds = fds.into_iter();
    let mut out = HashMap::new();
    for p in carried {
        let conn = p.conn.and_then(|k| {
            let fd = fds.next()?;
            let s = match k {
                SockKind::Tcp => {
                    let s = std::net::TcpStream::from(fd);
                    s.set_nonblocking(true)
                        .and_then(|()| tokio::net::TcpStream::from_std(s))
                        .map(BackendStream::Tcp)
                }
                SockKind::Unix => {
                    let s = std::os::unix::net::UnixStream::from(fd);
                    s.set_nonblocking(true)
                        .and_then(|()| tokio::net::UnixStream::from_std(s))
                        .map(BackendStream::Unix)
                }
            };
            s.inspect_err(|e| warn!(backend = %p.backend, error = %e, "cannot take the probe's connection over"))
                .ok()
        });
        out.insert(
            p.backend.clone(),
            Inherit {
                addr: p.addr.clone(),
                inherited: Inherited {
                    coverage: Coverage::import(&p.coverage, now),
                    conn,
                },
            },
        );
    }
    out
}

/// A probe's start in the new process, for the backend at `addr`.
pub struct Inherit {
    /// The address it probed (a changed address starts afresh).
    pub addr: String,
    /// What it starts from.
    pub inherited: Inherited,
}
