//! IPv6 players and the per-IP limits (`limits.ipv6_prefix`), and the
//! metrics port's own per-address limit (issue 27, part 4). Real holdfast,
//! real fakemush.
//!
//! Loopback has only `::1`, so the IPv6 test runs itself again inside a
//! network namespace of its own (`unshare -rn`, no root needed where user
//! namespaces are allowed) whose `lo` carries addresses of two /64s; it
//! says so and passes without checking anything where that is not
//! possible.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Set in the copy of the test that runs inside the namespace.
const INSIDE: &str = "HOLDFAST_TEST_NETNS";

/// Addresses on the namespace's `lo`: three in one /64, one in the next.
const HOUSE: [&str; 3] = ["2001:db8:64::1", "2001:db8:64::2", "2001:db8:64::3"];
const NEIGHBOUR: &str = "2001:db8:65::1";

/// Runs test `name` again in a new user and network namespace whose `lo`
/// is up with [`HOUSE`] and [`NEIGHBOUR`]. `false` (with a message) when
/// this machine cannot make one.
fn rerun_in_namespace(name: &str) -> bool {
    let can = Command::new("unshare")
        .args(["-rn", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !can {
        eprintln!(
            "SKIPPED {name}: cannot create a network namespace here (`unshare -rn` failed: \
             no util-linux, or user namespaces are off); the grouping itself is unit-tested \
             in config::limits and state"
        );
        return false;
    }
    let mut setup = String::from("ip link set lo up");
    for a in HOUSE.iter().chain([&NEIGHBOUR]) {
        setup.push_str(&format!(" && ip -6 addr add {a}/64 dev lo nodad"));
    }
    setup.push_str(" && exec \"$0\" \"$@\"");
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = Command::new("unshare")
        .args(["-rn", "sh", "-c", &setup])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("run the test in a namespace");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- inside the namespace ---\n{text}--- end ---");
    assert!(out.status.success(), "the test failed inside the namespace");
    assert!(
        text.contains("1 passed"),
        "the test ran inside the namespace:\n{text}"
    );
    true
}

/// Three players from three addresses of one IPv6 /64 (one household)
/// and one from the next /64, with `max_per_ip = 2`: the household's two
/// get in, its third is refused as over the per-IP limit, the neighbour
/// gets in; the game sees each player's own address.
#[tokio::test]
async fn addresses_of_one_ipv6_64_share_one_per_ip_allowance() {
    if std::env::var_os(INSIDE).is_none() {
        rerun_in_namespace("addresses_of_one_ipv6_64_share_one_per_ip_allowance");
        return;
    }
    let dir = TempDir::new("ipv6-prefix");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &config_for(
            &[&game],
            "[listen]\naddrs = [\"0.0.0.0:0\", \"[::]:0\"]\nmax_per_ip = 2\n",
        ),
    );
    // The ready file lists both listeners; take the IPv6 one.
    let ready = std::fs::read_to_string(&proxy.ready).unwrap();
    let v6: SocketAddr = ready
        .lines()
        .filter_map(|l| l.parse::<SocketAddr>().ok())
        .find(SocketAddr::is_ipv6)
        .unwrap_or_else(|| panic!("no IPv6 listener in the ready file:\n{ready}"));
    let to = SocketAddr::new("::1".parse().unwrap(), v6.port());
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };

    let mut a = Client::connect_bound(to, ip(HOUSE[0])).await;
    a.expect("connect <name>").await;
    let mut b = Client::connect_bound(to, ip(HOUSE[1])).await;
    b.expect("connect <name>").await;
    let mut c = Client::connect_bound(to, ip(HOUSE[2])).await;
    c.expect("Too many connections from your address").await;
    c.expect_closed().await;
    proxy.wait_log("refused: max_per_ip reached").await;
    let mut d = Client::connect_bound(to, ip(NEIGHBOUR)).await;
    d.expect("connect <name>").await;

    // The game was told each player's own address, not the group's (the
    // proxy tells it as the connection starts; the game may log it after
    // the screen reached the player).
    for want in [HOUSE[0], HOUSE[1], NEIGHBOUR] {
        game.wait_event(&format!("the game told {want}"), |e| {
            e["t"] == "remotehost" && e["ip"] == want
        })
        .await;
    }
    let told: Vec<String> = game
        .events()
        .iter()
        .filter(|e| e["t"] == "remotehost")
        .filter_map(|e| e["ip"].as_str().map(str::to_string))
        .collect();
    for want in [HOUSE[0], HOUSE[1], NEIGHBOUR] {
        assert!(told.iter().any(|t| t == want), "{want} not in {told:?}");
    }
    assert!(!told.iter().any(|t| t == HOUSE[2]), "{told:?}");

    // Once one of the household leaves, its third address gets in.
    drop(a);
    let t0 = Instant::now();
    loop {
        let mut c = Client::connect_bound(to, ip(HOUSE[2])).await;
        let seen = c.collect_for(Duration::from_millis(300)).await;
        if seen.contains("connect <name>") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the place never came free: {seen:?}"
        );
    }
}

/// One HTTP request over a fresh connection from `from`; the response, or
/// what arrived before `within` ran out.
async fn get_from(addr: SocketAddr, from: &str, path: &str, within: Duration) -> String {
    let go = async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
        let mut s = sock.connect(addr).await.ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    };
    tokio::time::timeout(within, go)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// A client at 127.0.0.2 opens connections to the metrics port in a loop
/// and keeps them open without a word; meanwhile the scraper at 127.0.0.1
/// gets every `/metrics` and `/healthz` it asks for, promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answer_while_one_client_opens_connections_in_a_loop() {
    let dir = TempDir::new("metrics-loop");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &config_for(&[&game], "[metrics]\naddr = \"127.0.0.1:0\"\n"),
    );
    let addr = proxy.metrics_addr().await;
    proxy.wait_log("backend up").await;

    let stop = tokio_util::sync::CancellationToken::new();
    let looping = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            let mut opened = 0usize;
            while !stop.is_cancelled() {
                let sock = tokio::net::TcpSocket::new_v4().unwrap();
                sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                if let Ok(s) = sock.connect(addr).await {
                    opened += 1;
                    held.push(s);
                }
                if held.len() > 400 {
                    held.remove(0);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            opened
        })
    };
    // Let the loop fill whatever it can fill.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..10 {
        let t0 = Instant::now();
        let m = get_from(addr, "127.0.0.1", "/metrics", Duration::from_secs(3)).await;
        assert!(
            m.starts_with("HTTP/1.1 200") && m.contains("holdfast_build_info"),
            "scrape {i}: {m:?}"
        );
        let h = get_from(addr, "127.0.0.1", "/healthz", Duration::from_secs(3)).await;
        assert!(h.starts_with("HTTP/1.1 200"), "healthz {i}: {h:?}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let opened = looping.await.unwrap();
    assert!(opened > 100, "the loop opened only {opened} connections");
    eprintln!("the loop opened {opened} connections meanwhile");
}
