//! The session core when the game goes away: a crash, a backend marked
//! down or a fenced instance holds the player; a quit or a boot ends the
//! session, and so does a hold past its limit.

use std::time::Duration;

use tokio::time::advance;

use super::action::Action;
use super::tests::{closed, events, game_text, player_text, reconnect, T};
use super::End;
use crate::state::Phase;

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
async fn frozen_backend_marked_down_holds_the_session() {
    let mut t = T::logged_in("");
    t.pool.backends[0].up = Some(false);
    let out = t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    assert!(matches!(out[0], Action::DropGame));
    assert_eq!(t.core.phase(), Phase::Held);
    assert!(player_text(&out).contains("OFFLINE"));
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

/// What a hold uses (its start, the time of the next try) is in the
/// session's rare part while it is held, and the part is gone once the
/// session relays again (issue 25: a relaying session keeps none of it).
#[tokio::test(start_paused = true)]
async fn a_restored_session_keeps_nothing_of_its_hold() {
    let mut t = T::logged_in("");
    t.core.tidy();
    assert!(!t.core.has_rare(), "a relaying session has no rare part");
    t.crash();
    t.core.tidy();
    assert!(t.core.has_rare(), "held: since when, and the next try");
    let out = reconnect(&mut t).await;
    let marker = game_text(&out);
    let nonce = marker
        .lines()
        .find_map(|l| l.strip_prefix("think "))
        .expect("the re-login's marker")
        .to_string();
    t.game("Welcome back!\r\n");
    let out = t.game(&format!("{nonce}\r\n"));
    assert!(player_text(&out).contains("ONLINE a"), "{out:?}");
    assert_eq!(t.core.phase(), Phase::Relaying);
    t.core.tidy();
    assert!(!t.core.has_rare(), "logged back in: nothing rare is left");
}

/// A silent player at the cached connect screen (lazy connect) has no
/// rare part either: what every such session has stays in the core.
#[tokio::test(start_paused = true)]
async fn a_silent_player_at_the_cached_screen_has_no_rare_part() {
    let mut t = T::new("");
    assert!(t.cfg.listen.lazy_connect);
    let screen: std::sync::Arc<[u8]> = b"Welcome to the test game.\r\n"[..].into();
    let out = t.step(|c, ctx, p, o| c.start_with_screen(ctx, p, Some(screen), o));
    assert!(
        !out.iter().any(|a| matches!(a, Action::Connect(_))),
        "{out:?}"
    );
    t.core.tidy();
    assert!(!t.core.has_rare());
}
