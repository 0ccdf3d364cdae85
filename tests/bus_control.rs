//! The control plane (issue 16): requests that change things only when
//! `bus.rpc_allow` lists them, NATS permissions that keep `failover` to
//! operators, and a `holdfast status` that answers as soon as every
//! instance has, and speaks plainly when it cannot. Real nats-server
//! processes on dynamic loopback ports.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::bus::*;
use common::nats::*;
use common::*;
use serde_json::Value;

const ALLOW_ALL: &str = r#"rpc_allow = ["status", "sessions", "failover", "announce", "reload"]"#;

fn cfg(games: &[&Game], servers: &[String], instance: &str, bus_extra: &str) -> String {
    config_for(games, &bus_toml(servers, instance, bus_extra))
}

fn holdfast_status(config: &std::path::Path) -> (std::process::Output, Duration) {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["status", "--json", "-c"])
        .arg(config)
        .output()
        .expect("run holdfast status");
    (out, t0.elapsed())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_requests_are_refused_unless_allowed() {
    let dir = TempDir::new("ctl-allow");
    let nats = NatsServer::start();
    let watch = Watch::start(&nats.url()).await;
    let g0 = Game::start(&dir, &[]);
    let g1 = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &cfg(&[&g0, &g1], &[nats.url()], "hf1", ""));
    let c = &watch.client;
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    watch.wait_event("session.login", |_| true).await;

    // Read-only requests are answered by default.
    assert_eq!(request(c, "hf1", "status", "").await["active"], "b0");
    assert_eq!(request(c, "hf1", "sessions", "").await["total"], 1);
    for (method, body) in [
        ("failover", r#"{"backend": "b1"}"#),
        ("announce", r#"{"text": "sneaky"}"#),
        ("reload", ""),
        ("upgrade", ""),
    ] {
        let r = request(c, "hf1", method, body).await;
        let e = r["error"].as_str().unwrap_or_default();
        assert!(
            e.contains(method) && e.contains("rpc_allow"),
            "{method}: {r}"
        );
        assert_eq!(r["allowed"], serde_json::json!(["status", "sessions"]));
        assert_eq!(r["instance"], "hf1");
    }
    assert_eq!(proxy.logs().matches("request refused").count(), 4);
    assert_eq!(request(c, "hf1", "status", "").await["active"], "b0");
    alice.send("say after the refusals").await;
    let seen = alice.expect("You say, \"after the refusals\"").await;
    assert!(!seen.contains("sneaky"), "{seen}");
    // The presence message says what is answered.
    let hello = watch.wait("hello", |m| m.kind() == "presence.hello").await;
    assert_eq!(
        hello.json["allowed"],
        serde_json::json!(["status", "sessions"])
    );

    // An operator opts in, and a reload applies it.
    proxy.rewrite(&cfg(
        &[&g0, &g1],
        &[nats.url()],
        "hf1",
        r#"rpc_allow = ["status", "announce"]"#,
    ));
    proxy.sighup();
    watch
        .wait_event("config.reloaded", |e| e["ok"] == true)
        .await;
    let r = request(c, "hf1", "announce", r#"{"text": "now allowed"}"#).await;
    assert_eq!(r["ok"], true, "{r}");
    alice.expect("now allowed").await;
    let r = request(c, "hf1", "sessions", "").await;
    assert!(r["error"].as_str().unwrap().contains("rpc_allow"), "{r}");
}

/// A nats-server whose accounts follow `docs/bus-and-irc.md` (Control
/// plane): `proxy` may publish
/// events and presence and serve requests, `relay` may read events and
/// ask `status`/`sessions`, `operator` may send any request.
fn permissions_conf(dir: &TempDir) -> std::path::PathBuf {
    let conf = dir.path("perms.conf");
    let store = dir.path("js-perms");
    std::fs::write(
        &conf,
        format!(
            r#"
jetstream {{ store_dir: "{store}" }}
accounts {{
  GAME {{
    jetstream: enabled
    users = [
      {{ user: proxy, password: "proxy-Pw-1", permissions: {{
          publish: {{ allow: ["{p}.event.>", "{p}.presence", "_INBOX.>",
                              "$JS.API.STREAM.INFO.HOLDFAST_EVENTS",
                              "$JS.API.STREAM.CREATE.HOLDFAST_EVENTS",
                              "$JS.API.STREAM.UPDATE.HOLDFAST_EVENTS"] }}
          subscribe: {{ allow: ["{p}.rpc.hf1.*", "{p}.rpc.all.*", "{p}.presence", "_INBOX.>"] }}
      }} }}
      {{ user: relay, password: "relay-Pw-2", permissions: {{
          publish: {{ allow: ["{p}.rpc.*.status", "{p}.rpc.*.sessions",
                              "$JS.API.STREAM.INFO.HOLDFAST_EVENTS",
                              "$JS.API.STREAM.CREATE.HOLDFAST_EVENTS",
                              "$JS.API.STREAM.UPDATE.HOLDFAST_EVENTS",
                              "$JS.API.CONSUMER.*.HOLDFAST_EVENTS.>",
                              "$JS.API.CONSUMER.DURABLE.CREATE.HOLDFAST_EVENTS.>",
                              "$JS.API.CONSUMER.MSG.NEXT.HOLDFAST_EVENTS.>",
                              "$JS.ACK.HOLDFAST_EVENTS.>"] }}
          subscribe: {{ allow: ["{p}.event.>", "{p}.presence", "_INBOX.>"] }}
      }} }}
      {{ user: admin, password: "admin-Pw-4" }}
      {{ user: operator, password: "op-Pw-3", permissions: {{
          publish: {{ allow: ["{p}.rpc.>"] }}
          subscribe: {{ allow: ["{p}.>", "_INBOX.>"] }}
      }} }}
    ]
  }}
}}
"#,
            store = store.display(),
            p = PREFIX
        ),
    )
    .unwrap();
    conf
}

async fn as_user(url: &str, user: &str, pass: &str) -> async_nats::Client {
    connect_with(
        url,
        async_nats::ConnectOptions::with_user_and_password(user.into(), pass.into()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_permissions_keep_failover_to_operators() {
    let dir = TempDir::new("ctl-perms");
    let conf = permissions_conf(&dir);
    let nats = NatsServer::start_args(free_port(), vec!["-c".into(), conf.display().to_string()]);
    let g0 = Game::start(&dir, &[]);
    let g1 = Game::start(&dir, &[]);
    let proxy = Proxy::start_with(
        &dir,
        &cfg(
            &[&g0, &g1],
            &[nats.url()],
            "hf1",
            &format!(
                "user = \"proxy\"\npassword_env = \"HF_NATS_PW\"\njetstream = true\n{ALLOW_ALL}"
            ),
        ),
        "holdfast=debug",
        &[("HF_NATS_PW", "proxy-Pw-1")],
    );
    let operator = Watch::with_client(as_user(&nats.url(), "operator", "op-Pw-3").await).await;
    let relay = as_user(&nats.url(), "relay", "relay-Pw-2").await;
    let mut relay_events = {
        use futures::StreamExt;
        let s = relay.subscribe(format!("{PREFIX}.event.>")).await.unwrap();
        relay.flush().await.unwrap();
        s.map(|m| m.subject.to_string())
    };
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    operator
        .wait_event("session.login", |e| e["user"] == "Alice")
        .await;
    // The proxy's permissions are enough for the events stream too.
    let st = request(&operator.client, "hf1", "status", "").await;
    assert_eq!(st["bus"]["stream"], true, "{st}\n{}", proxy.logs());
    // The relay reads events and may ask for status...
    {
        use futures::StreamExt;
        let first = tokio::time::timeout(WAIT, relay_events.next()).await;
        assert!(matches!(first, Ok(Some(_))), "relay saw no event");
    }
    let st = request(&relay, "hf1", "status", "").await;
    assert_eq!(st["active"], "b0", "{st}");
    // ...but cannot call failover: the server refuses the publish, so no
    // instance ever sees the request.
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        relay.request(
            format!("{PREFIX}.rpc.hf1.failover"),
            r#"{"backend": "b1"}"#.into(),
        ),
    )
    .await;
    assert!(
        !matches!(r, Ok(Ok(_))),
        "the relay user got an answer: {r:?}"
    );
    assert_eq!(request(&relay, "hf1", "status", "").await["active"], "b0");
    assert!(!proxy.logs().contains("failover requested over the bus"));

    // The operator can.
    let r = request(&operator.client, "hf1", "failover", r#"{"backend": "b1"}"#).await;
    assert_eq!(r["ok"], true, "{r}");
    alice.expect("Moving you to b1").await;
    assert_eq!(
        request(&operator.client, "hf1", "status", "").await["active"],
        "b1"
    );
    proxy.assert_no_passwords();
    assert!(!proxy.logs().contains("proxy-Pw-1"));

    // `holdfast irc` as the relay user reads through its durable consumer
    // and acks (its IRC server is nowhere; the bus side runs anyway).
    let relay_conf = format!(
        "{}[irc]\nserver = \"127.0.0.1:{}\"\nchannels = [\"#c\"]\n",
        cfg(
            &[&g0],
            &[nats.url()],
            "relay",
            "user = \"relay\"\npassword = \"relay-Pw-2\"\njetstream = true"
        ),
        free_port()
    );
    let irc = common::irc_watch::RelayProc::start(&dir, &relay_conf);
    irc.wait_log_n("reading events through JetStream", 1).await;
    alice.send("QUIT").await;
    alice.expect_closed().await;
    let admin = as_user(&nats.url(), "admin", "admin-Pw-4").await;
    let js = async_nats::jetstream::new(admin);
    let t0 = Instant::now();
    loop {
        let stream = js.get_stream("HOLDFAST_EVENTS").await.unwrap();
        let last = stream.cached_info().state.last_sequence;
        let names: Vec<String> = {
            use futures::TryStreamExt;
            stream.consumer_names().try_collect().await.unwrap()
        };
        assert_eq!(names.len(), 1, "{names:?}");
        let mut c: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer(&names[0]).await.unwrap();
        let info = c.info().await.unwrap().clone();
        if info.ack_floor.stream_sequence >= last && info.num_pending == 0 {
            break;
        }
        assert!(
            t0.elapsed() < WAIT * 2,
            "relay never acked up to {last}: {info:?}\n{}",
            irc.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !irc.logs().contains("reading them plainly"),
        "{}",
        irc.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holdfast_status_answers_once_every_instance_has() {
    let dir = TempDir::new("ctl-status");
    let nats = NatsServer::start();
    let game = Game::start(&dir, &[]);
    let _a = Proxy::start(&dir, &cfg(&[&game], &[nats.url()], "hf-a", ""));
    let _b = Proxy::start(&dir, &cfg(&[&game], &[nats.url()], "hf-b", ""));
    let client = connect(&nats.url()).await;
    // Each has heard the other's presence.
    for me in ["hf-a", "hf-b"] {
        let t0 = Instant::now();
        while request(&client, me, "status", "").await["bus"]["peers"]
            != serde_json::json!(["hf-a", "hf-b"])
        {
            assert!(t0.elapsed() < WAIT, "{me} never saw both in presence");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A status config that would wait a minute for stragglers.
    let conf = dir.path("status.toml");
    std::fs::write(
        &conf,
        format!(
            "{}\n[[backends]]\nname = \"x\"\naddr = \"127.0.0.1:1\"\n",
            bus_toml(&[nats.url()], "x", "")
                .replace("request_timeout = \"1s\"", "request_timeout = \"60s\"")
        ),
    )
    .unwrap();
    let (out, took) = holdfast_status(&conf);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["instance"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hf-a", "hf-b"]);
    assert_eq!(text(&out.stderr), "", "nothing on stderr when all is well");
    eprintln!("holdfast status with 2 instances took {took:?} (timeout 60 s)");
    assert!(
        took < Duration::from_secs(30),
        "waited for the timeout: {took:?}"
    );

    // Nobody listening: said at once, one line, no warning.
    let lonely = dir.path("lonely.toml");
    std::fs::write(
        &lonely,
        std::fs::read_to_string(&conf)
            .unwrap()
            .replace(PREFIX, "hf.nobody"),
    )
    .unwrap();
    let (out, took) = holdfast_status(&lonely);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("holdfast status: no instance answered on hf.nobody.rpc.all.status"),
        "{err}"
    );
    eprintln!("holdfast status with nobody listening took {took:?}");
    assert!(
        took < Duration::from_secs(30),
        "waited for the timeout: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holdfast_status_without_nats_is_one_plain_line() {
    let dir = TempDir::new("ctl-nonats");
    let port = free_port();
    let conf = dir.path("nowhere.toml");
    std::fs::write(
        &conf,
        format!(
            "{}\n[[backends]]\nname = \"x\"\naddr = \"127.0.0.1:1\"\n",
            bus_toml(&[format!("nats://127.0.0.1:{port}")], "x", "")
        ),
    )
    .unwrap();
    let (out, _) = holdfast_status(&conf);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert_eq!(
        err,
        format!(
            "holdfast status: cannot reach NATS at nats://127.0.0.1:{port}: connection refused\n"
        )
    );
}
