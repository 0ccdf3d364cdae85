//! `holdfast irc` against a real ngircd and a real nats-server: the relay
//! joins, posts DOWN/UP, answers `!status`, survives restarts of both
//! servers, posts notices from an IRC outage late, summarises bursts, and
//! keeps admin commands to admins.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::irc_watch::{RelayProc, Watcher};
use common::nats::NatsServer;
use common::ngircd::{Gate, Ngircd, NgircdOpts};
use common::TempDir;
use futures::StreamExt;
use serde_json::{json, Value};

const CHAN: &str = "#holdfast";
const BOT: &str = "holdfast";
const PREFIX: &str = "test.holdfast";
const INSTANCE: &str = "mymush-1";

fn relay_config(nats: &NatsServer, irc_server: &str, extra: &str) -> String {
    relay_config_url(&nats.url(), irc_server, extra)
}

fn relay_config_url(nats: &str, irc_server: &str, extra: &str) -> String {
    format!(
        r#"game = "Test MUSH"
[[backends]]
name = "primary"
addr = "127.0.0.1:1"
[bus]
servers = ["{nats}"]
subject_prefix = "{PREFIX}"
request_timeout = "1s"
[irc]
server = "{irc_server}"
nick = "{BOT}"
channels = ["{CHAN}"]
rate = 5.0
burst = 10
reconnect_max = "2s"
summarize_window = "2s"
{extra}
"#
    )
}

async fn nats_client(nats: &NatsServer) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(nats.url())
        .await
        .unwrap()
}

async fn publish(c: &async_nats::Client, kind: &str, fields: Value) {
    let mut v = json!({
        "type": kind, "id": format!("{:x}", rand::random::<u64>()),
        "time": time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap(),
        "instance": INSTANCE, "game": "Test MUSH", "v": 1,
    });
    for (k, x) in fields.as_object().unwrap() {
        v[k] = x.clone();
    }
    c.publish(format!("{PREFIX}.event.{kind}"), v.to_string().into())
        .await
        .unwrap();
    c.flush().await.unwrap();
}

/// Requests the test's fake instance received: (method, payload).
type Requests = Arc<Mutex<Vec<(String, Value)>>>;

/// Answers `status`, `failover` and `announce` as instance `mymush-1`
/// would, on both its own subject and `all`.
async fn fake_instance(c: &async_nats::Client) -> Requests {
    let seen: Requests = Arc::default();
    let own = c
        .subscribe(format!("{PREFIX}.rpc.{INSTANCE}.*"))
        .await
        .unwrap();
    let all = c.subscribe(format!("{PREFIX}.rpc.all.*")).await.unwrap();
    let mut sub = futures::stream::select(own, all);
    c.flush().await.unwrap();
    let (c, s) = (c.clone(), seen.clone());
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let method = m.subject.rsplit('.').next().unwrap().to_string();
            let payload: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
            s.lock().unwrap().push((method.clone(), payload));
            let answer = match method.as_str() {
                "status" => json!({
                    "instance": INSTANCE, "game": "Test MUSH", "active": "primary",
                    "backends": [
                        {"name": "primary", "addr": "127.0.0.1:4202", "up": true},
                        {"name": "standby", "addr": "127.0.0.1:4203", "up": false, "reason": "connection refused"}
                    ],
                    "sessions": {"total": 3, "logged_in": 2, "held": 0}
                }),
                _ => json!({"instance": INSTANCE, "ok": true}),
            };
            if let Some(r) = m.reply {
                let _ = c.publish(r, answer.to_string().into()).await;
            }
        }
    });
    seen
}

/// Asks `!status` until the relay answers with the fake instance's
/// backends: proves the relay's NATS connection (and so its
/// subscriptions, sent before on the same connection) is live.
async fn wait_bus_ready(w: &mut Watcher) -> String {
    let t0 = Instant::now();
    loop {
        w.say(CHAN, "!status").await;
        let s = w.expect_msg_within(BOT, "", Duration::from_secs(5)).await;
        if s.text().contains("primary 127.0.0.1:4202 UP") {
            return s.text().to_string();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "relay never answered !status with the instance; last: {}",
            s.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn watcher_in_channel(addr: &str, nick: &str) -> Watcher {
    let mut w = Watcher::connect(addr, nick).await;
    w.join(CHAN).await;
    w
}

async fn expect_bot_join(w: &mut Watcher) {
    w.expect(
        |s| s.command == "JOIN" && s.nick == BOT,
        "the relay joining",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_down_up_and_answers_status() {
    let dir = TempDir::new("irc-basic");
    let irc = Ngircd::start(&dir);
    let nats = NatsServer::start();
    let client = nats_client(&nats).await;
    let _instance = fake_instance(&client).await;
    let mut w = watcher_in_channel(&irc.addr(), "watcher").await;
    let relay = RelayProc::start(&dir, &relay_config(&nats, &irc.addr(), ""));
    expect_bot_join(&mut w).await;
    let status = wait_bus_ready(&mut w).await;
    assert_eq!(
        status,
        "[mymush-1] Test MUSH: primary 127.0.0.1:4202 UP (active), standby 127.0.0.1:4203 DOWN (connection refused); 3 sessions, 2 logged in, 0 held"
    );

    let t0 = Instant::now();
    publish(&client, "backend.down", json!({"backend": "primary", "addr": "127.0.0.1:4202", "reason": "connection refused", "held": 2})).await;
    let down = w
        .expect_msg_within(BOT, "is DOWN", Duration::from_secs(2))
        .await;
    assert_eq!(
        down.text(),
        "[mymush-1] Test MUSH is DOWN (primary 127.0.0.1:4202): 2 players held"
    );
    eprintln!("DOWN posted {:?} after the event", down.at - t0);

    publish(&client, "backend.up", json!({"backend": "primary", "addr": "127.0.0.1:4202", "reason": "probe ok", "down_for_s": 75})).await;
    for u in ["ann", "bob"] {
        publish(
            &client,
            "session.restored",
            json!({"session": 1, "user": u, "backend": "primary"}),
        )
        .await;
    }
    let up = w.expect_msg(BOT, "is UP").await;
    assert_eq!(up.text(), "[mymush-1] Test MUSH is UP again (primary 127.0.0.1:4202) after 1m 15s: 2 players restored");

    publish(
        &client,
        "failover",
        json!({"from": "primary", "to": "standby", "reason": "automatic"}),
    )
    .await;
    w.expect_msg(BOT, "failed over from primary to standby (automatic)")
        .await;
    publish(
        &client,
        "config.reloaded",
        json!({"ok": false, "error": "config.toml:3:1: unknown field `bogus`"}),
    )
    .await;
    w.expect_msg(
        BOT,
        "config reload FAILED, old config kept: config.toml:3:1",
    )
    .await;

    w.say(CHAN, "!status mymush-1").await;
    w.expect_msg(
        BOT,
        "[mymush-1] Test MUSH: primary 127.0.0.1:4202 UP (active)",
    )
    .await;
    w.say(CHAN, "!status nosuch").await;
    w.expect_msg(BOT, "[nosuch] no such instance").await;

    // Logins are not posted unless configured.
    let from = w.seen.len();
    publish(
        &client,
        "session.login",
        json!({"session": 7, "user": "ann"}),
    )
    .await;
    publish(
        &client,
        "failover",
        json!({"from": "standby", "to": "primary", "reason": "request"}),
    )
    .await;
    w.expect_msg(BOT, "(requested)").await;
    assert!(!w
        .msgs_from(BOT, from)
        .iter()
        .any(|m| m.contains("logged in")));
    drop(relay);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_logins_is_a_few_lines() {
    let dir = TempDir::new("irc-burst");
    let irc = Ngircd::start(&dir);
    let nats = NatsServer::start();
    let client = nats_client(&nats).await;
    let _instance = fake_instance(&client).await;
    let mut w = watcher_in_channel(&irc.addr(), "watcher").await;
    let _relay = RelayProc::start(
        &dir,
        &relay_config(&nats, &irc.addr(), "post_logins = true"),
    );
    expect_bot_join(&mut w).await;
    wait_bus_ready(&mut w).await;

    let from = w.seen.len();
    for i in 0..50 {
        publish(
            &client,
            "session.login",
            json!({"session": i, "user": format!("Player{i}")}),
        )
        .await;
    }
    let summary = w.expect_msg(BOT, "more logins in").await;
    // A marker after the burst: everything before it belongs to the burst.
    publish(
        &client,
        "failover",
        json!({"from": "a", "to": "b", "reason": "automatic"}),
    )
    .await;
    w.expect_msg(BOT, "failed over").await;
    let lines: Vec<String> = w
        .msgs_from(BOT, from)
        .into_iter()
        .filter(|l| !l.contains("failed over"))
        .collect();
    eprintln!("50 logins gave {} lines: {lines:#?}", lines.len());
    assert!(lines.len() <= 3, "{lines:#?}");
    assert_eq!(lines[0], "[mymush-1] Player0 logged in");
    assert!(
        summary
            .text()
            .starts_with("[mymush-1] 49 more logins in 2s: Player1, Player2,"),
        "{}",
        summary.text()
    );
    assert!(
        summary.text().ends_with("and 39 others"),
        "{}",
        summary.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notice_from_an_irc_outage_is_posted_late() {
    let dir = TempDir::new("irc-outage");
    let mut irc = Ngircd::start(&dir);
    let nats = NatsServer::start();
    let client = nats_client(&nats).await;
    let _instance = fake_instance(&client).await;
    // The relay reaches ngircd through a gate, so the test decides that
    // the watcher is back in the channel before the relay is.
    let gate = Gate::new(irc.port).await;
    let mut w = watcher_in_channel(&irc.addr(), "watcher").await;
    let relay = RelayProc::start(&dir, &relay_config(&nats, &gate.addr.to_string(), ""));
    expect_bot_join(&mut w).await;
    wait_bus_ready(&mut w).await;

    gate.close();
    irc.kill();
    relay.wait_log_n("IRC connection lost", 1).await;
    publish(&client, "backend.down", json!({"backend": "primary", "addr": "127.0.0.1:4202", "reason": "connection refused", "held": 5})).await;
    publish(
        &client,
        "session.login",
        json!({"session": 1, "user": "ann"}),
    )
    .await;
    // Let the relay take it while IRC is away (its debug log says so).
    relay.wait_log_n("is DOWN (primary", 1).await;

    irc.restart();
    let mut w = watcher_in_channel(&irc.addr(), "watcher").await;
    gate.open();
    expect_bot_join(&mut w).await;
    let late = w.expect_msg(BOT, "is DOWN").await;
    let t = late.text();
    assert!(
        t.starts_with("[mymush-1] Test MUSH is DOWN (primary 127.0.0.1:4202): 5 players held (at "),
        "{t}"
    );
    assert!(t.ends_with(" UTC, posted late)"), "{t}");

    // And it goes on posting, on time.
    publish(
        &client,
        "backend.up",
        json!({"backend": "primary", "addr": "127.0.0.1:4202", "down_for_s": 9, "held": 0}),
    )
    .await;
    let up = w.expect_msg(BOT, "is UP").await;
    assert!(!up.text().contains("late"), "{}", up.text());
    assert_eq!(relay.logs().matches("registered on IRC").count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_ngircd_and_nats_restarts() {
    let dir = TempDir::new("irc-restarts");
    let mut irc = Ngircd::start(&dir);
    let mut nats = NatsServer::start();
    let client = nats_client(&nats).await;
    let _instance = fake_instance(&client).await;
    let mut w = watcher_in_channel(&irc.addr(), "watcher").await;
    let relay = RelayProc::start(&dir, &relay_config(&nats, &irc.addr(), ""));
    expect_bot_join(&mut w).await;
    wait_bus_ready(&mut w).await;

    // ngircd restart: the relay comes back by itself and posts.
    irc.restart();
    let mut w = watcher_in_channel(&irc.addr(), "watcher").await;
    relay.wait_log_n("joined", 2).await;
    publish(
        &client,
        "backend.down",
        json!({"backend": "primary", "addr": "127.0.0.1:4202", "held": 1}),
    )
    .await;
    w.expect_msg(BOT, "is DOWN (primary 127.0.0.1:4202): 1 player held")
        .await;

    // NATS restart: both the relay and the test's client reconnect.
    nats.restart();
    let t0 = Instant::now();
    while client.flush().await.is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "test client did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_bus_ready(&mut w).await;
    publish(
        &client,
        "backend.up",
        json!({"backend": "primary", "addr": "127.0.0.1:4202", "down_for_s": 30, "held": 0}),
    )
    .await;
    w.expect_msg(BOT, "is UP again (primary 127.0.0.1:4202) after 30s")
        .await;
    assert!(relay.logs().contains("NATS disconnected"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_only_for_admins() {
    let dir = TempDir::new("irc-admin");
    let irc = Ngircd::start(&dir);
    let nats = NatsServer::start();
    let client = nats_client(&nats).await;
    let requests = fake_instance(&client).await;
    let mut boss = watcher_in_channel(&irc.addr(), "boss").await;
    let mut eve = watcher_in_channel(&irc.addr(), "eve").await;
    let _relay = RelayProc::start(
        &dir,
        &relay_config(&nats, &irc.addr(), "admins = [\"boss!*@*\"]"),
    );
    expect_bot_join(&mut boss).await;
    wait_bus_ready(&mut boss).await;

    eve.say(CHAN, "!failover standby").await;
    eve.expect_msg(BOT, "eve: you are not allowed to do that")
        .await;
    eve.say(CHAN, "!announce all pwned").await;
    eve.expect_msg(BOT, "eve: you are not allowed").await;
    assert!(requests.lock().unwrap().iter().all(|(m, _)| m == "status"));

    // No event named an instance yet, so the relay knows none: name it.
    boss.say(CHAN, "!failover mymush-1 standby").await;
    boss.expect_msg(BOT, "[mymush-1] failover to standby requested")
        .await;
    boss.say(CHAN, "!announce all Back in 5 minutes").await;
    boss.expect_msg(BOT, "announced on 1 of 1 instance(s)")
        .await;
    let r = requests.lock().unwrap().clone();
    assert!(
        r.contains(&("failover".to_string(), json!({"backend": "standby"}))),
        "{r:?}"
    );
    assert!(
        r.contains(&("announce".to_string(), json!({"text": "Back in 5 minutes"}))),
        "{r:?}"
    );
    // A private message works too, answered privately.
    boss.say(BOT, "!help").await;
    let h = boss.expect_msg(BOT, "!status [instance]").await;
    assert_eq!(h.params[0], "boss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_change_state_are_off_without_admins() {
    let dir = TempDir::new("irc-noadmin");
    let irc = Ngircd::start(&dir);
    let nats = NatsServer::start();
    let client = nats_client(&nats).await;
    let requests = fake_instance(&client).await;
    let mut w = watcher_in_channel(&irc.addr(), "watcher").await;
    let _relay = RelayProc::start(&dir, &relay_config(&nats, &irc.addr(), ""));
    expect_bot_join(&mut w).await;
    wait_bus_ready(&mut w).await;
    w.say(CHAN, "!failover mymush-1 standby").await;
    w.expect_msg(BOT, "disabled (no irc.admins configured)")
        .await;
    assert!(requests.lock().unwrap().iter().all(|(m, _)| m == "status"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_vanishes_and_comes_back() {
    let dir = TempDir::new("irc-vanish");
    let irc = Ngircd::start(&dir);
    let nats = NatsServer::start();
    let client = nats_client(&nats).await;
    let _instance = fake_instance(&client).await;
    let mut w = watcher_in_channel(&irc.addr(), "watcher").await;
    let _relay = RelayProc::start(
        &dir,
        &relay_config(&nats, &irc.addr(), "vanish_after = \"1s\""),
    );
    expect_bot_join(&mut w).await;
    wait_bus_ready(&mut w).await;
    let hb = |e: &str| json!({"instance": "ghost-1", "version": "0.1.0", "event": e}).to_string();
    client
        .publish(format!("{PREFIX}.presence"), hb("hello").into())
        .await
        .unwrap();
    w.expect_msg(
        BOT,
        "[ghost-1] holdfast instance vanished: no heartbeat for 1",
    )
    .await;
    client
        .publish(format!("{PREFIX}.presence"), hb("heartbeat").into())
        .await
        .unwrap();
    w.expect_msg(BOT, "[ghost-1] holdfast instance is back after")
        .await;
    // A goodbye is a clean stop: no "vanished" after it.
    client
        .publish(format!("{PREFIX}.presence"), hb("goodbye").into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let from = w.seen.len();
    tokio::time::sleep(Duration::from_secs(2)).await; // longer than vanish_after
    publish(
        &client,
        "failover",
        json!({"from": "a", "to": "b", "reason": "automatic"}),
    )
    .await;
    w.expect_msg(BOT, "failed over").await;
    assert!(!w
        .msgs_from(BOT, from)
        .iter()
        .any(|m| m.contains("vanished")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_server_password_and_nick_fallback() {
    let dir = TempDir::new("irc-tls");
    let irc = Ngircd::start_with(
        &dir,
        NgircdOpts {
            password: Some("sekrit".into()),
            tls: true,
        },
    );
    let nats = NatsServer::start();
    let mut w = Watcher::connect_pass(&irc.addr(), BOT, Some("sekrit")).await;
    w.join(CHAN).await;
    let extra = format!(
        "tls = true\ntls_ca_file = \"{}\"\nserver_password = \"sekrit\"\nalt_nicks = [\"hfrelay\"]",
        irc.cert.as_ref().unwrap().display()
    );
    let relay = RelayProc::start(
        &dir,
        &relay_config(
            &nats,
            &format!("127.0.0.1:{}", irc.tls_port.unwrap()),
            &extra,
        ),
    );
    // "holdfast" is the watcher's: the relay takes its alternative.
    w.expect(
        |s| s.command == "JOIN" && s.nick == "hfrelay",
        "the relay joining as hfrelay",
    )
    .await;
    assert!(
        !relay.logs().contains("sekrit"),
        "a password reached the log"
    );
    drop(relay);

    // A wrong password is reported and retried, not fatal.
    let relay = RelayProc::start(
        &dir,
        &relay_config(&nats, &irc.addr(), "server_password = \"wrong\""),
    );
    relay.wait_log_n("IRC connection lost", 2).await;
    assert!(
        !relay.logs().contains("wrong\""),
        "a password reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_on_sigterm() {
    let dir = TempDir::new("irc-stop");
    let irc = Ngircd::start(&dir);
    let nats = NatsServer::start();
    let mut w = watcher_in_channel(&irc.addr(), "watcher").await;
    let mut relay = RelayProc::start(&dir, &relay_config(&nats, &irc.addr(), ""));
    expect_bot_join(&mut w).await;
    assert_eq!(relay.stop(), Some(0));
    let q = w
        .expect(
            |s| s.command == "QUIT" && s.nick == BOT,
            "the relay quitting",
        )
        .await;
    assert!(q.raw.contains("holdfast relay stopping"), "{}", q.raw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_before_nats_and_catches_up() {
    let dir = TempDir::new("irc-late-nats");
    let irc = Ngircd::start(&dir);
    let port = common::nats::free_port();
    let mut w = watcher_in_channel(&irc.addr(), "watcher").await;
    let relay = RelayProc::start(
        &dir,
        &relay_config_url(&format!("nats://127.0.0.1:{port}"), &irc.addr(), ""),
    );
    // IRC does not wait for NATS.
    expect_bot_join(&mut w).await;
    w.say(CHAN, "!status").await;
    w.expect_msg(BOT, "the bus (NATS) is not reachable right now")
        .await;

    let nats = NatsServer::start_args(port, Vec::new());
    let client = nats_client(&nats).await;
    let _instance = fake_instance(&client).await;
    wait_bus_ready(&mut w).await;
    publish(
        &client,
        "backend.down",
        json!({"backend": "primary", "addr": "127.0.0.1:4202", "held": 0}),
    )
    .await;
    w.expect_msg(BOT, "is DOWN (primary 127.0.0.1:4202): no players held")
        .await;
    drop(relay);
}
