//! The cluster tests' harness: a member's config, a TCP relay that can be
//! cut, a NATS cluster whose nodes do not advertise each other, the
//! members' metrics and status, and the checks on the games' logs.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::common::bus::*;
use crate::common::nats::*;
use crate::common::*;

/// The members' instance names; member `i` reaches NATS through node `i`.
pub const NAMES: [&str; 3] = ["hf-a", "hf-b", "hf-c"];
/// One player for each member.
pub const USERS: [(&str, &str); 3] = [("Alice", "alicepw"), ("Bob", "bobpw"), ("Wiz", "wizpw")];
pub const ONLINE: &str = "You have been logged back in.";
pub const PAUSED: &str = "Test MUSH is paused for a moment";
/// `failover.after` in [`member_config`].
pub const FAILOVER_AFTER: Duration = Duration::from_secs(1);

/// A member's config: backends b0 and b1 in that order, fast probes,
/// input queued during an outage, failover after [`FAILOVER_AFTER`], and
/// the bus on `nats` as `instance` in cluster `test` of three with `lease`
/// and `rpc_allow`. `sections` (whole TOML sections) come before the
/// backends.
pub fn member_config(
    b0: &str,
    b1: &str,
    nats: &str,
    instance: &str,
    lease: Duration,
    rpc_allow: &[&str],
    sections: &str,
) -> String {
    let bus = bus_toml(
        &[nats.to_string()],
        instance,
        &format!(
            "jetstream = true\ncluster = \"test\"\ncluster_size = 3\nlease = \"{}ms\"\nrpc_allow = {rpc_allow:?}",
            lease.as_millis()
        ),
    );
    format!(
        "game = \"Test MUSH\"\n\
         [heartbeat]\nuser = \"heartbeat\"\npassword = \"hbpass\"\ninterval = \"250ms\"\ntimeout = \"1s\"\n\
         [client_ip]\nmode = \"command\"\n\
         [outage]\nqueue_input = true\n\
         [failover]\nafter = \"{}s\"\n\
         {sections}{}{bus}",
        FAILOVER_AFTER.as_secs(),
        backends(&[("b0", b0), ("b1", b1)])
    )
}

/// `[[backends]]` sections, in order.
pub fn backends(list: &[(&str, &str)]) -> String {
    list.iter()
        .map(|(n, a)| format!("[[backends]]\nname = \"{n}\"\naddr = \"{a}\"\n"))
        .collect()
}

/// A TCP forwarder that can be cut: cutting closes every connection
/// through it and refuses new ones (accepted, then closed at once).
pub struct Relay {
    pub port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Relay {
    pub async fn new(target: std::net::SocketAddr) -> Relay {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (c, cs, st) = (cut.clone(), conns.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (inbound, _) = tokio::select! {
                    _ = st.cancelled() => return,
                    r = l.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                if c.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let Ok(out) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let token = cs.lock().unwrap().clone();
                tokio::spawn(async move {
                    let (mut ci, mut co) = inbound.into_split();
                    let (mut si, mut so) = out.into_split();
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy(&mut ci, &mut so) => {}
                        _ = tokio::io::copy(&mut si, &mut co) => {}
                    }
                });
            }
        });
        Relay {
            port,
            cut,
            conns,
            stop,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn cut(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
        if on {
            let mut t = self.conns.lock().unwrap();
            t.cancel();
            *t = CancellationToken::new();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
        self.conns.lock().unwrap().cancel();
    }
}

/// One gauge of cluster `test` from `proxy`'s `/metrics` (`None`: absent).
pub async fn gauge(proxy: &Proxy, name: &str) -> Option<f64> {
    let series = format!("{name}{{cluster=\"test\"}}");
    crate::common::scrape::series(proxy.metrics_addr().await, &series).await
}

/// Scrapes until gauge `name` of `proxy` is `want`, for up to `within`.
pub async fn gauge_becomes(proxy: &Proxy, name: &str, want: f64, within: Duration) {
    let t0 = Instant::now();
    loop {
        let got = gauge(proxy, name).await;
        if got == Some(want) {
            return;
        }
        assert!(t0.elapsed() < within, "{name} is {got:?}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asks `instance` for its status until its `cluster` part satisfies `f`,
/// for up to `within`.
pub async fn status_until(
    client: &async_nats::Client,
    instance: &str,
    within: Duration,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let t0 = Instant::now();
    loop {
        let st = request(client, instance, "status", "{}").await;
        if f(&st["cluster"]) {
            return st;
        }
        assert!(t0.elapsed() < within, "{st:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The node (`n{i}`) that leads the cluster's bucket, once there is one.
pub async fn bucket_leader(nodes: &[NatsServer]) -> usize {
    let js = async_nats::jetstream::new(connect(&nodes[0].url()).await);
    let t0 = Instant::now();
    loop {
        let leader = match js.get_stream("KV_holdfast_cluster_test").await {
            Ok(mut st) => st
                .info()
                .await
                .ok()
                .and_then(|i| i.cluster.clone())
                .and_then(|c| c.leader),
            Err(_) => None,
        };
        if let Some(l) = leader {
            return (0..nodes.len())
                .find(|i| l == format!("n{i}"))
                .unwrap_or_else(|| panic!("the bucket's leader {l} is none of the nodes"));
        }
        assert!(t0.elapsed() < WAIT, "the bucket's stream has no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `js_cluster(dir, 3)`, but the nodes do not tell clients about each
/// other (`--no_advertise`): a client of one node stays cut off when that
/// node dies, instead of moving to another.
pub fn js_cluster_alone(dir: &TempDir) -> Vec<NatsServer> {
    js_cluster_with(dir, 3, &["--no_advertise"])
}

/// Logs in once the game's banner is there: an instance holds new
/// players until it has joined the cluster.
pub async fn login(addr: std::net::SocketAddr, user: &str, pass: &str) -> Client {
    let mut c = Client::connect(addr).await;
    c.expect("Welcome to FakeMUSH").await;
    c.send(&format!("connect {user} {pass}")).await;
    c.expect("Last connect was from").await;
    c.send("think login-settled").await;
    c.expect("login-settled").await;
    c
}

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Players' logged-in spans on a game (the heartbeat's excluded): from
/// `login` to that connection's `logout` or `close`, or to `killed` (a
/// killed game logs nothing more), or still open.
pub fn spans(g: &Game, killed: Option<u64>) -> Vec<(u64, u64, String)> {
    let ev = g.events();
    let mut out = Vec::new();
    for (i, e) in ev.iter().enumerate() {
        if e["t"] != "login" || e["user"] == "heartbeat" {
            continue;
        }
        let conn = &e["conn"];
        let start = e["us"].as_u64().unwrap();
        let end = ev[i + 1..]
            .iter()
            .find(|x| (x["t"] == "logout" || x["t"] == "close") && &x["conn"] == conn)
            .and_then(|x| x["us"].as_u64())
            .or(killed)
            .unwrap_or(u64::MAX);
        out.push((start, end, e["user"].as_str().unwrap().to_string()));
    }
    out
}

/// The one truth: at no moment was a player logged in on b0 while another
/// was logged in on b1.
pub fn assert_one_backend_at_a_time(games: &[Game; 2], killed0: Option<u64>) {
    let a = spans(&games[0], killed0);
    let b = spans(&games[1], None);
    for (s0, e0, u0) in &a {
        for (s1, e1, u1) in &b {
            assert!(
                e0 <= s1 || e1 <= s0,
                "{u0} on b0 ({s0}..{e0}) and {u1} on b1 ({s1}..{e1}) at the same time"
            );
        }
    }
}

/// The events of `kind` as a consumer takes them: once per `id`. The bus
/// is at least once: a batch sent on a connection that dropped before the
/// server confirmed it is sent again on the next (see `bus::publisher`),
/// and an instance cut off from its NATS node does exactly that.
pub fn events(w: &Watch, kind: &str) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    w.events()
        .into_iter()
        .filter(|m| m.kind() == kind)
        .map(|m| m.json)
        .filter(|e| seen.insert(e["id"].to_string()))
        .collect()
}

pub async fn wait_events(w: &Watch, kind: &str, n: usize, within: Duration) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let v = events(w, kind);
        if v.len() >= n {
            return v;
        }
        assert!(
            t0.elapsed() < within,
            "only {} {kind} events within {within:?}: {:#?}",
            v.len(),
            w.events().iter().map(|m| m.raw.clone()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn ms_of(rfc3339: &str) -> i128 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp_nanos()
        / 1_000_000
}
