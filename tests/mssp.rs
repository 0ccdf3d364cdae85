//! MSSP answered by holdfast (issue 15): a crawler-style client gets
//! NAME and PLAYERS (and the rest) while the game is up and while it is
//! down, over telnet option 70 and the plain-text `MSSP-REQUEST`.

mod common;

use std::time::Duration;

use common::*;

fn ws_config(game: &Game, extra: &str) -> String {
    config_for(
        &[game],
        &format!("[listen]\naddrs = [\"127.0.0.1:0\"]\nws_addrs = [\"127.0.0.1:0\"]\n{extra}\n"),
    )
}

/// Reads until the proxy's MSSP subnegotiation arrived; its variables.
async fn telnet_mssp(c: &mut Client) -> Vec<(String, String)> {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(i) = c.raw.windows(3).position(|w| w == [255, 250, 70]) {
            if let Some(j) = c.raw[i..].windows(2).position(|w| w == [255, 240]) {
                let data = &c.raw[i + 3..i + j];
                let mut out = Vec::new();
                for var in data.split(|&b| b == 1).skip(1) {
                    let mut parts = var.split(|&b| b == 2);
                    let k = String::from_utf8_lossy(parts.next().unwrap()).to_string();
                    let v: Vec<String> = parts
                        .map(|p| String::from_utf8_lossy(p).to_string())
                        .collect();
                    out.push((k, v.join("|")));
                }
                return out;
            }
        }
        assert!(t0.elapsed() < WAIT, "no MSSP answer; raw: {:?}", c.raw);
        c.collect_for(Duration::from_millis(50)).await;
    }
}

fn var<'a>(vars: &'a [(String, String)], k: &str) -> &'a str {
    vars.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {k} in {vars:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crawlers_get_mssp_while_the_game_is_up_and_down() {
    let dir = TempDir::new("doors-mssp");
    let mut game = Game::start(&dir, &["--mssp"]);
    let proxy = Proxy::start(
        &dir,
        &ws_config(
            &game,
            "[mssp]\nHOSTNAME = \"mush.example.org\"\nCONTACT = [\"a@example.org\", \"b@example.org\"]\n",
        ),
    );
    let ws_port = proxy.door("ws").port();
    // A player's session asks the game for its MSSP on the way.
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;

    // Up: the crawler sees the offer, asks, and gets the merged answer.
    let mut crawler = Client::connect(proxy.addr).await;
    crawler.expect("connect <name>").await;
    assert!(
        crawler.raw.windows(3).any(|w| w == [255, 251, 70]),
        "holdfast offers MSSP"
    );
    crawler.send_raw(&[255, 253, 70]).await;
    let vars = telnet_mssp(&mut crawler).await;
    assert_eq!(var(&vars, "NAME"), "FakeMUSH", "the game's own NAME");
    assert_eq!(var(&vars, "CODEBASE"), "fakemush 1.0");
    assert_eq!(
        var(&vars, "PLAYERS"),
        "1",
        "holdfast counts logged-in players"
    );
    assert_eq!(var(&vars, "HOSTNAME"), "mush.example.org");
    assert_eq!(var(&vars, "CONTACT"), "a@example.org|b@example.org");
    assert_eq!(var(&vars, "WEBSOCKET"), ws_port.to_string());
    assert!(var(&vars, "UPTIME").parse::<u64>().unwrap() > 1_700_000_000);
    // The game never saw the crawler's request or holdfast's.
    assert!(!game
        .events()
        .iter()
        .any(|e| e.to_string().contains("MSSP-REQUEST")));

    // Down: both forms still answer, from what holdfast knows.
    game.kill();
    alice.expect("Test MUSH is down").await;
    let mut crawler = Client::connect(proxy.addr).await;
    crawler.send_raw(&[255, 253, 70]).await;
    let vars = telnet_mssp(&mut crawler).await;
    assert_eq!(var(&vars, "NAME"), "FakeMUSH");
    assert_eq!(var(&vars, "PLAYERS"), "1", "a held player still counts");
    let mut text = Client::connect(proxy.addr).await;
    text.send("MSSP-REQUEST").await;
    let reply = text.expect("MSSP-REPLY-END").await;
    assert!(reply.contains("MSSP-REPLY-START\r\n"), "{reply}");
    assert!(reply.contains("\r\nNAME\tFakeMUSH\r\n"), "{reply}");
    assert!(reply.contains("\r\nPLAYERS\t1\r\n"), "{reply}");
    assert!(
        reply.contains("\r\nCONTACT\ta@example.org\tb@example.org\r\n"),
        "{reply}"
    );
    drop(alice);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mssp_enabled_false_the_game_answers_as_before() {
    let dir = TempDir::new("doors-mssp-off");
    let game = Game::start(&dir, &["--mssp"]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], "[mssp]\nenabled = false\n"));
    let mut c = Client::connect(proxy.addr).await;
    c.expect("connect <name>").await;
    c.send_raw(&[255, 253, 70]).await;
    let vars = telnet_mssp(&mut c).await;
    assert_eq!(var(&vars, "PLAYERS"), "999", "the game's own answer");
}
