//! The old process's side of an upgrade: start the new binary, wait for
//! its `Hello`, stop accepting, send the listeners, then the sessions a
//! batch at a time (each parked here until the end), and say `Commit`; on
//! any failure kill the new process, then thaw everything and carry on
//! (see [`super`] for why that loses no one).

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{info, warn};

use super::acceptors::Acceptors;
use super::batch::{batch_size, collect, pack, split, AHEAD, BATCH_BYTES};
use super::wire::{self, BackendWas, Batch, Head, Msg};
use super::{fds, Parcel, Request, Verdict, DEADLINE, ENV};
use crate::events::Event;
use crate::state::Shared;

/// How often the handover looks again for sessions not yet on the roll.
const FREEZE_POLL: Duration = Duration::from_millis(5);

/// Carries out one upgrade request. Returns true when the new process owns
/// everything and this one must stop without a word to anyone.
pub async fn run(shared: &Arc<Shared>, acc: &mut Acceptors, req: Request) -> bool {
    let h = &shared.handover;
    h.set_busy(true);
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
            h.set_busy(false);
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

/// Kills the new process and waits until it is gone (so that nothing it
/// took is still running when the old process thaws it).
async fn kill_and_reap(mut child: Child) {
    let _ = child.kill();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}

async fn attempt(
    shared: &Arc<Shared>,
    acc: &mut Acceptors,
    to_version: &mut Option<String>,
) -> Result<usize, String> {
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
    let mut parked = Vec::new();
    let r = exchange(
        shared,
        acc,
        &sock,
        deadline,
        child.id(),
        to_version,
        &mut parked,
    )
    .await;
    match r {
        Ok(n) => {
            // Past `Commit` the new process owns everything: let it run on
            // (it is reparented when this one exits).
            drop(child);
            for v in parked {
                let _ = v.send(Verdict::Commit);
            }
            crate::backend::handover::settle(&shared.probes, true);
            Ok(n)
        }
        Err(e) => {
            // The sessions it took may be running there: it must be gone
            // before they thaw here (dropping their verdicts).
            kill_and_reap(child).await;
            drop(parked);
            crate::backend::handover::settle(&shared.probes, false);
            Err(e)
        }
    }
}

/// Hello; the listeners; the sessions batch by batch; Commit. Each batch's
/// verdicts go to `parked` before it is sent, so that on any error the
/// caller thaws them (after the new process is gone).
async fn exchange(
    shared: &Arc<Shared>,
    acc: &mut Acceptors,
    sock: &Arc<OwnedFd>,
    deadline: Instant,
    child_pid: u32,
    to_version: &mut Option<String>,
    parked: &mut Vec<oneshot::Sender<Verdict>>,
) -> Result<usize, String> {
    match blocking(sock, deadline, wire::recv_msg).await? {
        Some(Msg::Hello { version }) => *to_version = Some(version),
        Some(m) => return Err(unexpected(m)),
        None => return Err("the new process exited before it was ready".into()),
    }
    acc.stop().await;
    // Handshakes in progress are closed, not waited for: no client can
    // hold an upgrade.
    shared.handover.stop_handshakes().await;
    let t0 = Instant::now();
    // The probes stop using their connections before the new process
    // can start probing on them.
    let (probes, probe_fds) = crate::backend::handover::export(&shared.probes).await;
    let (mut head, mut listeners) = head(shared, acc)?;
    head.probes = probes;
    listeners.extend(probe_fds);
    let doc = wire::doc(&head, &[]);
    blocking(sock, deadline, move |s| wire::send_doc(s, &doc)).await?;
    send_batch(sock, deadline, listeners).await?;
    match blocking(sock, deadline, wire::recv_msg).await? {
        Some(Msg::Ready) => {}
        Some(m) => return Err(unexpected(m)),
        None => return Err("the new process exited before taking over".into()),
    }
    let connected: HashMap<u64, u64> = shared
        .registry
        .snapshot()
        .into_iter()
        .map(|s| (s.id, u64::from(s.connected)))
        .collect();
    let batch = batch_size();
    // Sessions to ask next: fewer when their states are large (detached
    // sessions with their playback), so that a batch stays near
    // `BATCH_BYTES` in both processes.
    let mut want = batch;
    let mut from = 0;
    let (mut n, mut batches, mut longest) = (0, 0, Duration::ZERO);
    // When the first session stopped: from then until `Commit` it waits
    // (the longest stall any player sees here).
    let mut first_freeze = None;
    // Sessions asked that have not answered yet (slow ones wait here while
    // later batches go).
    let mut waiting: Vec<oneshot::Receiver<Parcel>> = Vec::new();
    // The batches sent whose `Took` has not been read yet (their sizes, in
    // order): up to [`AHEAD`] more are frozen and sent while the new
    // process reads these back and readies them.
    let mut unconfirmed: VecDeque<usize> = VecDeque::with_capacity(AHEAD + 1);
    let mut sent_bytes = 0usize;
    // Detached sessions go first: no player waits on them, and their
    // states (with the playback) are the large ones; the players' stall
    // starts with the first session that has one.
    let mut detached_first = true;
    let mut asked = HashSet::new();
    loop {
        let n_ask = want.saturating_sub(waiting.len());
        let (next, asks) = ask(shared, from, n_ask, detached_first, &mut asked).await?;
        from = next;
        if !detached_first && first_freeze.is_none() && !asks.is_empty() {
            first_freeze = Some(Instant::now());
        }
        waiting.extend(asks);
        if waiting.is_empty() && detached_first {
            // The new process is done with them before any player stops.
            while let Some(sent) = unconfirmed.pop_front() {
                took(sock, deadline, sent).await?;
            }
            detached_first = false;
            from = 0;
            continue;
        }
        if waiting.is_empty() {
            // Everyone on the roll went. A session between its accept and
            // its loop, or ending, is still counted by the tracker: wait.
            let left = shared.tracker.len().saturating_sub(parked.len());
            if left == 0 {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("{left} sessions did not stop in time"));
            }
            tokio::time::sleep(FREEZE_POLL).await;
            continue;
        }
        let t_batch = Instant::now();
        let frozen = collect(&mut waiting, deadline).await?;
        if frozen.is_empty() {
            continue;
        }
        let k = frozen.len();
        let bytes: usize = frozen
            .iter()
            .filter_map(|p| p.content.as_ref().ok())
            .map(|c| c.state.len())
            .sum();
        want = (BATCH_BYTES / (bytes / k).max(1)).clamp(1, batch);
        for part in split(frozen) {
            let k = part.len();
            let (doc, fds) = pack(&connected, part, parked);
            sent_bytes += doc.len();
            blocking(sock, deadline, move |s| wire::send_doc(s, &doc)).await?;
            send_batch(sock, deadline, fds).await?;
            unconfirmed.push_back(k);
            if unconfirmed.len() > AHEAD {
                if let Some(sent) = unconfirmed.pop_front() {
                    took(sock, deadline, sent).await?;
                }
            }
            batches += 1;
        }
        n += k;
        longest = longest.max(t_batch.elapsed());
    }
    while let Some(sent) = unconfirmed.pop_front() {
        took(sock, deadline, sent).await?;
    }
    let round = last_cluster_state(shared, sock, deadline).await?;
    // Under systemd the main pid must move before this process exits, or
    // systemd would take the exit for the service's end.
    if let Err(e) = super::notify::sd_notify(&format!("MAINPID={child_pid}\n")) {
        warn!(error = %e, "cannot tell systemd the new main pid");
    }
    blocking(sock, deadline, wire::send_commit).await?;
    if let Some(round) = round {
        // Past `Commit` this process confirms no term and renews no lease:
        // the sessions are the new process's.
        shared.handover.cluster_stopped(round);
    }
    info!(
        sessions = n,
        batches,
        took_ms = t0.elapsed().as_millis() as u64,
        longest_batch_ms = longest.as_millis() as u64,
        stall_ms = first_freeze.map_or(0, |t| t.elapsed().as_millis() as u64),
        bytes = sent_bytes,
        "upgrade: handover timings"
    );
    Ok(n)
}

/// Asks up to `n` sessions to stop ([`crate::state::upgrade::Handover::ask`])
/// from a task on a runtime worker. Each ask wakes its session; woken from
/// a worker, a session goes on that worker's own run queue, where from
/// this thread (the runtime's main one, outside the workers) every wake
/// goes through the shared queue and often a futex: that was two thirds
/// of this thread's time during a handover, and a batch waits on it.
async fn ask(
    shared: &Arc<Shared>,
    from: u64,
    n: usize,
    detached_only: bool,
    asked: &mut HashSet<u64>,
) -> Result<(u64, Vec<oneshot::Receiver<Parcel>>), String> {
    let s = shared.clone();
    let mut set = std::mem::take(asked);
    let (r, set) = tokio::spawn(async move {
        let r = s.handover.ask(from, n, detached_only, &mut set);
        (r, set)
    })
    .await
    .map_err(|e| format!("asking sessions to stop: {e}"))?;
    *asked = set;
    Ok(r)
}

/// In a cluster: stops the cluster task (it finishes the round under way;
/// given back if the upgrade fails before `Commit`) and sends its state
/// now, a term seen but left unfollowed during the handover included
/// (`cluster::carry`), for the new process to start from. The lock is
/// kept past `Commit`.
async fn last_cluster_state(
    shared: &Arc<Shared>,
    sock: &Arc<OwnedFd>,
    deadline: Instant,
) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>, String> {
    if shared.config().bus.cluster.is_none() {
        return Ok(None);
    }
    let lock = shared.handover.cluster_round.clone();
    let round = tokio::time::timeout_at(deadline, lock.lock_owned())
        .await
        .map_err(|_| "the cluster task did not stop in time".to_string())?;
    let Some(cluster) = crate::cluster::carry(shared) else {
        // Before the cluster task's first round: nothing to go on from.
        return Ok(Some(round));
    };
    let doc = wire::doc(
        &Batch {
            sessions: Vec::new(),
            cluster: Some(cluster),
        },
        &[],
    );
    blocking(sock, deadline, move |s| wire::send_doc(s, &doc)).await?;
    took(sock, deadline, 0).await?;
    Ok(Some(round))
}

/// Reads the new process's `Took` for a batch of `k` sessions.
async fn took(sock: &Arc<OwnedFd>, deadline: Instant, k: usize) -> Result<(), String> {
    match blocking(sock, deadline, wire::recv_msg).await? {
        Some(Msg::Took { sessions }) if sessions == k => Ok(()),
        Some(Msg::Took { sessions }) => {
            Err(format!("the new process took {sessions} sessions of {k}"))
        }
        Some(m) => Err(unexpected(m)),
        None => Err("the new process exited while taking over".into()),
    }
}

fn unexpected(m: Msg) -> String {
    match m {
        Msg::Error(e) => format!("the new process refused: {e}"),
        m => format!("unexpected {m:?} from the new process"),
    }
}

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

/// The first document (pool view, ids, listeners) and duplicates of the
/// listening sockets, in the same order.
fn head(shared: &Arc<Shared>, acc: &Acceptors) -> Result<(Head, Vec<OwnedFd>), String> {
    let pool = shared.pool.borrow().clone();
    let mut addrs = Vec::with_capacity(acc.fds.len());
    let mut fds = Vec::with_capacity(acc.fds.len());
    for (door, fd) in &acc.fds {
        let dup = fd.try_clone().map_err(|e| e.to_string())?;
        let l = std::net::TcpListener::from(fd.try_clone().map_err(|e| e.to_string())?);
        addrs.push((*door, l.local_addr().map_err(|e| e.to_string())?));
        fds.push(dup);
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
        listeners: addrs,
        conn_rate: shared.registry.conn_rate_export(&shared.config()),
        cluster: crate::cluster::carry(shared),
        started: Some(shared.started_unix()),
        probes: Vec::new(),
    };
    Ok((head, fds))
}
