//! MSSP answered by holdfast by default (issue 27): with no `[mssp]`
//! section, a game that offers MSSP the way PennMUSH does (only after the
//! client answered its `DO LINEMODE`: fakemush `--mssp-penn`) gets its
//! MSSP answered by holdfast, from what the probe asked the game:
//! `PLAYERS` counts logged-in players (not the heartbeat, which the game
//! itself counts), `PORT` is holdfast's player port (not the game's
//! private one), a TLS listener is `TLS` and `SSL`, and crawlers get an
//! answer while the game is down.

mod common;
#[path = "doors/conn.rs"]
mod conn;

use std::time::{Duration, Instant};

use common::*;

/// The variables of the proxy's MSSP subnegotiation in `raw`, if complete.
fn mssp_in(raw: &[u8]) -> Option<Vec<(String, String)>> {
    let i = raw.windows(3).position(|w| w == [255, 250, 70])?;
    let j = raw[i..].windows(2).position(|w| w == [255, 240])?;
    let mut out = Vec::new();
    for var in raw[i + 3..i + j].split(|&b| b == 1).skip(1) {
        let mut parts = var.split(|&b| b == 2);
        let k = String::from_utf8_lossy(parts.next().unwrap_or_default()).to_string();
        let v: Vec<String> = parts
            .map(|p| String::from_utf8_lossy(p).to_string())
            .collect();
        out.push((k, v.join("|")));
    }
    Some(out)
}

fn var<'a>(vars: &'a [(String, String)], k: &str) -> Option<&'a str> {
    vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// Connects as a crawler would: waits for holdfast's `IAC WILL MSSP`
/// (once the probe saw the game's offer), asks with `IAC DO MSSP`, and
/// returns the answer; again until `done` holds for it.
async fn crawl(
    addr: std::net::SocketAddr,
    done: impl Fn(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let t0 = Instant::now();
    let mut last = None;
    while t0.elapsed() < WAIT {
        let mut c = Client::connect(addr).await;
        c.collect_for(Duration::from_millis(300)).await;
        if c.raw.windows(3).any(|w| w == [255, 251, 70]) {
            c.send_raw(&[255, 253, 70]).await;
            let t1 = Instant::now();
            while mssp_in(&c.raw).is_none() && t1.elapsed() < WAIT {
                c.collect_for(Duration::from_millis(50)).await;
            }
            let vars = mssp_in(&c.raw).expect("holdfast offered MSSP but did not answer");
            if done(&vars) {
                return vars;
            }
            last = Some(vars);
        } else {
            last = None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match last {
        Some(v) => panic!("holdfast's MSSP never became what the test wants: {v:?}"),
        None => panic!("holdfast never offered MSSP (IAC WILL MSSP)"),
    }
}

fn from_the_game(vars: &[(String, String)]) -> bool {
    var(vars, "CODEBASE") == Some("fakemush 1.0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_counts_logged_in_players_and_port_is_holdfasts() {
    let dir = TempDir::new("mssp-default-players");
    let game = Game::start(&dir, &["--mssp-penn"]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let bob = Client::login(proxy.addr, "Bob", "bobpw").await;

    let vars = crawl(proxy.addr, from_the_game).await;
    // The game says 3: Alice, Bob and holdfast's heartbeat.
    assert_eq!(var(&vars, "PLAYERS"), Some("2"), "{vars:?}");
    assert_eq!(var(&vars, "NAME"), Some("FakeMUSH"), "the game's own NAME");
    let port = proxy.addr.port().to_string();
    assert_eq!(var(&vars, "PORT"), Some(port.as_str()), "{vars:?}");
    assert!(
        !game.backend_addr().ends_with(&format!(":{port}")),
        "the game listens elsewhere"
    );
    assert!(var(&vars, "UPTIME").is_some_and(|u| u.parse::<u64>().unwrap() > 1_700_000_000));
    drop((alice, bob));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawlers_get_an_answer_while_the_game_is_down() {
    let dir = TempDir::new("mssp-default-down");
    let mut game = Game::start(&dir, &["--mssp-penn"]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    crawl(proxy.addr, from_the_game).await;

    game.kill();
    alice.expect("Test MUSH is down").await;
    let vars = crawl(proxy.addr, |_| true).await;
    assert_eq!(var(&vars, "NAME"), Some("FakeMUSH"), "{vars:?}");
    assert_eq!(var(&vars, "PLAYERS"), Some("1"), "a held player counts");
    let mut text = Client::connect(proxy.addr).await;
    text.send("MSSP-REQUEST").await;
    let reply = text.expect("MSSP-REPLY-END").await;
    assert!(reply.contains("\r\nNAME\tFakeMUSH\r\n"), "{reply}");
    assert!(reply.contains("\r\nPLAYERS\t1\r\n"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_is_advertised_as_tls_and_ssl() {
    let dir = TempDir::new("mssp-default-tls");
    certs::make_cert(&dir, "a");
    let game = Game::start(&dir, &["--mssp-penn"]);
    let proxy = Proxy::start(
        &dir,
        &config_for(
            &[&game],
            &format!(
                "[listen]\naddrs = [\"127.0.0.1:0\"]\ntls_addrs = [\"127.0.0.1:0\"]\n\
                 [tls]\ncert_file = {:?}\nkey_file = {:?}\n",
                dir.path("a.pem").display().to_string(),
                dir.path("a.key").display().to_string(),
            ),
        ),
    );
    let vars = crawl(proxy.addr, from_the_game).await;
    let tls = proxy.door("tls").port().to_string();
    assert_eq!(var(&vars, "TLS"), Some(tls.as_str()), "{vars:?}");
    assert_eq!(var(&vars, "SSL"), Some(tls.as_str()), "{vars:?}");
}
