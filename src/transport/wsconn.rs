//! A WebSocket player as a [`PlayerTransport`]: frames in, frames out,
//! keepalive pings, size limits and close codes. The frame parsing is
//! tungstenite's, over a [`Gate`] that gives it whole messages only, so a
//! plain (not TLS) WebSocket can stop between two messages and cross an
//! upgrade with what it was in the middle of ([`WsWas`]).

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Sink, Stream};
use tokio::net::TcpStream;
use tokio::time::{sleep, Sleep};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::gate::{Gate, TooBig};
use super::stream::Io;
use super::terminal::Terminal;
use super::{CloseWhy, PlayerTransport, PlayerWas};

/// Largest message (and frame) a player may send.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The tungstenite settings for a player.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        // Allocated up front per session and kept for its life: small, as
        // input is lines. Reads come from the gate's buffer, not the
        // socket, so a small one costs copies, not system calls; a longer
        // frame grows it (to `MAX_MESSAGE` at most). 512 bytes instead of
        // 4 KiB: 3.5 KiB less per idle WebSocket player (issue 25).
        .read_buffer_size(512)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// What travels in the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// `telnet.mudstandards.org`: the telnet stream in binary frames.
    Telnet,
    /// `terminal.mudstandards.org`: UTF-8 text with ANSI in binary frames.
    Terminal,
    /// No subprotocol: the same text in text frames.
    Text,
}

impl Mode {
    /// The subprotocol name to answer with.
    pub fn protocol(self) -> Option<&'static str> {
        match self {
            Mode::Telnet => Some("telnet.mudstandards.org"),
            Mode::Terminal => Some("terminal.mudstandards.org"),
            Mode::Text => None,
        }
    }

    /// The mode for the subprotocols a client offered, in holdfast's order
    /// of preference (the telnet stream keeps everything).
    pub fn choose(offered: &[&str]) -> Mode {
        for m in [Mode::Telnet, Mode::Terminal] {
            if offered.iter().any(|o| Some(o.trim()) == m.protocol()) {
                return m;
            }
        }
        Mode::Text
    }
}

/// A player's WebSocket.
pub struct WsConn {
    ws: WebSocketStream<Gate<Io>>,
    mode: Mode,
    /// The telnet-to-text adapter (terminal and text modes).
    term: Option<Box<Terminal>>,
    /// Bytes for the core that did not come from a frame: the adapter's
    /// answers to negotiations.
    to_core: Vec<u8>,
    ping: Pin<Box<Sleep>>,
    /// `listen.ws_ping_interval`.
    ping_every: Duration,
    /// A ping went out and nothing came back since.
    awaiting: bool,
    /// What the close frame of [`shutdown`](PlayerTransport::shutdown)
    /// says (see [`CloseWhy`]).
    close: CloseWhy,
    /// Over TLS: the payload of the message queued last and where its
    /// frame ends in the gate's count, until it is drained (see
    /// [`PlayerTransport::undelivered`]).
    sending: Option<(Vec<u8>, u64)>,
}

impl WsConn {
    /// Wraps an upgraded stream.
    pub fn new(ws: WebSocketStream<Gate<Io>>, mode: Mode, ping_every: Duration) -> Self {
        WsConn {
            ws,
            mode,
            term: (mode != Mode::Telnet).then(Box::default),
            to_core: Vec::new(),
            ping: Box::pin(sleep(ping_every)),
            ping_every,
            awaiting: false,
            close: CloseWhy::Reconnect,
            sending: None,
        }
    }

    /// The message for `data` (telnet stream), if it carries anything.
    fn message(&mut self, data: &[u8]) -> Option<Message> {
        Some(match &mut self.term {
            None => Message::binary(data.to_vec()),
            Some(t) => {
                let mut text = String::new();
                t.outgoing(data, &mut text, &mut self.to_core);
                if text.is_empty() {
                    return None;
                }
                match self.mode {
                    Mode::Text => Message::text(text),
                    _ => Message::binary(text.into_bytes()),
                }
            }
        })
    }

    /// Sends a close frame if the socket takes it now (best effort: the
    /// connection is dropped right after).
    fn close_now(&mut self, cx: &mut Context<'_>, code: CloseCode, reason: &str) {
        let mut ws = Pin::new(&mut self.ws);
        if let Poll::Ready(Ok(())) = ws.as_mut().poll_ready(cx) {
            let frame = CloseFrame {
                code,
                reason: reason.into(),
            };
            if ws.as_mut().start_send(Message::Close(Some(frame))).is_ok() {
                let _ = ws.poll_flush(cx);
            }
        }
    }

    fn frame_in(&mut self, data: &[u8], buf: &mut Vec<u8>) -> Result<(), ()> {
        match self.mode {
            Mode::Telnet => buf.extend_from_slice(data),
            Mode::Terminal | Mode::Text => {
                if std::str::from_utf8(data).is_err() {
                    return Err(());
                }
                Terminal::incoming(data, buf);
            }
        }
        Ok(())
    }
}

/// The close code for a read error.
fn close_code(e: &WsError) -> (CloseCode, &'static str) {
    match e {
        WsError::Io(e) if e.get_ref().is_some_and(|i| i.is::<TooBig>()) => {
            (CloseCode::Size, "message too big")
        }
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            (CloseCode::Size, "message too big")
        }
        WsError::Capacity(_) => (CloseCode::Size, "too big"),
        WsError::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8"),
        WsError::Protocol(ProtocolError::UnmaskedFrameFromClient) => {
            (CloseCode::Protocol, "unmasked frame")
        }
        _ => (CloseCode::Protocol, "protocol error"),
    }
}

impl PlayerTransport for WsConn {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut Vec<u8>) -> Poll<io::Result<usize>> {
        if !self.to_core.is_empty() {
            let n = self.to_core.len();
            buf.append(&mut self.to_core);
            self.to_core = Vec::new();
            return Poll::Ready(Ok(n));
        }
        loop {
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => return Poll::Ready(Ok(0)),
                Poll::Ready(Some(Err(e))) => {
                    let (code, why) = close_code(&e);
                    self.close_now(cx, code, why);
                    return Poll::Ready(Err(io::Error::other(e)));
                }
                Poll::Ready(Some(Ok(msg))) => {
                    self.awaiting = false;
                    let before = buf.len();
                    let ok = match &msg {
                        Message::Binary(b) => self.frame_in(b, buf),
                        Message::Text(t) => self.frame_in(t.as_bytes(), buf),
                        // tungstenite answers pings itself.
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
                        Message::Close(_) => return Poll::Ready(Ok(0)),
                    };
                    if ok.is_err() {
                        self.close_now(cx, CloseCode::Invalid, "input is not UTF-8");
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "input is not UTF-8",
                        )));
                    }
                    if buf.len() > before {
                        return Poll::Ready(Ok(buf.len() - before));
                    }
                }
            }
        }
        while self.ping.as_mut().poll(cx).is_ready() {
            if self.awaiting {
                self.close_now(cx, CloseCode::Away, "no answer to ping");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no answer to ping",
                )));
            }
            let mut ws = Pin::new(&mut self.ws);
            if let Poll::Ready(Ok(())) = ws.as_mut().poll_ready(cx) {
                if ws
                    .as_mut()
                    .start_send(Message::Ping(Default::default()))
                    .is_ok()
                {
                    let _ = ws.poll_flush(cx);
                }
            }
            self.awaiting = true;
            let next = tokio::time::Instant::now() + self.ping_every;
            self.ping.as_mut().reset(next);
        }
        Poll::Pending
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.queue(data)?;
        std::future::poll_fn(|cx| self.poll_drain(cx)).await
    }

    fn queued_writes(&self) -> bool {
        true
    }

    /// The gate takes every frame whole (see `gate`), so tungstenite never
    /// holds one back and `start_send` needs no readiness first.
    fn queue(&mut self, data: &[u8]) -> io::Result<()> {
        let Some(msg) = self.message(data) else {
            return Ok(());
        };
        let tls = matches!(self.ws.get_ref().get_ref(), Io::Tls(_));
        let payload = tls.then(|| msg.clone().into_data().to_vec());
        Pin::new(&mut self.ws)
            .start_send(msg)
            .map_err(io::Error::other)?;
        // Where its frame (one a message: tungstenite does not split what
        // it sends) ends in the gate's count.
        self.sending = payload.map(|p| (p, self.ws.get_ref().taken()));
        Ok(())
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = std::task::ready!(Pin::new(&mut self.ws).poll_flush(cx));
        self.sending = None;
        Poll::Ready(r.map_err(io::Error::other))
    }

    /// The last message, whole, if the gate had not handed all of its
    /// frame to TLS yet (frames queued after it, a pong, do not count): a
    /// WebSocket client uses nothing of a frame it does not get whole, so
    /// the part that went is no use to the player either.
    fn undelivered(&mut self) -> Vec<u8> {
        match self.sending.take() {
            Some((payload, end)) if end > self.ws.get_ref().sent() => payload,
            _ => Vec::new(),
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        let frame = CloseFrame {
            code: CloseCode::from(self.close.code()),
            reason: self.close.reason().into(),
        };
        self.ws.close(Some(frame)).await.or(Ok(()))
    }

    fn closing(&mut self, why: CloseWhy) {
        self.close = why;
    }

    fn socket(&self) -> Option<BorrowedFd<'_>> {
        match self.ws.get_ref().get_ref() {
            Io::Plain(s) => Some(s.as_fd()),
            // rustls's state cannot cross.
            Io::Tls(_) => None,
        }
    }

    async fn freeze(&mut self) -> Result<Option<PlayerWas>, String> {
        // A pong tungstenite owes goes into the gate (which takes it
        // whole); what the socket has not taken of the gate's frames
        // crosses (a slow reader holds nothing up).
        let flush = std::future::poll_fn(|cx| Pin::new(&mut self.ws).poll_flush(cx));
        if let Some(Err(e)) = futures::FutureExt::now_or_never(flush) {
            return Err(format!("WebSocket: {e}"));
        }
        let unsent = self.ws.get_ref().unsent().to_vec();
        // Between two messages tungstenite holds no input (see `gate`).
        let Some(pending) = self.ws.get_ref().parked().map(<[u8]>::to_vec) else {
            return Err("in the middle of a WebSocket message".into());
        };
        if !pending.is_empty() {
            tracing::debug!(
                bytes = pending.len(),
                "an unfinished WebSocket message crosses"
            );
        }
        Ok(Some(PlayerWas::Ws(WsWas {
            mode: self.mode,
            pending,
            term: self.term.clone(),
            to_core: self.to_core.clone(),
            awaiting: self.awaiting,
            unsent,
        })))
    }
}

/// A plain WebSocket as it crosses an upgrade with its socket: the
/// subprotocol, the bytes of a message not finished yet (the gate's), the
/// telnet-to-text adapter's state, negotiation answers not yet passed to
/// the session, and whether a ping is unanswered.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct WsWas {
    mode: Mode,
    /// May hold part of a password: zeroed when dropped.
    pending: Vec<u8>,
    term: Option<Box<Terminal>>,
    to_core: Vec<u8>,
    awaiting: bool,
    /// Frames written to the socket only in part (a slow reader): the new
    /// process writes them first.
    #[serde(default)]
    unsent: Vec<u8>,
}

impl Drop for WsWas {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.pending.zeroize();
    }
}

impl WsConn {
    /// A WebSocket taken over in an upgrade: its socket and what it was
    /// doing. Nothing is read or written.
    pub fn resumed(stream: TcpStream, mut was: WsWas, ping_every: Duration) -> Option<WsConn> {
        use futures::FutureExt;
        let gate = Gate::new(
            Io::Plain(stream),
            std::mem::take(&mut was.pending),
            MAX_MESSAGE,
        )
        .with_unsent(std::mem::take(&mut was.unsent));
        // Without a handshake this is ready at once.
        let ws = WebSocketStream::from_raw_socket(gate, Role::Server, Some(ws_config()))
            .now_or_never()?;
        let mut c = WsConn::new(ws, was.mode, ping_every);
        c.term = was.term.take();
        c.to_core = std::mem::take(&mut was.to_core);
        c.awaiting = was.awaiting;
        Some(c)
    }
}

#[cfg(test)]
#[path = "wsconn_tests.rs"]
mod tests;
