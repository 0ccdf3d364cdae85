//! A frame-boundary gate between a WebSocket player's socket and
//! tungstenite, so that a WebSocket can be handed to a new process in an
//! upgrade ([`crate::upgrade`]).
//!
//! tungstenite reads ahead into a buffer of its own and keeps a message's
//! fragments until its last one, and neither can be taken out of it. The
//! gate keeps what tungstenite must not have yet in a buffer of its own
//! (a message that came alone goes straight through, and the gate keeps
//! no buffer for it), reads only the frame headers (RFC 6455 §5.2: FIN, opcode, 7/16/64-bit length, mask) to find
//! where messages end, and gives tungstenite one whole *unit* at a time: a
//! data message with all its fragments (and any control frames between
//! them), or a control frame on its own, never bytes of the next unit in
//! the same read. tungstenite parses a frame as soon as it has it whole and
//! returns a data message at its last frame, so once it has handed out a
//! data message or asked the gate for more and been told to wait, it holds
//! no input at all: everything not yet parsed is in the gate, where
//! [`Gate::parked`] can show it, and a new process starts a gate with those
//! bytes ([`Gate::new`]) under a new tungstenite.
//!
//! Memory stays bounded: a unit may be at most [`unit_cap`] bytes (the
//! largest message plus room for fragment and control-frame headers), a
//! frame longer than the largest message is refused on its header, and an
//! idle player's gate holds no buffer. A unit too big is an error
//! ([`TooBig`], closed with 1009 as tungstenite closes a message too
//! long). A header tungstenite would refuse (reserved bits or opcodes, an
//! unmasked frame, a fragmented or long control frame, a continuation out
//! of place) opens the gate: everything is passed on and tungstenite
//! fails the connection with its own close code.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket per call, at most.
const READ: usize = 4 * 1024;
/// Room in a unit for headers beyond its payload: 2–14 bytes a frame, and
/// control frames (up to 131 bytes each) between fragments.
const HEADER_ROOM: usize = 16 * 1024;

/// The most bytes one unit may take, for messages of at most `max_message`
/// payload bytes.
pub fn unit_cap(max_message: usize) -> usize {
    max_message + HEADER_ROOM
}

/// A unit (message or fragments and headers) larger than allowed.
#[derive(Debug)]
pub struct TooBig;

impl std::fmt::Display for TooBig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebSocket message too big")
    }
}

impl std::error::Error for TooBig {}

/// What the bytes at the start of a buffer are.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// A whole unit of this many bytes.
    Unit(usize),
    /// The start of a unit: more bytes are needed.
    Partial,
    /// A unit over the limits.
    TooBig,
    /// A header tungstenite refuses.
    Invalid,
}

/// One frame header.
struct Header {
    /// Header bytes (with the mask key).
    len: usize,
    fin: bool,
    opcode: u8,
    masked: bool,
    rsv: bool,
    payload: u64,
}

/// The frame header at the start of `b`, `None` if not all there yet.
fn header(b: &[u8]) -> Option<Header> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let (mut len, payload) = match b1 & 0x7F {
        126 => (4, u64::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]))),
        127 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(b.get(2..10)?);
            (10, u64::from_be_bytes(l))
        }
        n => (2, u64::from(n)),
    };
    let masked = b1 & 0x80 != 0;
    if masked {
        len += 4;
    }
    if b.len() < len {
        return None;
    }
    Some(Header {
        len,
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0F,
        masked,
        rsv: b0 & 0x70 != 0,
        payload,
    })
}

/// Finds the unit at the start of `b`: messages of at most `max_message`
/// payload bytes, units of at most `cap` bytes.
fn scan(b: &[u8], max_message: usize, cap: usize) -> Scan {
    let mut at = 0usize;
    let mut payload = 0u64;
    // Inside a fragmented data message.
    let mut open = false;
    loop {
        let Some(h) = header(&b[at..]) else {
            return if b.len() > cap {
                Scan::TooBig
            } else {
                Scan::Partial
            };
        };
        if h.rsv || !h.masked {
            return Scan::Invalid;
        }
        let control = h.opcode & 0x08 != 0;
        match h.opcode {
            0x8..=0xA if h.fin && h.payload <= 125 => {}
            0x0 if open => {}
            0x1 | 0x2 if !open => {}
            _ => return Scan::Invalid,
        }
        if h.payload > max_message as u64 {
            return Scan::TooBig;
        }
        if !control {
            payload += h.payload;
            if payload > max_message as u64 {
                return Scan::TooBig;
            }
        }
        // At most `max_message` + 14: no overflow.
        let end = at + h.len + h.payload as usize;
        if end > cap {
            return Scan::TooBig;
        }
        if end > b.len() {
            return Scan::Partial;
        }
        at = end;
        if control {
            if !open {
                return Scan::Unit(at);
            }
        } else if h.fin {
            return Scan::Unit(at);
        } else {
            open = true;
        }
    }
}

/// The gate: a byte stream that passes writes through and releases reads
/// a whole unit at a time.
pub struct Gate<S> {
    inner: S,
    buf: Vec<u8>,
    /// Bytes of `buf` tungstenite has read.
    pos: usize,
    /// The end of the unit being released (`pos..end` not yet read).
    end: usize,
    max_message: usize,
    /// A header tungstenite will refuse was seen: everything passes.
    open: bool,
    /// The socket's end was read.
    eof: bool,
    /// A unit was too big (sticky).
    too_big: bool,
    /// Bytes tungstenite wrote that the socket has not taken yet (from
    /// `out_pos` on): the gate takes every write whole, so whatever of a
    /// frame has not gone is here, where an upgrade can take it
    /// ([`Gate::unsent`]), never inside tungstenite.
    out: Vec<u8>,
    out_pos: usize,
    /// Bytes taken by writes, ever.
    taken: u64,
}

impl<S> Gate<S> {
    /// A gate over `inner`, starting with `pending` (bytes read from the
    /// socket and not yet released: after the HTTP head, or as an older
    /// process had them). Messages may carry at most `max_message` bytes.
    pub fn new(inner: S, pending: Vec<u8>, max_message: usize) -> Self {
        Gate {
            inner,
            buf: pending,
            pos: 0,
            end: 0,
            max_message,
            open: false,
            eof: false,
            too_big: false,
            out: Vec::new(),
            out_pos: 0,
            taken: 0,
        }
    }

    /// How many bytes writes have given the gate, ever.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// How many of those the socket has taken.
    pub fn sent(&self) -> u64 {
        self.taken - self.unsent().len() as u64
    }

    /// A gate that first writes `unsent` (frames an older process had not
    /// got out, see [`Gate::unsent`]).
    pub fn with_unsent(mut self, unsent: Vec<u8>) -> Self {
        self.out = unsent;
        self.out_pos = 0;
        self
    }

    /// Frame bytes written to the gate that the socket has not taken yet.
    pub fn unsent(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// The socket under the gate.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Bytes read from the socket and not yet given to tungstenite, when
    /// tungstenite holds nothing of them (it has read all it was given):
    /// the gate can then be rebuilt from them. `None` in the middle of a
    /// unit, or once the gate is open or the stream ended.
    pub fn parked(&self) -> Option<&[u8]> {
        (self.pos == self.end && !self.open && !self.eof && !self.too_big)
            .then(|| &self.buf[self.pos..])
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gate<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let g = self.get_mut();
        loop {
            if g.too_big {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, TooBig)));
            }
            if g.pos < g.end {
                let n = out.remaining().min(g.end - g.pos);
                out.put_slice(&g.buf[g.pos..g.pos + n]);
                g.pos += n;
                if g.pos == g.buf.len() {
                    // An idle player's gate keeps no buffer.
                    g.buf = Vec::new();
                    g.pos = 0;
                    g.end = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if g.pos > 0 {
                g.buf.drain(..g.pos);
                g.pos = 0;
                g.end = 0;
            }
            if !g.buf.is_empty() {
                if g.open || g.eof {
                    g.end = g.buf.len();
                    continue;
                }
                match scan(&g.buf, g.max_message, unit_cap(g.max_message)) {
                    Scan::Unit(n) => {
                        g.end = n;
                        continue;
                    }
                    Scan::Invalid => {
                        g.open = true;
                        continue;
                    }
                    Scan::TooBig => {
                        g.too_big = true;
                        g.buf = Vec::new();
                        continue;
                    }
                    Scan::Partial => {}
                }
            } else if g.eof {
                return Poll::Ready(Ok(()));
            } else if g.open {
                return Pin::new(&mut g.inner).poll_read(cx, out);
            }
            if g.buf.is_empty() {
                // Straight into tungstenite's buffer, and taken back
                // beyond the first unit: a message that came alone (the
                // usual case) costs the gate no buffer at all.
                let start = out.filled().len();
                match Pin::new(&mut g.inner).poll_read(cx, out) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {}
                }
                let got = &out.filled()[start..];
                if got.is_empty() {
                    g.eof = true;
                    continue;
                }
                match scan(got, g.max_message, unit_cap(g.max_message)) {
                    Scan::Unit(n) => {
                        g.buf.extend_from_slice(&got[n..]);
                        out.set_filled(start + n);
                        return Poll::Ready(Ok(()));
                    }
                    Scan::Invalid => {
                        g.open = true;
                        return Poll::Ready(Ok(()));
                    }
                    Scan::Partial | Scan::TooBig => {
                        g.buf.extend_from_slice(got);
                        out.set_filled(start);
                        continue;
                    }
                }
            }
            // The rest of a unit begun: through the stack, so the buffer
            // holds only what came.
            let mut chunk = [0u8; READ];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut g.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let got = rb.filled();
                    g.eof |= got.is_empty();
                    g.buf.extend_from_slice(got);
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> Gate<S> {
    /// Writes what the gate holds until the socket would wait.
    fn poll_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.out_pos += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // Drained: an idle player's gate keeps no buffer.
        self.out = Vec::new();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gate<S> {
    /// Takes all of `buf`: what the socket does not take now is kept and
    /// written by the next write or flush. Bounded by the session, which
    /// queues one message and waits for the flush before the next one.
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let g = self.get_mut();
        g.taken += buf.len() as u64;
        if g.out_pos == g.out.len() {
            match Pin::new(&mut g.inner).poll_write(cx, buf) {
                Poll::Ready(Ok(n)) if n == buf.len() => return Poll::Ready(Ok(n)),
                Poll::Ready(Ok(n)) => {
                    g.out.extend_from_slice(&buf[n..]);
                    return Poll::Ready(Ok(buf.len()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        g.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let g = self.get_mut();
        std::task::ready!(g.poll_out(cx))?;
        Pin::new(&mut g.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let g = self.get_mut();
        std::task::ready!(g.poll_out(cx))?;
        Pin::new(&mut g.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
