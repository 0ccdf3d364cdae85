//! The IRC protocol, as much as the relay needs: parse and write messages
//! (RFC 1459 / 2812 with IRCv3 tags), a line decoder for the socket, text
//! clean-up and splitting, case folding and `nick!user@host` masks.
//!
//! No I/O here: bytes and strings in, values out, so all of it is tested
//! without a server.

use bytes::{Buf, BytesMut};
use tokio_util::codec::Decoder;

/// The longest line the relay reads from the server (IRCv3 allows 8191 bytes
/// of tags plus 512 of message). Longer lines are dropped whole.
pub const MAX_LINE: usize = 8191 + 512;

/// Bytes of text the relay puts in one `PRIVMSG`. An IRC line is at most 512
/// bytes with CR LF, and the server prepends our `:nick!user@host ` when it
/// relays it; 350 leaves room for both with a long host and channel name.
pub const MAX_TEXT: usize = 350;

/// One IRC message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// IRCv3 message tags (`account`, `time`, ...), unescaped.
    pub tags: Vec<(String, String)>,
    /// The source (`nick!user@host` or a server name), if any.
    pub prefix: Option<String>,
    /// The command or numeric, upper-cased.
    pub command: String,
    /// The parameters, the trailing one included.
    pub params: Vec<String>,
}

impl Message {
    /// Parses one line (without CR LF). `None` for an empty or malformed line.
    pub fn parse(line: &str) -> Option<Message> {
        let mut rest = line.trim_end_matches(['\r', '\n']);
        let mut msg = Message::default();
        if let Some(r) = rest.strip_prefix('@') {
            let (tags, r) = r.split_once(' ')?;
            for t in tags.split(';').filter(|t| !t.is_empty()) {
                let (k, v) = t.split_once('=').unwrap_or((t, ""));
                msg.tags.push((k.to_string(), unescape_tag(v)));
            }
            rest = r.trim_start_matches(' ');
        }
        if let Some(r) = rest.strip_prefix(':') {
            let (p, r) = r.split_once(' ')?;
            msg.prefix = Some(p.to_string());
            rest = r.trim_start_matches(' ');
        }
        let (cmd, mut rest) = match rest.split_once(' ') {
            Some((c, r)) => (c, r),
            None => (rest, ""),
        };
        if cmd.is_empty() {
            return None;
        }
        msg.command = cmd.to_ascii_uppercase();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(t) = rest.strip_prefix(':') {
                msg.params.push(t.to_string());
                break;
            }
            match rest.split_once(' ') {
                Some((p, r)) => {
                    msg.params.push(p.to_string());
                    rest = r;
                }
                None => {
                    msg.params.push(rest.to_string());
                    break;
                }
            }
        }
        Some(msg)
    }

    /// Parameter `i`, or "".
    pub fn param(&self, i: usize) -> &str {
        self.params.get(i).map(String::as_str).unwrap_or("")
    }

    /// The value of tag `key`, if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The nick of the source (`nick` of `nick!user@host`), or "".
    pub fn nick(&self) -> &str {
        let p = self.prefix.as_deref().unwrap_or("");
        p.split(['!', '@']).next().unwrap_or("")
    }
}

fn unescape_tag(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut it = v.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(o) => out.push(o),
            None => {}
        }
    }
    out
}

/// Builds a line (with CR LF) from a command and parameters. The last
/// parameter is always sent as trailing (`:`), so it may contain spaces.
/// Parameters are cleaned of CR, LF and NUL: nothing a bus event carries
/// can smuggle a second command onto the wire.
pub fn line(command: &str, params: &[&str]) -> String {
    let mut s = String::from(command);
    for (i, p) in params.iter().enumerate() {
        s.push(' ');
        if i + 1 == params.len() {
            s.push(':');
        }
        s.extend(p.chars().map(|c| match c {
            '\r' | '\n' | '\0' => ' ',
            c => c,
        }));
    }
    s.push_str("\r\n");
    s
}

/// Makes text from the bus safe and readable for IRC: control characters
/// (CR, LF, tabs, mIRC formatting sent by a game) become spaces or go, runs
/// of spaces collapse. The relay adds its own colour codes afterwards.
pub fn clean_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' {
            if !space && !out.is_empty() {
                out.push(' ');
            }
            space = true;
        } else {
            out.push(c);
            space = false;
        }
    }
    while out.ends_with(' ') {
        out.pop();
    }
    out
}

/// Splits `text` into pieces of at most `max` bytes, at spaces where
/// possible and never inside a UTF-8 character.
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let max = max.max(8);
    let mut out = Vec::new();
    let mut rest = text.trim();
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let at = match rest[..cut].rfind(' ') {
            Some(sp) if sp > max / 2 => sp,
            _ => cut,
        };
        out.push(rest[..at].trim_end().to_string());
        rest = rest[at..].trim_start();
    }
    if !rest.is_empty() || out.is_empty() {
        out.push(rest.to_string());
    }
    out
}

/// IRC case folding (RFC 1459: `[]\~` are the upper case of `{}|^`), for
/// comparing nicks and channel names.
pub fn fold(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '[' => '{',
            ']' => '}',
            '\\' => '|',
            '~' => '^',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// True if `target` names a channel rather than a nick.
pub fn is_channel(target: &str) -> bool {
    target.starts_with(['#', '&', '+', '!'])
}

/// Matches `text` against an IRC mask with `*` (any run) and `?` (one
/// character), case-folded: `*!*@staff.example.org` matches
/// `alice!al@staff.example.org`.
pub fn mask_matches(mask: &str, text: &str) -> bool {
    let m: Vec<char> = fold(mask).chars().collect();
    let t: Vec<char> = fold(text).chars().collect();
    // Iterative glob with one backtrack point: linear in practice.
    let (mut mi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if mi < m.len() && (m[mi] == '?' || m[mi] == t[ti]) {
            mi += 1;
            ti += 1;
        } else if mi < m.len() && m[mi] == '*' {
            star = Some((mi, ti));
            mi += 1;
        } else if let Some((sm, st)) = star {
            mi = sm + 1;
            ti = st + 1;
            star = Some((sm, st + 1));
        } else {
            return false;
        }
    }
    m[mi..].iter().all(|&c| c == '*')
}

/// The SASL PLAIN payload, base64, cut into the 400-byte `AUTHENTICATE`
/// chunks the protocol requires (a final `+` when the last chunk is full).
pub fn sasl_plain(user: &str, password: &str) -> Vec<String> {
    use base64::Engine;
    let raw = format!("{user}\0{user}\0{password}");
    let b64 = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
    let mut out: Vec<String> = b64
        .as_bytes()
        .chunks(400)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    if b64.len() % 400 == 0 {
        out.push("+".to_string());
    }
    out
}

/// Splits the socket's bytes into lines: LF-terminated, CR stripped,
/// decoded lossily (servers relay whatever bytes users send). A line longer
/// than [`MAX_LINE`] is skipped whole instead of failing the connection.
#[derive(Debug, Default)]
pub struct LineDecoder {
    /// Skipping the rest of an over-long line.
    discarding: bool,
}

impl Decoder for LineDecoder {
    type Item = String;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<String>, std::io::Error> {
        loop {
            match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    let raw = buf.split_to(i + 1);
                    if std::mem::take(&mut self.discarding) {
                        continue;
                    }
                    let mut l = &raw[..i];
                    if l.last() == Some(&b'\r') {
                        l = &l[..l.len() - 1];
                    }
                    return Ok(Some(String::from_utf8_lossy(l).into_owned()));
                }
                None if buf.len() > MAX_LINE => {
                    buf.advance(buf.len());
                    self.discarding = true;
                    return Ok(None);
                }
                None => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_message() {
        let m = Message::parse(
            "@account=alice;time=2024-01-01T00:00:00Z :alice!al@host PRIVMSG #chan :!status  x ",
        )
        .unwrap();
        assert_eq!(m.tag("account"), Some("alice"));
        assert_eq!(m.prefix.as_deref(), Some("alice!al@host"));
        assert_eq!(m.nick(), "alice");
        assert_eq!(m.command, "PRIVMSG");
        assert_eq!(m.params, vec!["#chan", "!status  x "]);
    }

    #[test]
    fn parses_simple_and_numeric() {
        let m = Message::parse("PING :irc.test").unwrap();
        assert_eq!((m.command.as_str(), m.param(0)), ("PING", "irc.test"));
        let m = Message::parse(":srv 433 * holdfast :Nickname already in use\r\n").unwrap();
        assert_eq!(m.command, "433");
        assert_eq!(m.params, vec!["*", "holdfast", "Nickname already in use"]);
        let m = Message::parse(":srv CAP * LS * :sasl multi-prefix").unwrap();
        assert_eq!(m.params, vec!["*", "LS", "*", "sasl multi-prefix"]);
        let m = Message::parse(":n!u@h JOIN #c").unwrap();
        assert_eq!((m.nick(), m.param(0)), ("n", "#c"));
        assert_eq!(m.param(5), "");
        assert!(Message::parse("").is_none());
        assert!(Message::parse(":onlyprefix").is_none());
    }

    #[test]
    fn tag_escapes() {
        let m = Message::parse("@a=x\\sy\\:z\\\\;b :s CMD").unwrap();
        assert_eq!(m.tag("a"), Some("x y;z\\"));
        assert_eq!(m.tag("b"), Some(""));
    }

    #[test]
    fn line_cannot_inject() {
        assert_eq!(
            line("PRIVMSG", &["#c", "hi\r\nQUIT :bye"]),
            "PRIVMSG #c :hi  QUIT :bye\r\n"
        );
        assert_eq!(line("NICK", &["bot"]), "NICK :bot\r\n");
        assert_eq!(line("QUIT", &[]), "QUIT\r\n");
    }

    #[test]
    fn clean_and_split() {
        assert_eq!(clean_text(" a\r\n\tb\x03c  d "), "a b c d");
        let long = "word ".repeat(100);
        let parts = split_text(&long, 50);
        assert!(parts.iter().all(|p| p.len() <= 50 && !p.is_empty()));
        assert_eq!(parts.join(" ").split(' ').count(), 100);
        let wide = "ü".repeat(40); // 80 bytes, no spaces
        let parts = split_text(&wide, 15);
        assert!(parts.iter().all(|p| p.len() <= 15));
        assert_eq!(parts.concat(), wide);
        assert_eq!(split_text("", 10), vec![""]);
    }

    #[test]
    fn masks() {
        assert!(mask_matches(
            "*!*@staff.example.org",
            "Alice!al@STAFF.example.org"
        ));
        assert!(mask_matches("alice!*@*", "alice!x@y"));
        assert!(!mask_matches("alice!*@*", "alicex!x@y"));
        assert!(mask_matches("a?c*", "abcdef"));
        assert!(mask_matches("[x]*", "{x}!u@h"));
        assert!(!mask_matches("*!*@evil", "alice!al@good"));
        assert!(mask_matches("*", ""));
    }

    #[test]
    fn sasl_payload() {
        assert_eq!(sasl_plain("bot", "pw"), vec!["Ym90AGJvdABwdw=="]);
        // 300 bytes of input = exactly 400 of base64: a "+" must follow.
        let user = "u".repeat(148);
        let out = sasl_plain(&user, "p");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].len(), 400);
        assert_eq!(out[1], "+");
    }

    #[test]
    fn decoder_lines() {
        let mut d = LineDecoder::default();
        let mut b = BytesMut::from(&b"PING :a\r\nPART #x\nhalf"[..]);
        assert_eq!(d.decode(&mut b).unwrap().as_deref(), Some("PING :a"));
        assert_eq!(d.decode(&mut b).unwrap().as_deref(), Some("PART #x"));
        assert_eq!(d.decode(&mut b).unwrap(), None);
        b.extend_from_slice(b" line\xff\r\n");
        assert_eq!(
            d.decode(&mut b).unwrap().as_deref(),
            Some("half line\u{fffd}")
        );
        let mut big = BytesMut::from(vec![b'x'; MAX_LINE + 10].as_slice());
        assert_eq!(d.decode(&mut big).unwrap(), None);
        big.extend_from_slice(b"still the long line\nnext\n");
        assert_eq!(d.decode(&mut big).unwrap().as_deref(), Some("next"));
    }
}
