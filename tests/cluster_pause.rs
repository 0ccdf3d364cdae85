//! Clusters pause (issue 27, SPEC "Clusters pause"): three real holdfast
//! instances in front of fakemush, agreeing through a real three-node
//! JetStream cluster whose nodes do not advertise each other.
//!
//! - a NATS outage longer than the lease: every instance is fenced, and
//!   pauses its players instead of logging them out; afterwards every line
//!   either way arrives once, and the game never saw anyone leave;
//! - a node dies, even the one that leads the cluster's bucket: the
//!   bucket has three copies (the nodes tell clients of no others), so
//!   the instances on the other nodes go on relaying;
//! - a second process with an instance name already running, or with the
//!   backends in another order, is refused at start with a clear error.
//!
//! `HOLDFAST_PAUSE_PLAYERS` (players per instance, default 4) and
//! `HOLDFAST_PAUSE_OUTAGE_S` (default three leases) make the first one the
//! figure of the issue (50 players each, 30 s).

mod common;
#[path = "cluster/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use common::bus::*;
use common::nats::NatsServer;
use common::*;
use harness::*;
use serde_json::Value;

fn proxy_config(b0: &str, b1: &str, nats: &str, instance: &str, lease: Duration) -> String {
    member_config(
        b0,
        b1,
        nats,
        instance,
        lease,
        &["status"],
        "[metrics]\naddr = \"127.0.0.1:0\"\n\
         [listen]\naddrs = [\"127.0.0.1:0\"]\nmax_per_ip = 1000\n\
         [limits]\nconn_rate_per_ip = 1000.0\nconn_burst_per_ip = 1000\n",
    )
}

fn env_or(key: &str, dflt: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(dflt)
}

/// One instance per name in `NAMES`, each on its own node, with `g` first
/// and `spare` second.
fn start_members(
    dir: &TempDir,
    g: &Game,
    spare: &Game,
    nodes: &[NatsServer],
    lease: Duration,
) -> Vec<Proxy> {
    let mut proxies = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let cfg = proxy_config(
            &g.addr.to_string(),
            &spare.addr.to_string(),
            &nodes[i].url(),
            name,
            lease,
        );
        proxies.push(Proxy::start(dir, &cfg));
    }
    proxies
}

/// Player `k` of instance `i`.
fn user(i: usize, k: usize) -> (String, String) {
    (format!("P{i}x{k}"), format!("pw{i}x{k}"))
}

/// A fakemush with the heartbeat, `Speaker` (who talks to the game
/// directly) and `per` players for each instance.
fn game(dir: &TempDir, per: usize) -> Game {
    let mut args = vec![
        "--user".to_string(),
        "heartbeat:hbpass:wizard".to_string(),
        "--user".to_string(),
        "Speaker:spk".to_string(),
        "--user".to_string(),
        "Alice:alicepw".to_string(),
    ];
    for i in 0..3 {
        for k in 0..per {
            let (u, p) = user(i, k);
            args.push("--user".into());
            args.push(format!("{u}:{p}"));
        }
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Game::start(dir, &refs)
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// Logs in every player of every instance, a few at a time.
async fn log_in_all(proxies: &[Proxy], per: usize) -> Vec<Vec<Client>> {
    let mut all = Vec::new();
    for (i, p) in proxies.iter().enumerate() {
        let mut mine = Vec::new();
        for chunk in (0..per).collect::<Vec<_>>().chunks(10) {
            let logins = chunk.iter().map(|&k| {
                let (u, pw) = user(i, k);
                let addr = p.addr;
                async move { login(addr, &u, &pw).await }
            });
            mine.extend(futures::future::join_all(logins).await);
        }
        all.push(mine);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_longer_than_the_lease_logs_nobody_out() {
    let lease = Duration::from_secs(2);
    let per = env_or("HOLDFAST_PAUSE_PLAYERS", 4) as usize;
    let outage = Duration::from_secs(env_or("HOLDFAST_PAUSE_OUTAGE_S", 3 * lease.as_secs()));
    assert!(outage >= lease * 2, "the outage must outlast the lease");
    let dir = TempDir::new("cluster-pause");
    let g = game(&dir, per);
    let spare = Game::start(&dir, &[]);
    let nodes = js_cluster_alone(&dir);
    wait_js_ready(&nodes).await;
    let proxies = start_members(&dir, &g, &spare, &nodes, lease);
    let mut players = log_in_all(&proxies, per).await;
    let mut speaker = Client::connect(g.addr).await;
    speaker.expect("Welcome to FakeMUSH").await;
    speaker.send("connect Speaker spk").await;
    speaker.expect("Last connect was from").await;
    // Each asks the game for a line that comes during the outage.
    let later_ms = (lease + Duration::from_millis(500)).as_millis();
    for (i, ps) in players.iter_mut().enumerate() {
        for (k, p) in ps.iter_mut().enumerate() {
            p.send(&format!("later {later_ms} late for {}", user(i, k).0))
                .await;
        }
    }

    for n in &nodes {
        n.freeze();
    }
    let t0 = Instant::now();
    // Every instance is fenced once its lease runs out; its players are
    // paused (told once, below), not held or logged out.
    for p in &proxies {
        gauge_becomes(p, "holdfast_cluster_fenced", 1.0, lease * 2 + WAIT).await;
    }
    let paused_after = t0.elapsed();
    // Typed during the outage: queued. Said at the game meanwhile: kept.
    for (i, ps) in players.iter_mut().enumerate() {
        for (k, p) in ps.iter_mut().enumerate() {
            p.send(&format!("say during from {}", user(i, k).0)).await;
        }
    }
    speaker.send("say the game goes on").await;
    speaker.expect("You say, \"the game goes on\"").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, ps) in players.iter().enumerate() {
        for k in 0..ps.len() {
            let u = user(i, k).0;
            assert!(
                !g.lines_from(&u).iter().any(|l| l.contains("during from")),
                "{u}'s line reached the game while paused"
            );
        }
    }
    let left = outage.saturating_sub(t0.elapsed());
    tokio::time::sleep(left).await;
    for n in &nodes {
        n.thaw();
    }
    let thawed = Instant::now();

    // Afterwards: every line once, in order: the game's late line and the
    // speaker's, then the player's own queued line.
    for (i, ps) in players.iter_mut().enumerate() {
        for (k, p) in ps.iter_mut().enumerate() {
            let u = user(i, k).0;
            p.expect_within(&format!("You say, \"during from {u}\""), WAIT * 2)
                .await;
        }
    }
    let back_after = thawed.elapsed();
    for p in &proxies {
        gauge_becomes(p, "holdfast_cluster_fenced", 0.0, WAIT).await;
    }
    // Everything after, once more: nothing comes twice.
    for (i, ps) in players.iter_mut().enumerate() {
        for (k, p) in ps.iter_mut().enumerate() {
            p.send("think settled").await;
            p.expect("settled").await;
            let u = user(i, k).0;
            let t = &p.text;
            assert_eq!(count(t, &format!("late for {u}")), 1, "{u}: {t}");
            assert_eq!(
                count(t, "Speaker says, \"the game goes on\""),
                1,
                "{u}: {t}"
            );
            assert_eq!(
                count(t, &format!("You say, \"during from {u}\"")),
                1,
                "{u}: {t}"
            );
            assert_eq!(count(t, PAUSED), 1, "{u}: {t}");
            let late = t.find(&format!("late for {u}")).unwrap();
            let own = t.find(&format!("You say, \"during from {u}\"")).unwrap();
            assert!(late < own, "{u}: the kept line first: {t}");
            assert!(
                !t.contains("Your connection is being held") && !t.contains("logged back in"),
                "{u} was never held: {t}"
            );
        }
    }
    // The game's own log: one login each, no logout or close, every line
    // typed during the outage once.
    let ev = g.events();
    let mut logouts = 0;
    for (i, ps) in players.iter().enumerate() {
        for k in 0..ps.len() {
            let u = user(i, k).0;
            let logins: Vec<&Value> = ev
                .iter()
                .filter(|e| e["t"] == "login" && e["user"] == u.as_str())
                .collect();
            assert_eq!(logins.len(), 1, "{u}: {logins:?}");
            let conn = &logins[0]["conn"];
            logouts += ev
                .iter()
                .filter(|e| (e["t"] == "logout" || e["t"] == "close") && &e["conn"] == conn)
                .count();
            let lines = g.lines_from(&u);
            assert_eq!(
                lines.iter().filter(|l| l.contains("during from")).count(),
                1,
                "{u}: {lines:?}"
            );
            assert!(
                !lines.iter().any(|l| l.eq_ignore_ascii_case("quit")),
                "{u}: {lines:?}"
            );
        }
    }
    assert_eq!(logouts, 0, "logouts at the game");
    assert!(
        !spare
            .events()
            .iter()
            .any(|e| e["t"] == "login" && e["user"] != "heartbeat"),
        "nobody on the spare backend"
    );
    assert_one_backend_at_a_time(&[g, spare], None);
    eprintln!(
        "FIGURE cluster pause: NATS out for {outage:?} (lease {lease:?}), {} members x {per} players: paused after {paused_after:?}, {logouts} logouts at the game, every line once; all relaying again {back_after:?} after NATS came back",
        NAMES.len()
    );
    for p in &proxies {
        assert!(!p.logs().contains("holding players"), "{}", p.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_node_that_holds_the_bucket_leaves_the_others_relaying() {
    // Above the time JetStream takes to elect a new leader for the bucket
    // when its leader dies (docs/clusters.md says to keep bus.lease above
    // it): 4 to 9 s by nats-server's election timeout, seen above 9 s on
    // this loaded 2-core machine; the last renewal may be a third of a
    // lease old when the node dies.
    let lease = Duration::from_secs(30);
    let dir = TempDir::new("cluster-replicas");
    let g = game(&dir, 1);
    let spare = Game::start(&dir, &[]);
    let nodes = js_cluster_alone(&dir);
    wait_js_ready(&nodes).await;
    let watch = Watch::start(&nodes[0].url()).await;
    let proxies = start_members(&dir, &g, &spare, &nodes, lease);
    // Each joins once it has seen the others renew (every lease / 3, 10 s
    // here: longer than a login waits).
    for p in &proxies {
        gauge_becomes(p, "holdfast_cluster_fenced", 0.0, lease + WAIT).await;
    }
    let mut players: Vec<Client> = log_in_all(&proxies, 1)
        .await
        .into_iter()
        .flatten()
        .collect();
    let st = status_until(&watch.client, "hf-a", WAIT * 2, |c| {
        c["members"].as_array().is_some_and(|m| m.len() == 3)
    })
    .await;
    let v = bucket_leader(&nodes).await;
    let mut nodes = nodes;
    nodes[v].kill();
    let t0 = Instant::now();
    // The instances on the other nodes relay on, past a lease (a bucket
    // that did not come back within it would have fenced them).
    while t0.elapsed() < lease + Duration::from_secs(2) {
        for i in (0..3).filter(|&i| i != v) {
            let line = format!("still {i} at {}", t0.elapsed().as_millis());
            players[i].send(&format!("say {line}")).await;
            players[i].expect(&line).await;
            assert_eq!(
                gauge(&proxies[i], "holdfast_cluster_fenced").await,
                Some(0.0),
                "{} fenced {:?} after node n{v} died",
                NAMES[i],
                t0.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The one on the dead node paused (it cannot renew): not held.
    players[v].expect_within(PAUSED, WAIT).await;
    for i in (0..3).filter(|&i| i != v) {
        assert!(!players[i].text.contains(PAUSED), "{}", players[i].text);
    }
    // The nodes advertise nothing, yet the bucket has three copies, and
    // `status` says so.
    assert_eq!(st["cluster"]["replicas"], 3, "{st:#}");
    let table = holdfast::bus::render_table(&[st]);
    assert!(table.contains("3 copies of its bucket"), "{table}");
    eprintln!(
        "FIGURE replicas: node n{v} (the bucket's leader) killed; the other two instances relayed for {:?} without a fence (lease {lease:?})",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_a_running_instance_name_is_refused() {
    let lease = Duration::from_secs(2);
    let dir = TempDir::new("cluster-dup");
    let g = game(&dir, 1);
    let spare = Game::start(&dir, &[]);
    let nodes = js_cluster_alone(&dir);
    wait_js_ready(&nodes).await;
    let (b0, b1) = (g.addr.to_string(), spare.addr.to_string());
    let first = Proxy::start(
        &dir,
        &proxy_config(&b0, &b1, &nodes[0].url(), "hf-a", lease),
    );
    let mut p = login(first.addr, &user(0, 0).0, &user(0, 0).1).await;

    // The same name, another process: refused, with the reason.
    let mut dup = Proxy::start(
        &dir,
        &proxy_config(&b0, &b1, &nodes[1].url(), "hf-a", lease),
    );
    let code = dup.wait_exit(lease * 2 + WAIT);
    assert_eq!(code, Some(1), "{}", dup.logs());
    let logs = dup.logs();
    assert!(
        logs.contains("another holdfast process is already instance"),
        "{logs}"
    );
    assert!(logs.contains("own bus.instance"), "{logs}");

    // The backends in another order: refused too.
    let reversed = proxy_config(&b0, &b1, &nodes[2].url(), "hf-b", lease).replace(
        &backends(&[("b0", &b0), ("b1", &b1)]),
        &backends(&[("b1", &b1), ("b0", &b0)]),
    );
    assert!(reversed.find("name = \"b1\"") < reversed.find("name = \"b0\""));
    let mut other = Proxy::start(&dir, &reversed);
    let code = other.wait_exit(lease * 2 + WAIT);
    assert_eq!(code, Some(1), "{}", other.logs());
    let logs = other.logs();
    assert!(logs.contains("same order"), "{logs}");

    // The first instance was never disturbed.
    p.send("say still the only hf-a").await;
    p.expect("You say, \"still the only hf-a\"").await;
    assert_eq!(gauge(&first, "holdfast_cluster_fenced").await, Some(0.0));
    assert!(!p.text.contains(PAUSED), "{}", p.text);
}
