//! Many proxies, one truth (issue 17, `bus.cluster`): three real holdfast
//! instances in front of two fakemush backends, agreeing through a real
//! three-node JetStream cluster.
//!
//! - the primary dies for everyone: one failover, every instance moves;
//! - one instance loses NATS: it pauses its players (the game keeps their
//!   connections), the others stay, it goes on when it returns;
//! - the primary is unreachable from one instance only: no majority, no
//!   failover; that instance holds its players until it reaches it again;
//! - one instance is upgraded (SIGUSR2): it stays the same member, nobody
//!   fences, and a failover afterwards still moves all three.
//!
//! In each, the games' own logs must show that players of two instances
//! were never logged in on different backends at the same moment.

mod common;
#[path = "cluster/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use common::bus::*;
use common::nats::*;
use common::*;
use harness::*;
use serde_json::Value;

const OFFLINE: &str = "Test MUSH is down. Your connection is being held";
const LEASE: Duration = Duration::from_secs(2);
const AFTER: Duration = FAILOVER_AFTER;

fn proxy_config(b0: &str, b1: &str, nats: &str, instance: &str) -> String {
    member_config(
        b0,
        b1,
        nats,
        instance,
        LEASE,
        &["status", "failover"],
        "[metrics]\naddr = \"127.0.0.1:0\"\n",
    )
}

/// Everything one scenario runs.
struct Setup {
    nodes: Vec<NatsServer>,
    games: [Game; 2],
    proxies: Vec<Proxy>,
    players: Vec<Client>,
    watch: Watch,
}

/// Starts the NATS cluster and three instances in front of `games`;
/// instance `i` reaches NATS through node `i` and backend b0 at `b0_of(i)`;
/// logs one player in on each.
async fn setup(dir: &TempDir, games: [Game; 2], b0_of: impl Fn(usize) -> String) -> Setup {
    let nodes = js_cluster_alone(dir);
    wait_js_ready(&nodes).await;
    let watch = Watch::start(&nodes[0].url()).await;
    let mut proxies = Vec::new();
    for i in 0..3 {
        proxies.push(Proxy::start(
            dir,
            &proxy_config(
                &b0_of(i),
                &games[1].addr.to_string(),
                &nodes[i].url(),
                NAMES[i],
            ),
        ));
    }
    let mut players = Vec::new();
    for (i, p) in proxies.iter().enumerate() {
        let (u, pw) = USERS[i];
        players.push(login(p.addr, u, pw).await);
    }
    for (u, _) in USERS {
        assert!(logged_in(&games[0], u), "{u} is on b0");
    }
    Setup {
        nodes,
        games,
        proxies,
        players,
        watch,
    }
}

/// Every player is told they are logged back in (after a move) and
/// plays on: `say TAG i` comes back.
async fn moved_and_playing(s: &mut Setup, tag: &str) {
    for (i, p) in s.players.iter_mut().enumerate() {
        p.expect(ONLINE).await;
        p.send(&format!("say {tag} {i}")).await;
        p.expect(&format!("{tag} {i}")).await;
    }
}

/// When the last player (not the heartbeat) logged in on `g`, in µs.
fn last_player_login_us(g: &Game) -> u64 {
    g.events()
        .iter()
        .filter(|e| e["t"] == "login" && e["user"] != "heartbeat")
        .filter_map(|e| e["us"].as_u64())
        .max()
        .unwrap()
}

fn two_games(dir: &TempDir) -> [Game; 2] {
    [Game::start(dir, &[]), Game::start(dir, &[])]
}

fn logged_in(g: &Game, user: &str) -> bool {
    g.events()
        .iter()
        .any(|e| e["t"] == "login" && e["user"] == user)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_dies_for_everyone_and_every_instance_moves() {
    let dir = TempDir::new("cluster-a");
    let games = two_games(&dir);
    let b0 = games[0].addr.to_string();
    let mut s = setup(&dir, games, |_| b0.clone()).await;
    let initial = wait_events(&s.watch, "cluster.term", 1, WAIT).await;
    assert_eq!(initial[0]["reason"], "initial", "{initial:?}");
    assert_eq!(initial[0]["active"], "b0");

    s.games[0].kill();
    let killed = now_us();
    let t0 = Instant::now();
    for p in &mut s.players {
        p.expect_within(OFFLINE, Duration::from_secs(3)).await;
    }
    // One term, proposed by one instance on a majority's word; every
    // instance follows it.
    let fo = wait_events(&s.watch, "failover", 3, AFTER + LEASE + WAIT).await;
    let moved_after = t0.elapsed();
    let terms = events(&s.watch, "cluster.term");
    assert_eq!(terms.len(), 2, "{terms:#?}");
    let t = &terms[1];
    assert_eq!(
        (t["active"].as_str(), t["previous"].as_str()),
        (Some("b1"), Some("b0")),
        "{t}"
    );
    assert_eq!(t["reason"], "automatic");
    assert!(t["votes"].as_u64().unwrap() >= 2, "{t}");
    assert!(NAMES.contains(&t["proposer"].as_str().unwrap()), "{t}");
    let mut who: Vec<&str> = fo.iter().map(|e| e["instance"].as_str().unwrap()).collect();
    who.sort();
    assert_eq!(who, NAMES, "{fo:#?}");
    for e in &fo {
        assert_eq!(
            (e["to"].as_str(), e["reason"].as_str()),
            (Some("b1"), Some("automatic")),
            "{e}"
        );
        assert_eq!(e["term"], t["term"], "{e}");
    }
    moved_and_playing(&mut s, "moved").await;
    for (u, _) in USERS {
        assert!(logged_in(&s.games[1], u), "{u} on b1");
    }
    assert_one_backend_at_a_time(&s.games, Some(killed));
    // Figures for the note: from the compare-and-set (the term's event
    // time) to the last instance moving its sessions, and to the last
    // player logged in on b1.
    let term_ms = ms_of(t["time"].as_str().unwrap());
    let last_move = fo
        .iter()
        .map(|e| ms_of(e["time"].as_str().unwrap()))
        .max()
        .unwrap();
    let last_login_us = last_player_login_us(&s.games[1]);
    eprintln!(
        "FIGURE cluster failover: kill->term {} ms; term->last instance moved {} ms; term->last player on b1 {} ms; kill->test saw all 3 failover events {:?} (lease {:?}, failover.after {:?})",
        term_ms - killed as i128 / 1000,
        last_move - term_ms,
        last_login_us as i128 / 1000 - term_ms,
        moved_after,
        LEASE,
        AFTER
    );
    for p in &s.proxies {
        p.assert_no_passwords();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_nats_pauses_then_goes_on() {
    let dir = TempDir::new("cluster-b");
    // Each instance talks to its own node; one node is cut.
    let games = two_games(&dir);
    let b0 = games[0].addr.to_string();
    let mut s = setup(&dir, games, |_| b0.clone()).await;
    wait_events(&s.watch, "cluster.term", 1, WAIT).await;
    // Not the node that leads the bucket's stream: losing that one stalls
    // the bucket for everyone until the others elect a new leader (the
    // docs/clusters.md says to keep bus.lease above that).
    let v = victim(&s).await;
    let (user, name) = (USERS[v].0, NAMES[v]);
    let watch = Watch::start(&s.nodes[(v + 1) % 3].url()).await;
    // A blip well within the lease changes nothing.
    s.nodes[v].freeze();
    tokio::time::sleep(LEASE / 4).await;
    s.nodes[v].thaw();
    s.players[v].send("say after the blip").await;
    s.players[v].expect("You say, \"after the blip\"").await;
    assert!(
        events(&watch, "session.held").is_empty(),
        "{:#?}",
        events(&watch, "session.held")
    );

    // Let a renewal through after the blip (every lease / 3), so the lease
    // below runs from a renewal just before the cut.
    tokio::time::sleep(LEASE / 2).await;
    s.nodes[v].kill();
    let t0 = Instant::now();
    // Paused, not held: the game keeps its logged-in connection.
    s.players[v].expect_within(PAUSED, LEASE + WAIT).await;
    let paused_after = t0.elapsed();
    // Not at once: the lease (less the renewal interval) runs out first.
    assert!(
        paused_after >= LEASE / 3,
        "paused after only {paused_after:?}"
    );
    // Its metrics say so; the others count two members alive.
    let other = (v + 1) % 3;
    assert_eq!(
        gauge(&s.proxies[v], "holdfast_cluster_fenced").await,
        Some(1.0)
    );
    assert_eq!(
        gauge(&s.proxies[other], "holdfast_cluster_fenced").await,
        Some(0.0)
    );
    gauge_becomes(
        &s.proxies[other],
        "holdfast_cluster_members_alive",
        2.0,
        WAIT,
    )
    .await;
    // Its input is queued; the game sees none of it yet.
    s.players[v].send("say while fenced").await;
    // The others play on, on b0; the paused player hears nothing yet.
    for i in (0..3).filter(|&i| i != v) {
        s.players[i].send(&format!("say still here {i}")).await;
        s.players[i].expect(&format!("still here {i}")).await;
    }
    assert!(!s.games[0]
        .lines_from(user)
        .iter()
        .any(|l| l.contains("while fenced")));
    s.players[(v + 1) % 3].expect_open_for(LEASE).await;
    s.nodes[v].restart();
    // The same term: what the others said meanwhile, then the queued line,
    // on the connection the game kept.
    for i in (0..3).filter(|&i| i != v) {
        s.players[v].expect(&format!("still here {i}")).await;
    }
    s.players[v].expect("You say, \"while fenced\"").await;
    eprintln!(
        "FIGURE cut-off instance: paused {paused_after:?} after its NATS node died (lease {LEASE:?})"
    );
    let fenced = wait_events(&watch, "cluster.fenced", 1, WAIT).await;
    assert_eq!(fenced[0]["instance"], name, "{fenced:?}");
    let back = wait_events(&watch, "cluster.rejoined", 1, WAIT).await;
    gauge_becomes(&s.proxies[v], "holdfast_cluster_fenced", 0.0, WAIT).await;
    gauge_becomes(
        &s.proxies[other],
        "holdfast_cluster_members_alive",
        3.0,
        WAIT,
    )
    .await;
    assert_eq!(
        (back[0]["instance"].as_str(), back[0]["active"].as_str()),
        (Some(name), Some("b0"))
    );
    let paused = events(&watch, "session.paused");
    assert!(
        paused
            .iter()
            .all(|e| e["instance"] == name && e["user"] == user),
        "{paused:#?}"
    );
    assert_eq!(paused.len(), 1, "{paused:#?}");
    let unpaused = wait_events(&watch, "session.unpaused", 1, WAIT).await;
    assert_eq!(unpaused[0]["queued"], 1, "{unpaused:#?}");
    assert!(events(&watch, "session.held").is_empty(), "nobody held");
    // One login, no logout: the game never saw the player leave.
    let logins = s.games[0]
        .events()
        .iter()
        .filter(|e| e["t"] == "login" && e["user"] == user)
        .count();
    assert_eq!(logins, 1);
    assert_eq!(
        s.games[0]
            .lines_from(user)
            .iter()
            .filter(|l| l.contains("while fenced"))
            .count(),
        1
    );
    assert!(events(&watch, "failover").is_empty(), "nobody moved");
    assert!(events(&watch, "cluster.term").is_empty(), "no new term");
    assert!(
        !s.games[1]
            .events()
            .iter()
            .any(|e| e["t"] == "login" && e["user"] != "heartbeat"),
        "nobody on b1"
    );
    assert_one_backend_at_a_time(&s.games, None);
}

/// A node that does not lead the bucket's stream (the last such).
async fn victim(s: &Setup) -> usize {
    let leader = bucket_leader(&s.nodes).await;
    (0..3).rev().find(|&i| i != leader).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_only_one_instance_cannot_reach_is_not_failed_over() {
    let dir = TempDir::new("cluster-c");
    // The third instance reaches b0 through a relay that the test cuts.
    let games = two_games(&dir);
    let relay = Relay::new(games[0].addr).await;
    let (b0, via) = (games[0].addr.to_string(), relay.addr());
    let mut s = setup(
        &dir,
        games,
        |i| if i == 2 { via.clone() } else { b0.clone() },
    )
    .await;
    wait_events(&s.watch, "cluster.term", 1, WAIT).await;

    relay.cut(true);
    let t0 = Instant::now();
    s.players[2]
        .expect_within(OFFLINE, Duration::from_secs(5))
        .await;
    // Well past failover.after + lease: one instance's word is no majority.
    s.players[0].expect_open_for(AFTER + LEASE * 2).await;
    for i in 0..2 {
        s.players[i].send(&format!("say on b0 {i}")).await;
        s.players[i].expect(&format!("on b0 {i}")).await;
    }
    assert!(
        events(&s.watch, "failover").is_empty(),
        "{:#?}",
        events(&s.watch, "failover")
    );
    assert_eq!(events(&s.watch, "cluster.term").len(), 1, "no new term");
    let down: Vec<Value> = events(&s.watch, "backend.down");
    assert!(
        down.iter()
            .all(|e| e["instance"] == "hf-c" && e["backend"] == "b0"),
        "only the cut-off instance saw b0 down: {down:#?}"
    );
    assert!(!down.is_empty());
    relay.cut(false);
    s.players[2].expect(ONLINE).await;
    eprintln!(
        "FIGURE one-sided outage: held {:?} in all, no failover",
        t0.elapsed()
    );
    s.players[2].send("say back on b0").await;
    s.players[0].expect("Wiz says, \"back on b0\"").await;
    let held = events(&s.watch, "session.held");
    assert!(
        held.iter()
            .any(|e| e["instance"] == "hf-c" && e["user"] == "Wiz"),
        "{held:#?}"
    );
    assert!(
        !s.games[1]
            .events()
            .iter()
            .any(|e| e["t"] == "login" && e["user"] != "heartbeat"),
        "nobody on b1"
    );
    assert_one_backend_at_a_time(&s.games, None);
}

/// An operator's `failover` request to one instance moves the whole
/// cluster (no majority needed: the operator decided), as does a reload
/// that reorders one instance's backends; `status` shows the cluster's
/// choice, its term and every member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_request_to_one_instance_moves_them_all() {
    let dir = TempDir::new("cluster-op");
    let games = two_games(&dir);
    let b0 = games[0].addr.to_string();
    let mut s = setup(&dir, games, |_| b0.clone()).await;
    wait_events(&s.watch, "cluster.term", 1, WAIT).await;
    // Its view is as of its last read of the bucket (every lease / 8).
    let st = status_until(&s.watch.client, "hf-b", WAIT, |c| {
        c["members"].as_array().is_some_and(|m| m.len() == 3)
    })
    .await;
    let c = &st["cluster"];
    assert_eq!(
        (c["name"].as_str(), c["active"].as_str(), c["size"].as_u64()),
        (Some("test"), Some("b0"), Some(3)),
        "{st:#}"
    );
    assert_eq!(c["fenced"], false, "{st:#}");
    // The same on `/metrics`.
    let term0 = c["term"].as_f64().unwrap();
    assert_eq!(
        gauge(&s.proxies[1], "holdfast_cluster_term").await,
        Some(term0)
    );
    assert_eq!(
        gauge(&s.proxies[1], "holdfast_cluster_fenced").await,
        Some(0.0)
    );
    assert_eq!(
        gauge(&s.proxies[1], "holdfast_cluster_members_alive").await,
        Some(3.0)
    );
    let members: Vec<&str> = c["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["instance"].as_str().unwrap())
        .collect();
    assert_eq!(members, NAMES, "{st:#}");
    assert!(
        c["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["alive"] == true && m["term"] == c["term"]),
        "{st:#}"
    );

    let r = request(&s.watch.client, "hf-a", "failover", r#"{"backend": "b1"}"#).await;
    assert_eq!(r["ok"], true, "{r}");
    let fo = wait_events(&s.watch, "failover", 3, WAIT).await;
    for e in &fo {
        assert_eq!(
            (e["to"].as_str(), e["reason"].as_str()),
            (Some("b1"), Some("request")),
            "{e}"
        );
    }
    let terms = events(&s.watch, "cluster.term");
    let t = terms.last().unwrap();
    assert_eq!(t["proposer"], "hf-a", "{terms:#?}");
    let term_ms = ms_of(t["time"].as_str().unwrap());
    let last_move = fo
        .iter()
        .map(|e| ms_of(e["time"].as_str().unwrap()))
        .max()
        .unwrap();
    moved_and_playing(&mut s, "on b1").await;
    for (u, _) in USERS {
        assert!(logged_in(&s.games[1], u), "{u} on b1");
    }
    // Everyone left b0 before anyone logged in on b1.
    assert_one_backend_at_a_time(&s.games, None);
    let last_login_us = last_player_login_us(&s.games[1]);
    eprintln!(
        "FIGURE cluster failover request: term->last instance moved {} ms; term->last player on b1 {} ms",
        last_move - term_ms,
        last_login_us as i128 / 1000 - term_ms
    );
    let st = status_until(&s.watch.client, "hf-c", WAIT, |c| c["active"] == "b1").await;
    let term1 = st["cluster"]["term"].as_f64().unwrap();
    assert!(term1 > term0, "{st:#}");
    gauge_becomes(&s.proxies[2], "holdfast_cluster_term", term1, WAIT).await;
    let moved = events(&s.watch, "failover").len();

    // A reload that reorders one instance's backends moves the cluster
    // too: prefer b1 (already active: nothing moves), then b0 again.
    let (a0, a1) = (s.games[0].addr.to_string(), s.games[1].addr.to_string());
    let reordered = |first_b1: bool| {
        let cfg = proxy_config(&a0, &a1, &s.nodes[2].url(), NAMES[2]);
        if first_b1 {
            cfg.replace(
                &backends(&[("b0", &a0), ("b1", &a1)]),
                &backends(&[("b1", &a1), ("b0", &a0)]),
            )
        } else {
            cfg
        }
    };
    s.proxies[2].rewrite(&reordered(true));
    s.proxies[2].sighup();
    wait_events(&s.watch, "config.reloaded", 1, WAIT).await;
    s.proxies[2].rewrite(&reordered(false));
    s.proxies[2].sighup();
    let fo = wait_events(&s.watch, "failover", moved + 3, WAIT).await;
    for e in &fo[moved..] {
        assert_eq!(
            (e["to"].as_str(), e["reason"].as_str()),
            (Some("b0"), Some("sighup")),
            "{e}"
        );
    }
    assert_eq!(
        events(&s.watch, "cluster.term").last().unwrap()["proposer"],
        "hf-c"
    );
    moved_and_playing(&mut s, "on b0 again").await;
    assert_one_backend_at_a_time(&s.games, None);
    assert_eq!(st["cluster"]["active"], "b1", "{st:#}");
    assert_eq!(st["cluster"]["proposer"], "hf-a", "{st:#}");
    // The table `holdfast status` prints.
    let table = holdfast::bus::render_table(&[st]);
    assert!(table.contains("cluster test: active b1"), "{table}");
}

/// A SIGUSR2 upgrade of one member: its players keep their connections and
/// type through it; the new process goes on from the old one's term and
/// lease, renewing the same member key (never removed, never renewed with
/// another term), so nobody fences and nobody waits for it; a failover
/// afterwards still moves all three instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_instance_stays_the_same_member() {
    use futures::StreamExt;
    let dir = TempDir::new("cluster-up");
    let games = two_games(&dir);
    let b0 = games[0].addr.to_string();
    let mut s = setup(&dir, games, |_| b0.clone()).await;
    wait_events(&s.watch, "cluster.term", 1, WAIT).await;
    let st = status_until(&s.watch.client, "hf-b", WAIT, |c| {
        c["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["alive"] == true))
    })
    .await;
    let term = st["cluster"]["term"].as_u64().unwrap();
    assert!(term > 0, "{st:#}");
    // Every change of hf-a's member key, as the bucket records it.
    let js = async_nats::jetstream::new(s.watch.client.clone());
    let kv = js.get_key_value("holdfast_cluster_test").await.unwrap();
    let mut changes = kv.watch("member.hf-a").await.unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let watcher = tokio::spawn(async move {
        while let Some(Ok(e)) = changes.next().await {
            let term = serde_json::from_slice::<Value>(&e.value)
                .ok()
                .and_then(|v| v["term"].as_u64());
            seen2
                .lock()
                .unwrap()
                .push((e.operation, term, Instant::now()));
        }
    });
    let mark = s.games[0].events().len();
    let old_pid = s.proxies[0].pid();

    for k in 0..6 {
        // A line in flight as the signal arrives, on every instance.
        for (i, p) in s.players.iter_mut().enumerate() {
            p.send(&format!("say round {k} from {i}")).await;
        }
        if k == 2 {
            s.proxies[0].upgrade();
        }
        for (i, p) in s.players.iter_mut().enumerate() {
            p.expect(&format!("round {k} from {i}")).await;
        }
    }
    let upgraded_at = Instant::now();
    assert_ne!(s.proxies[0].pid(), old_pid);
    // Two leases: had the new process not renewed, or renewed as someone
    // new, the others would have counted it gone or waited for it.
    tokio::time::sleep(LEASE * 2).await;
    for (i, p) in s.players.iter_mut().enumerate() {
        p.send(&format!("say after {i}")).await;
        p.expect(&format!("after {i}")).await;
    }
    // The others see it alive, renewed lately, on the same term.
    let st = status_until(&s.watch.client, "hf-b", WAIT, |c| c["term"] == term).await;
    let a = st["cluster"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["instance"] == "hf-a")
        .cloned()
        .unwrap_or_else(|| panic!("{st:#}"));
    assert_eq!(
        (a["alive"].as_bool(), a["term"].as_u64()),
        (Some(true), Some(term)),
        "{st:#}"
    );
    assert!(
        a["lease_age_s"].as_f64().unwrap() < LEASE.as_secs_f64() / 2.0,
        "{st:#}"
    );
    // The new process itself: not fenced, same term, one upgrade.
    let st = request(&s.watch.client, "hf-a", "status", "{}").await;
    assert_eq!(st["upgrades"], 1, "{st:#}");
    assert_eq!(
        (
            st["cluster"]["term"].as_u64(),
            st["cluster"]["fenced"].as_bool()
        ),
        (Some(term), Some(false)),
        "{st:#}"
    );
    // The key was renewed by the new process, always with the term, and
    // never removed.
    let changes = seen.lock().unwrap().clone();
    assert!(
        changes
            .iter()
            .all(|(op, t, _)| *op == async_nats::jetstream::kv::Operation::Put && *t == Some(term)),
        "{changes:?}"
    );
    assert!(
        changes
            .iter()
            .filter(|(_, _, at)| *at > upgraded_at)
            .count()
            >= 3,
        "renewed by the new process: {changes:?}"
    );
    watcher.abort();
    for kind in ["cluster.fenced", "session.held", "failover"] {
        assert!(
            events(&s.watch, kind).is_empty(),
            "{kind}: {:#?}",
            events(&s.watch, kind)
        );
    }
    assert_eq!(events(&s.watch, "cluster.term").len(), 1, "no new term");
    let up = events(&s.watch, "proxy.upgrade");
    assert_eq!(up.len(), 1, "{up:#?}");
    assert_eq!(
        (up[0]["instance"].as_str(), up[0]["ok"].as_bool()),
        (Some("hf-a"), Some(true))
    );
    // Nobody logged in again: the game saw the same connections.
    let again: Vec<Value> = s.games[0]
        .events()
        .into_iter()
        .skip(mark)
        .filter(|e| e["t"] == "login" && e["user"] != "heartbeat")
        .collect();
    assert!(again.is_empty(), "{again:#?}");

    // A failover after the upgrade still moves all three.
    s.games[0].kill();
    let killed = now_us();
    let fo = wait_events(&s.watch, "failover", 3, AFTER + LEASE + WAIT).await;
    let mut who: Vec<&str> = fo.iter().map(|e| e["instance"].as_str().unwrap()).collect();
    who.sort();
    assert_eq!(who, NAMES, "{fo:#?}");
    moved_and_playing(&mut s, "on b1").await;
    for (u, _) in USERS {
        assert!(logged_in(&s.games[1], u), "{u} on b1");
    }
    assert_one_backend_at_a_time(&s.games, Some(killed));
    assert!(events(&s.watch, "cluster.fenced").is_empty());
    s.proxies[0].assert_no_passwords();
}
