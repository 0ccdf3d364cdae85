//! High availability (issue 3): telling quit from crash, held sessions,
//! re-login with hidden output, failover, reloads, shutdown.

mod common;

use std::time::{Duration, Instant};

use common::*;

const OFFLINE: &str = "Test MUSH is down. Your connection is being held";
const ONLINE: &str = "You have been logged back in.";

#[tokio::test]
async fn kill_and_restart_keeps_players_and_logs_them_back_in() {
    let dir = TempDir::new("killrestart");
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;

    game.kill();
    let t0 = Instant::now();
    alice.expect_within(OFFLINE, Duration::from_secs(1)).await;
    bob.expect_within(OFFLINE, Duration::from_secs(1)).await;
    eprintln!("offline notice after {:?}", t0.elapsed());
    alice.expect_open_for(Duration::from_millis(300)).await;
    bob.expect_open_for(Duration::from_millis(10)).await;

    game.restart();
    let seen_a = alice.expect(ONLINE).await;
    let seen_b = bob.expect(ONLINE).await;
    for seen in [&seen_a, &seen_b] {
        assert!(!seen.contains("MOTD"), "re-login output leaked: {seen}");
        assert!(
            !seen.contains("Last connect"),
            "re-login output leaked: {seen}"
        );
        assert!(!seen.contains("hf-"), "marker leaked: {seen}");
    }
    alice.send("say back again").await;
    alice.expect("You say, \"back again\"").await;
    bob.expect("Alice says, \"back again\"").await;
    // The game saw both log in twice, from the real address each time.
    let logins = game
        .events()
        .into_iter()
        .filter(|e| e["t"] == "login" && e["user"] != "heartbeat")
        .count();
    assert_eq!(logins, 4);
    proxy.assert_no_passwords();
}

#[tokio::test]
async fn silent_host_is_detected_by_the_heartbeat() {
    let dir = TempDir::new("silent");
    let game = Game::start(&dir, &[]);
    // interval 500ms + timeout 500ms, and one missed probe is enough; the
    // stuck probe connection is replaced by a new one, which gets no
    // connect screen within banner_wait + timeout (1s).
    let proxy = Proxy::start(
        &dir,
        &config_for(
            &[&game],
            "[heartbeat]\nuser = \"heartbeat\"\npassword = \"hbpass\"\ninterval = \"500ms\"\ntimeout = \"500ms\"\nfall = 1\n[templates]\nbanner_wait = \"500ms\"\n",
        ),
    );
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;
    game.freeze();
    let t0 = Instant::now();
    // interval + timeout + banner_wait + timeout, plus scheduling slack
    // for a loaded 2-core CI.
    let within = Duration::from_millis(2000 + 700);
    alice.expect_within(OFFLINE, within).await;
    bob.expect_within(OFFLINE, within).await;
    eprintln!("offline notice after {:?} of silence", t0.elapsed());
    alice.expect_open_for(Duration::from_millis(200)).await;
    game.thaw();
    alice.expect(ONLINE).await;
    bob.expect(ONLINE).await;
    alice.send("say thawed").await;
    bob.expect("Alice says, \"thawed\"").await;
}

#[tokio::test]
async fn booted_player_is_closed_not_held() {
    let dir = TempDir::new("boot");
    let game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let mut wiz = Client::login(proxy.addr, "Wiz", "wizpw").await;
    wiz.send("@boot Alice").await;
    wiz.expect("You booted Alice off!").await;
    alice
        .expect("You have been booted off the game by Wiz.")
        .await;
    alice.expect_closed().await;
    assert!(
        !alice.text.contains("[holdfast]"),
        "booted player got a proxy notice: {}",
        alice.text
    );
    proxy.wait_log("reason=\"booted\"").await;
    // The wizard is unaffected.
    wiz.send("say done").await;
    wiz.expect("You say, \"done\"").await;
}

#[tokio::test]
async fn input_while_held_is_answered_or_queued() {
    let dir = TempDir::new("heldinput");
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    game.kill();
    alice.expect(OFFLINE).await;
    alice.send("say lost?").await;
    alice.expect("that was not sent").await;
    game.restart();
    alice.expect(ONLINE).await;
    alice.send("say after").await;
    alice.expect("You say, \"after\"").await;
    assert!(!game.lines_from("Alice").iter().any(|l| l.contains("lost?")));

    // With queue_input the lines are delivered after the re-login, in order.
    let dir2 = TempDir::new("heldqueue");
    let mut game2 = Game::start(&dir2, &[]);
    let proxy2 = Proxy::start(
        &dir2,
        &config_for(&[&game2], "[outage]\nqueue_input = true\n"),
    );
    let mut bob = Client::login(proxy2.addr, "Bob", "bobpw").await;
    game2.kill();
    bob.expect(OFFLINE).await;
    bob.send("say one").await;
    bob.expect("queued").await;
    bob.send("say two").await;
    bob.expect("queued").await;
    game2.restart();
    bob.expect(ONLINE).await;
    bob.expect("You say, \"one\"").await;
    bob.expect("You say, \"two\"").await;
    let lines: Vec<String> = game2
        .lines_from("Bob")
        .into_iter()
        .filter(|l| l.starts_with("say "))
        .collect();
    assert_eq!(lines, vec!["say one", "say two"]);
}

#[tokio::test]
async fn quit_while_held_leaves() {
    let dir = TempDir::new("heldquit");
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    game.kill();
    alice.expect(OFFLINE).await;
    alice.send("QUIT").await;
    alice.expect_closed().await;
}

#[tokio::test]
async fn player_connecting_during_outage_gets_connect_screen_later() {
    let dir = TempDir::new("earlybird");
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    game.kill();
    proxy.wait_log("backend down").await;
    let mut c = Client::connect(proxy.addr).await;
    c.expect("is down right now").await;
    game.restart();
    c.expect("Welcome to FakeMUSH").await;
    c.send("connect Alice alicepw").await;
    c.expect("Last connect was from").await;
}

#[tokio::test]
async fn failed_relogin_tells_the_player() {
    let dir = TempDir::new("badrelogin");
    let mut game = Game::start(
        &dir,
        &["--user", "Alice:alicepw", "--user", "heartbeat:hbpass"],
    );
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    game.kill();
    alice.expect(OFFLINE).await;
    // The game comes back with Alice's password changed.
    let mut game = {
        let g = Game::start_on(
            &dir,
            game.addr,
            &["--user", "Alice:changed", "--user", "heartbeat:hbpass"],
        );
        drop(game);
        g
    };
    let seen = alice.expect("logging you back in failed").await;
    assert!(
        seen.contains("Either that player does not exist"),
        "the game's answer is shown: {seen}"
    );
    alice.send("connect Alice changed").await;
    alice.expect("Last connect was from").await;
    game.kill();
}

#[tokio::test]
async fn automatic_failover_to_standby() {
    let dir = TempDir::new("autofail");
    let mut primary = Game::start(&dir, &[]);
    let standby = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &config_for(&[&primary, &standby], "[failover]\nafter = \"1s\"\n"),
    );
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    primary.kill();
    alice.expect(OFFLINE).await;
    alice.expect(ONLINE).await;
    alice.send("say on standby").await;
    alice.expect("You say, \"on standby\"").await;
    assert!(standby
        .lines_from("Alice")
        .contains(&"say on standby".to_string()));
    proxy.wait_log("failover").await;
    proxy.assert_no_passwords();
}

#[tokio::test]
async fn sighup_reorder_moves_everyone() {
    let dir = TempDir::new("hupfail");
    let first = Game::start(&dir, &[]);
    let second = Game::start(&dir, &[]);
    let cfg1 = config_for(&[&first, &second], "");
    let proxy = Proxy::start(&dir, &cfg1);
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let mut bob = Client::login(proxy.addr, "Bob", "bobpw").await;
    // Reorder: second is now preferred.
    let cfg2 = prefer_second(&cfg1, &first, &second);
    proxy.rewrite(&cfg2);
    proxy.sighup();
    alice.expect("Moving you to b1").await;
    alice.expect(ONLINE).await;
    bob.expect(ONLINE).await;
    alice.send("say moved").await;
    bob.expect("Alice says, \"moved\"").await;
    assert!(second
        .lines_from("Alice")
        .contains(&"say moved".to_string()));
    // The old backend saw them leave cleanly.
    first
        .wait_event("Alice quit on the old backend", |e| {
            e["t"] == "close" && e["why"] == "quit"
        })
        .await;
}

#[tokio::test]
async fn sighup_with_broken_config_changes_nothing() {
    let dir = TempDir::new("hupbad");
    let first = Game::start(&dir, &[]);
    let second = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&first, &second], ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    proxy.rewrite(&format!(
        "[[backends]]\nname = \"b1\"\naddr = \"{}\"\nnonsense = true\n",
        second.addr
    ));
    proxy.sighup();
    proxy.wait_log("config reload failed").await;
    assert!(proxy.logs().contains("nonsense"), "the error names the key");
    alice.expect_open_for(Duration::from_millis(300)).await;
    alice.send("say still here").await;
    alice.expect("You say, \"still here\"").await;
    assert!(first
        .lines_from("Alice")
        .contains(&"say still here".to_string()));
    assert!(!alice.text.contains("[holdfast]"));
}

#[tokio::test]
async fn sigterm_tells_players_and_exits_zero() {
    let dir = TempDir::new("sigterm");
    let game = Game::start(&dir, &[]);
    let mut proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    let code = {
        let stop = tokio::task::spawn_blocking(move || {
            let c = proxy.stop();
            (c, proxy)
        });
        alice.expect("is stopping").await;
        alice.expect_closed().await;
        stop.await.unwrap().0
    };
    assert_eq!(code, Some(0));
    game.wait_event("Alice left cleanly", |e| {
        e["t"] == "close" && e["why"] == "quit"
    })
    .await;
}

/// Not a timed assertion: prints how long 500 re-logins took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_held_sessions_restored() {
    const N: usize = 500;
    let dir = TempDir::new("restore500");
    let users: Vec<String> = (0..N).map(|i| format!("P{i}:pw{i}")).collect();
    let mut args: Vec<&str> = vec!["--user", "heartbeat:hbpass"];
    for u in &users {
        args.push("--user");
        args.push(u);
    }
    let mut game = Game::start(&dir, &args);
    let proxy = Proxy::start_with(
        &dir,
        &config_for(&[&game], "[heartbeat]\nuser = \"heartbeat\"\npassword = \"hbpass\"\ninterval = \"1s\"\ntimeout = \"5s\"\n[relogin]\nrate = 5000\nburst = 500\njitter = \"0ms\"\n[listen]\naddrs = [\"127.0.0.1:0\"]\nmax_per_ip = 1000\n[limits]\nconn_rate_per_ip = 0\n"),
        "holdfast=info",
        &[],
    );
    let mut clients = Vec::new();
    for i in 0..N {
        clients.push(Client::login(proxy.addr, &format!("P{i}"), &format!("pw{i}")).await);
    }
    game.kill();
    for c in clients.iter_mut() {
        c.expect(OFFLINE).await;
    }
    let t0 = Instant::now();
    game.restart();
    let mut handles = Vec::new();
    for mut c in clients {
        handles.push(tokio::spawn(async move {
            c.expect_within(ONLINE, Duration::from_secs(60)).await;
            c
        }));
    }
    let mut clients = Vec::new();
    for h in handles {
        clients.push(h.await.unwrap());
    }
    let took = t0.elapsed();
    eprintln!("FIGURE: {N} held sessions restored in {took:?} (debug build)");
    // Every re-login makes the game tell everyone "X has connected": 250,000
    // lines from a debug-build game, so give the answer time to get through.
    clients[0].send("say first").await;
    clients[0]
        .expect_within("You say, \"first\"", Duration::from_secs(60))
        .await;
}

#[tokio::test]
async fn failback_returns_to_the_preferred_backend() {
    let dir = TempDir::new("failback");
    let mut primary = Game::start(&dir, &[]);
    let standby = Game::start(&dir, &[]);
    let proxy = Proxy::start(
        &dir,
        &config_for(
            &[&primary, &standby],
            "[failover]\nafter = \"500ms\"\nfailback = true\n",
        ),
    );
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    primary.kill();
    alice.expect(OFFLINE).await;
    alice.expect(ONLINE).await;
    alice.send("say standby").await;
    alice.expect("You say, \"standby\"").await;
    primary.restart();
    alice.expect("Moving you to b0").await;
    alice.expect(ONLINE).await;
    alice.send("say home").await;
    alice.expect("You say, \"home\"").await;
    assert!(primary
        .lines_from("Alice")
        .contains(&"say home".to_string()));
    assert!(standby
        .lines_from("Alice")
        .contains(&"say standby".to_string()));
}

#[tokio::test]
async fn instant_restart_is_not_mistaken_for_a_quit() {
    // A supervisor may restart the game within milliseconds; the heartbeat
    // then answers from the new process. That must not read as "the game
    // is alive, so the player quit": the player is held and logged back in.
    let dir = TempDir::new("instantrestart");
    let mut game = Game::start(&dir, &[]);
    let proxy = Proxy::start(&dir, &config_for(&[&game], ""));
    let mut alice = Client::login(proxy.addr, "Alice", "alicepw").await;
    for _ in 0..3 {
        // Pausing the proxy while the game restarts lets the heartbeat reach
        // the new process before the session has looked at its closed
        // connection, which is the race this is about.
        proxy.freeze();
        game.restart();
        proxy.thaw();
        alice.expect(ONLINE).await;
        alice.send("say still with you").await;
        alice.expect("You say, \"still with you\"").await;
    }
    assert!(!alice.closed);
    assert!(!proxy.logs().contains("reason=\"booted\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_ends_every_session_cleanly() {
    const N: usize = 20;
    let dir = TempDir::new("termload");
    let users: Vec<String> = (0..N).map(|i| format!("L{i}:pw{i}")).collect();
    let mut args: Vec<&str> = vec!["--user", "heartbeat:hbpass"];
    for u in &users {
        args.push("--user");
        args.push(u);
    }
    let game = Game::start(&dir, &args);
    let mut proxy = Proxy::start_with(
        &dir,
        &config_for(&[&game], "[limits]\nconn_rate_per_ip = 0\n"),
        "holdfast=info",
        &[],
    );
    let mut tasks = Vec::new();
    for i in 0..N {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::login(addr, &format!("L{i}"), &format!("pw{i}")).await;
            // Stop-and-wait: send a numbered line, wait for its echo, until
            // the proxy says it is stopping.
            let mut acked = Vec::new();
            for n in 0..100_000u32 {
                c.send(&format!("say {n}")).await;
                let want = format!("You say, \"{n}\"");
                let got = c.collect_for(Duration::from_millis(20)).await;
                if got.contains("is stopping") || c.closed {
                    if got.contains(&want) {
                        acked.push(n);
                    }
                    break;
                }
                if got.contains(&want) {
                    acked.push(n);
                    c.pos = c.text.len();
                } else {
                    c.expect(&want).await;
                    acked.push(n);
                }
            }
            c.expect_closed().await;
            assert!(c.text.contains("is stopping"), "L{i} was told");
            (i, acked)
        }));
    }
    // Let everyone play for a moment, then stop the proxy.
    let t0 = std::time::Instant::now();
    while game.events().iter().filter(|e| e["t"] == "login").count() <= N {
        assert!(t0.elapsed() < WAIT, "players did not all log in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let code = tokio::task::spawn_blocking(move || proxy.stop())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    for t in tasks {
        let (i, acked) = t.await.unwrap();
        let user = format!("L{i}");
        let got: Vec<u32> = game
            .lines_from(&user)
            .iter()
            .filter_map(|l| l.strip_prefix("say ").and_then(|n| n.parse().ok()))
            .collect();
        // Everything acknowledged reached the game, once, in order.
        assert!(!acked.is_empty(), "{user} played");
        assert_eq!(&got[..acked.len()], &acked[..], "{user}");
        let mut sorted = got.clone();
        sorted.dedup();
        assert_eq!(sorted, got, "{user}: no duplicates");
        assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "{user}: in order");
    }
    // And the game saw a clean quit from every player, not a dropped link.
    let quits = game
        .events()
        .into_iter()
        .filter(|e| e["t"] == "close" && e["why"] == "quit")
        .count();
    assert!(quits >= N, "every player quit cleanly ({quits})");
}
