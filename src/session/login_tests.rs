//! The player's own login: captured for later re-logins (from the queue
//! too), and login_timeout for a player who never logs in.

use std::time::Duration;

use tokio::time::advance;

use super::action::Action;
use super::tests::{closed, events, game_text, player_text, reconnect, T};
use super::End;
use crate::state::Phase;

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
