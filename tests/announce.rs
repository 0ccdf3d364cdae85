//! The game's announcements about the players holdfast logs back in (and
//! about its heartbeat) stay between the game and holdfast even when the
//! game's output cuts such a line in two reads ("Bob has con" |
//! "nected."); holding the first half back for its rest loses nothing and
//! delays no prompt. Real holdfast, real fakemush with `--split-announce`.

mod common;

use std::time::{Duration, Instant};

use common::*;

const ONLINE: &str = "You have been logged back in.";
/// fakemush's pause between the two halves of an announcement: well
/// inside holdfast's wait for a line's rest (50 ms), as a real server's
/// two writes are.
const SPLIT_MS: &str = "10";

fn game(dir: &TempDir, extra: &[&str]) -> Game {
    let mut args = vec![
        "--split-announce",
        SPLIT_MS,
        "--user",
        "Alice:alicepw",
        "--user",
        "Bob:bobpw",
        "--user",
        "Carol:carolpw",
        "--user",
        "Wiz:wizpw:wizard",
        "--user",
        "heartbeat:hbpass:wizard",
    ];
    args.extend_from_slice(extra);
    Game::start(dir, &args)
}

fn config(game: &Game, extra: &str) -> String {
    config_for(
        &[game],
        &format!("[listen]\naddrs = [\"127.0.0.1:0\"]\n{extra}"),
    )
}

const PLAYERS: [(&str, &str); 3] = [("Alice", "alicepw"), ("Bob", "bobpw"), ("Carol", "carolpw")];

/// Three players logged in, then the game restarted and each logged back
/// in; returns the clients and where each one's text stood at the restart.
async fn restored(game: &mut Game, proxy: &Proxy) -> (Vec<Client>, Vec<usize>) {
    proxy.wait_log("backend up").await;
    let mut clients = Vec::new();
    for (user, pass) in PLAYERS {
        let c = Client::login(proxy.addr, user, pass).await;
        clients.push(c);
    }
    // The first logins' announcements (cut too) are news: shown whole.
    for c in &mut clients[..2] {
        c.expect("Carol has connected.").await;
    }
    let at: Vec<usize> = clients.iter().map(|c| c.text.len()).collect();
    game.restart();
    for c in clients.iter_mut() {
        c.expect(ONLINE).await;
    }
    (clients, at)
}

/// Nothing of the announcements about the restored, not even half a line.
async fn assert_no_announcements(clients: &mut [Client], at: &[usize]) {
    for (c, at) in clients.iter_mut().zip(at) {
        c.collect_for(Duration::from_millis(300)).await;
        let after = &c.text[*at..];
        assert!(
            !after.contains("has con") && !after.contains("nected."),
            "{after:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restores_announcements_cut_in_two_reads_are_held_back() {
    let dir = TempDir::new("announce-split");
    let mut game = game(&dir, &[]);
    let proxy = Proxy::start(&dir, &config(&game, ""));
    let (mut clients, at) = restored(&mut game, &proxy).await;
    assert_no_announcements(&mut clients, &at).await;
    // Someone who was not restored is announced as ever, whole.
    let _wiz = Client::login(proxy.addr, "Wiz", "wizpw").await;
    for c in clients.iter_mut() {
        c.expect("Wiz has connected.").await;
    }
}

/// The same with the game compressing its output (MCCP2, inflated by
/// holdfast): the halves are cut the same way, and held back the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_through_a_compressed_game_stream() {
    let dir = TempDir::new("announce-mccp");
    let mut game = game(&dir, &["--mccp"]);
    let proxy = Proxy::start(&dir, &config(&game, "[telnet]\nbackend_mccp = true\n"));
    let (mut clients, at) = restored(&mut game, &proxy).await;
    assert_no_announcements(&mut clients, &at).await;
    clients[0].send("think still here").await;
    clients[0].expect("still here").await;
}

/// The heartbeat's own announcement cut in two, with nobody being
/// restored: its reconnection after a wizard boots it is never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeats_announcement_cut_in_two_reads_is_held_back() {
    heartbeat_cut(&[]).await;
}

/// The same cut inside the name (`heartb` | `eat has connected.`): the
/// first read does not name the heartbeat, but ends in the start of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeats_announcement_cut_inside_its_name_is_held_back() {
    heartbeat_cut(&["--split-at", "6"]).await;
}

async fn heartbeat_cut(extra: &[&str]) {
    let dir = TempDir::new("announce-heartbeat");
    let game = game(&dir, extra);
    let proxy = Proxy::start(&dir, &config(&game, ""));
    proxy.wait_log("backend up").await;
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let mut wiz = Client::login(proxy.addr, "Wiz", "wizpw").await;
    alice.expect("Wiz has connected.").await;
    let before = game.logins("heartbeat").len();
    wiz.send("@boot heartbeat").await;
    wiz.expect("You booted heartbeat off!").await;
    proc_until_login(&game, before + 1).await;
    let after = alice.collect_for(Duration::from_millis(500)).await;
    assert!(
        !after.contains("heartbeat") && !after.contains("nected."),
        "{after:?}"
    );
    alice.send("think still here").await;
    alice.expect("still here").await;
}

async fn proc_until_login(game: &Game, n: usize) {
    let t0 = Instant::now();
    while game.logins("heartbeat").len() < n {
        assert!(t0.elapsed() < WAIT, "the heartbeat never logged in again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// While lines are checked (right after a restore), a prompt with GA
/// comes at once and whole, a prompt with neither newline nor GA comes by
/// holdfast's short wait, and a game that closes right after half a line
/// has that half delivered before the player's connection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompts_and_last_words_are_not_held_up_or_lost() {
    let dir = TempDir::new("announce-prompt");
    let mut game = game(&dir, &[]);
    let proxy = Proxy::start(&dir, &config(&game, ""));
    let (mut clients, _) = restored(&mut game, &proxy).await;
    let mut alice = clients.remove(0);
    // (Names stay held for 10 s after a re-login: all of this is within.)
    let mut ga = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let raw = alice.raw.len();
        alice.send("prompt").await;
        while !alice.raw[raw..].ends_with(b"> \xff\xf9") {
            assert!(t0.elapsed() < WAIT, "{:?}", &alice.raw[raw..]);
            alice.read_some(t0 + WAIT).await;
        }
        ga.push(t0.elapsed());
    }
    let mut bare = Vec::new();
    for i in 0..5 {
        let t0 = Instant::now();
        alice.send(&format!("bare HP {i}>")).await;
        alice
            .expect_within(&format!("HP {i}>"), Duration::from_secs(1))
            .await;
        bare.push(t0.elapsed());
    }
    ga.sort();
    bare.sort();
    eprintln!(
        "prompt with GA: median {:?}; bare prompt: median {:?}",
        ga[2], bare[2]
    );
    // The GA prompt does not wait for the 50 ms a bare one may.
    assert!(ga[2] < Duration::from_millis(45), "{ga:?}");
    alice.send("bareclose last words, cut short").await;
    alice.expect("last words, cut short").await;
    alice.expect_closed().await;
}
