//! The NATS bus (issue 5): events, outage queue, cluster failover,
//! requests, presence, `holdfast status`, authentication and TLS. Real
//! nats-server processes on dynamic loopback ports.

mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::bus::*;
use common::nats::*;
use common::*;
use serde_json::Value;

const GAME: &str = "Test MUSH";
const SECRETS: &[&str] = &["alicepw", "bobpw", "hbpass"];

fn cfg(games: &[&Game], servers: &[String], instance: &str, bus_extra: &str) -> String {
    config_for(games, &bus_toml(servers, instance, bus_extra))
}

/// Index of the first message of `kind` matching `pred`.
fn pos(evs: &[Msg], kind: &str, pred: impl Fn(&Value) -> bool) -> usize {
    evs.iter()
        .position(|m| m.kind() == kind && pred(&m.json))
        .unwrap_or_else(|| {
            let all: Vec<&str> = evs.iter().map(|m| m.raw.as_str()).collect();
            panic!("no {kind} event in:\n{}", all.join("\n"))
        })
}

fn count_logs(p: &Proxy, needle: &str) -> usize {
    p.logs().matches(needle).count()
}

async fn wait_logs(p: &Proxy, needle: &str, n: usize) {
    let t0 = Instant::now();
    while count_logs(p, needle) < n {
        assert!(t0.elapsed() < WAIT, "{needle:?} not logged {n} times");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_crash_restore_quit_event_sequence() {
    let dir = TempDir::new("bus-seq");
    let nats = NatsServer::start();
    let watch = Watch::start(&nats.url()).await;
    let mut game = Game::start(&dir, &[]);
    let mut proxy = Proxy::start(&dir, &cfg(&[&game], &[nats.url()], "hf1", ""));
    watch
        .wait_event("backend.up", |e| e["backend"] == "b0")
        .await;

    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let login = watch.wait_event("session.login", |_| true).await;
    let sid = login["session"].clone();
    game.kill();
    alice.expect("Test MUSH is down").await;
    watch
        .wait_event("session.held", |e| e["session"] == sid)
        .await;
    game.restart();
    alice.expect("Test MUSH is back").await;
    watch
        .wait_event("session.restored", |e| e["session"] == sid)
        .await;
    alice.send("QUIT").await;
    alice.expect_closed().await;
    watch
        .wait_event("session.close", |e| e["session"] == sid)
        .await;
    assert_eq!(proxy.stop(), Some(0));
    watch.wait_event("proxy.stop", |_| true).await;
    watch
        .wait("presence goodbye", |m| m.kind() == "presence.goodbye")
        .await;

    let evs = watch.events();
    let mut ids = std::collections::HashSet::new();
    for m in &evs {
        check_common(m, "hf1", GAME);
        assert!(
            ids.insert(m.json["id"].as_str().unwrap().to_string()),
            "duplicate id: {}",
            m.raw
        );
    }
    let is = |e: &Value| e["session"] == sid;
    let start = pos(&evs, "proxy.start", |_| true);
    let up0 = pos(&evs, "backend.up", |_| true);
    let open = pos(&evs, "session.open", is);
    let login = pos(&evs, "session.login", is);
    let down = pos(&evs, "backend.down", |_| true);
    let held = pos(&evs, "session.held", is);
    let up1 = pos(&evs, "backend.up", |e| e.get("down_for_s").is_some());
    let restored = pos(&evs, "session.restored", is);
    let close = pos(&evs, "session.close", is);
    let stop = pos(&evs, "proxy.stop", |_| true);
    assert!(start < open && up0 < open && open < login, "{evs:#?}");
    assert!(login < down && login < held, "{evs:#?}");
    assert!(
        down < up1 && held < restored && up1 < close && restored < close,
        "{evs:#?}"
    );
    assert!(close < stop, "{evs:#?}");

    let version = env!("CARGO_PKG_VERSION");
    let addr = game.addr.to_string();
    let e = |i: usize| &evs[i].json;
    assert_eq!(e(start)["version"], version);
    assert_eq!(e(stop)["version"], version);
    for i in [up0, down, up1] {
        assert_eq!(e(i)["backend"], "b0");
        assert_eq!(e(i)["addr"], addr.as_str());
        assert!(e(i)["reason"].is_string(), "{}", evs[i].raw);
    }
    assert!(e(up1)["down_for_s"].as_f64().unwrap() >= 0.0);
    assert!(e(down)["held"].as_u64().unwrap() >= 1, "{}", evs[down].raw);
    assert!(
        e(open).get("ip").is_none(),
        "ip without publish_ip: {}",
        evs[open].raw
    );
    assert_eq!(e(login)["user"], "Alice");
    for i in [held, restored] {
        assert_eq!(e(i)["user"], "Alice", "{}", evs[i].raw);
        assert_eq!(e(i)["backend"], "b0", "{}", evs[i].raw);
    }
    assert_eq!(e(close)["user"], "Alice");
    assert_eq!(e(close)["reason"], "quit");

    // Presence: hello first, with the methods; goodbye last.
    let all = watch.all();
    let hello = all.iter().find(|m| m.kind() == "presence.hello").unwrap();
    assert_eq!(hello.subject, format!("{PREFIX}.presence"));
    assert_eq!(hello.json["instance"], "hf1");
    assert_eq!(hello.json["version"], version);
    assert_eq!(
        hello.json["methods"],
        serde_json::json!(["status", "sessions", "failover", "announce", "reload", "upgrade"])
    );
    assert_eq!(all.last().unwrap().kind(), "presence.goodbye");

    assert_no_secrets(&all, SECRETS);
    let logs = proxy.logs();
    for s in SECRETS {
        assert!(!logs.contains(s), "{s} in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_only_with_publish_ip() {
    let dir = TempDir::new("bus-ip");
    let nats = NatsServer::start();
    let watch = Watch::start(&nats.url()).await;
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &cfg(&[&game], &[nats.url()], "hf1", "publish_ip = true"),
    );
    let mut c = Client::connect_from(proxy.addr, "127.0.0.3").await;
    c.expect("connect <name>").await;
    let open = watch.wait_event("session.open", |_| true).await;
    assert_eq!(open["ip"], "127.0.0.3");
    let s = request(&watch.client, "hf1", "sessions", "").await;
    assert_eq!(s["sessions"][0]["ip"], "127.0.0.3", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_goes_on_while_nats_is_killed_and_the_queue_flushes_in_order() {
    let dir = TempDir::new("bus-kill");
    let mut nats = NatsServer::start_js(&dir);
    let rec = Recorder::create(&nats.url()).await;
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &cfg(&[&game], &[nats.url()], "hf1", ""));
    rec.wait("hello", |m| m.kind() == "presence.hello").await;
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    rec.wait("Alice's login", |m| m.kind() == "session.login")
        .await;

    nats.kill();
    for i in 0..20 {
        alice
            .send(&format!("say line {i} while the bus is down"))
            .await;
        alice
            .expect(&format!("You say, \"line {i} while the bus is down\""))
            .await;
    }
    // Events of a whole session while NATS is away: queued.
    let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;
    bob.send("say hi").await;
    bob.expect("You say, \"hi\"").await;
    bob.send("QUIT").await;
    bob.expect_closed().await;
    wait_logs(&proxy, "session closed", 1).await;

    nats.restart();
    let all = rec
        .wait("Bob's close", |m| {
            m.kind() == "session.close" && m.json["user"] == "Bob"
        })
        .await;
    let evs = dedup(events_only(all.clone()));
    for w in evs.windows(2) {
        assert!(
            seq_of(&w[0]) < seq_of(&w[1]),
            "out of order: {} then {}",
            w[0].raw,
            w[1].raw
        );
    }
    let bob_open = pos(&evs, "session.login", |e| e["user"] == "Bob");
    let bob_close = pos(&evs, "session.close", |e| e["user"] == "Bob");
    assert!(bob_open < bob_close);
    // The instance said hello again on reconnecting.
    let hellos = all.iter().filter(|m| m.kind() == "presence.hello").count();
    assert!(hellos >= 2, "one hello per connection, saw {hellos}");
    alice.send("say still here").await;
    alice.expect("You say, \"still here\"").await;
    assert_no_secrets(&all, SECRETS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_goes_on_while_nats_hangs() {
    let dir = TempDir::new("bus-freeze");
    let nats = NatsServer::start_js(&dir);
    let rec = Recorder::create(&nats.url()).await;
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &cfg(&[&game], &[nats.url()], "hf1", ""));
    rec.wait("hello", |m| m.kind() == "presence.hello").await;
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;

    // SIGSTOP: the server keeps every socket open and reads nothing.
    nats.freeze();
    for i in 0..10 {
        let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;
        bob.send("QUIT").await;
        bob.expect_closed().await;
        alice.send(&format!("say frozen {i}")).await;
        alice.expect(&format!("You say, \"frozen {i}\"")).await;
    }
    wait_logs(&proxy, "session closed", 10).await;
    // Unconfirmed events are resent, and a server that stays silent is
    // dropped for a fresh connection (two ack timeouts of 5 s).
    let t0 = Instant::now();
    while !proxy
        .logs()
        .contains("NATS server stopped answering; reconnecting")
    {
        assert!(t0.elapsed() < Duration::from_secs(20), "{}", proxy.logs());
        alice.send("say waiting").await;
        alice.expect("You say, \"waiting\"").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nats.thaw();
    // Recovery may take two ack timeouts and a reconnect.
    let t0 = Instant::now();
    let evs = loop {
        let evs = dedup(events_only(rec.all().await));
        let closes = evs
            .iter()
            .filter(|m| m.kind() == "session.close" && m.json["user"] == "Bob")
            .count();
        if closes == 10 {
            break evs;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "only {closes} of Bob's closes arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for w in evs.windows(2) {
        assert!(
            seq_of(&w[0]) < seq_of(&w[1]),
            "out of order: {} then {}",
            w[0].raw,
            w[1].raw
        );
    }
    alice.send("say thawed").await;
    alice.expect("You say, \"thawed\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_crash_during_nats_outage_is_reported_after_it() {
    let dir = TempDir::new("bus-crash-outage");
    let mut nats = NatsServer::start_js(&dir);
    let rec = Recorder::create(&nats.url()).await;
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &cfg(&[&game], &[nats.url()], "hf1", ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    rec.wait("Alice's login", |m| m.kind() == "session.login")
        .await;

    nats.kill();
    game.kill();
    alice.expect("Test MUSH is down").await;
    game.restart();
    alice.expect("Test MUSH is back").await;
    let before_restart = holdfast::bus::rfc3339(SystemTime::now());
    nats.restart();

    rec.wait("backend.up after the outage", |m| {
        m.kind() == "backend.up" && m.json.get("down_for_s").is_some()
    })
    .await;
    let all = rec
        .wait("session.restored", |m| m.kind() == "session.restored")
        .await;
    let evs = dedup(events_only(all));
    let down = pos(&evs, "backend.down", |e| e["backend"] == "b0");
    let up = pos(&evs, "backend.up", |e| e.get("down_for_s").is_some());
    let held = pos(&evs, "session.held", |e| e["user"] == "Alice");
    let restored = pos(&evs, "session.restored", |e| e["user"] == "Alice");
    assert!(down < up && held < restored, "{evs:#?}");
    for i in [down, up, held, restored] {
        check_common(&evs[i], "hf1", GAME);
        // Stamped when it happened, not when NATS came back.
        let t = evs[i].json["time"].as_str().unwrap();
        assert!(t <= before_restart.as_str(), "{t} > {before_restart}");
    }
    assert_eq!(evs[down].json["addr"], game.addr.to_string());
}

/// Waits until messages published on any node reach subscribers on every
/// other node.
async fn wait_cluster_ready(urls: &[String]) {
    let clients: Vec<async_nats::Client> =
        futures::future::join_all(urls.iter().map(|u| connect(u))).await;
    let mut subs = Vec::new();
    for c in &clients {
        subs.push(c.subscribe("ready.>").await.unwrap());
    }
    let n = clients.len();
    let mut seen = vec![std::collections::HashSet::new(); n];
    let t0 = Instant::now();
    while seen.iter().any(|s| s.len() < n) {
        assert!(t0.elapsed() < WAIT, "cluster routes never formed");
        for (i, c) in clients.iter().enumerate() {
            c.publish(format!("ready.{i}"), "x".into()).await.unwrap();
            c.flush().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (j, s) in subs.iter_mut().enumerate() {
            use futures::StreamExt;
            while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(1), s.next()).await {
                seen[j].insert(m.subject.to_string());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_node_loss_is_survived() {
    let dir = TempDir::new("bus-cluster");
    let mut nodes = cluster(&dir, 3);
    let urls: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    wait_cluster_ready(&urls).await;
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &cfg(&[&game], &urls, "hf1", ""));

    // Which node is holdfast on? Ask it.
    let probe = connect(&urls[0]).await;
    let st = request(&probe, "hf1", "status", "").await;
    let server = st["bus"]["server"].as_str().unwrap().to_string();
    let k = nodes
        .iter()
        .position(|n| server.ends_with(&format!(":{}", n.port)))
        .unwrap_or_else(|| panic!("holdfast on an unknown node: {st}"));
    let j = (k + 1) % 3;
    let watch = Watch::start(&urls[j]).await;
    let _alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    watch
        .wait_event("session.login", |e| e["user"] == "Alice")
        .await;

    nodes[k].kill();
    let _bob = Client::login(proxy.addr, "Bob", "bobpw").await;
    let ev = watch
        .wait_event("session.login", |e| e["user"] == "Bob")
        .await;
    check_common(
        &watch.events().into_iter().find(|m| m.json == ev).unwrap(),
        "hf1",
        GAME,
    );
    // It said hello on its new node, and answers requests there.
    watch
        .wait("hello after failover", |m| m.kind() == "presence.hello")
        .await;
    let st = request(&watch.client, "hf1", "status", "").await;
    let now_on = st["bus"]["server"].as_str().unwrap();
    assert_ne!(now_on, server, "{st}");
    assert_eq!(st["bus"]["connected"], true);
    assert_eq!(st["sessions"]["logged_in"], 2, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_status_sessions_announce_failover_reload() {
    let dir = TempDir::new("bus-rpc");
    let nats = NatsServer::start();
    let watch = Watch::start(&nats.url()).await;
    let g0 = Game::start(&dir, &[]);
    let g1 = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &cfg(
            &[&g0, &g1],
            &[nats.url()],
            "hf1",
            r#"rpc_allow = ["status", "sessions", "failover", "announce", "reload"]"#,
        ),
    );
    let c = &watch.client;
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    watch.wait_event("session.login", |_| true).await;

    // status
    let st = request(c, "hf1", "status", "").await;
    assert_eq!(st["instance"], "hf1", "{st}");
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["game"], GAME);
    assert_eq!(st["active"], "b0");
    assert_eq!(st["backends"][0]["name"], "b0");
    assert_eq!(st["backends"][0]["addr"], g0.addr.to_string());
    assert!(st["backends"][0]["since"].is_string());
    assert_eq!(st["backends"][1]["name"], "b1");
    assert_eq!(st["sessions"]["total"], 1);
    assert_eq!(st["sessions"]["logged_in"], 1);
    assert_eq!(st["sessions"]["held"], 0);
    assert_eq!(st["events"]["dropped_channel"], 0);
    assert_eq!(st["events"]["dropped_overflow"], 0);
    assert_eq!(st["bus"]["connected"], true);
    assert!(st["uptime_s"].is_u64() && st["refused"].is_u64() && st["reload_failures"] == 0);

    // sessions
    let ss = request(c, "hf1", "sessions", "").await;
    assert_eq!(ss["total"], 1, "{ss}");
    let s0 = &ss["sessions"][0];
    assert_eq!(s0["user"], "Alice");
    assert_eq!(s0["backend"], "b0");
    assert_eq!(s0["phase"], "relaying");
    assert!(s0.get("ip").is_none(), "ip without publish_ip: {ss}");

    // announce: to everyone, then only to players on one backend.
    let r = request(c, "hf1", "announce", r#"{"text": "Reboot in 5 minutes"}"#).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["sessions"], 1);
    alice.expect("Reboot in 5 minutes").await;
    let r = request(
        c,
        "hf1",
        "announce",
        r#"{"text": "only on b1", "backend": "b1"}"#,
    )
    .await;
    assert_eq!(r["sessions"], 0, "{r}");
    let r = request(
        c,
        "hf1",
        "announce",
        r#"{"text": "only on b0", "backend": "b0"}"#,
    )
    .await;
    assert_eq!(r["sessions"], 1, "{r}");
    let seen = alice.expect("only on b0").await;
    assert!(!seen.contains("only on b1"), "{seen}");
    // Between lines: the notice is a line of its own.
    assert!(
        alice.text.lines().any(|l| l.trim_end() == "only on b0"),
        "{}",
        alice.text
    );
    for (body, needle) in [
        ("{}", "text"),
        (r#"{"text": 5}"#, "text"),
        (r#"{"text": "  "}"#, "empty"),
        (r#"{"text": "x", "backend": "nope"}"#, "no backend named"),
        (r#"{"text": "x", "colour": "red"}"#, "unknown argument"),
    ] {
        let r = request(c, "hf1", "announce", body).await;
        assert!(
            r["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{body} -> {r}"
        );
    }

    // failover
    let r = request(c, "hf1", "failover", "").await;
    assert!(r["error"].as_str().unwrap().contains("backend"), "{r}");
    let r = request(c, "hf1", "failover", r#"{"backend": "nope"}"#).await;
    assert!(
        r["error"].as_str().unwrap().contains("no backend named"),
        "{r}"
    );
    let r = request(c, "hf1", "failover", r#"{"backend": "b1"}"#).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["from"], "b0");
    assert_eq!(r["to"], "b1");
    let ev = watch.wait_event("failover", |_| true).await;
    assert_eq!(
        (&ev["from"], &ev["to"], &ev["reason"]),
        (&"b0".into(), &"b1".into(), &"request".into())
    );
    alice.expect("Moving you to b1").await;
    g1.wait_event("Alice on b1", |e| e["t"] == "login" && e["user"] == "Alice")
        .await;
    let st = request(c, "hf1", "status", "").await;
    assert_eq!(st["active"], "b1");

    // unknown method, bad JSON
    let r = request(c, "hf1", "frobnicate", "{}").await;
    assert!(
        r["error"].as_str().unwrap().contains("unknown method"),
        "{r}"
    );
    assert_eq!(r["methods"].as_array().unwrap().len(), 6);
    assert_eq!(r["instance"], "hf1");
    let r = request(c, "hf1", "status", "{not json").await;
    assert!(
        r["error"].as_str().unwrap().contains("not valid JSON"),
        "{r}"
    );

    // reload: fine, then a broken file (nothing changes, reported).
    let r = request(c, "hf1", "reload", "").await;
    assert_eq!(r["ok"], true, "{r}");
    watch
        .wait_event("config.reloaded", |e| e["ok"] == true)
        .await;
    let good = std::fs::read_to_string(&proxy.config).unwrap();
    std::fs::write(&proxy.config, format!("{good}\nbogus_key = 1\n")).unwrap();
    let r = request(c, "hf1", "reload", "").await;
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("bogus_key"), "{r}");
    let ev = watch
        .wait_event("config.reloaded", |e| e["ok"] == false)
        .await;
    assert!(ev["error"].as_str().unwrap().contains("bogus_key"), "{ev}");
    let st = request(c, "hf1", "status", "").await;
    assert_eq!(st["reload_failures"], 1);
    alice.send("say still fine").await;
    alice.expect("You say, \"still fine\"").await;
    assert_no_secrets(&watch.all(), SECRETS);
}

fn holdfast_status(config: &std::path::Path, json: bool) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    cmd.arg("status").arg("-c").arg(config);
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("run holdfast status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_answers_and_holdfast_status_prints_them() {
    let dir = TempDir::new("bus-status");
    let nats = NatsServer::start();
    let game = Game::start(&dir, &[]);
    let a = Proxy::start(&dir, &cfg(&[&game], &[nats.url()], "hf-a", ""));
    let b = Proxy::start(&dir, &cfg(&[&game], &[nats.url()], "hf-b", ""));
    let _alice = Client::login(a.addr, "Alice", "alicepw").await;
    let client = connect(&nats.url()).await;
    // Both must be subscribed before an all-instances request can see them.
    request(&client, "hf-a", "status", "").await;
    request(&client, "hf-b", "status", "").await;

    let subjects = holdfast::bus::Subjects {
        prefix: PREFIX.into(),
        instance: "test".into(),
    };
    let replies = holdfast::bus::ask_all(
        &client,
        &subjects,
        "status",
        bytes::Bytes::new(),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let names: Vec<&str> = replies
        .iter()
        .map(|r| r["instance"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hf-a", "hf-b"]);

    // The table.
    let out = holdfast_status(&a.config, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("INSTANCE"), "{text}");
    let row_a = lines.iter().find(|l| l.starts_with("hf-a")).expect(&text);
    let cols: Vec<&str> = row_a.split("  ").filter(|c| !c.trim().is_empty()).collect();
    assert!(
        cols.contains(&"Test MUSH") && cols.contains(&"b0"),
        "{text}"
    );
    assert!(lines.iter().any(|l| l.starts_with("hf-b")), "{text}");
    assert!(
        lines.iter().any(|l| l.contains("* b0")
            && l.contains(&game.addr.to_string())
            && l.contains(" up ")
            && l.contains("since")),
        "{text}"
    );
    // JSON.
    let out = holdfast_status(&b.config, true);
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v[0]["instance"], "hf-a");
    assert_eq!(v[0]["sessions"]["logged_in"], 1);
    assert_eq!(v[1]["sessions"]["logged_in"], 0);

    // Nobody answering is an error, not an empty table.
    let lonely = dir.path("lonely.toml");
    std::fs::write(
        &lonely,
        format!(
            "{}\n[[backends]]\nname = \"x\"\naddr = \"127.0.0.1:1\"\n",
            bus_toml(&[nats.url()], "x", "").replace(PREFIX, "hf.nobody")
        ),
    )
    .unwrap();
    let out = holdfast_status(&lonely, false);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no instance answered"));
    // NATS unreachable: a clear error.
    let nowhere = dir.path("nowhere.toml");
    std::fs::write(
        &nowhere,
        format!(
            "{}\n[[backends]]\nname = \"x\"\naddr = \"127.0.0.1:1\"\n",
            bus_toml(&[format!("nats://127.0.0.1:{}", free_port())], "x", "")
        ),
    )
    .unwrap();
    let out = holdfast_status(&nowhere, false);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach NATS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_tells_stopped_from_vanished() {
    let dir = TempDir::new("bus-presence");
    let nats = NatsServer::start();
    let watch = Watch::start(&nats.url()).await;
    let game = Game::start(&dir, &[]);
    let mut a = Proxy::start(&dir, &cfg(&[&game], &[nats.url()], "hf-a", ""));
    let mut b = Proxy::start(&dir, &cfg(&[&game], &[nats.url()], "hf-b", ""));
    let of = |inst: &'static str, kind: &'static str| {
        move |m: &Msg| m.kind() == kind && m.json["instance"] == inst
    };
    for inst in ["hf-a", "hf-b"] {
        watch.wait("hello", of(inst, "presence.hello")).await;
    }
    // Heartbeats come every presence_interval (300ms here).
    let t0 = Instant::now();
    while watch
        .all()
        .iter()
        .filter(|m| of("hf-a", "presence.heartbeat")(m))
        .count()
        < 2
    {
        assert!(t0.elapsed() < WAIT, "no heartbeats");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hb = watch
        .wait("heartbeat", of("hf-a", "presence.heartbeat"))
        .await;
    assert!(hb.json["heartbeat_s"].as_f64().unwrap() > 0.0);
    assert!(hb.json["id"].is_string() && hb.json["v"] == 1 && hb.json["version"].is_string());

    assert_eq!(a.stop(), Some(0));
    watch.wait("goodbye", of("hf-a", "presence.goodbye")).await;
    // hf-b vanishes: killed, no goodbye, heartbeats stop.
    b.kill();
    let beats = || {
        watch
            .all()
            .iter()
            .filter(|m| of("hf-b", "presence.heartbeat")(m))
            .count()
    };
    let n = beats();
    // A third instance's heartbeats pace the wait.
    let _c = Proxy::start(&dir, &cfg(&[&game], &[nats.url()], "hf-c", ""));
    let t0 = Instant::now();
    while watch
        .all()
        .iter()
        .filter(|m| of("hf-c", "presence.heartbeat")(m))
        .count()
        < 3
    {
        assert!(t0.elapsed() < WAIT, "no heartbeats from hf-c");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(beats(), n, "heartbeats after death");
    assert!(!watch.all().iter().any(of("hf-b", "presence.goodbye")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_without_nats_and_delivers_once_it_appears() {
    let dir = TempDir::new("bus-late");
    // Create the recording stream, then take NATS away before the proxy
    // starts; the restarted server recovers the stream before it accepts
    // clients, so it records whatever the proxy publishes first.
    let mut nats = NatsServer::start_js(&dir);
    let rec = Recorder::create(&nats.url()).await;
    nats.kill();
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &cfg(&[&game], &[nats.url()], "hf1", ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    alice.send("say no bus yet").await;
    alice.expect("You say, \"no bus yet\"").await;
    nats.restart();
    let all = rec
        .wait("Alice's login", |m| m.kind() == "session.login")
        .await;
    let evs = events_only(all);
    let start = pos(&evs, "proxy.start", |_| true);
    let login = pos(&evs, "session.login", |e| e["user"] == "Alice");
    assert!(start < login);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_overflow_drops_the_oldest_and_status_counts_them() {
    let dir = TempDir::new("bus-overflow");
    let mut nats = NatsServer::start_js(&dir);
    let rec = Recorder::create(&nats.url()).await;
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &cfg(&[&game], &[nats.url()], "hf1", "queue_size = 4"));
    rec.wait("hello", |m| m.kind() == "presence.hello").await;
    rec.wait("backend up", |m| m.kind() == "backend.up").await;
    let before = rec.all().await;
    let last_seq = events_only(before).iter().map(seq_of).max().unwrap();

    nats.kill();
    // Five sessions open and close: ten events for a queue of four.
    for _ in 0..5 {
        let mut c = Client::connect(proxy.addr).await;
        c.expect("connect <name>").await;
        drop(c);
    }
    wait_logs(&proxy, "session closed", 5).await;
    nats.restart();
    let probe = connect(&nats.url()).await;
    let st = request(&probe, "hf1", "status", "").await;
    assert_eq!(st["events"]["dropped_overflow"], 6, "{st}");
    let evs: Vec<Msg> = rec
        .wait("the last close", |m| {
            m.kind() == "session.close" && seq_of(m) == last_seq + 10
        })
        .await;
    let after: Vec<u64> = dedup(events_only(evs))
        .iter()
        .map(seq_of)
        .filter(|s| *s > last_seq)
        .collect();
    // The newest four survived, in order. (An event the client library
    // took just before it noticed the outage may also arrive: it had left
    // the queue before the overflow. It is older, so order holds.)
    let newest: Vec<u64> = (last_seq + 7..=last_seq + 10).collect();
    assert!(after.ends_with(&newest), "{after:?}");
    assert!(after.windows(2).all(|w| w[0] < w[1]), "{after:?}");
    assert!(after.len() <= 6, "overflow dropped nothing: {after:?}");
}

// ----- authentication and TLS ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_password_token_and_nkey_authentication() {
    let dir = TempDir::new("bus-auth");
    let game = Game::start(&dir, &[]);

    // user + password
    let nats = NatsServer::start_with(vec![
        "--user".into(),
        "hf".into(),
        "--pass".into(),
        "nats-Pw-913".into(),
    ]);
    let opts =
        async_nats::ConnectOptions::with_user_and_password("hf".into(), "nats-Pw-913".into());
    let watch = Watch::with_client(connect_with(&nats.url(), opts).await).await;
    let _p = Proxy::start(
        &dir,
        &cfg(
            &[&game],
            &[nats.url()],
            "hf-user",
            "user = \"hf\"\npassword = \"nats-Pw-913\"",
        ),
    );
    watch
        .wait_event("proxy.start", |e| e["instance"] == "hf-user")
        .await;
    // A wrong password: no bus, but the proxy runs and relays; the
    // password is in no log line.
    let wrong = Proxy::start(
        &dir,
        &cfg(
            &[&game],
            &[nats.url()],
            "hf-wrong",
            "user = \"hf\"\npassword = \"wrong-Pw-555\"",
        ),
    );
    let mut c = Client::login(wrong.addr, "Alice", "alicepw").await;
    c.send("say relayed anyway").await;
    c.expect("You say, \"relayed anyway\"").await;
    wrong.wait_log("cannot reach NATS").await;
    assert!(!wrong.logs().contains("wrong-Pw-555"));
    assert!(!watch.all().iter().any(|m| m.json["instance"] == "hf-wrong"));

    // token
    let nats = NatsServer::start_with(vec!["--auth".into(), "tok-Secret-42".into()]);
    let opts = async_nats::ConnectOptions::with_token("tok-Secret-42".into());
    let watch = Watch::with_client(connect_with(&nats.url(), opts).await).await;
    let _p = Proxy::start(
        &dir,
        &cfg(
            &[&game],
            &[nats.url()],
            "hf-token",
            "token = \"tok-Secret-42\"",
        ),
    );
    watch
        .wait_event("proxy.start", |e| e["instance"] == "hf-token")
        .await;

    // NKey
    let kp = nkeys::KeyPair::new_user();
    let seed = kp.seed().unwrap();
    let conf = dir.path("nkey.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            kp.public_key()
        ),
    )
    .unwrap();
    let nats = NatsServer::start_with(vec!["-c".into(), conf.display().to_string()]);
    let opts = async_nats::ConnectOptions::with_nkey(seed.clone());
    let watch = Watch::with_client(connect_with(&nats.url(), opts).await).await;
    let seed_file = dir.path("seed.nk");
    std::fs::write(&seed_file, format!("{seed}\n")).unwrap();
    let p = Proxy::start(
        &dir,
        &cfg(
            &[&game],
            &[nats.url()],
            "hf-nkey",
            &format!("nkey_seed_file = {:?}", seed_file.display().to_string()),
        ),
    );
    watch
        .wait_event("proxy.start", |e| e["instance"] == "hf-nkey")
        .await;
    assert!(!p.logs().contains(&seed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_without_permission_for_inbox_confirmations() {
    let dir = TempDir::new("bus-perm");
    let conf = dir.path("perm.conf");
    std::fs::write(
        &conf,
        r#"authorization { users = [
            { user: hf, password: "hf-Pw-1", permissions: { subscribe: { deny: ["_INBOX.>"] } } },
            { user: watcher, password: "w-Pw-2" }
        ] }
        "#,
    )
    .unwrap();
    let nats = NatsServer::start_with(vec!["-c".into(), conf.display().to_string()]);
    let opts =
        async_nats::ConnectOptions::with_user_and_password("watcher".into(), "w-Pw-2".into());
    let watch = Watch::with_client(connect_with(&nats.url(), opts).await).await;
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &cfg(
            &[&game],
            &[nats.url()],
            "hf1",
            "user = \"hf\"\npassword = \"hf-Pw-1\"",
        ),
    );
    watch.wait_event("proxy.start", |_| true).await;
    proxy.wait_log("without confirmation").await;
    let _alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    watch
        .wait_event("session.login", |e| e["user"] == "Alice")
        .await;
}

/// base64url without padding, as JWTs use it.
fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A NATS JWT with `claims`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, sub: &str, name: &str, nats: Value) -> String {
    let claims = serde_json::json!({
        "jti": format!("HFTEST{}", rand::random::<u64>()),
        "iat": SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
        "iss": issuer.public_key(),
        "name": name,
        "sub": sub,
        "nats": nats,
    });
    let head = b64url(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = b64url(claims.to_string().as_bytes());
    let signed = format!("{head}.{body}");
    let sig = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64url(&sig))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_file_authentication() {
    let dir = TempDir::new("bus-creds");
    // Operator mode: operator -> account -> user, the account preloaded
    // into the server's memory resolver.
    let op = nkeys::KeyPair::new_operator();
    let acc = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let op_jwt = jwt(
        &op,
        &op.public_key(),
        "hf-op",
        serde_json::json!({"type": "operator", "version": 2}),
    );
    let unlimited = serde_json::json!({"subs": -1, "data": -1, "payload": -1, "imports": -1,
        "exports": -1, "wildcards": true, "conn": -1, "leaf": -1});
    let acc_jwt = jwt(
        &op,
        &acc.public_key(),
        "hf-acc",
        serde_json::json!({"limits": unlimited, "type": "account", "version": 2}),
    );
    let user_jwt = jwt(
        &acc,
        &user.public_key(),
        "hf-user",
        serde_json::json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2}),
    );
    let conf = dir.path("op.conf");
    std::fs::write(
        &conf,
        format!(
            "operator: \"{op_jwt}\"\nresolver: MEMORY\nresolver_preload: {{ {}: \"{acc_jwt}\" }}\n",
            acc.public_key()
        ),
    )
    .unwrap();
    let creds = dir.path("hf.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        ),
    )
    .unwrap();
    let nats = NatsServer::start_with(vec!["-c".into(), conf.display().to_string()]);
    // The server really demands credentials.
    assert!(async_nats::connect(nats.url()).await.is_err());
    let opts = async_nats::ConnectOptions::with_credentials_file(&creds)
        .await
        .unwrap();
    let watch = Watch::with_client(connect_with(&nats.url(), opts).await).await;
    let game = Game::start(&dir, &[]);
    let _p = Proxy::start(
        &dir,
        &cfg(
            &[&game],
            &[nats.url()],
            "hf-creds",
            &format!("credentials_file = {:?}", creds.display().to_string()),
        ),
    );
    watch
        .wait_event("proxy.start", |e| e["instance"] == "hf-creds")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let dir = TempDir::new("bus-tls");
    certs::make_cert_with(&dir, "server", certs::Key::Rsa);
    let nats = NatsServer::start_with(vec![
        "--tls".into(),
        "--tlscert".into(),
        dir.path("server.pem").display().to_string(),
        "--tlskey".into(),
        dir.path("server.key").display().to_string(),
    ]);
    let ca = dir.path("ca.pem");
    let opts = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(ca.clone());
    let watch = Watch::with_client(connect_with(&nats.url(), opts).await).await;
    let game = Game::start(&dir, &[]);
    let _p = Proxy::start(
        &dir,
        &cfg(
            &[&game],
            &[nats.url()],
            "hf-tls",
            &format!("tls = true\ntls_ca_file = {:?}", ca.display().to_string()),
        ),
    );
    watch
        .wait_event("proxy.start", |e| e["instance"] == "hf-tls")
        .await;
    let st = request(&watch.client, "hf-tls", "status", "").await;
    assert_eq!(st["bus"]["connected"], true);
}
