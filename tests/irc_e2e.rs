//! End to end: the real proxy in front of fakemush publishes on a real
//! nats-server, `holdfast irc` posts to a real ngircd. Kill the game: the
//! channel sees DOWN within 2 s; restart it: UP with the players restored;
//! `!status` names the backend from the proxy's own answer.

mod common;

use std::time::{Duration, Instant};

use common::irc_watch::{RelayProc, Watcher};
use common::nats::NatsServer;
use common::ngircd::Ngircd;
use common::{config_for, Client, Expect, Game, Proxy, TempDir};

const CHAN: &str = "#mymush";
const BOT: &str = "holdfast";

fn bus(nats: &NatsServer) -> String {
    format!(
        "[bus]\nservers = [\"{}\"]\nsubject_prefix = \"e2e.holdfast\"\ninstance = \"mymush-1\"\npresence_interval = \"500ms\"\nrequest_timeout = \"1s\"\n",
        nats.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_game_is_posted_down_then_up() {
    let dir = TempDir::new("irc-e2e");
    let nats = NatsServer::start();
    let irc = Ngircd::start(&dir);
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], &bus(&nats)));
    let mut w = Watcher::connect(&irc.addr(), "watcher").await;
    w.join(CHAN).await;
    let relay_cfg = format!(
        "{}[irc]\nserver = \"{}\"\nnick = \"{BOT}\"\nchannels = [\"{CHAN}\"]\nrate = 5.0\nburst = 10\n",
        config_for(&[&game], &bus(&nats)),
        irc.addr()
    );
    let _relay = RelayProc::start(&dir, &relay_cfg);
    w.expect(
        |s| s.command == "JOIN" && s.nick == BOT,
        "the relay joining",
    )
    .await;

    // The proxy answers !status itself once both are on the bus and the
    // first probe is in.
    let backend = format!("b0 {} UP (active)", game.addr);
    let t0 = Instant::now();
    let status = loop {
        w.say(CHAN, "!status").await;
        let s = w.expect_msg_within(BOT, "", Duration::from_secs(5)).await;
        if s.text().contains(&backend) {
            break s.text().to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no status naming {backend:?}; last: {}",
            s.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(status.starts_with("[mymush-1] Test MUSH: b0 "), "{status}");

    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;
    // Both are counted by the proxy before the game goes away.
    let t0 = Instant::now();
    loop {
        w.say(CHAN, "!status mymush-1").await;
        let s = w
            .expect_msg_within(BOT, "[mymush-1]", Duration::from_secs(5))
            .await;
        if s.text().contains("2 logged in") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", s.text());
    }

    let killed = Instant::now();
    game.kill();
    let down = w
        .expect_msg_within(BOT, "is DOWN (b0", Duration::from_secs(2))
        .await;
    eprintln!("kill to DOWN line: {:?}", down.at - killed);
    assert_eq!(
        down.text(),
        format!(
            "[mymush-1] Test MUSH is DOWN (b0 {}): 2 players held",
            game.addr
        )
    );
    alice.expect("Test MUSH is down").await;
    bob.expect("Test MUSH is down").await;

    game.restart();
    let up = w.expect_msg(BOT, "is UP again (b0").await;
    assert!(up.text().ends_with(": 2 players restored"), "{}", up.text());
    alice.expect("Test MUSH is back").await;
    drop(proxy);
}
