//! The accept loop: limits, socket options, backoff on accept errors, one
//! task per session.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::{error, info, warn};

use crate::backend::connect::tune_tcp;
use crate::clientip::peer_ip;
use crate::config::Config;
use crate::metrics::{metrics, RefusedReason};
use crate::session;
use crate::state::{Phase, Refusal, SessionInfo, Shared};

/// First pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between failed `accept`s.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a refused player gets to read the refusal.
const REFUSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts players on `listener` until shutdown.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    accept_loop(shared, listener, accept_one).await
}

/// Accepts connections on `listener` until shutdown and hands each to
/// `accept`, backing off when `accept` fails (out of descriptors).
pub async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut accept: impl FnMut(&Arc<Shared>, TcpStream, std::net::SocketAddr),
) {
    let local = listener.local_addr().ok();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        // `accept` is cancel-safe: a connection not yet returned stays queued.
        let r = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match r {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                accept(&shared, stream, peer);
            }
            Err(e) => {
                // Running out of descriptors or memory is temporary; exiting
                // would drop every player, so wait and try again.
                error!(error = %e, ?local, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}

fn accept_one(shared: &Arc<Shared>, stream: TcpStream, peer: std::net::SocketAddr) {
    tune_tcp(&stream);
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    match admit(shared, peer) {
        Ok(id) => {
            metrics().connection(&local.to_string());
            shared
                .tracker
                .spawn(session::run(shared.clone(), id, stream, peer, local));
        }
        Err(msg) => {
            tokio::spawn(async move {
                let mut stream = stream;
                let _ = tokio::time::timeout(REFUSE_WRITE_TIMEOUT, async {
                    stream.write_all(msg.as_bytes()).await?;
                    stream.shutdown().await
                })
                .await;
            });
        }
    }
}

/// Registers a new player from `peer` if the limits allow it: its session
/// id, or the refusal notice to show it (the refusal is counted and
/// logged). Every way in calls this before anything else (a TLS or
/// WebSocket handshake counts as not logged in).
pub fn admit(shared: &Shared, peer: std::net::SocketAddr) -> Result<u64, String> {
    let cfg = shared.config();
    let id = shared.next_session_id();
    let info = SessionInfo {
        id,
        ip: peer_ip(&peer),
        user: None,
        backend: None,
        phase: Phase::Held,
        connected: crate::state::unix_secs(std::time::SystemTime::now()),
        detached: false,
    };
    match shared.registry.admit(info, &cfg) {
        Ok(()) => Ok(id),
        Err(why) => {
            shared
                .refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics().refused(match why {
                Refusal::Full => RefusedReason::Full,
                Refusal::PerIp => RefusedReason::PerIp,
                Refusal::Unauthenticated => RefusedReason::Unauthenticated,
                Refusal::Rate => RefusedReason::Rate,
            });
            match why {
                Refusal::Full => warn!(%peer, "refused: max_sessions reached"),
                Refusal::PerIp => info!(%peer, "refused: max_per_ip reached"),
                Refusal::Unauthenticated => {
                    warn!(%peer, "refused: too many sessions not logged in")
                }
                Refusal::Rate => info!(%peer, "refused: connecting too fast"),
            }
            Err(refusal_text(&cfg, why))
        }
    }
}

fn refusal_text(cfg: &Config, why: Refusal) -> String {
    let t = match why {
        Refusal::Full | Refusal::Unauthenticated => &cfg.notices.full,
        Refusal::PerIp | Refusal::Rate => &cfg.notices.per_ip,
    };
    format!("{}\r\n", t.replace("{game}", &cfg.game))
}
