//! Incremental telnet parser: bytes in, [`TelnetEvent`]s out.
//!
//! The parser is a small state machine driven by `memchr`: in data it jumps
//! straight to the next IAC and hands the run in between to the caller as a
//! borrowed slice, so plain text never gets copied. Only subnegotiation
//! payloads that are split across reads or contain an escaped IAC are copied,
//! into a buffer that never grows past the configured cap.

use super::{DO, DONT, IAC, SB, SE, WILL, WONT};
use memchr::memchr;

/// The four option negotiation verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Verb {
    /// `IAC WILL <opt>`: the sender offers or agrees to perform the option.
    Will,
    /// `IAC WONT <opt>`: the sender refuses or stops performing the option.
    Wont,
    /// `IAC DO <opt>`: the sender asks the peer to perform the option.
    Do,
    /// `IAC DONT <opt>`: the sender asks the peer to stop performing it.
    Dont,
}

impl Verb {
    /// The command byte for this verb (`WILL`, `WONT`, `DO` or `DONT`).
    pub fn byte(self) -> u8 {
        match self {
            Verb::Will => WILL,
            Verb::Wont => WONT,
            Verb::Do => DO,
            Verb::Dont => DONT,
        }
    }

    /// The verb for a command byte, or `None` if it is not a negotiation verb.
    pub fn from_byte(b: u8) -> Option<Verb> {
        match b {
            WILL => Some(Verb::Will),
            WONT => Some(Verb::Wont),
            DO => Some(Verb::Do),
            DONT => Some(Verb::Dont),
            _ => None,
        }
    }
}

/// One unit of parsed telnet input.
#[derive(Debug, PartialEq, Eq)]
pub enum TelnetEvent<'a> {
    /// Plain data, with IAC IAC already unescaped to a single 0xFF.
    ///
    /// A run of data with no IAC in it comes out as one slice borrowed from
    /// the input. Data around an escaped IAC, or split across reads, may come
    /// out as several consecutive `Data` events; never an empty one.
    Data(&'a [u8]),
    /// A two-byte command such as IAC GA, IAC EOR, IAC NOP, IAC AYT (the
    /// byte after IAC). Any byte after IAC that is not a verb, SB or IAC
    /// lands here, including a stray SE.
    Command(u8),
    /// `IAC <verb> <option>`.
    Negotiation {
        /// WILL, WONT, DO or DONT.
        verb: Verb,
        /// The option number (see [`super::opt`]).
        option: u8,
    },
    /// `IAC SB <option> ... IAC SE`, payload unescaped (IAC IAC -> 0xFF).
    Subnegotiation {
        /// The option number (see [`super::opt`]).
        option: u8,
        /// The payload between the option byte and IAC SE.
        data: &'a [u8],
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum State {
    /// Between sequences.
    Data,
    /// Saw IAC in data.
    Iac,
    /// Saw IAC `<verb>`; the next byte is the option.
    Neg(Verb),
    /// Saw IAC SB; the next byte is the option.
    SbOpt,
    /// Saw IAC SB IAC: option 255 is sent doubled, anything else aborts.
    SbOptIac,
    /// Inside a subnegotiation payload.
    Sb,
    /// Saw IAC inside a subnegotiation payload.
    SbIac,
}

/// The payload of a subnegotiation split across reads (or with escaped
/// IACs), boxed while there is one: most connections never have one, and
/// every session keeps two parsers (the player's and the game's), so
/// inline it cost 16 bytes more in each (issue 25). An upgrade carries it
/// as the byte string it always was.
#[derive(Debug, Clone, Default)]
// The box is the point: 8 bytes inline instead of a `Vec`'s 24.
#[allow(clippy::box_collection)]
struct SbBuf(Option<Box<Vec<u8>>>);

impl SbBuf {
    fn as_slice(&self) -> &[u8] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn capacity(&self) -> usize {
        self.0.as_ref().map_or(0, |b| b.capacity())
    }
    fn clear(&mut self) {
        if let Some(b) = &mut self.0 {
            b.clear();
        }
    }
    fn vec(&mut self) -> &mut Vec<u8> {
        self.0.get_or_insert_with(Box::default)
    }
}

impl serde::Serialize for SbBuf {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_slice().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for SbBuf {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SbBuf, D::Error> {
        let v = Vec::<u8>::deserialize(d)?;
        Ok(SbBuf((!v.is_empty()).then(|| Box::new(v))))
    }
}

/// Incremental telnet parser.
///
/// Keeps its state across [`feed`](Parser::feed) calls, so input may be
/// split at any byte. Memory use is bounded by the subnegotiation cap given
/// to [`new`](Parser::new).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Parser {
    state: State,
    /// `u32`, as `dropped`: 8 bytes less in every session's core and game
    /// connection (issue 25). A cap that large is 4 GiB.
    max_subneg: u32,
    /// Option of the subnegotiation being collected.
    sb_option: u8,
    /// Payload collected so far when a subnegotiation is split across feeds
    /// or has escaped IACs; `len() <= max_subneg` always.
    sb_buf: SbBuf,
    /// The current subnegotiation went over the cap: its bytes are being
    /// skipped until it ends, and it will produce no event.
    sb_overflow: bool,
    dropped: u32,
}

impl Parser {
    /// Creates a parser in the idle state.
    ///
    /// `max_subneg`: payload bytes kept for one subnegotiation; a longer one
    /// is dropped entirely (no event, counted in
    /// [`dropped_subnegs`](Parser::dropped_subnegs)) and the parser resyncs at
    /// IAC SE. The parser never allocates beyond that cap.
    pub fn new(max_subneg: usize) -> Self {
        Parser {
            state: State::Data,
            max_subneg: u32::try_from(max_subneg).unwrap_or(u32::MAX),
            sb_option: 0,
            sb_buf: SbBuf::default(),
            sb_overflow: false,
            dropped: 0,
        }
    }

    /// True when the parser is between telnet sequences (not inside IAC...,
    /// not inside SB), i.e. a proxy may inject bytes now.
    pub fn is_idle(&self) -> bool {
        self.state == State::Data
    }

    /// Number of subnegotiations dropped for exceeding the cap.
    pub fn dropped_subnegs(&self) -> u64 {
        u64::from(self.dropped)
    }

    /// The subnegotiation cap, in bytes.
    fn cap(&self) -> usize {
        self.max_subneg as usize
    }

    /// Parses `input`, calling `on_event` for each event in order.
    ///
    /// The callback returns `true` to go on, `false` to stop right after that
    /// event (for MCCP2: after `IAC SB 86 IAC SE` the rest of the stream is
    /// zlib, so the caller stops and switches). Returns the number of input
    /// bytes consumed: `input.len()` unless stopped, otherwise the offset just
    /// past the last byte that belongs to the stopping event. The parser's
    /// state then matches that offset, so feeding `input[consumed..]` later
    /// continues exactly where it left off.
    ///
    /// One edge: a subnegotiation ended leniently by `IAC <command>` instead
    /// of `IAC SE` is reported when the command byte is seen; stopping there
    /// leaves the IAC consumed and that byte not, so `consumed` may be 0 and
    /// [`is_idle`](Parser::is_idle) is false. A caller switching to MCCP on
    /// `Subnegotiation { option: 86, .. }` should check `is_idle()` first:
    /// only a properly terminated `IAC SB 86 IAC SE` starts compression.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut on_event: impl FnMut(TelnetEvent<'_>) -> bool,
    ) -> usize {
        let len = input.len();
        let mut i = 0;
        while i < len {
            match self.state {
                State::Data => {
                    let end = memchr(IAC, &input[i..]).map_or(len, |off| i + off);
                    if end > i && !on_event(TelnetEvent::Data(&input[i..end])) {
                        return end;
                    }
                    if end == len {
                        return len;
                    }
                    self.state = State::Iac;
                    i = end + 1;
                }
                State::Iac => {
                    let b = input[i];
                    if b == IAC {
                        // Escaped 0xFF: the second IAC is itself the data
                        // byte, so the data run can start at it and still be
                        // borrowed from the input instead of copied.
                        self.state = State::Data;
                        let end = memchr(IAC, &input[i + 1..]).map_or(len, |off| i + 1 + off);
                        if !on_event(TelnetEvent::Data(&input[i..end])) {
                            return end;
                        }
                        i = end;
                        continue;
                    }
                    i += 1;
                    if let Some(verb) = Verb::from_byte(b) {
                        self.state = State::Neg(verb);
                    } else if b == SB {
                        self.state = State::SbOpt;
                    } else {
                        self.state = State::Data;
                        if !on_event(TelnetEvent::Command(b)) {
                            return i;
                        }
                    }
                }
                State::Neg(verb) => {
                    let option = input[i];
                    i += 1;
                    self.state = State::Data;
                    if !on_event(TelnetEvent::Negotiation { verb, option }) {
                        return i;
                    }
                }
                State::SbOpt => {
                    let b = input[i];
                    i += 1;
                    if b == IAC {
                        self.state = State::SbOptIac;
                    } else {
                        self.start_sb(b);
                    }
                }
                State::SbOptIac => {
                    if input[i] == IAC {
                        i += 1;
                        self.start_sb(IAC);
                    } else {
                        // `IAC SB IAC x`: no option byte at all. Drop the SB
                        // and let the IAC command through rather than let a
                        // broken sequence swallow the data that follows.
                        self.state = State::Iac;
                    }
                }
                State::Sb => {
                    let rest = &input[i..];
                    let Some(off) = memchr(IAC, rest) else {
                        self.push_sb(rest);
                        return len;
                    };
                    let end = i + off;
                    // Whole payload in this read with no escaped IAC: hand it
                    // out borrowed, as with data. (`sb_buf` empty and no
                    // overflow means nothing was collected yet.)
                    if end + 1 < len
                        && input[end + 1] == SE
                        && self.sb_buf.is_empty()
                        && !self.sb_overflow
                        && off <= self.cap()
                    {
                        self.state = State::Data;
                        let event = TelnetEvent::Subnegotiation {
                            option: self.sb_option,
                            data: &input[i..end],
                        };
                        i = end + 2;
                        if !on_event(event) {
                            return i;
                        }
                        continue;
                    }
                    self.push_sb(&input[i..end]);
                    self.state = State::SbIac;
                    i = end + 1;
                }
                State::SbIac => {
                    let b = input[i];
                    if b == IAC {
                        i += 1;
                        self.push_sb(&[IAC]);
                        self.state = State::Sb;
                    } else if b == SE {
                        i += 1;
                        self.state = State::Data;
                        if !self.finish_sb(&mut on_event) {
                            return i;
                        }
                    } else {
                        // IAC <other> inside SB: real clients treat it as the
                        // end of the subnegotiation. Emit what we have, then
                        // reprocess this byte as the command after an IAC
                        // (the IAC itself is already consumed).
                        self.state = State::Iac;
                        if !self.finish_sb(&mut on_event) {
                            return i;
                        }
                    }
                }
            }
        }
        i
    }

    fn start_sb(&mut self, option: u8) {
        self.sb_option = option;
        self.sb_buf.clear();
        self.sb_overflow = false;
        self.state = State::Sb;
    }

    /// Appends payload bytes, switching to overflow (skip) mode past the cap.
    fn push_sb(&mut self, bytes: &[u8]) {
        if self.sb_overflow || bytes.is_empty() {
            return;
        }
        let needed = self.sb_buf.len() + bytes.len();
        if needed > self.cap() {
            self.sb_overflow = true;
            self.sb_buf.clear();
            return;
        }
        if needed > self.sb_buf.capacity() {
            // Grow geometrically but never past the cap, so a hostile peer
            // can't make us hold more than max_subneg bytes per connection.
            let target = needed
                .max(self.sb_buf.capacity().saturating_mul(2))
                .max(64)
                .min(self.cap());
            let len = self.sb_buf.len();
            self.sb_buf.vec().reserve_exact(target - len);
        }
        self.sb_buf.vec().extend_from_slice(bytes);
    }

    /// Ends the current subnegotiation: emits it, or counts it as dropped if
    /// it overflowed. Returns the callback's verdict (`true` if dropped).
    fn finish_sb(&mut self, on_event: &mut impl FnMut(TelnetEvent<'_>) -> bool) -> bool {
        if self.sb_overflow {
            self.sb_overflow = false;
            self.dropped = self.dropped.saturating_add(1);
            return true;
        }
        let go_on = on_event(TelnetEvent::Subnegotiation {
            option: self.sb_option,
            data: self.sb_buf.as_slice(),
        });
        // Not kept for the connection's life: a long one (a game's GMCP or
        // MSSP, a client's environment) would stay, and few are split.
        self.sb_buf = SbBuf::default();
        go_on
    }
}

#[cfg(test)]
mod tests;
