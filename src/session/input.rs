//! The player's input: telnet events out of the byte stream, and data cut
//! into lines (LF, CRLF, CR NUL or a bare CR end a line), each capped at
//! `limits.max_line` bytes.

use crate::telnet::{self, TelnetEvent, Verb};

/// One item of player input, in the order it arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    /// A complete line, without its terminator.
    Line(Vec<u8>),
    /// A two-byte telnet command (`IAC <cmd>`: NOP, AYT, GA...).
    Command(u8),
    /// `IAC <verb> <option>`.
    Negotiation(Verb, u8),
    /// A telnet subnegotiation (option, payload).
    Subneg(u8, Vec<u8>),
    /// The current line went over the cap and was cut.
    TooLong,
}

/// Splits player input into [`Item`]s.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Input {
    parser: telnet::Parser,
    line: Vec<u8>,
    /// The last data byte was CR: a following LF or NUL belongs to it.
    after_cr: bool,
    /// The current line was cut; drop the rest of it.
    cutting: bool,
}

/// Line buffers above this capacity are given back after each line, so an
/// idle session does not keep the memory of its longest line.
const KEEP_CAPACITY: usize = 256;

impl Input {
    /// A new input splitter; `max_subneg` caps telnet subnegotiations.
    pub fn new(max_subneg: usize) -> Self {
        Input {
            parser: telnet::Parser::new(max_subneg),
            line: Vec::new(),
            after_cr: false,
            cutting: false,
        }
    }

    /// Feeds bytes; pushes complete items to `out`.
    pub fn feed(&mut self, data: &[u8], max_line: usize, out: &mut Vec<Item>) {
        let Input {
            parser,
            line,
            after_cr,
            cutting,
        } = self;
        parser.feed(data, |ev| {
            match ev {
                TelnetEvent::Data(d) => {
                    for &b in d {
                        if *after_cr {
                            *after_cr = false;
                            if b == b'\n' || b == 0 {
                                continue;
                            }
                        }
                        match b {
                            b'\n' | b'\r' => {
                                *after_cr = b == b'\r';
                                if *cutting {
                                    *cutting = false;
                                    line.clear();
                                } else {
                                    out.push(Item::Line(std::mem::take(line)));
                                }
                                if line.capacity() > KEEP_CAPACITY {
                                    line.shrink_to(0);
                                }
                            }
                            _ if *cutting => {}
                            _ if line.len() >= max_line => {
                                *cutting = true;
                                out.push(Item::Line(std::mem::take(line)));
                                out.push(Item::TooLong);
                            }
                            _ => line.push(b),
                        }
                    }
                }
                TelnetEvent::Command(c) => out.push(Item::Command(c)),
                TelnetEvent::Negotiation { verb, option } => {
                    out.push(Item::Negotiation(verb, option))
                }
                TelnetEvent::Subnegotiation { option, data } => {
                    out.push(Item::Subneg(option, data.to_vec()));
                }
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]], max: usize) -> Vec<Item> {
        let mut i = Input::new(1024);
        let mut out = Vec::new();
        for c in chunks {
            i.feed(c, max, &mut out);
        }
        out
    }

    #[test]
    fn terminators() {
        let out = lines(&[b"a\r\nb\nc\r\0d\re\r", b"\nf"], 100);
        let want: Vec<Item> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| Item::Line(s.as_bytes().to_vec()))
            .collect();
        assert_eq!(out, want);
    }

    #[test]
    fn split_and_telnet() {
        let out = lines(&[b"say hel", b"lo\xff\xfb\x1f", b"\r\n"], 100);
        assert_eq!(
            out,
            vec![
                Item::Negotiation(Verb::Will, 31),
                Item::Line(b"say hello".to_vec())
            ]
        );
    }

    #[test]
    fn too_long_is_cut() {
        let out = lines(&[b"abcdefghij", b"klm\nok\n"], 4);
        assert_eq!(
            out,
            vec![
                Item::Line(b"abcd".to_vec()),
                Item::TooLong,
                Item::Line(b"ok".to_vec())
            ]
        );
    }
}
