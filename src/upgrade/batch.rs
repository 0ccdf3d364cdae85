//! The old process's batches: how many sessions go at once, how their
//! answers are collected (a straggler waits for a later batch rather than
//! hold the others), and how a batch is packed into its document and
//! descriptors.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::wire::{self, Batch, SessionHead};
use super::{unix_now, Parcel, Verdict};

/// Sessions a batch carries: at most two descriptors each, so a batch's
/// descriptors go in two `SCM_RIGHTS` messages. A session is frozen only
/// for its own batch's round trip, so the smaller the batch the shorter
/// the stall; the larger, the fewer round trips.
pub const BATCH: usize = 200;

/// Batches sent ahead of the new process's `Took`: while it reads one
/// batch back and readies the one before, the old process freezes and
/// sends the next, so the three steps (freeze and send, read back, ready)
/// overlap instead of two of them waiting on each other (the first
/// batch's players are still for the whole handover, so its length is
/// their stall). The socket's buffer holds back a sender too far ahead.
pub const AHEAD: usize = 2;

/// The most state bytes a batch carries (at least one session goes): a
/// detached session with its full playback is hundreds of KiB.
pub const BATCH_BYTES: usize = 8 << 20;

/// Cuts frozen sessions into batches of at most [`BATCH_BYTES`] of state
/// (a larger state goes alone).
pub(super) fn split(frozen: Vec<Parcel>) -> Vec<Vec<Parcel>> {
    let mut out: Vec<Vec<Parcel>> = Vec::new();
    let mut size = 0;
    for p in frozen {
        let len = p.content.as_ref().map_or(0, |c| c.state.len());
        match out.last_mut() {
            Some(last) if size + len <= BATCH_BYTES => {
                size += len;
                last.push(p);
            }
            _ => {
                size = len;
                out.push(vec![p]);
            }
        }
    }
    out
}

/// The batch size: [`BATCH`], or [`super::ENV_BATCH`] if set (1 to
/// [`BATCH`]).
pub(super) fn batch_size() -> usize {
    std::env::var(super::ENV_BATCH)
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(BATCH, |n: usize| n.clamp(1, BATCH))
}

/// How long a batch waits for its slowest sessions before it goes without
/// them (they join a later batch): one session busy writing to a player
/// who stopped reading must not keep the others of its batch stopped.
const STRAGGLER_WAIT: Duration = Duration::from_millis(50);

/// Takes the answers of the sessions asked (one that ended meanwhile drops
/// its answer and is left out) that come within [`STRAGGLER_WAIT`]; the
/// others stay in `waiting`. A session that cannot cross fails the upgrade
/// with its reason, and so does one that has not answered by `deadline`.
pub(super) async fn collect(
    waiting: &mut Vec<oneshot::Receiver<Parcel>>,
    deadline: Instant,
) -> Result<Vec<Parcel>, String> {
    let until = (Instant::now() + STRAGGLER_WAIT).min(deadline);
    let mut got = Vec::with_capacity(waiting.len());
    let mut slow = Vec::new();
    for mut a in waiting.drain(..) {
        match tokio::time::timeout_at(until, &mut a).await {
            Ok(Ok(p)) => got.push(p),
            Ok(Err(_)) => {}
            Err(_) => slow.push(a),
        }
    }
    *waiting = slow;
    if !waiting.is_empty() && Instant::now() >= deadline {
        return Err(format!("{} sessions did not stop in time", waiting.len()));
    }
    if let Some(e) = got.iter().find_map(|p| p.content.as_ref().err()) {
        return Err(e.clone());
    }
    Ok(got)
}

/// A batch's document and descriptors; its verdicts go to `parked`.
pub(super) fn pack(
    connected: &HashMap<u64, u64>,
    frozen: Vec<Parcel>,
    parked: &mut Vec<oneshot::Sender<Verdict>>,
) -> (Zeroizing<Vec<u8>>, Vec<OwnedFd>) {
    let mut batch = Batch::default();
    let mut states = Vec::with_capacity(frozen.len());
    let mut fds = Vec::with_capacity(2 * frozen.len());
    for p in frozen {
        parked.push(p.verdict);
        let Ok(c) = p.content else {
            continue; // `collect` let none through
        };
        batch.sessions.push(SessionHead {
            id: p.id,
            connected: connected.get(&p.id).copied().unwrap_or_else(unix_now),
            detached: c.player_fd.is_none(),
            game: c.game,
            len: c.state.len(),
        });
        states.push(c.state);
        fds.extend(c.player_fd);
        fds.extend(c.game_fd);
    }
    let doc = wire::doc(
        &batch,
        &states.iter().map(|s| s.as_slice()).collect::<Vec<_>>(),
    );
    (doc, fds)
}
