//! ngircd on a dynamic loopback port with a generated config (no PAM, no
//! DNS or ident lookups, fast pings), killed on drop and restartable on the
//! same port; and a [`Gate`], a TCP forwarder a test can close and open to
//! decide when the relay may reach the server.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::nats::free_port;
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
    pub child: Option<Child>,
    pub port: u16,
    pub tls_port: Option<u16>,
    /// The self-signed certificate (PEM) of the TLS port.
    pub cert: Option<std::path::PathBuf>,
    pub conf: std::path::PathBuf,
    pub log: std::path::PathBuf,
}

impl Ngircd {
    pub fn start(dir: &TempDir) -> Ngircd {
        Self::start_with(dir, NgircdOpts::default())
    }

    pub fn start_with(dir: &TempDir, opts: NgircdOpts) -> Ngircd {
        let port = free_port();
        let conf = dir.path(&format!("ngircd-{port}.conf"));
        let log = dir.path(&format!("ngircd-{port}.log"));
        let mut ssl = String::new();
        let (mut tls_port, mut cert) = (None, None);
        if opts.tls {
            let p = free_port();
            let c = dir.path("irc-cert.pem");
            let k = dir.path("irc-key.pem");
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
            ssl = format!(
                "[SSL]\nCertFile = {}\nKeyFile = {}\nPorts = {p}\n",
                c.display(),
                k.display()
            );
            tls_port = Some(p);
            cert = Some(c);
        }
        let password = opts
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
            pid = dir.path(&format!("ngircd-{port}.pid")).display(),
        );
        std::fs::write(&conf, text).unwrap();
        let mut s = Ngircd {
            child: None,
            port,
            tls_port,
            cert,
            conf,
            log,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new(ngircd_bin())
            .arg("--nodaemon")
            .arg("--config")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&self.log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ngircd (apt-get install -y ngircd)");
        self.child = Some(child);
        let t0 = Instant::now();
        for p in [Some(self.port), self.tls_port].into_iter().flatten() {
            while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
                if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!(
                        "ngircd exited ({st}); its output:\n{}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(10),
                    "ngircd did not listen on {p}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        super::reap(&mut self.child);
    }

    /// Kills it and starts it again on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Ngircd {
    fn drop(&mut self) {
        self.kill();
    }
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
