//! A WebSocket player as a [`PlayerTransport`]: frames in, frames out,
//! keepalive pings, size limits and close codes. The frame parsing is
//! tungstenite's.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Sink, SinkExt, Stream};
use tokio::time::{sleep, Sleep};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::stream::Io;
use super::terminal::Terminal;
use crate::session::PlayerTransport;

/// Largest message (and frame) a player may send.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The tungstenite settings for a player.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        // Allocated up front per session: small, as input is lines.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// What travels in the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    ws: WebSocketStream<Io>,
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
}

impl WsConn {
    /// Wraps an upgraded stream.
    pub fn new(ws: WebSocketStream<Io>, mode: Mode, ping_every: Duration) -> Self {
        WsConn {
            ws,
            mode,
            term: (mode != Mode::Telnet).then(Box::default),
            to_core: Vec::new(),
            ping: Box::pin(sleep(ping_every)),
            ping_every,
            awaiting: false,
        }
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
        let msg = match &mut self.term {
            None => Message::binary(data.to_vec()),
            Some(t) => {
                let mut text = String::new();
                t.outgoing(data, &mut text, &mut self.to_core);
                if text.is_empty() {
                    return Ok(());
                }
                match self.mode {
                    Mode::Text => Message::text(text),
                    _ => Message::binary(text.into_bytes()),
                }
            }
        };
        self.ws.send(msg).await.map_err(io::Error::other)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        self.ws.close(Some(frame)).await.or(Ok(()))
    }
}
