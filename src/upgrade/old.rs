//! The old process's side of an upgrade: start the new binary, wait for
//! its `Hello`, stop accepting, freeze every session at a clean point,
//! send the listeners, sockets and states, and on `Taken` say `Commit` and
//! stop; on any failure thaw everything and carry on.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::wire::{self, BackendWas, Head, Msg, SessionHead};
use super::{fds, unix_now, Lent, Parcel, Request, SessionParcel, Verdict, DEADLINE, ENV};
use crate::events::Event;
use crate::state::Shared;

/// How often the freeze looks whether every session has stopped.
const FREEZE_POLL: Duration = Duration::from_millis(5);

/// The accept loops, and duplicates of their listening sockets so they
/// can be stopped, handed over, or started again.
pub struct Acceptors {
    fds: Vec<OwnedFd>,
    tasks: Vec<JoinHandle<()>>,
}

impl Acceptors {
    /// Starts an accept loop on each listener.
    pub fn start(shared: &Arc<Shared>, listeners: Vec<TcpListener>) -> std::io::Result<Acceptors> {
        let mut fds = Vec::with_capacity(listeners.len());
        for l in &listeners {
            fds.push(l.as_fd().try_clone_to_owned()?);
        }
        let tasks = listeners
            .into_iter()
            .map(|l| tokio::spawn(crate::listener::serve(shared.clone(), l)))
            .collect();
        Ok(Acceptors { fds, tasks })
    }

    /// Stops accepting (new connections wait in the kernel's queue).
    pub async fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }

    /// Accepts again, after a failed upgrade.
    fn restart(&mut self, shared: &Arc<Shared>) {
        if !self.tasks.is_empty() {
            return;
        }
        for fd in &self.fds {
            let l = fd
                .try_clone()
                .map(std::net::TcpListener::from)
                .and_then(TcpListener::from_std);
            match l {
                Ok(l) => self
                    .tasks
                    .push(tokio::spawn(crate::listener::serve(shared.clone(), l))),
                Err(e) => warn!(error = %e, "cannot accept again on a listener"),
            }
        }
    }

    /// Waits for every accept loop to end (at shutdown).
    pub async fn join(&mut self) {
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

/// Carries out one upgrade request. Returns true when the new process owns
/// everything and this one must stop without a word to anyone.
pub async fn run(shared: &Arc<Shared>, acc: &mut Acceptors, req: Request) -> bool {
    let h = &shared.handover;
    h.busy.store(true, std::sync::atomic::Ordering::Release);
    info!(reason = req.reason, "upgrade: starting the new binary");
    let t0 = Instant::now();
    let mut to_version = None;
    let r = attempt(shared, acc, &mut to_version).await;
    let from = env!("CARGO_PKG_VERSION");
    match r {
        Ok(n) => {
            info!(sessions = n, took = ?t0.elapsed(), "upgrade: handed over; stopping");
            if let Some(tx) = req.reply {
                let _ = tx.send(Ok(n));
            }
            true
        }
        Err(e) => {
            h.unfreeze();
            acc.restart(shared);
            warn!(error = %e, "upgrade failed; carrying on");
            crate::metrics::metrics().upgrade("failed");
            shared.events.emit(
                Event::new("proxy.upgrade")
                    .with("ok", false)
                    .with("from_version", from)
                    .with_opt("to_version", to_version)
                    .with("sessions", 0u64)
                    .with("error", e.as_str()),
            );
            if let Some(tx) = req.reply {
                let _ = tx.send(Err(e));
            }
            h.busy.store(false, std::sync::atomic::Ordering::Release);
            false
        }
    }
}

/// Runs a blocking step on the upgrade socket with the time left.
async fn blocking<T: Send + 'static>(
    sock: &Arc<OwnedFd>,
    deadline: Instant,
    f: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<T> + Send + 'static,
) -> Result<T, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err("the new process did not confirm in time".into());
    }
    let sock = sock.clone();
    tokio::task::spawn_blocking(move || {
        fds::set_timeout(sock.as_fd(), left)?;
        f(sock.as_fd())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            "the new process did not confirm in time".to_string()
        }
        _ => format!("upgrade socket: {e}"),
    })
}

/// Kills and reaps a new process that is not taking over.
fn discard(mut child: Child) {
    let _ = child.kill();
    tokio::task::spawn_blocking(move || child.wait());
}

async fn attempt(
    shared: &Arc<Shared>,
    acc: &mut Acceptors,
    to_version: &mut Option<String>,
) -> Result<usize, String> {
    let d = &shared.config().doors;
    if !(d.tls_addrs.is_empty() && d.ws_addrs.is_empty() && d.wss_addrs.is_empty()) {
        // Their listeners and sessions (TLS state, WebSocket framing)
        // cannot cross yet: refuse rather than leave them behind.
        return Err(
            "TLS and WebSocket listeners (listen.tls_addrs, ws_addrs, wss_addrs) cannot be handed over yet; restart to upgrade, or remove them"
                .into(),
        );
    }
    let origin = shared
        .handover
        .origin()
        .cloned()
        .ok_or("this process does not know the binary it was started from")?;
    let deadline = Instant::now() + DEADLINE;
    let (ours, theirs) = fds::pair().map_err(|e| format!("socketpair: {e}"))?;
    // The child's end becomes its stdin: std dup2()s it there, which is
    // the one descriptor that crosses exec on purpose.
    let child = Command::new(&origin.exe)
        .args(&origin.args)
        .env(ENV, "1")
        .stdin(Stdio::from(theirs))
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", origin.exe.display()))?;
    let sock = Arc::new(ours);
    let r = exchange(shared, acc, &sock, deadline, child.id(), to_version).await;
    match r {
        Ok((n, parcels)) => {
            // Past `Commit` the new process owns everything: let it run on
            // (it is reparented when this one exits).
            drop(child);
            for v in parcels {
                let _ = v.send(Verdict::Commit);
            }
            Ok(n)
        }
        Err(e) => {
            discard(child);
            Err(e)
        }
    }
}

/// Hello, freeze, send, Taken, Commit. On error, the parcels (dropped)
/// thaw their sessions.
async fn exchange(
    shared: &Arc<Shared>,
    acc: &mut Acceptors,
    sock: &Arc<OwnedFd>,
    deadline: Instant,
    child_pid: u32,
    to_version: &mut Option<String>,
) -> Result<(usize, Vec<oneshot::Sender<Verdict>>), String> {
    match blocking(sock, deadline, wire::recv_msg).await? {
        Some(Msg::Hello { version }) => *to_version = Some(version),
        Some(Msg::Error(e)) => return Err(format!("the new process refused: {e}")),
        None => return Err("the new process exited before it was ready".into()),
        Some(m) => return Err(format!("unexpected {m:?} from the new process")),
    }
    acc.stop().await;
    let t_freeze = Instant::now();
    let parcels = freeze(shared, deadline).await?;
    let froze = t_freeze.elapsed();
    let t_send = Instant::now();
    let (head, states, verdicts, lenders) = pack(shared, acc, parcels)?;
    let n = head.sessions.len();
    let doc = wire::doc(
        &head,
        &states.iter().map(|s| s.as_slice()).collect::<Vec<_>>(),
    );
    drop(states);
    blocking(sock, deadline, move |s| wire::send_doc(s, &doc)).await?;
    let mut listeners = Vec::with_capacity(acc.fds.len());
    for fd in &acc.fds {
        listeners.push(fd.try_clone().map_err(|e| e.to_string())?);
    }
    send_batch(sock, deadline, listeners).await?;
    // The sessions' sockets, a batch at a time: borrowed from the frozen
    // sessions just before they go and closed right after, so the extra
    // descriptors never exceed one batch.
    for batch in lenders.chunks(fds::MAX_FDS / 2) {
        let mut asks = Vec::with_capacity(batch.len());
        for (id, lend) in batch {
            let (tx, rx) = oneshot::channel();
            lend.send(tx)
                .await
                .map_err(|_| format!("session {id} ended while frozen"))?;
            asks.push((id, rx));
        }
        let mut out = Vec::with_capacity(2 * batch.len());
        for (id, rx) in asks {
            let lent = rx
                .await
                .map_err(|_| format!("session {id} ended while frozen"))??;
            out.push(lent.player);
            out.extend(lent.game);
        }
        send_batch(sock, deadline, out).await?;
    }
    let sent = t_send.elapsed();
    let t_take = Instant::now();
    match blocking(sock, deadline, wire::recv_msg).await? {
        Some(Msg::Taken { sessions }) if sessions == n => {}
        Some(Msg::Taken { sessions }) => {
            return Err(format!("the new process took {sessions} sessions of {n}"))
        }
        Some(Msg::Error(e)) => return Err(format!("the new process refused: {e}")),
        None => return Err("the new process exited before taking over".into()),
        Some(m) => return Err(format!("unexpected {m:?} from the new process")),
    }
    // Under systemd the main pid must move before this process exits, or
    // systemd would take the exit for the service's end.
    if let Err(e) = super::notify::sd_notify(&format!("MAINPID={child_pid}\n")) {
        warn!(error = %e, "cannot tell systemd the new main pid");
    }
    blocking(sock, deadline, wire::send_commit).await?;
    info!(
        sessions = n,
        freeze_ms = froze.as_millis() as u64,
        send_ms = sent.as_millis() as u64,
        take_ms = t_take.elapsed().as_millis() as u64,
        "upgrade: handover timings"
    );
    Ok((n, verdicts))
}

/// A session stopped for the handover: its parcel, and its verdict to
/// send (dropping it thaws the session).
struct Frozen {
    id: u64,
    parcel: SessionParcel,
    verdict: oneshot::Sender<Verdict>,
}

/// Asks every session to stop and waits until each one sent its parcel
/// (sessions ending meanwhile leave the tracker).
async fn freeze(shared: &Arc<Shared>, deadline: Instant) -> Result<Vec<Frozen>, String> {
    let h = &shared.handover;
    let mut rx = h.freeze();
    let mut got: Vec<Parcel> = Vec::new();
    let r = loop {
        while let Ok(p) = rx.try_recv() {
            got.push(p);
        }
        if got.len() >= shared.tracker.len() {
            break Ok(());
        }
        if Instant::now() >= deadline {
            break Err(format!(
                "{} of {} sessions did not stop in time",
                shared.tracker.len() - got.len(),
                shared.tracker.len()
            ));
        }
        tokio::select! {
            Some(p) = rx.recv() => got.push(p),
            _ = tokio::time::sleep(FREEZE_POLL) => {}
        }
    };
    h.unfreeze();
    // A session that sent after the count was reached is in the queue.
    while let Ok(p) = rx.try_recv() {
        got.push(p);
    }
    r?;
    got.into_iter()
        .map(|p| {
            p.content.map(|parcel| Frozen {
                id: p.id,
                parcel,
                verdict: p.verdict,
            })
        })
        .collect()
}

type Lenders = Vec<(u64, mpsc::Sender<oneshot::Sender<Result<Lent, String>>>)>;
type Packed = (
    Head,
    Vec<zeroize::Zeroizing<Vec<u8>>>,
    Vec<oneshot::Sender<Verdict>>,
    Lenders,
);

/// Sends descriptors (then closes these duplicates).
async fn send_batch(
    sock: &Arc<OwnedFd>,
    deadline: Instant,
    fds: Vec<OwnedFd>,
) -> Result<(), String> {
    blocking(sock, deadline, move |s| {
        let b: Vec<BorrowedFd> = fds.iter().map(|f| f.as_fd()).collect();
        wire::send_fds(s, &b)
    })
    .await
}

/// The document's head, the states, the verdicts and the lenders, in the
/// order the descriptors are sent (listeners, then per session player and
/// game).
fn pack(shared: &Arc<Shared>, acc: &Acceptors, parcels: Vec<Frozen>) -> Result<Packed, String> {
    let connected: std::collections::HashMap<u64, u64> = shared
        .registry
        .snapshot()
        .into_iter()
        .map(|s| (s.id, s.connected))
        .collect();
    let pool = shared.pool.borrow().clone();
    let mut listeners = Vec::with_capacity(acc.fds.len());
    for fd in &acc.fds {
        let l = std::net::TcpListener::from(fd.try_clone().map_err(|e| e.to_string())?);
        listeners.push(l.local_addr().map_err(|e| e.to_string())?);
    }
    let mut sessions = Vec::with_capacity(parcels.len());
    let mut states = Vec::with_capacity(parcels.len());
    let mut verdicts = Vec::with_capacity(parcels.len());
    let mut lenders = Vec::with_capacity(parcels.len());
    for p in parcels {
        let c = p.parcel;
        sessions.push(SessionHead {
            id: p.id,
            connected: connected.get(&p.id).copied().unwrap_or_else(unix_now),
            game: c.game,
            len: c.state.len(),
        });
        states.push(c.state);
        lenders.push((p.id, c.lend));
        verdicts.push(p.verdict);
    }
    let head = Head {
        format: wire::FORMAT,
        from_version: env!("CARGO_PKG_VERSION").into(),
        upgrades: shared
            .handover
            .upgrades
            .load(std::sync::atomic::Ordering::Relaxed),
        next_id: shared.next_session_id(),
        active: pool.active.clone(),
        epoch: pool.epoch,
        backends: pool
            .backends
            .iter()
            .map(|b| BackendWas {
                name: b.name.clone(),
                addr: b.addr.clone(),
                up: b.up,
                reason: b.reason.clone(),
            })
            .collect(),
        listeners,
        sessions,
    };
    Ok((head, states, verdicts, lenders))
}
