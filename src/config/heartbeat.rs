//! `[heartbeat]`: the probe that tells a game that is up from one that is
//! down (and a player's quit from a crash).

use std::time::Duration;

use toml::Spanned;

use super::cx::{at_least, positive, secret, ConfigError, Cx};
use super::defaults;
use super::raw::RawHeartbeat;
use crate::secret::Secret;

/// The shortest `heartbeat.interval`: a probe is a login and a command on
/// the game, and faster than this it costs the game more than it tells.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

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

pub(super) fn resolve(
    cx: &Cx<'_>,
    h: RawHeartbeat,
    preset: &super::flavor::Preset,
) -> Result<Heartbeat, ConfigError> {
    let password = secret(
        cx,
        "heartbeat.password",
        h.password,
        h.password_env,
        h.password_file,
    )?;
    let count = |v: Option<Spanned<u32>>, what: &str, dflt: u32| -> Result<u32, ConfigError> {
        match v {
            None => Ok(dflt),
            Some(s) if *s.get_ref() == 0 => {
                Err(cx.at(&s, format!("heartbeat.{what} must be at least 1")))
            }
            Some(s) => Ok(*s.get_ref()),
        }
    };
    Ok(Heartbeat {
        user: h.user.filter(|u| !u.is_empty()),
        password,
        interval: at_least(
            cx,
            h.interval,
            "heartbeat.interval",
            preset.probe_interval,
            MIN_INTERVAL,
        )?,
        timeout: positive(cx, h.timeout, "heartbeat.timeout", defaults::HB_TIMEOUT)?,
        fall: count(h.fall, "fall", defaults::HB_FALL)?,
        rise: count(h.rise, "rise", defaults::HB_RISE)?,
    })
}
