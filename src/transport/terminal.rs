//! Telnet to plain text, for WebSocket players on the terminal
//! subprotocol (or none): the session core keeps speaking telnet, and this
//! adapter stands in for a plain terminal. It refuses every option the
//! core or the game offers or asks for (a terminal has none), drops
//! subnegotiations and commands, and passes the text as UTF-8 (bytes that
//! are not UTF-8 become U+FFFD; a character cut between two writes waits
//! for its end). Input frames become lines: CRLF-terminated, IAC doubled.

use crate::telnet::{escape_iac, write_negotiation, Parser, TelnetEvent, Verb};

/// Longest subnegotiation kept while skipping it.
const MAX_SUBNEG: usize = 8192;

/// The telnet-to-text state of one player (it crosses an upgrade).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct Terminal {
    parser: Parser,
    /// Undecoded bytes: at most the start of one UTF-8 character.
    tail: Vec<u8>,
}

impl Default for Terminal {
    fn default() -> Self {
        Terminal {
            parser: Parser::new(MAX_SUBNEG),
            tail: Vec::new(),
        }
    }
}

impl Terminal {
    /// Turns the core's telnet bytes into text for the player; answers to
    /// negotiations are appended to `reply` (bytes for the core, as if the
    /// player had sent them).
    pub fn outgoing(&mut self, data: &[u8], text: &mut String, reply: &mut Vec<u8>) {
        let tail = &mut self.tail;
        self.parser.feed(data, |ev| {
            match ev {
                TelnetEvent::Data(d) => tail.extend_from_slice(d),
                TelnetEvent::Negotiation { verb, option } => match verb {
                    Verb::Will => write_negotiation(Verb::Dont, option, reply),
                    Verb::Do => write_negotiation(Verb::Wont, option, reply),
                    Verb::Wont | Verb::Dont => {}
                },
                TelnetEvent::Command(_) | TelnetEvent::Subnegotiation { .. } => {}
            }
            true
        });
        decode_utf8(&mut self.tail, text);
    }

    /// Turns one input frame into lines for the core.
    pub fn incoming(frame: &[u8], out: &mut Vec<u8>) {
        let frame = frame.strip_suffix(b"\n").unwrap_or(frame);
        let frame = frame.strip_suffix(b"\r").unwrap_or(frame);
        for line in frame.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            escape_iac(line, out);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Moves the complete UTF-8 of `bytes` into `text`, leaving an unfinished
/// character in `bytes`.
fn decode_utf8(bytes: &mut Vec<u8>, text: &mut String) {
    let mut rest: &[u8] = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                text.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (ok, bad) = rest.split_at(e.valid_up_to());
                text.push_str(std::str::from_utf8(ok).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        text.push('\u{FFFD}');
                        rest = &bad[n..];
                    }
                    None => {
                        rest = bad;
                        break;
                    }
                }
            }
        }
    }
    let keep = rest.len();
    let start = bytes.len() - keep;
    bytes.drain(..start);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telnet::{opt, GA, IAC, SB, SE};

    #[test]
    fn refuses_options_strips_telnet_and_keeps_text() {
        let mut t = Terminal::default();
        let (mut text, mut reply) = (String::new(), Vec::new());
        let mut data = vec![IAC, 251, opt::ECHO, b'h', b'i', IAC, 253, opt::NAWS];
        data.extend_from_slice(&[IAC, SB, opt::GMCP, b'x', IAC, SE, IAC, GA]);
        data.extend_from_slice("é\r\n".as_bytes());
        t.outgoing(&data, &mut text, &mut reply);
        assert_eq!(text, "hié\r\n");
        assert_eq!(reply, vec![IAC, 254, opt::ECHO, IAC, 252, opt::NAWS]);
    }

    #[test]
    fn a_character_cut_between_writes_waits_and_bad_bytes_are_replaced() {
        let mut t = Terminal::default();
        let (mut text, mut reply) = (String::new(), Vec::new());
        let e = "é".as_bytes();
        t.outgoing(&[b'a', e[0]], &mut text, &mut reply);
        assert_eq!(text, "a");
        t.outgoing(&[e[1], 0xFF, 0xFF, b'b', 0xC0, b'c'], &mut text, &mut reply);
        // IAC IAC is a data byte 0xFF: not UTF-8.
        assert_eq!(text, "aé\u{FFFD}b\u{FFFD}c");
        assert!(reply.is_empty());
    }

    #[test]
    fn input_frames_become_lines() {
        let mut out = Vec::new();
        Terminal::incoming(b"look", &mut out);
        Terminal::incoming(b"say a\r\nsay \xFFb\n", &mut out);
        Terminal::incoming(b"", &mut out);
        assert_eq!(out, b"look\r\nsay a\r\nsay \xFF\xFFb\r\n\r\n".to_vec());
    }
}
