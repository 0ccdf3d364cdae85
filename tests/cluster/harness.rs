//! The cluster tests' harness: a TCP relay that can be cut, a NATS
//! cluster whose nodes do not advertise each other, and the checks on the
//! games' logs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::common::bus::*;
use crate::common::nats::*;
use crate::common::*;

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

/// `js_cluster(dir, 3)`, but the nodes do not tell clients about each
/// other (`--no_advertise`): a client of one node stays cut off when that
/// node dies, instead of moving to another.
pub fn js_cluster_alone(dir: &TempDir) -> Vec<NatsServer> {
    js_cluster_with(dir, 3, &["--no_advertise"])
}

pub async fn wait_js_ready(nodes: &[NatsServer]) {
    let t0 = Instant::now();
    let js = async_nats::jetstream::new(connect(&nodes[0].url()).await);
    loop {
        let r = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: "READY".into(),
                subjects: vec!["ready.probe".into()],
                num_replicas: nodes.len(),
                ..Default::default()
            })
            .await;
        if r.is_ok() {
            let _ = js.delete_stream("READY").await;
            return;
        }
        assert!(
            t0.elapsed() < WAIT * 3,
            "JetStream cluster not ready: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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

pub fn events(w: &Watch, kind: &str) -> Vec<Value> {
    w.events()
        .into_iter()
        .filter(|m| m.kind() == kind)
        .map(|m| m.json)
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
