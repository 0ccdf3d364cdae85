//! The byte stream from a backend: telnet events, with MCCP2 undone.
//!
//! When a game compresses (`IAC SB 86 IAC SE`, then zlib), [`Inbound`]
//! inflates the rest and parses what comes out, so the session only ever
//! sees plain telnet events and never passes the game's zlib stream on: the
//! player's stream (see [`super::outbound`]) is the proxy's own and survives
//! the game's restarts. A new backend connection gets a new `Inbound`.

use super::mccp::{Inflater, MccpError, Progress};
use super::{opt, Parser, TelnetEvent};

/// Inflated bytes produced per step; the parser takes them before the
/// next step, so a highly compressed read never sits in memory at once.
const INFLATE_STEP: usize = 32 * 1024;

/// Decodes one backend connection's bytes into telnet events.
#[derive(Debug, serde::Deserialize)]
pub struct Inbound {
    parser: Parser,
    /// A zlib stream cannot be written out: an upgrade refuses a session
    /// whose game compresses (see `session::snapshot`). Boxed: few games
    /// compress, and every game connection keeps this.
    #[serde(skip)]
    inflater: Option<Box<Inflater>>,
}

/// An upgrade writes the shape earlier versions read, with byte totals
/// nothing used (gone from [`Inbound`]: 16 bytes of every game
/// connection) as zeros, so a new process can still hand back to an older
/// one. Reading ignores them.
impl serde::Serialize for Inbound {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Wire<'a> {
            parser: &'a Parser,
            totals: (u64, u64),
        }
        Wire {
            parser: &self.parser,
            totals: (0, 0),
        }
        .serialize(s)
    }
}

impl Inbound {
    /// A decoder for a new connection; `max_subneg` caps subnegotiations.
    pub fn new(max_subneg: usize) -> Self {
        Inbound {
            parser: Parser::new(max_subneg),
            inflater: None,
        }
    }

    /// True while the backend's stream is compressed.
    pub fn compressed(&self) -> bool {
        self.inflater.is_some()
    }

    /// True while the stream is plain (not compressed) and between telnet
    /// sequences: then bytes with no IAC in them decode to themselves, and
    /// a relay may pass them on without feeding them through.
    pub fn is_idle(&self) -> bool {
        self.inflater.is_none() && self.parser.is_idle()
    }

    /// Decodes all of `input`, calling `on_event` for each event in order,
    /// inflating an MCCP2 stream whenever the game starts one.
    ///
    /// An error means the game's zlib stream is corrupt: nothing after it
    /// on this connection can be trusted.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut on_event: impl FnMut(TelnetEvent<'_>),
    ) -> Result<(), MccpError> {
        let mut pos = 0;
        while pos < input.len() {
            pos += self.feed_bounded(&input[pos..], true, usize::MAX, &mut on_event)?;
        }
        Ok(())
    }

    /// Decodes a prefix of `input`, calling `on_event` for each event in
    /// order, and returns how many bytes of `input` it took. Once a
    /// compressed stream has given `budget` plain bytes it stops, so the
    /// caller can write them before asking for more: a zlib bomb inflates a
    /// step at a time instead of all at once. A compression start is obeyed
    /// only with `allow_mccp` (holdfast agreed to MCCP2 on this
    /// connection); otherwise it is dropped and what follows is read as it
    /// comes.
    ///
    /// An error means the game's zlib stream is corrupt: nothing after it
    /// on this connection can be trusted.
    pub fn feed_bounded(
        &mut self,
        input: &[u8],
        allow_mccp: bool,
        budget: usize,
        mut on_event: impl FnMut(TelnetEvent<'_>),
    ) -> Result<usize, MccpError> {
        let Inbound { parser, inflater } = self;
        let mut pos = 0;
        let mut produced = 0usize;
        let mut plain = Vec::new();
        loop {
            match inflater {
                Some(inf) => {
                    if produced >= budget {
                        return Ok(pos);
                    }
                    plain.clear();
                    let progress = inf.decompress(&input[pos..], &mut plain, INFLATE_STEP)?;
                    let used = match progress {
                        Progress::NeedInput => input.len() - pos,
                        Progress::OutputFull(n) | Progress::StreamEnd(n) => n,
                    };
                    pos += used;
                    produced += plain.len();
                    // A start inside a compressed stream is meaningless:
                    // drop it rather than nest.
                    parser.feed(&plain, |ev| {
                        if !is_mccp_start(&ev) {
                            on_event(ev);
                        }
                        true
                    });
                    match progress {
                        Progress::NeedInput => return Ok(pos),
                        Progress::OutputFull(_) => {}
                        Progress::StreamEnd(_) => *inflater = None,
                    }
                }
                None => {
                    if pos == input.len() {
                        return Ok(pos);
                    }
                    let mut start = false;
                    let n = parser.feed(&input[pos..], |ev| {
                        if is_mccp_start(&ev) {
                            if allow_mccp {
                                start = true;
                                return false;
                            }
                            // Not agreed: a misbehaving game. Dropped; its
                            // bytes are never inflated.
                            return true;
                        }
                        on_event(ev);
                        true
                    });
                    pos += n;
                    // Only a properly closed `IAC SB 86 IAC SE` starts it
                    // (see `Parser::feed`).
                    if start && parser.is_idle() {
                        *inflater = Some(Box::default());
                    }
                }
            }
        }
    }
}

fn is_mccp_start(ev: &TelnetEvent<'_>) -> bool {
    matches!(
        ev,
        TelnetEvent::Subnegotiation {
            option: opt::MCCP2,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telnet::mccp::Deflater;
    use crate::telnet::{IAC, SB, SE};

    /// Decodes `chunks` and returns the data bytes and the other events
    /// (as debug strings) in order.
    fn decode(chunks: &[&[u8]]) -> (Vec<u8>, Vec<String>) {
        let mut d = Inbound::new(1024);
        let mut data = Vec::new();
        let mut other = Vec::new();
        for c in chunks {
            d.feed(c, |ev| match ev {
                TelnetEvent::Data(b) => data.extend_from_slice(b),
                e => other.push(format!("{e:?}")),
            })
            .unwrap();
        }
        (data, other)
    }

    fn compressed_session() -> (Vec<u8>, Vec<u8>) {
        // What a game sends: an offer, plain text, the start, then zlib
        // with text, a GA prompt and a GMCP message inside.
        let mut wire = vec![IAC, 251, opt::MCCP2];
        wire.extend_from_slice(b"plain\r\n");
        wire.extend_from_slice(&[IAC, SB, opt::MCCP2, IAC, SE]);
        let mut z = Deflater::new(6);
        z.compress(b"packed\r\n> \xff\xf9", &mut wire);
        z.compress(b"\xff\xfa\xc9Room.Info {}\xff\xf0", &mut wire);
        let mut big = Vec::new();
        for i in 0..20_000 {
            big.extend_from_slice(format!("line {i}\r\n").as_bytes());
        }
        z.compress(&big, &mut wire);
        z.finish(&mut wire);
        wire.extend_from_slice(b"after\r\n");
        let mut want = b"plain\r\npacked\r\n> ".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"after\r\n");
        (wire, want)
    }

    #[test]
    fn inflates_after_start_and_resumes_plain_after_end() {
        let (wire, want) = compressed_session();
        let (data, other) = decode(&[&wire]);
        assert_eq!(data, want);
        assert_eq!(
            other,
            vec![
                "Negotiation { verb: Will, option: 86 }",
                "Command(249)",
                "Subnegotiation { option: 201, data: [82, 111, 111, 109, 46, 73, 110, 102, 111, 32, 123, 125] }",
            ]
        );
    }

    #[test]
    fn any_split_gives_the_same_result() {
        let (wire, want) = compressed_session();
        let (_, want_other) = decode(&[&wire]);
        for k in (0..wire.len()).step_by(97).chain([1, 12, 13, 14, 15, 16]) {
            let (data, other) = decode(&[&wire[..k], &wire[k..]]);
            assert_eq!(data, want, "split at {k}");
            assert_eq!(other, want_other, "split at {k}");
        }
        // Byte by byte through the start and the beginning of the stream.
        let mut chunks: Vec<&[u8]> = wire[..64].chunks(1).collect();
        chunks.push(&wire[64..]);
        assert_eq!(decode(&chunks).0, want);
    }

    #[test]
    fn corrupt_stream_is_an_error() {
        let mut d = Inbound::new(1024);
        let mut wire = vec![IAC, SB, opt::MCCP2, IAC, SE];
        wire.extend_from_slice(b"this is not zlib at all");
        assert!(d.feed(&wire, |_| {}).is_err());
    }

    #[test]
    fn unterminated_start_does_not_compress() {
        // `IAC SB 86 IAC GA`: a lenient end, not a start.
        let (data, _) = decode(&[&[IAC, SB, opt::MCCP2, IAC, 249], b"text"]);
        assert_eq!(data, b"text");
    }
}
