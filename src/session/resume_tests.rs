//! The core's side of a resume checked by the game (issue 23): the login
//! goes to the game with its answer hidden; the game's yes asks the driver
//! to take the detached session over, its no is shown as it is.

use super::action::Action;
use super::tests::{game_text, player_text, T};

/// A login typed while a detached session has that name: the driver
/// answers [`Action::TryResume`] with `resume_verify`.
fn typed_for_resume(t: &mut T, line: &str) -> Vec<Action> {
    let first =
        t.step(|c, ctx, _, o| c.player_data(ctx, format!("{line}\nsay after\n").as_bytes(), o));
    assert!(
        first.iter().any(|a| matches!(a, Action::TryResume { .. })),
        "{first:?}"
    );
    let mut out = t.step(|c, ctx, _, o| c.resume_verify(ctx, line.as_bytes(), o));
    out.extend(t.step(|c, ctx, _, o| c.resume_settled(ctx, o)));
    out
}

#[tokio::test(start_paused = true)]
async fn the_games_yes_resumes_and_its_answer_stays_hidden() {
    let mut t = T::started("");
    let out = typed_for_resume(&mut t, "connect Alice newpw");
    assert_eq!(
        game_text(&out),
        "connect Alice newpw\r\n",
        "the line after waits"
    );
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Quiet { name, .. } if &**name == "Alice")));
    let out = t.game("*** MOTD: hello\r\nLast connect was from x.\r\n");
    assert_eq!(player_text(&out), "", "hidden");
    let nonce = game_text(&out)
        .trim_start_matches("think ")
        .trim_end()
        .to_string();
    let out = t.game(&format!("{nonce}\r\n"));
    assert!(matches!(&out[..], [Action::Resume]), "{out:?}");
    let (creds, _) = t.core.verified_login().expect("the game's yes");
    assert_eq!(creds.password.expose(), "newpw");
    // Nothing left to take over: an ordinary login, the answer shown, then
    // the line typed after it.
    let out = t.step(|c, ctx, _, o| c.verified_unclaimed(ctx, o));
    assert!(player_text(&out).contains("*** MOTD: hello"));
    assert_eq!(game_text(&out), "say after\r\n");
    assert_eq!(t.core.user(), Some("Alice"));
}

#[tokio::test(start_paused = true)]
async fn the_games_no_is_shown_as_an_ordinary_failed_login() {
    let mut t = T::started("");
    typed_for_resume(&mut t, "connect Alice oldpw");
    let out = t.game("Either that player does not exist, or has a different password.\r\n");
    assert_eq!(
        player_text(&out),
        "Either that player does not exist, or has a different password.\r\n"
    );
    assert!(!out.iter().any(|a| matches!(a, Action::Resume)));
    assert_eq!(
        game_text(&out),
        "say after\r\n",
        "no marker; the queued line"
    );
    assert_eq!(t.core.user(), None);
}

#[tokio::test(start_paused = true)]
async fn guests_and_new_characters_are_not_looked_up() {
    let mut t = T::started("[resume]\nnever = [\"shared\"]\n");
    for line in [
        "connect guest guest",
        "connect Shared pw",
        "create Newbie pw",
    ] {
        let out = t.step(|c, ctx, _, o| c.player_data(ctx, format!("{line}\n").as_bytes(), o));
        assert!(
            !out.iter().any(|a| matches!(a, Action::TryResume { .. })),
            "{line}: {out:?}"
        );
        assert_eq!(game_text(&out), format!("{line}\r\n"));
    }
}

#[tokio::test(start_paused = true)]
async fn with_no_game_the_login_waits_to_be_checked() {
    let mut t = T::new("");
    t.pool.backends[0].up = Some(false);
    t.pool.backends[1].up = Some(false);
    t.step(|c, ctx, p, o| c.start(ctx, p, o));
    let out = typed_for_resume(&mut t, "connect Alice pw");
    assert!(
        player_text(&out).contains("your login will be checked"),
        "{out:?}"
    );
    assert_eq!(game_text(&out), "");
    // The login waits; other lines are held input as ever.
    assert_eq!(t.core.queued(), 1);
    assert!(player_text(&out).contains("HELD-INPUT"), "{out:?}");
}

#[tokio::test(start_paused = true)]
async fn a_lazy_session_checks_the_login_once_the_game_has_it() {
    let mut t = T::new("");
    assert!(t.cfg.listen.lazy_connect);
    let screen: std::sync::Arc<[u8]> = b"Welcome.\r\nconnect <name> <password>\r\n"[..].into();
    t.step(|c, ctx, p, o| c.start_with_screen(ctx, p, Some(screen), o));
    let out = typed_for_resume(&mut t, "connect Alice pw");
    assert!(
        out.iter().any(|a| matches!(a, Action::Connect(_))),
        "{out:?}"
    );
    t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    let out = t.game("Welcome.\r\nconnect <name> <password>\r\n");
    assert_eq!(
        game_text(&out),
        "connect Alice pw\r\n",
        "the line after waits"
    );
    let out = t.game("Last connect was from x.\r\n");
    assert_eq!(player_text(&out), "", "hidden");
    let nonce = game_text(&out)
        .trim_start_matches("think ")
        .trim_end()
        .to_string();
    let out = t.game(&format!("{nonce}\r\n"));
    assert!(matches!(&out[..], [Action::Resume]), "{out:?}");
}

#[tokio::test(start_paused = true)]
async fn a_check_cut_short_by_an_outage_is_made_again() {
    let mut t = T::started("");
    typed_for_resume(&mut t, "connect Alice pw");
    t.step(|c, _, _, o| c.game_closed(o));
    t.step(|c, ctx, p, o| c.alive(ctx, false, p, o));
    assert_eq!(t.core.user(), None, "not logged in on a guess");
    assert_eq!(
        t.core.queued(),
        2,
        "the login first, then the line after it"
    );
}
