//! The session core coming back: the re-login after a hold or a failover,
//! paced, with the input queued meanwhile; re-logins that fail or time out.

use std::time::Duration;

use tokio::time::{advance, Instant};

use super::action::Action;
use super::tests::{closed, events, game_text, player_text, reconnect, T};
use crate::state::Phase;

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
