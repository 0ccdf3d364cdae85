//! The player's side of a session, as the driver sees it: bytes in when
//! they come, bytes out with back-pressure, a clean close. Plain TCP is
//! here; another way in (TLS, WebSocket) is another implementation of
//! [`PlayerTransport`] in a file of its own, and the session core never
//! knows which one it talks through. The front doors (`crate::front`)
//! make these; the sessions (`crate::session`) use them.
//!
//! | file | its one job |
//! | --- | --- |
//! | `stream` | a TLS stream as a player transport |
//! | `tls` | rustls's unbuffered server connection over TCP, holding no buffer while idle |
//! | `tls_round` | one round of rustls's state machine over the bytes in hand, without I/O |
//! | `wsconn` | a WebSocket as a player transport (keepalive, limits, close codes, crossing an upgrade) |
//! | `gate` | whole messages only to tungstenite, so a WebSocket can cross an upgrade |
//! | `terminal` | telnet to plain text for the terminal subprotocols |

pub(crate) mod gate;
pub(crate) mod stream;
pub(crate) mod terminal;
pub(crate) mod tls;
mod tls_round;
pub(crate) mod wsconn;

pub use wsconn::{WsConn, WsWas};

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::backend::connect::try_read_drain;

/// Which way in a listener is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Door {
    /// Telnet over TLS (`listen.tls_addrs`).
    Tls,
    /// WebSocket (`listen.ws_addrs`).
    Ws,
    /// WebSocket over TLS (`listen.wss_addrs`).
    Wss,
}

impl Door {
    /// Its name in logs and the ready file.
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Tls => "tls",
            Door::Ws => "ws",
            Door::Wss => "wss",
        }
    }
}

/// Bytes read from a TCP player per read call, at most.
const CLIENT_READ: usize = 4 * 1024;

/// A player's connection.
pub trait PlayerTransport: Send + 'static {
    /// Waits until the player sent something, then appends what is there
    /// to `buf`. `Ok(0)` is the end of the stream. Cancel-safe: when
    /// dropped before it is ready, nothing was read. An idle player's
    /// `buf` stays empty (no capacity) until bytes arrive.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut Vec<u8>) -> Poll<io::Result<usize>>;

    /// Writes all of `data`.
    fn write_all<'a>(
        &'a mut self,
        data: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a;

    /// Writes some of `data` and says how much. A connection with
    /// [`partial_writes`](Self::partial_writes) writes nothing if this is
    /// dropped before it is ready; any other writes all of it.
    fn write_some<'a>(
        &'a mut self,
        data: &'a [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        async move { self.write_all(data).await.map(|()| data.len()) }
    }

    /// Whether [`write_some`](Self::write_some) can stop part-way and say
    /// how much went (plain TCP can; a TLS or WebSocket connection keeps
    /// its own buffers and is written whole).
    fn partial_writes(&self) -> bool {
        false
    }

    /// Writes what the connection takes now, without waiting: `None` when
    /// it takes nothing now (or cannot say without waiting: any transport
    /// without [`partial_writes`](Self::partial_writes)).
    fn try_write_some(&mut self, data: &[u8]) -> Option<io::Result<usize>> {
        let _ = data;
        None
    }

    /// Whether writes are queued whole ([`queue`](Self::queue), which never
    /// waits) and then drained ([`poll_drain`](Self::poll_drain)): a
    /// WebSocket, whose frames wait in its gate.
    fn queued_writes(&self) -> bool {
        false
    }

    /// Queues all of `data` (see [`queued_writes`](Self::queued_writes)).
    fn queue(&mut self, data: &[u8]) -> io::Result<()> {
        let _ = data;
        Err(io::Error::other("this connection does not queue writes"))
    }

    /// Writes what was queued, or taken by [`write_some`](Self::write_some)
    /// and still held by the connection (TLS records), until all of it is
    /// on its way. Cancel-safe: what is not written stays held.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = cx;
        Poll::Ready(Ok(()))
    }

    /// For a connection that cannot cross an upgrade and is dropped for
    /// one while its player reads slowly: the bytes given to writes
    /// (telnet stream, not compressed) whose output has not all been
    /// handed to the connection, for the player's playback (taken).
    fn undelivered(&mut self) -> Vec<u8> {
        Vec::new()
    }

    /// Ends the stream in the player's direction.
    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_;

    /// Says why the coming [`shutdown`](Self::shutdown) closes the
    /// connection, for a transport that can tell its client (a WebSocket's
    /// close frame). Without it, the close means "connect again".
    fn closing(&mut self, why: CloseWhy) {
        let _ = why;
    }

    /// The socket, if this connection can be handed to a new process as
    /// it is (an upgrade, see `crate::upgrade`); `None` refuses one.
    fn socket(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    /// Readies a connection that [`socket`](Self::socket) offers for an
    /// upgrade: returns what must cross with the socket for the new
    /// process to go on (nothing for plain TCP; a WebSocket's message not
    /// finished yet and its frames not written yet), or why it cannot
    /// stop now. Never waits on the player. Changes nothing the
    /// connection needs to carry on here if the upgrade fails.
    fn freeze(&mut self) -> impl Future<Output = Result<Option<PlayerWas>, String>> + Send + '_ {
        std::future::ready(Ok(None))
    }
}

/// Why holdfast closes a player's connection, as a WebSocket close code
/// and reason (the SPEC's names). The web client reconnects only on
/// [`Reconnect`](CloseWhy::Reconnect) (and on a link lost without a
/// close frame); after the others it says why and stays closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseWhy {
    /// The player quit: 1000 `quit`.
    Quit,
    /// The game closed the connection while it kept running (`@boot`, its
    /// idle timeout, softcode), or holdfast sent a flooding player away:
    /// 1000 `booted`.
    Booted,
    /// Not logged in within `listen.login_timeout`, or held past
    /// `outage.max_hold`: 4000 `timeout`.
    Timeout,
    /// The proxy is stopping: 1001 `shutdown`.
    Shutdown,
    /// Connect again: the link failed, or an upgrade could not take this
    /// connection along: 4001 `reconnect`.
    Reconnect,
}

impl CloseWhy {
    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            CloseWhy::Quit | CloseWhy::Booted => 1000,
            CloseWhy::Shutdown => 1001,
            CloseWhy::Timeout => 4000,
            CloseWhy::Reconnect => 4001,
        }
    }

    /// The WebSocket close reason.
    pub fn reason(self) -> &'static str {
        match self {
            CloseWhy::Quit => "quit",
            CloseWhy::Booted => "booted",
            CloseWhy::Timeout => "timeout",
            CloseWhy::Shutdown => "shutdown",
            CloseWhy::Reconnect => "reconnect",
        }
    }
}

/// What a player's connection carries across an upgrade besides its
/// socket (in the session's state, see `crate::session::snapshot`).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlayerWas {
    /// A plain WebSocket ([`WsWas`]).
    Ws(WsWas),
}

impl PlayerTransport for TcpStream {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut Vec<u8>) -> Poll<io::Result<usize>> {
        loop {
            // Readiness is polled rather than awaited through `readable()`,
            // whose future would make every session's task bigger.
            ready!(self.poll_read_ready(cx))?;
            if buf.capacity() - buf.len() < CLIENT_READ {
                buf.reserve(CLIENT_READ);
            }
            match try_read_drain(self, buf) {
                // Spurious readiness: it is cleared now; wait again, without
                // the room just reserved (kept, an idle player would hold
                // 4 KiB until their next line).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if buf.is_empty() {
                        *buf = Vec::new();
                    }
                    continue;
                }
                r => return Poll::Ready(r),
            }
        }
    }

    fn write_all<'a>(
        &'a mut self,
        data: &'a [u8],
    ) -> impl Future<Output = io::Result<()>> + Send + 'a {
        AsyncWriteExt::write_all(self, data)
    }

    fn write_some<'a>(
        &'a mut self,
        data: &'a [u8],
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        AsyncWriteExt::write(self, data)
    }

    fn partial_writes(&self) -> bool {
        true
    }

    fn try_write_some(&mut self, data: &[u8]) -> Option<io::Result<usize>> {
        match self.try_write(data) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            r => Some(r),
        }
    }

    fn shutdown(&mut self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        AsyncWriteExt::shutdown(self)
    }

    fn socket(&self) -> Option<BorrowedFd<'_>> {
        Some(self.as_fd())
    }
}
