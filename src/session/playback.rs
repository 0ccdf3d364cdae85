//! The game's output kept for a player who cannot get it now: a detached
//! session's player is away ([`super::detach`]), a paused session relays
//! nothing ([`super::pause`]). Bounded, whole lines, telnet removed.

use std::collections::VecDeque;

use crate::telnet::{self, TelnetEvent};

/// The game's output kept for a player who is away: whole lines, oldest
/// dropped first, telnet removed. It crosses to a new process in an
/// upgrade ([`super::snapshot::DetachedWas`]).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Playback {
    // As bytes in the handover's binary tail, not JSON numbers.
    #[serde(with = "super::encoding::blob::deque")]
    lines: VecDeque<Vec<u8>>,
    #[serde(with = "super::encoding::blob")]
    partial: Vec<u8>,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
    /// Lines dropped to stay within the bounds.
    pub dropped: u64,
    parser: telnet::Parser,
}

impl Playback {
    /// An empty playback bounded by `max_lines` and `max_bytes`.
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        Playback {
            lines: VecDeque::new(),
            partial: Vec::new(),
            bytes: 0,
            max_lines: max_lines.max(1),
            max_bytes: max_bytes.max(1),
            dropped: 0,
            parser: telnet::Parser::new(64),
        }
    }

    /// Records bytes meant for the player (telnet-escaped; negotiation and
    /// commands are dropped, a prompt's GA ends its line).
    pub fn record(&mut self, data: &[u8]) {
        let Playback {
            parser,
            lines,
            partial,
            bytes,
            ..
        } = self;
        let mut done: Vec<Vec<u8>> = Vec::new();
        parser.feed(data, |ev| {
            match ev {
                TelnetEvent::Data(d) => {
                    for piece in d.split_inclusive(|&b| b == b'\n') {
                        partial.extend_from_slice(piece);
                        if piece.last() == Some(&b'\n') {
                            done.push(std::mem::take(partial));
                        }
                    }
                }
                TelnetEvent::Command(c)
                    if (c == telnet::GA || c == telnet::EOR) && !partial.is_empty() =>
                {
                    partial.extend_from_slice(b"\r\n");
                    done.push(std::mem::take(partial));
                }
                _ => {}
            }
            true
        });
        for l in done {
            *bytes += l.len();
            lines.push_back(l);
        }
        // A line longer than the whole budget is kept as its last part.
        if self.partial.len() > self.max_bytes {
            let cut = self.partial.len() - self.max_bytes;
            self.partial.drain(..cut);
        }
        while self.lines.len() > self.max_lines
            || (self.bytes + self.partial.len() > self.max_bytes && !self.lines.is_empty())
        {
            if let Some(l) = self.lines.pop_front() {
                self.bytes -= l.len();
                self.dropped += 1;
            }
        }
    }

    /// Lines kept (a partial last line counts).
    pub fn len(&self) -> usize {
        self.lines.len() + usize::from(!self.partial.is_empty())
    }

    /// True when nothing was kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes + self.partial.len()
    }

    /// Everything kept, telnet-escaped for the player.
    pub fn into_bytes(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes() + 16);
        for l in self.lines.iter().chain(std::iter::once(&self.partial)) {
            telnet::escape_iac(l, &mut out);
        }
        out
    }
}
