//! The real servers' per-connection and per-address limits, as options (all
//! off by default), so tests meet what bit holdfast in front of TinyMUX:
//!
//! - `--quit-case any|mux|exact`: how `QUIT` is matched. `any` (default):
//!   any case everywhere; `mux`: exact `QUIT` at the connect screen, any
//!   case once logged in (TinyMUX 2.14, TinyMUSH 4.0); `exact`: only `QUIT`
//!   (PennMUSH).
//! - `--quota N`: each connection may run N commands; the quota refills by
//!   one per whole second in which no input arrived from anyone (TinyMUX
//!   stamps every pass of its main loop as the last time slice, so a busy
//!   game never refills). Lines beyond the quota wait, unanswered.
//! - `--max-preauth N`: at most N connections per address at the connect
//!   screen; the next gets TinyMUX's "Too many connections from your
//!   address are waiting to log in." and is closed.
//! - `--conn-rate N/SECS`: at most N new connections per address per SECS
//!   seconds; more are closed without a word (older TinyMUX 2.14).
//! - `--login-fail-limit N/SECS`: after N failed logins from an address
//!   within SECS seconds, logins from it get TinyMUX's "Too many failed
//!   login attempts from your address." without a password check.
//! - `--banner-delay MS`: the connect screen comes MS milliseconds after
//!   the connection (PennMUSH waits ~2 s for telnet negotiation).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How the game matches its quit command.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QuitCase {
    Any,
    Mux,
    Exact,
}

impl QuitCase {
    pub fn parse(s: &str) -> Option<QuitCase> {
        match s {
            "any" => Some(QuitCase::Any),
            "mux" => Some(QuitCase::Mux),
            "exact" => Some(QuitCase::Exact),
            _ => None,
        }
    }

    /// Whether the line (first word `word`) quits in this phase.
    pub fn quits(self, word: &str, logged_in: bool) -> bool {
        match (self, logged_in) {
            (QuitCase::Any, _) | (QuitCase::Mux, true) => word.eq_ignore_ascii_case("quit"),
            (QuitCase::Mux, false) | (QuitCase::Exact, _) => word == "QUIT",
        }
    }
}

/// `N/SECS`.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub n: usize,
    pub per: Duration,
}

impl Window {
    pub fn parse(s: &str) -> Option<Window> {
        let (n, secs) = s.split_once('/')?;
        Some(Window {
            n: n.trim().parse().ok()?,
            per: Duration::from_secs_f64(secs.trim().parse().ok()?),
        })
    }
}

/// The options.
#[derive(Clone, Debug)]
pub struct Limits {
    pub quit_case: QuitCase,
    pub quota: Option<u32>,
    pub max_preauth: Option<usize>,
    pub conn_rate: Option<Window>,
    pub login_fail: Option<Window>,
    pub banner_delay: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            quit_case: QuitCase::Any,
            quota: None,
            max_preauth: None,
            conn_rate: None,
            login_fail: None,
            banner_delay: None,
        }
    }
}

/// TinyMUX's `max_preauth_sitecons` refusal (ganl_adapter.cpp).
pub const PREAUTH_MSG: &str =
    "Too many connections from your address are waiting to log in.  Please try again in a moment.";

/// Why a new connection is refused.
pub enum Refusal {
    /// Too many at the connect screen: say so, then close.
    Preauth,
    /// Over the connection rate: close without a word.
    Rate,
}

/// Per-address bookkeeping.
#[derive(Default)]
pub struct Tracker {
    conns: HashMap<IpAddr, VecDeque<Instant>>,
    fails: HashMap<IpAddr, VecDeque<Instant>>,
}

fn prune(q: &mut VecDeque<Instant>, per: Duration, now: Instant) {
    while q.front().is_some_and(|t| now.duration_since(*t) >= per) {
        q.pop_front();
    }
}

impl Tracker {
    /// Counts a new connection from `ip` against the rate window; false if
    /// it is over the limit (and then it is not counted).
    pub fn admit_rate(&mut self, lim: &Limits, ip: IpAddr) -> bool {
        let Some(w) = lim.conn_rate else { return true };
        let now = Instant::now();
        let q = self.conns.entry(ip).or_default();
        prune(q, w.per, now);
        if q.len() >= w.n {
            return false;
        }
        q.push_back(now);
        true
    }

    /// Seconds to wait if `ip` spent its failed-login budget.
    pub fn fail_throttled(&mut self, lim: &Limits, ip: IpAddr) -> Option<u64> {
        let w = lim.login_fail?;
        let now = Instant::now();
        let q = self.fails.entry(ip).or_default();
        prune(q, w.per, now);
        if q.len() < w.n {
            return None;
        }
        let oldest = *q.front()?;
        Some((w.per.saturating_sub(now.duration_since(oldest))).as_secs() + 1)
    }

    /// Records a failed login from `ip`.
    pub fn record_fail(&mut self, lim: &Limits, ip: IpAddr) {
        if lim.login_fail.is_some() {
            self.fails.entry(ip).or_default().push_back(Instant::now());
        }
    }
}
