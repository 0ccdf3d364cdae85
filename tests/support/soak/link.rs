//! A player's connection: plain telnet (`listen.addrs`) or WebSocket
//! (`listen.ws_addrs`) on one of its three framings, and what it carries
//! decoded into text lines, through MCCP2 for a player who takes it.
//!
//! The decoder is plain data with no I/O: bytes in, lines and telnet
//! answers out. A player with MCCP2 answers every `IAC WILL MCCP2` with
//! `IAC DO MCCP2`, inflates from `IAC SB MCCP2 IAC SE` to the end of the
//! zlib stream, and reads plain text again after it (holdfast ends the
//! stream before an upgrade and the next process offers a new one). A
//! byte that is not part of the zlib stream where one is expected (a plain
//! `IAC WILL MCCP2` inside it, say) fails the inflate: that is the broken
//! stream the soak looks for.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};

use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Which door a player comes in by, and how its bytes are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Door {
    /// Plain telnet on `listen.addrs`.
    Telnet,
    /// WebSocket, `telnet.mudstandards.org`: binary frames carry the
    /// telnet stream both ways.
    WsTelnet,
    /// WebSocket, `terminal.mudstandards.org`: binary frames of text.
    WsTerminal,
    /// WebSocket with no subprotocol: text frames.
    WsText,
}

impl Door {
    /// Every WebSocket framing, in the order players are given them.
    pub const WS: [Door; 3] = [Door::WsTelnet, Door::WsTerminal, Door::WsText];

    /// Whether the player speaks telnet (and so may take MCCP2).
    pub fn telnet(self) -> bool {
        matches!(self, Door::Telnet | Door::WsTelnet)
    }

    /// Whether it comes in over WebSocket.
    pub fn ws(self) -> bool {
        self != Door::Telnet
    }

    fn protocol(self) -> Option<&'static str> {
        match self {
            Door::WsTelnet => Some("telnet.mudstandards.org"),
            Door::WsTerminal => Some("terminal.mudstandards.org"),
            _ => None,
        }
    }

    /// The name in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Door::Telnet => "telnet",
            Door::WsTelnet => "ws-telnet",
            Door::WsTerminal => "ws-terminal",
            Door::WsText => "ws-text",
        }
    }
}

/// An open connection to holdfast.
pub enum Link {
    Tcp {
        rd: OwnedReadHalf,
        wr: OwnedWriteHalf,
    },
    Ws {
        ws: Box<WebSocketStream<TcpStream>>,
        /// Send text frames (no subprotocol), else binary.
        text: bool,
    },
}

impl Link {
    /// Connects from `src` to `addr` by `door` (the WebSocket handshake
    /// included, offering the door's subprotocol, which holdfast must
    /// choose).
    pub async fn connect(door: Door, src: Ipv4Addr, addr: SocketAddr) -> Result<Link, String> {
        let sock = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        sock.bind(SocketAddr::from((src, 0)))
            .map_err(|e| format!("bind {src}: {e}"))?;
        let tcp = sock
            .connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        if door == Door::Telnet {
            let (rd, wr) = tcp.into_split();
            return Ok(Link::Tcp { rd, wr });
        }
        let mut req = format!("ws://{addr}/")
            .into_client_request()
            .map_err(|e| format!("WebSocket request: {e}"))?;
        if let Some(p) = door.protocol() {
            let v = p.parse().map_err(|e| format!("header: {e}"))?;
            req.headers_mut().insert("Sec-WebSocket-Protocol", v);
        }
        let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
            .await
            .map_err(|e| format!("WebSocket handshake: {e}"))?;
        let chosen = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok());
        if chosen != door.protocol() {
            return Err(format!(
                "WebSocket subprotocol {chosen:?}, asked for {:?}",
                door.protocol()
            ));
        }
        Ok(Link::Ws {
            ws: Box::new(ws),
            text: door == Door::WsText,
        })
    }

    /// The next bytes from holdfast; Err when the connection closed.
    /// Cancel-safe: a TCP read and tokio-tungstenite's `next` both lose
    /// nothing when dropped before they complete.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<Vec<u8>, String> {
        match self {
            Link::Tcp { rd, .. } => match rd.read(buf).await {
                Ok(0) => Err("closed by holdfast".into()),
                Ok(n) => Ok(buf[..n].to_vec()),
                Err(e) => Err(format!("read: {e}")),
            },
            Link::Ws { ws, .. } => loop {
                match ws.next().await {
                    None => return Err("closed by holdfast".into()),
                    Some(Ok(Message::Binary(b))) => return Ok(b.to_vec()),
                    Some(Ok(Message::Text(t))) => return Ok(t.as_bytes().to_vec()),
                    Some(Ok(Message::Close(f))) => {
                        let why = f.map(|f| format!("{} {}", u16::from(f.code), f.reason));
                        return Err(format!(
                            "closed by holdfast (WebSocket close {})",
                            why.unwrap_or_default()
                        ));
                    }
                    // Pings are answered by tokio-tungstenite itself.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(format!("WebSocket: {e}")),
                }
            },
        }
    }

    /// Writes `data` (one frame on WebSocket). Not cancel-safe: called
    /// outside `select!`.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), String> {
        match self {
            Link::Tcp { wr, .. } => wr.write_all(data).await.map_err(|e| format!("write: {e}")),
            Link::Ws { ws, text } => {
                let m = if *text {
                    Message::text(String::from_utf8_lossy(data).into_owned())
                } else {
                    Message::binary(data.to_vec())
                };
                ws.send(m).await.map_err(|e| format!("WebSocket send: {e}"))
            }
        }
    }

    /// The link drops: our side of the TCP connection ends (FIN) with no
    /// WebSocket close frame, as a lost network link does.
    pub async fn drop_link(&mut self) {
        match self {
            Link::Tcp { wr, .. } => {
                let _ = wr.shutdown().await;
            }
            Link::Ws { ws, .. } => {
                let _ = ws.get_mut().shutdown().await;
            }
        }
    }
}

// Telnet.
const IAC: u8 = 255;
const SB: u8 = 250;
const SE: u8 = 240;
const WILL: u8 = 251;
const DO: u8 = 253;
const MCCP2: u8 = 86;

// Telnet parser states.
const T_DATA: u8 = 0;
const T_IAC: u8 = 1;
const T_OPT: u8 = 2;
const T_SB_OPT: u8 = 3;
const T_SB: u8 = 4;
const T_SB_IAC: u8 = 5;

/// How much a line may grow before the rest of it is dropped.
const LINE_MAX: usize = 64 * 1024;

/// What came from holdfast: text lines, minus telnet, through MCCP2.
pub struct Decoder {
    /// Complete lines not taken yet.
    pub lines: VecDeque<String>,
    /// Telnet answers to write (`IAC DO MCCP2`).
    pub replies: Vec<u8>,
    /// MCCP2 streams started.
    pub streams: u32,
    /// Of those, ended cleanly (zlib's end of stream).
    pub ends: u32,
    take_mccp: bool,
    cur: Vec<u8>,
    tel: u8,
    verb: u8,
    sb_opt: u8,
    z: Option<flate2::Decompress>,
}

impl Decoder {
    /// A decoder for one connection; `take_mccp`: answer MCCP2 offers.
    pub fn new(take_mccp: bool) -> Decoder {
        Decoder {
            lines: VecDeque::new(),
            replies: Vec::new(),
            streams: 0,
            ends: 0,
            take_mccp,
            cur: Vec::new(),
            tel: T_DATA,
            verb: 0,
            sb_opt: 0,
            z: None,
        }
    }

    /// Takes bytes as they came off the wire. Err: the MCCP2 stream is
    /// broken (nothing after it can be read).
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        let mut out = vec![0u8; 64 * 1024];
        while !data.is_empty() {
            let Some(z) = self.z.as_mut() else {
                let used = self.plain(data);
                data = &data[used..];
                continue;
            };
            let (in0, out0) = (z.total_in(), z.total_out());
            let st = z
                .decompress(data, &mut out, flate2::FlushDecompress::None)
                .map_err(|e| format!("MCCP2 stream broken: {e}"))?;
            let used = (z.total_in() - in0) as usize;
            let made = (z.total_out() - out0) as usize;
            data = &data[used..];
            let ended = st == flate2::Status::StreamEnd;
            if ended {
                self.z = None;
                self.ends += 1;
            }
            let inner = self.plain(&out[..made]);
            if inner < made {
                return Err("MCCP2 started again inside a compressed stream".into());
            }
            if used == 0 && made == 0 && !ended {
                return Err("MCCP2: inflate made no progress".into());
            }
        }
        Ok(())
    }

    /// Plain bytes through the telnet parser; stops right after an MCCP2
    /// start (what follows is compressed). Returns the bytes used.
    fn plain(&mut self, data: &[u8]) -> usize {
        for (i, &b) in data.iter().enumerate() {
            self.tel = match (self.tel, b) {
                (T_DATA, IAC) => T_IAC,
                (T_DATA, b'\n') => {
                    let l = String::from_utf8_lossy(&self.cur);
                    self.lines.push_back(l.trim_end_matches('\r').to_string());
                    self.cur.clear();
                    T_DATA
                }
                (T_DATA, b) => {
                    if self.cur.len() < LINE_MAX {
                        self.cur.push(b);
                    }
                    T_DATA
                }
                (T_IAC, IAC) => {
                    self.cur.push(IAC);
                    T_DATA
                }
                (T_IAC, SB) => T_SB_OPT,
                (T_IAC, 251..=254) => {
                    self.verb = b;
                    T_OPT
                }
                (T_IAC, _) => T_DATA,
                (T_OPT, opt) => {
                    if self.take_mccp && self.verb == WILL && opt == MCCP2 {
                        self.replies.extend_from_slice(&[IAC, DO, MCCP2]);
                    }
                    T_DATA
                }
                (T_SB_OPT, opt) => {
                    self.sb_opt = opt;
                    T_SB
                }
                (T_SB, IAC) => T_SB_IAC,
                (T_SB, _) => T_SB,
                (T_SB_IAC, SE) => {
                    self.tel = T_DATA;
                    if self.sb_opt == MCCP2 {
                        self.streams += 1;
                        self.z = Some(flate2::Decompress::new(true));
                        return i + 1;
                    }
                    T_DATA
                }
                (T_SB_IAC, _) => T_SB,
                _ => T_DATA,
            };
        }
        data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_between_start_and_end_and_answers_offers() {
        let mut d = Decoder::new(true);
        let mut wire = b"hello\r\n\xff\xfb\x56".to_vec();
        wire.extend_from_slice(b"\xff\xfa\x56\xff\xf0");
        wire.extend_from_slice(&zlib(b"S:P1:1\r\nS:P1:2\r\n"));
        wire.extend_from_slice(b"plain again\r\n");
        // Byte by byte: every split point works.
        for b in &wire {
            d.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(d.replies, b"\xff\xfd\x56");
        assert_eq!((d.streams, d.ends), (1, 1));
        let lines: Vec<_> = d.lines.iter().cloned().collect();
        assert_eq!(lines, ["hello", "S:P1:1", "S:P1:2", "plain again"]);
    }

    #[test]
    fn a_plain_byte_inside_the_stream_breaks_it() {
        let mut d = Decoder::new(true);
        let mut wire = b"\xff\xfa\x56\xff\xf0".to_vec();
        wire.extend_from_slice(b"\xff\xfb\x56");
        assert!(d.feed(&wire).is_err());
    }

    #[test]
    fn without_mccp_offers_are_not_answered() {
        let mut d = Decoder::new(false);
        d.feed(b"\xff\xfb\x56a\r\n").unwrap();
        assert!(d.replies.is_empty());
        assert_eq!(d.lines.pop_front().as_deref(), Some("a"));
    }
}
