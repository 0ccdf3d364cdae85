//! Watching backend output to confirm a login.
//!
//! After a player's own `connect` line ([`Kind::First`]) the output keeps
//! flowing to the player, line by line; the first non-blank line that is
//! not a failure triggers the flavor's marker (`think <nonce>`), whose echo
//! is swallowed. The login counts when the nonce comes back (MUSH servers
//! only answer `think` to a logged-in player) or a success line is seen.
//!
//! After an automatic re-login ([`Kind::Relogin`]) everything the backend
//! says is hidden until the marker's nonce comes back, so the player never
//! sees a second MOTD; on failure the hidden transcript is shown. With
//! `templates.sync` (Evennia) a re-login starts by *syncing*: only the marker
//! is sent (and re-sent until its nonce comes back), then the login and a
//! marker with a fresh nonce.
//!
//! A login that may take a detached session over ([`Kind::Verify`]) is the
//! player's own line, sent to the game on the player's connection, its
//! answer hidden like a re-login's: the game's yes resumes the session, its
//! no is shown as the answer to an ordinary login (see `session::resume`).
//!
//! A re-login the game refuses is answered, after the refusal, with the
//! game's reply to the marker: at a MUSH connect screen an unknown command
//! brings the connect screen back (TinyMUX `welcome_user`, net.cpp:2591;
//! PennMUSH bsd.c:4603; TeenyMUSH `cmd_offline_huh`), on Evennia the
//! nonce's "not available". That reply is hidden too, so the player sees
//! the game's screen once, its refusal, then holdfast's notice.

use memchr::memmem;
use tokio::time::Instant;

use crate::config::Templates;
use crate::login::Credentials;

/// Hidden re-login output kept to show the player on failure.
const TRANSCRIPT_MAX: usize = 32 * 1024;
/// A partial line held back while confirming a first login.
const PARTIAL_MAX: usize = 8 * 1024;

/// What is being confirmed.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// The player's own login; credentials kept if it works.
    First(#[serde(with = "super::encoding::creds")] Credentials),
    /// An automatic re-login; output hidden.
    Relogin,
    /// The player's own login, which takes a detached session of that name
    /// over if the game accepts it; output hidden until then.
    Verify(#[serde(with = "super::encoding::creds")] Credentials),
}

/// The outcome of feeding output to a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still waiting.
    Pending,
    /// The login worked.
    Confirmed,
    /// It did not (why).
    Failed(&'static str),
    /// An automatic re-login met a per-address refusal or throttle
    /// (`templates.refused`): try again later, the credentials are fine.
    Refused,
}

/// An ongoing login confirmation on one backend connection.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Watch {
    /// What is being confirmed.
    pub kind: Kind,
    /// The marker's nonce.
    pub nonce: String,
    /// Whether the marker command was sent.
    pub marker_sent: bool,
    /// Give up at this time (`None` once late: still watching, no limit).
    #[serde(with = "super::encoding::instant_opt")]
    pub deadline: Option<Instant>,
    /// This watch confirms an automatic re-login (its kind may have become
    /// [`Kind::First`] when it went late and the output was shown).
    pub relogin: bool,
    /// The deadline passed without a verdict; output flows, the marker is
    /// still recognised.
    pub late: bool,
    /// The marker was sent again when `login_timeout` came in a late watch.
    pub remarked: bool,
    /// Syncing: waiting for the first marker before sending the login.
    pub syncing: bool,
    /// While syncing: when to send the marker again.
    #[serde(with = "super::encoding::instant_opt")]
    pub resend_at: Option<Instant>,
    partial: Vec<u8>,
    transcript: Vec<u8>,
    failure_seen: bool,
    success_seen: bool,
    /// A refused re-login: the last line of the connect screen, whose
    /// repetition ends the game's (hidden) reply to the marker.
    #[serde(default)]
    screen_tail: Option<Vec<u8>>,
}

impl Watch {
    /// Starts a watch.
    pub fn new(kind: Kind, nonce: String, marker_sent: bool, deadline: Instant) -> Self {
        let relogin = matches!(kind, Kind::Relogin);
        Watch {
            kind,
            nonce,
            marker_sent,
            deadline: Some(deadline),
            relogin,
            late: false,
            remarked: false,
            syncing: false,
            resend_at: None,
            partial: Vec::new(),
            transcript: Vec::new(),
            failure_seen: false,
            success_seen: false,
            screen_tail: None,
        }
    }

    /// Starts a re-login that syncs first: the marker with `nonce` was sent
    /// alone; the login goes out once it comes back.
    pub fn syncing(nonce: String, deadline: Instant, resend_at: Instant) -> Self {
        let mut w = Watch::new(Kind::Relogin, nonce, true, deadline);
        w.syncing = true;
        w.resend_at = Some(resend_at);
        w
    }

    /// The game's output is hidden from the player meanwhile.
    pub fn hiding(&self) -> bool {
        matches!(self.kind, Kind::Relogin | Kind::Verify(_))
    }

    /// The game answered with a failure line.
    pub fn failed(&self) -> bool {
        self.failure_seen
    }

    /// Whether the login may have worked: the marker went out and no
    /// failure came back.
    pub fn may_have_worked(&self) -> bool {
        self.marker_sent && !self.failure_seen
    }

    /// The deadline passed with no verdict: stop holding output back, keep
    /// looking for the marker.
    pub fn go_late(&mut self) {
        self.late = true;
        self.deadline = None;
    }

    /// Feeds backend data (telnet already removed). Bytes for the player go
    /// to `out`; `send_marker` is set when the marker should be sent now,
    /// `send_login` when syncing is over and the login plus the marker (with
    /// the now current [`Watch::nonce`]) should be sent.
    /// Returns the outcome and, once decided, how much of `data` was used
    /// (the rest is ordinary output).
    pub fn feed(
        &mut self,
        data: &[u8],
        t: &Templates,
        out: &mut Vec<u8>,
        send_marker: &mut bool,
        send_login: &mut bool,
    ) -> (Outcome, usize) {
        let mut pos = 0;
        while pos < data.len() {
            let Some(nl) = memchr::memchr(b'\n', &data[pos..]) else {
                let rest = &data[pos..];
                // A partial line is held back in both modes, so a nonce
                // split over two reads is still found.
                if self.partial.len() + rest.len() <= PARTIAL_MAX {
                    self.partial.extend_from_slice(rest);
                } else if self.hiding() {
                    let p = std::mem::take(&mut self.partial);
                    self.keep(&p);
                    self.keep(rest);
                } else {
                    // A huge unterminated line cannot be the marker's echo.
                    out.extend_from_slice(&self.partial);
                    out.extend_from_slice(rest);
                    self.partial.clear();
                }
                return (Outcome::Pending, data.len());
            };
            let end = pos + nl + 1;
            let piece = &data[pos..end];
            pos = end;
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(piece);
            if let Some(o) = self.on_line(&line, t, out, send_marker, send_login) {
                return (o, pos);
            }
        }
        (Outcome::Pending, data.len())
    }

    fn keep(&mut self, b: &[u8]) {
        let room = TRANSCRIPT_MAX.saturating_sub(self.transcript.len());
        self.transcript.extend_from_slice(&b[..b.len().min(room)]);
    }

    fn on_line(
        &mut self,
        line: &[u8],
        t: &Templates,
        out: &mut Vec<u8>,
        send_marker: &mut bool,
        send_login: &mut bool,
    ) -> Option<Outcome> {
        if self.syncing {
            let text = String::from_utf8_lossy(line);
            let text = crate::login::strip_ansi(&text);
            if t.refused.iter().any(|re| re.is_match(text.trim())) {
                return Some(Outcome::Refused);
            }
            // Before the login: everything is connect-screen chatter (hidden);
            // the marker's echo means the game has the connection now.
            self.keep(line);
            if memmem::find(line, self.nonce.as_bytes()).is_some() {
                self.syncing = false;
                self.resend_at = None;
                self.nonce = crate::login::new_nonce();
                *send_login = true;
            }
            return None;
        }
        let trimmed = line.trim_ascii();
        if memmem::find(line, self.nonce.as_bytes()).is_some() {
            // The marker's echo: swallowed either way.
            // A marker that is a `think` is only answered to a logged-in
            // player, so its echo proves the login; one that echoes either
            // way (Evennia's unknown-command reply) needs a success line.
            let proves = t.login_success.is_empty()
                || t.marker
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("think ");
            return Some(if self.failure_seen {
                Outcome::Failed("login rejected")
            } else if proves || self.success_seen {
                Outcome::Confirmed
            } else {
                Outcome::Failed("no login confirmation")
            });
        }
        if let Some(tail) = &self.screen_tail {
            // The game's reply to the marker after a refused re-login: the
            // connect screen again, hidden, up to its last line.
            return (trimmed == &tail[..]).then_some(Outcome::Failed("login rejected"));
        }
        let text = String::from_utf8_lossy(line);
        let text = crate::login::strip_ansi(&text);
        let text = text.trim_end_matches(['\r', '\n']).trim_start();
        // A throttle met by the player's own login (a resume being checked)
        // is the game's answer to that login, not a reason to retry.
        if matches!(self.kind, Kind::Relogin) && t.refused.iter().any(|re| re.is_match(text)) {
            return Some(Outcome::Refused);
        }
        let failed = t.login_failure.iter().any(|re| re.is_match(text));
        let succeeded = !failed && t.login_success.iter().any(|re| re.is_match(text));
        if failed && matches!(self.kind, Kind::Relogin) && self.marker_sent && !t.marker.is_empty()
        {
            // Wait for the marker's reply, to hide it (see the module doc).
            self.screen_tail = last_line(&self.transcript).map(<[u8]>::to_vec);
        }
        if self.hiding() {
            self.keep(line);
        } else {
            out.extend_from_slice(line);
        }
        if failed {
            self.failure_seen = true;
            if self.screen_tail.is_some() {
                return None;
            }
            return Some(Outcome::Failed("login rejected"));
        }
        if succeeded {
            self.success_seen = true;
            if !self.marker_sent || t.marker.is_empty() {
                return Some(Outcome::Confirmed);
            }
        }
        if !self.marker_sent && !t.marker.is_empty() && !text.is_empty() {
            self.marker_sent = true;
            *send_marker = true;
        }
        None
    }

    /// For a first login cut short (the backend went away): the credentials,
    /// if the game's answer so far looked like a success (something other
    /// than a failure line came back). A re-login will tell for sure.
    pub fn probable_credentials(self) -> Option<Credentials> {
        match self.kind {
            Kind::First(c) if self.marker_sent && !self.failure_seen => Some(c),
            _ => None,
        }
    }

    /// The hidden output and any held partial line, for the player after a
    /// failure or a timeout.
    pub fn take_held(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.transcript);
        v.extend_from_slice(&std::mem::take(&mut self.partial));
        v
    }
}

/// The last non-blank line of `text`, trimmed.
fn last_line(text: &[u8]) -> Option<&[u8]> {
    text.split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .rfind(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    fn evennia() -> Config {
        let text = "flavor = \"evennia\"\n[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:4000\"\n";
        Config::parse(Path::new("t.toml"), text).unwrap()
    }

    /// Feeds `data`; returns (outcome, shown, send_marker, send_login).
    fn feed(w: &mut Watch, t: &Templates, data: &str) -> (Outcome, String, bool, bool) {
        let (mut out, mut m, mut l) = (Vec::new(), false, false);
        let (o, _) = w.feed(data.as_bytes(), t, &mut out, &mut m, &mut l);
        (o, String::from_utf8(out).unwrap(), m, l)
    }

    #[test]
    fn evennia_relogin_syncs_first() {
        let cfg = evennia();
        let t = &cfg.templates;
        assert!(t.sync);
        let far = Instant::now() + Duration::from_secs(60);
        let mut w = Watch::syncing("hf-sync".into(), far, far);
        // Connect screen and a DoS-queue notice: hidden, no login yet.
        let r = feed(
            &mut w,
            t,
            "game DoS protection is active.\r\n Welcome to game!\r\n",
        );
        assert_eq!(r, (Outcome::Pending, String::new(), false, false));
        // The echo arrives split over two reads.
        let r = feed(&mut w, t, "Command 'hf-sy");
        assert_eq!(r, (Outcome::Pending, String::new(), false, false));
        let r = feed(&mut w, t, "nc' is not available.\r\n");
        assert_eq!(r, (Outcome::Pending, String::new(), false, true));
        assert!(!w.syncing && w.resend_at.is_none());
        assert_ne!(w.nonce, "hf-sync");
        // A late echo of a resent sync marker is hidden; then the login.
        let nonce = w.nonce.clone();
        let r = feed(&mut w, t, "Command 'hf-sync' is not available.\r\n");
        assert_eq!(r.0, Outcome::Pending);
        let r = feed(
            &mut w,
            t,
            "\r\nYou become \x1b[1m\x1b[36mAlice\x1b[0m.\r\nLimbo\r\n",
        );
        assert_eq!(r, (Outcome::Pending, String::new(), false, false));
        let r = feed(
            &mut w,
            t,
            &format!("Command '{nonce}' is not available.\r\n"),
        );
        assert_eq!(r.0, Outcome::Confirmed);
        assert!(r.1.is_empty());
    }

    #[test]
    fn a_refused_relogin_hides_the_screen_the_marker_brings_back() {
        let text = "[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:4000\"\n";
        let cfg = Config::parse(Path::new("t.toml"), text).unwrap();
        let t = &cfg.templates;
        let far = Instant::now() + Duration::from_secs(60);
        let mut w = Watch::new(Kind::Relogin, "hf-1".into(), true, far);
        let screen = "Welcome!\r\nUse connect <name> <password>.\r\n";
        assert_eq!(feed(&mut w, t, screen).0, Outcome::Pending);
        let r = feed(
            &mut w,
            t,
            "Either that player does not exist, or has a different password.\r\n",
        );
        assert_eq!(r.0, Outcome::Pending, "the marker's reply is awaited");
        let (o, shown, ..) = feed(&mut w, t, screen);
        assert_eq!((o, shown.as_str()), (Outcome::Failed("login rejected"), ""));
        let held = String::from_utf8(w.take_held()).unwrap();
        assert_eq!(held.matches("Welcome!").count(), 1, "{held}");
        assert!(held.contains("different password"), "{held}");
    }

    #[test]
    fn evennia_coloured_failure_is_seen() {
        let cfg = evennia();
        let t = &cfg.templates;
        let far = Instant::now() + Duration::from_secs(60);
        let mut w = Watch::syncing("hf-sync".into(), far, far);
        feed(&mut w, t, "Command 'hf-sync' is not available.\r\n");
        let r = feed(
            &mut w,
            t,
            "\x1b[22m\x1b[31mUsername and/or password is incorrect.\x1b[0m\r\n",
        );
        // Decided once the marker's reply (hidden) is in.
        assert_eq!(r.0, Outcome::Pending);
        let nonce = w.nonce.clone();
        let r = feed(
            &mut w,
            t,
            &format!("Command '{nonce}' is not available.\r\n"),
        );
        assert_eq!(r.0, Outcome::Failed("login rejected"));
        assert!(r.1.is_empty());
        let held = String::from_utf8(w.take_held()).unwrap();
        assert!(!held.contains(&nonce), "{held}");
    }
}
