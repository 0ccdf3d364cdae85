//! holdfast-soak: the chaos soak (issue 8). Run it with `scripts/soak.sh`.
//!
//! Hundreds of simulated players log in through a real holdfast and keep
//! sending numbered lines stop-and-wait (see `player.rs`) while a driver
//! kills, freezes, stops and restarts the two fakemush games behind it,
//! forces failovers, reloads the config, and kills nats-server (see
//! `chaos.rs`). At the end every player must still be connected and logged
//! in, every line must be accounted for from the games' own logs (see
//! `report.rs`), and the proxy's memory, fds and sessions must be back
//! where they started. Prints a summary table and writes `summary.json`.
//!
//! Layout: `procs.rs` (processes, /proc), `player.rs` (one player),
//! `chaos.rs` (the driver), `proxylog.rs` (follows holdfast's JSON log),
//! `report.rs` (accounting and the table).

#![forbid(unsafe_code)]

mod chaos;
mod player;
mod procs;
mod proxylog;
mod report;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use serde::Serialize;

use chaos::{Chaos, ConfigFile, Counts};
use player::{Control, Phase};
use procs::{proc_stat, Game, Nats, ProcStat, Proxy};

const USAGE: &str = "usage: holdfast-soak [--minutes M] [--players N] [--seed S] [--dir DIR]
       [--think-ms MIN-MAX] [--failover-after SECS] [--kill-pace PER_MIN]
       [--holdfast BIN] [--fakemush BIN] [--nats-server BIN]";

/// How long all players get to log in at the start.
const LOGIN_WAIT: Duration = Duration::from_secs(180);
/// How long all players get to prove they are logged in at the end.
const FINISH_WAIT: Duration = Duration::from_secs(300);
/// Relaying without chaos before the baseline is taken.
const WARMUP: Duration = Duration::from_secs(10);
/// Quiet time before the final measurements.
const SETTLE: Duration = Duration::from_secs(5);

struct Args {
    minutes: f64,
    players: usize,
    seed: u64,
    dir: PathBuf,
    think: (u64, u64),
    failover_after: u64,
    kill_pace: f64,
    holdfast: PathBuf,
    fakemush: PathBuf,
    nats: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut a = Args {
        minutes: 1.0,
        players: 50,
        seed: procs::now_us(),
        dir: PathBuf::from("target/soak"),
        think: (300, 900),
        failover_after: 4,
        kill_pace: 2.6,
        holdfast: here.join("holdfast"),
        fakemush: here.join("fakemush"),
        nats: PathBuf::from("/usr/sbin/nats-server"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "-h" || k == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{k} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{k} {v}: {e}");
        match k.as_str() {
            "--minutes" => a.minutes = v.parse().map_err(|e| bad(&e))?,
            "--players" => a.players = v.parse().map_err(|e| bad(&e))?,
            "--seed" => a.seed = v.parse().map_err(|e| bad(&e))?,
            "--dir" => a.dir = v.into(),
            "--think-ms" => {
                let (x, y) = v.split_once('-').ok_or_else(|| bad(&"want MIN-MAX"))?;
                a.think = (
                    x.parse().map_err(|e| bad(&e))?,
                    y.parse().map_err(|e| bad(&e))?,
                );
            }
            "--failover-after" => a.failover_after = v.parse().map_err(|e| bad(&e))?,
            "--kill-pace" => a.kill_pace = v.parse().map_err(|e| bad(&e))?,
            "--holdfast" => a.holdfast = v.into(),
            "--fakemush" => a.fakemush = v.into(),
            "--nats-server" => a.nats = v.into(),
            _ => return Err(format!("unknown argument {k:?}\n{USAGE}")),
        }
    }
    if a.players == 0 || a.players > 60_000 || a.minutes <= 0.0 {
        return Err(format!("bad --players or --minutes\n{USAGE}"));
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("holdfast-soak: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("holdfast-soak: {e}");
            ExitCode::from(2)
        }
    }
}

/// Peak values seen by the sampler.
#[derive(Default, Clone, Copy, Serialize)]
struct Peaks {
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

/// Polls `cond` every 100 ms for at most `limit`.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

fn stat(pid: u32) -> Result<ProcStat, String> {
    proc_stat(pid).ok_or_else(|| "holdfast is gone (no /proc entry)".to_string())
}

/// Everything `summary.json` holds.
#[derive(Serialize)]
struct Summary {
    pass: bool,
    failures: Vec<String>,
    seed: u64,
    players: usize,
    chaos_seconds: f64,
    counts: Counts,
    nats_kills: u64,
    nats_terms: u64,
    proxy: proxylog::ProxyLog,
    lines: report::Lines,
    drops: u64,
    logged_in_at_end: u64,
    quit_closed: u64,
    notices: player::Seen,
    anomalies: u64,
    idle_before: ProcStat,
    start: ProcStat,
    peak: Peaks,
    fin: ProcStat,
    idle_after: ProcStat,
    sessions_open_after_quit: i64,
    proxy_exit: Option<i32>,
    game_starts: std::collections::HashMap<String, u64>,
}

fn run(a: Args) -> Result<bool, String> {
    std::fs::create_dir_all(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
    for f in [
        "game-alpha.jsonl",
        "game-beta.jsonl",
        "holdfast.jsonl",
        "nats-server.log",
    ] {
        let _ = std::fs::remove_file(a.dir.join(f));
    }
    eprintln!(
        "soak: {} players, {} min of chaos, seed {}, logs in {}",
        a.players,
        a.minutes,
        a.seed,
        a.dir.display()
    );
    let names: Vec<String> = (1..=a.players).map(|i| format!("P{i:04}")).collect();
    let pass_of = |i: usize| format!("pw{i:04}x");
    let mut users = vec![
        "heartbeat:hbpass".to_string(),
        "Wiz:wizpw:wizard".to_string(),
    ];
    users.extend(
        names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n}:{}", pass_of(i))),
    );

    let alpha = Game::start(&a.fakemush, &a.dir, "alpha", users.clone())?;
    let beta = Game::start(&a.fakemush, &a.dir, "beta", users)?;
    let nats = Nats::start(&a.nats, &a.dir)?;
    let cfg = ConfigFile {
        path: a.dir.join("holdfast.toml"),
        order: [0, 1],
        queue_input: false,
        backends: vec![
            ("alpha".into(), alpha.addr.to_string()),
            ("beta".into(), beta.addr.to_string()),
        ],
        nats: nats.url(),
        failover_after: a.failover_after,
    };
    cfg.write()?;
    let mut proxy = Proxy::start(&a.holdfast, &a.dir, &cfg.path)?;
    let pid = proxy.pid;
    let log: proxylog::Shared = Arc::new(Mutex::new(proxylog::ProxyLog {
        active: "alpha".into(),
        ..Default::default()
    }));
    let follow_stop = Arc::new(AtomicBool::new(false));
    let follower = proxylog::follow(proxy.log.clone(), log.clone(), follow_stop.clone());
    let both_up = || {
        let l = log.lock().unwrap_or_else(|e| e.into_inner());
        l.is_up("alpha") && l.is_up("beta")
    };
    if !wait_until(Duration::from_secs(30), both_up) {
        return Err("the proxy never saw both games up".into());
    }
    std::thread::sleep(Duration::from_secs(2));
    let idle_before = stat(pid)?;

    // ----- players log in ------------------------------------------------
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let ctl = Arc::new(Control::default());
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Run);
    let mut handles = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let spec = player::Spec {
            name: name.clone(),
            pass: pass_of(i),
            proxy: proxy.addr,
            src: Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8),
            think_ms: a.think,
            answer_timeout: Duration::from_secs(30),
            seed: a.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        };
        handles.push(rt.spawn(player::run(spec, ctl.clone(), phase_rx.clone())));
        // Spread the logins a little: 200 a second.
        std::thread::sleep(Duration::from_millis(5));
    }
    let n = a.players;
    let all_in = wait_until(LOGIN_WAIT, || {
        ctl.logged_in.load(Ordering::Relaxed) + ctl.dropped.load(Ordering::Relaxed) >= n
    });
    let logged = ctl.logged_in.load(Ordering::Relaxed);
    eprintln!("soak: {logged}/{n} players logged in");
    if !all_in || logged < n {
        return Err(format!("only {logged} of {n} players logged in"));
    }
    std::thread::sleep(WARMUP);
    let start = stat(pid)?;
    eprintln!(
        "soak: baseline RSS {} KiB, {} fds, {} threads",
        start.rss_kib, start.fds, start.threads
    );

    // ----- chaos ---------------------------------------------------------
    let peaks = Arc::new(Mutex::new(Peaks::default()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peaks, sampling, ctl, log) =
            (peaks.clone(), sampling.clone(), ctl.clone(), log.clone());
        let t0 = Instant::now();
        std::thread::spawn(move || {
            let mut last_print = Instant::now();
            // Bounded by `sampling`, cleared before the join below.
            while sampling.load(Ordering::Relaxed) {
                if let Some(s) = proc_stat(pid) {
                    let mut p = peaks.lock().unwrap_or_else(|e| e.into_inner());
                    p.rss_kib = p.rss_kib.max(s.rss_kib).max(s.hwm_kib);
                    p.fds = p.fds.max(s.fds);
                    p.threads = p.threads.max(s.threads);
                    if last_print.elapsed() >= Duration::from_secs(10) {
                        last_print = Instant::now();
                        let l = log.lock().unwrap_or_else(|e| e.into_inner());
                        eprintln!(
                            "soak: t={:>4}s sent={} held={} dropped={} active={} rss={}KiB fds={} sessions={}",
                            t0.elapsed().as_secs(),
                            ctl.sent.load(Ordering::Relaxed),
                            ctl.held.load(Ordering::Relaxed),
                            ctl.dropped.load(Ordering::Relaxed),
                            l.active,
                            s.rss_kib,
                            s.fds,
                            l.sessions_open()
                        );
                    }
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let chaos_start = Instant::now();
    let deadline = chaos_start + Duration::from_secs_f64(a.minutes * 60.0);
    let nats_events = Arc::new(Mutex::new(Vec::new()));
    let nats_thread = {
        let ev = nats_events.clone();
        let seed = a.seed;
        std::thread::spawn(move || chaos::nats_chaos(nats, deadline, seed, ev))
    };
    let driver = Chaos {
        games: vec![alpha, beta],
        cfg,
        proxy_pid: pid,
        log: log.clone(),
        rng: rand::rngs::StdRng::seed_from_u64(a.seed),
        counts: Counts::default(),
        events: Vec::new(),
        kill_pace: a.kill_pace,
    };
    let chaos_thread = std::thread::spawn(move || driver.run(deadline, chaos_start));
    let driver = chaos_thread
        .join()
        .map_err(|_| "the chaos thread panicked")?;
    let (nats, nats_kills, nats_terms) = nats_thread
        .join()
        .map_err(|_| "the nats chaos thread panicked")?;
    let chaos_seconds = chaos_start.elapsed().as_secs_f64();
    eprintln!("soak: chaos over after {chaos_seconds:.0}s; checking every player");

    // ----- the end: everyone back, measurements --------------------------
    let _ = phase_tx.send(Phase::Finish);
    wait_until(FINISH_WAIT, || ctl.finished.load(Ordering::Relaxed) >= n);
    wait_until(Duration::from_secs(30), || {
        ctl.held.load(Ordering::Relaxed) == 0
    });
    std::thread::sleep(SETTLE);
    let fin = stat(pid)?;
    let _ = phase_tx.send(Phase::Leave);
    let reports: Vec<player::Report> = rt.block_on(async {
        let mut v = Vec::new();
        for h in handles {
            match tokio::time::timeout(Duration::from_secs(60), h).await {
                Ok(Ok(r)) => v.push(r),
                _ => eprintln!("soak: a player task did not finish"),
            }
        }
        v
    });
    let sessions_gone = wait_until(Duration::from_secs(20), || {
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .sessions_open()
            == 0
    });
    std::thread::sleep(Duration::from_secs(3));
    let idle_after = stat(pid)?;
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let proxy_exit = proxy.stop();
    std::thread::sleep(Duration::from_millis(300));
    follow_stop.store(true, Ordering::Relaxed);
    let _ = follower.join();
    drop(rt);
    let game_logs: Vec<(PathBuf, String)> = driver
        .games
        .iter()
        .map(|g| (g.log.clone(), g.name.clone()))
        .collect();
    let Chaos {
        games,
        counts,
        mut events,
        ..
    } = driver;
    drop(games);
    drop(nats);
    events.extend(
        nats_events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..),
    );

    // ----- accounting ----------------------------------------------------
    let mut logs = report::GameLogs::default();
    for (p, name) in &game_logs {
        logs.read(p, name)?;
    }
    let lines = report::classify(&reports, &logs, &events);
    let logged_in_at_end = report::logged_in_at_end(&reports, &logs);
    let drops =
        reports.iter().filter(|r| r.dropped.is_some()).count() as u64 + (n - reports.len()) as u64;
    let quit_closed = reports.iter().filter(|r| r.quit_ok).count() as u64;
    let mut seen = player::Seen::default();
    let mut anomalies = 0;
    for r in &reports {
        let s = &r.seen;
        seen.offline += s.offline;
        seen.online += s.online;
        seen.moving += s.moving;
        seen.held += s.held;
        seen.queued += s.queued;
        seen.queue_full += s.queue_full;
        seen.stale += s.stale;
        seen.relogin_failed += s.relogin_failed;
        seen.connect_screen += s.connect_screen;
        seen.game_shutdown += s.game_shutdown;
        seen.other_notice += s.other_notice;
        anomalies += u64::from(r.anomaly_count);
    }
    let proxy_log = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let peak = *peaks.lock().unwrap_or_else(|e| e.into_inner());

    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    check(drops == 0, format!("{drops} connection drops"));
    check(lines.lost == 0, format!("{} lines lost", lines.lost));
    check(
        lines.duplicate == 0,
        format!("{} duplicate lines", lines.duplicate),
    );
    check(
        lines.not_as_player == 0,
        format!("{} lines not logged as the player", lines.not_as_player),
    );
    check(
        lines.out_of_order == 0,
        format!("{} lines out of order", lines.out_of_order),
    );
    check(
        logged_in_at_end == n as u64,
        format!("{logged_in_at_end}/{n} logged in at the end"),
    );
    check(
        fin.fds == start.fds,
        format!("fds {} at start, {} at the end", start.fds, fin.fds),
    );
    check(
        idle_after.fds == idle_before.fds,
        format!(
            "fds with no players: {} before, {} after",
            idle_before.fds, idle_after.fds
        ),
    );
    // "Near its starting level": within a quarter (plus 16 MiB of slack for
    // allocator caches) of the baseline taken after the logins.
    let rss_limit = start.rss_kib + (start.rss_kib / 4).max(16 * 1024);
    check(
        fin.rss_kib <= rss_limit,
        format!(
            "RSS {} KiB at the end vs {} KiB at start",
            fin.rss_kib, start.rss_kib
        ),
    );
    check(
        sessions_gone,
        format!(
            "{} sessions left after every player quit",
            proxy_log.sessions_open()
        ),
    );
    check(
        proxy_exit == Some(0),
        format!("holdfast exited with {proxy_exit:?} on SIGTERM"),
    );
    check(
        quit_closed == n as u64,
        format!("{quit_closed}/{n} closed cleanly after QUIT"),
    );
    check(
        counts.problems.is_empty(),
        format!("driver problems: {:?}", counts.problems),
    );
    check(
        proxy_log.not_json.is_empty(),
        format!("non-JSON proxy output: {:?}", proxy_log.not_json),
    );
    let pass = failures.is_empty();

    let summary = Summary {
        pass,
        failures: failures.clone(),
        seed: a.seed,
        players: n,
        chaos_seconds,
        counts,
        nats_kills,
        nats_terms,
        proxy: proxy_log,
        lines,
        drops,
        logged_in_at_end,
        quit_closed,
        notices: seen,
        anomalies,
        idle_before,
        start,
        peak,
        fin,
        idle_after,
        sessions_open_after_quit: 0,
        proxy_exit,
        game_starts: logs.starts.clone(),
    };
    let mut summary = summary;
    summary.sessions_open_after_quit = summary.proxy.sessions_open();
    let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    std::fs::write(a.dir.join("summary.json"), json).map_err(|e| format!("summary.json: {e}"))?;
    let detail: Vec<&player::Report> = reports
        .iter()
        .filter(|r| r.anomaly_count > 0 || r.dropped.is_some())
        .collect();
    let detail = serde_json::to_string_pretty(&detail).map_err(|e| e.to_string())?;
    std::fs::write(a.dir.join("players-with-anomalies.json"), detail)
        .map_err(|e| format!("players json: {e}"))?;
    println!("{}", render(&summary));
    Ok(pass)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn render(s: &Summary) -> String {
    let c = &s.counts;
    let l = &s.lines;
    let p = &s.proxy;
    let f = |m: &std::collections::BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    let rows: Vec<(String, String)> =
        vec![
            (
                "players / chaos time".into(),
                format!("{} / {:.0} s (seed {})", s.players, s.chaos_seconds, s.seed),
            ),
            ("chaos episodes".into(), c.episodes.to_string()),
            (
                "backend kills (SIGKILL)".into(),
                format!(
            "{} (active {}, standby {}; {} during a re-login storm, {} past failover.after)",
            c.kills(), c.kills_active, c.kills_standby, c.kills_in_relogin, c.kills_past_failover),
            ),
            (
                "clean stops".into(),
                format!("SIGTERM {}, @shutdown {}", c.terms, c.game_shutdowns),
            ),
            (
                "freezes (SIGSTOP/SIGCONT)".into(),
                format!(
                    "{} (short {}, detected {}, past failover.after {})",
                    c.freezes_short + c.freezes_detected + c.freezes_past_failover,
                    c.freezes_short,
                    c.freezes_detected,
                    c.freezes_past_failover
                ),
            ),
            (
                "failovers (proxy log)".into(),
                format!(
                    "{} (automatic {}, SIGHUP {})",
                    p.failovers.values().sum::<u64>(),
                    f(&p.failovers, "automatic"),
                    f(&p.failovers, "sighup")
                ),
            ),
            (
                "reloads (SIGHUP)".into(),
                format!(
                    "{} ok, {} failed (queue_input toggles {}, reorders {})",
                    p.reloads_ok, p.reloads_failed, c.reloads_toggle, c.reloads_reorder
                ),
            ),
            (
                "nats-server kills / restarts".into(),
                format!(
                    "{} (SIGKILL {}, SIGTERM {})",
                    s.nats_kills + s.nats_terms,
                    s.nats_kills,
                    s.nats_terms
                ),
            ),
            (
                "holds / re-logins (proxy log)".into(),
                format!(
                    "{} / {} ({} re-logins failed)",
                    p.holds, p.relogins, p.relogins_failed
                ),
            ),
            (
                "notices seen by players".into(),
                format!(
                    "offline {}, online {}, moving {}, game shutdown {}",
                    s.notices.offline, s.notices.online, s.notices.moving, s.notices.game_shutdown
                ),
            ),
            ("lines sent".into(), l.sent.to_string()),
            ("  delivered (echoed)".into(), l.delivered.to_string()),
            (
                "  queued while held, delivered after".into(),
                l.queued_delivered.to_string(),
            ),
            (
                "  answered while held (not sent)".into(),
                l.answered_held.to_string(),
            ),
            ("  queue full (not kept)".into(), l.queue_full.to_string()),
            (
                "  in flight at a crash: delivered".into(),
                l.in_flight_delivered.to_string(),
            ),
            (
                "  in flight at a crash: died with the backend".into(),
                format!(
                    "{} ({})",
                    l.in_flight_lost_with_backend,
                    l.in_flight_lost_by
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            (
                "  timed out, delivered".into(),
                l.timed_out_delivered.to_string(),
            ),
            ("  queued, too old to send".into(), l.stale.to_string()),
            (
                "  late from a thawed host".into(),
                l.late_from_thawed_host.to_string(),
            ),
            ("lost lines".into(), l.lost.to_string()),
            ("duplicate lines".into(), l.duplicate.to_string()),
            ("out-of-order lines".into(), l.out_of_order.to_string()),
            (
                "lines not logged as the player".into(),
                l.not_as_player.to_string(),
            ),
            ("connection drops".into(), s.drops.to_string()),
            (
                "logged in at the end".into(),
                format!("{}/{}", s.logged_in_at_end, s.players),
            ),
            (
                "closed cleanly after QUIT".into(),
                format!("{}/{}", s.quit_closed, s.players),
            ),
            ("player anomalies".into(), s.anomalies.to_string()),
            (
                "RSS start / peak / final".into(),
                format!(
                    "{} / {} / {}",
                    mib(s.start.rss_kib),
                    mib(s.peak.rss_kib),
                    mib(s.fin.rss_kib)
                ),
            ),
            (
                "fds start / final (players on)".into(),
                format!("{} / {}", s.start.fds, s.fin.fds),
            ),
            (
                "fds idle before / after (no players)".into(),
                format!("{} / {}", s.idle_before.fds, s.idle_after.fds),
            ),
            (
                "RSS idle before / after".into(),
                format!(
                    "{} / {}",
                    mib(s.idle_before.rss_kib),
                    mib(s.idle_after.rss_kib)
                ),
            ),
            (
                "threads start / final".into(),
                format!("{} / {}", s.start.threads, s.fin.threads),
            ),
            (
                "sessions open after all quit".into(),
                s.sessions_open_after_quit.to_string(),
            ),
            (
                "holdfast exit on SIGTERM".into(),
                format!("{:?}", s.proxy_exit),
            ),
            (
                "result".into(),
                if s.pass {
                    "PASS".into()
                } else {
                    format!("FAIL: {}", s.failures.join("; "))
                },
            ),
        ];
    report::table(&rows)
}
