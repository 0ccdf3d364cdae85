//! The harness for the session core's tests: a core driven by events
//! alone, with no sockets and paused time. The tests are in the
//! `*_tests.rs` files beside this one, one concept each.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::time::{advance, Instant};

use super::action::{Action, Actions, Ctx};
use super::core::Core;
use super::End;
use crate::config::Config;
use crate::state::{BackendView, PoolState};

pub(super) const BASE: &str = r#"
game = "Test MUSH"
[[backends]]
name = "a"
addr = "127.0.0.1:1"
[[backends]]
name = "b"
addr = "127.0.0.1:2"
[client_ip]
mode = "none"
[heartbeat]
interval = "1s"
timeout = "1s"
[relogin]
timeout = "10s"
jitter = "0s"
[notices]
offline = "OFFLINE {game}"
online = "ONLINE {backend}"
relogin_failed = "RELOGIN-FAILED"
held_input = "HELD-INPUT"
queued_input = "QUEUED-INPUT"
failover = "MOVING {backend}"
max_hold = "MAX-HOLD"
login_timeout = "LOGIN-TIMEOUT"
"#;

/// One session core, its config and the pool it sees.
pub(super) struct T {
    pub core: Core,
    pub cfg: Config,
    pub pool: PoolState,
    /// What `relogin_slot` hands out, relative to now.
    pub slot_delay: Duration,
    /// Names whose announcements are held back (`Ctx::quiet`).
    pub quiet: Vec<String>,
    /// `Ctx::hold_tail` (`None`: any piece may wait for its rest).
    pub hold_tail: Option<fn(&[u8]) -> bool>,
}

pub(super) fn view(name: &str, up: Option<bool>) -> BackendView {
    BackendView {
        name: name.into(),
        addr: String::new(),
        up,
        since: SystemTime::now(),
        reason: String::new(),
        degraded: None,
    }
}

impl T {
    pub(super) fn new(extra: &str) -> T {
        let cfg = Config::parse(Path::new("t.toml"), &format!("{BASE}{extra}")).unwrap();
        let peer = "127.0.0.9:5000".parse().unwrap();
        let local = "127.0.0.1:4201".parse().unwrap();
        T {
            core: Core::new(1, peer, local, &cfg, 0),
            pool: PoolState {
                active: "a".into(),
                backends: vec![view("a", Some(true)), view("b", Some(true))],
                epoch: 0,
                fenced: false,
            },
            cfg,
            slot_delay: Duration::ZERO,
            quiet: Vec::new(),
            hold_tail: None,
        }
    }

    pub(super) fn step(
        &mut self,
        f: impl FnOnce(&mut Core, &mut Ctx, &PoolState, &mut Actions),
    ) -> Actions {
        let now = Instant::now();
        let delay = self.slot_delay;
        let mut slot = move || now + delay;
        let names = &self.quiet;
        let quiet = |n: &str| names.iter().any(|q| q.eq_ignore_ascii_case(n));
        let mut ctx = Ctx {
            cfg: &self.cfg,
            now,
            relogin_slot: &mut slot,
            quiet: (!names.is_empty()).then_some(&quiet as &dyn Fn(&str) -> bool),
            hold_tail: self.hold_tail.as_ref().map(|f| f as &dyn Fn(&[u8]) -> bool),
        };
        let mut out = Vec::new();
        f(&mut self.core, &mut ctx, &self.pool, &mut out);
        out
    }

    /// Starts the session; it connects to `a` (answered at once).
    pub(super) fn started(extra: &str) -> T {
        let mut t = T::new(extra);
        let out = t.step(|c, ctx, p, o| c.start(ctx, p, o));
        // The MCCP2 offer, then the connection.
        assert!(
            matches!(&out[..], [Action::Player(offer), Action::Connect(b)] if offer == b"\xff\xfb\x56" && b == "a"),
            "{out:?}"
        );
        t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
        // The connect screen: lines typed from now on go straight through.
        t.game("Welcome to the test game.\r\n");
        t
    }

    /// Bytes from the player; a login is answered as the driver does when
    /// no detached session has that name.
    pub(super) fn player(&mut self, s: &str) -> Actions {
        let s = s.to_string();
        let first = self.step(move |c, ctx, _, o| c.player_data(ctx, s.as_bytes(), o));
        let mut out = Vec::new();
        for a in first {
            match a {
                Action::TryResume { line, .. } => {
                    out.extend(self.step(|c, ctx, _, o| c.resume_refused(ctx, &line, o)));
                    out.extend(self.step(|c, ctx, _, o| c.resume_settled(ctx, o)));
                }
                a => out.push(a),
            }
        }
        out
    }

    pub(super) fn game(&mut self, s: &str) -> Actions {
        self.game_bytes(s.as_bytes())
    }

    pub(super) fn game_bytes(&mut self, s: &[u8]) -> Actions {
        let s = s.to_vec();
        let quiet = !self.quiet.is_empty();
        self.step(move |c, ctx, p, o| {
            // (The driver skips the fast path while names are held back.)
            if quiet || !c.game_passthrough(&s) {
                let used = c.game_data(ctx, &s, p, o);
                assert_eq!(used, s.len());
            } else {
                o.push(Action::Player(s.clone()))
            }
        })
    }

    pub(super) fn timer(&mut self) -> Actions {
        self.step(|c, ctx, p, o| c.timer(ctx, p, o))
    }

    /// Logs in as Alice with the marker the core sends.
    pub(super) fn logged_in(extra: &str) -> T {
        let mut t = T::started(extra);
        let out = t.player("connect Alice pw\n");
        assert_eq!(game_text(&out), "connect Alice pw\r\n");
        let out = t.game("Welcome, Alice!\r\n");
        let marker = game_text(&out);
        assert!(marker.starts_with("think "), "{marker:?}");
        let nonce = marker.trim_start_matches("think ").trim_end().to_string();
        t.game(&format!("{nonce}\r\n"));
        assert_eq!(t.core.user(), Some("Alice"));
        t
    }

    /// The game dies: closed, the probe says dead.
    pub(super) fn crash(&mut self) -> Actions {
        let out = self.step(|c, _, _, o| c.game_closed(o));
        assert!(matches!(&out[..], [Action::AskAlive { .. }]), "{out:?}");
        self.step(|c, ctx, p, o| c.alive(ctx, false, p, o))
    }
}

pub(super) fn player_text(a: &[Action]) -> String {
    a.iter()
        .filter_map(|a| match a {
            Action::Player(b) | Action::Notice(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

pub(super) fn game_text(a: &[Action]) -> String {
    a.iter()
        .filter_map(|a| match a {
            Action::Game(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

pub(super) fn closed(a: &[Action]) -> Option<End> {
    a.iter().find_map(|a| match a {
        Action::Close(e) => Some(*e),
        _ => None,
    })
}

pub(super) fn events(a: &[Action]) -> Vec<&'static str> {
    a.iter()
        .filter_map(|a| match a {
            Action::Emit(e) => Some(e.kind),
            _ => None,
        })
        .collect()
}

/// Runs the timer until the core asks to connect (advancing paused time to
/// each deadline), then answers the connect.
pub(super) async fn reconnect(t: &mut T) -> Actions {
    for _ in 0..10 {
        let d = t.core.next_deadline(&t.cfg).expect("a deadline while held");
        advance(d.saturating_duration_since(Instant::now())).await;
        let out = t.timer();
        if out.iter().any(|a| matches!(a, Action::Connect(_))) {
            let active = t.pool.active.clone();
            return t.step(move |c, ctx, _, o| c.connected(ctx, &active, None, o));
        }
    }
    panic!("never reconnected");
}
