//! The new process's side of an upgrade: take the socket from stdin, say
//! `Hello` once the config is valid (or why not), receive and check
//! everything, say `Taken`, and start only after the old process's
//! `Commit` (until then nothing has been read or written, so the old one
//! can still carry on).

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use tracing::warn;
use zeroize::Zeroizing;

use super::fds::{self, Kind};
use super::wire::{self, GameFd, Head, Msg, SessionHead};
use super::{DEADLINE, ENV};
use crate::backend::connect::BackendStream;
use crate::clientip::peer_ip;
use crate::config::Config;
use crate::session::snapshot::{restore, Restored};
use crate::state::{SessionInfo, Shared};

/// The game connection of a taken-over session.
#[derive(Debug)]
pub enum GameSock {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a Unix socket.
    Unix(UnixStream),
}

/// One session taken over.
pub struct Taken {
    /// What the old process said about it.
    pub head: SessionHead,
    /// Its core.
    pub restored: Restored,
    /// The player's connection.
    pub player: TcpStream,
    /// The game's, if it had one.
    pub game: Option<GameSock>,
}

/// Everything taken over, checked.
pub struct Received {
    /// The old process's view (pool, ids, versions).
    pub head: Head,
    /// The listening sockets, with their addresses.
    pub listeners: Vec<TcpListener>,
    /// The sessions.
    pub sessions: Vec<Taken>,
}

/// The new process's end of the upgrade socket.
pub struct Incoming {
    sock: Arc<OwnedFd>,
}

/// Whether this process was started by an upgrade.
pub fn is_upgrade() -> bool {
    std::env::var_os(ENV).is_some()
}

impl Incoming {
    /// Takes the upgrade socket from stdin (as a close-on-exec duplicate)
    /// and puts `/dev/null` in its place.
    pub fn take() -> io::Result<Incoming> {
        let sock = io::stdin().as_fd().try_clone_to_owned()?;
        if !fds::is_upgrade_socket(&sock) {
            return Err(io::Error::other(format!(
                "{ENV} is set but stdin is not an upgrade socket"
            )));
        }
        let null = std::fs::File::open("/dev/null")?;
        rustix::stdio::dup2_stdin(&null)?;
        Ok(Incoming {
            sock: Arc::new(sock),
        })
    }

    /// Tells the old process why this one will not take over.
    pub fn refuse(&self, why: &str) {
        let _ = fds::set_timeout(self.sock.as_fd(), DEADLINE);
        if let Err(e) = wire::send_error(self.sock.as_fd(), why) {
            warn!(error = %e, "cannot tell the old process why");
        }
    }

    /// The config is valid: ready to receive.
    pub fn hello(&self) -> io::Result<()> {
        fds::set_timeout(self.sock.as_fd(), DEADLINE)?;
        wire::send_hello(self.sock.as_fd(), env!("CARGO_PKG_VERSION"))
    }

    /// Receives the listeners, sessions and their sockets, and checks
    /// them: every descriptor is the kind announced, every state reads
    /// back. On error everything received is closed.
    pub async fn receive(&self, cfg: &Arc<Config>) -> Result<Received, String> {
        let sock = self.sock.clone();
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            let (head, states) = wire::recv_head(sock.as_fd())
                .map_err(|e| format!("receiving the handover: {e}"))?;
            // The states are read back on a thread of their own while the
            // descriptors arrive (the old process lends them in batches).
            std::thread::scope(|s| {
                let parsed = s.spawn(|| restore_all(&head, states, &cfg));
                let fds = wire::recv_fds(sock.as_fd(), head.fd_count())
                    .map_err(|e| format!("receiving the handover: {e}"));
                let parsed = parsed
                    .join()
                    .map_err(|_| "reading the states back panicked".to_string())?;
                check(&head, parsed?, fds?)
            })
            .map(|(listeners, sessions)| Received {
                head,
                listeners,
                sessions,
            })
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Says `Taken` and waits for the old process's `Commit`.
    pub async fn confirm(&self, sessions: usize) -> Result<(), String> {
        let sock = self.sock.clone();
        let r = tokio::task::spawn_blocking(move || {
            wire::send_taken(sock.as_fd(), sessions)?;
            wire::recv_msg(sock.as_fd())
        })
        .await
        .map_err(|e| e.to_string())?;
        match r {
            Ok(Some(Msg::Commit)) => Ok(()),
            Ok(Some(m)) => Err(format!("unexpected {m:?} from the old process")),
            Ok(None) => Err("the old process went away before its commit".into()),
            Err(e) => Err(format!("waiting for the commit: {e}")),
        }
    }
}

/// Every session's state read back, in order.
fn restore_all(
    head: &Head,
    states: Vec<Zeroizing<Vec<u8>>>,
    cfg: &Config,
) -> Result<Vec<Restored>, String> {
    head.sessions
        .iter()
        .zip(states)
        .map(|(s, state)| {
            let r = restore(&state, cfg).map_err(|e| format!("session {}: {e}", s.id))?;
            if r.core.id != s.id {
                return Err(format!("session {}: state of session {}", s.id, r.core.id));
            }
            Ok(r)
        })
        .collect()
}

type Checked = (Vec<TcpListener>, Vec<Taken>);

/// Checks every descriptor against the head: its kind and count, and the
/// listeners' addresses. On error everything received is closed.
fn check(head: &Head, restored: Vec<Restored>, got: Vec<OwnedFd>) -> Result<Checked, String> {
    let mut it = got.into_iter();
    let mut next = |want: Kind, what: &str| -> Result<OwnedFd, String> {
        let fd = it
            .next()
            .ok_or_else(|| format!("{what}: descriptor missing"))?;
        let k = fds::kind(&fd);
        if k != want {
            return Err(format!("{what}: expected {want:?}, got {k:?}"));
        }
        Ok(fd)
    };
    let mut listeners = Vec::with_capacity(head.listeners.len());
    for a in &head.listeners {
        let l = TcpListener::from(next(Kind::TcpListener, "listener")?);
        let got = l.local_addr().map_err(|e| e.to_string())?;
        if got != *a {
            return Err(format!("listener {a}: the socket is bound to {got}"));
        }
        l.set_nonblocking(true).map_err(|e| e.to_string())?;
        listeners.push(l);
    }
    let mut sessions = Vec::with_capacity(head.sessions.len());
    for (s, restored) in head.sessions.iter().zip(restored) {
        let what = format!("session {}", s.id);
        let player = TcpStream::from(next(Kind::TcpStream, &what)?);
        let game = match s.game {
            None => None,
            Some(GameFd::Tcp) => Some(GameSock::Tcp(TcpStream::from(next(
                Kind::TcpStream,
                &what,
            )?))),
            Some(GameFd::Unix) => Some(GameSock::Unix(UnixStream::from(next(
                Kind::UnixStream,
                &what,
            )?))),
        };
        if restored.core.has_game() != game.is_some() {
            return Err(format!("{what}: game connection does not match its state"));
        }
        player.set_nonblocking(true).map_err(|e| e.to_string())?;
        match &game {
            Some(GameSock::Tcp(g)) => g.set_nonblocking(true),
            Some(GameSock::Unix(g)) => g.set_nonblocking(true),
            None => Ok(()),
        }
        .map_err(|e| e.to_string())?;
        sessions.push(Taken {
            head: s.clone(),
            restored,
            player,
            game,
        });
    }
    if it.next().is_some() {
        return Err("more descriptors than announced".into());
    }
    Ok((listeners, sessions))
}

/// Takes the old process's view: the pool (backends still configured
/// keep their health, so no probe restart marks one down), session ids,
/// the upgrade count.
pub fn adopt(shared: &Shared, head: &Head) {
    let cfg = shared.config();
    shared.pool.send_modify(|st| {
        if cfg.backend(&head.active).is_some() {
            st.active = head.active.clone();
        }
        st.epoch = head.epoch;
        // The old process held the cluster's lease a moment ago; the
        // cluster task renews it at once (and fences if it cannot).
        st.fenced = false;
        for v in &mut st.backends {
            if let Some(w) = head
                .backends
                .iter()
                .find(|w| w.name == v.name && w.addr == v.addr)
            {
                v.up = w.up;
                v.reason = w.reason.clone();
            }
        }
    });
    shared.continue_session_ids(head.next_id);
    shared
        .handover
        .upgrades
        .store(head.upgrades + 1, std::sync::atomic::Ordering::Relaxed);
}

/// A taken-over session, ready to run.
pub type Ready = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Registers every session taken over and builds its task, without
/// running it: done before the confirmation, so that after the old
/// process's commit only the spawning is left (the players' stall is
/// shorter). Nothing is read or written yet.
pub fn prepare(shared: &Arc<Shared>, sessions: Vec<Taken>) -> io::Result<Vec<Ready>> {
    let mut out: Vec<Ready> = Vec::with_capacity(sessions.len());
    for t in sessions {
        let core = &t.restored.core;
        shared.registry.restore(SessionInfo {
            id: core.id,
            ip: peer_ip(&core.peer),
            user: core.user().map(str::to_string),
            backend: core.backend().map(str::to_string),
            phase: core.phase(),
            connected: t.head.connected,
            // Detached sessions refuse an upgrade (session::detach).
            detached: false,
        });
        let player = tokio::net::TcpStream::from_std(t.player)?;
        let game = match t.game {
            None => None,
            Some(GameSock::Tcp(g)) => Some(BackendStream::Tcp(tokio::net::TcpStream::from_std(g)?)),
            Some(GameSock::Unix(g)) => {
                Some(BackendStream::Unix(tokio::net::UnixStream::from_std(g)?))
            }
        };
        out.push(Box::pin(crate::session::resume(
            shared.clone(),
            t.restored,
            player,
            game,
        )));
    }
    Ok(out)
}

/// Starts the sessions (after the old process's commit).
pub fn start(shared: &Shared, ready: Vec<Ready>) {
    for f in ready {
        shared.tracker.spawn(f);
    }
}
