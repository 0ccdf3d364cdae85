//! Shared game state and command processing. All commands run synchronously
//! under one lock; output goes to each connection's channel, so ordering per
//! connection is the order in which it was produced.

use crate::jlog::{Logger, V};
use crate::limits::{Limits, Refusal, Tracker};
use crate::telnet::{self, IAC, OPT_EOR, OPT_GMCP, OPT_MCCP2, OPT_NAWS, OPT_TTYPE};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flavor {
    TinyMush,
    PennMush,
    Evennia,
    Plain,
}

impl Flavor {
    pub fn parse(s: &str) -> Option<Flavor> {
        match s.to_ascii_lowercase().as_str() {
            "tinymush" | "tinymux" => Some(Flavor::TinyMush),
            "pennmush" => Some(Flavor::PennMush),
            "evennia" => Some(Flavor::Evennia),
            "plain" => Some(Flavor::Plain),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Flavor::TinyMush => "tinymush",
            Flavor::PennMush => "pennmush",
            Flavor::Evennia => "evennia",
            Flavor::Plain => "plain",
        }
    }
    /// think, password()/checkpass(), @remotehost, LOGOUT
    pub fn is_mush(self) -> bool {
        matches!(self, Flavor::TinyMush | Flavor::PennMush)
    }
    pub fn telnet(self) -> bool {
        self != Flavor::Plain
    }
}

pub struct User {
    pub name: String,
    pub pass: String,
    pub wizard: bool,
}

pub struct Config {
    pub flavor: Flavor,
    pub users: Vec<User>,
    pub trust: Vec<IpAddr>,
    pub motd: String,
    pub mccp: bool,
    pub penn_header: bool,
    pub limits: Limits,
    /// Offer MSSP (`--mssp`).
    pub mssp: bool,
    /// `--split-announce MS`: "X has connected." goes out in two writes,
    /// cut after "has con", this long apart (a busy server's output cut by
    /// its socket buffer or a slow link), so it reaches holdfast in two
    /// reads.
    pub split_announce: Option<std::time::Duration>,
    /// `--split-at N`: cut announcements after their first N bytes
    /// instead (`heartb` | `eat has connected.`).
    pub split_at: Option<usize>,
    /// `--screen-file FILE`: the connect screen's middle lines, read from
    /// FILE for every new connection (so a test can change the screen at
    /// run time, as a game's admin edits its connect text); absent or
    /// unreadable: the usual text.
    pub screen_file: Option<String>,
}

pub enum Out {
    Bytes(Vec<u8>),
    /// The first bytes, a pause, then the rest (`--split-announce`).
    Split(Vec<u8>, std::time::Duration, Vec<u8>),
    StartMccp,
    Spam(u64),
    /// Starts MCCP2 whether or not it was agreed, then `n` bytes of spam
    /// compressed (a zlib bomb: a few hundred KiB on the wire).
    Bomb(u64),
    Close(&'static str),
}

pub struct Sess {
    pub tx: UnboundedSender<Out>,
    pub trusted: bool,
    pub host: String,
    pub remotehost_used: bool,
    pub player: Option<usize>,
    pub width: u32,
    pub height: u32,
    pub since: Instant,
    pub last: Instant,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    /// The peer's address (None on the Unix socket).
    pub ip: Option<IpAddr>,
    /// Commands this connection may still run (`--quota`).
    pub quota: u32,
    /// Lines waiting for quota.
    pub backlog: VecDeque<String>,
}

pub struct State {
    pub sess: BTreeMap<u64, Sess>,
    pub tracker: Tracker,
    /// The last time slice quota was counted from (`--quota`).
    pub last_slice: Instant,
}

pub struct Game {
    pub cfg: Config,
    pub log: Logger,
    st: Mutex<State>,
    next_id: AtomicU64,
    pub live_tasks: AtomicUsize,
    pub shutdown: tokio::sync::Notify,
    /// Set by `@shutdown`: new connections are refused from then on, as a
    /// real MUSH stops accepting before it closes its players' connections.
    pub stopping: AtomicBool,
}

/// An announcement line: as [`send_line`], or cut in two writes with
/// `--split-announce`.
pub fn send_announcement(
    tx: &UnboundedSender<Out>,
    text: &str,
    split: Option<std::time::Duration>,
    at: Option<usize>,
) {
    let cut = match at {
        Some(n) => text.is_char_boundary(n).then_some(n),
        None => text.find(" has con").map(|i| i + " has con".len()),
    };
    match (split, cut) {
        (Some(pause), Some(at)) => {
            let (a, b) = text.split_at(at);
            let _ = tx.send(Out::Split(
                a.as_bytes().to_vec(),
                pause,
                format!("{b}\r\n").into_bytes(),
            ));
        }
        _ => send_line(tx, text),
    }
}

pub fn send_line(tx: &UnboundedSender<Out>, text: &str) {
    let mut v = Vec::with_capacity(text.len() + 2);
    v.extend_from_slice(text.as_bytes());
    v.extend_from_slice(b"\r\n");
    let _ = tx.send(Out::Bytes(v));
}

impl Game {
    pub fn new(cfg: Config, log: Logger) -> Game {
        Game {
            cfg,
            log,
            st: Mutex::new(State {
                sess: BTreeMap::new(),
                tracker: Tracker::default(),
                last_slice: Instant::now(),
            }),
            next_id: AtomicU64::new(1),
            live_tasks: AtomicUsize::new(0),
            shutdown: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.cfg.trust.contains(&ip)
    }

    pub(crate) fn uname(&self, p: usize) -> &str {
        &self.user(p).name
    }

    pub(crate) fn find_user(&self, name: &str) -> Option<usize> {
        let name = name.trim().trim_start_matches('*');
        self.cfg
            .users
            .iter()
            .position(|u| u.name.eq_ignore_ascii_case(name))
            .or_else(|| self.find_extra(name))
    }

    pub fn connect_screen(&self) -> String {
        let title = format!("Welcome to FakeMUSH ({} flavor)", self.cfg.flavor.name());
        let rule = "=".repeat(title.len());
        let middle = self
            .cfg
            .screen_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| t.lines().map(|l| format!("{l}\r\n")).collect::<String>())
            .unwrap_or_else(|| {
                "A scripted game server for holdfast tests. Nothing here is real.\r\n".into()
            });
        format!(
            "{title}\r\n{rule}\r\n{middle}\r\n\
             Use \"WHO\" to see who is on, and \"QUIT\" to leave.\r\n\
             Use \"connect <name> <password>\" to connect.\r\n"
        )
    }

    /// Registers a connection and queues its telnet offers and connect
    /// screen, unless a per-address limit refuses it.
    pub fn register(
        &self,
        id: u64,
        tx: UnboundedSender<Out>,
        trusted: bool,
        host: String,
        ip: Option<IpAddr>,
    ) -> Result<(), Refusal> {
        let lim = &self.cfg.limits;
        // The limits are checked and the connection counted in one hold
        // of the lock, as TinyMUX (one thread) does: two connections
        // registered at once on two threads could otherwise both pass a
        // check that only one may pass.
        let now = Instant::now();
        let mut st = self.lock();
        if let Some(ip) = ip {
            if !st.tracker.admit_rate(lim, ip) {
                return Err(Refusal::Rate);
            }
            if let Some(max) = lim.max_preauth {
                let waiting = st
                    .sess
                    .values()
                    .filter(|s| s.player.is_none() && s.ip == Some(ip))
                    .count();
                if waiting >= max {
                    return Err(Refusal::Preauth);
                }
            }
        }
        st.sess.insert(
            id,
            Sess {
                tx: tx.clone(),
                trusted,
                host,
                remotehost_used: false,
                player: None,
                width: 78,
                height: 24,
                since: now,
                last: now,
                prefix: None,
                suffix: None,
                ip,
                quota: lim.quota.unwrap_or(0),
                backlog: VecDeque::new(),
            },
        );
        drop(st);
        if self.cfg.flavor.telnet() {
            let mut v = vec![
                IAC,
                telnet::DO,
                OPT_NAWS,
                IAC,
                telnet::DO,
                OPT_TTYPE,
                IAC,
                telnet::WILL,
                OPT_EOR,
                IAC,
                telnet::WILL,
                OPT_GMCP,
            ];
            if self.cfg.mccp {
                v.extend_from_slice(&[IAC, telnet::WILL, OPT_MCCP2]);
            }
            if self.cfg.mssp {
                v.extend_from_slice(&[IAC, telnet::WILL, 70]);
            }
            v.extend(crate::mssp::greeting());
            let _ = tx.send(Out::Bytes(v));
        }
        match lim.banner_delay {
            None => {
                let _ = tx.send(Out::Bytes(self.connect_screen().into_bytes()));
            }
            Some(d) => {
                let (tx, screen) = (tx.clone(), self.connect_screen());
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = tx.send(Out::Bytes(screen.into_bytes()));
                });
            }
        }
        Ok(())
    }

    /// A line from connection `id`: run now, or with `--quota`, once the
    /// connection has quota (TinyMUX's `Task_ProcessCommand`).
    pub fn input(&self, id: u64, line: &str) {
        if self.cfg.limits.quota.is_none() {
            return self.handle_line(id, line);
        }
        let mut st = self.lock();
        self.wake(&mut st);
        if let Some(s) = st.sess.get_mut(&id) {
            s.backlog.push_back(line.to_string());
        }
        drop(st);
        self.run_backlog(id);
    }

    /// The main loop woke: count whole seconds since the last pass as
    /// quota for everyone and drop the remainder (TinyMUX
    /// `process_tinyMUX_tasks` sets the last slice to now on every pass).
    fn wake(&self, st: &mut State) {
        let now = Instant::now();
        let slices = now.duration_since(st.last_slice).as_secs();
        let max = self.cfg.limits.quota.unwrap_or(0);
        if slices > 0 {
            let add = u32::try_from(slices).unwrap_or(u32::MAX);
            for s in st.sess.values_mut() {
                s.quota = s.quota.saturating_add(add).min(max);
            }
        }
        st.last_slice = now;
    }

    fn run_backlog(&self, id: u64) {
        loop {
            let line = {
                let mut st = self.lock();
                let Some(s) = st.sess.get_mut(&id) else {
                    return;
                };
                if s.quota == 0 {
                    return;
                }
                let Some(l) = s.backlog.pop_front() else {
                    return;
                };
                s.quota -= 1;
                l
            };
            self.handle_line(id, &line);
        }
    }

    /// Once a second with `--quota`: the deferred retry of starved
    /// connections, which is itself a pass of the main loop.
    pub fn quota_tick(&self) {
        let ids: Vec<u64> = {
            let mut st = self.lock();
            self.wake(&mut st);
            st.sess
                .iter()
                .filter(|(_, s)| !s.backlog.is_empty())
                .map(|(id, _)| *id)
                .collect()
        };
        for id in ids {
            self.run_backlog(id);
        }
    }

    /// Removes a connection (idempotent) and logs its close.
    pub fn disconnect(&self, id: u64, why: &str) {
        let mut st = self.lock();
        let Some(s) = st.sess.remove(&id) else { return };
        if let Some(p) = s.player {
            let msg = format!("{} has disconnected.", self.uname(p));
            for o in st.sess.values().filter(|o| o.player.is_some()) {
                send_line(&o.tx, &msg);
            }
            self.guest_gone(p);
        }
        drop(st);
        self.log
            .ev("close", &[("conn", V::N(id)), ("why", V::S(why))]);
    }

    pub fn naws(&self, id: u64, w: u32, h: u32) {
        if let Some(s) = self.lock().sess.get_mut(&id) {
            s.width = w;
            s.height = h;
        }
        self.log.ev(
            "naws",
            &[
                ("conn", V::N(id)),
                ("w", V::N(w.into())),
                ("h", V::N(h.into())),
            ],
        );
    }

    pub fn ttype(&self, id: u64, value: &str) {
        self.log
            .ev("ttype", &[("conn", V::N(id)), ("value", V::S(value))]);
    }

    pub fn gmcp(&self, id: u64, data: &str) {
        self.log
            .ev("gmcp", &[("conn", V::N(id)), ("data", V::S(data))]);
    }

    pub(crate) fn session_of(&self, st: &State, me: u64, who: &str) -> Result<u64, &'static str> {
        let who = who.trim();
        if who.eq_ignore_ascii_case("me") {
            return Ok(me);
        }
        let p = self.find_user(who).ok_or("#-1 NO MATCH")?;
        st.sess
            .iter()
            .rev()
            .find(|(_, s)| s.player == Some(p))
            .map(|(id, _)| *id)
            .ok_or("#-1 NOT CONNECTED")
    }

    pub(crate) fn player_of(&self, st: &State, me: u64, who: &str) -> Option<usize> {
        if who.trim().eq_ignore_ascii_case("me") {
            st.sess.get(&me).and_then(|s| s.player)
        } else {
            self.find_user(who)
        }
    }
}
