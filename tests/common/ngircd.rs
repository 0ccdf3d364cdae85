//! ngircd on a dynamic loopback port with a generated config (no PAM, no
//! DNS or ident lookups, fast pings), killed on drop and restartable on the
//! same port; and a [`Gate`], a TCP forwarder a test can close and open to
//! decide when the relay may reach the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::nats::free_port;
use super::proc::{NotReady, Proc, READY};
use super::TempDir;

/// Options for the generated config.
#[derive(Default, Clone)]
pub struct NgircdOpts {
    /// `[Global] Password`: the server password every client must send.
    pub password: Option<String>,
    /// Also listen with TLS on a second port (self-signed cert for 127.0.0.1).
    pub tls: bool,
}

/// One ngircd.
pub struct Ngircd {
    proc: Option<Proc>,
    pub port: u16,
    pub tls_port: Option<u16>,
    /// The self-signed certificate (PEM) of the TLS port.
    pub cert: Option<PathBuf>,
    pub conf: PathBuf,
    pub log: PathBuf,
    pid: PathBuf,
    password: Option<String>,
}

impl Ngircd {
    pub fn start(dir: &TempDir) -> Ngircd {
        Self::start_with(dir, NgircdOpts::default())
    }

    /// ngircd cannot bind port 0 and say which port it got, so the harness
    /// picks free ports; if another process took one before ngircd bound
    /// it ("Can't bind"), it starts again on new ones.
    pub fn start_with(dir: &TempDir, opts: NgircdOpts) -> Ngircd {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let conf = dir.path(&format!("ngircd-{n}.conf"));
        let log = dir.path(&format!("ngircd-{n}.log"));
        let cert = opts.tls.then(|| make_cert(dir));
        let mut s = Ngircd {
            proc: None,
            port: 0,
            tls_port: None,
            cert,
            conf,
            log,
            pid: dir.path(&format!("ngircd-{n}.pid")),
            password: opts.password,
        };
        for attempt in 1.. {
            s.port = free_port();
            s.tls_port = opts.tls.then(free_port);
            s.write_conf();
            match s.try_spawn() {
                Ok(()) => break,
                Err(e) if e.output.contains("Can't bind") && attempt < 5 => continue,
                Err(e) => panic!(
                    "ngircd did not start ({:?}); its output:\n{}",
                    e.status, e.output
                ),
            }
        }
        s
    }

    fn write_conf(&self) {
        let ssl = match (&self.cert, self.tls_port) {
            (Some(c), Some(p)) => format!(
                "[SSL]\nCertFile = {}\nKeyFile = {}\nPorts = {p}\n",
                c.display(),
                c.with_extension("key").display()
            ),
            _ => String::new(),
        };
        let password = self
            .password
            .as_ref()
            .map(|p| format!("Password = {p}\n"))
            .unwrap_or_default();
        let text = format!(
            "[Global]\n\
             Name = irc.holdfast.test\n\
             Info = holdfast test server\n\
             Listen = 127.0.0.1\n\
             Ports = {port}\n\
             MotdPhrase = \"holdfast test\"\n\
             PidFile = {pid}\n\
             {password}\
             [Limits]\n\
             PingTimeout = 10\n\
             PongTimeout = 5\n\
             MaxConnectionsIP = 0\n\
             MaxJoins = 0\n\
             MaxNickLength = 30\n\
             [Options]\n\
             DNS = no\n\
             Ident = no\n\
             PAM = no\n\
             {ssl}",
            port = self.port,
            pid = self.pid.display(),
        );
        std::fs::write(&self.conf, text).unwrap();
    }

    /// Starts it on the configured ports and waits until it says it
    /// listens on each of them (or exits).
    fn try_spawn(&mut self) -> Result<(), NotReady> {
        let mut cmd = Command::new(ngircd_bin());
        cmd.arg("--nodaemon").arg("--config").arg(&self.conf);
        let mut p = Proc::spawn_piped("ngircd", &mut cmd, &self.log);
        let mut left: Vec<String> = [Some(self.port), self.tls_port]
            .into_iter()
            .flatten()
            .map(|p| format!("Now listening on [127.0.0.1]:{p} "))
            .collect();
        p.try_wait_line(READY, |l| {
            left.retain(|w| !l.contains(w.as_str()));
            left.is_empty().then_some(())
        })?;
        self.proc = Some(p);
        Ok(())
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        self.proc = None;
    }

    /// Kills it and starts it again on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.try_spawn() {
            panic!(
                "ngircd did not start again on its ports ({:?}); its output:\n{}",
                e.status, e.output
            );
        }
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A self-signed certificate for 127.0.0.1 (`irc-cert.pem`, key beside it
/// as `irc-cert.key`).
fn make_cert(dir: &TempDir) -> PathBuf {
    let c = dir.path("irc-cert.pem");
    let k = c.with_extension("key");
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .arg("-keyout")
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(st.success(), "openssl could not make a test certificate");
    c
}

fn ngircd_bin() -> String {
    std::env::var("NGIRCD_BIN").unwrap_or_else(|_| {
        for p in [
            "/usr/sbin/ngircd",
            "/usr/bin/ngircd",
            "/usr/local/sbin/ngircd",
        ] {
            if std::path::Path::new(p).exists() {
                return p.to_string();
            }
        }
        "ngircd".to_string()
    })
}

/// A forwarder from its own loopback port to a target port. Closed, it
/// accepts connections and drops them at once, and it cuts the ones it
/// was forwarding; open, it forwards. Needs a multi-thread tokio runtime.
pub struct Gate {
    pub addr: SocketAddr,
    open: Arc<AtomicBool>,
    cut: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Gate {
    pub async fn new(target_port: u16) -> Gate {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let (o, c, s) = (open.clone(), cut.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = s.cancelled() => return,
                    r = l.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                if !o.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let token = c.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut out) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                    }
                });
            }
        });
        Gate {
            addr,
            open,
            cut,
            stop,
        }
    }

    /// Refuses new connections and cuts the forwarded ones.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
        let mut t = self.cut.lock().unwrap();
        t.cancel();
        *t = CancellationToken::new();
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.cancel();
        self.close();
    }
}
