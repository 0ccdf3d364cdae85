//! Configuration: parse the TOML strictly, fill in named defaults, validate,
//! and resolve into [`Config`], the type the rest of the program uses.
//!
//! Every error names the file, line and column (`FILE:LINE:COL: message`),
//! whether it comes from TOML syntax, an unknown key, a bad value or a
//! cross-field check such as a duplicate backend name.
//!
//! | file | its one job |
//! | --- | --- |
//! | `raw.rs` | the file as written: serde types, `deny_unknown_fields` |
//! | `cx.rs` | [`ConfigError`] with positions; secrets, regexes, durations |
//! | `defaults.rs` | named defaults |
//! | `flavor.rs` | per-flavor presets (templates, client-ip mode) |
//! | `listen.rs`, `backends.rs`, `heartbeat.rs`, `failover.rs`, `client_ip.rs`, `notices.rs`, `outage.rs` (and `[relogin]`), `templates.rs`, `limits.rs` (and `[telnet]`), `bus.rs`, `irc.rs` | one section each: its resolved type and the checks that resolve it |
//! | `resume.rs`, `metrics.rs` | `[resume]`, `[metrics]` |
//! | `summary.rs` | what `holdfast check` prints |
//! | `keys.rs` | every key the file accepts, read off the `raw.rs` types (for the docs' check) |

mod backends;
mod bus;
mod client_ip;
mod cx;
pub mod defaults;
mod doors;
mod failover;
mod flavor;
mod heartbeat;
mod irc;
pub mod keys;
mod limits;
mod listen;
mod metrics;
mod notices;
mod outage;
mod raw;
mod resume;
mod summary;
mod templates;
mod values;

use std::path::{Path, PathBuf};

use cx::Cx;
use raw::RawConfig;

pub use backends::{Backend, BackendAddr};
pub use bus::{
    valid_stream_name, Bus, Cluster, DEFAULT_LEASE, DEFAULT_RPC_ALLOW, DEFAULT_STREAM,
    DEFAULT_STREAM_MAX_AGE, RPC_METHODS,
};
pub use client_ip::ClientIp;
pub use cx::ConfigError;
pub use doors::{Cidr, Doors, MsspMode, Tls};
pub use failover::Failover;
pub use flavor::QuitMatch;
pub use heartbeat::{Heartbeat, MIN_INTERVAL as MIN_HEARTBEAT_INTERVAL};
pub use irc::{Irc, IrcFormats};
pub use limits::{Limits, Telnet};
pub use listen::Listen;
pub use metrics::Metrics;
pub use notices::Notices;
pub use outage::{Outage, Relogin};
pub use resume::{parse_size, Resume};
pub use summary::summary;
pub use templates::Templates;
pub use values::{ClientIpMode, Flavor};

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
    /// `[resume]`.
    pub resume: Resume,
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
    /// `[metrics]`.
    pub metrics: Metrics,
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
    let lazy_connect = raw.listen.lazy_connect;
    let mut listen = listen::resolve(cx, raw.listen)?;
    let (backends, backend_addr_pos) = backends::resolve(cx, raw.backends)?;
    let heartbeat = heartbeat::resolve(cx, raw.heartbeat, &preset)?;
    let failover = failover::resolve(raw.failover);
    let client_ip = client_ip::resolve(cx, raw.client_ip, flavor, &preset, &backends)?;
    // TinyMUX and TinyMUSH count players at the connect screen per
    // address; with no client address passed, all of them are holdfast's.
    listen.lazy_connect = lazy_connect.unwrap_or(
        matches!(flavor, Flavor::Tinymux | Flavor::Tinymush)
            && client_ip.mode == ClientIpMode::None,
    );
    let notices = notices::resolve(cx, raw.notices)?;
    let outage = outage::resolve_outage(cx, raw.outage)?;
    let relogin = outage::resolve_relogin(cx, raw.relogin)?;
    let resume = resume::resolve(cx, raw.resume, preset.guests)?;
    let templates = templates::resolve(cx, raw.templates, &preset)?;
    let limits = limits::resolve_limits(cx, raw.limits)?;
    let telnet = limits::resolve_telnet(raw.telnet);
    let bus = bus::resolve(cx, raw.bus)?;
    let irc = match raw.irc {
        None => None,
        Some(i) => Some(irc::resolve(cx, i)?),
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
        resume,
        templates,
        limits,
        telnet,
        bus,
        irc,
        metrics: metrics::resolve(cx, raw.metrics)?,
        doors,
        backend_addr_pos,
        has_inline_secret: cx.inline_secret.get(),
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
