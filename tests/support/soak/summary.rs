//! What the soak found: everything `summary.json` holds, and the table it
//! prints.

use serde::Serialize;

use crate::procs::ProcStat;
use crate::{bus, chaos::Counts, player, proxylog, report};

/// Peak values seen by the sampler.
#[derive(Default, Clone, Copy, Serialize)]
pub struct Peaks {
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
}

/// The proxy every 10 s during the chaos.
#[derive(Clone, Copy, Serialize)]
pub struct Sample {
    pub t_s: u64,
    pub rss_kib: u64,
    pub fds: u64,
    pub sessions: i64,
    pub held: u64,
}

/// Everything `summary.json` holds.
#[derive(Serialize)]
pub struct Summary {
    pub pass: bool,
    pub failures: Vec<String>,
    pub seed: u64,
    pub players: usize,
    pub chaos_seconds: f64,
    pub counts: Counts,
    pub nats_kills: u64,
    pub nats_terms: u64,
    pub proxy: proxylog::ProxyLog,
    pub lines: report::Lines,
    pub drops: u64,
    pub logged_in_at_end: u64,
    pub quit_closed: u64,
    pub notices: player::Seen,
    pub anomalies: u64,
    /// Idle, before any player (a process that has never run a session).
    pub idle_before: ProcStat,
    /// Idle, after one player of each kind came and went (the warm-up).
    pub idle_warm: ProcStat,
    pub start: ProcStat,
    pub peak: Peaks,
    pub fin: ProcStat,
    pub idle_after: ProcStat,
    pub sessions_open_after_quit: i64,
    pub proxy_exit: Option<i32>,
    pub game_starts: std::collections::HashMap<String, u64>,
    pub bus_seen: bus::Seen,
    pub bus_missed: u64,
    pub status_start: serde_json::Value,
    pub status_end: serde_json::Value,
    pub status_after_quit: serde_json::Value,
    pub announce_missing: u64,
    pub announce_repeated: u64,
    /// Players who drop their own link now and then.
    pub link_drop_players: usize,
    pub link_drops: u64,
    pub resumed: u64,
    /// WebSocket reconnects whose handshake an upgrade closed (tried again).
    pub connect_retries: u64,
    pub playback_dropped: u64,
    /// Sessions per upgrade batch, and the fewest batches an upgrade had.
    pub upgrade_batch: usize,
    pub upgrade_batches_min: usize,
    /// Players by door (`telnet`, `ws-telnet`, `ws-terminal`, `ws-text`).
    pub doors: std::collections::BTreeMap<String, usize>,
    /// WebSocket players and their lines.
    pub ws_players: usize,
    pub ws_lines: report::Lines,
    /// MCCP2 players, their streams and their lines.
    pub mccp_players: usize,
    pub mccp_streams: u64,
    pub mccp_ends: u64,
    pub mccp_errors: u64,
    pub mccp_lines: report::Lines,
    /// Players typing their lines in two pieces.
    pub split_players: usize,
    /// The lines sent while a new process was dying (kill-new episodes).
    pub kill_new_lines: report::Lines,
    pub timeline: Vec<Sample>,
}

/// A subset's lines in one cell.
fn sub_lines(l: &report::Lines) -> String {
    format!(
        "sent {}, delivered {}, lost {}, duplicate {}, out of order {}",
        l.sent,
        l.delivered + l.queued_delivered + l.in_flight_delivered + l.timed_out_delivered,
        l.lost,
        l.duplicate,
        l.out_of_order
    )
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn render(s: &Summary) -> String {
    let c = &s.counts;
    let l = &s.lines;
    let p = &s.proxy;
    let f = |k: &str| p.failovers.get(k).copied().unwrap_or(0);
    let ev = |k: &str| s.status_after_quit["events"][k].as_u64().unwrap_or(0);
    let lost_by: Vec<String> = l
        .in_flight_lost_by
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut row = |k: &str, v: String| rows.push((k.to_string(), v));
    row(
        "players / chaos time",
        format!("{} / {:.0} s (seed {})", s.players, s.chaos_seconds, s.seed),
    );
    row("chaos episodes", c.episodes.to_string());
    row(
        "backend kills (SIGKILL)",
        format!(
            "{} (active {}, standby {}; {} in a re-login storm, {} past failover.after)",
            c.kills(),
            c.kills_active,
            c.kills_standby,
            c.kills_in_relogin,
            c.kills_past_failover
        ),
    );
    row(
        "clean stops",
        format!("SIGTERM {}, @shutdown {}", c.terms, c.game_shutdowns),
    );
    row(
        "freezes (SIGSTOP/SIGCONT)",
        format!(
            "{} (short {}, detected {}, past failover.after {})",
            c.freezes_short + c.freezes_detected + c.freezes_past_failover,
            c.freezes_short,
            c.freezes_detected,
            c.freezes_past_failover
        ),
    );
    row(
        "failovers (proxy log)",
        format!(
            "{} (automatic {}, SIGHUP {}, bus request {})",
            p.failovers.values().sum::<u64>(),
            f("automatic"),
            f("sighup"),
            f("request")
        ),
    );
    row(
        "upgrades (SIGUSR2)",
        format!(
            "{} ({} in a re-login storm; longest SIGUSR2 to new pid {} ms; {} sessions a batch, at least {} batches)",
            c.upgrades,
            c.upgrades_in_relogin,
            c.upgrade_longest_ms,
            s.upgrade_batch,
            s.upgrade_batches_min
        ),
    );
    let kn = |how: &str, after: Option<usize>| {
        c.kill_new
            .iter()
            .filter(|k| k.how == how && after.is_none_or(|a| k.after == a))
            .count()
    };
    let all_but_one = s.upgrade_batches_min.saturating_sub(1);
    row(
        "new process killed mid-handover",
        format!(
            "{} (aborted after 1 batch {}, after 2 {}, after {all_but_one} of at least {} {}; SIGKILLed by the soak {}); old process carried on every time (longest {} ms); proxy log: {} failed upgrades, {} handed over",
            c.kill_new.len(),
            kn("abort", Some(1)),
            kn("abort", Some(2)),
            s.upgrade_batches_min,
            kn("abort", Some(all_but_one)),
            kn("sigkill", None),
            c.kill_new.iter().map(|k| k.ms).max().unwrap_or(0),
            p.upgrades_failed,
            p.upgrades_ok
        ),
    );
    row(
        "  lines typed during those handovers",
        sub_lines(&s.kill_new_lines),
    );
    row(
        "reloads (SIGHUP)",
        format!(
            "{} ok, {} refused (queue_input toggles {}, reorders {}, broken files {})",
            p.reloads_ok, p.reloads_failed, c.reloads_toggle, c.reloads_reorder, c.reloads_invalid
        ),
    );
    row(
        "nats-server kills / restarts",
        format!(
            "{} (SIGKILL {}, SIGTERM {})",
            s.nats_kills + s.nats_terms,
            s.nats_kills,
            s.nats_terms
        ),
    );
    row(
        "bus requests",
        format!(
            "failover {} ok, announce {} ok, {} unanswered (NATS away)",
            c.bus_failovers,
            c.announced.len(),
            c.bus_requests_failed
        ),
    );
    row(
        "bus events seen by a subscriber",
        format!(
            "{} distinct, {} repeats, {} missed while it reconnected; proxy dropped {}",
            s.bus_seen.unique,
            s.bus_seen.repeats,
            s.bus_missed,
            ev("dropped_channel") + ev("dropped_overflow")
        ),
    );
    row(
        "holds / re-logins (proxy log)",
        format!(
            "{} / {} ({} re-logins failed)",
            p.holds, p.relogins, p.relogins_failed
        ),
    );
    row(
        "notices seen by players",
        format!(
            "offline {}, online {}, moving {}, game shutdown {}",
            s.notices.offline, s.notices.online, s.notices.moving, s.notices.game_shutdown
        ),
    );
    row(
        "announcements missed / repeated",
        format!("{} / {}", s.announce_missing, s.announce_repeated),
    );
    row("lines sent", l.sent.to_string());
    row("  delivered (echoed)", l.delivered.to_string());
    row(
        "  queued while held, delivered after",
        l.queued_delivered.to_string(),
    );
    row(
        "  answered while held (not sent)",
        l.answered_held.to_string(),
    );
    row("  queue full (not kept)", l.queue_full.to_string());
    row(
        "  in flight at a crash: delivered",
        l.in_flight_delivered.to_string(),
    );
    row(
        "  in flight at a crash: died with the backend",
        format!("{} ({})", l.in_flight_lost_with_backend, lost_by.join(", ")),
    );
    row("  timed out, delivered", l.timed_out_delivered.to_string());
    row("  queued, too old to send", l.stale.to_string());
    row(
        "  late from a thawed host",
        l.late_from_thawed_host.to_string(),
    );
    row("lost lines", l.lost.to_string());
    row("duplicate lines", l.duplicate.to_string());
    row("out-of-order lines", l.out_of_order.to_string());
    row(
        "lines not logged as the player",
        l.not_as_player.to_string(),
    );
    let doors = |k: &str| s.doors.get(k).copied().unwrap_or(0);
    row(
        "players by door",
        format!(
            "telnet {}, WebSocket {} (telnet {}, terminal {}, text {}); {} type lines in two pieces",
            doors("telnet"),
            s.ws_players,
            doors("ws-telnet"),
            doors("ws-terminal"),
            doors("ws-text"),
            s.split_players
        ),
    );
    let sub = sub_lines;
    row("  WebSocket players' lines", sub(&s.ws_lines));
    row(
        "MCCP2 players / streams",
        format!(
            "{} / {} started, {} ended cleanly, {} broken",
            s.mccp_players, s.mccp_streams, s.mccp_ends, s.mccp_errors
        ),
    );
    row("  MCCP2 players' lines", sub(&s.mccp_lines));
    row("connection drops", s.drops.to_string());
    row(
        "player link drops / resumed",
        format!(
            "{} / {} ({} players; {} playback lines not kept; {} WebSocket handshakes closed by an upgrade, tried again)",
            s.link_drops, s.resumed, s.link_drop_players, s.playback_dropped, s.connect_retries
        ),
    );
    row(
        "logged in at the end",
        format!("{}/{}", s.logged_in_at_end, s.players),
    );
    row(
        "closed cleanly after QUIT",
        format!("{}/{}", s.quit_closed, s.players),
    );
    row("player anomalies", s.anomalies.to_string());
    row(
        "RSS start / peak / final",
        format!(
            "{} / {} / {}",
            mib(s.start.rss_kib),
            mib(s.peak.rss_kib),
            mib(s.fin.rss_kib)
        ),
    );
    row(
        "fds start / final (players on)",
        format!("{} / {}", s.start.fds, s.fin.fds),
    );
    row(
        "fds idle before / after (no players)",
        format!("{} / {}", s.idle_before.fds, s.idle_after.fds),
    );
    let ratio = |a: &ProcStat, b: &ProcStat| a.rss_kib as f64 / b.rss_kib.max(1) as f64;
    row(
        "RSS idle before (no player yet) / warm (5 came and went) / after",
        format!(
            "{} / {} / {} (after = {:.2}x before, {:.2}x warm)",
            mib(s.idle_before.rss_kib),
            mib(s.idle_warm.rss_kib),
            mib(s.idle_after.rss_kib),
            ratio(&s.idle_after, &s.idle_before),
            ratio(&s.idle_after, &s.idle_warm),
        ),
    );
    row(
        "  of which anonymous / file-backed (code)",
        format!(
            "{} / {} before, {} / {} warm, {} / {} after",
            mib(s.idle_before.rss_anon_kib),
            mib(s.idle_before.rss_file_kib),
            mib(s.idle_warm.rss_anon_kib),
            mib(s.idle_warm.rss_file_kib),
            mib(s.idle_after.rss_anon_kib),
            mib(s.idle_after.rss_file_kib)
        ),
    );
    row(
        "threads start / final",
        format!("{} / {}", s.start.threads, s.fin.threads),
    );
    row(
        "sessions (bus status) start / end / after QUIT",
        format!(
            "{} / {} / {}",
            s.status_start["sessions"]["total"],
            s.status_end["sessions"]["total"],
            s.status_after_quit["sessions"]["total"]
        ),
    );
    row(
        "holdfast exit on SIGTERM",
        s.proxy_exit
            .map(|c| c.to_string())
            .unwrap_or_else(|| "killed".into()),
    );
    row(
        "result",
        if s.pass {
            "PASS".into()
        } else {
            format!("FAIL: {}", s.failures.join("; "))
        },
    );
    report::table(&rows)
}
