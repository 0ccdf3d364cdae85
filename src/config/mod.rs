//! Configuration: parse the TOML strictly, fill in named defaults, validate,
//! and resolve into [`Config`], the type the rest of the program uses.
//!
//! Every error names the file, line and column (`FILE:LINE:COL: message`),
//! whether it comes from TOML syntax, an unknown key, a bad value or a
//! cross-field check such as a duplicate backend name.

mod doors;
mod flavor;
mod raw;

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use toml::Spanned;

use crate::secret::Secret;
pub use doors::{Cidr, Doors, Tls};
use raw::*;
pub use raw::{ClientIpMode, Flavor};

/// Named defaults, so the README and `check` can quote them.
pub mod defaults {
    use std::time::Duration;
    /// `listen.addrs`.
    pub const LISTEN: &str = "0.0.0.0:4201";
    /// `listen.max_sessions`.
    pub const MAX_SESSIONS: usize = 10_000;
    /// `listen.max_per_ip`.
    pub const MAX_PER_IP: usize = 20;
    /// `listen.login_timeout`.
    pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);
    /// `backends.connect_timeout`.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// `heartbeat.interval`.
    pub const HB_INTERVAL: Duration = Duration::from_secs(2);
    /// `heartbeat.timeout`.
    pub const HB_TIMEOUT: Duration = Duration::from_secs(2);
    /// `heartbeat.fall`: two missed probes in a row, so one lag spike of
    /// the game does not bounce every player through a re-login. A closed
    /// connection plus a failed immediate probe marks a backend down at once
    /// whatever this says.
    pub const HB_FALL: u32 = 2;
    /// `heartbeat.rise`.
    pub const HB_RISE: u32 = 1;
    /// `failover.after`.
    pub const FAILOVER_AFTER: Duration = Duration::from_secs(60);
    /// `outage.max_hold`.
    pub const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);
    /// `outage.queue_max_lines`.
    pub const QUEUE_MAX_LINES: usize = 20;
    /// `outage.queue_max_age`.
    pub const QUEUE_MAX_AGE: Duration = Duration::from_secs(300);
    /// `relogin.rate` (re-logins started per second).
    pub const RELOGIN_RATE: f64 = 200.0;
    /// `relogin.burst`.
    pub const RELOGIN_BURST: u32 = 50;
    /// `relogin.jitter`.
    pub const RELOGIN_JITTER: Duration = Duration::from_millis(250);
    /// `relogin.timeout`: how long the re-login marker may take.
    pub const RELOGIN_TIMEOUT: Duration = Duration::from_secs(15);
    /// `templates.login_confirm_timeout`.
    pub const LOGIN_CONFIRM_TIMEOUT: Duration = Duration::from_secs(15);
    /// `limits.max_line`: longest player input line, bytes.
    pub const MAX_LINE: usize = 8192;
    /// `limits.write_timeout`: a player who reads nothing for this long is dropped.
    pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
    /// `limits.max_unauthenticated`: sessions not logged in, in total.
    pub const MAX_UNAUTHENTICATED: usize = 2_000;
    /// `limits.conn_rate_per_ip`: new connections per second per IP.
    pub const CONN_RATE_PER_IP: f64 = 5.0;
    /// `limits.conn_burst_per_ip`.
    pub const CONN_BURST_PER_IP: u32 = 30;
    /// `limits.input_lines_per_sec`: a player's sustained input rate.
    pub const INPUT_LINES_PER_SEC: f64 = 30.0;
    /// `limits.input_burst`: lines a player may send at once (a paste).
    pub const INPUT_BURST: u32 = 300;
    /// `limits.max_subnegotiation`.
    pub const MAX_SUBNEG: usize = 8192;
    /// `telnet.mccp`: offer MCCP2 compression to players.
    pub const PLAYER_MCCP: bool = true;
    /// `telnet.backend_mccp`: let backends compress toward the proxy.
    pub const BACKEND_MCCP: bool = false;
    /// `bus.subject_prefix`.
    pub const SUBJECT_PREFIX: &str = "cmp.holdfast";
    /// `bus.queue_size`: events kept while NATS is unreachable.
    pub const BUS_QUEUE: usize = 10_000;
    /// `bus.presence_interval`.
    pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(10);
    /// `bus.request_timeout` (used by `holdfast status`).
    pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
    /// `irc.server`.
    pub const IRC_SERVER: &str = "127.0.0.1:6667";
    /// `irc.nick`.
    pub const IRC_NICK: &str = "holdfast";
    /// `irc.rate`: lines per second the relay sends.
    pub const IRC_RATE: f64 = 1.0;
    /// `irc.burst`: lines it may send at once.
    pub const IRC_BURST: u32 = 4;
    /// `irc.queue_size`: notices kept while IRC is unreachable.
    pub const IRC_QUEUE: usize = 500;
    /// `irc.summarize_window`.
    pub const IRC_SUMMARIZE_WINDOW: Duration = Duration::from_secs(10);
    /// `irc.vanish_after`: an instance silent this long on the presence
    /// subject is reported gone (three missed 10 s heartbeats and a bit).
    pub const IRC_VANISH_AFTER: Duration = Duration::from_secs(35);
    /// `irc.reconnect_max`: the longest wait between IRC reconnect attempts.
    pub const IRC_RECONNECT_MAX: Duration = Duration::from_secs(60);
}

/// A configuration error, printed as `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Where a backend lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddr {
    /// `host:port`; the host may be a name, resolved at each connect.
    Tcp(String),
    /// `unix:/path`.
    Unix(PathBuf),
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendAddr::Tcp(a) => f.write_str(a),
            BackendAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One `[[backends]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Unique name, used in notices, events and `failover` requests.
    pub name: String,
    /// Where it listens.
    pub addr: BackendAddr,
    /// TCP/Unix connect timeout.
    pub connect_timeout: Duration,
}

/// `[listen]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    /// Addresses players connect to.
    pub addrs: Vec<SocketAddr>,
    /// Sessions in total.
    pub max_sessions: usize,
    /// Sessions per client IP.
    pub max_per_ip: usize,
    /// A session not logged in by then is closed (`None`: never).
    pub login_timeout: Option<Duration>,
}

/// `[heartbeat]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// The probe's game user; `None`: probe by connecting only.
    pub user: Option<String>,
    /// Its password.
    pub password: Option<Secret>,
    /// Time between probes.
    pub interval: Duration,
    /// How long a probe answer may take.
    pub timeout: Duration,
    /// Consecutive failures that mark a backend down.
    pub fall: u32,
    /// Consecutive successes that mark it up.
    pub rise: u32,
}

/// `[failover]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    /// Automatic failover once the active backend is down this long.
    pub after: Option<Duration>,
    /// Move back to the preferred backend when it returns.
    pub failback: bool,
}

/// `[client_ip]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientIp {
    /// How the player's address reaches the game.
    pub mode: ClientIpMode,
    /// The command template for `mode = "command"` (`{ip}`).
    pub command: String,
    /// The command's first word, lower-cased: player lines starting with it
    /// are dropped so nobody can spoof an address.
    pub command_word: String,
    /// Reverse-resolve the player's IP for the PennMUSH header.
    pub reverse_dns: bool,
}

/// `[notices]`: texts sent to players; `{game}`, `{backend}`, `{downtime}`.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct Notices {
    pub offline: String,
    pub online: String,
    pub held_input: String,
    pub queued_input: String,
    pub relogin_failed: String,
    pub failover: String,
    pub max_hold: String,
    pub stopping: String,
    pub full: String,
    pub per_ip: String,
    pub login_timeout: String,
    pub line_too_long: String,
    pub flood: String,
    pub connecting: String,
}

/// `[outage]`: what happens to held sessions.
#[derive(Debug, Clone, PartialEq)]
pub struct Outage {
    /// A hold longer than this ends the session (`None`: never).
    pub max_hold: Option<Duration>,
    /// Queue input typed while held and send it after re-login.
    pub queue_input: bool,
    /// At most this many queued lines.
    pub queue_max_lines: usize,
    /// Queued lines older than this are dropped (and the player told).
    pub queue_max_age: Duration,
}

/// `[relogin]`: how fast held sessions are logged back in.
#[derive(Debug, Clone, PartialEq)]
pub struct Relogin {
    /// Re-logins started per second, across all sessions.
    pub rate: f64,
    /// How many may start at once.
    pub burst: u32,
    /// Random delay added to each, up to this.
    pub jitter: Duration,
    /// How long the re-login's marker may take to come back.
    pub timeout: Duration,
}

/// `[templates]`, resolved from the flavor preset and overrides.
#[derive(Debug, Clone)]
pub struct Templates {
    /// Heartbeat probe command (`{nonce}`).
    pub probe: String,
    /// Login command (`{verb}`, `{name}`, `{password}`).
    pub login: String,
    /// Marker command after a login (`{nonce}`); empty: no marker.
    pub marker: String,
    /// The quit command.
    pub quit: String,
    /// Lines that prove a login worked.
    pub login_success: Vec<Regex>,
    /// Lines that prove a login failed.
    pub login_failure: Vec<Regex>,
    /// How long a first login may take to be confirmed.
    pub login_confirm_timeout: Duration,
    /// Before logging in on a new connection (heartbeat, re-login), send the
    /// marker until its nonce comes back: for games that answer it before
    /// login and drop input sent too early (Evennia). Set by the flavor.
    pub sync: bool,
}

/// `[limits]`: protection against abuse and slow players.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Longest input line from a player (bytes); longer ones are cut.
    pub max_line: usize,
    /// A write to a player that makes no progress this long drops the player.
    pub write_timeout: Duration,
    /// Sessions not logged in yet, in total.
    pub max_unauthenticated: usize,
    /// New connections per second per IP (token bucket), 0 = off.
    /// Over it, the connection is refused with the `per_ip` notice.
    pub conn_rate_per_ip: f64,
    /// Burst for `conn_rate_per_ip`.
    pub conn_burst_per_ip: u32,
    /// Input lines per second per session, 0 = off. Over it the player is
    /// told to slow down and the excess is dropped; a player who keeps
    /// flooding for another burst's worth is disconnected.
    pub input_lines_per_sec: f64,
    /// Burst for `input_lines_per_sec`.
    pub input_burst: u32,
    /// Longest telnet subnegotiation kept (bytes).
    pub max_subnegotiation: usize,
}

/// `[telnet]`: the proxy's own telnet options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telnet {
    /// Offer MCCP2 to players; the player's compressed stream is the
    /// proxy's and survives backend restarts.
    pub mccp: bool,
    /// Accept MCCP2 from backends (the proxy inflates it). Off by default:
    /// compressing over loopback costs the game CPU for nothing.
    pub backend_mccp: bool,
}

/// `[bus]`: the NATS connection. No servers: no bus.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct Bus {
    pub servers: Vec<String>,
    pub subject_prefix: String,
    pub instance: String,
    pub publish_ip: bool,
    pub queue_size: usize,
    pub presence_interval: Duration,
    pub request_timeout: Duration,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub nkey_seed: Option<Secret>,
    pub credentials_file: Option<PathBuf>,
    pub tls: bool,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

/// `[irc]`, read by `holdfast irc`.
#[derive(Debug, Clone, PartialEq)]
pub struct Irc {
    /// `host:port` of the IRC server.
    pub server: String,
    /// Connect with TLS.
    pub tls: bool,
    /// Trust this PEM file instead of the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Accept any certificate (testing only; logged as a warning).
    pub tls_insecure: bool,
    /// `PASS` sent before registering.
    pub server_password: Option<Secret>,
    /// The nick wanted.
    pub nick: String,
    /// Nicks tried, in order, when `nick` is taken.
    pub alt_nicks: Vec<String>,
    /// The user name (ident).
    pub user: String,
    /// The real name (gecos).
    pub realname: String,
    /// Channels joined and posted to.
    pub channels: Vec<String>,
    /// SASL PLAIN account; with `sasl_password` enables SASL.
    pub sasl_user: Option<String>,
    /// SASL PLAIN password.
    pub sasl_password: Option<Secret>,
    /// `IDENTIFY` to NickServ after registering (when SASL is not used).
    pub nickserv_password: Option<Secret>,
    /// Post logins and logouts.
    pub post_logins: bool,
    /// mIRC colours in lines.
    pub colors: bool,
    /// `nick!user@host` masks allowed to run commands that change state.
    pub admins: Vec<String>,
    /// Services accounts allowed to run commands that change state.
    pub admin_accounts: Vec<String>,
    /// Lines per second sent to IRC.
    pub rate: f64,
    /// Lines that may be sent at once.
    pub burst: u32,
    /// Notices kept while IRC is unreachable.
    pub queue_size: usize,
    /// Burst summary window.
    pub summarize_window: Duration,
    /// Presence silence after which an instance is reported vanished.
    pub vanish_after: Duration,
    /// Longest wait between IRC reconnect attempts.
    pub reconnect_max: Duration,
    /// `[irc.formats]`.
    pub formats: IrcFormats,
}

/// `[irc.formats]`: message templates; `None` = the relay's default (see
/// `irc::format::KINDS` for the defaults and each one's placeholders).
#[derive(Debug, Clone, PartialEq, Default)]
#[allow(missing_docs)]
pub struct IrcFormats {
    pub down: Option<String>,
    pub up: Option<String>,
    pub standby_down: Option<String>,
    pub standby_up: Option<String>,
    pub failover: Option<String>,
    pub reload_failed: Option<String>,
    pub vanished: Option<String>,
    pub back: Option<String>,
    pub login: Option<String>,
    pub logout: Option<String>,
    pub logins_summary: Option<String>,
    pub logouts_summary: Option<String>,
    pub flapping: Option<String>,
    pub late: Option<String>,
}

/// The validated configuration the program runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for reloads and messages).
    pub path: PathBuf,
    /// `game`: shown in notices as `{game}`.
    pub game: String,
    /// `flavor`.
    pub flavor: Flavor,
    /// `[listen]`.
    pub listen: Listen,
    /// `[[backends]]`, in order of preference.
    pub backends: Vec<Backend>,
    /// `[heartbeat]`.
    pub heartbeat: Heartbeat,
    /// `[failover]`.
    pub failover: Failover,
    /// `[client_ip]`.
    pub client_ip: ClientIp,
    /// `[notices]`.
    pub notices: Notices,
    /// `[outage]`.
    pub outage: Outage,
    /// `[relogin]`.
    pub relogin: Relogin,
    /// `[templates]`.
    pub templates: Templates,
    /// `[limits]`.
    pub limits: Limits,
    /// `[telnet]`.
    pub telnet: Telnet,
    /// `[bus]`.
    pub bus: Bus,
    /// `[irc]`, if present.
    pub irc: Option<Irc>,
    /// TLS, WebSocket and MSSP: `listen.tls_addrs` and friends, `[tls]`,
    /// `[mssp]`.
    pub doors: Doors,
    /// Line and column of each backend's `addr`, for checks that only
    /// `holdfast check` makes (a Unix socket that does not exist yet is
    /// fine for a running proxy: the game is just down).
    pub backend_addr_pos: Vec<(usize, usize)>,
    /// A secret (password, token) is written in the file itself.
    pub has_inline_secret: bool,
    /// Things worth telling the operator that are not errors.
    pub warnings: Vec<String>,
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: 1,
            col: 1,
            message: format!("cannot read the config file: {e}"),
        })?;
        let mut cfg = Config::parse(path, &text)?;
        if cfg.has_inline_secret {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(m) = std::fs::metadata(path) {
                if m.permissions().mode() & 0o004 != 0 {
                    cfg.warnings.push(format!(
                        "{} holds a password and is readable by every user: chmod o-r it, or use password_env / password_file",
                        path.display()
                    ));
                }
            }
        }
        Ok(cfg)
    }

    /// Parses and validates `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let cx = Cx {
            path,
            text,
            inline_secret: std::cell::Cell::new(false),
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_string();
            cx.err(e.span(), msg)
        })?;
        resolve(&cx, raw)
    }

    /// The backend called `name`.
    pub fn backend(&self, name: &str) -> Option<&Backend> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// The preferred backend (the first).
    pub fn preferred(&self) -> &Backend {
        // validate() rejects an empty backend list.
        &self.backends[0]
    }
}

/// Context for building errors with positions.
struct Cx<'a> {
    path: &'a Path,
    text: &'a str,
    /// Set when a secret was written in the file itself.
    inline_secret: std::cell::Cell<bool>,
}

impl Cx<'_> {
    fn err(&self, span: Option<Range<usize>>, message: impl Into<String>) -> ConfigError {
        let (line, col) = match span {
            Some(s) => line_col(self.text, s.start),
            None => (1, 1),
        };
        ConfigError {
            file: self.path.to_owned(),
            line,
            col,
            message: message.into(),
        }
    }

    fn at<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.err(Some(s.span()), message)
    }
}

/// 1-based line and column (in characters) of byte offset `pos`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = &text[..text.floor_char_boundary(pos)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// Resolves a secret given inline, through an environment variable or in a file.
fn secret(
    cx: &Cx<'_>,
    inline: Option<String>,
    env: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(var) = env {
        return match std::env::var(var.get_ref()) {
            Ok(v) => Ok(Some(Secret::new(v))),
            Err(_) => Err(cx.at(
                &var,
                format!("environment variable {} is not set", var.get_ref()),
            )),
        };
    }
    if let Some(f) = file {
        return match std::fs::read_to_string(f.get_ref()) {
            Ok(v) => Ok(Some(Secret::new(v.trim_end_matches(['\r', '\n'])))),
            Err(e) => Err(cx.at(&f, format!("cannot read {}: {e}", f.get_ref()))),
        };
    }
    if inline.is_some() {
        cx.inline_secret.set(true);
    }
    Ok(inline.map(Secret::new))
}

fn regexes(
    cx: &Cx<'_>,
    over: Option<Vec<Spanned<String>>>,
    preset: &[&str],
) -> Result<Vec<Regex>, ConfigError> {
    match over {
        Some(list) => list
            .iter()
            .map(|s| Regex::new(s.get_ref()).map_err(|e| cx.at(s, format!("invalid regex: {e}"))))
            .collect(),
        // The presets are literals checked by a unit test.
        None => Ok(preset
            .iter()
            .map(|p| Regex::new(p).expect("preset regex"))
            .collect()),
    }
}

fn default_instance() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "holdfast".to_string())
}

fn resolve(cx: &Cx<'_>, mut raw: RawConfig) -> Result<Config, ConfigError> {
    let flavor = raw.flavor.unwrap_or_default();
    let preset = flavor::preset(flavor);

    // [listen] front doors, [tls], [mssp]
    let doors = {
        let l = &mut raw.listen;
        let r = doors::RawDoorAddrs {
            tls_addrs: l.tls_addrs.take(),
            ws_addrs: l.ws_addrs.take(),
            wss_addrs: l.wss_addrs.take(),
            ws_trusted_proxies: l.ws_trusted_proxies.take(),
            handshake_timeout: l.handshake_timeout.take(),
            ws_ping_interval: l.ws_ping_interval.take(),
        };
        doors::resolve(cx, r, raw.tls.take(), raw.mssp.take())?
    };

    // [listen]
    let listen = {
        let l = raw.listen;
        let addrs = match l.addrs {
            None => vec![defaults::LISTEN.parse().expect("default listen address")],
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(cx.at(&list, "listen.addrs is empty: give at least one address"));
                }
                let mut out = Vec::new();
                for a in list.get_ref() {
                    let sa: SocketAddr = a.get_ref().parse().map_err(|_| {
                        cx.at(
                            a,
                            format!(
                                "invalid listen address {:?}: write it as IP:PORT, e.g. \"0.0.0.0:4201\" or \"[::]:4201\"",
                                a.get_ref()
                            ),
                        )
                    })?;
                    out.push(sa);
                }
                out
            }
        };
        Listen {
            addrs,
            max_sessions: l.max_sessions.unwrap_or(defaults::MAX_SESSIONS),
            max_per_ip: l.max_per_ip.unwrap_or(defaults::MAX_PER_IP),
            login_timeout: l
                .login_timeout
                .map(|d| d.0)
                .unwrap_or(Some(defaults::LOGIN_TIMEOUT)),
        }
    };

    // [[backends]]
    let mut addr_pos = Vec::new();
    let backends = {
        let Some(list) = raw.backends else {
            return Err(cx.err(
                None,
                "no [[backends]]: give at least one backend (name and addr)",
            ));
        };
        if list.get_ref().is_empty() {
            return Err(cx.at(&list, "backends is empty: give at least one backend"));
        }
        let mut out: Vec<Backend> = Vec::new();
        for b in list.into_inner() {
            addr_pos.push(line_col(cx.text, b.addr.span().start));
            let name = b.name.get_ref().trim().to_string();
            if name.is_empty() || name.contains(char::is_whitespace) || name.contains('.') {
                return Err(cx.at(
                    &b.name,
                    "backend name must be non-empty, without spaces or dots",
                ));
            }
            if out.iter().any(|o| o.name == name) {
                return Err(cx.at(&b.name, format!("duplicate backend name {name:?}")));
            }
            let addr = parse_backend_addr(b.addr.get_ref()).map_err(|m| cx.at(&b.addr, m))?;
            out.push(Backend {
                name,
                addr,
                connect_timeout: b
                    .connect_timeout
                    .map(|d| d.0)
                    .unwrap_or(defaults::CONNECT_TIMEOUT),
            });
        }
        out
    };

    // [heartbeat]
    let heartbeat = {
        let h = raw.heartbeat;
        let password = secret(cx, h.password, h.password_env, h.password_file)?;
        let positive =
            |v: Option<Spanned<u32>>, what: &str, dflt: u32| -> Result<u32, ConfigError> {
                match v {
                    None => Ok(dflt),
                    Some(s) if *s.get_ref() == 0 => {
                        Err(cx.at(&s, format!("heartbeat.{what} must be at least 1")))
                    }
                    Some(s) => Ok(*s.get_ref()),
                }
            };
        Heartbeat {
            user: h.user.filter(|u| !u.is_empty()),
            password,
            interval: h.interval.map(|d| d.0).unwrap_or(defaults::HB_INTERVAL),
            timeout: h.timeout.map(|d| d.0).unwrap_or(defaults::HB_TIMEOUT),
            fall: positive(h.fall, "fall", defaults::HB_FALL)?,
            rise: positive(h.rise, "rise", defaults::HB_RISE)?,
        }
    };

    let failover = Failover {
        after: raw
            .failover
            .after
            .map(|d| d.0)
            .unwrap_or(Some(defaults::FAILOVER_AFTER)),
        failback: raw.failover.failback.unwrap_or(false),
    };

    // [client_ip]
    let client_ip = {
        let c = raw.client_ip;
        // PennMUSH only learns a player's address through its Unix
        // socket's header; on TCP it has no way at all.
        let all_unix = backends
            .iter()
            .all(|b| matches!(b.addr, BackendAddr::Unix(_)));
        let default_mode = if flavor == Flavor::Pennmush && all_unix {
            ClientIpMode::Pennmush
        } else {
            preset.client_ip
        };
        let mode = c.mode.unwrap_or(default_mode);
        let command = match &c.command {
            Some(s) => {
                if !s.get_ref().contains("{ip}") {
                    return Err(cx.at(s, "client_ip.command must contain {ip}"));
                }
                s.get_ref().clone()
            }
            None => "@remotehost {ip}".to_string(),
        };
        let command_word = command
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        ClientIp {
            mode,
            command,
            command_word,
            reverse_dns: c.reverse_dns.unwrap_or(false),
        }
    };

    let n = raw.notices;
    let notices = Notices {
        offline: n.offline.unwrap_or_else(|| {
            "[holdfast] {game} is down. Your connection is being held; you will be logged back in when it returns.".into()
        }),
        online: n.online.unwrap_or_else(|| {
            "[holdfast] {game} is back (down for {downtime}). You have been logged back in.".into()
        }),
        held_input: n.held_input.unwrap_or_else(|| {
            "[holdfast] {game} is down; that was not sent. Type QUIT to leave.".into()
        }),
        queued_input: n.queued_input.unwrap_or_else(|| {
            "[holdfast] {game} is down; queued, it will be sent when you are logged back in.".into()
        }),
        relogin_failed: n.relogin_failed.unwrap_or_else(|| {
            "[holdfast] {game} is back, but logging you back in failed. Please log in by hand.".into()
        }),
        failover: n.failover.unwrap_or_else(|| {
            "[holdfast] Moving you to {backend}; you will be logged back in.".into()
        }),
        max_hold: n.max_hold.unwrap_or_else(|| {
            "[holdfast] {game} has been down for {downtime}; giving up. Please reconnect later.".into()
        }),
        stopping: n.stopping.unwrap_or_else(|| {
            "[holdfast] The proxy for {game} is stopping. Please reconnect in a moment.".into()
        }),
        full: n.full.unwrap_or_else(|| "[holdfast] {game} is full right now. Please try again later.".into()),
        per_ip: n.per_ip.unwrap_or_else(|| {
            "[holdfast] Too many connections from your address.".into()
        }),
        login_timeout: n.login_timeout.unwrap_or_else(|| {
            "[holdfast] You did not log in in time. Goodbye.".into()
        }),
        line_too_long: n.line_too_long.unwrap_or_else(|| {
            "[holdfast] That line was too long and has been cut.".into()
        }),
        flood: n.flood.unwrap_or_else(|| {
            "[holdfast] You are sending too fast; slow down or you will be disconnected.".into()
        }),
        connecting: n.connecting.unwrap_or_else(|| {
            "[holdfast] {game} is down right now. Hold on: you will get its connect screen when it is back.".into()
        }),
    };

    let outage = Outage {
        max_hold: raw
            .outage
            .max_hold
            .map(|d| d.0)
            .unwrap_or(Some(defaults::MAX_HOLD)),
        queue_input: raw.outage.queue_input.unwrap_or(false),
        queue_max_lines: raw
            .outage
            .queue_max_lines
            .unwrap_or(defaults::QUEUE_MAX_LINES),
        queue_max_age: raw
            .outage
            .queue_max_age
            .map(|d| d.0)
            .unwrap_or(defaults::QUEUE_MAX_AGE),
    };

    let relogin = Relogin {
        rate: match raw.relogin.rate {
            Some(r) if r.get_ref().is_nan() || *r.get_ref() <= 0.0 => {
                return Err(cx.at(&r, "relogin.rate must be above 0 (re-logins per second)"))
            }
            Some(r) => *r.get_ref(),
            None => defaults::RELOGIN_RATE,
        },
        burst: raw.relogin.burst.unwrap_or(defaults::RELOGIN_BURST).max(1),
        jitter: raw
            .relogin
            .jitter
            .map(|d| d.0)
            .unwrap_or(defaults::RELOGIN_JITTER),
        timeout: raw
            .relogin
            .timeout
            .map(|d| d.0)
            .unwrap_or(defaults::RELOGIN_TIMEOUT),
    };

    let templates = {
        let t = raw.templates;
        let need_nonce = |s: Option<Spanned<String>>,
                          dflt: &str,
                          what: &str,
                          may_be_empty: bool|
         -> Result<String, ConfigError> {
            match s {
                None => Ok(dflt.to_string()),
                Some(s) if s.get_ref().is_empty() && may_be_empty => Ok(String::new()),
                Some(s) if !s.get_ref().contains("{nonce}") => {
                    Err(cx.at(&s, format!("templates.{what} must contain {{nonce}}")))
                }
                Some(s) => Ok(s.into_inner()),
            }
        };
        let login = match t.login {
            Some(s) if !s.get_ref().contains("{name}") || !s.get_ref().contains("{password}") => {
                return Err(cx.at(&s, "templates.login must contain {name} and {password}"))
            }
            Some(s) => s.into_inner(),
            None => preset.login.to_string(),
        };
        Templates {
            probe: need_nonce(t.probe, preset.probe, "probe", false)?,
            login,
            marker: need_nonce(t.marker, preset.marker, "marker", true)?,
            quit: t.quit.unwrap_or_else(|| preset.quit.to_string()),
            login_success: regexes(cx, t.login_success, preset.login_success)?,
            login_failure: regexes(cx, t.login_failure, preset.login_failure)?,
            login_confirm_timeout: t
                .login_confirm_timeout
                .map(|d| d.0)
                .unwrap_or(defaults::LOGIN_CONFIRM_TIMEOUT),
            sync: preset.sync,
        }
    };

    let l = raw.limits;
    let limits = Limits {
        max_line: l.max_line.unwrap_or(defaults::MAX_LINE).max(64),
        write_timeout: l
            .write_timeout
            .map(|d| d.0)
            .unwrap_or(defaults::WRITE_TIMEOUT),
        max_unauthenticated: l
            .max_unauthenticated
            .unwrap_or(defaults::MAX_UNAUTHENTICATED),
        conn_rate_per_ip: l
            .conn_rate_per_ip
            .unwrap_or(defaults::CONN_RATE_PER_IP)
            .max(0.0),
        conn_burst_per_ip: l
            .conn_burst_per_ip
            .unwrap_or(defaults::CONN_BURST_PER_IP)
            .max(1),
        input_lines_per_sec: l
            .input_lines_per_sec
            .unwrap_or(defaults::INPUT_LINES_PER_SEC)
            .max(0.0),
        input_burst: l.input_burst.unwrap_or(defaults::INPUT_BURST).max(1),
        max_subnegotiation: l.max_subnegotiation.unwrap_or(defaults::MAX_SUBNEG).max(64),
    };

    let telnet = Telnet {
        mccp: raw.telnet.mccp.unwrap_or(defaults::PLAYER_MCCP),
        backend_mccp: raw.telnet.backend_mccp.unwrap_or(defaults::BACKEND_MCCP),
    };

    let bus = {
        let b = raw.bus;
        let mut servers = Vec::new();
        for s in b.servers.unwrap_or_default() {
            if s.get_ref().parse::<async_nats::ServerAddr>().is_err() {
                return Err(cx.at(
                    &s,
                    format!(
                        "bus.servers: {:?} is not a NATS server URL (nats://host:port or tls://host:port)",
                        s.get_ref()
                    ),
                ));
            }
            servers.push(s.into_inner());
        }
        // Files the client reads when it starts: a typo should fail
        // `holdfast check`, not silently leave the proxy without its bus.
        let file = |f: Option<Spanned<String>>,
                    key: &str|
         -> Result<Option<PathBuf>, ConfigError> {
            match f {
                None => Ok(None),
                Some(f) => match std::fs::metadata(f.get_ref()) {
                    Ok(m) if m.is_file() => Ok(Some(PathBuf::from(f.into_inner()))),
                    Ok(_) => Err(cx.at(&f, format!("bus.{key}: {} is not a file", f.get_ref()))),
                    Err(e) => {
                        Err(cx.at(&f, format!("bus.{key}: cannot read {}: {e}", f.get_ref())))
                    }
                },
            }
        };
        if b.tls_cert_file.is_some() != b.tls_key_file.is_some() {
            let at = b.tls_cert_file.as_ref().or(b.tls_key_file.as_ref());
            return Err(cx.err(
                at.map(|s| s.span()),
                "bus.tls_cert_file and bus.tls_key_file go together (client certificate)",
            ));
        }
        let subject_prefix =
            match b.subject_prefix {
                Some(p) if !valid_subject_token_path(p.get_ref()) => return Err(cx.at(
                    &p,
                    "bus.subject_prefix must be dot-separated tokens without spaces or wildcards",
                )),
                Some(p) => p.into_inner(),
                None => defaults::SUBJECT_PREFIX.to_string(),
            };
        let instance = match b.instance {
            Some(i) if i.get_ref().is_empty() || i.get_ref().contains(['.', ' ', '*', '>']) => {
                return Err(cx.at(
                    &i,
                    "bus.instance must be one subject token (no dots, spaces or wildcards)",
                ))
            }
            Some(i) => i.into_inner(),
            None => default_instance().replace(['.', ' ', '*', '>'], "-"),
        };
        Bus {
            servers,
            subject_prefix,
            instance,
            publish_ip: b.publish_ip.unwrap_or(false),
            queue_size: b.queue_size.unwrap_or(defaults::BUS_QUEUE).max(1),
            presence_interval: b
                .presence_interval
                .map(|d| d.0)
                .unwrap_or(defaults::PRESENCE_INTERVAL),
            request_timeout: b
                .request_timeout
                .map(|d| d.0)
                .unwrap_or(defaults::REQUEST_TIMEOUT),
            user: b.user,
            password: secret(cx, b.password, b.password_env, b.password_file)?,
            token: secret(cx, b.token, b.token_env, None)?,
            nkey_seed: secret(cx, b.nkey_seed, b.nkey_seed_env, b.nkey_seed_file)?,
            credentials_file: file(b.credentials_file, "credentials_file")?,
            tls: b.tls.unwrap_or(false),
            tls_ca_file: file(b.tls_ca_file, "tls_ca_file")?,
            tls_cert_file: file(b.tls_cert_file, "tls_cert_file")?,
            tls_key_file: file(b.tls_key_file, "tls_key_file")?,
        }
    };

    let irc = match raw.irc {
        None => None,
        Some(i) => Some(resolve_irc(cx, i)?),
    };

    Ok(Config {
        path: cx.path.to_owned(),
        game: raw.game.unwrap_or_else(|| "the game".to_string()),
        flavor,
        listen,
        backends,
        heartbeat,
        failover,
        client_ip,
        notices,
        outage,
        relogin,
        templates,
        limits,
        telnet,
        bus,
        irc,
        doors,
        backend_addr_pos: addr_pos,
        has_inline_secret: cx.inline_secret.get(),
        warnings: Vec::new(),
    })
}

/// A short human summary of `cfg`, as `holdfast check` prints it.
pub fn summary(cfg: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let d = |d: Option<Duration>| {
        d.map(|d| humantime::format_duration(d).to_string())
            .unwrap_or_else(|| "off".into())
    };
    let _ = writeln!(s, "{}: ok", cfg.path.display());
    let _ = writeln!(s, "  game:      {} (flavor {})", cfg.game, cfg.flavor);
    let addrs: Vec<String> = cfg.listen.addrs.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(
        s,
        "  listen:    {} (max {} sessions, {} per IP, login timeout {})",
        addrs.join(", "),
        cfg.listen.max_sessions,
        cfg.listen.max_per_ip,
        d(cfg.listen.login_timeout)
    );
    let doors = crate::front::addrs(cfg);
    if !doors.is_empty() {
        let list: Vec<String> = doors
            .iter()
            .map(|(d, a)| format!("{} {a}", d.as_str()))
            .collect();
        let _ = writeln!(s, "  doors:     {}", list.join(", "));
    }
    if let Some(t) = &cfg.doors.tls {
        let _ = writeln!(
            s,
            "  tls:       {} with {} (the key matches)",
            t.cert_file.display(),
            t.key_file.display()
        );
    }
    if cfg.doors.mssp_enabled {
        let _ = writeln!(
            s,
            "  mssp:      answered by holdfast ({} variables set)",
            cfg.doors.mssp.len()
        );
    }
    for (i, b) in cfg.backends.iter().enumerate() {
        let role = if i == 0 { " (preferred)" } else { "" };
        let _ = writeln!(s, "  backend:   {} {}{}", b.name, b.addr, role);
    }
    let hb = &cfg.heartbeat;
    let _ = writeln!(
        s,
        "  heartbeat: {} every {}, timeout {}, fall {}, rise {}",
        hb.user
            .as_deref()
            .map(|u| format!("as {u}"))
            .unwrap_or_else(|| "connect-only".into()),
        d(Some(hb.interval)),
        d(Some(hb.timeout)),
        hb.fall,
        hb.rise
    );
    let _ = writeln!(
        s,
        "  failover:  after {}, failback {}",
        d(cfg.failover.after),
        if cfg.failover.failback { "on" } else { "off" }
    );
    let ip = match cfg.client_ip.mode {
        ClientIpMode::Command => format!("command {:?}", cfg.client_ip.command),
        m => m.to_string(),
    };
    let _ = writeln!(s, "  client ip: {ip}");
    if cfg.bus.servers.is_empty() {
        let _ = writeln!(s, "  bus:       none (running alone)");
    } else {
        let _ = writeln!(
            s,
            "  bus:       {} (prefix {}, instance {})",
            cfg.bus.servers.join(", "),
            cfg.bus.subject_prefix,
            cfg.bus.instance
        );
    }
    if let Some(irc) = &cfg.irc {
        let _ = writeln!(
            s,
            "  irc:       {} as {} in {}",
            irc.server,
            irc.nick,
            irc.channels.join(" ")
        );
    }
    s
}

fn resolve_irc(cx: &Cx<'_>, i: RawIrc) -> Result<Irc, ConfigError> {
    let server = match i.server {
        Some(s) if !s.get_ref().contains(':') => {
            return Err(cx.at(&s, "irc.server must be host:port"))
        }
        Some(s) => s.into_inner(),
        None => defaults::IRC_SERVER.to_string(),
    };
    let channels = match i.channels {
        Some(c) => {
            if let Some(bad) = c
                .get_ref()
                .iter()
                .find(|ch| !ch.starts_with(['#', '&', '+', '!']) || ch.contains([' ', ',', '\x07']))
            {
                return Err(cx.at(
                    &c,
                    format!("irc channel {bad:?} must start with # and have no spaces or commas"),
                ));
            }
            c.into_inner()
        }
        None => Vec::new(),
    };
    let nick = i.nick.unwrap_or_else(|| defaults::IRC_NICK.to_string());
    let rate = match i.rate {
        Some(r) if r.get_ref().is_nan() || *r.get_ref() <= 0.0 => {
            return Err(cx.at(&r, "irc.rate must be above 0 (lines per second)"))
        }
        Some(r) => *r.get_ref(),
        None => defaults::IRC_RATE,
    };
    let f = i.formats;
    let fmt = |kind: &str, s: Option<Spanned<String>>| -> Result<Option<String>, ConfigError> {
        match s {
            None => Ok(None),
            Some(s) => match crate::irc::format::check(kind, s.get_ref()) {
                Ok(()) => Ok(Some(s.into_inner())),
                Err(e) => Err(cx.at(&s, e)),
            },
        }
    };
    let sasl_password = secret(cx, i.sasl_password, i.sasl_password_env, None)?;
    Ok(Irc {
        server,
        tls: i.tls.unwrap_or(false),
        tls_ca_file: i.tls_ca_file.map(|s| PathBuf::from(s.into_inner())),
        tls_insecure: i.tls_insecure.unwrap_or(false),
        server_password: secret(cx, i.server_password, i.server_password_env, None)?,
        alt_nicks: i.alt_nicks.unwrap_or_default(),
        user: i.user.unwrap_or_else(|| nick.clone()),
        realname: i.realname.unwrap_or_else(|| "holdfast relay".to_string()),
        // SASL needs an account; it defaults to the nick.
        sasl_user: i
            .sasl_user
            .or_else(|| sasl_password.as_ref().map(|_| nick.clone())),
        nick,
        channels,
        sasl_password,
        nickserv_password: secret(cx, i.nickserv_password, i.nickserv_password_env, None)?,
        post_logins: i.post_logins.unwrap_or(false),
        colors: i.colors.unwrap_or(false),
        admins: i.admins.unwrap_or_default(),
        admin_accounts: i.admin_accounts.unwrap_or_default(),
        rate,
        burst: i.burst.unwrap_or(defaults::IRC_BURST).max(1),
        queue_size: i.queue_size.unwrap_or(defaults::IRC_QUEUE).max(1),
        summarize_window: i
            .summarize_window
            .map(|d| d.0)
            .unwrap_or(defaults::IRC_SUMMARIZE_WINDOW)
            .max(Duration::from_millis(100)),
        vanish_after: i
            .vanish_after
            .map(|d| d.0)
            .unwrap_or(defaults::IRC_VANISH_AFTER),
        reconnect_max: i
            .reconnect_max
            .map(|d| d.0)
            .unwrap_or(defaults::IRC_RECONNECT_MAX)
            .max(Duration::from_secs(1)),
        formats: IrcFormats {
            down: fmt("down", f.down)?,
            up: fmt("up", f.up)?,
            standby_down: fmt("standby_down", f.standby_down)?,
            standby_up: fmt("standby_up", f.standby_up)?,
            failover: fmt("failover", f.failover)?,
            reload_failed: fmt("reload_failed", f.reload_failed)?,
            vanished: fmt("vanished", f.vanished)?,
            back: fmt("back", f.back)?,
            login: fmt("login", f.login)?,
            logout: fmt("logout", f.logout)?,
            logins_summary: fmt("logins_summary", f.logins_summary)?,
            logouts_summary: fmt("logouts_summary", f.logouts_summary)?,
            flapping: fmt("flapping", f.flapping)?,
            late: fmt("late", f.late)?,
        },
    })
}

fn valid_subject_token_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|t| {
            !t.is_empty() && !t.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
        })
}

fn parse_backend_addr(s: &str) -> Result<BackendAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a socket path, e.g. \"unix:/srv/game/netmush.sock\"".into());
        }
        return Ok(BackendAddr::Unix(PathBuf::from(path)));
    }
    let bad = || format!("invalid backend address {s:?}: write it as host:port or unix:/path");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
        return Err(bad());
    }
    Ok(BackendAddr::Tcp(s.to_string()))
}

#[cfg(test)]
mod tests;
