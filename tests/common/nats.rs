//! nats-server processes on dynamic loopback ports, killed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TempDir;

/// Picks a free loopback port. nats-server cannot report a dynamic port
/// through a file, so the harness picks one and retries on a clash.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One nats-server.
pub struct NatsServer {
    pub child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
}

impl NatsServer {
    /// A standalone server.
    pub fn start() -> NatsServer {
        Self::start_args(free_port(), Vec::new())
    }

    pub fn start_args(port: u16, args: Vec<String>) -> NatsServer {
        let mut s = NatsServer {
            child: None,
            port,
            args,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new(nats_bin())
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (run scripts/test.sh to install it)");
        self.child = Some(child);
        wait_port(self.port);
    }

    /// A standalone server with JetStream, storing under `dir` (kept
    /// across `restart`).
    pub fn start_js(dir: &TempDir) -> NatsServer {
        Self::start_js_on(dir, free_port())
    }

    pub fn start_js_on(dir: &TempDir, port: u16) -> NatsServer {
        let sd = dir.path(&format!("js-{port}"));
        Self::start_args(
            port,
            vec!["-js".into(), "-sd".into(), sd.display().to_string()],
        )
    }

    /// SIGSTOP: the server hangs with every connection open.
    pub fn freeze(&self) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        super::reap(&mut self.child);
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of `n` nats-servers routed to each other.
pub fn cluster(_dir: &TempDir, n: usize) -> Vec<NatsServer> {
    let client_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let routes: Vec<String> = route_ports
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect();
    (0..n)
        .map(|i| {
            let args = vec![
                "--cluster_name".to_string(),
                "holdfast-test".to_string(),
                "--cluster".to_string(),
                format!("nats://127.0.0.1:{}", route_ports[i]),
                "--routes".to_string(),
                routes.join(","),
            ];
            NatsServer::start_args(client_ports[i], args)
        })
        .collect()
}

/// A cluster of `n` nats-servers with JetStream (each stores under `dir`),
/// routed to each other.
pub fn js_cluster(dir: &TempDir, n: usize) -> Vec<NatsServer> {
    let client_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let routes: Vec<String> = route_ports
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect();
    (0..n)
        .map(|i| {
            let sd = dir.path(&format!("js-node{i}"));
            let args = vec![
                "-js".to_string(),
                "-sd".to_string(),
                sd.display().to_string(),
                "--server_name".to_string(),
                format!("n{i}"),
                "--cluster_name".to_string(),
                "holdfast-js".to_string(),
                "--cluster".to_string(),
                format!("nats://127.0.0.1:{}", route_ports[i]),
                "--routes".to_string(),
                routes.join(","),
            ];
            NatsServer::start_args(client_ports[i], args)
        })
        .collect()
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

fn wait_port(port: u16) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "nats-server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
