//! `[outage]` and `[relogin]`: what happens to players while the game is
//! down, and how fast they are logged back in when it returns.

use std::time::Duration;

use super::cx::{positive, positive_or_off, ConfigError, Cx};
use super::defaults;
use super::raw::{RawOutage, RawRelogin};

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

pub(super) fn resolve_outage(cx: &Cx<'_>, o: RawOutage) -> Result<Outage, ConfigError> {
    Ok(Outage {
        max_hold: positive_or_off(cx, o.max_hold, "outage.max_hold", Some(defaults::MAX_HOLD))?,
        queue_input: o.queue_input.unwrap_or(false),
        queue_max_lines: o.queue_max_lines.unwrap_or(defaults::QUEUE_MAX_LINES),
        queue_max_age: positive(
            cx,
            o.queue_max_age,
            "outage.queue_max_age",
            defaults::QUEUE_MAX_AGE,
        )?,
    })
}

pub(super) fn resolve_relogin(cx: &Cx<'_>, r: RawRelogin) -> Result<Relogin, ConfigError> {
    Ok(Relogin {
        rate: match r.rate {
            Some(r) if r.get_ref().is_nan() || *r.get_ref() <= 0.0 => {
                return Err(cx.at(&r, "relogin.rate must be above 0 (re-logins per second)"))
            }
            Some(r) => *r.get_ref(),
            None => defaults::RELOGIN_RATE,
        },
        burst: r.burst.unwrap_or(defaults::RELOGIN_BURST).max(1),
        // No jitter at all is a fair choice.
        jitter: r.jitter.map(|d| d.0).unwrap_or(defaults::RELOGIN_JITTER),
        timeout: positive(cx, r.timeout, "relogin.timeout", defaults::RELOGIN_TIMEOUT)?,
    })
}
