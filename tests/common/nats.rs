//! nats-server processes on dynamic loopback ports, killed on drop.
//!
//! A server binds port 0 itself (`-p -1`) and the harness reads the port
//! it got from its log, so no other process can take the port in between;
//! a restart asks for that same port again.

use std::net::TcpListener;
use std::process::Command;

use super::proc::{Proc, READY};
use super::TempDir;

/// A loopback port nothing listens on right now: for a URL that must fail,
/// or for a server a test starts later on purpose (then the start fails
/// loudly if another process took it meanwhile). Servers the harness
/// starts do not use it: they bind port 0 themselves.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One nats-server.
pub struct NatsServer {
    proc: Option<Proc>,
    /// Its client port (0 until it started).
    pub port: u16,
    /// Its cluster (route) port, when it is in a cluster.
    pub route_port: Option<u16>,
    args: Vec<String>,
    log: std::path::PathBuf,
}

impl NatsServer {
    /// A standalone server.
    pub fn start() -> NatsServer {
        Self::start_with(Vec::new())
    }

    /// A server with extra arguments, on a port it picks.
    pub fn start_with(args: Vec<String>) -> NatsServer {
        Self::start_args(0, args)
    }

    /// A server on `port` (0: it picks one) with extra arguments.
    pub fn start_args(port: u16, args: Vec<String>) -> NatsServer {
        Self::start_full(port, None, args)
    }

    fn start_full(port: u16, route_port: Option<u16>, args: Vec<String>) -> NatsServer {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log =
            std::env::temp_dir().join(format!("holdfast-test-nats-{}-{n}.log", std::process::id()));
        let mut s = NatsServer {
            proc: None,
            port,
            route_port,
            args,
            log,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    /// Starts the server; `Err` (with its output) if it exits or is not
    /// ready in time.
    fn try_spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(nats_bin());
        cmd.arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port_arg(self.port));
        if let Some(rp) = self.route_port {
            cmd.arg("--cluster")
                .arg(format!("nats://127.0.0.1:{}", port_arg(rp)));
        }
        cmd.args(&self.args);
        let mut p = Proc::spawn_piped("nats-server", &mut cmd, &self.log);
        let (mut client, mut route, mut ready) = (None, None, false);
        let want_route = self.route_port.is_some();
        // "Server is ready" comes after the client port, the route port
        // after both: wait for everything this server was asked for.
        let r = p.try_wait_line(READY, |l| {
            if let Some(i) = l.find("Listening for client connections on ") {
                client = port_of(&l[i..]);
            }
            if let Some(i) = l.find("Listening for route connections on ") {
                route = port_of(&l[i..]);
            }
            ready |= l.contains("Server is ready");
            (ready && client.is_some() && (route.is_some() || !want_route)).then_some(())
        });
        if let Err(e) = r {
            return Err(format!(
                "nats-server {} before it was ready; its output:\n{}",
                e.status
                    .map(|s| format!("exited ({s})"))
                    .unwrap_or_else(|| "was not ready in time".into()),
                e.output
            ));
        }
        self.port = client.unwrap();
        if want_route {
            self.route_port = route;
        }
        self.proc = Some(p);
        Ok(())
    }

    /// A standalone server with JetStream, storing under `dir` (kept
    /// across `restart`).
    pub fn start_js(dir: &TempDir) -> NatsServer {
        Self::start_js_on(dir, 0)
    }

    pub fn start_js_on(dir: &TempDir, port: u16) -> NatsServer {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sd = dir.path(&format!("js-{n}"));
        Self::start_args(
            port,
            vec!["-js".into(), "-sd".into(), sd.display().to_string()],
        )
    }

    fn running(&self) -> &Proc {
        self.proc.as_ref().expect("nats-server is not running")
    }

    /// SIGSTOP: the server hangs with every connection open.
    pub fn freeze(&self) {
        self.running().signal("STOP");
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.running().signal("CONT");
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        self.proc = None;
    }

    /// Kills it and starts it again on the same port(s).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn port_arg(p: u16) -> String {
    if p == 0 {
        "-1".to_string()
    } else {
        p.to_string()
    }
}

/// The port at the end of "... on 127.0.0.1:4222".
fn port_of(s: &str) -> Option<u16> {
    s.trim_end().rsplit(':').next()?.parse().ok()
}

/// A cluster of `n` nats-servers routed to each other. Each binds its own
/// client and route ports; each later one routes to every earlier one and
/// the cluster gossips the rest.
pub fn cluster(_dir: &TempDir, n: usize) -> Vec<NatsServer> {
    let mut nodes: Vec<NatsServer> = Vec::new();
    for _ in 0..n {
        let routes: Vec<String> = nodes
            .iter()
            .map(|s| format!("nats-route://127.0.0.1:{}", s.route_port.unwrap()))
            .collect();
        let mut args = vec!["--cluster_name".to_string(), "holdfast-test".to_string()];
        if !routes.is_empty() {
            args.push("--routes".to_string());
            args.push(routes.join(","));
        }
        nodes.push(NatsServer::start_full(0, Some(0), args));
    }
    nodes
}

/// A cluster of `n` nats-servers with JetStream (each stores under `dir`),
/// routed to each other.
pub fn js_cluster(dir: &TempDir, n: usize) -> Vec<NatsServer> {
    js_cluster_with(dir, n, &[])
}

/// [`js_cluster`] with more arguments for every node. Route ports must be
/// known before the nodes start, so they are picked free and released
/// first; another process may take one meanwhile (a node then exits, after
/// saying it is ready for clients), so each node waits for its route
/// listener too and the cluster starts again on fresh ports when one
/// fails (client ports are the kernel's choice).
pub fn js_cluster_with(dir: &TempDir, n: usize, extra: &[&str]) -> Vec<NatsServer> {
    let mut last = String::new();
    for attempt in 0..5 {
        let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<String> = route_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        let mut nodes = Vec::new();
        for (i, rp) in route_ports.iter().enumerate() {
            let sd = dir.path(&format!("js-node{i}-{attempt}"));
            let mut args = vec![
                "-js".to_string(),
                "-sd".to_string(),
                sd.display().to_string(),
                "--server_name".to_string(),
                format!("n{i}"),
                "--cluster_name".to_string(),
                "holdfast-js".to_string(),
                "--routes".to_string(),
                routes.join(","),
            ];
            args.extend(extra.iter().map(|a| a.to_string()));
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let k = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut node = NatsServer {
                proc: None,
                port: 0,
                route_port: Some(*rp),
                args,
                log: std::env::temp_dir().join(format!(
                    "holdfast-test-nats-cluster-{}-{k}.log",
                    std::process::id()
                )),
            };
            match node.try_spawn() {
                Ok(()) => nodes.push(node),
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        if nodes.len() == n {
            return nodes;
        }
        eprintln!("js_cluster: a node did not start (attempt {attempt}); fresh ports");
    }
    panic!("js_cluster: no cluster after 5 attempts; last: {last}");
}

/// A forwarder to a nats-server that can *mute* it: while muted, what the
/// server sends is thrown away, while what clients send still reaches it.
/// A publisher behind it sees its messages stored but never confirmed.
/// Needs a multi-thread tokio runtime.
pub struct MuteGate {
    pub port: u16,
    muted: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: tokio_util::sync::CancellationToken,
}

impl MuteGate {
    pub async fn new(target_port: u16) -> MuteGate {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let muted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = tokio_util::sync::CancellationToken::new();
        let (m, st) = (muted.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (inbound, _) = tokio::select! {
                    _ = st.cancelled() => return,
                    r = l.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                let Ok(out) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                else {
                    continue;
                };
                let (mut ci, mut co) = inbound.into_split();
                let (mut si, mut so) = out.into_split();
                let (m, st) = (m.clone(), st.clone());
                tokio::spawn(async move {
                    let up = tokio::io::copy(&mut ci, &mut so);
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = si.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<(), std::io::Error>(());
                            }
                            if !m.load(Ordering::SeqCst) {
                                co.write_all(&buf[..n]).await?;
                            }
                        }
                    };
                    tokio::select! {
                        _ = st.cancelled() => {}
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        MuteGate { port, muted, stop }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn mute(&self, on: bool) {
        self.muted.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for MuteGate {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn nats_bin() -> String {
    std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| {
        for p in [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ] {
            if std::path::Path::new(p).exists() {
                return p.to_string();
            }
        }
        "nats-server".to_string()
    })
}
