//! A cluster member stays a member throughout an upgrade (issue 24 item
//! 3): three real holdfast instances in front of two fakemush backends,
//! agreeing through a real three-node JetStream cluster; one is upgraded
//! (SIGUSR2) with a long handover (`HOLDFAST_UPGRADE_TOOK_DELAY_MS`), and
//! an operator's failover moves the cluster to the standby meanwhile.
//!
//! The old process does not follow (or confirm) the new term while its
//! frozen sessions are on the old backend; the new process follows it
//! from the cluster's state at `Commit`, not the one in the handover's
//! head. The games' own logs show no moment with players logged in on
//! both backends, and no line from the upgraded instance's player reaches
//! the old backend after the first line of the cluster's players reached
//! the new one; the upgraded member follows the new term.

mod common;
#[path = "cluster/harness.rs"]
mod harness;

use std::time::{Duration, Instant};

use common::bus::*;
use common::*;
use harness::*;

const LEASE: Duration = Duration::from_secs(2);
/// How long the upgraded instance's new process waits before confirming
/// each batch: the handover lasts at least this long.
const TOOK_DELAY: Duration = Duration::from_secs(4);

fn proxy_config(b0: &str, b1: &str, nats: &str, instance: &str) -> String {
    member_config(b0, b1, nats, instance, LEASE, &["status", "failover"], "")
}

/// When each player's game connection was logged in, on one game:
/// (user, login micros, close micros; `u64::MAX` while still open).
fn logged_in(g: &Game) -> Vec<(String, u64, u64)> {
    let ev = g.events();
    ev.iter()
        .filter(|e| e["t"] == "login")
        .filter_map(|e| {
            let user = e["user"].as_str()?;
            USERS.iter().any(|(u, _)| *u == user).then_some(())?;
            let conn = e["conn"].as_u64()?;
            let start = e["us"].as_u64()?;
            let end = ev
                .iter()
                .filter(|c| c["t"] == "close" && c["conn"].as_u64() == Some(conn))
                .filter_map(|c| c["us"].as_u64())
                .min()
                .unwrap_or(u64::MAX);
            Some((user.to_string(), start, end))
        })
        .collect()
}

/// The players' own lines (not the heartbeat's, not the quit a move
/// sends) a game logged: (micros, user, line).
fn lines(g: &Game) -> Vec<(u64, String, String)> {
    g.events()
        .iter()
        .filter(|e| e["t"] == "line")
        .filter_map(|e| {
            let user = e["user"].as_str()?;
            let line = e["line"].as_str()?;
            (USERS.iter().any(|(u, _)| *u == user) && !line.trim().eq_ignore_ascii_case("QUIT"))
                .then(|| {
                    (
                        e["us"].as_u64().unwrap(),
                        user.to_string(),
                        line.to_string(),
                    )
                })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_term_during_an_upgrade_reaches_the_new_process() {
    let dir = TempDir::new("upgrade-cluster");
    let games = [Game::start(&dir, &[]), Game::start(&dir, &[])];
    let (b0, b1) = (games[0].addr.to_string(), games[1].addr.to_string());
    let nodes = js_cluster_alone(&dir);
    wait_js_ready(&nodes).await;
    let watch = Watch::start(&nodes[0].url()).await;
    let delay = TOOK_DELAY.as_millis().to_string();
    let mut proxies = Vec::new();
    for (i, name) in NAMES.iter().enumerate() {
        let cfg = proxy_config(&b0, &b1, &nodes[i].url(), name);
        proxies.push(if i == 0 {
            Proxy::start_with(
                &dir,
                &cfg,
                "holdfast=debug",
                &[
                    ("HOLDFAST_UPGRADE_TOOK_DELAY_MS", delay.as_str()),
                    ("HOLDFAST_UPGRADE_BATCH", "1"),
                ],
            )
        } else {
            Proxy::start(&dir, &cfg)
        });
    }
    let mut players = Vec::new();
    for (i, p) in proxies.iter().enumerate() {
        let (u, pw) = USERS[i];
        players.push(login(p.addr, u, pw).await);
    }
    wait_events(&watch, "cluster.term", 1, WAIT).await;
    let st = status_until(&watch.client, "hf-b", WAIT, |c| {
        c["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["alive"] == true))
    })
    .await;
    let term0 = st["cluster"]["term"].as_u64().unwrap();
    let [alice, bob, wiz] = &mut players[..] else {
        unreachable!()
    };

    // The upgrade starts; Alice's session is frozen for the handover.
    let old_pid = proxies[0].pid();
    assert!(common::proc::send_signal(old_pid, "USR2"));
    let t_signal = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    alice.send("say during 0").await;

    // Meanwhile the cluster moves to the standby.
    let r = request(&watch.client, "hf-b", "failover", r#"{"backend": "b1"}"#).await;
    assert_eq!(r["ok"], true, "{r}");
    let st = status_until(&watch.client, "hf-b", WAIT, |c| c["active"] == "b1").await;
    let term1 = st["cluster"]["term"].as_u64().unwrap();
    assert!(term1 > term0, "{st:#}");
    alice.send("say during 1").await;
    assert!(
        t_signal.elapsed() < TOOK_DELAY,
        "the failover came after the handover ({:?}); nothing was tested",
        t_signal.elapsed()
    );

    // The handover ends; Alice's session goes on in the new process, which
    // follows the new term. The others connect to the standby only once
    // it has: the old process, whose frozen sessions were still on b0, did
    // not confirm the new term for them.
    tokio::task::block_in_place(|| proxies[0].upgrade_done(old_pid));
    for (i, p) in [&mut *bob, &mut *wiz].into_iter().enumerate() {
        p.expect(ONLINE).await;
        p.send(&format!("say on b1 {i}")).await;
        p.expect(&format!("on b1 {i}")).await;
    }
    alice.send("say after").await;
    for l in ["during 0", "during 1", "after"] {
        alice.expect(l).await;
    }
    // A moment for anything late to reach a game.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let on_b1 = lines(&games[1]);
    let first_b1 = on_b1
        .iter()
        .map(|(us, _, _)| *us)
        .min()
        .expect("lines on b1");
    let late: Vec<_> = lines(&games[0])
        .into_iter()
        .filter(|(us, _, _)| *us > first_b1)
        .collect();
    assert!(
        late.is_empty(),
        "players' lines reached b0 after the first reached b1 (at {first_b1}): {late:#?}\nb1: {on_b1:#?}\n{}",
        proxies[0].logs()
    );
    for l in ["say during 0", "say during 1", "say after"] {
        let n = on_b1
            .iter()
            .filter(|(_, u, x)| u == "Alice" && x == l)
            .count();
        assert_eq!(n, 1, "{l:?} on b1: {on_b1:#?}");
    }
    // No moment with players logged in on both backends: every player's
    // login on b1 comes after every player's connection on b0 closed.
    let b0 = logged_in(&games[0]);
    let b1 = logged_in(&games[1]);
    let b0_end = b0
        .iter()
        .map(|(_, _, end)| *end)
        .max()
        .expect("logins on b0");
    let b1_start = b1
        .iter()
        .map(|(_, start, _)| *start)
        .min()
        .expect("logins on b1");
    assert!(
        b0_end <= b1_start,
        "players on both backends at once: on b0 {b0:#?}\non b1 {b1:#?}\n{}",
        proxies[0].logs()
    );
    assert!(
        proxies[0]
            .logs()
            .contains("cluster: new term during an upgrade's handover"),
        "the old process saw the new term and left it to the new one:\n{}",
        proxies[0].logs()
    );

    // The upgraded member follows the new term, unfenced, and the others
    // see it confirm it.
    let st = status_until(&watch.client, "hf-a", WAIT, |c| {
        c["term"].as_u64() == Some(term1) && c["fenced"] == false
    })
    .await;
    assert_eq!(st["cluster"]["active"], "b1", "{st:#}");
    assert_eq!(st["upgrades"], 1, "{st:#}");
    status_until(&watch.client, "hf-c", WAIT, |c| {
        c["members"].as_array().is_some_and(|m| {
            m.iter().any(|m| {
                m["instance"] == "hf-a" && m["alive"] == true && m["term"].as_u64() == Some(term1)
            })
        })
    })
    .await;
    let up = events(&watch, "proxy.upgrade");
    assert_eq!(up.len(), 1, "{up:#?}");
    assert_eq!(up[0]["ok"], true, "{up:#?}");
    for p in &proxies {
        p.assert_no_passwords();
    }
}
