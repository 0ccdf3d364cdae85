//! The end of the soak: reads the games' logs, classifies every numbered
//! line each player sent, and prints the summary table.
//!
//! A line counts as delivered when a game logged it, from that player's
//! logged-in connection. Per player, the lines the games logged must be
//! each line at most once and in increasing order across both games (the
//! games stamp their logs with wall-clock µs). The one reordering no proxy
//! can prevent is a line already inside a frozen host's socket buffer: the
//! host reads it when thawed, after the player has moved on; those are
//! counted apart, and only when a thaw of that host just preceded them.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Serialize;

use crate::chaos::ChaosEvent;
use crate::player::{Outcome, Report};

/// How far before a line was sent a disruptive act may lie and still be
/// what took it down (the proxy may not have noticed a dead game yet).
const CRASH_SLACK_US: u64 = 3_000_000;
/// How soon after a thaw the thawed host processes what it had buffered.
const THAW_WINDOW_US: u64 = 5_000_000;

/// One numbered line as a game logged it.
#[derive(Debug, Clone)]
struct Delivery {
    n: u32,
    us: u64,
    backend: String,
    /// Logged under the player's own name (not another user, not before login).
    as_player: bool,
}

/// What the games' logs hold.
#[derive(Default)]
pub struct GameLogs {
    lines: HashMap<String, Vec<Delivery>>,
    finals: HashMap<String, Vec<(u32, bool)>>,
    /// Game process starts, by backend.
    pub starts: HashMap<String, u64>,
    /// Logins (players' and the heartbeat's), by backend.
    pub logins: HashMap<String, u64>,
}

impl GameLogs {
    /// Adds the JSON log of the game called `backend`.
    pub fn read(&mut self, path: &Path, backend: &str) -> Result<(), String> {
        let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for l in BufReader::new(f).lines() {
            let l = l.map_err(|e| format!("{}: {e}", path.display()))?;
            if l.starts_with("{\"t\":\"start\"") {
                *self.starts.entry(backend.into()).or_default() += 1;
                continue;
            }
            if l.starts_with("{\"t\":\"login\"") {
                *self.logins.entry(backend.into()).or_default() += 1;
                continue;
            }
            if !(l.starts_with("{\"t\":\"line\"")
                && (l.contains("\"echo ") || l.contains("\"later ")))
            {
                continue;
            }
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&l) else {
                continue;
            };
            let line = v["line"].as_str().unwrap_or("");
            // `later <ms> S:...` (a line sent just before a link drop, its
            // echo delayed so it comes while the player is away).
            let rest = line.strip_prefix("echo ").or_else(|| {
                line.strip_prefix("later ")
                    .and_then(|r| r.split_once(' '))
                    .map(|(_, r)| r)
            });
            let Some(rest) = rest else {
                continue;
            };
            let mut parts = rest.splitn(3, ':');
            let (Some(tag), Some(name), Some(n)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(n) = n.parse::<u32>() else { continue };
            let as_player = v["user"].as_str() == Some(name);
            let us = v["us"].as_u64().unwrap_or(0);
            match tag {
                "S" => self.lines.entry(name.into()).or_default().push(Delivery {
                    n,
                    us,
                    backend: backend.into(),
                    as_player,
                }),
                "F" => self
                    .finals
                    .entry(name.into())
                    .or_default()
                    .push((n, as_player)),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Every numbered line, by class; the soak passes only with `lost`,
/// `duplicate`, `not_as_player` and `out_of_order` at 0.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lines {
    pub sent: u64,
    /// Echoed by a game, logged once.
    pub delivered: u64,
    /// Queued while held (queue_input), logged once after the re-login.
    pub queued_delivered: u64,
    /// Answered with the held-input notice, never logged.
    pub answered_held: u64,
    /// Answered "queue full, not kept", never logged.
    pub queue_full: u64,
    /// Outstanding when the backend went away, logged once anyway (the game
    /// read it before dying, or on thaw; its echo was lost with the link).
    pub in_flight_delivered: u64,
    /// Outstanding when the backend went away and never logged: it was in
    /// the socket of a game that was killed/stopped right then.
    pub in_flight_lost_with_backend: u64,
    /// Those, by what took the backend down (the latest act before the
    /// notice): `kill`, `term`, `shutdown`, `freeze`.
    pub in_flight_lost_by: BTreeMap<String, u64>,
    /// Not answered in time but logged once (the echo went missing).
    pub timed_out_delivered: u64,
    /// Queued lines that the proxy said were too old to send.
    pub stale: u64,
    /// Sent and never logged, with no crash to explain it.
    pub lost: u64,
    /// Logged more than once, or logged though answered as not sent.
    pub duplicate: u64,
    /// Logged from a connection not logged in as the player.
    pub not_as_player: u64,
    /// Logged after a later line, not explained by a thaw.
    pub out_of_order: u64,
    /// Logged after a later line by a host just thawed (it had the line
    /// in its socket buffer while frozen): no proxy can prevent this.
    pub late_from_thawed_host: u64,
    /// Examples of each failure, for the report.
    pub examples: Vec<String>,
}

impl Lines {
    fn example(&mut self, s: String) {
        if self.examples.len() < 30 {
            self.examples.push(s);
        }
    }
}

/// Classifies every line of every player.
pub fn classify(players: &[Report], logs: &GameLogs, chaos: &[ChaosEvent]) -> Lines {
    let mut out = Lines::default();
    let empty = Vec::new();
    for p in players {
        let dels = logs.lines.get(&p.name).unwrap_or(&empty);
        let mut by_n: HashMap<u32, Vec<&Delivery>> = HashMap::new();
        for d in dels {
            by_n.entry(d.n).or_default().push(d);
        }
        for d in dels.iter().filter(|d| !d.as_player) {
            out.not_as_player += 1;
            out.example(format!(
                "{} line {} logged by {} not as the player",
                p.name, d.n, d.backend
            ));
        }
        for rec in &p.lines {
            out.sent += 1;
            let got = by_n.get(&rec.n).map(|v| v.len()).unwrap_or(0);
            if got > 1 {
                out.duplicate += 1;
                out.example(format!("{} line {} logged {got} times", p.name, rec.n));
                continue;
            }
            // What took the line down: an act under way when it was sent
            // (a freeze), else the first one after, else the last one just
            // before (the proxy had not noticed a dead game yet).
            let hits: Vec<&ChaosEvent> = chaos
                .iter()
                .filter(|e| {
                    e.disruptive()
                        && e.start_us <= rec.resolved_us
                        && e.end_us + CRASH_SLACK_US >= rec.sent_us
                })
                .collect();
            let cause = hits
                .iter()
                .find(|e| e.start_us <= rec.sent_us && rec.sent_us <= e.end_us)
                .or_else(|| {
                    hits.iter()
                        .filter(|e| e.start_us > rec.sent_us)
                        .min_by_key(|e| e.start_us)
                })
                .or_else(|| hits.iter().max_by_key(|e| e.start_us))
                .map(|e| e.kind.clone());
            match (rec.outcome, got) {
                (Outcome::Echoed, 1) => out.delivered += 1,
                (Outcome::Queued, 1) => out.queued_delivered += 1,
                (Outcome::Held, 0) => out.answered_held += 1,
                (Outcome::QueueFull, 0) => out.queue_full += 1,
                (
                    Outcome::InFlightOffline | Outcome::InFlightMoving | Outcome::QueuedInFlight,
                    1,
                ) => out.in_flight_delivered += 1,
                (
                    Outcome::InFlightOffline | Outcome::InFlightMoving | Outcome::QueuedInFlight,
                    0,
                ) if cause.is_some() => {
                    out.in_flight_lost_with_backend += 1;
                    let k = cause.unwrap_or_default();
                    *out.in_flight_lost_by.entry(k).or_default() += 1;
                }
                (Outcome::TimedOut, 1) => out.timed_out_delivered += 1,
                (Outcome::Held | Outcome::QueueFull, _) => {
                    out.duplicate += 1;
                    out.example(format!(
                        "{} line {} answered {:?} yet logged",
                        p.name, rec.n, rec.outcome
                    ));
                }
                (Outcome::Queued, 0) if p.seen.stale > 0 => out.stale += 1,
                (o, _) => {
                    out.lost += 1;
                    out.example(format!("{} line {} ({o:?}) never logged", p.name, rec.n));
                }
            }
        }
        // Order across both games, by the games' clocks.
        let mut seq: Vec<&Delivery> = dels.iter().collect();
        seq.sort_by_key(|d| d.us);
        let mut max = 0;
        for d in seq {
            if d.n < max {
                let thawed = chaos.iter().any(|e| {
                    e.kind == "freeze"
                        && e.backend == d.backend
                        && e.end_us <= d.us
                        && d.us <= e.end_us + THAW_WINDOW_US
                });
                if thawed {
                    out.late_from_thawed_host += 1;
                } else {
                    out.out_of_order += 1;
                    out.example(format!(
                        "{} line {} logged by {} after line {max}",
                        p.name, d.n, d.backend
                    ));
                }
            }
            max = max.max(d.n);
        }
    }
    out
}

/// Players whose final line was logged by a game as coming from them.
pub fn logged_in_at_end(players: &[Report], logs: &GameLogs) -> u64 {
    players
        .iter()
        .filter(|p| {
            p.final_ok
                && p.final_n.is_some_and(|k| {
                    logs.finals
                        .get(&p.name)
                        .is_some_and(|v| v.iter().any(|&(n, ok)| n == k && ok))
                })
        })
        .count() as u64
}

/// Renders rows as a Markdown table.
pub fn table(rows: &[(String, String)]) -> String {
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
    let v = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(5);
    let mut s = format!("| {:<w$} | {:<v$} |\n", "metric", "value");
    s.push_str(&format!("| {} | {} |\n", "-".repeat(w), "-".repeat(v)));
    for (k, val) in rows {
        s.push_str(&format!("| {k:<w$} | {val:<v$} |\n"));
    }
    s
}
