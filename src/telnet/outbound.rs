//! The byte stream toward the player, compressed with MCCP2 once the player
//! agreed to it.
//!
//! The proxy's MCCP2 stream to the player is its own: it starts when the
//! player answers the proxy's `IAC WILL 86` with `IAC DO 86` and lives as
//! long as the player's connection, whatever happens to backends. Every
//! write is sync-flushed so the player can decode it at once (prompts
//! without a newline included).

use std::borrow::Cow;

use super::mccp::Deflater;
use super::{opt, IAC, SB, SE};

/// Compression level for players: zlib's default trade-off.
const LEVEL: u32 = 6;

/// A switch that takes effect right after the next encoded chunk, so it
/// lands between two complete writes and never inside a telnet sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Switch {
    Start,
    Stop,
}

/// Encodes what the session writes to the player.
#[derive(Debug, Default)]
pub struct Outbound {
    /// Made when the player first agrees to MCCP2, kept for the ratio:
    /// boxed, so a session that never compresses keeps 8 bytes for it
    /// instead of 40 (issue 25).
    mccp: Option<Box<Mccp>>,
    pending: Option<Switch>,
}

/// A player's MCCP2: the stream now, and what finished ones did.
#[derive(Debug, Default)]
struct Mccp {
    deflater: Option<Deflater>,
    /// Plain and wire bytes of finished compressed streams, for the ratio.
    done: (u64, u64),
}

impl Outbound {
    /// Starts compressing after the current chunk (`IAC SB 86 IAC SE` goes
    /// out plain, then the zlib stream).
    pub fn start(&mut self) {
        if self.deflater().is_none() {
            self.pending = Some(Switch::Start);
        } else if self.pending == Some(Switch::Stop) {
            self.pending = None;
        }
    }

    /// Ends the zlib stream after the current chunk; plain text follows.
    pub fn stop(&mut self) {
        if self.deflater().is_some() {
            self.pending = Some(Switch::Stop);
        } else if self.pending == Some(Switch::Start) {
            self.pending = None;
        }
    }

    /// True while the stream (or what is pending for it) is compressed.
    pub fn compressing(&self) -> bool {
        match self.pending {
            Some(Switch::Start) => true,
            Some(Switch::Stop) => false,
            None => self.deflater().is_some(),
        }
    }

    /// The zlib stream running now, if one is.
    fn deflater(&self) -> Option<&Deflater> {
        self.mccp.as_ref().and_then(|m| m.deflater.as_ref())
    }

    /// Bytes go out as they are: no stream running and no switch pending
    /// (what [`Outbound::encode`] would return borrowed).
    pub fn plain(&self) -> bool {
        self.pending.is_none() && self.deflater().is_none()
    }

    /// True when [`encode`](Outbound::encode) has something to write even
    /// for empty input (a switch is pending).
    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Bytes given to the compressor and bytes it produced so far, over
    /// every compressed stream of this connection.
    pub fn totals(&self) -> (u64, u64) {
        let Some(m) = &self.mccp else {
            return (0, 0);
        };
        let (i, o) = m.deflater.as_ref().map_or((0, 0), Deflater::totals);
        (m.done.0 + i, m.done.1 + o)
    }

    /// The wire bytes for `plain`, then any pending switch.
    pub fn encode<'a>(&mut self, plain: &'a [u8]) -> Cow<'a, [u8]> {
        if self.plain() {
            return Cow::Borrowed(plain);
        }
        let mut out = Vec::with_capacity(plain.len() / 2 + 16);
        match self.mccp.as_mut().and_then(|m| m.deflater.as_mut()) {
            Some(d) => d.compress(plain, &mut out),
            None => out.extend_from_slice(plain),
        }
        match self.pending.take() {
            Some(Switch::Start) => {
                out.extend_from_slice(&[IAC, SB, opt::MCCP2, IAC, SE]);
                self.mccp.get_or_insert_default().deflater = Some(Deflater::new(LEVEL));
            }
            Some(Switch::Stop) => {
                if let Some(m) = self.mccp.as_mut() {
                    if let Some(d) = m.deflater.take() {
                        let (i, o) = d.totals();
                        let before = out.len();
                        d.finish(&mut out);
                        m.done.0 += i;
                        m.done.1 += o + (out.len() - before) as u64;
                    }
                }
            }
            None => {}
        }
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telnet::mccp::{Inflater, Progress};

    const START: [u8; 5] = [IAC, SB, opt::MCCP2, IAC, SE];

    fn inflate(wire: &[u8]) -> (Vec<u8>, Progress) {
        let mut inf = Inflater::new();
        let mut out = Vec::new();
        let p = inf.decompress(wire, &mut out, 1 << 20).unwrap();
        (out, p)
    }

    #[test]
    fn plain_until_started() {
        let mut o = Outbound::default();
        assert!(matches!(o.encode(b"hello"), Cow::Borrowed(b"hello")));
        assert!(!o.compressing());
        o.start();
        assert!(o.compressing() && o.has_pending());
        // The switch follows the chunk it was asked during.
        assert_eq!(o.encode(b"x").as_ref(), [&b"x"[..], &START].concat());
        let wire = o.encode(b"> \xff\xf9").into_owned();
        let (plain, p) = inflate(&wire);
        assert_eq!(plain, b"> \xff\xf9", "each write decodes at once");
        assert_eq!(p, Progress::NeedInput);
    }

    #[test]
    fn plain_only_with_no_stream_and_no_switch_pending() {
        let mut o = Outbound::default();
        assert!(o.plain());
        o.start();
        assert!(!o.plain(), "the start marker is still to go");
        o.encode(b"");
        assert!(!o.plain());
        o.stop();
        // Not compressing any more, but the stream's end is still to go:
        // a write must go through `encode` (an upgrade ends the stream so).
        assert!(!o.compressing() && !o.plain());
        assert!(!o.encode(b"").is_empty());
        assert!(o.plain());
    }

    #[test]
    fn start_on_empty_chunk_writes_the_marker() {
        let mut o = Outbound::default();
        o.start();
        assert_eq!(o.encode(b"").as_ref(), START);
        assert!(!o.has_pending());
        o.start(); // already on: nothing more
        assert!(!o.has_pending());
    }

    #[test]
    fn stop_ends_the_stream_then_plain() {
        let mut o = Outbound::default();
        o.start();
        o.encode(b"");
        let mut wire = o.encode(b"one\r\n").into_owned();
        o.stop();
        wire.extend_from_slice(&o.encode(b"two\r\n"));
        assert!(!o.compressing());
        let (plain, p) = inflate(&wire);
        assert_eq!(plain, b"one\r\ntwo\r\n");
        assert_eq!(p, Progress::StreamEnd(wire.len()));
        assert!(matches!(o.encode(b"three"), Cow::Borrowed(b"three")));
        let (i, w) = o.totals();
        assert_eq!(i, 10);
        assert_eq!(w, wire.len() as u64);
    }

    #[test]
    fn start_then_stop_before_writing_cancels() {
        let mut o = Outbound::default();
        o.start();
        o.stop();
        assert!(!o.has_pending());
        assert!(matches!(o.encode(b"a"), Cow::Borrowed(b"a")));
    }
}
