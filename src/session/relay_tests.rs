//! The session core relaying: bytes both ways once connected, and the
//! playback it keeps of what the game sent.

use super::action::Action;
use super::tests::{game_text, T};
use crate::state::Phase;

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
