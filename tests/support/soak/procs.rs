//! The processes the soak drives: two fakemush games, nats-server and the
//! holdfast proxy, each restartable on the same port; signals; and what
//! /proc says about the proxy (RSS, fds, threads).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a process gets to become ready (or to exit) before the soak
/// gives up on it.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Microseconds since the Unix epoch (the clock fakemush stamps its log with).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Sends `sig` (e.g. "STOP") to `pid` with kill(1): no unsafe code here.
pub fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("kill -{sig} {pid}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("kill -{sig} {pid} failed"))
    }
}

/// A free loopback port (bound and released; the soak is alone on it).
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

fn wait_file(path: &Path, child: &mut Child, what: &str) -> Result<String, String> {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.trim().is_empty() {
                return Ok(s);
            }
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("{what} exited ({st}) before it was ready"));
        }
        if t0.elapsed() > START_TIMEOUT {
            return Err(format!("{what} did not become ready"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits up to `limit` for `child` to exit; kills it if it does not.
fn reap(child: &mut Child, limit: Duration) -> Option<i32> {
    let t0 = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return st.code(),
            Ok(None) if t0.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

// ----- games -------------------------------------------------------------

/// One fakemush game, restartable on its port; its JSON log appends across
/// restarts.
pub struct Game {
    /// Backend name in the proxy's config.
    pub name: String,
    /// Where it listens (fixed after the first start).
    pub addr: SocketAddr,
    /// Its JSON log.
    pub log: PathBuf,
    /// Whether it is SIGSTOPped.
    pub frozen: bool,
    child: Option<Child>,
    bin: PathBuf,
    dir: PathBuf,
    users: Vec<String>,
}

impl Game {
    /// Starts a game named `name` on a dynamic port with `users`
    /// (`NAME:PASS[:wizard]`).
    pub fn start(bin: &Path, dir: &Path, name: &str, users: Vec<String>) -> Result<Game, String> {
        let mut g = Game {
            name: name.to_string(),
            addr: ([127, 0, 0, 1], 0).into(),
            log: dir.join(format!("game-{name}.jsonl")),
            frozen: false,
            child: None,
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            users,
        };
        g.spawn()?;
        Ok(g)
    }

    /// Whether the process is running (possibly frozen).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts the game again on the same port (it must not be running).
    pub fn spawn(&mut self) -> Result<(), String> {
        let ready = self.dir.join(format!("ready-{}", self.name));
        let _ = std::fs::remove_file(&ready);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--listen")
            .arg(self.addr.to_string())
            .arg("--ready-file")
            .arg(&ready)
            .arg("--log")
            .arg(&self.log);
        for u in &self.users {
            cmd.arg("--user").arg(u);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start fakemush: {e}"))?;
        let s = wait_file(&ready, &mut child, "fakemush")?;
        self.addr = s
            .trim()
            .parse()
            .map_err(|e| format!("fakemush ready file {s:?}: {e}"))?;
        self.child = Some(child);
        self.frozen = false;
        Ok(())
    }

    /// SIGKILL (thawing first is not needed: SIGKILL ends a stopped process).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.frozen = false;
    }

    /// SIGTERM: fakemush logs the signal and exits at once.
    pub fn term(&mut self) -> Result<(), String> {
        let Some(mut c) = self.child.take() else {
            return Ok(());
        };
        signal(c.id(), "TERM")?;
        reap(&mut c, Duration::from_secs(5));
        Ok(())
    }

    /// The game's own clean shutdown: a wizard connects straight to it and
    /// types `@shutdown`; every player gets `GAME: Shutdown by Wiz` and is
    /// disconnected, then the process exits. Blocking (the chaos thread).
    pub fn shutdown_command(&mut self, wiz: &str, pass: &str) -> Result<(), String> {
        use std::io::{Read, Write};
        let talk = || {
            let mut s = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
                .map_err(|e| format!("connect: {e}"))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))
                .map_err(|e| e.to_string())?;
            s.write_all(format!("connect {wiz} {pass}\r\n").as_bytes())
                .map_err(|e| format!("write: {e}"))?;
            let mut seen = Vec::new();
            let mut buf = [0u8; 8192];
            while !String::from_utf8_lossy(&seen).contains("Last connect was from") {
                let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("closed before login".to_string());
                }
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"@shutdown\r\n")
                .map_err(|e| format!("write: {e}"))?;
            // Read to EOF (or the read timeout): the game closes us too.
            while s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
            Ok::<(), String>(())
        };
        let r = talk();
        if let Some(mut c) = self.child.take() {
            // fakemush waits up to 2 s for its connections to close.
            if reap(&mut c, Duration::from_secs(5)).is_none() {
                return Err("fakemush did not exit after @shutdown".into());
            }
        }
        r
    }

    /// SIGSTOP: the host goes silent without closing anything.
    pub fn freeze(&mut self) -> Result<(), String> {
        let pid = self.pid().ok_or("not running")?;
        signal(pid, "STOP")?;
        self.frozen = true;
        Ok(())
    }

    /// SIGCONT.
    pub fn thaw(&mut self) -> Result<(), String> {
        if !self.frozen {
            return Ok(());
        }
        let pid = self.pid().ok_or("not running")?;
        signal(pid, "CONT")?;
        self.frozen = false;
        Ok(())
    }

    /// Thawed and running: what the end of the soak needs.
    pub fn ensure_up(&mut self) -> Result<(), String> {
        self.thaw()?;
        if !self.running() {
            self.spawn()?;
        }
        Ok(())
    }
}

impl Drop for Game {
    fn drop(&mut self) {
        self.kill();
    }
}

// ----- nats-server -------------------------------------------------------

/// Our own nats-server on a free port (never the system one on 4222).
pub struct Nats {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
    bin: PathBuf,
    log: PathBuf,
}

impl Nats {
    /// Starts nats-server on a free loopback port.
    pub fn start(bin: &Path, dir: &Path) -> Result<Nats, String> {
        let mut n = Nats {
            port: free_port()?,
            child: None,
            bin: bin.to_owned(),
            log: dir.join("nats-server.log"),
        };
        n.spawn()?;
        Ok(n)
    }

    /// The URL for the proxy's config.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Whether it is running.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it (again) on its port and waits until it accepts.
    pub fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("nats log: {e}"))?;
        let mut child = Command::new(&self.bin)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start nats-server: {e}"))?;
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!(
                    "nats-server exited ({st}); see {}",
                    self.log.display()
                ));
            }
            if t0.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                return Err("nats-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL (`hard`) or SIGTERM.
    pub fn stop(&mut self, hard: bool) {
        if let Some(mut c) = self.child.take() {
            if hard || signal(c.id(), "TERM").is_err() {
                let _ = c.kill();
            }
            reap(&mut c, Duration::from_secs(5));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop(true);
    }
}

// ----- the proxy ---------------------------------------------------------

/// The holdfast process under test. Its pid changes with each upgrade
/// (`SIGUSR2`): the new process rewrites the ready file, which the soak
/// follows ([`Upgrader`]).
pub struct Proxy {
    /// Where players connect.
    pub addr: SocketAddr,
    /// Its JSON log (stderr; every generation writes to the same file).
    pub log: PathBuf,
    up: Upgrader,
}

/// What the soak needs to upgrade the proxy and follow it (shared by the
/// chaos thread, the sampler and the end).
#[derive(Clone)]
pub struct Upgrader {
    pid: Arc<AtomicU32>,
    ready: PathBuf,
    log: PathBuf,
    /// The first generation, our child until it hands over.
    child: Arc<Mutex<Option<Child>>>,
}

fn ready_pid(s: &str) -> Option<u32> {
    s.lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok())
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

impl Upgrader {
    /// The pid serving now.
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// `SIGUSR2`, then waits for the ready file to name a new pid and for
    /// the old process to be gone (exit 0 when it is our child). Returns
    /// how long the new pid took to appear.
    pub fn upgrade(&self) -> Result<Duration, String> {
        let old = self.pid();
        let t0 = Instant::now();
        signal(old, "USR2")?;
        let new = loop {
            let s = std::fs::read_to_string(&self.ready).unwrap_or_default();
            if let Some(p) = ready_pid(&s).filter(|p| *p != old) {
                break p;
            }
            if t0.elapsed() > START_TIMEOUT {
                return Err(format!("no new pid after SIGUSR2 to {old}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = t0.elapsed();
        self.pid.store(new, Ordering::Relaxed);
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if child.as_ref().map(Child::id) == Some(old) {
            let mut c = child.take().ok_or("no child")?;
            match reap(&mut c, START_TIMEOUT) {
                Some(0) => {}
                other => return Err(format!("the old holdfast exited with {other:?}")),
            }
        } else {
            let t = Instant::now();
            while alive(old) {
                if t.elapsed() > START_TIMEOUT {
                    return Err(format!("the old holdfast {old} did not exit"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if !alive(new) {
            return Err(format!("the new holdfast {new} is not running"));
        }
        Ok(took)
    }

    /// SIGTERM to the pid serving now and wait (bounded): the exit code of
    /// our child, or, for a later generation (not our child), 0 if it is
    /// gone and logged its clean stop; None if it had to be killed.
    fn stop(&self) -> Option<i32> {
        if let Some(mut c) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            signal(c.id(), "TERM").ok()?;
            return reap(&mut c, Duration::from_secs(15));
        }
        let pid = self.pid();
        signal(pid, "TERM").ok()?;
        let t0 = Instant::now();
        while alive(pid) {
            if t0.elapsed() > Duration::from_secs(15) {
                let _ = signal(pid, "KILL");
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines()
            .rev()
            .take(50)
            .any(|l| l.contains("\"message\":\"stopped\""))
            .then_some(0)
    }
}

impl Proxy {
    /// Starts `holdfast run -c config` with JSON logs at info level.
    pub fn start(bin: &Path, dir: &Path, config: &Path) -> Result<Proxy, String> {
        let ready = dir.join("ready-holdfast");
        let _ = std::fs::remove_file(&ready);
        let log = dir.join("holdfast.jsonl");
        let err = std::fs::File::create(&log).map_err(|e| format!("holdfast log: {e}"))?;
        let mut child = Command::new(bin)
            .args(["--log-format", "json", "run", "-c"])
            .arg(config)
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", "holdfast=info,async_nats=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("start holdfast: {e}"))?;
        let s = wait_file(&ready, &mut child, "holdfast")?;
        let addr = s
            .lines()
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|e| format!("holdfast ready file {s:?}: {e}"))?;
        Ok(Proxy {
            addr,
            log: log.clone(),
            up: Upgrader {
                pid: Arc::new(AtomicU32::new(child.id())),
                ready,
                log,
                child: Arc::new(Mutex::new(Some(child))),
            },
        })
    }

    /// Upgrades and follows the pid ([`Upgrader`]).
    pub fn upgrader(&self) -> Upgrader {
        self.up.clone()
    }

    /// The pid serving now.
    pub fn pid(&self) -> u32 {
        self.up.pid()
    }

    /// SIGTERM and wait (bounded); the exit code, or None if it had to be
    /// killed.
    pub fn stop(&mut self) -> Option<i32> {
        self.up.stop()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(mut c) = self
            .up
            .child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = c.kill();
            let _ = c.wait();
        } else if alive(self.up.pid()) {
            let _ = signal(self.up.pid(), "KILL");
        }
    }
}

/// What /proc says about a process at one moment.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcStat {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size so far (VmHWM), KiB.
    pub hwm_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// OS threads.
    pub threads: u64,
}

/// Reads VmRSS, Threads and the fd count of `pid`.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some(ProcStat {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        threads: field("Threads:")?,
        fds,
    })
}
