//! The core meeting the game's per-address limits, lazy connect and the
//! announcements of a restore: paused time, no sockets.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{advance, Instant};

use super::action::Action;
use super::tests::{closed, game_text, player_text, reconnect, T};
use crate::state::Phase;

const REFUSED: &str = "Too many connections from your address are waiting to log in.  Please try again in a moment.\r\n";
/// TinyMUX's texts as `templates.refused` (the default flavor here is
/// TinyMUSH, which has none).
const MUX: &str = "[templates]\nrefused = [\"^Too many connections from your address\"]\n";
const SCREEN: &[u8] = b"Welcome to the test game.\r\nconnect <name> <password>\r\n";

fn count(a: &[Action], f: impl Fn(&Action) -> bool) -> usize {
    a.iter().filter(|a| f(a)).count()
}

fn connects(a: &[Action]) -> usize {
    count(a, |a| matches!(a, Action::Connect(_)))
}

/// Runs the timer to the next deadline; returns its actions.
async fn next(t: &mut T) -> Actions {
    let d = t.core.next_deadline(&t.cfg).expect("a deadline");
    advance(d.saturating_duration_since(Instant::now())).await;
    t.timer()
}

use super::action::Actions;

/// The game connection opens, shows its connect screen and lets Alice in:
/// the player sees the welcome alone (the screen was shown already), and
/// the line typed meanwhile reaches the game once.
fn screen_then_welcome(t: &mut T) {
    t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    let mut bytes = SCREEN.to_vec();
    bytes.extend_from_slice(b"Welcome, Alice!\r\n");
    let out = t.game_bytes(&bytes);
    assert_eq!(player_text(&out), "Welcome, Alice!\r\n");
    assert_eq!(game_text(&out), "connect Alice pw\r\n");
}

#[tokio::test(start_paused = true)]
async fn a_refused_first_connection_backs_off_and_tells_the_player_once() {
    let mut t = T::new(MUX);
    t.step(|c, ctx, p, o| c.start(ctx, p, o));
    t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    // Typed before any screen: waits for one.
    let out = t.player("connect Alice pw\n");
    assert_eq!(game_text(&out), "");
    // Not shown, not a failure, not a close: dropped, paced, retried.
    let out = t.game(REFUSED);
    // Backing off crosses an upgrade: still told once, lines still kept.
    let bytes = super::snapshot::snapshot(&t.core, false, None, &[]).unwrap();
    t.core = super::snapshot::restore(&bytes, &t.cfg).unwrap().core;
    let typed = t.player("look\n");
    assert_eq!(game_text(&typed), "");
    assert_eq!(player_text(&typed), "", "kept, no notice");
    let shown = player_text(&out);
    assert!(!shown.contains("Too many"), "{shown:?}");
    assert!(shown.contains("is busy"), "{shown:?}");
    assert!(out.iter().any(|a| matches!(a, Action::DropGame)));
    assert_eq!(count(&out, |a| matches!(a, Action::Refused)), 1);
    assert_eq!(closed(&out), None);
    let mut waits = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let out = next(&mut t).await;
        assert_eq!(connects(&out), 1, "{out:?}");
        waits.push(Instant::now() - t0);
        t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
        let out = t.game(REFUSED);
        assert!(!player_text(&out).contains("busy"), "told once");
    }
    // 1 s, 2 s, 4 s (each plus up to a quarter), the first counted from
    // the first refusal.
    assert!(waits[1] >= Duration::from_secs(2) && waits[1] <= Duration::from_millis(2500));
    assert!(waits[2] >= Duration::from_secs(4) && waits[2] <= Duration::from_secs(5));
    let out = next(&mut t).await;
    assert_eq!(connects(&out), 1);
    let out = t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    assert_eq!(game_text(&out), "", "the line waits for the connect screen");
    let out = t.game("Welcome to the test game.\r\n");
    assert!(player_text(&out).contains("Welcome"));
    assert_eq!(game_text(&out), "connect Alice pw\r\nlook\r\n");
    assert_eq!(t.core.phase(), Phase::Relaying);
}

#[tokio::test(start_paused = true)]
async fn a_close_before_the_screen_while_alive_is_a_refusal_not_a_boot() {
    let mut t = T::new("");
    t.step(|c, ctx, p, o| c.start(ctx, p, o));
    t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    let out = t.step(|c, _, _, o| c.game_closed(o));
    assert!(matches!(&out[..], [Action::AskAlive { .. }]), "{out:?}");
    let out = t.step(|c, ctx, p, o| c.alive(ctx, true, p, o));
    assert_eq!(closed(&out), None, "{out:?}");
    assert!(player_text(&out).contains("is busy"));
    let out = next(&mut t).await;
    assert_eq!(connects(&out), 1);
    // Once the screen came, a close while alive is a boot again.
    t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    t.game("Welcome to the test game.\r\n");
    t.step(|c, _, _, o| c.game_closed(o));
    let out = t.step(|c, ctx, p, o| c.alive(ctx, true, p, o));
    assert_eq!(closed(&out), Some(super::End::Booted));
}

#[tokio::test(start_paused = true)]
async fn a_refused_relogin_keeps_the_player_held_and_logs_in_later() {
    let mut t = T::logged_in(MUX);
    t.crash();
    let out = reconnect(&mut t).await;
    assert!(game_text(&out).contains("connect Alice pw"));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Quiet { name, .. } if &**name == "Alice")));
    let out = t.game(REFUSED);
    assert!(!player_text(&out).contains("Too many"));
    assert!(player_text(&out).contains("is busy"));
    assert!(!player_text(&out).contains("RELOGIN-FAILED"));
    assert_eq!(t.core.phase(), Phase::Held);
    assert_eq!(t.core.user(), Some("Alice"));
    // Typed meanwhile: kept for after the re-login.
    t.player("say back yet?\n");
    // The next try: closed without a word (a connection rate).
    let out = reconnect(&mut t).await;
    assert!(game_text(&out).contains("connect Alice pw"));
    t.step(|c, _, _, o| c.game_closed(o));
    let out = t.step(|c, ctx, p, o| c.alive(ctx, true, p, o));
    assert_eq!(closed(&out), None);
    assert!(!player_text(&out).contains("busy"), "told once");
    let out = reconnect(&mut t).await;
    let marker = game_text(&out);
    let nonce = marker
        .lines()
        .find_map(|l| l.strip_prefix("think "))
        .unwrap()
        .to_string();
    t.game("Welcome back!\r\n");
    let out = t.game(&format!("{nonce}\r\n"));
    assert!(player_text(&out).contains("ONLINE a"), "{out:?}");
    assert_eq!(game_text(&out), "say back yet?\r\n");
    assert_eq!(t.core.phase(), Phase::Relaying);
}

#[tokio::test(start_paused = true)]
async fn lazy_connect_shows_the_cached_screen_and_connects_on_the_first_line() {
    let mut t = T::new("");
    assert!(t.cfg.listen.lazy_connect, "tinymush, client_ip none");
    let screen: Arc<[u8]> = SCREEN.into();
    let out = t.step(|c, ctx, p, o| c.start_with_screen(ctx, p, Some(screen), o));
    assert_eq!(connects(&out), 0);
    assert!(player_text(&out).contains("Welcome to the test game."));
    // A failover before the first line: nothing to move.
    t.pool.active = "b".into();
    t.pool.epoch = 1;
    let out = t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    assert!(out.is_empty(), "{out:?}");
    let out = t.player("connect Alice pw\n");
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Connect(b) if b == "b")),
        "{out:?}"
    );
    assert_eq!(game_text(&out), "");
    let out = t.player("look\n");
    assert_eq!(connects(&out), 0, "one connection");
    let out = t.step(|c, ctx, _, o| c.connected(ctx, "b", None, o));
    assert_eq!(game_text(&out), "");
    // The game's own screen, after its telnet offers and split over two
    // reads: not shown again; then the lines, in order, once.
    let out = t.game_bytes(b"\xff\xfd\x1fWelcome to the test");
    // (The game's telnet offer goes through the policy as it always did.)
    assert!(!player_text(&out).contains("Welcome"), "{out:?}");
    // (The policy's answer to the game's telnet offer comes first.)
    let sent = game_text(&out);
    assert!(sent.ends_with("connect Alice pw\r\nlook\r\n"), "{sent:?}");
    assert_eq!(sent.matches("connect Alice").count(), 1);
    let out = t.game(" game.\r\nconnect <name> <password>\r\nWelcome, Alice!\r\n");
    assert_eq!(player_text(&out), "Welcome, Alice!\r\n");
}

#[tokio::test(start_paused = true)]
async fn lazy_connect_falls_back_without_a_cached_screen_and_survives_a_snapshot() {
    let mut t = T::new("");
    let out = t.step(|c, ctx, p, o| c.start_with_screen(ctx, p, None, o));
    assert_eq!(connects(&out), 1, "no screen cached: connect at once");

    let mut t = T::new("");
    let screen: Arc<[u8]> = SCREEN.into();
    t.step(|c, ctx, p, o| c.start_with_screen(ctx, p, Some(screen), o));
    let bytes = super::snapshot::snapshot(&t.core, false, None, &[]).unwrap();
    t.core = super::snapshot::restore(&bytes, &t.cfg).unwrap().core;
    let out = t.player("connect Alice pw\n");
    assert_eq!(connects(&out), 1);
    screen_then_welcome(&mut t);
}

#[tokio::test(start_paused = true)]
async fn announcements_about_players_being_restored_are_held_back() {
    let mut t = T::logged_in("");
    t.quiet = vec!["bob".into()];
    let out = t.game("Bob has connected.\r\nCarol has connected.\r\nBob says, \"hi\"\r\n");
    assert_eq!(
        player_text(&out),
        "Carol has connected.\r\nBob says, \"hi\"\r\n"
    );
    t.quiet.clear();
    let out = t.game("Bob has disconnected.\r\n");
    assert_eq!(player_text(&out), "Bob has disconnected.\r\n");
}

#[tokio::test(start_paused = true)]
async fn a_refused_lazy_connection_still_hides_the_screen_on_the_next_try() {
    let mut t = T::new(MUX);
    let screen: Arc<[u8]> = SCREEN.into();
    t.step(|c, ctx, p, o| c.start_with_screen(ctx, p, Some(screen), o));
    t.player("connect Alice pw\n");
    t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    let out = t.game(REFUSED);
    assert!(player_text(&out).contains("is busy"));
    let out = next(&mut t).await;
    assert_eq!(connects(&out), 1);
    screen_then_welcome(&mut t);
}

/// A client that sends its login and first command in one packet, with
/// lazy connect and resume both on (the TinyMUX/TinyMUSH defaults): the
/// login is checked against detached sessions first, and the command used
/// to overtake it into the lazy queue (the game saw `look` before the
/// login and the player the connect screen again; found with a real
/// TinyMUX by scripts/realmush.sh).
#[tokio::test(start_paused = true)]
async fn a_login_and_a_command_in_one_read_reach_a_lazy_game_in_order() {
    let mut t = T::new("");
    assert!(t.cfg.listen.lazy_connect && t.cfg.resume.keep.is_some());
    let screen: Arc<[u8]> = SCREEN.into();
    t.step(|c, ctx, p, o| c.start_with_screen(ctx, p, Some(screen), o));
    // The driver's order: the login is checked (no detached session), then
    // what came after it goes on.
    let first = t.step(|c, ctx, _, o| c.player_data(ctx, b"connect Alice pw\nlook\n", o));
    let line = first
        .iter()
        .find_map(|a| match a {
            Action::TryResume { line, .. } => Some(line.to_vec()),
            _ => None,
        })
        .expect("the login is checked for a detached session");
    assert!(
        !first.iter().any(|a| matches!(a, Action::Connect(_))),
        "nothing else happened before the check: {first:?}"
    );
    let out = t.step(|c, ctx, _, o| c.resume_refused(ctx, &line, o));
    assert_eq!(connects(&out), 1);
    let out = t.step(|c, ctx, _, o| c.resume_settled(ctx, o));
    assert_eq!(connects(&out), 0, "one connection");
    t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    let out = t.game_bytes(SCREEN);
    assert_eq!(game_text(&out), "connect Alice pw\r\nlook\r\n");
    assert_eq!(player_text(&out), "", "the screen is not shown twice");
}

/// The same packet when the login does take a detached session over: the
/// command goes to the resumed game session, not to the connection the
/// player arrived on.
#[tokio::test(start_paused = true)]
async fn a_command_after_a_resuming_login_goes_to_the_resumed_session() {
    let mut away = T::logged_in("");
    let mut t = T::started("");
    let first = t.step(|c, ctx, _, o| c.player_data(ctx, b"connect Alice pw\nlook\n", o));
    assert!(first.iter().any(|a| matches!(a, Action::TryResume { .. })));
    assert_eq!(game_text(&first), "", "look waits for the check");
    let arrived = std::mem::replace(
        &mut t.core,
        super::core::Core::new(
            0,
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            &t.cfg,
            0,
        ),
    );
    away.step(move |c, ctx, _, o| {
        c.adopt(
            ctx,
            arrived,
            Duration::from_secs(5),
            Vec::new(),
            0,
            0,
            false,
            o,
        )
    });
    let out = away.step(|c, ctx, _, o| c.resume_settled(ctx, o));
    assert_eq!(game_text(&out), "look\r\n");
}

/// Refused before the heartbeat had the connect screen (holdfast had just
/// started): once the screen is known the player gets it at once, the
/// retry timer goes, and the first line opens the game connection, whose
/// repeat of the screen is hidden.
#[tokio::test(start_paused = true)]
async fn a_session_refused_before_the_screen_was_known_takes_it_at_once() {
    let mut t = T::new(MUX);
    t.step(|c, ctx, p, o| c.start_with_screen(ctx, p, None, o));
    t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    let out = t.game(REFUSED);
    assert!(player_text(&out).contains("is busy"));
    assert!(t.core.wants_screen());
    // Nothing known yet: still waiting.
    let out = t.step(|c, ctx, p, o| c.screen_cached(ctx, p, None, o));
    assert!(out.is_empty(), "{out:?}");
    assert!(t.core.wants_screen());
    let screen: Arc<[u8]> = SCREEN.into();
    let out = t.step(|c, ctx, p, o| c.screen_cached(ctx, p, Some(screen.clone()), o));
    assert!(player_text(&out).contains("connect <name>"), "{out:?}");
    assert_eq!(connects(&out), 0, "the game connection waits for a line");
    assert!(!t.core.wants_screen());
    assert_eq!(t.core.phase(), Phase::Relaying);
    // The backoff's timer is gone; shown once.
    let out = t.step(|c, ctx, p, o| c.screen_cached(ctx, p, Some(screen.clone()), o));
    assert!(out.is_empty(), "{out:?}");
    let out = t.player("connect Alice pw\n");
    assert_eq!(connects(&out), 1);
    screen_then_welcome(&mut t);
}

/// A line typed while refused opens the connection as soon as the screen
/// is known; a logged-in player's re-login never takes the screen.
#[tokio::test(start_paused = true)]
async fn the_cached_screen_opens_a_typed_line_and_skips_logged_in_players() {
    let mut t = T::new(MUX);
    t.step(|c, ctx, p, o| c.start_with_screen(ctx, p, None, o));
    t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    t.game(REFUSED);
    t.player("connect Alice pw\n");
    let screen: Arc<[u8]> = SCREEN.into();
    let out = t.step(|c, ctx, p, o| c.screen_cached(ctx, p, Some(screen.clone()), o));
    assert!(player_text(&out).contains("connect <name>"));
    assert_eq!(connects(&out), 1, "{out:?}");

    let t = T::logged_in(MUX);
    assert!(!t.core.wants_screen());
}

fn screens_seen(a: &[Action]) -> Vec<String> {
    a.iter()
        .filter_map(|a| match a {
            Action::ScreenSeen { text, .. } => Some(String::from_utf8_lossy(text).into_owned()),
            _ => None,
        })
        .collect()
}

/// A player who waits at the game's own connect screen gives holdfast its
/// copy once the game is quiet; one who types first does not (what
/// follows answers the player), nor does a lazy session (it has the
/// copy).
#[tokio::test(start_paused = true)]
async fn the_games_own_screen_is_kept_once_the_game_is_quiet() {
    let mut t = T::new(MUX);
    t.step(|c, ctx, p, o| c.start_with_screen(ctx, p, None, o));
    t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    let out = t.game_bytes(b"\xff\xfb\x01Welcome to the test game.\r\n");
    assert!(screens_seen(&out).is_empty());
    advance(Duration::from_millis(100)).await;
    t.game("connect <name> <password>\r\n");
    advance(Duration::from_millis(100)).await;
    assert!(
        screens_seen(&t.timer()).is_empty(),
        "not quiet for long enough yet"
    );
    let out = next(&mut t).await;
    assert_eq!(
        screens_seen(&out),
        ["Welcome to the test game.\r\nconnect <name> <password>\r\n"]
    );
    assert!(screens_seen(&next_or_none(&mut t).await).is_empty(), "once");

    let mut t = T::new(MUX);
    t.step(|c, ctx, p, o| c.start_with_screen(ctx, p, None, o));
    t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    t.game("Welcome to the test game.\r\n");
    t.player("connect Alice pw\n");
    t.game("Welcome, Alice!\r\n");
    assert!(screens_seen(&next_or_none(&mut t).await).is_empty());

    let mut t = T::new(MUX);
    let screen: Arc<[u8]> = SCREEN.into();
    t.step(|c, ctx, p, o| c.start_with_screen(ctx, p, Some(screen), o));
    t.player("connect Alice pw\n");
    t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    t.game_bytes(SCREEN);
    assert!(screens_seen(&next_or_none(&mut t).await).is_empty());
}

/// Like [`next`], but nothing to do is fine (an empty list).
async fn next_or_none(t: &mut T) -> Actions {
    match t.core.next_deadline(&t.cfg) {
        Some(d) => {
            advance(d.saturating_duration_since(Instant::now())).await;
            t.timer()
        }
        None => Vec::new(),
    }
}
