//! A login that may belong to a detached session: the driver is asked
//! first, and `adopt` hands the new player to the old session's game.

use std::time::Duration;

use super::action::Action;
use super::core::Core;
use super::tests::{game_text, player_text, T};

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
        matches!(&out[1], Action::TryResume { creds, .. } if &*creds.name == "Alice"),
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
            false,
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

/// A player whose link dropped while the game was down (the last word
/// they had was the offline notice) and who comes back once the session
/// is logged back in is told the game is back: that notice went to nobody
/// while they were away (the chaos soak found two players waiting for it).
#[tokio::test(start_paused = true)]
async fn a_player_who_left_during_an_outage_hears_the_game_is_back() {
    for told_down in [true, false] {
        let mut old = T::logged_in("");
        let fresh = T::started("").core;
        let out = old.step(move |c, ctx, _, o| {
            c.adopt(
                ctx,
                fresh,
                Duration::from_secs(12),
                Vec::new(),
                0,
                0,
                told_down,
                o,
            )
        });
        let shown = player_text(&out);
        assert!(shown.contains("[holdfast] Welcome back"), "{shown:?}");
        assert_eq!(
            shown.contains("ONLINE a"),
            told_down,
            "told_down {told_down}: {shown:?}"
        );
        assert!(!shown.contains("OFFLINE"), "{shown:?}");
    }
}
