//! The session core driven by events alone: no sockets, paused time, every
//! phase transition.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::time::{advance, Instant};

use super::action::{Action, Actions, Ctx};
use super::core::Core;
use super::End;
use crate::config::Config;
use crate::state::{BackendView, Phase, PoolState};

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

#[tokio::test(start_paused = true)]
async fn relays_both_ways() {
    let mut t = T::started("");
    assert_eq!(t.core.phase(), Phase::Relaying);
    let out = t.player("say hi\n");
    assert_eq!(game_text(&out), "say hi\r\n");
    assert!(t.core.game_passthrough(b"You say, \"hi\"\r\n"));
    // Telnet goes the long way: an escaped IAC stays escaped, a prompt's
    // GA passes.
    let out = t.game_bytes(b"a\xff\xff b\r\nprompt>\xff\xf9");
    let bytes: Vec<u8> = out
        .iter()
        .flat_map(|a| match a {
            Action::Player(b) | Action::Notice(b) => b.clone(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(bytes, b"a\xff\xff b\r\nprompt>\xff\xf9");
}

#[tokio::test(start_paused = true)]
async fn crash_holds_with_a_notice_and_input_is_refused() {
    let mut t = T::logged_in("");
    let out = t.crash();
    assert!(matches!(out[0], Action::DropGame));
    assert_eq!(events(&out), ["session.held"]);
    assert_eq!(player_text(&out), "OFFLINE Test MUSH\r\n");
    assert_eq!(t.core.phase(), Phase::Held);
    let out = t.player("say anyone?\n");
    assert_eq!(player_text(&out), "HELD-INPUT\r\n");
    assert_eq!(game_text(&out), "");
    assert_eq!(t.core.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn held_input_is_queued_then_sent_after_the_relogin() {
    let mut t = T::logged_in("[outage]\nqueue_input = true\n");
    t.crash();
    let out = t.player("say one\nsay two\n");
    assert_eq!(player_text(&out), "QUEUED-INPUT\r\nQUEUED-INPUT\r\n");
    assert_eq!(t.core.queued(), 2);
    let out = reconnect(&mut t).await;
    let login = game_text(&out);
    assert!(login.starts_with("connect Alice pw\r\nthink "), "{login:?}");
    assert_eq!(t.core.phase(), Phase::Relogin);
    // The game's MOTD is hidden; the marker logs the player back in.
    let nonce = login.lines().nth(1).unwrap().trim_start_matches("think ");
    let out = t.game(&format!("MOTD\r\n{nonce}\r\n"));
    assert_eq!(player_text(&out), "ONLINE a\r\n");
    assert_eq!(game_text(&out), "say one\r\nsay two\r\n");
    assert_eq!(events(&out), ["session.restored"]);
    assert_eq!(t.core.phase(), Phase::Relaying);
}

/// Bug: a failed re-login flushed the lines typed during it into the
/// connect screen.
#[tokio::test(start_paused = true)]
async fn failed_relogin_keeps_the_queue_back() {
    let mut t = T::logged_in("");
    t.crash();
    reconnect(&mut t).await;
    let out = t.player("page Bob=secret plans\n");
    assert_eq!(game_text(&out), "", "queued during the re-login");
    let out = t.game("Either that player does not exist, or has a different password.\r\n");
    let shown = player_text(&out);
    assert!(shown.contains("RELOGIN-FAILED"), "{shown:?}");
    assert!(shown.contains("1 line(s) you typed"), "{shown:?}");
    assert_eq!(game_text(&out), "", "nothing reaches the connect screen");
    assert_eq!(t.core.user(), None);
    assert_eq!(t.core.queued(), 0);
}

/// Bug: a re-login whose confirmation timed out left a player who was in
/// the game unknown to holdfast, and login_timeout later closed them.
#[tokio::test(start_paused = true)]
async fn relogin_timeout_still_takes_a_late_marker() {
    let mut t = T::logged_in("[listen]\nlogin_timeout = \"30s\"\n");
    t.crash();
    let out = reconnect(&mut t).await;
    let nonce = game_text(&out)
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("think ")
        .to_string();
    advance(Duration::from_secs(10)).await;
    let out = t.timer();
    assert!(player_text(&out).contains("RELOGIN-FAILED"));
    assert_eq!(t.core.user(), None);
    // The quota-starved game answers at last.
    let out = t.game(&format!("{nonce}\r\n"));
    assert_eq!(t.core.user(), Some("Alice"));
    assert!(player_text(&out).contains("ONLINE a"));
    // And login_timeout never closes her.
    advance(Duration::from_secs(60)).await;
    assert_eq!(closed(&t.timer()), None);
}

/// The same for the player's own login: a late marker still counts, and
/// login_timeout asks the game again before closing a player whose login
/// may have worked.
#[tokio::test(start_paused = true)]
async fn first_login_timeout_asks_again_before_closing() {
    let mut t = T::started("[listen]\nlogin_timeout = \"30s\"\n");
    t.player("connect Alice pw\n");
    let out = t.game("Welcome!\r\n");
    assert!(game_text(&out).starts_with("think "));
    advance(Duration::from_secs(10)).await;
    t.timer();
    // Still watching, output flows.
    let out = t.game("The room is dark.\r\n");
    assert_eq!(player_text(&out), "The room is dark.\r\n");
    advance(Duration::from_secs(20)).await;
    let out = t.timer();
    assert_eq!(closed(&out), None, "the login may have worked");
    let again = game_text(&out);
    assert!(again.starts_with("think "), "{again:?}");
    let nonce = again.trim_start_matches("think ").trim_end().to_string();
    t.game(&format!("{nonce}\r\n"));
    assert_eq!(t.core.user(), Some("Alice"));
}

#[tokio::test(start_paused = true)]
async fn login_timeout_closes_a_player_who_never_logged_in() {
    let mut t = T::started("[listen]\nlogin_timeout = \"30s\"\n");
    advance(Duration::from_secs(30)).await;
    let out = t.timer();
    assert_eq!(closed(&out), Some(End::LoginTimeout));
    assert!(player_text(&out).contains("LOGIN-TIMEOUT"));
}

#[tokio::test(start_paused = true)]
async fn login_timeout_is_paused_while_held() {
    let mut t = T::started("[listen]\nlogin_timeout = \"30s\"\n");
    t.crash();
    t.pool.backends[0].up = Some(false);
    advance(Duration::from_secs(120)).await;
    assert_eq!(closed(&t.timer()), None);
    assert_eq!(t.core.phase(), Phase::Held);
}

/// Bug: lines flushed from the queue bypassed login capture.
#[tokio::test(start_paused = true)]
async fn a_queued_connect_is_remembered() {
    let mut t = T::new("[outage]\nqueue_input = true\n");
    t.pool.backends[0].up = Some(false);
    let out = t.step(|c, ctx, p, o| c.start(ctx, p, o));
    assert!(!out.iter().any(|a| matches!(a, Action::Connect(_))));
    t.player("connect Alice pw\n");
    t.pool.backends[0].up = Some(true);
    t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    let out = reconnect(&mut t).await;
    // Queued lines wait for the connect screen (the game has the
    // connection then, and it was not a refusal).
    assert_eq!(game_text(&out), "");
    let out = t.game("Welcome to the test game.\r\n");
    assert_eq!(game_text(&out), "connect Alice pw\r\n");
    let out = t.game("Welcome!\r\n");
    let nonce = game_text(&out)
        .trim_start_matches("think ")
        .trim_end()
        .to_string();
    let out = t.game(&format!("{nonce}\r\n"));
    assert_eq!(events(&out), ["session.login"]);
    assert_eq!(t.core.user(), Some("Alice"));
}

/// Bug: the retry after a hold bypassed the re-login pacer.
#[tokio::test(start_paused = true)]
async fn retry_after_a_hold_is_paced() {
    let mut t = T::logged_in("");
    t.crash();
    // The pacer has a queue of 5 s ahead of this session.
    t.slot_delay = Duration::from_secs(5);
    advance(Duration::from_secs(1)).await;
    let out = t.timer();
    assert!(
        !out.iter().any(|a| matches!(a, Action::Connect(_))),
        "{out:?}"
    );
    let d = t.core.next_deadline(&t.cfg).unwrap();
    assert_eq!(d - Instant::now(), Duration::from_secs(5));
    advance(Duration::from_secs(5)).await;
    let out = t.timer();
    assert!(out.iter().any(|a| matches!(a, Action::Connect(_))));
}

#[tokio::test(start_paused = true)]
async fn failover_leaves_with_quit_and_moves() {
    let mut t = T::logged_in("");
    t.pool.active = "b".into();
    t.pool.epoch = 1;
    let out = t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    assert!(
        matches!(&out[0], Action::Leave { quit } if quit == b"QUIT\r\n"),
        "{out:?}"
    );
    assert!(player_text(&out).contains("MOVING b"));
    let out = reconnect(&mut t).await;
    assert!(game_text(&out).starts_with("connect Alice pw\r\n"));
    assert_eq!(t.core.backend(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn max_hold_ends_the_session() {
    let mut t = T::logged_in("[outage]\nmax_hold = \"1m\"\n");
    t.pool.backends[0].up = Some(false);
    t.pool.backends[1].up = Some(false);
    t.crash();
    advance(Duration::from_secs(59)).await;
    assert_eq!(closed(&t.timer()), None);
    advance(Duration::from_secs(1)).await;
    let out = t.timer();
    assert_eq!(closed(&out), Some(End::MaxHold));
    assert!(player_text(&out).contains("MAX-HOLD"));
}

#[tokio::test(start_paused = true)]
async fn quit_then_close_is_a_quit_and_a_close_while_alive_is_a_boot() {
    let mut t = T::logged_in("");
    t.player("QUIT\n");
    let out = t.step(|c, _, _, o| c.game_closed(o));
    assert_eq!(closed(&out), Some(End::Quit));

    let mut t = T::logged_in("");
    let out = t.step(|c, _, _, o| c.game_closed(o));
    assert!(matches!(&out[..], [Action::AskAlive { backend, .. }] if backend == "a"));
    let out = t.step(|c, ctx, p, o| c.alive(ctx, true, p, o));
    assert_eq!(closed(&out), Some(End::Booted));
}

#[tokio::test(start_paused = true)]
async fn quit_while_held_says_goodbye() {
    let mut t = T::logged_in("");
    t.crash();
    let out = t.player("QUIT\n");
    assert_eq!(closed(&out), Some(End::Quit));
    assert!(player_text(&out).contains("Goodbye"));
}

#[tokio::test(start_paused = true)]
async fn frozen_backend_marked_down_holds_the_session() {
    let mut t = T::logged_in("");
    t.pool.backends[0].up = Some(false);
    let out = t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    assert!(matches!(out[0], Action::DropGame));
    assert_eq!(t.core.phase(), Phase::Held);
    assert!(player_text(&out).contains("OFFLINE"));
}

#[tokio::test(start_paused = true)]
async fn a_login_line_asks_for_a_detached_session_first() {
    let mut t = T::started("");
    let out =
        t.step(|c, ctx, _, o| c.player_data(ctx, b"say before\nconnect Alice pw\nsay after\n", o));
    // The line before goes out, the login waits for the driver's answer,
    // and so does the line after (it goes to whichever session the login
    // ends up in).
    assert!(
        matches!(&out[0], Action::Game(b) if &b[..] == b"say before\r\n"),
        "{out:?}"
    );
    assert!(
        matches!(&out[1], Action::TryResume { creds, .. } if creds.name == "Alice"),
        "{out:?}"
    );
    assert_eq!(game_text(&out), "say before\r\n", "{out:?}");
    // Nobody to resume: the login is an ordinary one, then the line after.
    let out = t.step(|c, ctx, _, o| c.resume_refused(ctx, b"connect Alice pw", o));
    assert_eq!(game_text(&out), "connect Alice pw\r\n");
    let out = t.step(|c, ctx, _, o| c.resume_settled(ctx, o));
    assert_eq!(game_text(&out), "say after\r\n");
    let out = t.game("Welcome!\r\n");
    assert!(
        game_text(&out).starts_with("think "),
        "the login is being watched"
    );
}

#[tokio::test(start_paused = true)]
async fn adopt_keeps_the_game_and_takes_the_new_player() {
    let mut old = T::logged_in("");
    let mut new = T::started("");
    new.core.id = 7;
    let fresh = std::mem::replace(
        &mut new.core,
        Core::new(
            0,
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            &new.cfg,
            0,
        ),
    );
    let out = old.step(move |c, ctx, _, o| {
        c.adopt(
            ctx,
            fresh,
            Duration::from_secs(90),
            b"line one\r\n".to_vec(),
            1,
            2,
            o,
        )
    });
    let shown = player_text(&out);
    assert!(shown.contains("(1m 30s); 1 line(s) follow"), "{shown:?}");
    assert!(shown.contains("2 older line(s)"), "{shown:?}");
    assert!(shown.ends_with("line one\r\n"), "{shown:?}");
    assert_eq!(old.core.id, 7);
    assert_eq!(old.core.user(), Some("Alice"));
    assert!(old.core.has_game());
}

#[test]
fn playback_keeps_whole_lines_within_bounds() {
    use super::playback::Playback;
    let mut p = Playback::new(3, 1024);
    // Split reads, telnet in between, a prompt ended by GA.
    p.record(b"one\r\ntw");
    p.record(b"o\r\n\xff\xfb\x01three\r\nprompt>\xff\xf9four\r\n");
    assert_eq!(p.len(), 3);
    assert_eq!(p.dropped, 2);
    assert_eq!(p.into_bytes(), b"three\r\nprompt>\r\nfour\r\n");

    let mut p = Playback::new(1000, 64);
    for i in 0..100 {
        p.record(format!("line {i:03} of the scene\r\n").as_bytes());
    }
    assert!(p.bytes() <= 64, "{}", p.bytes());
    assert_eq!(p.len() as u64 + p.dropped, 100);
    assert!(p.into_bytes().ends_with(b"line 099 of the scene\r\n"));
}

/// A session that starts on a fenced instance is held, not connected.
#[tokio::test(start_paused = true)]
async fn a_session_starting_fenced_waits() {
    let mut t = T::new("");
    t.pool.fenced = true;
    let out = t.step(|c, ctx, p, o| c.start(ctx, p, o));
    assert!(
        !out.iter().any(|a| matches!(a, Action::Connect(_))),
        "{out:?}"
    );
    assert_eq!(t.core.phase(), Phase::Held);
    t.pool.fenced = false;
    t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    reconnect(&mut t).await;
    assert_eq!(t.core.backend(), Some("a"));
}
