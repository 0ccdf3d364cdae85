//! Player logins: recognising a `connect` line, keeping the credentials
//! (in memory only, never printed, wiped on drop), and rendering the
//! templates that log a player back in and confirm it with a nonce.

use std::fmt;
use std::sync::Arc;

use rand::Rng;
use zeroize::Zeroizing;

use crate::config::{QuitMatch, Templates};
use crate::secret::Secret;

/// A player's login, captured from a `connect` line.
#[derive(Clone)]
pub struct Credentials {
    /// The verb the player used (`connect`, `co`, `ch`, `cd`, ...), in
    /// lower case, replayed so a wizard who connected dark reconnects
    /// dark. A piece of [`LOGIN_VERBS`]: nothing of its own to allocate.
    pub verb: &'static str,
    /// The player name (may contain spaces). Shared: once logged in, the
    /// session's user and the registry's entry are this one string.
    pub name: Arc<str>,
    /// The password.
    pub password: Secret,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("verb", &self.verb)
            .field("name", &self.name)
            .field("password", &"***")
            .finish()
    }
}

/// A word the game takes as a login at its connect screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginVerb {
    /// The full word.
    pub word: &'static str,
    /// The shortest abbreviation the game accepts.
    pub min: usize,
    /// The word creates a new character (`create`): a login only where
    /// the flavor logs the new character in (`templates.create_logs_in`).
    pub creates: bool,
}

/// Every login verb holdfast recognises (the web client masks what follows
/// one): `connect` down to `co`, TinyMUX/PennMUSH `ch` (connect hidden) and
/// `cd` (connect dark), and `create` down to `cr` (TinyMUX net.cpp:2494 and
/// TinyMUSH netcommon.c:2485 compare two letters, PennMUSH bsd.c:4490 any
/// prefix, TeenyMUSH teenymush.pl:868-876 any prefix).
pub const LOGIN_VERBS: &[LoginVerb] = &[
    LoginVerb {
        word: "connect",
        min: 2,
        creates: false,
    },
    LoginVerb {
        word: "ch",
        min: 2,
        creates: false,
    },
    LoginVerb {
        word: "cd",
        min: 2,
        creates: false,
    },
    LoginVerb {
        word: "create",
        min: 2,
        creates: true,
    },
];

/// Every word (each verb and each abbreviation the game accepts), lower
/// case: the list the web client masks, made from [`LOGIN_VERBS`] so there
/// is one list.
pub fn login_words() -> Vec<String> {
    LOGIN_VERBS
        .iter()
        .flat_map(|v| {
            (v.min..=v.word.len())
                .rev()
                .map(|n| v.word[..n].to_string())
        })
        .collect()
}

impl LoginVerb {
    /// `typed` (this verb or its abbreviation, any case) as the piece of
    /// the word it stands for, in lower case.
    pub fn as_typed(&'static self, typed: &str) -> &'static str {
        &self.word[..typed.len().min(self.word.len())]
    }
}

/// The login verb `w` is (any case, abbreviations allowed).
pub fn login_verb(w: &str) -> Option<&'static LoginVerb> {
    let w = w.to_ascii_lowercase();
    LOGIN_VERBS
        .iter()
        .find(|v| w.len() >= v.min && v.word.starts_with(&w))
}

/// Which login forms a game accepts besides `connect <name> <password>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoginForms {
    /// `connect <name>` with no password.
    pub passwordless: bool,
    /// `create <name> <password>` logs the new character in.
    pub create: bool,
}

impl LoginForms {
    /// The forms the configured game accepts.
    pub fn of(t: &Templates) -> LoginForms {
        LoginForms {
            passwordless: t.passwordless,
            create: t.create_logs_in,
        }
    }
}

/// Parses `connect <name> <password>` or `connect "<name with spaces>"
/// <password>` (and the abbreviations). Returns `None` for anything else,
/// including a connect line without a password (see [`parse_login`]).
pub fn parse_connect(line: &[u8]) -> Option<Credentials> {
    parse_login(line, LoginForms::default()).map(|(c, _)| c)
}

/// Parses a login line in the forms `forms` allows: `connect` as in
/// [`parse_connect`], `connect <name>` if passwordless logins are allowed,
/// `create <name> <password>` if creating logs in. The second value is
/// true for `create`; its credentials carry the verb `connect`, which logs
/// the character back in later.
pub fn parse_login(line: &[u8], forms: LoginForms) -> Option<(Credentials, bool)> {
    let line = std::str::from_utf8(line).ok()?.trim();
    let (verb, rest) = line.split_once(char::is_whitespace)?;
    let v = login_verb(verb)?;
    if v.creates && !forms.create {
        return None;
    }
    let rest = rest.trim_start();
    let (name, pass) = if let Some(q) = rest.strip_prefix('"') {
        let (name, after) = q.split_once('"')?;
        (name.trim(), after.trim())
    } else {
        match rest.split_once(char::is_whitespace) {
            Some((name, after)) => (name, after.trim()),
            None => (rest, ""),
        }
    };
    let need_password = v.creates || !forms.passwordless;
    if name.is_empty() || (pass.is_empty() && need_password) {
        return None;
    }
    let verb = if v.creates {
        "connect"
    } else {
        v.as_typed(verb)
    };
    Some((
        Credentials {
            verb,
            name: name.into(),
            password: Secret::new(pass),
        },
        v.creates,
    ))
}

/// Renders the login template (`{verb}`, `{name}`, `{password}`) plus CRLF.
/// The name is quoted when it has a space. The result holds the password,
/// so it is wiped when dropped.
pub fn render_login(
    template: &str,
    verb: &str,
    name: &str,
    password: &Secret,
) -> Zeroizing<Vec<u8>> {
    let quoted;
    // A template that quotes the name itself (PennMUSH's preset) gets it
    // as-is; otherwise a name with spaces is quoted here.
    let name = if name.contains(' ') && !template.contains("\"{name}\"") {
        quoted = format!("\"{name}\"");
        quoted.as_str()
    } else {
        name
    };
    let mut line = Zeroizing::new(String::with_capacity(template.len() + 32));
    let mut rest = template;
    while let Some(i) = rest.find('{') {
        line.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("{verb}") {
            line.push_str(verb);
            rest = t;
        } else if let Some(t) = tail.strip_prefix("{name}") {
            line.push_str(name);
            rest = t;
        } else if let Some(t) = tail.strip_prefix("{password}") {
            line.push_str(password.expose());
            rest = t;
        } else {
            line.push('{');
            rest = &tail[1..];
        }
    }
    line.push_str(rest);
    if password.expose().is_empty() {
        // A character without a password: `connect One`, no trailing blank.
        let end = line.trim_end().len();
        line.truncate(end);
    }
    line.push_str("\r\n");
    Zeroizing::new(line.as_bytes().to_vec())
}

/// A fresh nonce for a probe or marker: `hf-` and 16 hex digits.
pub fn new_nonce() -> String {
    let n: u64 = rand::rng().random();
    format!("hf-{n:016x}")
}

/// Renders a `{nonce}` template plus CRLF.
pub fn render_nonce(template: &str, nonce: &str) -> Vec<u8> {
    let mut v = template.replace("{nonce}", nonce).into_bytes();
    v.extend_from_slice(b"\r\n");
    v
}

/// `text` without ANSI escape sequences (CSI such as colours `ESC [ 1;31 m`,
/// and two-byte `ESC x`), for matching the login success/failure regexes:
/// Evennia colours its answers, e.g. `ESC[22mESC[31mUsername and/or password
/// is incorrect.ESC[0m`, which a `^Username` regex would otherwise miss.
pub fn strip_ansi(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\x1b') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut it = text.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        // CSI: parameters and intermediates up to a final byte @..~; any
        // other escape is two characters.
        if it.next() == Some('[') {
            for c in it.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Compares two byte strings in time that depends only on their lengths
/// (a password check must not tell how much of a guess was right).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// True if the game will take `line` as its quit command (`templates.quit`,
/// surrounding spaces ignored), matched the way the game does it in the
/// player's phase (`logged_in`): PennMUSH quits only on exact `QUIT`,
/// TinyMUSH and TinyMUX on exact `QUIT` at the connect screen and any case
/// once logged in (see `config/flavor.rs`). A line the game would not take
/// as a quit must not make holdfast treat the next close as one.
pub fn is_quit(line: &[u8], t: &Templates, logged_in: bool) -> bool {
    let line = line.trim_ascii();
    let quit = t.quit.as_bytes();
    match if logged_in {
        t.quit_logged_in
    } else {
        t.quit_connect
    } {
        QuitMatch::Exact => line == quit,
        QuitMatch::AnyCase => line.eq_ignore_ascii_case(quit),
    }
}

/// Delay between marker re-sends while syncing a new connection with the
/// game before logging in (`templates.sync`, Evennia): its Portal hands new
/// connections over at most twice a second.
pub const SYNC_RESEND: std::time::Duration = std::time::Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let c = parse_connect(b"connect Alice alicepw").unwrap();
        assert_eq!(
            (c.verb, &*c.name, c.password.expose()),
            ("connect", "Alice", "alicepw")
        );
        let c = parse_connect(b"CO Alice alicepw").unwrap();
        assert_eq!(
            c.verb, "co",
            "an abbreviation is replayed as typed, in lower case"
        );
        let c = parse_connect(b"  co \"Big Bob\"  pw2 ").unwrap();
        assert_eq!((&*c.name, c.password.expose()), ("Big Bob", "pw2"));
        for v in ["co", "con", "conn", "CONNECT", "ch", "cd"] {
            assert!(
                parse_connect(format!("{v} x y").as_bytes()).is_some(),
                "{v}"
            );
        }
        for bad in [
            "c x y",
            "connectx x y",
            "connect x",
            "connect \"x y\"",
            "create x y",
            "connect",
            "say connect x y",
        ] {
            assert!(parse_connect(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn parses_passwordless_and_create_where_the_game_allows() {
        let none = LoginForms::default();
        let all = LoginForms {
            passwordless: true,
            create: true,
        };
        assert!(parse_login(b"connect One", none).is_none());
        let (c, created) = parse_login(b"connect One", all).unwrap();
        assert_eq!((&*c.name, c.password.expose(), created), ("One", "", false));
        let (c, _) = parse_login(b"co \"Big Bob\"", all).unwrap();
        assert_eq!(&*c.name, "Big Bob");
        assert!(parse_login(b"create Newbie pw", none).is_none());
        let (c, created) = parse_login(b"create Newbie pw", all).unwrap();
        assert_eq!(
            (c.verb, &*c.name, c.password.expose(), created),
            ("connect", "Newbie", "pw", true)
        );
        assert!(parse_login(b"cr Newbie pw", all).unwrap().1);
        assert!(
            parse_login(b"create Newbie", all).is_none(),
            "create needs one"
        );
        assert!(parse_login(b"c Newbie pw", all).is_none(), "ambiguous");
        assert!(LOGIN_VERBS.iter().any(|v| v.word == "connect"));
        let l = render_login(
            "{verb} {name} {password}",
            "connect",
            "One",
            &Secret::new(""),
        );
        assert_eq!(&l[..], b"connect One\r\n");
    }

    #[test]
    fn renders_login() {
        let p = Secret::new("pw");
        let l = render_login("{verb} {name} {password}", "connect", "Big Bob", &p);
        assert_eq!(&l[..], b"connect \"Big Bob\" pw\r\n");
        let l = render_login("connect \"{name}\" {password}", "co", "Big Bob", &p);
        assert_eq!(&l[..], b"connect \"Big Bob\" pw\r\n");
        let l = render_login("connect {name} {password} {x}", "co", "Al", &p);
        assert_eq!(&l[..], b"connect Al pw {x}\r\n");
    }

    #[test]
    fn debug_hides_password() {
        let c = parse_connect(b"connect Alice s3cret").unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn strips_ansi() {
        assert_eq!(
            strip_ansi("\x1b[22m\x1b[31mUsername and/or password is incorrect.\x1b[0m"),
            "Username and/or password is incorrect."
        );
        assert_eq!(
            strip_ansi("You become \x1b[1m\x1b[36mAlice\x1b[0m."),
            "You become Alice."
        );
        assert_eq!(strip_ansi("plain"), "plain");
        assert_eq!(strip_ansi("cut \x1b[1"), "cut ");
    }

    #[test]
    fn quit_follows_the_flavor_per_phase() {
        let cfg = |flavor: &str| {
            crate::config::Config::parse(
                std::path::Path::new("t.toml"),
                &format!(
                    "flavor = \"{flavor}\"\n[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n"
                ),
            )
            .unwrap()
            .templates
        };
        // (flavor, line, at the connect screen, logged in)
        for (f, line, pre, post) in [
            ("pennmush", "QUIT", true, true),
            ("pennmush", "quit", false, false),
            ("pennmush", " QUIT ", true, true),
            ("tinymux", "quit", false, true),
            ("tinymux", "QUIT", true, true),
            ("tinymush", "Quit", false, true),
            ("teenymush", "quit", true, true),
            ("evennia", "QUIT", true, true),
            ("tinymux", "QUITTER", false, false),
        ] {
            let t = cfg(f);
            assert_eq!(
                is_quit(line.as_bytes(), &t, false),
                pre,
                "{f} {line:?} connect screen"
            );
            assert_eq!(
                is_quit(line.as_bytes(), &t, true),
                post,
                "{f} {line:?} logged in"
            );
        }
    }

    #[test]
    fn nonce_shape() {
        let a = new_nonce();
        assert_eq!(a.len(), 19);
        assert_ne!(a, new_nonce());
    }
}
