//! Test harness: the scripted game server, the real holdfast binary, a
//! player client and nats-server, all on dynamic loopback ports and all
//! killed on drop.
#![allow(dead_code)]

pub mod bus;
pub mod certs;
pub mod irc_watch;
pub mod nats;
pub mod ngircd;
pub mod player;
pub mod proc;
pub mod scrape;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

// Not every test uses every one.
#[allow(unused_imports)]
pub use player::{Client, Conn, Expect, PlainWire, Wire};
use proc::Proc;

/// Default wait for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "holdfast-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("HOLDFAST_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

// ----- the scripted game ------------------------------------------------

/// A running fakemush.
pub struct Game {
    proc: Option<Proc>,
    pub addr: SocketAddr,
    /// Listening on this Unix socket instead of TCP.
    pub unix: Option<PathBuf>,
    pub log: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
    starts: u32,
    /// When the last process was started.
    spawned: std::time::SystemTime,
}

impl Game {
    /// Starts a TinyMUSH-flavoured game on a dynamic port.
    pub fn start(dir: &TempDir, extra: &[&str]) -> Game {
        Self::start_on(dir, "127.0.0.1:0".parse().unwrap(), extra)
    }

    /// Starts a game on a given address (e.g. where another one was).
    pub fn start_on(dir: &TempDir, addr: SocketAddr, extra: &[&str]) -> Game {
        Self::spawned(dir, addr, None, extra)
    }

    /// Starts a game listening on a Unix socket at `path` only.
    pub fn start_unix(dir: &TempDir, path: &Path, extra: &[&str]) -> Game {
        Self::spawned(
            dir,
            "127.0.0.1:0".parse().unwrap(),
            Some(path.to_owned()),
            extra,
        )
    }

    fn spawned(dir: &TempDir, addr: SocketAddr, unix: Option<PathBuf>, extra: &[&str]) -> Game {
        let mut g = Game {
            proc: None,
            addr,
            unix,
            log: dir.path(&format!("game-{}.log", rand_tag())),
            args: extra.iter().map(|s| s.to_string()).collect(),
            dir: dir.0.clone(),
            starts: 0,
            spawned: std::time::UNIX_EPOCH,
        };
        g.spawn();
        g
    }

    /// The backend address for a holdfast config.
    pub fn backend_addr(&self) -> String {
        match &self.unix {
            Some(p) => format!("unix:{}", p.display()),
            None => self.addr.to_string(),
        }
    }

    /// Starts the process; it binds `addr` itself (port 0 the first time,
    /// then the port it got) and says where it listens on stderr.
    fn spawn(&mut self) {
        // `FAKEMUSH_BIN`: another build, as `HOLDFAST_BIN` for holdfast.
        let bin = std::env::var("FAKEMUSH_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_fakemush").to_string());
        let mut cmd = Command::new(bin);
        match &self.unix {
            Some(p) => cmd.arg("--unix").arg(p),
            None => cmd.arg("--listen").arg(self.addr.to_string()),
        };
        cmd.arg("--log").arg(&self.log).args(&self.args);
        self.spawned = std::time::SystemTime::now();
        let out = self.dir.join(format!("game-out-{}.log", rand_tag()));
        let mut p = Proc::spawn_piped("fakemush", &mut cmd, &out);
        let first = p.wait_line("listening", |l| {
            let names = l.strip_prefix("fakemush listening on ")?;
            Some(names.split(", ").next().unwrap_or_default().to_string())
        });
        if self.unix.is_none() {
            self.addr = first.parse().expect("fakemush's listening line");
        }
        self.proc = Some(p);
        self.starts += 1;
    }

    /// SIGKILL: the kernel resets/closes every socket of the game.
    pub fn kill(&mut self) {
        self.proc = None;
    }

    /// Starts it again on the same port. Its start time (`starttime()`,
    /// one-second resolution as in the real servers) differs from the last
    /// one's, as a real game's restart takes longer than a second.
    pub fn restart(&mut self) {
        self.kill();
        let second = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        while second(std::time::SystemTime::now()) == second(self.spawned) {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.spawn();
    }

    fn running(&self) -> &Proc {
        self.proc.as_ref().expect("the game is not running")
    }

    /// SIGSTOP: the host goes silent without closing anything.
    pub fn freeze(&self) {
        self.running().signal("STOP");
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        self.running().signal("CONT");
    }

    /// Every JSON line of the game's log.
    pub fn events(&self) -> Vec<serde_json::Value> {
        let Ok(f) = std::fs::File::open(&self.log) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }

    /// Waits until a log event satisfies `pred`, returns it.
    pub async fn wait_event(
        &self,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        proc::until(
            &format!("game never logged {what}"),
            WAIT,
            || self.events().into_iter().find(|e| pred(e)),
            || format!("log: {:#?}", self.events()),
        )
        .await
    }

    /// The connection ids of `user`'s logins, in order.
    pub fn logins(&self, user: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|e| e["t"] == "login" && e["user"] == user)
            .map(|e| e["conn"].clone())
            .collect()
    }

    /// Lines the game received from logged-in user `user`.
    pub fn lines_from(&self, user: &str) -> Vec<String> {
        self.events()
            .into_iter()
            .filter(|e| e["t"] == "line" && e["user"] == user)
            .filter_map(|e| e["line"].as_str().map(String::from))
            .collect()
    }
}

fn rand_tag() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ----- the proxy -------------------------------------------------------

/// A running `holdfast run`.
pub struct Proxy {
    proc: Proc,
    pub addr: SocketAddr,
    pub config: PathBuf,
    pub stderr: PathBuf,
    /// The ready file: plain listeners as `ADDR`, front doors as `DOOR ADDR`.
    pub ready: PathBuf,
    /// After [`Proxy::upgrade`]: the process serving now (not our child;
    /// killed on drop).
    upgraded: Option<u32>,
}

impl Proxy {
    /// The proxy's process id, while it runs (after an upgrade, the new
    /// process's).
    pub fn pid(&self) -> u32 {
        self.upgraded
            .unwrap_or_else(|| self.proc.pid().expect("the proxy is running"))
    }

    fn signal(&self, sig: &str) {
        assert!(proc::send_signal(self.pid(), sig), "kill -{sig} holdfast");
    }

    /// SIGUSR2, then waits until the ready file names a new pid and the
    /// old process has exited (0, when it was our child).
    pub fn upgrade(&mut self) {
        let old = self.pid();
        self.signal("USR2");
        self.upgrade_done(old);
    }

    /// The pid the ready file names now (the new process's once an
    /// upgrade wrote it).
    pub fn ready_pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.ready)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("pid "))
            .and_then(|p| p.trim().parse().ok())
    }

    /// Waits until the ready file names a pid other than `old` (an
    /// upgrade begun by the test), and `old` has exited (0, when it was
    /// our child).
    pub fn upgrade_done(&mut self, old: u32) {
        let t0 = Instant::now();
        let new = loop {
            if let Some(p) = self.ready_pid().filter(|p| *p != old) {
                break p;
            }
            assert!(t0.elapsed() < WAIT * 3, "no upgrade:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(10));
        };
        match self.upgraded {
            None => {
                let st = self.proc.wait_exit(WAIT);
                assert_eq!(st.and_then(|s| s.code()), Some(0), "old process");
            }
            Some(_) => {
                while proc::alive(old) {
                    assert!(t0.elapsed() < WAIT * 3, "the old process did not exit");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        assert!(proc::alive(new), "the new process runs");
        self.upgraded = Some(new);
    }

    /// Writes `config` (TOML; `listen.addrs` is set by the harness unless
    /// present) and starts the proxy with RUST_LOG=`log`.
    pub fn start(dir: &TempDir, config: &str) -> Proxy {
        Self::start_with(dir, config, "holdfast=trace", &[])
    }

    pub fn start_with(dir: &TempDir, config: &str, log: &str, env: &[(&str, &str)]) -> Proxy {
        let cfg_path = dir.path(&format!("holdfast-{}.toml", rand_tag()));
        std::fs::write(&cfg_path, with_listen(config)).unwrap();
        let ready = dir.path(&format!("proxy-ready-{}", rand_tag()));
        let stderr = dir.path(&format!("proxy-stderr-{}.log", rand_tag()));
        // `HOLDFAST_BIN`: another build (e.g. to see a new test fail on
        // an older one).
        let bin = std::env::var("HOLDFAST_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_holdfast").to_string());
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("-c")
            .arg(&cfg_path)
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", log)
            .envs(env.iter().copied());
        let mut proc = Proc::spawn("holdfast", &mut cmd, &stderr);
        // It binds 127.0.0.1:0 and writes the addresses it got, atomically.
        let s = proc.wait_until("its ready file", || {
            std::fs::read_to_string(&ready)
                .ok()
                .filter(|s| !s.is_empty())
        });
        let addr = s.lines().next().unwrap().parse().unwrap();
        Proxy {
            proc,
            addr,
            config: cfg_path,
            stderr,
            ready,
            upgraded: None,
        }
    }

    /// The first address of front door `door` ("tls", "ws", "wss").
    pub fn door(&self, door: &str) -> SocketAddr {
        let s = std::fs::read_to_string(&self.ready).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(door)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {door} listener in the ready file:\n{s}"))
    }

    /// Rewrites the config file (for SIGHUP tests).
    pub fn rewrite(&self, config: &str) {
        std::fs::write(&self.config, with_listen(config)).unwrap();
    }

    /// SIGSTOP the proxy.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// SIGCONT the proxy.
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.proc.stop("TERM", WAIT).and_then(|st| st.code())
    }

    /// Waits up to `within` for the proxy to exit on its own; returns its
    /// exit code (`None`: still running, or killed by a signal).
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        self.proc.wait_exit(within).and_then(|st| st.code())
    }

    /// SIGKILL: gone without a goodbye.
    pub fn kill(&mut self) {
        if let Some(pid) = self.upgraded.take() {
            proc::send_signal(pid, "CONT");
            proc::send_signal(pid, "KILL");
            let t0 = Instant::now();
            while proc::alive(pid) && t0.elapsed() < WAIT {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.proc.kill();
    }

    /// Everything the proxy logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Asserts no password of the test users (nor the heartbeat's) is in
    /// the proxy's log, which tests capture at trace level.
    pub fn assert_no_passwords(&self) {
        let logs = self.logs();
        assert!(logs.len() > 100, "the log was captured");
        for pw in ["alicepw", "bobpw", "wizpw", "hbpass"] {
            assert!(!logs.contains(pw), "password {pw:?} in the proxy's log");
        }
    }

    /// Where `[metrics] addr = "127.0.0.1:0"` ended up (from the log).
    pub async fn metrics_addr(&self) -> SocketAddr {
        proc::until(
            "proxy never said where metrics are served",
            WAIT,
            || {
                let logs = self.logs();
                let line = logs.lines().find(|l| l.contains("metrics: serving"))?;
                let a = line.split("addr=").nth(1)?.split_whitespace().next()?;
                a.parse().ok()
            },
            || format!("logs:\n{}", self.logs()),
        )
        .await
    }

    /// Waits, blocking the thread, until the log holds `needle` `times`
    /// times.
    pub fn wait_log_n(&self, needle: &str, times: usize, within: Duration) {
        wait_logged(&self.stderr, needle, times, within);
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        proc::until(
            &format!("proxy never logged {needle:?}"),
            WAIT,
            || self.logs().contains(needle).then_some(()),
            || format!("logs:\n{}", self.logs()),
        )
        .await
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // An upgraded process is not our child: `Proc` would miss it.
        if let Some(pid) = self.upgraded {
            proc::send_signal(pid, "KILL");
        }
    }
}

/// Waits, blocking the thread, until the log file `log` holds `needle`
/// `times` times; panics with the log after `within`.
pub fn wait_logged(log: &Path, needle: &str, times: usize, within: Duration) {
    let t0 = Instant::now();
    loop {
        let logs = std::fs::read_to_string(log).unwrap_or_default();
        if logs.matches(needle).count() >= times {
            return;
        }
        assert!(
            t0.elapsed() < within,
            "never logged {needle:?} {times}x:\n{logs}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `config` with `listen.addrs` on a dynamic port unless it has a
/// `[listen]` section.
fn with_listen(config: &str) -> String {
    if config.contains("[listen]") {
        config.to_string()
    } else {
        format!("{config}\n[listen]\naddrs = [\"127.0.0.1:0\"]\n")
    }
}

/// The usual config for one game: heartbeat as the game's default
/// heartbeat user, fast probes.
pub fn config_for(games: &[&Game], extra: &str) -> String {
    let mut s = String::from("game = \"Test MUSH\"\n");
    s.push_str(extra);
    s.push('\n');
    if !extra.contains("[heartbeat]") {
        s.push_str("[heartbeat]\nuser = \"heartbeat\"\npassword = \"hbpass\"\ninterval = \"500ms\"\ntimeout = \"2s\"\n");
    }
    // fakemush's tinymush flavor has `@remotehost`, which real TinyMUSH
    // lacks (so the flavor's default is "none").
    if !extra.contains("flavor") && !extra.contains("[client_ip]") {
        s.push_str("[client_ip]\nmode = \"command\"\n");
    }
    for (i, g) in games.iter().enumerate() {
        s.push_str(&format!(
            "[[backends]]\nname = \"b{i}\"\naddr = \"{}\"\n",
            g.backend_addr()
        ));
    }
    s
}

/// `config` (from [`config_for`] with `first` and `second`) reordered: the
/// second game (still named `b1`) is listed first, so it is preferred.
pub fn prefer_second(config: &str, first: &Game, second: &Game) -> String {
    config
        .replace(&format!("addr = \"{}\"", first.addr), "addr = \"FIRST\"")
        .replace(
            &format!("addr = \"{}\"", second.addr),
            &format!("addr = \"{}\"", first.addr),
        )
        .replace("addr = \"FIRST\"", &format!("addr = \"{}\"", second.addr))
        .replace("name = \"b0\"", "name = \"X\"")
        .replace("name = \"b1\"", "name = \"b0\"")
        .replace("name = \"X\"", "name = \"b1\"")
}

/// Runs `holdfast check -c config` and waits for it.
pub fn holdfast_check(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["check", "-c"])
        .arg(config)
        .output()
        .unwrap()
}

/// Kills a child process started outside [`proc::Proc`] (if still ours) and
/// waits for it, so no zombie or stray server outlives a test.
pub fn reap(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Removes complete telnet sequences from `b`; returns the plain bytes and
/// how much of `b` was used (an unfinished sequence at the end is left).
pub fn strip_telnet_partial(b: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != 255 {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let Some(&cmd) = b.get(i + 1) else { break };
        match cmd {
            255 => {
                out.push(255);
                i += 2;
            }
            250 => {
                let mut j = i + 2;
                while j + 1 < b.len() && !(b[j] == 255 && b[j + 1] == 240) {
                    j += 1;
                }
                if j + 1 >= b.len() {
                    break;
                }
                i = j + 2;
            }
            251..=254 => {
                if i + 2 >= b.len() {
                    break;
                }
                i += 3;
            }
            _ => i += 2,
        }
    }
    (out, i)
}

/// Removes telnet sequences from a byte stream (for matching text); an
/// unfinished one at the end is left out.
pub fn strip_telnet(b: &[u8]) -> String {
    String::from_utf8_lossy(&strip_telnet_partial(b).0).into_owned()
}
