//! fakemush: a scripted TinyMUSH-family game server for holdfast's
//! integration tests and benchmarks. Run with `--help` for the options.
//!
//! Texts the proxy's presets rely on (each line ends in CRLF):
//! - connect screen: first line `Welcome to FakeMUSH (<flavor> flavor)`, last
//!   line `Use "connect <name> <password>" to connect.`
//! - login success: `*** MOTD: <motd>`, `Last connect was from <host> on
//!   <ctime>.`, then `Limbo(#0R)`, a description, `Contents:` and the other
//!   connected players; evennia: `You become <name>.`, `Limbo`, description,
//!   `Contents:`, players.
//! - login failure: tinymush/plain `Either that player does not exist, or has
//!   a different password.`; pennmush `That is not the correct password.` /
//!   `There is no player with that name.`; evennia `Username and/or password
//!   is incorrect.`
//! - QUIT: `Goodbye. Come back soon!` (evennia: `Good bye! Disconnecting...`)
//! - @boot: target gets `You have been booted off the game by <wiz>.`, the
//!   wizard `You booted <name> off!`
//!
//! Every event is appended to `--log` as one JSON object per line.

mod accounts;
mod commands;
mod conn;
mod eval;
mod game;
mod jlog;
mod limits;
mod mssp;
mod telnet;

use conn::Peer;
use game::{Config, Flavor, Game, User};
use jlog::{Logger, V};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, UnixListener};
use tokio::signal::unix::{self as sig, SignalKind};

const USAGE: &str = "usage: fakemush [--listen ADDR]... [--unix PATH] [--ready-file FILE]
       [--flavor tinymush|pennmush|evennia|plain] [--user NAME:PASS[:wizard]]...
       [--trust IP]... [--log FILE] [--mccp] [--mssp] [--pennmush-socket-header] [--motd TEXT]
       [--quit-case any|mux|exact] [--quota N] [--max-preauth N] [--conn-rate N/SECS]
       [--login-fail-limit N/SECS] [--banner-delay MS] [--split-announce MS] [--split-at N] [--screen-file FILE]
       [--demo] [--accounts FILE]
(see limits.rs for what the six limit options do)";

/// `--help`: the usage, the accounts, and what the demo is.
const HELP: &str = "fakemush: the small TinyMUSH-like game holdfast's tests run against, and
the demo game scripts/run.sh starts behind holdfast (--demo: the MOTD says so).

Accounts when no --user is given (name / password):
  Alice      / alicepw
  Bob        / bobpw
  Wiz        / wizpw     (wizard: may @boot)
  heartbeat  / hbpass    (wizard)
With --user, only the accounts given exist; scripts/run.sh gives the demo
Alice, Bob and Wiz as above and a plain `heartbeat` player whose password is
$HOLDFAST_HEARTBEAT_PASSWORD (the one holdfast's sample config.toml reads).

Commands once connected: say (or \"), pose (or :), think, look, WHO, help,
@boot (wizards), QUIT.";

/// `--demo`: the MOTD players see through holdfast in the quick start.
const DEMO_MOTD: &str = "Demo MUSH: the game bundled with holdfast. Crash it (scripts/run.sh crash) and you stay connected; restart it (scripts/run.sh restart-game) and you are logged back in.";

struct Args {
    listen: Vec<String>,
    unix: Option<String>,
    ready: Option<String>,
    log: Option<String>,
    cfg: Config,
    /// `--accounts FILE` (see accounts.rs).
    accounts: Option<String>,
}

fn parse_user(s: &str) -> Result<User, String> {
    let (rest, wizard) = match s.strip_suffix(":wizard") {
        Some(r) => (r, true),
        None => (s, false),
    };
    let (name, pass) = rest
        .split_once(':')
        .ok_or_else(|| format!("bad --user {s:?} (want NAME:PASS[:wizard])"))?;
    if name.trim().is_empty() {
        return Err(format!("bad --user {s:?}: empty name"));
    }
    Ok(User {
        name: name.trim().to_string(),
        pass: pass.to_string(),
        wizard,
    })
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: Vec::new(),
        unix: None,
        ready: None,
        log: None,
        accounts: None,
        cfg: Config {
            flavor: Flavor::TinyMush,
            users: Vec::new(),
            trust: Vec::new(),
            motd: "Welcome to FakeMUSH. This is a test server.".to_string(),
            mccp: false,
            penn_header: false,
            limits: limits::Limits::default(),
            mssp: false,
            split_announce: None,
            screen_file: None,
            split_at: None,
        },
    };
    let mut trust_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut val = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{key} needs a value"))
        };
        match key.as_str() {
            "--listen" => a.listen.push(val()?),
            "--unix" => a.unix = Some(val()?),
            "--ready-file" => a.ready = Some(val()?),
            "--log" => a.log = Some(val()?),
            "--accounts" => a.accounts = Some(val()?),
            "--motd" => a.cfg.motd = val()?,
            "--flavor" => {
                let v = val()?;
                a.cfg.flavor = Flavor::parse(&v).ok_or_else(|| format!("unknown flavor {v:?}"))?;
            }
            "--user" => a.cfg.users.push(parse_user(&val()?)?),
            "--trust" => {
                let v = val()?;
                trust_given = true;
                match v.as_str() {
                    "localhost" => a.cfg.trust.push(IpAddr::from([127, 0, 0, 1])),
                    _ => a
                        .cfg
                        .trust
                        .push(v.parse().map_err(|_| format!("bad --trust {v:?}"))?),
                }
            }
            "--mccp" => a.cfg.mccp = true,
            "--demo" => a.cfg.motd = DEMO_MOTD.to_string(),
            "--quit-case" => {
                let v = val()?;
                a.cfg.limits.quit_case = limits::QuitCase::parse(&v)
                    .ok_or_else(|| format!("bad --quit-case {v:?} (any, mux or exact)"))?;
            }
            "--quota" => {
                let v = val()?;
                a.cfg.limits.quota = Some(v.parse().map_err(|_| format!("bad --quota {v:?}"))?);
            }
            "--max-preauth" => {
                let v = val()?;
                a.cfg.limits.max_preauth =
                    Some(v.parse().map_err(|_| format!("bad --max-preauth {v:?}"))?);
            }
            "--conn-rate" => {
                let v = val()?;
                a.cfg.limits.conn_rate = Some(
                    limits::Window::parse(&v).ok_or_else(|| format!("bad --conn-rate {v:?}"))?,
                );
            }
            "--login-fail-limit" => {
                let v = val()?;
                a.cfg.limits.login_fail = Some(
                    limits::Window::parse(&v)
                        .ok_or_else(|| format!("bad --login-fail-limit {v:?}"))?,
                );
            }
            "--banner-delay" => {
                let v = val()?;
                let ms: u64 = v.parse().map_err(|_| format!("bad --banner-delay {v:?}"))?;
                a.cfg.limits.banner_delay = Some(Duration::from_millis(ms));
            }
            "--mssp" => a.cfg.mssp = true,
            "--screen-file" => a.cfg.screen_file = Some(val()?),
            "--split-at" => {
                let v = val()?;
                a.cfg.split_at = Some(v.parse().map_err(|_| format!("bad --split-at {v:?}"))?);
            }
            "--split-announce" => {
                let v = val()?;
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("bad --split-announce {v:?}"))?;
                a.cfg.split_announce = Some(Duration::from_millis(ms));
            }
            "--mssp-penn" => mssp::enable(),
            "--pennmush-socket-header" => a.cfg.penn_header = true,
            "-h" | "--help" => {
                println!("{USAGE}\n\n{HELP}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    if a.cfg.users.is_empty() {
        for u in [
            "heartbeat:hbpass:wizard",
            "Alice:alicepw",
            "Bob:bobpw",
            "Wiz:wizpw:wizard",
        ] {
            a.cfg.users.push(parse_user(u)?);
        }
    }
    if let Some(path) = &a.accounts {
        accounts::load(path, &mut a.cfg.users)?;
    }
    if !trust_given {
        a.cfg.trust.push(IpAddr::from([127, 0, 0, 1]));
        a.cfg.trust.push(std::net::Ipv6Addr::LOCALHOST.into());
    }
    if a.listen.is_empty() && a.unix.is_none() {
        return Err("need --listen and/or --unix".into());
    }
    Ok(a)
}

fn bind_tcp(addr: &str) -> std::io::Result<TcpListener> {
    let sa: SocketAddr = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("cannot resolve {addr}")))?;
    let sock = if sa.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(sa)?;
    sock.listen(1024)
}

fn write_ready(path: &str, text: &str) -> std::io::Result<()> {
    let tmp = format!("{path}.tmp.{}", std::process::id());
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn die(msg: String) -> ! {
    eprintln!("fakemush: {msg}");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| die(format!("{e}\n{USAGE}")));
    eval::mark_start();
    let log = Logger::open(args.log.as_deref())
        .unwrap_or_else(|e| die(format!("cannot open log {:?}: {e}", args.log)));
    let game = Arc::new(Game::new(args.cfg, log));

    let mut names = Vec::new();
    let mut tcp = Vec::new();
    for addr in &args.listen {
        let l = bind_tcp(addr).unwrap_or_else(|e| die(format!("cannot listen on {addr}: {e}")));
        let local = l
            .local_addr()
            .unwrap_or_else(|e| die(format!("local_addr: {e}")));
        mssp::listening_on(local.port());
        names.push(local.to_string());
        tcp.push(l);
    }
    let unix = args.unix.as_ref().map(|p| {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                die(format!("cannot remove stale {p}: {e}"))
            }
            _ => {}
        }
        names.push(format!("unix:{p}"));
        UnixListener::bind(p).unwrap_or_else(|e| die(format!("cannot listen on {p}: {e}")))
    });
    if let Some(r) = &args.ready {
        let first = names[0].strip_prefix("unix:").unwrap_or(&names[0]);
        write_ready(r, &format!("{first}\n"))
            .unwrap_or_else(|e| die(format!("cannot write ready file {r}: {e}")));
    }
    let listening = names.join(", ");
    game.log.ev(
        "start",
        &[
            ("pid", V::N(std::process::id().into())),
            ("listen", V::S(&listening)),
            ("flavor", V::S(game.cfg.flavor.name())),
        ],
    );
    eprintln!("fakemush listening on {listening}");

    if game.cfg.limits.quota.is_some() {
        let game = game.clone();
        tokio::spawn(async move {
            // A little over a second, so an idle game does refill.
            let mut t = tokio::time::interval(Duration::from_millis(1050));
            loop {
                t.tick().await;
                game.quota_tick();
            }
        });
    }
    for l in tcp {
        let game = game.clone();
        tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((s, _)) if game.stopping.load(Ordering::SeqCst) => drop(s),
                    Ok((s, peer)) => {
                        let _ = s.set_nodelay(true);
                        tokio::spawn(conn::handle(game.clone(), s, Peer::Tcp(peer)));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
    }
    if let Some(l) = unix {
        let game = game.clone();
        tokio::spawn(async move {
            loop {
                match l.accept().await {
                    Ok((s, _)) if game.stopping.load(Ordering::SeqCst) => drop(s),
                    Ok((s, _)) => {
                        tokio::spawn(conn::handle(game.clone(), s, Peer::Unix));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
    }

    let mut term =
        sig::signal(SignalKind::terminate()).unwrap_or_else(|e| die(format!("signal: {e}")));
    let mut int =
        sig::signal(SignalKind::interrupt()).unwrap_or_else(|e| die(format!("signal: {e}")));
    tokio::select! {
        _ = term.recv() => game.log.ev("shutdown", &[("by", V::S("SIGTERM"))]),
        _ = int.recv() => game.log.ev("shutdown", &[("by", V::S("SIGINT"))]),
        _ = game.shutdown.notified() => {
            // Let connections flush their goodbye and close.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while game.live_tasks.load(Ordering::SeqCst) > 0
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    if let Some(p) = &args.unix {
        let _ = std::fs::remove_file(p);
    }
    std::process::exit(0);
}
