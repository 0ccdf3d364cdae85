//! What the player told the game once, kept to tell the next backend.
//!
//! A MUD client answers a server's questions (window size, terminal type,
//! charset, GMCP hello) once, at connect. A new backend process after a
//! restart or failover asks again; [`Memory`] holds the player's answers so
//! the proxy can give them without a second round with the player.
//!
//! Only these answers are kept, each bounded: the last NAWS, the TTYPE
//! cycle (MTTS sends up to three different answers), the last CHARSET
//! reply, GMCP `Core.Hello` and the `Core.Supports.*` messages. Other GMCP
//! (`Char.Login` carries a password) is never stored.

use super::{opt, write_subnegotiation};

/// TTYPE subnegotiation: "here is my terminal type".
pub const TTYPE_IS: u8 = 0;
/// TTYPE subnegotiation: "send me your terminal type".
pub const TTYPE_SEND: u8 = 1;
/// CHARSET subnegotiation: the request with the list of charsets.
pub const CHARSET_REQUEST: u8 = 1;
/// CHARSET subnegotiation: the chosen charset.
pub const CHARSET_ACCEPTED: u8 = 2;
/// CHARSET subnegotiation: none of the offered charsets.
pub const CHARSET_REJECTED: u8 = 3;

/// Distinct TTYPE answers kept (MTTS uses three).
const MAX_TTYPES: usize = 4;
/// `Core.Supports.*` messages kept; more are not replayed.
const MAX_SUPPORTS: usize = 16;

/// The player's remembered answers: boxed once the player said one, so a
/// session whose client answers nothing (a bare TCP client, a bot) keeps
/// one pointer, not five empty collections. It crosses an upgrade in the
/// shape it always had (the five fields).
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
#[serde(from = "Answers", into = "Answers")]
pub struct Memory(Option<Box<Answers>>);

/// The answers themselves.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Answers {
    naws: Option<Vec<u8>>,
    ttypes: Vec<Vec<u8>>,
    charset: Option<Vec<u8>>,
    gmcp_hello: Option<Vec<u8>>,
    gmcp_supports: Vec<Vec<u8>>,
}

impl From<Answers> for Memory {
    fn from(a: Answers) -> Memory {
        Memory((a != Answers::default()).then(|| Box::new(a)))
    }
}

impl From<Memory> for Answers {
    fn from(m: Memory) -> Answers {
        m.0.map(|b| *b).unwrap_or_default()
    }
}

impl Memory {
    /// Notes a subnegotiation the player sent (payload without IAC framing).
    pub fn record(&mut self, option: u8, data: &[u8]) {
        if matches!(option, opt::NAWS | opt::TTYPE | opt::CHARSET | opt::GMCP) {
            self.0.get_or_insert_default().record(option, data);
        }
    }

    /// The subnegotiations a client sends right after `option` is agreed,
    /// for a backend that just agreed to it: NAWS the window size, GMCP the
    /// hello and supports list.
    pub fn on_agreed(&self, option: u8, out: &mut Vec<u8>) {
        if let Some(a) = &self.0 {
            a.on_agreed(option, out);
        }
    }

    /// Answers a backend's question (TTYPE SEND, CHARSET REQUEST) from what
    /// the player said before. `ttype_asked` counts the TTYPE questions on
    /// this backend connection (MTTS cycles through the answers). Returns
    /// false when there is nothing to answer with: the player must be asked.
    pub fn answer(
        &self,
        option: u8,
        data: &[u8],
        ttype_asked: &mut u32,
        out: &mut Vec<u8>,
    ) -> bool {
        self.0
            .as_ref()
            .is_some_and(|a| a.answer(option, data, ttype_asked, out))
    }
}

impl Answers {
    fn record(&mut self, option: u8, data: &[u8]) {
        match option {
            opt::NAWS if data.len() == 4 => self.naws = Some(data.to_vec()),
            opt::TTYPE if data.first() == Some(&TTYPE_IS) => {
                let v = &data[1..];
                if self.ttypes.len() < MAX_TTYPES && !self.ttypes.iter().any(|t| t == v) {
                    self.ttypes.push(v.to_vec());
                }
            }
            opt::CHARSET
                if matches!(data.first(), Some(&(CHARSET_ACCEPTED | CHARSET_REJECTED))) =>
            {
                self.charset = Some(data.to_vec());
            }
            opt::GMCP => match gmcp_package(data) {
                b"Core.Hello" => self.gmcp_hello = Some(data.to_vec()),
                b"Core.Supports.Set" => self.gmcp_supports = vec![data.to_vec()],
                b"Core.Supports.Add" | b"Core.Supports.Remove"
                    if self.gmcp_supports.len() < MAX_SUPPORTS =>
                {
                    self.gmcp_supports.push(data.to_vec());
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn on_agreed(&self, option: u8, out: &mut Vec<u8>) {
        match option {
            opt::NAWS => {
                if let Some(n) = &self.naws {
                    write_subnegotiation(opt::NAWS, n, out);
                }
            }
            opt::GMCP => {
                for m in self.gmcp_hello.iter().chain(&self.gmcp_supports) {
                    write_subnegotiation(opt::GMCP, m, out);
                }
            }
            _ => {}
        }
    }

    fn answer(&self, option: u8, data: &[u8], ttype_asked: &mut u32, out: &mut Vec<u8>) -> bool {
        match option {
            opt::TTYPE if data == [TTYPE_SEND] => {
                let Some(last) = self.ttypes.len().checked_sub(1) else {
                    return false;
                };
                // Past the end of the cycle a client repeats its last answer.
                let t = &self.ttypes[(*ttype_asked as usize).min(last)];
                *ttype_asked = ttype_asked.saturating_add(1);
                let mut v = Vec::with_capacity(t.len() + 1);
                v.push(TTYPE_IS);
                v.extend_from_slice(t);
                write_subnegotiation(opt::TTYPE, &v, out);
                true
            }
            opt::CHARSET if data.first() == Some(&CHARSET_REQUEST) => {
                let Some(reply) = &self.charset else {
                    return false;
                };
                let accepted =
                    reply[0] == CHARSET_ACCEPTED && charset_offered(&data[1..], &reply[1..]);
                if accepted {
                    write_subnegotiation(opt::CHARSET, reply, out);
                } else {
                    write_subnegotiation(opt::CHARSET, &[CHARSET_REJECTED], out);
                }
                true
            }
            _ => false,
        }
    }
}

/// The package name of a GMCP message: everything before the first space.
fn gmcp_package(data: &[u8]) -> &[u8] {
    let end = data.iter().position(|&b| b == b' ').unwrap_or(data.len());
    &data[..end]
}

/// Whether `charset` is among those offered in a CHARSET REQUEST payload
/// (after the REQUEST byte): an optional `[TTABLE]<version>` prefix, then a
/// separator byte and the names, each preceded by the separator.
fn charset_offered(mut list: &[u8], charset: &[u8]) -> bool {
    if let Some(rest) = list.strip_prefix(b"[TTABLE]") {
        // The version byte follows; the list itself comes after it.
        list = rest.get(1..).unwrap_or_default();
    }
    let Some((&sep, names)) = list.split_first() else {
        return false;
    };
    names
        .split(|&b| b == sep)
        .any(|n| n.eq_ignore_ascii_case(charset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(option: u8, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_subnegotiation(option, data, &mut v);
        v
    }

    fn ttype_is(s: &str) -> Vec<u8> {
        let mut d = vec![TTYPE_IS];
        d.extend_from_slice(s.as_bytes());
        d
    }

    #[test]
    fn memory_crosses_an_upgrade_in_its_old_shape() {
        let empty = serde_json::to_value(Memory::default()).expect("ser");
        assert_eq!(
            empty,
            serde_json::json!({"naws": null, "ttypes": [], "charset": null,
                "gmcp_hello": null, "gmcp_supports": []})
        );
        let back: Memory = serde_json::from_value(empty).expect("de");
        assert!(back.0.is_none(), "nothing said: nothing allocated");
        let mut m = Memory::default();
        m.record(opt::NAWS, &[0, 80, 0, 24]);
        let v = serde_json::to_value(&m).expect("ser");
        assert_eq!(v["naws"], serde_json::json!([0, 80, 0, 24]));
        let back: Memory = serde_json::from_value(v).expect("de");
        let mut out = Vec::new();
        back.on_agreed(opt::NAWS, &mut out);
        assert_eq!(out, sub(opt::NAWS, &[0, 80, 0, 24]));
    }

    #[test]
    fn naws_keeps_the_last_size() {
        let mut m = Memory::default();
        let mut out = Vec::new();
        m.on_agreed(opt::NAWS, &mut out);
        assert!(out.is_empty(), "nothing known yet");
        m.record(opt::NAWS, &[0, 80, 0, 24]);
        m.record(opt::NAWS, &[0, 132, 0, 50]);
        m.record(opt::NAWS, &[0, 1]); // malformed: ignored
        m.on_agreed(opt::NAWS, &mut out);
        assert_eq!(out, sub(opt::NAWS, &[0, 132, 0, 50]));
    }

    #[test]
    fn naws_with_255_is_escaped() {
        let mut m = Memory::default();
        m.record(opt::NAWS, &[0, 255, 0, 40]);
        let mut out = Vec::new();
        m.on_agreed(opt::NAWS, &mut out);
        assert_eq!(out, vec![255, 250, 31, 0, 255, 255, 0, 40, 255, 240]);
    }

    #[test]
    fn ttype_cycle_replays_in_order_then_repeats_the_last() {
        let mut m = Memory::default();
        let mut n = 0;
        let mut out = Vec::new();
        assert!(!m.answer(opt::TTYPE, &[TTYPE_SEND], &mut n, &mut out));
        for t in ["MUDLET", "XTERM-256COLOR", "MTTS 2825", "MTTS 2825"] {
            m.record(opt::TTYPE, &ttype_is(t));
        }
        let mut answers = Vec::new();
        for _ in 0..5 {
            let mut out = Vec::new();
            assert!(m.answer(opt::TTYPE, &[TTYPE_SEND], &mut n, &mut out));
            answers.push(out);
        }
        let want: Vec<Vec<u8>> = [
            "MUDLET",
            "XTERM-256COLOR",
            "MTTS 2825",
            "MTTS 2825",
            "MTTS 2825",
        ]
        .iter()
        .map(|t| sub(opt::TTYPE, &ttype_is(t)))
        .collect();
        assert_eq!(answers, want);
    }

    #[test]
    fn charset_answer_checks_the_offer() {
        let mut m = Memory::default();
        let mut n = 0;
        let mut out = Vec::new();
        assert!(!m.answer(opt::CHARSET, b"\x01;UTF-8", &mut n, &mut out));
        m.record(opt::CHARSET, b"\x02UTF-8");
        assert!(m.answer(opt::CHARSET, b"\x01;ISO-8859-1;utf-8", &mut n, &mut out));
        assert_eq!(out, sub(opt::CHARSET, b"\x02UTF-8"));
        out.clear();
        assert!(m.answer(opt::CHARSET, b"\x01 ASCII LATIN1", &mut n, &mut out));
        assert_eq!(out, sub(opt::CHARSET, &[CHARSET_REJECTED]));
        out.clear();
        assert!(m.answer(opt::CHARSET, b"\x01[TTABLE]\x01;UTF-8", &mut n, &mut out));
        assert_eq!(out, sub(opt::CHARSET, b"\x02UTF-8"));
    }

    #[test]
    fn gmcp_keeps_hello_and_supports_but_not_logins() {
        let hello: &[u8] = br#"Core.Hello {"client":"x","version":"1"}"#;
        let mut m = Memory::default();
        m.record(opt::GMCP, hello);
        m.record(opt::GMCP, br#"Char.Login {"name":"a","password":"secret"}"#);
        m.record(opt::GMCP, br#"Core.Supports.Set ["Char 1"]"#);
        m.record(opt::GMCP, br#"Core.Supports.Add ["Room 1"]"#);
        m.record(opt::GMCP, b"Core.Ping");
        let mut out = Vec::new();
        m.on_agreed(opt::GMCP, &mut out);
        let mut want = sub(opt::GMCP, hello);
        want.extend(sub(opt::GMCP, br#"Core.Supports.Set ["Char 1"]"#));
        want.extend(sub(opt::GMCP, br#"Core.Supports.Add ["Room 1"]"#));
        assert_eq!(out, want);
        assert!(!String::from_utf8_lossy(&out).contains("secret"));

        // A new Set replaces the list.
        m.record(opt::GMCP, br#"Core.Supports.Set ["Room 1"]"#);
        let mut out = Vec::new();
        m.on_agreed(opt::GMCP, &mut out);
        let mut want = sub(opt::GMCP, hello);
        want.extend(sub(opt::GMCP, br#"Core.Supports.Set ["Room 1"]"#));
        assert_eq!(out, want);
    }
}
