//! The new process's side of an upgrade: take the socket from stdin, say
//! `Hello` once the config is valid (or why not), check the listeners and
//! say `Ready`, then take the sessions a batch at a time: each batch is
//! read back, checked and readied (not started), then confirmed with
//! `Took`. The sessions start, and the listeners accept, only after the
//! old process's `Commit`: until then the old process alone owns them.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use tracing::warn;

use std::collections::HashMap;

use super::fds::{self, Kind};
use super::wire::{self, Batch, GameFd, Head, Next, SessionHead};
use super::{DEADLINE, ENV};
use crate::backend::connect::BackendStream;
use crate::backend::handover::{Inherit, SockKind};
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
    /// The player's connection (none for a detached session).
    pub player: Option<TcpStream>,
    /// The game's, if it had one.
    pub game: Option<GameSock>,
}

/// A listening socket taken over: its front door (none for telnet).
pub type Inherited = (Option<crate::front::Door>, TcpListener);

/// The new process's end of the upgrade socket.
pub struct Incoming {
    sock: Arc<OwnedFd>,
    batches: std::sync::atomic::AtomicUsize,
    /// The probes' connections that came with the head.
    probes: std::sync::Mutex<Vec<OwnedFd>>,
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
            batches: Default::default(),
            probes: Default::default(),
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

    /// Receives the first document and the listening sockets, and checks
    /// them (each a listener bound to the address announced).
    pub async fn receive_head(&self) -> Result<(Head, Vec<Inherited>), String> {
        let sock = self.sock.clone();
        tokio::task::spawn_blocking(move || {
            let err = |e: io::Error| format!("receiving the handover: {e}");
            let doc = match wire::recv_next(sock.as_fd()).map_err(err)? {
                Next::Doc(d) => d,
                _ => return Err("receiving the handover: expected its first document".into()),
            };
            let head = wire::read_head(&doc).map_err(err)?;
            let fds = wire::recv_fds(sock.as_fd(), head.fd_count()).map_err(err)?;
            let mut it = fds.into_iter();
            let mut listeners = Vec::with_capacity(head.listeners.len());
            for (door, a) in &head.listeners {
                let l = TcpListener::from(next_fd(&mut it, Kind::TcpListener, "listener")?);
                let got = l.local_addr().map_err(|e| e.to_string())?;
                if got != *a {
                    return Err(format!("listener {a}: the socket is bound to {got}"));
                }
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                listeners.push((*door, l));
            }
            let mut probes = Vec::new();
            for p in &head.probes {
                let want = match p.conn {
                    None => continue,
                    Some(SockKind::Tcp) => Kind::TcpStream,
                    Some(SockKind::Unix) => Kind::UnixStream,
                };
                probes.push(next_fd(&mut it, want, &format!("probe of {}", p.backend))?);
            }
            Ok((head, listeners, probes))
        })
        .await
        .map_err(|e| e.to_string())?
        .map(|(head, listeners, probes)| {
            *self.probes.lock().unwrap_or_else(|e| e.into_inner()) = probes;
            (head, listeners)
        })
    }

    /// What the old process's probes handed over (after
    /// [`Incoming::receive_head`]), to start the probes from.
    pub fn take_probes(&self, head: &Head) -> HashMap<String, Inherit> {
        let fds = std::mem::take(&mut *self.probes.lock().unwrap_or_else(|e| e.into_inner()));
        crate::backend::handover::import(&head.probes, fds)
    }

    /// Says `Ready`: the sessions may come.
    pub async fn ready(&self) -> Result<(), String> {
        let sock = self.sock.clone();
        tokio::task::spawn_blocking(move || wire::send_ready(sock.as_fd()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("saying ready: {e}"))
    }

    /// The next batch of sessions (states read back, descriptors checked),
    /// or the end of the handover. On error everything received is closed.
    ///
    /// The reading starts at once, on a blocking thread, before the
    /// returned future is awaited: the caller registers and confirms the
    /// batch before meanwhile (the old process sends batches ahead).
    pub fn next(
        &self,
        cfg: &Arc<Config>,
    ) -> impl std::future::Future<Output = Result<Step, String>> {
        let sock = self.sock.clone();
        let cfg = cfg.clone();
        let reading = tokio::task::spawn_blocking(move || {
            let err = |e: io::Error| format!("receiving the handover: {e}");
            let doc = match wire::recv_next(sock.as_fd()).map_err(err)? {
                Next::Doc(d) => d,
                Next::Commit => return Ok(Step::Commit),
                Next::Gone => return Ok(Step::Gone),
                Next::Error(e) => return Err(format!("the old process gave up: {e}")),
            };
            let (batch, states) = wire::read_batch(&doc).map_err(err)?;
            if let (Some(c), true) = (&batch.cluster, batch.sessions.is_empty()) {
                return Ok(Step::Cluster(c.clone()));
            }
            let restored = restore_all(&batch, states, &cfg)?;
            drop(doc);
            let fds = wire::recv_fds(sock.as_fd(), batch.fd_count()).map_err(err)?;
            check(&batch, restored, fds).map(Step::Batch)
        });
        async move { reading.await.map_err(|e| e.to_string())? }
    }

    /// Says `Took`: a batch is readied here. (With
    /// [`super::ENV_ABORT_AFTER`] set, a test's simulated crash.)
    pub async fn took(&self, sessions: usize) -> Result<(), String> {
        let delay = std::env::var(super::ENV_TOOK_DELAY_MS)
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        if let Some(ms) = delay.filter(|_| sessions > 0) {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
        let sock = self.sock.clone();
        tokio::task::spawn_blocking(move || wire::send_took(sock.as_fd(), sessions))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("confirming a batch: {e}"))?;
        let took = self
            .batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let abort_after = std::env::var(super::ENV_ABORT_AFTER)
            .ok()
            .and_then(|s| s.parse::<usize>().ok());
        tracing::debug!(batches = took, sessions, "upgrade: batch taken");
        if abort_after == Some(took) {
            // After the players have had time to type meanwhile.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            warn!(
                batches = took,
                "upgrade: aborting on purpose ({})",
                super::ENV_ABORT_AFTER
            );
            std::process::abort();
        }
        Ok(())
    }
}

/// What came next from the old process.
pub enum Step {
    /// A batch of sessions, checked.
    Batch(Vec<Taken>),
    /// In a cluster, just before `Commit`: the old process's cluster state
    /// now (its cluster task stopped), to go on from rather than the head's.
    Cluster(crate::cluster::Carried),
    /// `Commit`: the old process is stopping; everything is ours.
    Commit,
    /// The old process went away without its commit. It thaws sessions
    /// only after it has killed this process, so, alive, this process
    /// owns what it took.
    Gone,
}

/// Every session's state read back, in order.
fn restore_all(batch: &Batch, states: Vec<&[u8]>, cfg: &Config) -> Result<Vec<Restored>, String> {
    batch
        .sessions
        .iter()
        .zip(states)
        .map(|(s, state)| {
            let r = restore(state, cfg).map_err(|e| format!("session {}: {e}", s.id))?;
            if r.core.id != s.id {
                return Err(format!("session {}: state of session {}", s.id, r.core.id));
            }
            Ok(r)
        })
        .collect()
}

fn next_fd(
    it: &mut impl Iterator<Item = OwnedFd>,
    want: Kind,
    what: &str,
) -> Result<OwnedFd, String> {
    let fd = it
        .next()
        .ok_or_else(|| format!("{what}: descriptor missing"))?;
    let k = fds::kind(&fd);
    if k != want {
        return Err(format!("{what}: expected {want:?}, got {k:?}"));
    }
    Ok(fd)
}

/// Checks a batch's descriptors against it: their kinds and count. On
/// error everything received is closed.
fn check(batch: &Batch, restored: Vec<Restored>, got: Vec<OwnedFd>) -> Result<Vec<Taken>, String> {
    let mut it = got.into_iter();
    let mut sessions = Vec::with_capacity(batch.sessions.len());
    for (s, restored) in batch.sessions.iter().zip(restored) {
        let what = format!("session {}", s.id);
        if s.detached != restored.detached.is_some() {
            return Err(format!("{what}: detached or not, head and state differ"));
        }
        let player = if s.detached {
            None
        } else {
            Some(TcpStream::from(next_fd(&mut it, Kind::TcpStream, &what)?))
        };
        let game = match s.game {
            None => None,
            Some(GameFd::Tcp) => Some(GameSock::Tcp(TcpStream::from(next_fd(
                &mut it,
                Kind::TcpStream,
                &what,
            )?))),
            Some(GameFd::Unix) => Some(GameSock::Unix(UnixStream::from(next_fd(
                &mut it,
                Kind::UnixStream,
                &what,
            )?))),
        };
        if restored.core.has_game() != game.is_some() {
            return Err(format!("{what}: game connection does not match its state"));
        }
        if let Some(p) = &player {
            p.set_nonblocking(true).map_err(|e| e.to_string())?;
        }
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
    Ok(sessions)
}

/// Takes the old process's view: the pool (backends still configured
/// keep their health, so no probe restart marks one down), session ids,
/// the per-address connection-rate buckets, the upgrade count, the first
/// start (uptime), the cluster's term and lease.
pub fn adopt(shared: &Shared, head: &Head) {
    let cfg = shared.config();
    shared.pool.send_modify(|st| {
        if cfg.backend(&head.active).is_some() {
            st.active = head.active.clone();
        }
        st.epoch = head.epoch;
        // The old process held the cluster's lease (or not); the cluster
        // task goes on from its lease and renews at once. An old process
        // without the cluster: a new member, fenced until it joins.
        if let Some(c) = &head.cluster {
            st.fenced = c.fenced;
        }
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
    if let Some(c) = &head.cluster {
        *shared
            .handover
            .cluster
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(crate::cluster::TakenOver {
            carried: c.clone(),
            at: tokio::time::Instant::now(),
        });
    }
    if let Some(t) = head.started {
        shared.carry_start(t);
    }
    shared.continue_session_ids(head.next_id);
    shared.registry.conn_rate_import(&head.conn_rate);
    shared
        .handover
        .upgrades
        .store(head.upgrades + 1, std::sync::atomic::Ordering::Relaxed);
}

/// The old process's cluster state at its end (after the head's): a term
/// it saw during the handover and left to this process (its frozen
/// sessions could not move) moves the sessions here (a new epoch, as a
/// `failover` does; every session that crossed is still on the old
/// backend), fenced as the old process was; the cluster task goes on from
/// this term and lease.
pub fn adopt_cluster(shared: &Shared, c: crate::cluster::Carried) {
    let cfg = shared.config();
    shared.pool.send_modify(|st| {
        st.fenced = c.fenced;
        if let Some(a) = c.active.as_ref().filter(|a| cfg.backend(&a.backend).is_some()) {
            if st.active != a.backend {
                tracing::info!(from = %st.active, to = %a.backend, term = c.term, "upgrade: the cluster moved during the handover; following it");
                st.active = a.backend.clone();
                st.epoch += 1;
            }
        }
    });
    *shared
        .handover
        .cluster
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(crate::cluster::TakenOver {
        carried: c,
        at: tokio::time::Instant::now(),
    });
}

/// A taken-over session, ready to run: registered here, its sockets on
/// this process's reactor, its state checked.
pub struct Ready(
    Box<(
        Restored,
        Option<tokio::net::TcpStream>,
        Option<BackendStream>,
    )>,
);

/// Registers every session taken over and puts its sockets on the
/// reactor, without running it: done before the confirmation, so that
/// all that can fail here fails before `Commit` (and the old process
/// carries on with everyone). Nothing is read or written yet. Session ids
/// handed out here go on past every session taken over (the old process
/// may have admitted some after it sent the head's `next_id`).
///
/// The session's task itself (its driver and future, which cannot
/// fail to build) is built by [`start`]'s task when it first runs: the
/// sessions stopped first start first after `Commit`, and building 10,000
/// tasks is not part of every player's stall.
pub fn prepare(shared: &Arc<Shared>, sessions: Vec<Taken>) -> io::Result<Vec<Ready>> {
    let mut out = Vec::with_capacity(sessions.len());
    for t in sessions {
        let core = &t.restored.core;
        shared.continue_session_ids(core.id.saturating_add(1));
        shared.registry.restore(SessionInfo {
            id: core.id,
            ip: peer_ip(&core.peer.get()),
            user: core.user_shared().cloned(),
            backend: core.backend_shared().cloned(),
            phase: core.phase(),
            connected: u32::try_from(t.head.connected).unwrap_or(u32::MAX),
            detached: t.head.detached,
        });
        let player = t.player.map(tokio::net::TcpStream::from_std).transpose()?;
        let game = match t.game {
            None => None,
            Some(GameSock::Tcp(g)) => Some(BackendStream::Tcp(tokio::net::TcpStream::from_std(g)?)),
            Some(GameSock::Unix(g)) => {
                Some(BackendStream::Unix(tokio::net::UnixStream::from_std(g)?))
            }
        };
        out.push(Ready(Box::new((t.restored, player, game))));
    }
    Ok(out)
}

/// Starts the sessions (after the old process's commit), in the order
/// they were taken: each task builds its session and runs it.
pub fn start(shared: &Arc<Shared>, ready: Vec<Ready>) {
    for Ready(r) in ready {
        let shared2 = shared.clone();
        shared.tracker.spawn(async move {
            let (restored, player, game) = *r;
            crate::session::resume(shared2, restored, player, game).await;
        });
    }
}
