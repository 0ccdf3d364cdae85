//! The README's quick start, followed as a newcomer would: `scripts/run.sh`
//! brings up holdfast on the sample `config.toml` and the demo game, a
//! player logs in with the credentials it prints, the game is crashed and
//! restarted with the commands it prints, the player is logged back in, and
//! SIGINT leaves no process behind. On the way, holdfast must not have
//! printed a single warning (the sample config runs clean).
//!
//! The script takes the debug binaries (`HOLDFAST_BIN_DIR`), so CI builds
//! nothing twice. The sample's fixed ports (4201 on both families, 4202,
//! 4222) are moved to dynamic ones in a copy of the file; everything else
//! is the sample as shipped.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Client, Expect, TempDir};

/// Upper bound for anything the quick start waits for (under CI load).
const SLOW: Duration = Duration::from_secs(30);

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A port nobody listened on a moment ago. The script binds it itself, so
/// a conflict is possible: the test then starts again on new ports.
fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `text` with `from` replaced by `to`, which must occur exactly once.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} in config.toml");
    text.replace(from, to)
}

/// The sample config with its three fixed ports moved.
fn sample_config(game_port: u16, nats_port: u16) -> String {
    let text = std::fs::read_to_string(Path::new(REPO).join("config.toml")).unwrap();
    let text = replace_once(&text, "\"0.0.0.0:4201\"", "\"127.0.0.1:0\"");
    let text = replace_once(&text, "\"[::]:4201\"", "\"[::]:0\"");
    let text = replace_once(
        &text,
        "\"127.0.0.1:4202\"",
        &format!("\"127.0.0.1:{game_port}\""),
    );
    replace_once(
        &text,
        "\"nats://127.0.0.1:4222\"",
        &format!("\"nats://127.0.0.1:{nats_port}\""),
    )
}

/// `scripts/run.sh`, in its own process group so that whatever it started
/// can be found (and, if the test fails, killed) by that group.
struct RunSh {
    child: Option<Child>,
    pgid: i32,
    stderr: PathBuf,
    lines: mpsc::Receiver<String>,
    stdout: Vec<String>,
}

impl RunSh {
    fn start(dir: &TempDir, config: &Path) -> RunSh {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_holdfast")).parent().unwrap();
        assert!(
            bin_dir.join("fakemush").exists(),
            "fakemush is built next to holdfast"
        );
        let stderr = dir.path("run.stderr");
        let child = Command::new(Path::new(REPO).join("scripts/run.sh"))
            .arg(config)
            .current_dir(REPO)
            .env("HOLDFAST_BIN_DIR", bin_dir)
            .env("HOLDFAST_DEMO", "1")
            .env("HOLDFAST_DEMO_DIR", dir.path("demo"))
            .env_remove("HOLDFAST_HEARTBEAT_PASSWORD")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .process_group(0)
            .spawn()
            .expect("scripts/run.sh starts");
        let pgid = child.id() as i32;
        let mut child = Some(child);
        let out = child.as_mut().unwrap().stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        RunSh {
            child,
            pgid,
            stderr,
            lines,
            stdout: Vec::new(),
        }
    }

    /// Reads stdout until a line contains `needle`; `None` if the script
    /// ended first.
    fn read_until(&mut self, needle: &str) -> Option<()> {
        let until = Instant::now() + SLOW;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(needle);
                    self.stdout.push(l);
                    if hit {
                        return Some(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "scripts/run.sh printed no {needle:?} within {SLOW:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout.join("\n"),
                    self.logs()
                ),
            }
        }
    }

    /// What follows `label` on the printed line, up to a two-space gap.
    fn printed(&self, label: &str) -> String {
        let line = self
            .stdout
            .iter()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{}", self.stdout.join("\n")));
        line.trim().split("  ").next().unwrap().to_string()
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    async fn wait_log(&self, needle: &str) {
        let until = Instant::now() + SLOW;
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < until,
                "no {needle:?} in the log:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Live processes in the script's process group.
    fn group(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp ...; comm may hold spaces.
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            let f: Vec<&str> = rest.split(' ').collect();
            if f.len() > 2 && f[2] == self.pgid.to_string() && f[0] != "Z" {
                out.push(head.to_string() + ")");
            }
        }
        out
    }
}

impl Drop for RunSh {
    fn drop(&mut self) {
        // Only on failure is anything left: take the whole group down.
        if !self.group().is_empty() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.pgid)])
                .status();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs a command line exactly as printed (from the repository).
async fn run_printed(cmd: &str) -> String {
    let out = tokio::process::Command::new("bash")
        .args(["-c", cmd])
        .current_dir(REPO)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_demo_crash_and_restart() {
    let dir = TempDir::new("quickstart");
    let config = dir.path("config.toml");
    // Retry only when a port picked for the demo game was taken meanwhile.
    let mut run = None;
    for _ in 0..3 {
        std::fs::write(&config, sample_config(unused_port(), unused_port())).unwrap();
        let mut r = RunSh::start(&dir, &config);
        if r.read_until("Stop everything").is_some() {
            run = Some(r);
            break;
        }
        let logs = r.logs();
        assert!(
            logs.contains("the demo game did not start")
                && std::fs::read_to_string(dir.path("demo/game.log"))
                    .unwrap_or_default()
                    .contains("cannot listen"),
            "scripts/run.sh ended early:\n{}\n{logs}",
            r.stdout.join("\n")
        );
    }
    let mut run = run.expect("scripts/run.sh started on one of three port pairs");

    // What the script told us to type.
    let connect = run.printed("Connect:");
    let login = run.printed("Log in:");
    let crash = run.printed("Crash the game:");
    let restart = run.printed("Restart it:");
    let mut words = connect.split_whitespace();
    assert_eq!(words.next(), Some("telnet"), "{connect}");
    let host = words.next().unwrap();
    let port = words.next().unwrap();
    let addr: SocketAddr = format!("{host}:{port}").parse().unwrap();
    assert!(login.starts_with("connect "), "{login}");
    assert!(crash.ends_with("scripts/run.sh crash"), "{crash}");
    assert!(
        restart.ends_with("scripts/run.sh restart-game"),
        "{restart}"
    );

    // The heartbeat logged in (the passwords match) and the bus said,
    // once and plainly, that there is no NATS.
    run.wait_log("backend up").await;
    run.wait_log("bus: no NATS server at nats://127.0.0.1:")
        .await;

    let mut c = Client::connect(addr).await;
    c.expect_within("Use \"connect", SLOW).await;
    c.send(&login).await;
    c.expect_within("Demo MUSH", SLOW).await;
    c.expect_within("Last connect was from", SLOW).await;
    c.send("think before the crash").await;
    c.expect_within("before the crash", SLOW).await;

    let before_crash = run.logs();
    for bad in [" WARN ", " ERROR ", "rejected"] {
        assert!(
            !before_crash.contains(bad),
            "the sample config printed {bad:?}:\n{before_crash}"
        );
    }

    let said = run_printed(&crash).await;
    assert!(said.contains("restart-game"), "{said}");
    c.expect_within("is down. Your connection is being held", SLOW)
        .await;
    run_printed(&restart).await;
    c.expect_within("You have been logged back in.", SLOW).await;
    c.send("think after the restart").await;
    c.expect_within("after the restart", SLOW).await;
    assert!(!c.closed);

    // Ctrl-C: everything the script started goes away.
    let pid = run.pgid.to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let until = Instant::now() + SLOW;
    let status = loop {
        if let Some(st) = run.child.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < until,
            "scripts/run.sh still running after SIGINT:\n{}",
            run.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(130), "{}", run.logs());
    let until = Instant::now() + SLOW;
    while !run.group().is_empty() {
        assert!(
            Instant::now() < until,
            "left behind after SIGINT: {:?}",
            run.group()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.expect_closed().await;
    assert!(run.logs().contains("holdfast: stopped"), "{}", run.logs());
}

/// Running in production, "File limits": holdfast raises its soft
/// open-file limit to the hard one, and warns when `max_sessions` cannot
/// fit even so.
#[tokio::test]
async fn open_file_limit_is_raised_and_checked() {
    let dir = TempDir::new("nofile");
    let base = "[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n";
    // Two files per session: a billion sessions fit under no Linux limit.
    let p = common::Proxy::start_with(
        &dir,
        &format!("{base}[listen]\naddrs = [\"127.0.0.1:0\"]\nmax_sessions = 1000000000\n"),
        "info",
        &[],
    );
    p.wait_log("cannot hold listen.max_sessions = 1000000000")
        .await;
    let pid = p.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f[3], f[4], "soft limit raised to the hard one: {line}");
    // A modest max_sessions: no warning.
    let q = common::Proxy::start_with(
        &dir,
        &format!("{base}[listen]\naddrs = [\"127.0.0.1:0\"]\nmax_sessions = 100\n"),
        "info",
        &[],
    );
    q.wait_log("holdfast running").await;
    assert!(!q.logs().contains("open-file limit"), "{}", q.logs());
}

/// The README sends newcomers to `fakemush --help` for the demo accounts.
#[test]
fn demo_game_help_lists_its_accounts() {
    let bin = Path::new(env!("CARGO_BIN_EXE_holdfast"))
        .parent()
        .unwrap()
        .join("fakemush");
    let out = Command::new(bin).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for account in [
        "Alice      / alicepw",
        "Bob        / bobpw",
        "Wiz        / wizpw",
    ] {
        assert!(help.contains(account), "{account:?} in:\n{help}");
    }
    assert!(help.contains("HOLDFAST_HEARTBEAT_PASSWORD"), "{help}");
}
