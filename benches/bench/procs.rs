//! The processes a benchmark runs: the backend, holdfast, HAProxy and socat,
//! and what /proc says about their memory and CPU.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a process gets to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The path an address is reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Straight to the backend.
    Direct,
    /// Through holdfast.
    Holdfast,
    /// Through HAProxy in TCP mode.
    Haproxy,
    /// Through socat (a forked process per connection).
    Socat,
}

impl Mode {
    /// Every mode, in table order.
    pub const ALL: [Mode; 4] = [Mode::Direct, Mode::Holdfast, Mode::Haproxy, Mode::Socat];

    /// The key used in JSON and file names.
    pub fn key(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Holdfast => "holdfast",
            Mode::Haproxy => "haproxy",
            Mode::Socat => "socat",
        }
    }

    /// The column title.
    pub fn title(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Holdfast => "holdfast",
            Mode::Haproxy => "HAProxy",
            Mode::Socat => "socat",
        }
    }
}

/// A child process killed on drop.
pub struct Proc {
    child: Option<Child>,
    /// Its process id.
    pub pid: u32,
}

impl Proc {
    fn new(child: Child) -> Proc {
        Proc {
            pid: child.id(),
            child: Some(child),
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it is still there after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        let Some(c) = self.child.as_mut() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < grace {
            if !matches!(c.try_wait(), Ok(None)) {
                self.child = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }
}

/// How long a process gets to exit on SIGTERM at the end (a profiler
/// wrapped around holdfast writes its report then).
const STOP_GRACE: Duration = Duration::from_secs(10);

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(STOP_GRACE);
    }
}

/// A port that was free a moment ago (for programs that want a number).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

fn wait_file(path: &Path, proc: &mut Proc, what: &str, log: &Path) -> String {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.trim().is_empty() {
                return s;
            }
        }
        if proc.exited() || t0.elapsed() > START_TIMEOUT {
            panic!(
                "{what} did not start; its log ({}):\n{}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_port(addr: SocketAddr, proc: &mut Proc, what: &str, log: &Path) {
    let t0 = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if proc.exited() || t0.elapsed() > START_TIMEOUT {
            panic!(
                "{what} did not start listening on {addr}; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts the benchmark backend (this same binary) on `addr` (port 0 for
/// any) and waits until it listens.
pub fn start_backend(dir: &Path, addr: SocketAddr) -> (Proc, SocketAddr) {
    let ready = dir.join(format!("backend-ready-{}", unique()));
    let log = dir.join("backend.log");
    let _ = std::fs::remove_file(&ready);
    let exe = std::env::current_exe().expect("current_exe");
    let child = Command::new(exe)
        .arg("--serve-backend")
        .arg(addr.to_string())
        .arg(&ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(&log))
        .spawn()
        .expect("start the backend");
    let mut p = Proc::new(child);
    let s = wait_file(&ready, &mut p, "backend", &log);
    let _ = std::fs::remove_file(&ready);
    (p, s.trim().parse().expect("backend address"))
}

/// holdfast's knobs that the benchmarks change.
#[derive(Debug, Clone)]
pub struct HoldfastOpts {
    /// `relogin.rate`, `relogin.burst`, `relogin.jitter`; `None` = defaults.
    pub relogin: Option<(f64, u32, &'static str)>,
}

/// Starts holdfast in front of `backend`; returns it and its address.
pub fn start_holdfast(dir: &Path, backend: SocketAddr, o: &HoldfastOpts) -> (Proc, SocketAddr) {
    let id = unique();
    let cfg = dir.join(format!("holdfast-{id}.toml"));
    let ready = dir.join(format!("holdfast-ready-{id}"));
    let log = dir.join(format!("holdfast-{id}.log"));
    let relogin = match o.relogin {
        Some((rate, burst, jitter)) => {
            format!("[relogin]\nrate = {rate:.1}\nburst = {burst}\njitter = \"{jitter}\"\n")
        }
        None => String::new(),
    };
    std::fs::write(
        &cfg,
        format!(
            "game = \"BenchMUSH\"\n\
             [listen]\naddrs = [\"127.0.0.1:0\"]\nmax_sessions = 100000\nmax_per_ip = 100000\n\
             [[backends]]\nname = \"bench\"\naddr = \"{backend}\"\n\
             [heartbeat]\nuser = \"heartbeat\"\npassword = \"hbpass\"\n\
             interval = \"{HEARTBEAT_INTERVAL}\"\ntimeout = \"1s\"\n\
             [failover]\nafter = \"off\"\n\
             [limits]\nmax_unauthenticated = 100000\nconn_rate_per_ip = 0\ninput_lines_per_sec = 0\n\
             [notices]\noffline = \"{OFFLINE}\"\nonline = \"{ONLINE}\"\n\
             {relogin}"
        ),
    )
    .expect("write holdfast config");
    // HOLDFAST_BENCH_WRAP="valgrind --tool=massif" (say) runs holdfast
    // under a profiler; HOLDFAST_BENCH_BIN runs another build (A/B tests).
    let bin = std::env::var("HOLDFAST_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_holdfast").to_string());
    let mut cmd = wrapped("HOLDFAST_BENCH_WRAP", &bin);
    let child = cmd
        .arg("run")
        .arg("-c")
        .arg(&cfg)
        .arg("--ready-file")
        .arg(&ready)
        .env(
            "RUST_LOG",
            std::env::var("HOLDFAST_BENCH_LOG").unwrap_or_else(|_| "holdfast=info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(&log))
        .spawn()
        .expect("start holdfast");
    let mut p = Proc::new(child);
    let s = wait_file(&ready, &mut p, "holdfast", &log);
    let addr = s.lines().next().expect("address").parse().expect("address");
    (p, addr)
}

/// The heartbeat interval in the bench config: it bounds how soon holdfast
/// sees a restarted backend.
pub const HEARTBEAT_INTERVAL: &str = "500ms";
/// The `offline` notice, easy to spot in the stream.
pub const OFFLINE: &str = "[holdfast] HF-OFFLINE";
/// The `online` notice.
pub const ONLINE: &str = "[holdfast] HF-ONLINE";

/// Starts HAProxy (TCP mode, defaults otherwise) in front of `backend`.
pub fn start_haproxy(dir: &Path, backend: SocketAddr, maxconn: usize) -> (Proc, SocketAddr) {
    let id = unique();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let cfg = dir.join(format!("haproxy-{id}.cfg"));
    let log = dir.join(format!("haproxy-{id}.log"));
    // HOLDFAST_BENCH_HAPROXY_BUSY=1: HAProxy spins instead of sleeping
    // (its `busy-polling`), to see what a round trip costs without the
    // wake-ups (docs/benchmarks.md, "The fourth look").
    let busy = if std::env::var_os("HOLDFAST_BENCH_HAPROXY_BUSY").is_some() {
        "  busy-polling\n"
    } else {
        ""
    };
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn {maxconn}\n{busy}\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\
             frontend players\n  bind {addr}\n  default_backend game\n\
             backend game\n  server game {backend}\n"
        ),
    )
    .expect("write haproxy config");
    // HOLDFAST_BENCH_WRAP_HAPROXY: the same for HAProxy (profiling both
    // the same way).
    let child = wrapped("HOLDFAST_BENCH_WRAP_HAPROXY", "haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(log_file(&log))
        .stderr(log_file(&log))
        .spawn()
        .expect("start haproxy (is it installed? scripts/bench.sh installs it)");
    let mut p = Proc::new(child);
    wait_port(addr, &mut p, "haproxy", &log);
    (p, addr)
}

/// Starts socat forking one process per connection toward `backend`.
pub fn start_socat(dir: &Path, backend: SocketAddr) -> (Proc, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let log = dir.join(format!("socat-{}.log", unique()));
    let child = Command::new("socat")
        .arg(format!(
            "TCP4-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,backlog=1024"
        ))
        .arg(format!("TCP4:{backend},nodelay"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(&log))
        .spawn()
        .expect("start socat (is it installed? scripts/bench.sh installs it)");
    let mut p = Proc::new(child);
    wait_port(addr, &mut p, "socat", &log);
    (p, addr)
}

/// `program`, run under the command line in the environment variable
/// `var` if it is set (a profiler, say).
fn wrapped(var: &str, program: &str) -> Command {
    let wrap = std::env::var(var).unwrap_or_default();
    let mut words = wrap.split_whitespace();
    match words.next() {
        Some(w) => {
            let mut c = Command::new(w);
            c.args(words).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn log_file(p: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .expect("log file")
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Resident set size of `pid` in bytes.
pub fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * page_size()
}

/// `pid`'s resident memory split as /proc/PID/status has it (KiB):
/// anonymous (heap, stacks) and file-backed (the binary's code and data
/// pages it has touched, and the shared libraries').
pub fn rss_split(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:"))
}

fn page_size() -> u64 {
    // Every Linux this runs on uses 4 KiB pages unless told otherwise;
    // `getconf` tells for sure without unsafe code.
    static PS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PS.get_or_init(|| {
        Command::new("getconf")
            .arg("PAGESIZE")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096)
    })
}

/// CPU seconds (user + system) of `pid`, including its reaped children
/// (socat's forks).
///
/// The live threads' time comes from `schedstat` (nanoseconds; `stat`
/// counts 10 ms ticks, too coarse for a one-second transfer); reaped
/// children only show in `stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3; utime, stime, cutime, cstime are 14..=17.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = |i: usize| f.get(i).copied().unwrap_or(0) as f64 / clock_ticks();
    let children = ticks(2) + ticks(3);
    let own_coarse = ticks(0) + ticks(1);
    let mut own_ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let ss = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
            own_ns += ss
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    let own = own_ns as f64 / 1e9;
    // Threads that already exited are only in `stat`: trust it if the live
    // threads account for clearly less.
    let own = if own + 0.05 < own_coarse {
        own_coarse
    } else {
        own
    };
    own + children
}

fn clock_ticks() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Where the benchmark writes its scratch files.
pub fn scratch_dir(target: &Path) -> PathBuf {
    let d = target.join("bench").join("run");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}
