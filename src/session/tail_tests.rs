//! A line of the game's cut by the end of a read while lines are checked
//! for announcements (`core::Tail`): held back for its rest, so the
//! announcement is checked whole, and never lost or reordered: it goes out
//! before a telnet command, a notice, a close, a hold, a pause, and by
//! `relay::TAIL_WAIT` at the latest; it crosses an upgrade.

use std::time::Duration;

use tokio::time::{advance, Instant};

use super::action::Action;
use super::relay::{TAIL_MAX, TAIL_WAIT};
use super::tests::{game_text, player_text, reconnect, T};
use crate::state::Announcement;

/// Logged in as Alice, with Bob's announcements held back.
fn quiet() -> T {
    let mut t = T::logged_in("");
    t.quiet = vec!["bob".into()];
    t
}

#[tokio::test(start_paused = true)]
async fn an_announcement_cut_by_a_read_is_held_back_whole() {
    let mut t = quiet();
    let out = t.game("Carol says, \"hi\"\r\nBob has con");
    assert_eq!(player_text(&out), "Carol says, \"hi\"\r\n");
    assert!(t.core.holds_tail());
    // The fast path is off while a partial line waits.
    assert!(!t.core.game_passthrough(b"nected.\r\n"));
    let out = t.game("nected.\r\nCarol waves.\r\n");
    assert_eq!(player_text(&out), "Carol waves.\r\n");
    assert!(!t.core.holds_tail());
    // Cut in three, and right before its CR LF.
    t.game("Bob h");
    t.game("as reconnected.\r");
    let out = t.game("\nok\r\n");
    assert_eq!(player_text(&out), "ok\r\n");
}

#[tokio::test(start_paused = true)]
async fn other_lines_cut_by_a_read_come_whole_and_in_order() {
    let mut t = quiet();
    let out = t.game("Carol says, \"hel");
    assert_eq!(player_text(&out), "");
    let out = t.game("lo\"\r\nCarol has con");
    assert_eq!(player_text(&out), "Carol says, \"hello\"\r\n");
    let out = t.game("nected.\r\n");
    assert_eq!(player_text(&out), "Carol has connected.\r\n");
}

#[tokio::test(start_paused = true)]
async fn a_prompt_with_ga_goes_at_once() {
    let mut t = quiet();
    let out = t.game_bytes(b"Bob says, \"hi\"\r\nHP 10> \xff\xf9");
    assert_eq!(
        player_text(&out),
        "Bob says, \"hi\"\r\nHP 10> \u{fffd}\u{fffd}"
    );
    let bytes: Vec<u8> = out
        .iter()
        .filter_map(|a| match a {
            Action::Player(b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(bytes.ends_with(b"HP 10> \xff\xf9"), "{bytes:?}");
    assert!(!t.core.holds_tail());
}

#[tokio::test(start_paused = true)]
async fn a_bare_prompt_goes_by_the_deadline() {
    let mut t = quiet();
    let out = t.game("HP 10> ");
    assert_eq!(player_text(&out), "");
    let due = t.core.next_deadline(&t.cfg).expect("a deadline");
    assert!(due <= Instant::now() + TAIL_WAIT, "{due:?}");
    advance(TAIL_WAIT - Duration::from_millis(1)).await;
    assert_eq!(player_text(&t.timer()), "");
    advance(Duration::from_millis(1)).await;
    assert_eq!(player_text(&t.timer()), "HP 10> ");
    assert!(!t.core.holds_tail());
    // A prompt that grows a byte at a time still goes by the first byte's
    // deadline.
    t.game("a");
    advance(TAIL_WAIT / 2).await;
    t.game("b");
    advance(TAIL_WAIT / 2).await;
    assert_eq!(player_text(&t.timer()), "ab");
}

#[tokio::test(start_paused = true)]
async fn a_long_partial_line_goes_at_once() {
    let mut t = quiet();
    let long = "x".repeat(TAIL_MAX + 1);
    let out = t.game(&long);
    assert_eq!(player_text(&out), long);
    assert!(!t.core.holds_tail());
}

#[tokio::test(start_paused = true)]
async fn nothing_is_held_while_no_name_is() {
    let mut t = T::logged_in("");
    let out = t.game("HP 10> ");
    assert_eq!(player_text(&out), "HP 10> ");
    assert!(t.core.next_deadline(&t.cfg).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_notice_comes_after_the_partial_line() {
    let mut t = quiet();
    t.game("Carol is typ");
    let a = Announcement {
        text: "[holdfast] maintenance at noon".into(),
        backend: None,
    };
    let out = t.step(|c, _, _, o| c.announce(&a, o));
    assert_eq!(
        player_text(&out),
        "Carol is typ\r\n[holdfast] maintenance at noon\r\n"
    );
}

#[tokio::test(start_paused = true)]
async fn the_last_partial_line_comes_before_a_close_is_decided() {
    let mut t = quiet();
    t.game("Goodbye, Ali");
    let out = t.step(|c, _, _, o| c.game_closed(o));
    assert_eq!(player_text(&out), "Goodbye, Ali");
    assert!(
        matches!(out.last(), Some(Action::AskAlive { .. })),
        "{out:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hold_shows_the_partial_line_before_the_offline_notice() {
    let mut t = quiet();
    t.game("Carol is typ");
    // The probe says the game is gone (a frozen host: no close seen).
    t.pool.backends[0].up = Some(false);
    let out = t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    assert_eq!(player_text(&out), "Carol is typ\r\nOFFLINE Test MUSH\r\n");
}

#[tokio::test(start_paused = true)]
async fn a_pause_shows_the_partial_line_before_its_notice() {
    let mut t = quiet();
    t.game("Carol is typ");
    t.pool.fenced = true;
    let out = t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    let text = player_text(&out);
    assert!(
        text.starts_with("Carol is typ\r\n[holdfast] Test MUSH is paused"),
        "{text:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_partial_line_crosses_an_upgrade() {
    let mut t = quiet();
    t.game("Bob has con");
    let bytes = super::snapshot::snapshot(&t.core, false, None, &[]).unwrap();
    t.core = super::snapshot::restore(&bytes, &t.cfg).unwrap().core;
    assert!(t.core.holds_tail());
    let out = t.game("nected.\r\nok\r\n");
    assert_eq!(player_text(&out), "ok\r\n");
    // Without one, nothing is written for it (older states read alike).
    let bytes = super::snapshot::snapshot(&t.core, false, None, &[]).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("\"tail\""));
}

/// A re-login decided in the read that also cuts an announcement: the
/// online notice first, the announcement held back whole.
#[tokio::test(start_paused = true)]
async fn a_relogin_read_that_cuts_an_announcement() {
    let mut t = quiet();
    t.crash();
    t.pool.backends[0].up = Some(true);
    let out = reconnect(&mut t).await;
    let login = game_text(&out);
    let nonce = login.lines().nth(1).unwrap().trim_start_matches("think ");
    let out = t.game(&format!(
        "MOTD\r\n{nonce}\r\nCarol says, \"back\"\r\nBob has con"
    ));
    assert_eq!(player_text(&out), "ONLINE a\r\nCarol says, \"back\"\r\n");
    let out = t.game("nected.\r\n");
    assert_eq!(player_text(&out), "");
}

/// A player coming back to a detached session: the kept output first,
/// the partial line held back (newer) after it, whole with its rest.
#[tokio::test(start_paused = true)]
async fn a_resumed_player_gets_the_partial_line_after_the_kept_output() {
    let mut old = quiet();
    old.game("Carol is typ");
    let new = T::started("");
    let fresh = new.core;
    let out = old.step(move |c, ctx, _, o| {
        c.adopt(
            ctx,
            fresh,
            Duration::from_secs(5),
            b"kept line\r\n".to_vec(),
            1,
            0,
            false,
            o,
        )
    });
    let shown = player_text(&out);
    assert!(shown.ends_with("kept line\r\n"), "{shown:?}");
    assert!(!shown.contains("Carol"), "{shown:?}");
    let out = old.game("ing.\r\n");
    assert_eq!(player_text(&out), "Carol is typing.\r\n");
}

/// Lines are checked only because a piece that might begin the heartbeat's
/// announcement waits: the read that brings its rest is checked, and a
/// piece it leaves that cannot become one goes out at once, so later reads
/// take the fast path again (before, every read that ended mid-line held
/// its last piece, and bulk output stayed on the slow path for good).
#[tokio::test(start_paused = true)]
async fn only_a_piece_that_may_become_an_announcement_waits() {
    let mut t = quiet();
    t.hold_tail = Some(|piece| b"heartbeat"[..piece.len().min(9)].eq_ignore_ascii_case(piece));
    let out = t.game("x\r\nh");
    assert_eq!(player_text(&out), "x\r\n");
    assert!(t.core.holds_tail(), "a piece that begins the name waits");
    let out = t.game("ello world\r\n!\"#$%&'()*+,-./0123");
    assert_eq!(player_text(&out), "hello world\r\n!\"#$%&'()*+,-./0123");
    assert!(
        !t.core.holds_tail(),
        "a piece that cannot be one goes at once"
    );
    assert!(t.core.game_passthrough(b"456789\r\n"));
}
