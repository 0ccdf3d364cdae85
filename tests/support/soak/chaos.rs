//! The chaos driver: one thread that, until its deadline, runs random
//! episodes against the games and the proxy (SIGKILL, kill again during the
//! re-login storm, kill past `failover.after`, SIGSTOP/SIGCONT, SIGTERM,
//! the game's own `@shutdown`, SIGHUP reloads that toggle
//! `outage.queue_input`, reorder the backends or are invalid, failovers and
//! announcements requested over the bus), upgrades of the proxy, upgrades
//! whose new process dies in the middle of the handover, and a second
//! thread that kills and restarts nats-server. Every disruptive act is
//! recorded with its time so the report can tell which lines a backend
//! took down with it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::procs::{now_us, Failure, Game, Nats};
use crate::proxylog;

/// How long the driver waits for the proxy to report something it caused
/// (a failover, a reload, a backend up).
const NOTICE_WAIT: Duration = Duration::from_secs(20);

/// Something the driver did to a process.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosEvent {
    /// `kill`, `term`, `shutdown`, `freeze`, `reload`, `nats-kill`, ...
    pub kind: String,
    /// The game it hit (empty for the proxy or NATS).
    pub backend: String,
    /// When it started, Unix µs.
    pub start_us: u64,
    /// When it ended (just before SIGCONT for a freeze; when the signal or
    /// command had been carried out otherwise), Unix µs.
    pub end_us: u64,
}

impl ChaosEvent {
    /// Whether this act can take a backend's unread input down with it.
    pub fn disruptive(&self) -> bool {
        matches!(self.kind.as_str(), "kill" | "term" | "shutdown" | "freeze")
    }
}

/// The parts of the proxy config the driver changes, and the rest.
pub struct ConfigFile {
    /// Where it is written.
    pub path: PathBuf,
    /// Backend order (indexes into the games).
    pub order: [usize; 2],
    /// `outage.queue_input`.
    pub queue_input: bool,
    /// `(name, addr)` of each game.
    pub backends: Vec<(String, String)>,
    /// The NATS URL.
    pub nats: String,
    /// `failover.after`, seconds.
    pub failover_after: u64,
    /// Open a WebSocket door (`listen.ws_addrs`).
    pub ws: bool,
}

impl ConfigFile {
    /// The TOML for the current settings.
    pub fn render(&self) -> String {
        let mut s = format!(
            r#"# Written by holdfast-soak; rewritten on every reload it triggers.
game = "Soak MUSH"

[listen]
addrs = ["127.0.0.1:0"]
{ws}max_sessions = 10000
max_per_ip = 1000
login_timeout = "10m"

[heartbeat]
user = "heartbeat"
password = "hbpass"
interval = "1s"
timeout = "2s"

[failover]
after = "{after}s"

[outage]
queue_input = {queue}
max_hold = "1h"

[limits]
conn_rate_per_ip = 0
max_unauthenticated = 10000
input_lines_per_sec = 50
input_burst = 500

[bus]
servers = ["{nats}"]
subject_prefix = "soak.holdfast"
instance = "soak-1"
rpc_allow = ["status", "sessions", "failover", "announce"]
"#,
            after = self.failover_after,
            ws = if self.ws {
                "ws_addrs = [\"127.0.0.1:0\"]\n"
            } else {
                ""
            },
            queue = self.queue_input,
            nats = self.nats,
        );
        for &i in &self.order {
            let (name, addr) = &self.backends[i];
            s.push_str(&format!(
                "\n[[backends]]\nname = \"{name}\"\naddr = \"{addr}\"\n"
            ));
        }
        s
    }

    /// Writes it atomically (a reload never sees half a file).
    pub fn write(&self) -> Result<(), String> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, self.render()).map_err(|e| format!("write config: {e}"))?;
        // It holds the heartbeat's password: owner-only, as holdfast advises.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod config: {e}"))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| format!("rename config: {e}"))
    }
}

/// Counts of what the driver did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub episodes: u64,
    pub kills_active: u64,
    pub kills_standby: u64,
    /// Kills that hit a game during its re-login storm.
    pub kills_in_relogin: u64,
    /// Kills held down past `failover.after`.
    pub kills_past_failover: u64,
    pub terms: u64,
    pub game_shutdowns: u64,
    pub freezes_short: u64,
    pub freezes_detected: u64,
    pub freezes_past_failover: u64,
    pub reloads_toggle: u64,
    pub reloads_reorder: u64,
    /// Reloads of a broken file (must change nothing).
    pub reloads_invalid: u64,
    /// Failovers requested over the bus (`rpc...failover`): answered ok.
    pub bus_failovers: u64,
    /// Bus requests that got no answer (NATS was down or reconnecting).
    pub bus_requests_failed: u64,
    /// Announcements the proxy confirmed (their numbers).
    pub announced: Vec<u32>,
    /// Announcements sent whose reply never came (may or may not be out).
    pub announce_unconfirmed: Vec<u32>,
    pub nats_kills: u64,
    pub nats_terms: u64,
    /// Upgrades (SIGUSR2) that went through.
    pub upgrades: u64,
    /// Of which right after a game restart, in its re-login storm.
    pub upgrades_in_relogin: u64,
    /// SIGUSR2 to the new pid in the ready file, the longest, ms.
    pub upgrade_longest_ms: u64,
    /// Upgrades whose new process died mid-handover, the old one carrying
    /// on as it must (confirmed by its log, its pid and its ready file).
    pub kill_new: Vec<KillNew>,
    /// Episode kinds, by name.
    pub by_kind: BTreeMap<String, u64>,
    /// Things that did not go as planned (a failover that never came...).
    pub problems: Vec<String>,
}

impl Counts {
    /// Every SIGKILL of a game.
    pub fn kills(&self) -> u64 {
        self.kills_active + self.kills_standby
    }
}

/// One upgrade whose new process was made to die in the handover.
#[derive(Debug, Clone, Serialize)]
pub struct KillNew {
    /// `abort` (`HOLDFAST_UPGRADE_ABORT_AFTER`) or `sigkill` (by the soak).
    pub how: String,
    /// After how many confirmed batches it was to die.
    pub after: usize,
    /// Batches it confirmed, by its log.
    pub batches: usize,
    /// The fewest batches the handover could have had (players / batch).
    pub of_at_least: usize,
    /// The new process's pid.
    pub pid: u32,
    /// `SIGUSR2` to the old process's "carrying on", ms.
    pub ms: u64,
    /// The old process's reason.
    pub error: String,
}

/// The game-chaos thread's state.
pub struct Chaos {
    pub games: Vec<Game>,
    pub bus: crate::bus::Bus,
    pub cfg: ConfigFile,
    /// The proxy: its pid now, and upgrading it.
    pub proxy: crate::procs::Upgrader,
    pub log: proxylog::Shared,
    pub rng: StdRng,
    pub counts: Counts,
    pub events: Vec<ChaosEvent>,
    /// Kills per minute the driver keeps up at least.
    pub kill_pace: f64,
    /// Kill-the-new-process episodes started (confirmed or not).
    pub kill_new_tried: u64,
    /// Upgrades per minute the driver keeps up at least.
    pub upgrade_pace: f64,
    /// Upgrades whose new process dies mid-handover, per minute at least.
    pub kill_new_pace: f64,
    /// The fewest batches an upgrade hands the sessions over in: every
    /// player has a session, so at least players / batch size.
    pub batches_min: usize,
}

fn secs(rng: &mut StdRng, a: f64, b: f64) -> Duration {
    Duration::from_secs_f64(rng.random_range(a..b))
}

impl Chaos {
    fn active(&self) -> usize {
        let name = self
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .active
            .clone();
        self.games
            .iter()
            .position(|g| g.name == name)
            .unwrap_or(self.cfg.order[0])
    }

    /// Waits (bounded) until `cond` holds on the proxy's log.
    fn wait_log(&self, what: &str, cond: impl Fn(&proxylog::ProxyLog) -> bool) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < NOTICE_WAIT {
            if cond(&self.log.lock().unwrap_or_else(|e| e.into_inner())) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("soak: the proxy never logged {what}");
        false
    }

    fn record(&mut self, kind: &str, i: Option<usize>, start_us: u64) {
        self.events.push(ChaosEvent {
            kind: kind.into(),
            backend: i.map(|i| self.games[i].name.clone()).unwrap_or_default(),
            start_us,
            end_us: now_us(),
        });
    }

    fn problem(&mut self, p: String) {
        eprintln!("soak: {p}");
        self.counts.problems.push(p);
    }

    fn kill(&mut self, i: usize, active: bool) {
        let t = now_us();
        self.games[i].kill();
        self.record("kill", Some(i), t);
        if active {
            self.counts.kills_active += 1;
        } else {
            self.counts.kills_standby += 1;
        }
    }

    fn restart(&mut self, i: usize) {
        if let Err(e) = self.games[i].ensure_up() {
            self.problem(format!("restart {}: {e}", self.games[i].name));
        }
    }

    fn reload(&mut self, kind: &str) {
        let before = self
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reloads_ok;
        let t = now_us();
        if let Err(e) = self
            .cfg
            .write()
            .and_then(|()| crate::procs::signal(self.proxy.pid(), "HUP"))
        {
            self.problem(format!("reload: {e}"));
            return;
        }
        self.record(kind, None, t);
        if !self.wait_log("config reloaded", |l| l.reloads_ok > before) {
            self.problem("a reload was not confirmed".into());
        }
    }

    /// Runs episodes until `deadline`, then brings every game back up.
    pub fn run(mut self, deadline: Instant, start: Instant) -> Self {
        // Bounded by the deadline: every episode is a few seconds long.
        while Instant::now() < deadline {
            let minutes = start.elapsed().as_secs_f64() / 60.0;
            let behind = (self.counts.kills() as f64) < minutes * self.kill_pace;
            if (self.counts.upgrades as f64) < minutes * self.upgrade_pace {
                // Every other one in a re-login storm.
                self.upgrade_episode(self.counts.upgrades % 2 == 1);
            } else if self.kill_new_tried < (minutes * self.kill_new_pace).ceil() as u64
                && self.batches_min >= 3
            {
                self.kill_new_episode();
            } else {
                self.episode(behind);
            }
            let pause = secs(&mut self.rng, 2.0, 8.0);
            std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        }
        for i in 0..self.games.len() {
            self.restart(i);
        }
        self
    }

    /// Upgrades the proxy (`SIGUSR2`) and follows it to its new pid. In a
    /// storm: right after the active game was killed and restarted, while
    /// every player is being logged back in.
    fn upgrade_episode(&mut self, in_storm: bool) {
        for i in 0..self.games.len() {
            self.restart(i);
        }
        self.counts.episodes += 1;
        let kind = if in_storm {
            "upgrade-relogin"
        } else {
            "upgrade"
        };
        *self.counts.by_kind.entry(kind.to_string()).or_default() += 1;
        let a = self.active();
        eprintln!(
            "soak: episode {} {kind} (pid {})",
            self.counts.episodes,
            self.proxy.pid()
        );
        if in_storm {
            self.kill(a, true);
            std::thread::sleep(secs(&mut self.rng, 0.5, 1.5));
            self.restart(a);
            let before = self.log.lock().unwrap_or_else(|e| e.into_inner()).relogins;
            // The first re-logins are under way: upgrade now.
            if !self.wait_log("a re-login after the restart", |l| l.relogins > before) {
                self.problem("no re-login after a restart".into());
            }
        }
        let t = now_us();
        match self.proxy.upgrade() {
            Ok(took) => {
                self.record(kind, None, t);
                self.counts.upgrades += 1;
                self.counts.upgrades_in_relogin += u64::from(in_storm);
                self.counts.upgrade_longest_ms =
                    self.counts.upgrade_longest_ms.max(took.as_millis() as u64);
                eprintln!(
                    "soak: upgraded to pid {} in {} ms",
                    self.proxy.pid(),
                    took.as_millis()
                );
            }
            Err(e) => self.problem(format!("upgrade: {e}")),
        }
    }

    /// An upgrade whose new process dies in the middle of the handover,
    /// after some batches of sessions were handed to it. In turn: it
    /// aborts after the first batch; the soak SIGKILLs it after a random
    /// number of batches (each confirmed 250 ms late, so the kill lands
    /// between two); it aborts after two; it aborts after all but one of
    /// the fewest batches there can be. The old process must kill it,
    /// thaw every session and carry on: no line lost or sent twice, every
    /// MCCP2 stream intact, nobody dropped (the players' own checks and
    /// the accounting at the end).
    fn kill_new_episode(&mut self) {
        for i in 0..self.games.len() {
            self.restart(i);
        }
        self.kill_new_tried += 1;
        self.counts.episodes += 1;
        let n = self.batches_min;
        let how = match self.kill_new_tried % 4 {
            1 => Failure::Abort { after: 1 },
            2 => Failure::Kill {
                after: self.rng.random_range(1..=n - 2),
                delay_ms: 250,
            },
            3 => Failure::Abort { after: 2 },
            _ => Failure::Abort { after: n - 1 },
        };
        let (name, after) = match how {
            Failure::Abort { after } => ("abort", after),
            Failure::Kill { after, .. } => ("sigkill", after),
        };
        let kind = "upgrade-kill-new";
        *self.counts.by_kind.entry(kind.to_string()).or_default() += 1;
        eprintln!(
            "soak: episode {} {kind}: {name} after {after} of at least {n} batches (pid {})",
            self.counts.episodes,
            self.proxy.pid()
        );
        let t = now_us();
        match self.proxy.upgrade_failing(how) {
            Ok(f) => {
                self.record(kind, None, t);
                eprintln!(
                    "soak: the new process {} died after {} batches; the old one {} carries on after {} ms ({})",
                    f.new_pid,
                    f.batches,
                    self.proxy.pid(),
                    f.took.as_millis(),
                    f.error
                );
                // A SIGKILL may land a batch late on a busy machine; an
                // abort comes exactly after its batch.
                let exact = matches!(how, Failure::Abort { .. });
                if f.batches < after || (exact && f.batches != after) {
                    self.problem(format!(
                        "the new process {} was to die after {after} batches, its log shows {}",
                        f.new_pid, f.batches
                    ));
                }
                self.counts.kill_new.push(KillNew {
                    how: name.into(),
                    after,
                    batches: f.batches,
                    of_at_least: n,
                    pid: f.new_pid,
                    ms: f.took.as_millis() as u64,
                    error: f.error,
                });
            }
            Err(e) => {
                self.record(kind, None, t);
                self.problem(format!("{kind} ({name} after {after}): {e}"));
            }
        }
    }

    fn episode(&mut self, force_kill: bool) {
        let a = self.active();
        let o = 1 - a;
        // Start from a known state: both games running, the other one up
        // in the proxy's eyes (needed for failovers).
        for i in 0..self.games.len() {
            self.restart(i);
        }
        let after = self.cfg.failover_after as f64;
        let roll: f64 = self.rng.random_range(0.0..1.0);
        let kind = if force_kill {
            if roll < 0.7 {
                "kill"
            } else {
                "kill-twice"
            }
        } else {
            const KINDS: [(&str, f64); 12] = [
                ("kill", 0.20),
                ("kill-twice", 0.07),
                ("kill-standby", 0.04),
                ("kill-failover", 0.09),
                ("freeze", 0.16),
                ("term", 0.07),
                ("shutdown", 0.07),
                ("reload-toggle", 0.09),
                ("reload-move", 0.07),
                ("reload-invalid", 0.03),
                ("bus-failover", 0.06),
                ("announce", 0.05),
            ];
            let mut acc = 0.0;
            KINDS
                .iter()
                .find(|(_, w)| {
                    acc += w;
                    roll < acc
                })
                .map(|(k, _)| *k)
                .unwrap_or("kill")
        };
        // A second draw for the variant (the first one chose the kind).
        let sub: f64 = self.rng.random_range(0.0..1.0);
        let needs_other = matches!(kind, "kill-failover" | "reload-move" | "bus-failover")
            || (kind == "freeze" && sub >= 0.7);
        if needs_other && !self.wait_log("the other backend up", |l| l.is_up(&self.games[o].name)) {
            self.problem(format!(
                "{} never came up; skipping {kind}",
                self.games[o].name
            ));
            return;
        }
        self.counts.episodes += 1;
        *self.counts.by_kind.entry(kind.to_string()).or_default() += 1;
        let gname = self.games[a].name.clone();
        eprintln!("soak: episode {} {kind} on {gname}", self.counts.episodes);
        match kind {
            "kill" => {
                self.kill(a, true);
                std::thread::sleep(secs(&mut self.rng, 0.3, 4.0));
                self.restart(a);
            }
            "kill-twice" => {
                self.kill(a, true);
                std::thread::sleep(secs(&mut self.rng, 0.5, 2.0));
                self.restart(a);
                // Hit it again while players are being logged back in.
                std::thread::sleep(secs(&mut self.rng, 0.2, 1.5));
                self.kill(a, true);
                self.counts.kills_in_relogin += 1;
                std::thread::sleep(secs(&mut self.rng, 0.5, 2.0));
                self.restart(a);
            }
            "kill-standby" => {
                self.kill(o, false);
                std::thread::sleep(secs(&mut self.rng, 0.5, 5.0));
                self.restart(o);
            }
            "kill-failover" => {
                let before = self.failovers();
                self.kill(a, true);
                self.counts.kills_past_failover += 1;
                if !self.wait_log("an automatic failover", |l| {
                    l.failovers.values().sum::<u64>() > before
                }) {
                    self.problem("no failover after a long kill".into());
                }
                std::thread::sleep(secs(&mut self.rng, 0.5, 3.0));
                self.restart(a);
            }
            "freeze" => {
                let (d, bucket) = if sub < 0.3 {
                    (secs(&mut self.rng, 0.2, 0.8), 0)
                } else if sub < 0.7 {
                    (secs(&mut self.rng, 4.0, 6.0), 1)
                } else {
                    (secs(&mut self.rng, after + 5.0, after + 8.0), 2)
                };
                let t = now_us();
                if let Err(e) = self.games[a].freeze() {
                    self.problem(format!("freeze: {e}"));
                    return;
                }
                std::thread::sleep(d);
                // Stamped before SIGCONT: the game cannot run before that,
                // so whatever it logs on thawing comes after this time.
                let thaw_us = now_us();
                if let Err(e) = self.games[a].thaw() {
                    self.problem(format!("thaw: {e}"));
                }
                self.events.push(ChaosEvent {
                    kind: "freeze".into(),
                    backend: self.games[a].name.clone(),
                    start_us: t,
                    end_us: thaw_us,
                });
                match bucket {
                    0 => self.counts.freezes_short += 1,
                    1 => self.counts.freezes_detected += 1,
                    _ => self.counts.freezes_past_failover += 1,
                }
            }
            "term" => {
                let t = now_us();
                if let Err(e) = self.games[a].term() {
                    self.problem(format!("term: {e}"));
                }
                self.record("term", Some(a), t);
                self.counts.terms += 1;
                std::thread::sleep(secs(&mut self.rng, 0.3, 3.0));
                self.restart(a);
            }
            "shutdown" => {
                let t = now_us();
                if let Err(e) = self.games[a].shutdown_command("Wiz", "wizpw") {
                    self.problem(format!("@shutdown: {e}"));
                }
                self.record("shutdown", Some(a), t);
                self.counts.game_shutdowns += 1;
                std::thread::sleep(secs(&mut self.rng, 0.3, 3.0));
                self.restart(a);
            }
            "reload-toggle" => {
                self.cfg.queue_input = !self.cfg.queue_input;
                self.counts.reloads_toggle += 1;
                self.reload("reload");
            }
            "reload-invalid" => {
                let before = self
                    .log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .reloads_failed;
                let broken = format!("no_such_key = 1\n{}", self.cfg.render());
                let tmp = self.cfg.path.with_extension("tmp");
                let r = std::fs::write(&tmp, broken)
                    .and_then(|()| std::fs::rename(&tmp, &self.cfg.path))
                    .map_err(|e| e.to_string())
                    .and_then(|()| crate::procs::signal(self.proxy.pid(), "HUP"));
                if let Err(e) = r {
                    self.problem(format!("invalid reload: {e}"));
                }
                self.counts.reloads_invalid += 1;
                if !self.wait_log("config reload failed", |l| l.reloads_failed > before) {
                    self.problem("a broken config was not reported".into());
                }
                // Put the good file back for the next reload.
                if let Err(e) = self.cfg.write() {
                    self.problem(e);
                }
            }
            "bus-failover" => {
                let before = self.failovers();
                let to = self.games[o].name.clone();
                let r = self
                    .bus
                    .request_blocking("failover", serde_json::json!({ "backend": to }));
                match r {
                    Ok(_) => {
                        self.counts.bus_failovers += 1;
                        if !self.wait_log("a requested failover", |l| {
                            l.failovers.values().sum::<u64>() > before
                        }) {
                            self.problem("no failover after a bus request".into());
                        }
                    }
                    Err(e) => {
                        eprintln!("soak: failover request: {e}");
                        self.counts.bus_requests_failed += 1;
                    }
                }
            }
            "announce" => {
                let k = (self.counts.announced.len() + self.counts.announce_unconfirmed.len() + 1)
                    as u32;
                let text = format!("[soak] announcement {k}");
                match self
                    .bus
                    .request_blocking("announce", serde_json::json!({ "text": text }))
                {
                    Ok(_) => self.counts.announced.push(k),
                    Err(e) => {
                        eprintln!("soak: announce request: {e}");
                        self.counts.bus_requests_failed += 1;
                        self.counts.announce_unconfirmed.push(k);
                    }
                }
            }
            _ => {
                // reload-move: make the other game the preferred one. If it
                // is first already (we are on the second after an automatic
                // failover), a reload that keeps the order moves nobody, so
                // first put the active one first (a no-op move), then swap.
                let before = self.failovers();
                if self.cfg.order[0] == o {
                    self.cfg.order = [a, o];
                    self.counts.reloads_reorder += 1;
                    self.reload("reload");
                }
                self.cfg.order = [o, a];
                self.counts.reloads_reorder += 1;
                self.reload("reload");
                if !self.wait_log("a SIGHUP failover", |l| {
                    l.failovers.values().sum::<u64>() > before
                }) {
                    self.problem("no failover after reordering the backends".into());
                }
            }
        }
    }

    fn failovers(&self) -> u64 {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failovers
            .values()
            .sum()
    }
}

/// Kills and restarts nats-server until `deadline`; leaves it running.
pub fn nats_chaos(
    mut nats: Nats,
    deadline: Instant,
    seed: u64,
    events: Arc<std::sync::Mutex<Vec<ChaosEvent>>>,
) -> (Nats, u64, u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x6e617473);
    let (mut kills, mut terms) = (0, 0);
    let nap =
        |d: Duration| std::thread::sleep(d.min(deadline.saturating_duration_since(Instant::now())));
    // Bounded by the deadline.
    while Instant::now() < deadline {
        nap(secs(&mut rng, 20.0, 50.0));
        if Instant::now() >= deadline {
            break;
        }
        let hard = rng.random_bool(0.5);
        let t = now_us();
        nats.stop(hard);
        if hard {
            kills += 1;
        } else {
            terms += 1;
        }
        eprintln!(
            "soak: nats-server {}",
            if hard { "SIGKILL" } else { "SIGTERM" }
        );
        nap(secs(&mut rng, 2.0, 12.0));
        if let Err(e) = nats.spawn() {
            eprintln!("soak: nats-server restart: {e}");
        }
        events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ChaosEvent {
                kind: if hard { "nats-kill" } else { "nats-term" }.into(),
                backend: String::new(),
                start_us: t,
                end_us: now_us(),
            });
    }
    if !nats.running() {
        let _ = nats.spawn();
    }
    (nats, kills, terms)
}
