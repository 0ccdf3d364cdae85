//! holdfast-soak: the chaos soak (issue 8). Run it with `scripts/soak.sh`.
//!
//! Hundreds of simulated players log in through a real holdfast (by telnet
//! or WebSocket, some with MCCP2) and keep sending numbered lines
//! stop-and-wait (see `player.rs`) while a driver kills, freezes, stops
//! and restarts the two fakemush games behind it, forces failovers,
//! reloads the config, upgrades the proxy (some upgrades with a new
//! process that dies mid-handover) and kills nats-server (see
//! `chaos.rs`). At the end every player must still be connected and logged
//! in, every line must be accounted for from the games' own logs (see
//! `report.rs`), and the proxy's memory, fds and sessions must be back
//! where they started. Prints a summary table and writes `summary.json`.
//!
//! Layout: `procs.rs` (processes, /proc), `player.rs` (one player),
//! `link.rs` (its connection: telnet or WebSocket, MCCP2), `chaos.rs` (the
//! driver), `proxylog.rs` (follows holdfast's JSON log), `bus.rs` (events
//! and requests over NATS), `report.rs` (accounting), `summary.rs` (what
//! `summary.json` holds, and the table).

#![forbid(unsafe_code)]

mod bus;
mod chaos;
mod link;
mod player;
mod procs;
mod proxylog;
mod report;
mod summary;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;

use chaos::{Chaos, ConfigFile, Counts};
use link::Door;
use player::{Control, Phase};
use procs::{proc_stat, Game, Nats, ProcStat, Proxy};
use summary::{render, Peaks, Sample, Summary};

const USAGE: &str = "usage: holdfast-soak [--minutes M] [--players N] [--seed S] [--dir DIR]
       [--think-ms MIN-MAX] [--failover-after SECS] [--kill-pace PER_MIN]
       [--upgrade-pace PER_MIN] [--kill-new-pace PER_MIN] [--upgrade-batch N]
       [--link-drops PERCENT] [--ws PERCENT] [--mccp PERCENT] [--split PERCENT]
       [--holdfast BIN] [--fakemush BIN] [--nats-server BIN]";

/// The warm-up's players (door, MCCP2, split lines): one of each kind.
const WARM_KINDS: [(Door, bool, bool); 5] = [
    (Door::Telnet, false, false),
    (Door::Telnet, true, true),
    (Door::WsTelnet, true, false),
    (Door::WsTerminal, false, false),
    (Door::WsText, false, false),
];

/// The warm-up's `i`-th user and password.
fn warm_user(i: usize) -> (String, String) {
    (format!("W{i:03}"), format!("warm{i:03}x"))
}

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
    /// Upgrades (SIGUSR2) per minute the driver keeps up at least.
    upgrade_pace: f64,
    /// Upgrades per minute whose new process dies mid-handover.
    kill_new_pace: f64,
    /// Sessions per upgrade batch (`HOLDFAST_UPGRADE_BATCH`); 0: players / 6.
    upgrade_batch: usize,
    /// Share of players who drop their own link now and then and resume.
    link_drops: f64,
    /// Share of players who come in by WebSocket (spread over its three
    /// framings).
    ws: f64,
    /// Share of the telnet-speaking players (telnet, WebSocket telnet) who
    /// take MCCP2.
    mccp: f64,
    /// Share of the telnet-speaking players who type lines in two pieces.
    split: f64,
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
        upgrade_pace: 1.5,
        kill_new_pace: 0.5,
        upgrade_batch: 0,
        link_drops: 15.0,
        ws: 30.0,
        mccp: 25.0,
        split: 20.0,
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
            "--upgrade-pace" => a.upgrade_pace = v.parse().map_err(|e| bad(&e))?,
            "--kill-new-pace" => a.kill_new_pace = v.parse().map_err(|e| bad(&e))?,
            "--upgrade-batch" => a.upgrade_batch = v.parse().map_err(|e| bad(&e))?,
            "--link-drops" => a.link_drops = v.parse().map_err(|e| bad(&e))?,
            "--ws" => a.ws = v.parse().map_err(|e| bad(&e))?,
            "--mccp" => a.mccp = v.parse().map_err(|e| bad(&e))?,
            "--split" => a.split = v.parse().map_err(|e| bad(&e))?,
            "--holdfast" => a.holdfast = v.into(),
            "--fakemush" => a.fakemush = v.into(),
            "--nats-server" => a.nats = v.into(),
            _ => return Err(format!("unknown argument {k:?}\n{USAGE}")),
        }
    }
    if a.players == 0 || a.players > 60_000 || a.minutes <= 0.0 {
        return Err(format!("bad --players or --minutes\n{USAGE}"));
    }
    if a.upgrade_batch == 0 {
        a.upgrade_batch = a.players.div_ceil(6).clamp(1, 200);
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

/// Whether the `i`-th of many gets a share of `pct` percent, spread evenly.
fn share(i: usize, pct: f64) -> bool {
    pct > 0.0 && (i as f64 * pct / 100.0).floor() != ((i + 1) as f64 * pct / 100.0).floor()
}

/// A fixed shuffle of `0..n` (a different one for each `salt`): the rank
/// of each index. Shares taken with [`share`] on ranks fall on unrelated
/// players.
fn shuffle(n: usize, salt: u64) -> Vec<usize> {
    // splitmix64: a good enough hash of (index, salt).
    let hash = |i: usize| {
        let mut z = (i as u64 ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| hash(i));
    let mut rank = vec![0; n];
    for (r, i) in order.into_iter().enumerate() {
        rank[i] = r;
    }
    rank
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

/// One player of each kind ([`WARM_KINDS`]) logs in, types lines for two
/// seconds, proves it is logged in and QUITs; then, 3 s after the last
/// session closed, the proxy's figures: the "warm" idle baseline. Their
/// lines are in the games' logs under their own names, which no check
/// reads.
fn warm_up(
    rt: &tokio::runtime::Runtime,
    proxy: &Proxy,
    log: &proxylog::Shared,
    a: &Args,
) -> Result<ProcStat, String> {
    let ctl = Arc::new(Control::default());
    let (tx, rx) = tokio::sync::watch::channel(Phase::Run);
    let mut handles = Vec::new();
    for (i, &(door, mccp, split)) in WARM_KINDS.iter().enumerate() {
        let (name, pass) = warm_user(i);
        let spec = player::Spec {
            name,
            pass,
            proxy: proxy.door(door)?,
            door,
            mccp,
            split,
            src: Ipv4Addr::new(127, 2, 0, i as u8 + 1),
            think_ms: a.think,
            answer_timeout: Duration::from_secs(30),
            seed: a.seed ^ 0x5741_524d,
            drop_every: None,
        };
        handles.push(rt.spawn(player::run(spec, ctl.clone(), rx.clone())));
    }
    let n = WARM_KINDS.len();
    wait_until(Duration::from_secs(30), || {
        ctl.logged_in.load(Ordering::Relaxed) + ctl.dropped.load(Ordering::Relaxed) >= n
    });
    std::thread::sleep(Duration::from_secs(2));
    let _ = tx.send(Phase::Finish);
    wait_until(Duration::from_secs(30), || {
        ctl.finished.load(Ordering::Relaxed) >= n
    });
    let _ = tx.send(Phase::Leave);
    let reports: Vec<player::Report> = rt.block_on(async {
        let mut v = Vec::new();
        for h in handles {
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(30), h).await {
                v.push(r);
            }
        }
        v
    });
    if let Some(r) = reports.iter().find(|r| r.dropped.is_some() || !r.quit_ok) {
        return Err(format!(
            "warm-up player {} did not come and go cleanly: {:?}",
            r.name, r.dropped
        ));
    }
    if reports.len() < n {
        return Err("a warm-up player did not finish".into());
    }
    let gone = wait_until(Duration::from_secs(20), || {
        log.lock()
            .unwrap_or_else(|e| e.into_inner())
            .sessions_open()
            == 0
    });
    if !gone {
        return Err("the warm-up's sessions did not close".into());
    }
    std::thread::sleep(Duration::from_secs(3));
    let warm = stat(proxy.pid());
    keep_smaps(proxy.pid(), &a.dir, "idle-warm");
    warm
}

fn stat(pid: u32) -> Result<ProcStat, String> {
    proc_stat(pid).ok_or_else(|| "holdfast is gone (no /proc entry)".to_string())
}

/// Keeps the proxy's memory map (`/proc/PID/smaps`, RSS by mapping) and
/// its threads' names as `smaps-<label>.txt` in the soak's directory, to
/// tell afterwards what an idle reading was made of.
fn keep_smaps(pid: u32, dir: &std::path::Path, label: &str) {
    let mut text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            text.push_str(&format!(
                "thread {} {}",
                t.file_name().to_string_lossy(),
                comm
            ));
        }
    }
    let _ = std::fs::write(dir.join(format!("smaps-{label}.txt")), text);
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
    users.extend(WARM_KINDS.iter().enumerate().map(|(i, _)| {
        let (n, p) = warm_user(i);
        format!("{n}:{p}")
    }));

    // Who comes in how: spread evenly over the players, and over each
    // other (so some WebSocket players drop their links, some MCCP2 players
    // type in pieces, ...).
    let mut doors: Vec<(Door, bool, bool)> = (0..a.players)
        .map(|_| (Door::Telnet, false, false))
        .collect();
    let rank = shuffle(a.players, 1);
    let mut ws_k = 0;
    for (d, &r) in doors.iter_mut().zip(&rank) {
        if share(r, a.ws) {
            d.0 = Door::WS[ws_k % Door::WS.len()];
            ws_k += 1;
        }
    }
    let tel: Vec<usize> = (0..a.players).filter(|&i| doors[i].0.telnet()).collect();
    let (mccp_rank, split_rank) = (shuffle(tel.len(), 2), shuffle(tel.len(), 3));
    for (k, &i) in tel.iter().enumerate() {
        doors[i].1 = share(mccp_rank[k], a.mccp);
        doors[i].2 = share(split_rank[k], a.split);
    }
    let batches_min = a.players.div_ceil(a.upgrade_batch);
    if batches_min < 3 && a.kill_new_pace > 0.0 {
        eprintln!(
            "soak: {} players in batches of {} make {batches_min} batches: too few to kill a new process between two; no such episodes",
            a.players, a.upgrade_batch
        );
    }

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
        ws: doors.iter().any(|d| d.0.ws()),
    };
    cfg.write()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    // Subscribed before the proxy starts, so it sees every event from #1.
    let bus = rt.block_on(bus::Bus::start(&nats.url()))?;
    let mut proxy = Proxy::start(&a.holdfast, &a.dir, &cfg.path, a.upgrade_batch)?;
    let up = proxy.upgrader();
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
    let idle_before = stat(proxy.pid())?;
    keep_smaps(proxy.pid(), &a.dir, "idle-before");
    // One player of each kind comes, types, and goes: "before" again, now
    // with the code a session runs read in (file-backed pages a process
    // that has never had a player does not count).
    let idle_warm = warm_up(&rt, &proxy, &log, &a)?;

    // ----- players log in ------------------------------------------------
    let ctl = Arc::new(Control::default());
    let (phase_tx, phase_rx) = tokio::sync::watch::channel(Phase::Run);
    let mut handles = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (door, mccp, split) = doors[i];
        let spec = player::Spec {
            name: name.clone(),
            pass: pass_of(i),
            proxy: proxy.door(door)?,
            door,
            mccp,
            split,
            src: Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8),
            think_ms: a.think,
            answer_timeout: Duration::from_secs(30),
            seed: a.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            // Spread evenly: every k-th player drops its link every 20 to
            // 60 seconds and comes back within a few.
            drop_every: (a.link_drops > 0.0
                && (i as f64 * a.link_drops / 100.0).floor()
                    != ((i + 1) as f64 * a.link_drops / 100.0).floor())
            .then_some((20, 60)),
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
    let start = stat(proxy.pid())?;
    let status_start = status(&rt, &bus);
    eprintln!(
        "soak: baseline RSS {} KiB, {} fds, {} threads",
        start.rss_kib, start.fds, start.threads
    );

    // ----- chaos ---------------------------------------------------------
    let peaks = Arc::new(Mutex::new(Peaks::default()));
    let timeline = Arc::new(Mutex::new(Vec::new()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peaks, sampling, ctl, log, timeline, up) = (
            peaks.clone(),
            sampling.clone(),
            ctl.clone(),
            log.clone(),
            timeline.clone(),
            up.clone(),
        );
        let t0 = Instant::now();
        std::thread::spawn(move || {
            let mut last_print = Instant::now();
            // Bounded by `sampling`, cleared before the join below.
            while sampling.load(Ordering::Relaxed) {
                if let Some(s) = proc_stat(up.pid()) {
                    let mut p = peaks.lock().unwrap_or_else(|e| e.into_inner());
                    p.rss_kib = p.rss_kib.max(s.rss_kib).max(s.hwm_kib);
                    p.fds = p.fds.max(s.fds);
                    p.threads = p.threads.max(s.threads);
                    if last_print.elapsed() >= Duration::from_secs(10) {
                        last_print = Instant::now();
                        let l = log.lock().unwrap_or_else(|e| e.into_inner());
                        timeline
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Sample {
                                t_s: t0.elapsed().as_secs(),
                                rss_kib: s.rss_kib,
                                fds: s.fds,
                                sessions: l.sessions_open(),
                                held: ctl.held.load(Ordering::Relaxed) as u64,
                            });
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
        bus: bus.clone(),
        cfg,
        proxy: up.clone(),
        upgrade_pace: a.upgrade_pace,
        log: log.clone(),
        rng: rand::rngs::StdRng::seed_from_u64(a.seed),
        counts: Counts::default(),
        events: Vec::new(),
        kill_pace: a.kill_pace,
        kill_new_pace: a.kill_new_pace,
        kill_new_tried: 0,
        batches_min,
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
    let fin = stat(proxy.pid())?;
    let status_fin = status(&rt, &bus);
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
    let idle_after = stat(proxy.pid())?;
    keep_smaps(proxy.pid(), &a.dir, "idle-after");
    let status_idle = status(&rt, &bus);
    // Events still on their way to the subscriber.
    std::thread::sleep(Duration::from_secs(1));
    let bus_seen = bus.seen();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.join();
    let proxy_exit = proxy.stop();
    std::thread::sleep(Duration::from_millis(300));
    follow_stop.store(true, Ordering::Relaxed);
    let _ = follower.join();
    drop(bus);
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
    // At least one a minute (whole minutes of chaos), one of them in a
    // re-login storm once there were two.
    let want_upgrades = (chaos_seconds / 60.0).floor() as u64;
    check(
        counts.upgrades >= want_upgrades
            && (counts.upgrades < 2 || counts.upgrades_in_relogin >= 1),
        format!(
            "{} upgrades ({} in a re-login storm) in {chaos_seconds:.0} s",
            counts.upgrades, counts.upgrades_in_relogin
        ),
    );
    check(
        counts.problems.is_empty(),
        format!("driver problems: {:?}", counts.problems),
    );
    check(
        proxy_log.not_json.is_empty(),
        format!("non-JSON proxy output: {:?}", proxy_log.not_json),
    );
    let sessions = |v: &serde_json::Value, k: &str| v["sessions"][k].as_u64();
    check(
        sessions(&status_start, "total") == Some(n as u64)
            && sessions(&status_fin, "total") == Some(n as u64)
            && sessions(&status_fin, "logged_in") == Some(n as u64)
            && sessions(&status_fin, "held") == Some(0)
            && sessions(&status_idle, "total") == Some(0),
        format!(
            "bus status sessions: start {}, end {}, after quit {}",
            status_start["sessions"], status_fin["sessions"], status_idle["sessions"]
        ),
    );
    let dropped = |k: &str| status_idle["events"][k].as_u64();
    check(
        dropped("dropped_channel") == Some(0) && dropped("dropped_overflow") == Some(0),
        format!("events dropped by the proxy: {}", status_idle["events"]),
    );
    let mut announce_missing = 0u64;
    let mut announce_repeated = 0u64;
    for r in &reports {
        for k in &counts.announced {
            match r.announces.iter().filter(|x| *x == k).count() {
                0 => announce_missing += 1,
                1 => {}
                _ => announce_repeated += 1,
            }
        }
        let mut all = r.announces.clone();
        all.sort_unstable();
        let before = all.len();
        all.dedup();
        announce_repeated += (before - all.len()) as u64;
    }
    let link_drop_players = reports.iter().filter(|r| r.link_drops > 0).count();
    let link_drops: u64 = reports.iter().map(|r| u64::from(r.link_drops)).sum();
    let resumed: u64 = reports.iter().map(|r| u64::from(r.resumed)).sum();
    let playback_dropped: u64 = reports.iter().map(|r| u64::from(r.playback_dropped)).sum();
    check(
        resumed == link_drops,
        format!("link drops: {link_drops}, resumed: {resumed}"),
    );
    check(
        announce_missing == 0 && announce_repeated == 0,
        format!("announcements: {announce_missing} missed, {announce_repeated} repeated"),
    );
    // WebSocket and MCCP2 players, accounted for apart (they are in the
    // totals above too).
    let of = |f: &dyn Fn(&player::Report) -> bool| -> Vec<player::Report> {
        reports.iter().filter(|r| f(r)).cloned().collect()
    };
    let ws_reports = of(&|r| r.door.ws());
    let ws_lines = report::classify(&ws_reports, &logs, &events);
    let mccp_reports = of(&|r| r.mccp);
    let mccp_lines = report::classify(&mccp_reports, &logs, &events);
    // The lines typed while a new process was dying: each player's lines
    // sent between a SIGUSR2 that was to fail and the old process's
    // "carrying on" (in the totals above too).
    let windows: Vec<(u64, u64)> = events
        .iter()
        .filter(|e| e.kind == "upgrade-kill-new")
        .map(|e| (e.start_us, e.end_us))
        .collect();
    let in_windows: Vec<player::Report> = reports
        .iter()
        .map(|r| {
            let mut r = r.clone();
            r.lines.retain(|l| {
                windows
                    .iter()
                    .any(|&(a, b)| a <= l.sent_us && l.sent_us <= b)
            });
            r
        })
        .collect();
    let kill_new_lines = report::classify(&in_windows, &logs, &events);
    let mut door_counts = std::collections::BTreeMap::new();
    for r in &reports {
        *door_counts.entry(r.door.name().to_string()).or_insert(0) += 1;
    }
    let mccp_streams: u64 = mccp_reports.iter().map(|r| u64::from(r.mccp_streams)).sum();
    let mccp_ends: u64 = mccp_reports.iter().map(|r| u64::from(r.mccp_ends)).sum();
    let mccp_errors = reports.iter().filter(|r| r.mccp_error.is_some()).count() as u64;
    let mccp_never = mccp_reports.iter().filter(|r| r.mccp_streams == 0).count();
    check(
        mccp_errors == 0,
        format!("{mccp_errors} players' MCCP2 stream broken"),
    );
    check(
        mccp_never == 0,
        format!("{mccp_never} MCCP2 players never got a compressed stream"),
    );
    let ws_seen: u64 = proxy_log.ws_sessions.values().sum();
    check(
        ws_seen >= ws_reports.len() as u64,
        format!(
            "{} WebSocket players, {ws_seen} WebSocket sessions in the proxy log",
            ws_reports.len()
        ),
    );
    for (what, l) in [
        ("WebSocket", &ws_lines),
        ("MCCP2", &mccp_lines),
        ("kill-new-process window", &kill_new_lines),
    ] {
        check(
            l.lost == 0 && l.duplicate == 0 && l.out_of_order == 0 && l.not_as_player == 0,
            format!(
                "{what} players' lines: {} lost, {} duplicate, {} out of order, {} not as the player",
                l.lost, l.duplicate, l.out_of_order, l.not_as_player
            ),
        );
    }
    // Upgrades whose new process died mid-handover: as many as the pace
    // asks for (whole episodes), and the proxy's own log agrees on every
    // upgrade, the ones that went through and the ones that failed.
    let want_kill_new = if batches_min >= 3 {
        (chaos_seconds / 60.0 * a.kill_new_pace).floor() as usize
    } else {
        0
    };
    check(
        counts.kill_new.len() >= want_kill_new,
        format!(
            "{} upgrades with the new process killed mid-handover, {want_kill_new} wanted",
            counts.kill_new.len()
        ),
    );
    check(
        proxy_log.upgrades_failed == counts.kill_new.len() as u64
            && proxy_log.upgrades_ok == counts.upgrades,
        format!(
            "the proxy logged {} upgrades handed over and {} failed; the driver made {} and killed {}",
            proxy_log.upgrades_ok,
            proxy_log.upgrades_failed,
            counts.upgrades,
            counts.kill_new.len()
        ),
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
        idle_warm,
        start,
        peak,
        fin,
        idle_after,
        sessions_open_after_quit: 0,
        proxy_exit,
        game_starts: logs.starts.clone(),
        bus_missed: bus_seen.missed(),
        bus_seen,
        status_start,
        status_end: status_fin,
        status_after_quit: status_idle,
        announce_missing,
        announce_repeated,
        link_drop_players,
        link_drops,
        resumed,
        playback_dropped,
        connect_retries: reports.iter().map(|r| u64::from(r.connect_retries)).sum(),
        upgrade_batch: a.upgrade_batch,
        upgrade_batches_min: batches_min,
        doors: door_counts,
        ws_players: ws_reports.len(),
        ws_lines,
        mccp_players: mccp_reports.len(),
        mccp_streams,
        mccp_ends,
        mccp_errors,
        mccp_lines,
        split_players: reports.iter().filter(|r| r.split).count(),
        kill_new_lines,
        timeline: timeline.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    };
    let mut summary = summary;
    summary.sessions_open_after_quit = summary.proxy.sessions_open();
    let json = serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?;
    std::fs::write(a.dir.join("summary.json"), json).map_err(|e| format!("summary.json: {e}"))?;
    // The raw evidence: every player's report with all its lines (one
    // JSON object per player per line of the file) and every act of the
    // driver.
    let mut raw = String::new();
    for r in &reports {
        raw.push_str(&serde_json::to_string(r).map_err(|e| e.to_string())?);
        raw.push('\n');
    }
    std::fs::write(a.dir.join("players.jsonl"), raw).map_err(|e| format!("players: {e}"))?;
    let acts = serde_json::to_string_pretty(&events).map_err(|e| e.to_string())?;
    std::fs::write(a.dir.join("chaos.json"), acts).map_err(|e| format!("chaos.json: {e}"))?;
    println!("{}", render(&summary));
    Ok(pass)
}

/// The proxy's `status` over the bus (Null if it does not answer, which
/// fails the checks that read it).
fn status(rt: &tokio::runtime::Runtime, bus: &bus::Bus) -> serde_json::Value {
    // NATS may be reconnecting right after the chaos: try for a while.
    for _ in 0..20 {
        match rt.block_on(bus.request("status", serde_json::json!({}))) {
            Ok(v) => return v,
            Err(e) => eprintln!("soak: status request: {e}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    serde_json::Value::Null
}
