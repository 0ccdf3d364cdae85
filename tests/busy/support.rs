//! What the busy-game tests share (`tests/busy.rs`,
//! `tests/startup_busy.rs`): numbered players `p01`… (password `pw`) at a
//! TinyMUX-flavoured game, and the check that each logged in once.

use crate::common::*;

/// `--user` arguments for `n` players `p01`… (password `pw`) and the
/// heartbeat.
pub fn users(n: usize) -> Vec<String> {
    let mut v: Vec<String> = (1..=n)
        .flat_map(|i| ["--user".to_string(), format!("p{i:02}:pw")])
        .collect();
    v.extend(["--user".into(), "heartbeat:hbpass:wizard".into()]);
    v
}

/// A game with `n` players that lets two connections per address wait at
/// its connect screen (TinyMUX's `max_preauth_sitecons`).
pub fn two_preauth_game(dir: &TempDir, n: usize) -> Game {
    let mut args = vec!["--max-preauth".to_string(), "2".into()];
    args.extend(users(n));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Game::start(dir, &args)
}

/// A TinyMUX-flavoured holdfast (TinyMUX's refusal texts; no client
/// address, so the game sees every player at holdfast's address) with room
/// for many players from one address; `extra_listen` goes on in
/// `[listen]`.
pub fn mux_config(game: &Game, extra_listen: &str) -> String {
    config_for(
        &[game],
        &format!(
            "flavor = \"tinymux\"\n[listen]\naddrs = [\"127.0.0.1:0\"]\nmax_per_ip = 100\n{extra_listen}\n"
        ),
    )
}

/// Asserts the game saw each of `p01`… `p{n}` log in exactly once.
pub fn assert_each_logged_in_once(game: &Game, n: usize) {
    for i in 1..=n {
        let name = format!("p{i:02}");
        let logins = game.logins(&name).len();
        assert_eq!(logins, 1, "{name} logged in {logins} times");
    }
}
