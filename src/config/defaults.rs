//! Named defaults, so the docs (`docs/configuration.md`) and `check` can
//! quote them.

use std::time::Duration;
/// `listen.addrs`.
pub const LISTEN: &str = "0.0.0.0:4201";
/// `listen.max_sessions`.
pub const MAX_SESSIONS: usize = 10_000;
/// `listen.max_per_ip`.
pub const MAX_PER_IP: usize = 20;
/// `listen.max_detached`.
pub const MAX_DETACHED: usize = 1000;
/// `resume.keep`.
pub const RESUME_KEEP: Duration = Duration::from_secs(600);
/// `resume.playback_lines`.
pub const PLAYBACK_LINES: usize = 500;
/// `resume.playback_bytes`.
pub const PLAYBACK_BYTES: usize = 256 * 1024;
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
/// `limits.ipv6_prefix`: IPv6 players in one /64 (one household, one
/// customer line) share the per-IP limits, as one IPv4 address does.
pub const IPV6_PREFIX: u8 = 64;
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
