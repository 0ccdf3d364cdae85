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
//! sees a second MOTD; on failure the hidden transcript is shown.

use memchr::memmem;
use tokio::time::Instant;

use crate::config::Templates;
use crate::login::Credentials;

/// Hidden re-login output kept to show the player on failure.
const TRANSCRIPT_MAX: usize = 32 * 1024;
/// A partial line held back while confirming a first login.
const PARTIAL_MAX: usize = 8 * 1024;

/// What is being confirmed.
pub enum Kind {
    /// The player's own login; credentials kept if it works.
    First(Credentials),
    /// An automatic re-login; output hidden.
    Relogin,
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
}

/// An ongoing login confirmation on one backend connection.
pub struct Watch {
    /// What is being confirmed.
    pub kind: Kind,
    /// The marker's nonce.
    pub nonce: String,
    /// Whether the marker command was sent.
    pub marker_sent: bool,
    /// Give up at this time.
    pub deadline: Instant,
    partial: Vec<u8>,
    transcript: Vec<u8>,
    failure_seen: bool,
    success_seen: bool,
}

impl Watch {
    /// Starts a watch.
    pub fn new(kind: Kind, nonce: String, marker_sent: bool, deadline: Instant) -> Self {
        Watch {
            kind,
            nonce,
            marker_sent,
            deadline,
            partial: Vec::new(),
            transcript: Vec::new(),
            failure_seen: false,
            success_seen: false,
        }
    }

    fn hiding(&self) -> bool {
        matches!(self.kind, Kind::Relogin)
    }

    /// Feeds backend data (telnet already removed). Bytes for the player go
    /// to `out`; `send_marker` is set when the marker should be sent now.
    /// Returns the outcome and, once decided, how much of `data` was used
    /// (the rest is ordinary output).
    pub fn feed(
        &mut self,
        data: &[u8],
        t: &Templates,
        out: &mut Vec<u8>,
        send_marker: &mut bool,
    ) -> (Outcome, usize) {
        let mut pos = 0;
        while pos < data.len() {
            let Some(nl) = memchr::memchr(b'\n', &data[pos..]) else {
                let rest = &data[pos..];
                if self.hiding() {
                    self.keep(rest);
                } else if self.partial.len() + rest.len() <= PARTIAL_MAX {
                    self.partial.extend_from_slice(rest);
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
            if let Some(o) = self.on_line(&line, t, out, send_marker) {
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
    ) -> Option<Outcome> {
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
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']).trim_start();
        let failed = t.login_failure.iter().any(|re| re.is_match(text));
        let succeeded = !failed && t.login_success.iter().any(|re| re.is_match(text));
        if self.hiding() {
            self.keep(line);
        } else {
            out.extend_from_slice(line);
        }
        if failed {
            self.failure_seen = true;
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
