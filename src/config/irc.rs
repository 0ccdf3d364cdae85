//! `[irc]`: the IRC relay's server, identity, channels, rate and message
//! templates (read by `holdfast irc`).

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::cx::{positive, secret, ConfigError, Cx};
use super::defaults;
use super::raw::RawIrc;
use crate::secret::Secret;
use crate::template;

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
/// `template::IRC_KINDS` for the defaults and each one's placeholders).
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

pub(super) fn resolve(cx: &Cx<'_>, i: RawIrc) -> Result<Irc, ConfigError> {
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
            Some(s) => match template::check_irc(kind, s.get_ref()) {
                Ok(()) => Ok(Some(s.into_inner())),
                Err(e) => Err(cx.at(&s, e)),
            },
        }
    };
    let sasl_password = secret(
        cx,
        "irc.sasl_password",
        i.sasl_password,
        i.sasl_password_env,
        None,
    )?;
    Ok(Irc {
        server,
        tls: i.tls.unwrap_or(false),
        tls_ca_file: i.tls_ca_file.map(|s| PathBuf::from(s.into_inner())),
        tls_insecure: i.tls_insecure.unwrap_or(false),
        server_password: secret(
            cx,
            "irc.server_password",
            i.server_password,
            i.server_password_env,
            None,
        )?,
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
        nickserv_password: secret(
            cx,
            "irc.nickserv_password",
            i.nickserv_password,
            i.nickserv_password_env,
            None,
        )?,
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
        vanish_after: positive(
            cx,
            i.vanish_after,
            "irc.vanish_after",
            defaults::IRC_VANISH_AFTER,
        )?,
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
