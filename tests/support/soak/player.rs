//! One simulated player.
//!
//! It connects through holdfast from its own 127.x.y.z address, logs in,
//! then sends numbered lines `echo S:<name>:<n>` stop-and-wait: the next
//! line goes out only once the previous one is *resolved*, by
//!
//! - its echo `S:<name>:<n>` from the game (delivered),
//! - holdfast's held-input notice (answered while held, not sent),
//! - holdfast's queued notice (queued; its echo must come after re-login),
//! - holdfast's queue-full notice (answered, not kept),
//! - an offline or failover notice followed by nothing for [`GRACE`] (in
//!   flight when the backend went away: the backend logs tell whether it
//!   got there; if holdfast read the line only after the notice, its
//!   held/queued answer comes within the grace and counts instead), or
//! - a timeout (suspicious; the logs decide).
//!
//! So at most one line per player is ever in flight, and the backend logs
//! say exactly what happened to each. A connection that closes before the
//! soak tells the player to leave is a drop.
//!
//! A player comes in by telnet or by WebSocket (on one of its three
//! framings), may take MCCP2 (its zlib stream must decode throughout), and
//! may type each line in two pieces a moment apart (holdfast holds the
//! partial line meanwhile, across an upgrade too); see `link.rs`.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use crate::link::{Decoder, Door, Link};
use crate::procs::now_us;

/// How long the first login may take (the proxy and game are up then).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the final check (logged in again, line echoed) may take.
const FINAL_TIMEOUT: Duration = Duration::from_secs(240);
/// How long a player waits for holdfast to close after QUIT.
const QUIT_TIMEOUT: Duration = Duration::from_secs(15);
/// After an offline or failover notice, how long an outstanding line may
/// still get its own answer (holdfast read it after it wrote the notice).
pub const GRACE: Duration = Duration::from_secs(5);
/// After the online notice, how long a line queued during the re-login
/// may take to be echoed before the grace ends.
const ONLINE_GRACE: Duration = Duration::from_secs(2);
/// How many times a WebSocket player tries to connect again in a row.
const CONNECT_TRIES: u32 = 5;
/// Anomalies kept per player (the count is kept beyond that).
const ANOMALIES_KEPT: usize = 20;

/// What the soak tells every player.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Keep sending numbered lines.
    Run,
    /// Stop sending; prove you are logged in (`echo F:...` answered).
    Finish,
    /// QUIT and expect holdfast to close the connection.
    Leave,
}

/// Counters every player updates, for progress and the end checks.
#[derive(Default)]
pub struct Control {
    /// Players past their first login.
    pub logged_in: AtomicUsize,
    /// Players currently held (offline/failover notice seen, online not yet).
    pub held: AtomicUsize,
    /// Players whose final check passed.
    pub final_ok: AtomicUsize,
    /// Players done with the final check, passed or not.
    pub finished: AtomicUsize,
    /// Connections that closed under a player.
    pub dropped: AtomicUsize,
    /// Numbered lines sent, all players.
    pub sent: AtomicU64,
    /// Link drops (the player's own connection ended without QUIT).
    pub link_drops: AtomicU64,
    /// Of those, the ones resumed (holdfast's resumed notice came).
    pub resumed: AtomicU64,
}

/// How the player saw a numbered line resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Not resolved yet (only at the very end, after a drop).
    Pending,
    /// Echoed by the game.
    Echoed,
    /// Answered with the held-input notice: not sent.
    Held,
    /// Answered with the queued notice: to be sent after re-login.
    Queued,
    /// Answered with the queue-full notice: not kept.
    QueueFull,
    /// The offline notice came while it was outstanding.
    InFlightOffline,
    /// Queued, sent after the re-login (the online notice came), and the
    /// backend went away again before its echo: in flight at that crash.
    QueuedInFlight,
    /// The failover notice came while it was outstanding.
    InFlightMoving,
    /// Nothing answered it in time.
    TimedOut,
}

/// One numbered line.
#[derive(Debug, Clone, Serialize)]
pub struct LineRec {
    /// Its number (from 1).
    pub n: u32,
    /// When it was written, Unix µs.
    pub sent_us: u64,
    /// When it was resolved, Unix µs.
    pub resolved_us: u64,
    /// How.
    pub outcome: Outcome,
    /// Echoes seen for it, at any time.
    pub echoes: u32,
}

/// Notices the player saw, by kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Seen {
    pub offline: u32,
    pub online: u32,
    pub moving: u32,
    pub held: u32,
    pub queued: u32,
    pub queue_full: u32,
    pub stale: u32,
    pub relogin_failed: u32,
    pub connect_screen: u32,
    pub game_shutdown: u32,
    pub other_notice: u32,
}

/// Everything one player reports at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub name: String,
    pub lines: Vec<LineRec>,
    pub seen: Seen,
    /// Why the connection ended before `Leave`, if it did.
    pub dropped: Option<String>,
    /// The final check passed (logged in, a line echoed by the game).
    pub final_ok: bool,
    /// The final line's number (`F:<name>:<k>`) that was echoed.
    pub final_n: Option<u32>,
    /// Holdfast closed the connection after QUIT.
    pub quit_ok: bool,
    /// Bus announcements received (their numbers, in order).
    pub announces: Vec<u32>,
    pub anomalies: Vec<String>,
    pub anomaly_count: u32,
    /// Times this player dropped its own link and came back.
    pub link_drops: u32,
    /// Times holdfast resumed its session after that.
    pub resumed: u32,
    /// Playback lines holdfast said it could not keep.
    pub playback_dropped: u32,
    /// The door it came in by.
    pub door: Door,
    /// It takes MCCP2.
    pub mccp: bool,
    /// MCCP2 streams started / ended cleanly (all its connections).
    pub mccp_streams: u32,
    pub mccp_ends: u32,
    /// Why its MCCP2 stream could not be decoded, if that happened.
    pub mccp_error: Option<String>,
    /// It types its lines in two pieces.
    pub split: bool,
    /// WebSocket handshakes closed under it (an upgrade began) and tried
    /// again.
    pub connect_retries: u32,
}

/// Who this player is and how it behaves.
#[derive(Clone)]
pub struct Spec {
    pub name: String,
    pub pass: String,
    /// Where it connects (the door's address).
    pub proxy: SocketAddr,
    pub door: Door,
    /// Takes MCCP2 when offered (telnet doors only).
    pub mccp: bool,
    /// Types each numbered line in two pieces, 10 to 80 ms apart.
    pub split: bool,
    pub src: Ipv4Addr,
    /// Pause between a line's answer and the next line, ms (min, max).
    pub think_ms: (u64, u64),
    /// How long an outstanding line may wait for an answer.
    pub answer_timeout: Duration,
    pub seed: u64,
    /// Drop the link every (min, max) seconds and come back, if set.
    pub drop_every: Option<(u64, u64)>,
}

/// What a line from holdfast means to this player.
#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Echo(u32),
    Final(u32),
    Offline,
    Online,
    Moving,
    Held,
    Queued,
    QueueFull,
    Stale(u32),
    ReloginFailed,
    ConnectScreen,
    LastConnect,
    GameShutdown,
    Announce(u32),
    Resumed,
    PlaybackDropped(u32),
    Connecting,
    OtherNotice,
    Other,
}

fn classify(line: &str, name: &str) -> Ev {
    let num = |tag: &str| {
        line.strip_prefix(tag)
            .and_then(|r| r.strip_prefix(name))
            .and_then(|r| r.strip_prefix(':'))
            .and_then(|r| r.parse::<u32>().ok())
    };
    if let Some(n) = num("S:") {
        return Ev::Echo(n);
    }
    if let Some(n) = num("F:") {
        return Ev::Final(n);
    }
    if line.contains("Last connect was from") {
        return Ev::LastConnect;
    }
    if line.contains("Use \"connect <name> <password>\" to connect.") {
        return Ev::ConnectScreen;
    }
    if line.starts_with("GAME: Shutdown by") {
        return Ev::GameShutdown;
    }
    if let Some(k) = line.strip_prefix("[soak] announcement ") {
        if let Ok(k) = k.parse() {
            return Ev::Announce(k);
        }
    }
    let Some(rest) = line.trim_start().strip_prefix("[holdfast] ") else {
        return Ev::Other;
    };
    if rest.contains("is down. Your connection is being held") {
        Ev::Offline
    } else if rest.contains("You have been logged back in.") {
        Ev::Online
    } else if rest.starts_with("Moving you to ") {
        Ev::Moving
    } else if rest.contains("that was not sent") {
        Ev::Held
    } else if rest.contains("queued, it will be sent") {
        Ev::Queued
    } else if rest.contains("Too many lines waiting; that one was not kept") {
        Ev::QueueFull
    } else if rest.contains("queued line(s) were too old") {
        Ev::Stale(
            rest.split_whitespace()
                .next()
                .and_then(|w| w.parse().ok())
                .unwrap_or(1),
        )
    } else if rest.contains("logging you back in failed") {
        Ev::ReloginFailed
    } else if rest.contains("Your session was kept while you were away") {
        Ev::Resumed
    } else if rest.contains("older line(s) did not fit") {
        Ev::PlaybackDropped(
            rest.split_whitespace()
                .next()
                .and_then(|w| w.parse().ok())
                .unwrap_or(1),
        )
    } else if rest.contains("is down right now")
        || rest.contains("your login will be checked when it is back")
    {
        // A resume during an outage waits for the game's own check.
        Ev::Connecting
    } else {
        Ev::OtherNotice
    }
}

struct Player {
    spec: Spec,
    ctl: Arc<Control>,
    link: Link,
    dec: Decoder,
    rep: Report,
    /// Index into `rep.lines` of the outstanding numbered line.
    outstanding: Option<usize>,
    /// The outstanding final line and when it was sent.
    final_out: Option<(u32, Instant)>,
    final_k: u32,
    /// An offline/failover notice came while a line was outstanding: if
    /// nothing answers it by then, it was in flight (with this outcome).
    grace: Option<(Instant, Outcome)>,
    held: bool,
    /// Lines answered "queued" and not echoed yet.
    queued_wait: Vec<usize>,
    /// Of those, the ones holdfast has sent since (an online notice came).
    flushed: Vec<usize>,
    /// A re-login failed: log in by hand before sending more.
    need_login: bool,
    /// Counted in `Control::finished` already.
    finish_counted: bool,
    next_send: Instant,
    /// When to drop the link next (players with `drop_every`).
    next_drop: Option<Instant>,
    rng: rand::rngs::StdRng,
}

/// Runs one player until told to leave; returns its report.
pub async fn run(spec: Spec, ctl: Arc<Control>, mut phase: watch::Receiver<Phase>) -> Report {
    let mut rep = Report {
        name: spec.name.clone(),
        lines: Vec::new(),
        seen: Seen::default(),
        dropped: None,
        final_ok: false,
        final_n: None,
        quit_ok: false,
        announces: Vec::new(),
        anomalies: Vec::new(),
        anomaly_count: 0,
        link_drops: 0,
        resumed: 0,
        playback_dropped: 0,
        door: spec.door,
        mccp: spec.mccp,
        mccp_streams: 0,
        mccp_ends: 0,
        mccp_error: None,
        split: spec.split,
        connect_retries: 0,
    };
    let link = Link::connect(spec.door, spec.src, spec.proxy);
    let link = match tokio::time::timeout(LOGIN_TIMEOUT, link).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            rep.dropped = Some(e);
            ctl.dropped.fetch_add(1, Ordering::Relaxed);
            return rep;
        }
        Err(_) => {
            rep.dropped = Some("connect timed out".into());
            ctl.dropped.fetch_add(1, Ordering::Relaxed);
            return rep;
        }
    };
    let rng = rand::rngs::StdRng::seed_from_u64(spec.seed);
    let dec = Decoder::new(spec.mccp);
    let mut p = Player {
        spec,
        ctl: ctl.clone(),
        link,
        dec,
        rep,
        outstanding: None,
        final_out: None,
        final_k: 0,
        grace: None,
        queued_wait: Vec::new(),
        flushed: Vec::new(),
        held: false,
        need_login: false,
        finish_counted: false,
        next_send: Instant::now(),
        next_drop: None,
        rng,
    };
    p.schedule_drop();
    let r = match p.login().await {
        Ok(()) => {
            ctl.logged_in.fetch_add(1, Ordering::Relaxed);
            p.main(&mut phase).await
        }
        Err(e) => Err(e),
    };
    if let Err(e) = r {
        p.rep.dropped = Some(e);
        ctl.dropped.fetch_add(1, Ordering::Relaxed);
        if p.held {
            ctl.held.fetch_sub(1, Ordering::Relaxed);
        }
    }
    if !p.finish_counted {
        ctl.finished.fetch_add(1, Ordering::Relaxed);
    }
    p.count_mccp();
    p.rep
}

impl Player {
    fn anomaly(&mut self, what: String) {
        self.rep.anomaly_count += 1;
        if self.rep.anomalies.len() < ANOMALIES_KEPT {
            self.rep.anomalies.push(what);
        }
    }

    async fn write(&mut self, data: &[u8]) -> Result<(), String> {
        match tokio::time::timeout(Duration::from_secs(60), self.link.write(data)).await {
            Ok(r) => r,
            Err(_) => Err("write timed out (holdfast stopped reading)".into()),
        }
    }

    async fn send(&mut self, line: &str) -> Result<(), String> {
        self.write(format!("{line}\r\n").as_bytes()).await
    }

    /// A numbered line: in one piece, or (a splitting player on a telnet
    /// door) in two, 10 to 80 ms apart, cut at a random point.
    async fn send_numbered(&mut self, line: &str) -> Result<(), String> {
        if !(self.spec.split && self.spec.door.telnet()) {
            return self.send(line).await;
        }
        let cut = self.rng.random_range(1..line.len());
        let pause = Duration::from_millis(self.rng.random_range(10..=80));
        self.write(&line.as_bytes()[..cut]).await?;
        tokio::time::sleep(pause).await;
        self.write(format!("{}\r\n", &line[cut..]).as_bytes()).await
    }

    /// Writes the telnet answers the decoder has queued.
    async fn flush_replies(&mut self) -> Result<(), String> {
        if self.dec.replies.is_empty() {
            return Ok(());
        }
        let r = std::mem::take(&mut self.dec.replies);
        self.write(&r).await
    }

    /// The next line from holdfast, or None when telnet answers wait to be
    /// written (the caller writes them and asks again). Cancel-safe: the
    /// only await is one read of the link, which loses nothing when
    /// dropped; what it read is decoded before the next await.
    async fn next(&mut self) -> Result<Option<String>, String> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if let Some(l) = self.dec.lines.pop_front() {
                return Ok(Some(l));
            }
            if !self.dec.replies.is_empty() {
                return Ok(None);
            }
            let data = self.link.read(&mut buf).await?;
            if let Err(e) = self.dec.feed(&data) {
                self.anomaly(e.clone());
                self.rep.mccp_error.get_or_insert(e.clone());
                return Err(e);
            }
        }
    }

    /// Adds this connection's MCCP2 figures to the report.
    fn count_mccp(&mut self) {
        self.rep.mccp_streams += std::mem::take(&mut self.dec.streams);
        self.rep.mccp_ends += std::mem::take(&mut self.dec.ends);
    }

    /// Waits for a line until `until`; Ok(None) at the deadline.
    async fn line_until(&mut self, until: Instant) -> Result<Option<String>, String> {
        loop {
            self.flush_replies().await?;
            tokio::select! {
                l = self.next() => match l? {
                    Some(l) => return Ok(Some(l)),
                    None => continue,
                },
                _ = sleep_until(until) => return Ok(None),
            }
        }
    }

    /// First login: connect screen, `connect`, the game's welcome, then a
    /// line that must come back so holdfast has confirmed the login.
    async fn login(&mut self) -> Result<(), String> {
        let until = Instant::now() + LOGIN_TIMEOUT;
        let name = self.spec.name.clone();
        let mut stage = 0;
        loop {
            let Some(l) = self.line_until(until).await? else {
                return Err(format!("login timed out at stage {stage}"));
            };
            match (stage, classify(&l, &name)) {
                (0, Ev::ConnectScreen) => {
                    let c = format!("connect {} {}", name, self.spec.pass);
                    self.send(&c).await?;
                    stage = 1;
                }
                (1, Ev::LastConnect) => {
                    self.send(&format!("echo F:{name}:0")).await?;
                    stage = 2;
                }
                (2, Ev::Final(0)) => return Ok(()),
                _ => {}
            }
        }
    }

    fn think(&mut self) {
        let (a, b) = self.spec.think_ms;
        let ms = if b > a {
            self.rng.random_range(a..=b)
        } else {
            a
        };
        self.next_send = Instant::now() + Duration::from_millis(ms);
    }

    fn resolve(&mut self, outcome: Outcome) {
        self.grace = None;
        if let Some(i) = self.outstanding.take() {
            let r = &mut self.rep.lines[i];
            r.outcome = outcome;
            r.resolved_us = now_us();
            self.think();
        }
    }

    /// A held/queued/queue-full notice answers the outstanding line (or the
    /// final line); holdfast answers lines in the order it reads them.
    fn answer(&mut self, o: Outcome) {
        if self.final_out.is_some() {
            self.grace = None;
            if o != Outcome::Queued {
                // Not sent: try again once logged back in.
                self.final_out = None;
            }
        } else if let Some(i) = self.outstanding {
            if o == Outcome::Queued {
                self.queued_wait.push(i);
            }
            self.resolve(o);
        } else {
            self.anomaly(format!("{o:?} notice with no line outstanding"));
        }
    }

    fn set_held(&mut self, held: bool) {
        if held != self.held {
            self.held = held;
            if held {
                self.ctl.held.fetch_add(1, Ordering::Relaxed);
            } else {
                self.ctl.held.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    async fn main(&mut self, phase: &mut watch::Receiver<Phase>) -> Result<(), String> {
        let name = self.spec.name.clone();
        let mut final_deadline: Option<Instant> = None;
        loop {
            let ph = *phase.borrow_and_update();
            let now = Instant::now();
            match ph {
                Phase::Leave => return self.leave().await,
                Phase::Run => {
                    let idle = self.outstanding.is_none()
                        && self.final_out.is_none()
                        && !self.need_login
                        && !self.held;
                    if idle && self.next_drop.is_some_and(|t| now >= t) && now >= self.next_send {
                        self.link_drop().await?;
                        continue;
                    }
                    if self.outstanding.is_none() && !self.need_login && now >= self.next_send {
                        let n = self.rep.lines.len() as u32 + 1;
                        self.rep.lines.push(LineRec {
                            n,
                            sent_us: now_us(),
                            resolved_us: 0,
                            outcome: Outcome::Pending,
                            echoes: 0,
                        });
                        self.outstanding = Some(self.rep.lines.len() - 1);
                        self.ctl.sent.fetch_add(1, Ordering::Relaxed);
                        self.send_numbered(&format!("echo S:{name}:{n}")).await?;
                    }
                }
                Phase::Finish => {
                    let fd = *final_deadline.get_or_insert(now + FINAL_TIMEOUT);
                    if !self.rep.final_ok && !self.finish_counted && now >= fd {
                        self.anomaly("final check timed out".into());
                        self.finish_counted = true;
                        self.ctl.finished.fetch_add(1, Ordering::Relaxed);
                    }
                    let idle = self.outstanding.is_none() && self.final_out.is_none();
                    if idle && !self.rep.final_ok && !self.held && !self.need_login {
                        self.final_k += 1;
                        self.final_out = Some((self.final_k, now));
                        let k = self.final_k;
                        self.send(&format!("echo F:{name}:{k}")).await?;
                    }
                }
            }
            // Next wake-up: the think timer, an answer timeout, a final retry.
            let mut until = now + Duration::from_secs(3600);
            if let Some(i) = self.outstanding {
                let sent = self.rep.lines[i].sent_us;
                let age = Duration::from_micros(now_us().saturating_sub(sent));
                until = until.min(now + self.spec.answer_timeout.saturating_sub(age));
            } else if ph == Phase::Run && !self.need_login {
                until = until.min(self.next_send);
                if let Some(t) = self.next_drop {
                    until = until.min(t.max(self.next_send));
                }
            }
            if let Some((_, t)) = self.final_out {
                until = until.min(t + self.spec.answer_timeout);
            }
            if let Some((t, _)) = self.grace {
                until = until.min(t);
            }
            if let (Some(fd), false) = (final_deadline, self.finish_counted) {
                until = until.min(fd);
            }
            self.flush_replies().await?;
            tokio::select! {
                l = self.next() => {
                    if let Some(l) = l? {
                        self.on_line(&l).await?;
                    }
                }
                // Cancel-safe: a watch change is not consumed by losing.
                _ = phase.changed() => {}
                _ = sleep_until(until) => self.on_timeout(),
            }
        }
    }

    fn on_timeout(&mut self) {
        if let Some((t, o)) = self.grace {
            if Instant::now() >= t {
                self.grace = None;
                if self.outstanding.is_some() {
                    self.resolve(o);
                }
                // A final line in flight: send another once logged back in.
                self.final_out = None;
            }
        }
        if let Some(i) = self.outstanding {
            let age = now_us().saturating_sub(self.rep.lines[i].sent_us);
            if Duration::from_micros(age) >= self.spec.answer_timeout {
                let n = self.rep.lines[i].n;
                self.anomaly(format!("line {n} not answered in time"));
                self.resolve(Outcome::TimedOut);
            }
        }
        if let Some((k, t)) = self.final_out {
            if t.elapsed() >= self.spec.answer_timeout {
                self.anomaly(format!("final line {k} not answered in time"));
                self.final_out = None;
            }
        }
    }

    async fn on_line(&mut self, l: &str) -> Result<(), String> {
        let ev = classify(l, &self.spec.name);
        let out_n = self.outstanding.map(|i| self.rep.lines[i].n);
        match ev {
            Ev::Echo(n) => {
                let Some(rec) = n
                    .checked_sub(1)
                    .and_then(|i| self.rep.lines.get_mut(i as usize))
                else {
                    self.anomaly(format!("echo of line {n}, never sent"));
                    return Ok(());
                };
                rec.echoes += 1;
                let (echoes, outcome) = (rec.echoes, rec.outcome);
                if out_n == Some(n) {
                    self.resolve(Outcome::Echoed);
                } else if echoes > 1 {
                    self.anomaly(format!("line {n} echoed {echoes} times"));
                } else if matches!(outcome, Outcome::Held | Outcome::QueueFull) {
                    self.anomaly(format!("line {n} echoed though answered {outcome:?}"));
                }
            }
            Ev::Final(k) => {
                if self.final_out.map(|f| f.0) == Some(k) && !self.rep.final_ok {
                    self.final_out = None;
                    self.grace = None;
                    self.rep.final_ok = true;
                    self.rep.final_n = Some(k);
                    self.ctl.final_ok.fetch_add(1, Ordering::Relaxed);
                    if !self.finish_counted {
                        self.finish_counted = true;
                        self.ctl.finished.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ev::Held => {
                self.rep.seen.held += 1;
                self.answer(Outcome::Held);
            }
            Ev::Queued => {
                self.rep.seen.queued += 1;
                self.answer(Outcome::Queued);
            }
            Ev::QueueFull => {
                self.rep.seen.queue_full += 1;
                self.answer(Outcome::QueueFull);
            }
            Ev::Stale(k) => self.rep.seen.stale += k,
            Ev::Offline | Ev::Moving => {
                let o = if ev == Ev::Offline {
                    self.rep.seen.offline += 1;
                    Outcome::InFlightOffline
                } else {
                    self.rep.seen.moving += 1;
                    Outcome::InFlightMoving
                };
                // The first notice starts the grace; later ones (another
                // outage before the line was answered) do not extend it.
                // Queued lines sent after the last re-login and not echoed
                // were in flight when this backend went away.
                let now = now_us();
                for i in std::mem::take(&mut self.flushed) {
                    let r = &mut self.rep.lines[i];
                    if r.echoes == 0 {
                        r.outcome = Outcome::QueuedInFlight;
                        r.resolved_us = now;
                    }
                }
                if self.grace.is_none() && (self.outstanding.is_some() || self.final_out.is_some())
                {
                    self.grace = Some((Instant::now() + GRACE, o));
                }
                self.set_held(true);
            }
            Ev::Online => {
                self.rep.seen.online += 1;
                self.set_held(false);
                // holdfast sends the queue right after this notice.
                let lines = &self.rep.lines;
                self.flushed.retain(|&i| lines[i].echoes == 0);
                self.flushed.append(&mut self.queued_wait);
                // A line queued silently during the re-login is echoed right
                // after this notice: give it a moment.
                if let Some((t, o)) = self.grace {
                    self.grace = Some((t.max(Instant::now() + ONLINE_GRACE), o));
                }
            }
            Ev::ReloginFailed => {
                self.rep.seen.relogin_failed += 1;
                self.anomaly("re-login failed".into());
                self.set_held(false);
                // Do what a person would: log in by hand.
                self.need_login = true;
                let c = format!("connect {} {}", self.spec.name, self.spec.pass);
                self.send(&c).await?;
            }
            Ev::LastConnect => {
                if self.need_login {
                    self.need_login = false;
                    self.think();
                } else {
                    self.anomaly("the game's welcome shown again (re-login output leaked)".into());
                }
            }
            Ev::ConnectScreen => {
                self.rep.seen.connect_screen += 1;
                if !self.need_login {
                    self.anomaly("connect screen while logged in".into());
                }
            }
            Ev::GameShutdown => self.rep.seen.game_shutdown += 1,
            Ev::Announce(k) => self.rep.announces.push(k),
            Ev::Resumed => {
                self.rep.resumed += 1;
                self.ctl.resumed.fetch_add(1, Ordering::Relaxed);
            }
            Ev::PlaybackDropped(k) => self.rep.playback_dropped += k,
            Ev::Connecting => {}
            Ev::OtherNotice => {
                self.rep.seen.other_notice += 1;
                self.anomaly(format!("notice: {l}"));
            }
            Ev::Other => {}
        }
        Ok(())
    }

    fn schedule_drop(&mut self) {
        if let Some((a, b)) = self.spec.drop_every {
            let s = if b > a {
                self.rng.random_range(a..=b)
            } else {
                a
            };
            self.next_drop = Some(Instant::now() + Duration::from_secs(s));
        }
    }

    /// The player's own link drops right after a line whose answer comes
    /// later (`later <ms> S:...`): the line reaches the game (the close
    /// comes after it on the same connection), its echo comes while the
    /// player is away, and must come back with the resumed session.
    async fn link_drop(&mut self) -> Result<(), String> {
        let name = self.spec.name.clone();
        let n = self.rep.lines.len() as u32 + 1;
        self.rep.lines.push(LineRec {
            n,
            sent_us: now_us(),
            resolved_us: 0,
            outcome: Outcome::Pending,
            echoes: 0,
        });
        self.outstanding = Some(self.rep.lines.len() - 1);
        self.ctl.sent.fetch_add(1, Ordering::Relaxed);
        let delay = self.rng.random_range(300..=1500u64);
        self.send(&format!("later {delay} S:{name}:{n}")).await?;
        self.link.drop_link().await;
        self.rep.link_drops += 1;
        self.ctl.link_drops.fetch_add(1, Ordering::Relaxed);
        // What holdfast wrote before it saw the close is read as usual.
        let until = Instant::now() + Duration::from_secs(10);
        while let Ok(Some(l)) = self.line_until(until).await {
            let _ = self.on_line(&l).await;
        }
        // Away for a moment, then back with the same login.
        let away = self.rng.random_range(200..=3000u64);
        tokio::time::sleep(Duration::from_millis(away)).await;
        self.link = self.reconnect().await?;
        self.count_mccp();
        self.dec = Decoder::new(self.spec.mccp);
        self.send(&format!("connect {} {}", name, self.spec.pass))
            .await?;
        let until = Instant::now() + LOGIN_TIMEOUT;
        loop {
            let Some(l) = self.line_until(until).await? else {
                return Err("resume timed out".into());
            };
            match classify(&l, &name) {
                Ev::ConnectScreen => {}
                Ev::LastConnect => {
                    self.anomaly("logged in afresh instead of resumed".into());
                    break;
                }
                Ev::Resumed => {
                    self.on_line(&l).await?;
                    break;
                }
                _ => self.on_line(&l).await?,
            }
        }
        self.schedule_drop();
        Ok(())
    }

    /// Connects again after a link drop. A WebSocket handshake that an
    /// upgrade begins under is closed by holdfast (no client holds an
    /// upgrade); the client connects again, as the web client does.
    async fn reconnect(&mut self) -> Result<Link, String> {
        let until = Instant::now() + LOGIN_TIMEOUT;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let link = Link::connect(self.spec.door, self.spec.src, self.spec.proxy);
            let e = match tokio::time::timeout_at(until, link).await {
                Ok(Ok(l)) => return Ok(l),
                Ok(Err(e)) => e,
                Err(_) => return Err("reconnect timed out".into()),
            };
            let retry = self.spec.door.ws() && e.starts_with("WebSocket handshake");
            if !retry || attempt >= CONNECT_TRIES {
                return Err(format!("reconnect: {e}"));
            }
            self.rep.connect_retries += 1;
            tokio::time::sleep(Duration::from_millis(self.rng.random_range(100..=500))).await;
        }
    }

    /// QUIT; holdfast must close the connection (that is not a drop).
    async fn leave(&mut self) -> Result<(), String> {
        self.send("QUIT").await?;
        let until = Instant::now() + QUIT_TIMEOUT;
        loop {
            match self.line_until(until).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    self.anomaly("not closed after QUIT".into());
                    return Ok(());
                }
                Err(_) => {
                    self.rep.quit_ok = true;
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify("S:P0001:17", "P0001"), Ev::Echo(17));
        assert_eq!(classify("S:P00011:17", "P0001"), Ev::Other);
        assert_eq!(classify("F:P0001:2", "P0001"), Ev::Final(2));
        assert_eq!(
            classify("[holdfast] Soak MUSH is down. Your connection is being held; you will be logged back in when it returns.", "P1"),
            Ev::Offline
        );
        assert_eq!(
            classify(
                "[holdfast] 3 queued line(s) were too old and were not sent.",
                "P1"
            ),
            Ev::Stale(3)
        );
        assert_eq!(
            classify(
                "[holdfast] Moving you to beta; you will be logged back in.",
                "P1"
            ),
            Ev::Moving
        );
    }
}
