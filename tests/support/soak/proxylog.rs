//! Follows holdfast's JSON log (`--log-format json` on stderr): which
//! backend is active, and counts of what the proxy says it did.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

/// What the proxy's log has said so far.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProxyLog {
    /// The active backend (the last failover's `to`, else the first).
    pub active: String,
    /// Failovers by reason (`automatic`, `sighup`, ...).
    pub failovers: BTreeMap<String, u64>,
    /// Successful reloads.
    pub reloads_ok: u64,
    /// Failed reloads.
    pub reloads_failed: u64,
    /// `backend down` reports, by backend.
    pub backend_down: BTreeMap<String, u64>,
    /// `backend up` reports, by backend.
    pub backend_up: BTreeMap<String, u64>,
    /// The last report per backend: up (true) or down.
    pub state: BTreeMap<String, bool>,
    /// Sessions opened.
    pub sessions_opened: u64,
    /// Sessions closed, by reason.
    pub sessions_closed: BTreeMap<String, u64>,
    /// Sessions held because their backend went away (either way).
    pub holds: u64,
    /// Re-logins confirmed.
    pub relogins: u64,
    /// Re-logins that failed.
    pub relogins_failed: u64,
    /// Sessions moved by a failover.
    pub moves: u64,
    /// Upgrades the old process handed over (`upgrade: handed over`).
    pub upgrades_ok: u64,
    /// Upgrades that failed, the old process carrying on.
    pub upgrades_failed: u64,
    /// New processes that aborted on purpose (`HOLDFAST_UPGRADE_ABORT_AFTER`).
    pub upgrade_aborts: u64,
    /// WebSocket sessions opened (`WebSocket session`), by subprotocol.
    pub ws_sessions: BTreeMap<String, u64>,
    /// WARN and ERROR lines, by message.
    pub warnings: BTreeMap<String, u64>,
    /// Lines that were not JSON (panics, for instance).
    pub not_json: Vec<String>,
}

impl ProxyLog {
    /// Whether the proxy's last word on `backend` is "up".
    pub fn is_up(&self, backend: &str) -> bool {
        self.state.get(backend) == Some(&true)
    }

    /// Sessions open now, by the log.
    pub fn sessions_open(&self) -> i64 {
        self.sessions_opened as i64 - self.sessions_closed.values().sum::<u64>() as i64
    }

    fn on_line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            if self.not_json.len() < 50 && !line.trim().is_empty() {
                self.not_json.push(line.to_string());
            }
            return;
        };
        let f = &v["fields"];
        let msg = f["message"].as_str().unwrap_or("");
        let s = |k: &str| f[k].as_str().unwrap_or("").to_string();
        match msg {
            "failover" => {
                let reason = f["reason"].as_str().unwrap_or("automatic").to_string();
                *self.failovers.entry(reason).or_default() += 1;
                self.active = s("to");
            }
            "config reloaded" => self.reloads_ok += 1,
            m if m.starts_with("config reload failed") => self.reloads_failed += 1,
            "backend down" => {
                *self.backend_down.entry(s("backend")).or_default() += 1;
                self.state.insert(s("backend"), false);
            }
            "backend up" => {
                *self.backend_up.entry(s("backend")).or_default() += 1;
                self.state.insert(s("backend"), true);
            }
            "session open" => self.sessions_opened += 1,
            "session closed" => *self.sessions_closed.entry(s("reason")).or_default() += 1,
            // A resumed player's new session took the detached one over:
            // one of the two sessions ended here (without a close of its own).
            "session resumed" => *self.sessions_closed.entry("resumed".into()).or_default() += 1,
            "backend gone; holding the session" | "backend marked down; holding the session" => {
                self.holds += 1
            }
            "logged back in" => self.relogins += 1,
            "re-login failed" => self.relogins_failed += 1,
            "moving to another backend" => self.moves += 1,
            "upgrade: handed over; stopping" => self.upgrades_ok += 1,
            "upgrade failed; carrying on" => self.upgrades_failed += 1,
            m if m.starts_with("upgrade: aborting on purpose") => self.upgrade_aborts += 1,
            "WebSocket session" => *self.ws_sessions.entry(s("protocol")).or_default() += 1,
            _ => {}
        }
        let level = v["level"].as_str().unwrap_or("");
        if level == "WARN" || level == "ERROR" {
            *self.warnings.entry(format!("{level} {msg}")).or_default() += 1;
        }
    }
}

/// Shared view of the log, updated by [`follow`].
pub type Shared = Arc<Mutex<ProxyLog>>;

/// Reads what was appended to `path` since `offset`; returns the new offset.
fn read_more(path: &PathBuf, offset: u64, log: &Shared, partial: &mut Vec<u8>) -> u64 {
    let Ok(mut f) = std::fs::File::open(path) else {
        return offset;
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut buf = Vec::new();
    let n = f.read_to_end(&mut buf).unwrap_or(0) as u64;
    partial.extend_from_slice(&buf);
    let Some(last_nl) = partial.iter().rposition(|b| *b == b'\n') else {
        return offset + n;
    };
    let complete: Vec<u8> = partial.drain(..=last_nl).collect();
    let mut g = log.lock().unwrap_or_else(|e| e.into_inner());
    for l in String::from_utf8_lossy(&complete).lines() {
        g.on_line(l);
    }
    offset + n
}

/// Follows `path` every 200 ms until `stop` is set, then reads what is left.
pub fn follow(
    path: PathBuf,
    log: Shared,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut off = 0;
        let mut partial = Vec::new();
        // Bounded by `stop`, which the soak always sets before joining.
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            off = read_more(&path, off, &log, &mut partial);
            std::thread::sleep(Duration::from_millis(200));
        }
        read_more(&path, off, &log, &mut partial);
    })
}
