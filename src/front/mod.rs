//! The front doors besides plain telnet: telnet over TLS, WebSocket (plain
//! and over TLS) with the web client page, and MSSP answered by the proxy.
//!
//! Each way in is a [`PlayerTransport`](crate::transport::PlayerTransport)
//! plus an accept function: the connection is admitted first (so a
//! handshake counts as a session not logged in), the handshake runs under
//! `listen.handshake_timeout`, then the session runs as for any player.
//!
//! | file | its one job |
//! | --- | --- |
//! | `ws` | the WebSocket handshake, the page at `/`, `X-Forwarded-For` |
//!
//! The connections themselves (TLS stream, WebSocket, its gate and
//! terminal adapter) are `crate::transport`'s; the proxy's own MSSP answer
//! is `crate::session::mssp`.

mod ws;

pub use crate::session::mssp;
pub use crate::transport::{Door, WsConn, WsWas};

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::backend::connect::tune_tcp;
use crate::listener::{accept_loop, admit};
use crate::session;
use crate::state::Shared;
use crate::transport::stream::Io;
use crate::transport::tls::TlsConn;

/// A bound front-door listener.
#[derive(Debug)]
pub struct Bound {
    /// Which way in.
    pub door: Door,
    /// The socket.
    pub listener: TcpListener,
}

/// The addresses to bind for each door of `cfg`.
pub fn addrs(cfg: &crate::config::Config) -> Vec<(Door, SocketAddr)> {
    let d = &cfg.doors;
    let mut v = Vec::new();
    v.extend(d.tls_addrs.iter().map(|a| (Door::Tls, *a)));
    v.extend(d.ws_addrs.iter().map(|a| (Door::Ws, *a)));
    v.extend(d.wss_addrs.iter().map(|a| (Door::Wss, *a)));
    v
}

/// Accepts players on a front-door listener until shutdown.
pub async fn serve(shared: Arc<Shared>, b: Bound) {
    let door = b.door;
    if let Ok(a) = b.listener.local_addr() {
        mssp::door_bound(door, a.port());
    }
    accept_loop(shared, b.listener, move |shared, stream, peer| {
        accept(shared, door, stream, peer)
    })
    .await
}

fn accept(shared: &Arc<Shared>, door: Door, stream: TcpStream, peer: SocketAddr) {
    tune_tcp(&stream);
    let cfg = shared.config();
    // A trusted reverse proxy carries many players: each is admitted (and
    // limited) under the address it forwards, once the handshake told it.
    let trusted = door != Door::Tls
        && cfg
            .doors
            .ws_trusted_proxies
            .iter()
            .any(|c| c.contains(crate::clientip::peer_ip(&peer)));
    let id = if trusted {
        None
    } else {
        match admit(shared, peer) {
            Ok(id) => Some(id),
            // The refusal text means nothing to a TLS or WebSocket client
            // before its handshake: the connection is just closed.
            Err(_) => return,
        }
    };
    let sh = shared.clone();
    let limit = cfg.doors.handshake_timeout;
    // Not on the sessions' tracker: an upgrade never waits for a
    // handshake; it closes the ones in progress (see `upgrade`).
    shared.handover.spawn_handshake(move |stop| async move {
        // Biased: when an upgrade begins, the handshake is polled first,
        // so that where it can it tells its client to come back (a 503
        // with `Retry-After` for an HTTP request not answered yet, a TLS
        // alert for a ClientHello not complete yet); anywhere else it is
        // closed.
        let r = tokio::select! {
            biased;
            r = tokio::time::timeout(limit, handshake(&sh, door, stream, peer, id, &stop)) => r,
            _ = stop.cancelled() => {
                debug!(%peer, door = door.as_str(), "handshake closed: an upgrade began");
                Ok(None)
            }
        };
        match r {
            Ok(Some(run)) => {
                sh.tracker.spawn(run);
            }
            Ok(None) => {
                if let Some(id) = id {
                    sh.registry.remove(id);
                }
            }
            Err(_) => {
                debug!(%peer, door = door.as_str(), "handshake timed out");
                if let Some(id) = id {
                    sh.registry.remove(id);
                }
            }
        }
    });
}

/// A session to run once its handshake is done.
pub(crate) type Run = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Runs the handshake; the session to run after it, if it succeeded.
async fn handshake(
    shared: &Arc<Shared>,
    door: Door,
    stream: TcpStream,
    peer: SocketAddr,
    id: Option<u64>,
    stop: &CancellationToken,
) -> Option<Run> {
    let local = stream.local_addr().ok()?;
    let cfg = shared.config();
    let tls = match door {
        Door::Ws => None,
        Door::Tls | Door::Wss => Some(cfg.doors.tls.as_ref()?.server.clone()),
    };
    match (door, tls) {
        (Door::Tls, Some(server)) => {
            let s = tls_accept(server, stream, peer, stop).await?;
            let id = id?;
            info!(%peer, "TLS session");
            Some(Box::pin(session::run(
                shared.clone(),
                id,
                Io::Tls(Box::new(s)),
                peer,
                local,
            )))
        }
        (Door::Wss, Some(server)) => {
            let s = tls_accept(server, stream, peer, stop).await?;
            ws::upgrade(shared, Io::Tls(Box::new(s)), peer, local, id, stop).await
        }
        (Door::Ws, _) => ws::upgrade(shared, Io::Plain(stream), peer, local, id, stop).await,
        (_, None) => None,
    }
}

/// A fatal `internal_error` alert as a plaintext TLS record: what a
/// server may send before its first handshake message.
const TLS_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x50];

/// The TLS handshake. An upgrade that begins while the ClientHello is not
/// complete yet (an idle connection, half a ClientHello: nothing sent to
/// the client yet) answers with a plaintext alert before the close, so
/// the client reports an error from the server rather than a lost
/// connection; later (the server's flight sent, the client's Finished
/// awaited: a round trip) the connection is just closed.
async fn tls_accept(
    server: Arc<tokio_rustls::rustls::ServerConfig>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: &CancellationToken,
) -> Option<TlsConn> {
    let mut conn = TlsConn::new(server, stream)
        .map_err(|e| debug!(%peer, error = %e, "TLS setup failed"))
        .ok()?;
    let r = tokio::select! {
        biased;
        _ = stop.cancelled() => None,
        r = conn.handshake() => Some(r),
    };
    match r {
        None => {
            if !conn.sent_any() {
                // A fresh socket's buffer takes 7 bytes at once.
                let _ = conn.tcp().try_write(&TLS_ALERT);
            }
            None
        }
        Some(r) => r
            .map_err(|e| debug!(%peer, error = %e, "TLS handshake failed"))
            .ok()
            .map(|()| conn),
    }
}
