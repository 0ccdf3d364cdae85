//! The game's own MSSP, as holdfast learns it: whether the game offers
//! MSSP at all (`IAC WILL MSSP`, seen by the probe), and its last answer
//! (asked by the probe, or by a session on its player's behalf).
//!
//! Process-wide, like the game itself. `front::mssp` builds holdfast's
//! answer from it; the probe's connection feeds it through [`ProbeTelnet`].
//!
//! PennMUSH offers MSSP only to a connection that has shown it speaks
//! telnet: it sends `IAC DO LINEMODE` first and its offers (`WILL MSSP`
//! among them) once the client answered anything. So the probe answers
//! `DO LINEMODE` with `WONT LINEMODE` and `WILL MSSP` with `DO MSSP`, and
//! nothing else: every other negotiation stays unanswered, as before.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::telnet::{opt, write_negotiation, Parser, TelnetEvent, Verb};

/// Marks a variable name in the MSSP subnegotiation.
pub const MSSP_VAR: u8 = 1;
/// Marks a value.
pub const MSSP_VAL: u8 = 2;
/// Longest subnegotiation the probe keeps (PennMUSH's answer fits in
/// its 8 KiB buffer).
const MAX_SUBNEG: usize = 16 * 1024;

/// MSSP variables, each with one or more values.
pub type Vars = Vec<(String, Vec<String>)>;

/// The game's last answer.
static GAME: Mutex<Vars> = Mutex::new(Vec::new());
/// The game offered MSSP to the probe (since this process started).
static OFFERED: AtomicBool = AtomicBool::new(false);

/// Parses an MSSP subnegotiation payload.
pub fn parse(data: &[u8]) -> Vars {
    let mut vars: Vars = Vec::new();
    let mut cur: Option<(u8, Vec<u8>)> = None;
    let push = |kind: u8, b: Vec<u8>, vars: &mut Vars| {
        let s = String::from_utf8_lossy(&b).into_owned();
        match kind {
            MSSP_VAR => vars.push((s, Vec::new())),
            _ => {
                if let Some(v) = vars.last_mut() {
                    v.1.push(s)
                }
            }
        }
    };
    for &b in data {
        if b == MSSP_VAR || b == MSSP_VAL {
            if let Some((k, s)) = cur.take() {
                push(k, s, &mut vars);
            }
            cur = Some((b, Vec::new()));
        } else if let Some((_, s)) = cur.as_mut() {
            s.push(b);
        }
    }
    if let Some((k, s)) = cur {
        push(k, s, &mut vars);
    }
    vars.retain(|(k, _)| !k.is_empty());
    vars
}

/// Remembers the game's answer (a subnegotiation payload).
pub fn game_said(data: &[u8]) {
    let vars = parse(data);
    if !vars.is_empty() {
        *GAME.lock().unwrap_or_else(|e| e.into_inner()) = vars;
    }
}

/// The game's last answer (empty if none came yet).
pub fn game_vars() -> Vars {
    GAME.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether the game offered MSSP to the probe.
pub fn game_offers() -> bool {
    OFFERED.load(Ordering::Relaxed)
}

/// Records that the game offered MSSP to the probe.
pub fn game_offered() {
    OFFERED.store(true, Ordering::Relaxed);
}

/// The probe connection's side of telnet: the two answers above, and the
/// game's MSSP answer handed back for [`game_said`]. No I/O and no
/// globals: bytes in, the bytes to send back out.
#[derive(Debug)]
pub struct ProbeTelnet {
    parser: Parser,
    /// The game offered MSSP on this connection (and `DO MSSP` went out).
    asked: bool,
    /// The game's answer came on this connection.
    answered: bool,
}

impl Default for ProbeTelnet {
    fn default() -> Self {
        ProbeTelnet {
            parser: Parser::new(MAX_SUBNEG),
            asked: false,
            answered: false,
        }
    }
}

impl ProbeTelnet {
    /// Looks at bytes the game sent; appends the answers to `reply`.
    /// Returns the game's MSSP answer (its payload) if one came.
    pub fn feed(&mut self, bytes: &[u8], reply: &mut Vec<u8>) -> Option<Vec<u8>> {
        let (asked, answered) = (&mut self.asked, &mut self.answered);
        let mut answer = None;
        self.parser.feed(bytes, |ev| {
            match ev {
                TelnetEvent::Negotiation {
                    verb: Verb::Do,
                    option: opt::LINEMODE,
                } => write_negotiation(Verb::Wont, opt::LINEMODE, reply),
                TelnetEvent::Negotiation {
                    verb: Verb::Will,
                    option: opt::MSSP,
                } if !*asked => {
                    *asked = true;
                    write_negotiation(Verb::Do, opt::MSSP, reply);
                }
                TelnetEvent::Subnegotiation {
                    option: opt::MSSP,
                    data,
                } => {
                    *answered = true;
                    answer = Some(data.to_vec());
                }
                _ => {}
            }
            true
        });
        answer
    }

    /// The game offered MSSP on this connection.
    pub fn offered(&self) -> bool {
        self.asked
    }

    /// `DO MSSP` went out on this connection and the answer has not come.
    pub fn awaiting_answer(&self) -> bool {
        self.asked && !self.answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_answers_linemode_and_asks_for_mssp_once() {
        let mut t = ProbeTelnet::default();
        let mut reply = Vec::new();
        // PennMUSH: DO LINEMODE first, with the connect screen.
        t.feed(b"\xff\xfd\x22Welcome\r\n", &mut reply);
        assert_eq!(reply, b"\xff\xfc\x22");
        reply.clear();
        // Then its offers; only MSSP is taken up, once.
        assert!(!t.offered());
        t.feed(b"\xff\xfd\x18\xff\xfb\x46\xff\xfb\x46", &mut reply);
        assert_eq!(reply, b"\xff\xfd\x46");
        assert!(t.offered());
        assert!(t.awaiting_answer());
        reply.clear();
        // The answer, split across reads.
        assert_eq!(t.feed(b"\xff\xfa\x46\x01NAME\x02Pe", &mut reply), None);
        assert!(t.awaiting_answer());
        let answer = t.feed(b"nn\x01PORT\x024311\xff\xf0", &mut reply).unwrap();
        assert!(reply.is_empty());
        assert!(!t.awaiting_answer());
        let vars = parse(&answer);
        assert!(
            vars.contains(&("NAME".into(), vec!["Penn".into()])),
            "{vars:?}"
        );
        assert!(
            vars.contains(&("PORT".into(), vec!["4311".into()])),
            "{vars:?}"
        );
    }

    #[test]
    fn parses_many_values() {
        assert_eq!(
            parse(b"\x01A\x02x\x02y\x01\x02z\x01B"),
            vec![
                ("A".to_string(), vec!["x".to_string(), "y".to_string()]),
                ("B".to_string(), vec![])
            ]
        );
    }
}
