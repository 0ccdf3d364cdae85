//! A cluster member that lost its lease pauses its players (SPEC
//! "Clusters pause"): `status` and `/metrics` show them paused, not
//! relaying, and a paused player who types `QUIT` is logged out at the
//! game (the game hears the quit) and leaves as after any quit. Real
//! holdfast in a cluster of one, a real JetStream server (frozen for the
//! pause), real fakemush.

mod common;

use std::time::{Duration, Instant};

use common::bus::bus_toml;
use common::nats::NatsServer;
use common::*;

const PAUSED: &str = "Test MUSH is paused for a moment";
const LEASE: Duration = Duration::from_secs(1);

/// `holdfast_sessions{state}` from the proxy's `/metrics` (`None`: absent).
async fn sessions_in(proxy: &Proxy, state: &str) -> Option<f64> {
    metric(proxy, &format!("holdfast_sessions{{state=\"{state}\"}}")).await
}

/// One series (name and labels) from the proxy's `/metrics`.
async fn metric(proxy: &Proxy, series: &str) -> Option<f64> {
    common::scrape::series(proxy.metrics_addr().await, series).await
}

async fn sessions_become(proxy: &Proxy, state: &str, want: f64) {
    let t0 = Instant::now();
    loop {
        let got = sessions_in(proxy, state).await;
        if got == Some(want) {
            return;
        }
        assert!(t0.elapsed() < WAIT, "{state}: {got:?}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A proxy in a cluster of one with Alice and Bob logged in, then paused
/// (its NATS server frozen past the lease).
struct Paused {
    game: Game,
    nats: NatsServer,
    proxy: Proxy,
    alice: Client,
    bob: Client,
    _dir: TempDir,
}

async fn paused(tag: &str) -> Paused {
    let dir = TempDir::new(tag);
    let game = Game::start(&dir, &[]);
    let nats = NatsServer::start_js(&dir);
    let bus = bus_toml(
        &[nats.url()],
        "hf-solo",
        &format!(
            "jetstream = true\ncluster = \"solo\"\ncluster_size = 1\nlease = \"{}ms\"",
            LEASE.as_millis()
        ),
    );
    let config = config_for(
        &[&game],
        "[metrics]\naddr = \"127.0.0.1:0\"\n[listen]\naddrs = [\"127.0.0.1:0\"]\n",
    );
    let proxy = Proxy::start(&dir, &format!("{config}{bus}"));
    proxy.wait_log("backend up").await;
    // The cluster's first term confirmed: no longer fenced.
    let t0 = Instant::now();
    while metric(&proxy, "holdfast_cluster_fenced{cluster=\"solo\"}").await != Some(0.0) {
        assert!(t0.elapsed() < WAIT, "the cluster never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut alice = Client::connect(proxy.addr).await;
    alice.login("Alice", "alicepw").await;
    let mut bob = Client::connect(proxy.addr).await;
    bob.login("Bob", "bobpw").await;
    sessions_become(&proxy, "relaying", 2.0).await;
    nats.freeze();
    alice.expect_within(PAUSED, LEASE * 2 + WAIT).await;
    bob.expect_within(PAUSED, WAIT).await;
    Paused {
        game,
        nats,
        proxy,
        alice,
        bob,
        _dir: dir,
    }
}

/// What `status` and `/metrics` count (the registry's phase): paused, not
/// relaying, and relaying again once the lease is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_players_show_as_paused() {
    let mut p = paused("pause-status").await;
    sessions_become(&p.proxy, "paused", 2.0).await;
    sessions_become(&p.proxy, "relaying", 0.0).await;
    p.nats.thaw();
    sessions_become(&p.proxy, "relaying", 2.0).await;
    sessions_become(&p.proxy, "paused", 0.0).await;
    p.alice.send("think back").await;
    p.alice.expect("back").await;
}

/// A paused player who types `QUIT` leaves on purpose: the game hears the
/// quit (its goodbye reaches the player) and the connection ends; the
/// other stays paused, logged in at the game.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_player_may_quit() {
    let mut p = paused("pause-quit").await;
    p.alice.send("QUIT").await;
    p.alice.expect("Goodbye. Come back soon!").await;
    p.alice.expect_closed().await;
    let conn = p.game.logins("Alice")[0].clone();
    p.game
        .wait_event("Alice's connection closed by her quit", |e| {
            e["t"] == "close" && e["conn"] == conn && e["why"] == "quit"
        })
        .await;
    p.bob.expect_open_for(Duration::from_millis(200)).await;
    let bob = p.game.logins("Bob")[0].clone();
    assert!(
        !p.game
            .events()
            .iter()
            .any(|e| e["t"] == "close" && e["conn"] == bob),
        "Bob was logged out"
    );
    p.nats.thaw();
    p.bob.send("think still here").await;
    p.bob.expect("still here").await;
}
