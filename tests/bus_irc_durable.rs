//! Durable events to IRC (issue 17): with `bus.jetstream`, `holdfast irc`
//! reads through a durable consumer, so what happened while it was away
//! is posted when it returns, marked late, once. The real proxy in front
//! of fakemush, a real nats-server cluster with JetStream, a real ngircd.

mod common;

use std::time::{Duration, Instant};

use common::bus::connect;
use common::irc_watch::{RelayProc, Watcher};
use common::nats::{js_cluster, NatsServer};
use common::ngircd::Ngircd;
use common::{config_for, Client, Expect, Game, Proxy, TempDir, WAIT};
use serde_json::json;

const CHAN: &str = "#mymush";
const BOT: &str = "holdfast";
const PREFIX: &str = "dur.holdfast";

fn bus(urls: &[String]) -> String {
    let list: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[bus]\nservers = [{}]\nsubject_prefix = \"{PREFIX}\"\ninstance = \"mymush-1\"\npresence_interval = \"500ms\"\nrequest_timeout = \"1s\"\njetstream = true\n",
        list.join(", ")
    )
}

fn relay_cfg(game: &Game, urls: &[String], irc: &Ngircd) -> String {
    format!(
        "{}[irc]\nserver = \"{}\"\nnick = \"{BOT}\"\nchannels = [\"{CHAN}\"]\nrate = 20.0\nburst = 40\nsummarize_window = \"1s\"\n",
        config_for(&[game], &bus(urls)),
        irc.addr()
    )
}

/// Waits until every node of the cluster has a JetStream meta leader, so
/// streams can be created.
async fn wait_js_ready(urls: &[String]) {
    let t0 = Instant::now();
    for u in urls {
        let js = async_nats::jetstream::new(connect(u).await);
        loop {
            let name = format!("READY{}", rand::random::<u32>());
            let r = js
                .create_stream(async_nats::jetstream::stream::Config {
                    name: name.clone(),
                    subjects: vec![format!("ready.{name}")],
                    ..Default::default()
                })
                .await;
            if r.is_ok() {
                let _ = js.delete_stream(&name).await;
                break;
            }
            assert!(
                t0.elapsed() < WAIT * 3,
                "JetStream cluster not ready: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Lines the relay posted so far containing `needle`.
fn posted(w: &Watcher, needle: &str) -> Vec<String> {
    w.msgs_from(BOT, 0)
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect()
}

async fn wait_relay_consumer(relay: &RelayProc) {
    relay
        .wait_log_n("reading events through JetStream", 1)
        .await;
}

/// Waits until the stream holds `n` events of `kind`.
async fn wait_stored(url: &str, kind: &str, n: usize) {
    let js = async_nats::jetstream::new(connect(url).await);
    let subject = format!("{PREFIX}.event.{kind}");
    let t0 = Instant::now();
    loop {
        let mut count = 0;
        if let Ok(mut s) = js.get_stream("HOLDFAST_EVENTS").await {
            let st = s.info().await.unwrap().state.clone();
            for seq in st.first_sequence..=st.last_sequence {
                if let Ok(m) = s.get_raw_message(seq).await {
                    count += usize::from(m.subject.as_str() == subject);
                }
            }
        }
        if count >= n {
            return;
        }
        assert!(t0.elapsed() < WAIT * 2, "{kind} never stored {n} times");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_while_the_relay_is_away_is_posted_once_when_it_returns() {
    let dir = TempDir::new("irc-durable");
    let nodes: Vec<NatsServer> = js_cluster(&dir, 3);
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    wait_js_ready(&urls).await;
    let irc = Ngircd::start(&dir);
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], &bus(&urls)));
    let mut w = Watcher::connect(&irc.addr(), "watcher").await;
    w.join(CHAN).await;
    let cfg = relay_cfg(&game, &urls, &irc);
    let mut relay = RelayProc::start(&dir, &cfg);
    wait_relay_consumer(&relay).await;
    w.expect(
        |s| s.command == "JOIN" && s.nick == BOT,
        "the relay joining",
    )
    .await;
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    wait_stored(&urls[0], "session.login", 1).await;

    // The relay dies without a goodbye; the game dies and comes back.
    relay.kill();
    w.expect(
        |s| s.command == "QUIT" && s.nick == BOT,
        "the relay quitting",
    )
    .await;
    game.kill();
    alice.expect("Test MUSH is down").await;
    game.restart();
    alice.expect("Test MUSH is back").await;
    wait_stored(&urls[1], "session.restored", 1).await;
    assert!(
        posted(&w, "is DOWN").is_empty(),
        "{:?}",
        w.msgs_from(BOT, 0)
    );

    let t0 = Instant::now();
    let relay = RelayProc::start(&dir, &cfg);
    wait_relay_consumer(&relay).await;
    let down = w.expect_msg(BOT, "is DOWN").await;
    let up = w.expect_msg(BOT, "is UP").await;
    eprintln!(
        "missed DOWN posted {:?}, UP {:?} after the relay was started again",
        down.at - t0,
        up.at - t0
    );
    for l in [&down, &up] {
        assert!(l.text().contains("posted late"), "{}", l.text());
        assert!(l.text().contains("(at "), "{}", l.text());
    }
    assert!(down.text().contains("1 player held"), "{}", down.text());
    assert!(up.text().contains("1 player restored"), "{}", up.text());

    // Something that happens now is posted after them, and on time: by
    // then everything before it has been read.
    proxy.rewrite(&format!("{}bogus = 1\n", config_for(&[&game], &bus(&urls))));
    proxy.sighup();
    let reload = w.expect_msg(BOT, "config reload").await;
    assert!(!reload.text().contains("posted late"), "{}", reload.text());
    assert_eq!(posted(&w, "is DOWN").len(), 1, "{:?}", w.msgs_from(BOT, 0));
    assert_eq!(posted(&w, "is UP").len(), 1, "{:?}", w.msgs_from(BOT, 0));
    alice.send("say hi").await;
    alice.expect("You say, \"hi\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_backlog_is_summed_up() {
    let dir = TempDir::new("irc-backlog");
    let nats = NatsServer::start_js(&dir);
    let urls = vec![nats.url()];
    let irc = Ngircd::start(&dir);
    let game = Game::start(&dir, &[]);
    let mut w = Watcher::connect(&irc.addr(), "watcher").await;
    w.join(CHAN).await;
    let cfg = relay_cfg(&game, &urls, &irc);
    let mut relay = RelayProc::start(&dir, &cfg);
    wait_relay_consumer(&relay).await;
    w.expect(
        |s| s.command == "JOIN" && s.nick == BOT,
        "the relay joining",
    )
    .await;
    relay.kill();
    // Its nick is free again before the next one comes.
    w.expect(
        |s| s.command == "QUIT" && s.nick == BOT,
        "the relay quitting",
    )
    .await;

    // 25 failovers while the relay is away (no proxy: published by hand).
    let c = connect(&nats.url()).await;
    for i in 0..25 {
        let ev = json!({
            "type": "failover", "id": format!("ev-{i}"), "instance": "mymush-1",
            "game": "Test MUSH", "v": 1, "from": format!("b{i}"), "to": format!("b{}", i + 1),
            "reason": "request",
            "time": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap(),
        });
        c.publish(format!("{PREFIX}.event.failover"), ev.to_string().into())
            .await
            .unwrap();
    }
    c.flush().await.unwrap();
    wait_stored(&nats.url(), "failover", 25).await;

    let _relay = RelayProc::start(&dir, &cfg);
    let summary = w
        .expect_msg(BOT, "more notices from while the relay was away")
        .await;
    assert!(
        summary.text().contains("15 more notices"),
        "{}",
        summary.text()
    );
    let posted = posted(&w, "failed over");
    assert_eq!(posted.len(), 10, "{posted:?}");
    assert!(posted[0].contains("from b0 to b1"), "{posted:?}");
    assert!(
        posted.iter().all(|l| l.contains("posted late")),
        "{posted:?}"
    );
}
