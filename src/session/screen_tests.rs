//! A lazy session's game connection showing a connect screen other than
//! the cached copy its player got: the copy is out of date
//! ([`Action::ScreenChanged`]); the same screen, or one that only goes on
//! longer, is not.

use std::sync::Arc;

use super::action::Action;
use super::tests::{game_text, player_text, T};

const SCREEN: &[u8] = b"Welcome to the test game.\r\nconnect <name> <password>\r\n";

/// A lazy session (the cached screen shown) whose player typed a login,
/// connected to `a`.
fn lazy() -> T {
    let mut t = T::new("");
    let screen: Arc<[u8]> = SCREEN.into();
    let out = t.step(|c, ctx, p, o| c.start_with_screen(ctx, p, Some(screen), o));
    assert!(player_text(&out).contains("Welcome to the test game."));
    let out = t.player("connect Alice pw\n");
    assert!(
        out.iter().any(|a| matches!(a, Action::Connect(_))),
        "{out:?}"
    );
    t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    t
}

fn changed(out: &[Action]) -> Option<(&str, &[u8])> {
    out.iter().find_map(|a| match a {
        Action::ScreenChanged { backend, shown } => Some((backend.as_str(), &shown[..])),
        _ => None,
    })
}

#[tokio::test(start_paused = true)]
async fn a_changed_screen_marks_the_copy_out_of_date() {
    let mut t = lazy();
    let out = t.game("Welcome to the test game.\r\nNEW: the game moved.\r\n");
    assert_eq!(changed(&out), Some(("a", SCREEN)));
    // The player sees where it differs on; the login goes through.
    assert_eq!(player_text(&out), "NEW: the game moved.\r\n");
    assert_eq!(game_text(&out), "connect Alice pw\r\n");
    // Once only.
    let out = t.game("connect <name> <password>\r\n");
    assert_eq!(changed(&out), None);
}

#[tokio::test(start_paused = true)]
async fn the_same_screen_in_pieces_is_not_a_change() {
    let mut t = lazy();
    let (a, b) = SCREEN.split_at(10);
    let out = t.game_bytes(a);
    assert_eq!(changed(&out), None);
    let mut rest = b.to_vec();
    rest.extend_from_slice(b"Welcome, Alice!\r\n");
    let out = t.game_bytes(&rest);
    assert_eq!(changed(&out), None);
    assert_eq!(player_text(&out), "Welcome, Alice!\r\n");
}

#[tokio::test(start_paused = true)]
async fn a_screen_that_only_goes_on_longer_is_not_a_change() {
    let mut t = lazy();
    let mut bytes = SCREEN.to_vec();
    bytes.extend_from_slice(b"(12 players online)\r\n");
    let out = t.game_bytes(&bytes);
    assert_eq!(changed(&out), None);
    assert_eq!(player_text(&out), "(12 players online)\r\n");
}
