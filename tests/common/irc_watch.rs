//! A tiny raw-socket IRC client for tests (it sits in the channel and
//! records what it sees), and the `holdfast irc` process under test.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::proc::Proc;
use super::{TempDir, WAIT};

/// One line the watcher received, parsed just enough.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub nick: String,
    pub command: String,
    pub params: Vec<String>,
    pub raw: String,
}

impl Seen {
    fn parse(raw: &str) -> Seen {
        let mut rest = raw;
        let mut nick = String::new();
        if let Some(r) = rest.strip_prefix(':') {
            let (p, r) = r.split_once(' ').unwrap_or((r, ""));
            nick = p.split('!').next().unwrap_or("").to_string();
            rest = r;
        }
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let mut params = Vec::new();
        while !rest.is_empty() {
            if let Some(t) = rest.strip_prefix(':') {
                params.push(t.to_string());
                break;
            }
            let (p, r) = rest.split_once(' ').unwrap_or((rest, ""));
            params.push(p.to_string());
            rest = r;
        }
        Seen {
            at: Instant::now(),
            nick,
            command: command.to_string(),
            params,
            raw: raw.to_string(),
        }
    }

    /// The text of a PRIVMSG/NOTICE.
    pub fn text(&self) -> &str {
        self.params.get(1).map(String::as_str).unwrap_or("")
    }
}

/// A watcher in one channel.
pub struct Watcher {
    pub nick: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// Everything received, in order.
    pub seen: Vec<Seen>,
    /// Index in `seen` up to which `expect` has consumed.
    pub pos: usize,
}

impl Watcher {
    /// Connects and registers as `nick` (waits for the welcome).
    pub async fn connect(addr: &str, nick: &str) -> Watcher {
        Self::connect_pass(addr, nick, None).await
    }

    pub async fn connect_pass(addr: &str, nick: &str, pass: Option<&str>) -> Watcher {
        let s = TcpStream::connect(addr)
            .await
            .expect("watcher: connect to ngircd");
        let (r, w) = s.into_split();
        let mut me = Watcher {
            nick: nick.to_string(),
            reader: BufReader::new(r),
            writer: w,
            seen: Vec::new(),
            pos: 0,
        };
        if let Some(p) = pass {
            me.send(&format!("PASS {p}")).await;
        }
        me.send(&format!("NICK {nick}")).await;
        me.send(&format!("USER {nick} 0 * :test watcher")).await;
        me.expect(|s| s.command == "001", "welcome").await;
        me
    }

    pub async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("watcher: write");
    }

    /// Joins and waits for the end of the names list; returns the names.
    pub async fn join(&mut self, chan: &str) -> Vec<String> {
        self.send(&format!("JOIN {chan}")).await;
        let mut names = Vec::new();
        loop {
            let s = self
                .expect(|s| s.command == "353" || s.command == "366", "names")
                .await;
            if s.command == "366" {
                return names;
            }
            names.extend(
                s.params
                    .last()
                    .unwrap()
                    .split_whitespace()
                    .map(|n| n.trim_start_matches(['@', '+']).to_string()),
            );
        }
    }

    pub async fn say(&mut self, target: &str, text: &str) {
        self.send(&format!("PRIVMSG {target} :{text}")).await;
    }

    /// Reads one line into `seen` (answering PINGs); false on timeout.
    async fn read_one(&mut self, until: Instant) -> bool {
        let left = until.saturating_duration_since(Instant::now());
        let mut l = String::new();
        match tokio::time::timeout(left, self.reader.read_line(&mut l)).await {
            Ok(Ok(0)) => panic!("watcher {}: the server closed the connection", self.nick),
            Ok(Ok(_)) => {
                let l = l.trim_end_matches(['\r', '\n']);
                let s = Seen::parse(l);
                if s.command == "PING" {
                    let p = s.params.first().cloned().unwrap_or_default();
                    self.send(&format!("PONG :{p}")).await;
                }
                self.seen.push(s);
                true
            }
            Ok(Err(e)) => panic!("watcher {}: read error {e}", self.nick),
            Err(_) => false,
        }
    }

    /// Waits up to `within` for a line matching `pred` after the last
    /// match; returns it.
    pub async fn expect_within(
        &mut self,
        pred: impl Fn(&Seen) -> bool,
        what: &str,
        within: Duration,
    ) -> Seen {
        let until = Instant::now() + within;
        loop {
            if let Some(i) = self.seen[self.pos..].iter().position(&pred) {
                let s = self.seen[self.pos + i].clone();
                self.pos += i + 1;
                return s;
            }
            if Instant::now() >= until {
                let recent: Vec<&str> = self.seen[self.pos..]
                    .iter()
                    .map(|s| s.raw.as_str())
                    .collect();
                panic!(
                    "watcher {}: no {what} within {within:?}; seen since last match:\n{}",
                    self.nick,
                    recent.join("\n")
                );
            }
            self.read_one(until).await;
        }
    }

    pub async fn expect(&mut self, pred: impl Fn(&Seen) -> bool, what: &str) -> Seen {
        self.expect_within(pred, what, WAIT).await
    }

    /// Waits for a PRIVMSG from `nick` containing `needle`.
    pub async fn expect_msg_within(&mut self, nick: &str, needle: &str, within: Duration) -> Seen {
        let (n, x) = (nick.to_string(), needle.to_string());
        self.expect_within(
            move |s| s.command == "PRIVMSG" && s.nick == n && s.text().contains(&x),
            &format!("message from {nick} containing {needle:?}"),
            within,
        )
        .await
    }

    pub async fn expect_msg(&mut self, nick: &str, needle: &str) -> Seen {
        self.expect_msg_within(nick, needle, WAIT).await
    }

    /// PRIVMSGs from `nick` consumed or not, from index `from` on.
    pub fn msgs_from(&self, nick: &str, from: usize) -> Vec<String> {
        self.seen[from..]
            .iter()
            .filter(|s| s.command == "PRIVMSG" && s.nick == nick)
            .map(|s| s.text().to_string())
            .collect()
    }
}

/// A running `holdfast irc`.
pub struct RelayProc {
    proc: Proc,
    pub config: PathBuf,
    pub stderr: PathBuf,
}

impl RelayProc {
    /// Writes `config` and starts `holdfast irc -c` on it. It listens on
    /// nothing: tests wait for what it does (its log, the channel).
    pub fn start(dir: &TempDir, config: &str) -> RelayProc {
        let n = std::fs::read_dir(&dir.0).map(|d| d.count()).unwrap_or(0);
        let config_path = dir.path(&format!("relay-{n}.toml"));
        std::fs::write(&config_path, config).unwrap();
        let stderr = dir.path(&format!("relay-{n}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_holdfast"));
        cmd.arg("irc")
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "holdfast=debug");
        RelayProc {
            proc: Proc::spawn("holdfast irc", &mut cmd, &stderr),
            config: config_path,
            stderr,
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the log contains `needle` `count` times.
    pub async fn wait_log_n(&self, needle: &str, count: usize) {
        super::proc::until(
            &format!("relay never logged {needle:?} {count} times"),
            WAIT * 2,
            || (self.logs().matches(needle).count() >= count).then_some(()),
            || format!("logs:\n{}", self.logs()),
        )
        .await
    }

    /// SIGKILL: the relay dies without a word.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.proc.stop("TERM", WAIT).and_then(|st| st.code())
    }
}
