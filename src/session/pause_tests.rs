//! A fenced cluster member's sessions (`PoolState::fenced`): paused with
//! the game kept, then going on under the same term or leaving for the
//! backend the cluster moved to. Events in, actions out, paused time.

use std::time::Duration;

use tokio::time::advance;

use super::action::Action;
use super::tests::{closed, events, game_text, player_text, reconnect, T};
use super::End;
use crate::state::Phase;

const QUEUE: &str = "[outage]\nqueue_input = true\n";

fn left(out: &[Action]) -> bool {
    out.iter()
        .any(|a| matches!(a, Action::Leave { .. } | Action::DropGame))
}

/// Fenced: no quit, no drop; the game's output is kept, the player's lines
/// are queued; nothing reaches the game.
fn paused(extra: &str) -> T {
    let mut t = T::logged_in(extra);
    t.pool.fenced = true;
    let out = t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    assert!(!left(&out), "{out:?}");
    assert_eq!(events(&out), ["session.paused"]);
    assert!(
        player_text(&out).starts_with("[holdfast] Test MUSH is paused"),
        "{out:?}"
    );
    assert!(t.core.paused());
    assert!(t.core.has_game());
    // `status` and `sessions` show it paused, not relaying.
    assert_eq!(t.core.phase(), Phase::Paused);
    // The fast path is off: every byte goes through the core.
    assert!(!t.core.game_passthrough(b"Bob says, \"one\"\r\n"));
    let out = t.game("Bob says, \"one\"\r\nBob says, \"two\"\r\n");
    assert_eq!(player_text(&out), "", "kept, not sent: {out:?}");
    let out = t.player("say while paused\n");
    assert_eq!(game_text(&out), "", "{out:?}");
    assert_eq!(player_text(&out), "", "queued without a word: {out:?}");
    assert_eq!(t.core.queued(), 1);
    // A telnet command of the player's does not reach the game either.
    let out = t.step(|c, ctx, _, o| c.player_data(ctx, b"\xff\xf1", o));
    assert_eq!(game_text(&out), "", "{out:?}");
    t
}

/// The lease comes back under the same term: the kept lines reach the
/// player and the queued line the game, once each, in that order.
#[tokio::test(start_paused = true)]
async fn a_pause_under_the_same_term_goes_on() {
    let mut t = paused(QUEUE);
    advance(Duration::from_secs(30)).await;
    // Still fenced: a timer changes nothing (no hold, no connect).
    let out = t.timer();
    assert!(out.is_empty(), "{out:?}");
    t.pool.fenced = false;
    let out = t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    assert!(!left(&out), "{out:?}");
    assert_eq!(events(&out), ["session.unpaused"]);
    let kept = out
        .iter()
        .position(|a| matches!(a, Action::Player(b) if b.starts_with(b"Bob says")))
        .expect("the kept lines");
    let sent = out
        .iter()
        .position(|a| matches!(a, Action::Game(_)))
        .expect("the queued line");
    assert!(kept < sent, "{out:?}");
    assert_eq!(
        player_text(&out),
        "Bob says, \"one\"\r\nBob says, \"two\"\r\n"
    );
    assert_eq!(game_text(&out), "say while paused\r\n");
    assert!(!t.core.paused());
    assert_eq!(t.core.phase(), Phase::Relaying);
    assert_eq!(t.core.queued(), 0);
    // And on as before.
    assert!(t.core.game_passthrough(b"x\r\n"));
    assert_eq!(game_text(&t.player("say again\n")), "say again\r\n");
    let ev = out.iter().find_map(|a| match a {
        Action::Emit(e) if e.kind == "session.unpaused" => Some(e.clone()),
        _ => None,
    });
    let v = serde_json::Value::Object(ev.unwrap().fields);
    assert_eq!(v["paused_ms"], 30_000, "{v}");
    assert_eq!(
        (v["kept"].as_u64(), v["queued"].as_u64()),
        (Some(2), Some(1))
    );
}

/// The cluster moved while this instance was cut off: the kept lines
/// first, then the old backend's quit; held until the fence lifts, then
/// logged in on the new backend, where the queued line goes.
#[tokio::test(start_paused = true)]
async fn a_pause_ends_in_a_move_when_the_cluster_moved() {
    let mut t = paused(QUEUE);
    t.pool.active = "b".into();
    t.pool.epoch += 1;
    let out = t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    let kept = out
        .iter()
        .position(|a| matches!(a, Action::Player(b) if b.starts_with(b"Bob says")))
        .expect("the kept lines");
    let quit = out
        .iter()
        .position(|a| matches!(a, Action::Leave { quit } if quit == b"QUIT\r\n"))
        .expect("the quit");
    assert!(kept < quit, "{out:?}");
    assert!(!t.core.paused());
    assert_eq!(t.core.phase(), Phase::Held);
    // Fenced still (the others confirm the new term): nothing connects.
    advance(Duration::from_secs(5)).await;
    let out = t.timer();
    assert!(
        !out.iter().any(|a| matches!(a, Action::Connect(_))),
        "{out:?}"
    );
    t.pool.fenced = false;
    t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    let out = reconnect(&mut t).await;
    assert!(
        game_text(&out).starts_with("connect Alice pw\r\n"),
        "{out:?}"
    );
    assert_eq!(t.core.backend(), Some("b"));
}

/// A pause longer than the game's idle timeout: the game closes the
/// connection while alive. Its last words (kept) reach the player, who is
/// disconnected, not held and logged back in.
#[tokio::test(start_paused = true)]
async fn a_game_that_times_a_paused_player_out_has_the_last_word() {
    let mut t = paused(QUEUE);
    t.game("You have been idle too long.\r\n");
    let out = t.step(|c, _, _, o| c.game_closed(o));
    assert!(matches!(&out[..], [Action::AskAlive { .. }]), "{out:?}");
    let out = t.step(|c, ctx, p, o| c.alive(ctx, true, p, o));
    assert!(
        player_text(&out).ends_with("You have been idle too long.\r\n"),
        "{out:?}"
    );
    assert_eq!(closed(&out), Some(End::Booted));
}

/// The game dies during a pause: the kept lines, then the usual hold.
#[tokio::test(start_paused = true)]
async fn a_game_that_dies_during_a_pause_is_an_outage() {
    let mut t = paused(QUEUE);
    let out = t.crash();
    assert!(
        player_text(&out).starts_with("Bob says, \"one\"\r\nBob says, \"two\"\r\nOFFLINE"),
        "{out:?}"
    );
    assert!(!t.core.paused());
    assert_eq!(t.core.phase(), Phase::Held);
}

/// A player who had not logged in is not timed out for a pause.
#[tokio::test(start_paused = true)]
async fn a_pause_stops_the_login_clock() {
    let mut t = T::started("[listen]\nlogin_timeout = \"60s\"\n");
    t.pool.fenced = true;
    t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    assert!(t.core.paused(), "a connect screen relays: it pauses too");
    // The login deadline is not a timer while paused (a passed one would
    // fire at once, again and again).
    assert!(t.core.login_deadline.is_some());
    assert_ne!(t.core.next_deadline(&t.cfg), t.core.login_deadline);
    advance(Duration::from_secs(90)).await;
    assert_eq!(closed(&t.timer()), None);
    t.pool.fenced = false;
    t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    let d = t.core.next_deadline(&t.cfg).expect("the login deadline");
    assert!(
        d >= tokio::time::Instant::now() + Duration::from_secs(55),
        "moved on by the pause"
    );
}

/// A session that was logging back in when the fence came has no game
/// session to keep: it leaves and is held, as before pauses existed.
#[tokio::test(start_paused = true)]
async fn a_session_logging_back_in_is_held_not_paused() {
    let mut t = T::logged_in(QUEUE);
    t.crash();
    let out = reconnect(&mut t).await;
    assert!(game_text(&out).starts_with("connect Alice pw"), "{out:?}");
    assert_eq!(t.core.phase(), Phase::Relogin);
    t.pool.fenced = true;
    let out = t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    assert!(left(&out), "{out:?}");
    assert_eq!(events(&out), ["session.held"]);
    assert!(!t.core.paused());
    assert_eq!(t.core.phase(), Phase::Held);
}

/// A pause crosses an upgrade: still paused, the kept lines and the
/// queued one with it.
#[tokio::test(start_paused = true)]
async fn a_pause_crosses_a_snapshot() {
    let t = paused(QUEUE);
    let bytes = super::snapshot::snapshot(&t.core, false, None, &[]).unwrap();
    let r = super::snapshot::restore(&bytes, &t.cfg).unwrap();
    let mut t2 = T::new(QUEUE);
    t2.core = r.core;
    t2.pool.fenced = true;
    assert!(t2.core.paused());
    assert_eq!(t2.core.queued(), 1);
    t2.pool.fenced = false;
    let out = t2.step(|c, ctx, p, o| c.pool(ctx, p, o));
    assert_eq!(
        player_text(&out),
        "Bob says, \"one\"\r\nBob says, \"two\"\r\n"
    );
    assert_eq!(game_text(&out), "say while paused\r\n");
}

/// A paused player who types the quit command leaves on purpose: the kept
/// output first, then the game gets the quit (not the queued lines), and
/// the session ends once the game closes, as after any quit.
#[tokio::test(start_paused = true)]
async fn a_paused_player_who_quits_is_logged_out_at_the_game() {
    let mut t = paused(QUEUE);
    let out = t.player("QUIT\n");
    assert_eq!(closed(&out), None, "{out:?}");
    assert_eq!(
        player_text(&out),
        "Bob says, \"one\"\r\nBob says, \"two\"\r\n"
    );
    assert_eq!(game_text(&out), "QUIT\r\n", "not the queued line: {out:?}");
    assert!(!t.core.paused());
    let out = t.game("Goodbye. Come back soon!\r\n");
    assert_eq!(player_text(&out), "Goodbye. Come back soon!\r\n");
    let out = t.step(|c, _, _, o| c.game_closed(o));
    assert_eq!(closed(&out), Some(End::Quit));
}

/// The fence still on when the game says goodbye: the session is leaving,
/// it does not pause again.
#[tokio::test(start_paused = true)]
async fn a_paused_player_who_quit_is_not_paused_again() {
    let mut t = paused(QUEUE);
    t.player("QUIT\n");
    let out = t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    assert!(out.is_empty(), "{out:?}");
    assert!(!t.core.paused());
    let out = t.game("Goodbye. Come back soon!\r\n");
    assert_eq!(player_text(&out), "Goodbye. Come back soon!\r\n");
}
