//! The watchdog: fences the instance the moment its lease runs out, even
//! while a round of the cluster task is stuck waiting for a server that
//! does not answer (each call may take up to a quarter of the lease).
//! The round sets the same flag from the same deadline, so the two agree;
//! the watchdog only makes it happen on time.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::state::Shared;

/// Fences the instance when its lease deadline passes without a renewal.
pub(super) async fn run(shared: Arc<Shared>, mut rx: watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        let Some(d) = deadline else {
            if rx.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(d) => {
                shared.pool.send_if_modified(|st| {
                    // A renewal that landed meanwhile moved the deadline.
                    let lost = rx.borrow().is_none_or(|d| Instant::now() >= d);
                    let fence = lost && !st.fenced;
                    st.fenced |= fence;
                    fence
                });
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}
