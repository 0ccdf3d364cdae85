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
///
/// It is started through a small bash script in the soak's directory
/// ([`LAUNCHER`]) that `exec`s the real binary under the script's own name
/// (`exec -a`). holdfast upgrades by starting the path it was started from
/// again, so every new process of an upgrade goes through the script too,
/// and reads its environment afresh there: the soak sets the test-only
/// `HOLDFAST_UPGRADE_*` variables for one upgrade only (a file the script
/// reads, [`Upgrader::upgrade_failing`]) and every other upgrade runs as
/// usual.
pub struct Proxy {
    /// Where telnet players connect.
    pub addr: SocketAddr,
    /// Where WebSocket players connect (`listen.ws_addrs`), if configured.
    pub ws_addr: Option<SocketAddr>,
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
    /// The environment file the launcher reads (present for one upgrade).
    next_env: PathBuf,
    /// The first generation, our child until it hands over.
    child: Arc<Mutex<Option<Child>>>,
}

/// The launcher script's name in the soak's directory.
pub const LAUNCHER: &str = "holdfast-launcher";
/// The file the launcher sources, if present, before it starts holdfast.
const NEXT_ENV: &str = "next-upgrade.env";
/// The proxy's log filter. A failing upgrade's new process also logs the
/// upgrade's steps (`upgrade: batch taken` is at debug level).
const RUST_LOG: &str = "holdfast=info,async_nats=warn";
const RUST_LOG_UPGRADE: &str = "holdfast=info,holdfast::upgrade=debug,async_nats=warn";

/// How a failing upgrade fails.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// The new process aborts (`HOLDFAST_UPGRADE_ABORT_AFTER`) 200 ms after
    /// confirming this many batches.
    Abort { after: usize },
    /// The new process confirms each batch `delay_ms` late
    /// (`HOLDFAST_UPGRADE_TOOK_DELAY_MS`) and the soak SIGKILLs it once it
    /// has confirmed `after` batches.
    Kill { after: usize, delay_ms: u64 },
}

/// What a failed upgrade looked like.
#[derive(Debug, Clone)]
pub struct Failed {
    /// The new process's pid.
    pub new_pid: u32,
    /// Batches it confirmed (from its log).
    pub batches: usize,
    /// `SIGUSR2` to the old process's `upgrade failed; carrying on`.
    pub took: Duration,
    /// The old process's reason.
    pub error: String,
}

/// The processes whose parent is `pid` (from /proc: the kernel here may
/// not have `/proc/PID/task/TID/children`).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                // "pid (comm) state ppid ...": comm may hold anything, so
                // split after its last ')'.
                s.rsplit(')')
                    .next()
                    .and_then(|r| r.split_whitespace().nth(1))
                    .and_then(|pp| pp.parse::<u32>().ok())
                    == Some(pid)
            })
        })
        .collect()
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
        self.follow(old, t0)
    }

    /// After `SIGUSR2` to `old` at `t0`: waits for the ready file to name
    /// a new pid, serves it from now on, and waits for the old process to
    /// be gone (exit 0 when it is our child). Returns how long the new pid
    /// took to appear.
    fn follow(&self, old: u32, t0: Instant) -> Result<Duration, String> {
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

    /// The proxy's log from byte `off` on.
    fn log_since(&self, off: u64) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            if f.seek(SeekFrom::Start(off)).is_ok() {
                let _ = f.read_to_string(&mut s);
            }
        }
        s
    }

    /// An upgrade that must fail: the new process is made to die in the
    /// middle of the handover (`how`), and the old one must carry on with
    /// every session: it logs `upgrade failed; carrying on`, still serves
    /// (same pid in the ready file) and has reaped the new one. Errors say
    /// what went otherwise.
    pub fn upgrade_failing(&self, how: Failure) -> Result<Failed, String> {
        let old = self.pid();
        let var = match how {
            Failure::Abort { after } => format!("HOLDFAST_UPGRADE_ABORT_AFTER={after}"),
            Failure::Kill { delay_ms, .. } => format!("HOLDFAST_UPGRADE_TOOK_DELAY_MS={delay_ms}"),
        };
        let env = format!("export {var}\nexport RUST_LOG='{RUST_LOG_UPGRADE}'\n");
        std::fs::write(&self.next_env, env).map_err(|e| format!("{NEXT_ENV}: {e}"))?;
        let r = self.fail_one(old, how);
        // For this upgrade only (the launcher has read it by now, or the
        // upgrade never started one).
        let _ = std::fs::remove_file(&self.next_env);
        r
    }

    fn fail_one(&self, old: u32, how: Failure) -> Result<Failed, String> {
        const FAILED: &str = "upgrade failed; carrying on";
        const HANDED: &str = "upgrade: handed over; stopping";
        const TAKEN: &str = "upgrade: batch taken";
        let off = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let t0 = Instant::now();
        signal(old, "USR2")?;
        // The new process (the launcher, then holdfast in the same pid).
        let new_pid = loop {
            if let Some(p) = children_of(old).into_iter().next() {
                break p;
            }
            if t0.elapsed() > START_TIMEOUT {
                return Err(format!("no new process after SIGUSR2 to {old}"));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if let Failure::Kill { after, .. } = how {
            loop {
                let log = self.log_since(off);
                if log.contains(FAILED) {
                    return Err(format!(
                        "the upgrade failed before {after} batches were taken"
                    ));
                }
                if log.contains(HANDED) {
                    let followed = self.follow(old, t0).err().unwrap_or_default();
                    return Err(format!(
                        "the upgrade went through before {after} batches were taken {followed}"
                    ));
                }
                if log.matches(TAKEN).count() >= after {
                    break;
                }
                if t0.elapsed() > START_TIMEOUT {
                    return Err(format!("the new process never took {after} batches"));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            // The next batch is confirmed `delay_ms` later at the soonest.
            signal(new_pid, "KILL")?;
        }
        let line = loop {
            let log = self.log_since(off);
            if log.contains(HANDED) {
                // Wrong, but the soak goes on with the process that
                // serves now (and says so).
                let followed = self.follow(old, t0).err().unwrap_or_default();
                return Err(format!(
                    "the upgrade went through (new pid {new_pid}) though it was to fail {followed}"
                ));
            }
            if let Some(l) = log.lines().find(|l| l.contains(FAILED)) {
                break l.to_string();
            }
            if t0.elapsed() > START_TIMEOUT {
                return Err(format!(
                    "the old process {old} never said the upgrade failed"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = t0.elapsed();
        let batches = self.log_since(off).matches(TAKEN).count();
        let error = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["fields"]["error"].as_str().map(str::to_string))
            .unwrap_or_default();
        let s = std::fs::read_to_string(&self.ready).unwrap_or_default();
        if ready_pid(&s) != Some(old) || !alive(old) {
            return Err(format!(
                "the old holdfast {old} does not serve after a failed upgrade (ready file: {s:?})"
            ));
        }
        if alive(new_pid) {
            return Err(format!("the failed new holdfast {new_pid} still runs"));
        }
        Ok(Failed {
            new_pid,
            batches,
            took,
            error,
        })
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

/// Writes the launcher: bash, so that `exec -a` keeps the script's path
/// as holdfast's `argv[0]` (the path an upgrade starts again).
fn write_launcher(path: &Path, bin: &Path, next_env: &Path, batch: usize) -> Result<(), String> {
    let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', "'\\''"));
    let text = format!(
        "#!/bin/bash\n\
         # Written by holdfast-soak. Starts holdfast under this script's name,\n\
         # so that an upgrade (SIGUSR2) starts this script again; the soak\n\
         # sets test-only variables for one upgrade in {NEXT_ENV}.\n\
         unset HOLDFAST_UPGRADE_ABORT_AFTER HOLDFAST_UPGRADE_TOOK_DELAY_MS\n\
         export RUST_LOG='{RUST_LOG}'\n\
         export HOLDFAST_UPGRADE_BATCH={batch}\n\
         ulimit -c 0\n\
         if [ -f {env} ]; then . {env}; fi\n\
         exec -a \"$0\" {bin} \"$@\"\n",
        env = q(next_env),
        bin = q(bin),
    );
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

impl Proxy {
    /// Where a player coming in by `door` connects.
    pub fn door(&self, door: crate::link::Door) -> Result<SocketAddr, String> {
        if door.ws() {
            self.ws_addr
                .ok_or_else(|| "no WebSocket address in the ready file".into())
        } else {
            Ok(self.addr)
        }
    }

    /// Starts `holdfast run -c config` with JSON logs at info level,
    /// through the launcher; `batch` sessions per upgrade batch.
    pub fn start(bin: &Path, dir: &Path, config: &Path, batch: usize) -> Result<Proxy, String> {
        let abs = |p: &Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
        let ready = dir.join("ready-holdfast");
        let _ = std::fs::remove_file(&ready);
        let log = dir.join("holdfast.jsonl");
        let err = std::fs::File::create(&log).map_err(|e| format!("holdfast log: {e}"))?;
        let launcher = abs(&dir.join(LAUNCHER))?;
        let next_env = abs(&dir.join(NEXT_ENV))?;
        let _ = std::fs::remove_file(&next_env);
        write_launcher(&launcher, &abs(bin)?, &next_env, batch)?;
        let mut child = Command::new(&launcher)
            .args(["--log-format", "json", "run", "-c"])
            .arg(config)
            .arg("--ready-file")
            .arg(&ready)
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
        let ws_addr = s
            .lines()
            .find_map(|l| l.strip_prefix("ws "))
            .map(|a| a.trim().parse())
            .transpose()
            .map_err(|e| format!("holdfast ready file {s:?}: {e}"))?;
        Ok(Proxy {
            addr,
            ws_addr,
            log: log.clone(),
            up: Upgrader {
                pid: Arc::new(AtomicU32::new(child.id())),
                ready,
                log,
                next_env,
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
    /// Of the RSS, anonymous memory (heap, stacks), KiB.
    pub rss_anon_kib: u64,
    /// Of the RSS, file-backed pages (the binary's code and data it has
    /// touched, the shared libraries), KiB.
    pub rss_file_kib: u64,
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
        rss_anon_kib: field("RssAnon:")?,
        rss_file_kib: field("RssFile:")?,
        hwm_kib: field("VmHWM:")?,
        threads: field("Threads:")?,
        fds,
    })
}
