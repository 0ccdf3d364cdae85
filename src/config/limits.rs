//! `[limits]` and `[telnet]`: protection against abuse and slow players,
//! and the telnet options holdfast itself offers.

use std::time::Duration;

use super::cx::{positive, ConfigError, Cx};
use super::defaults;
use super::raw::{RawLimits, RawTelnet};

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

pub(super) fn resolve_limits(cx: &Cx<'_>, l: RawLimits) -> Result<Limits, ConfigError> {
    Ok(Limits {
        max_line: l.max_line.unwrap_or(defaults::MAX_LINE).max(64),
        write_timeout: positive(
            cx,
            l.write_timeout,
            "limits.write_timeout",
            defaults::WRITE_TIMEOUT,
        )?,
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
    })
}

pub(super) fn resolve_telnet(t: RawTelnet) -> Telnet {
    Telnet {
        mccp: t.mccp.unwrap_or(defaults::PLAYER_MCCP),
        backend_mccp: t.backend_mccp.unwrap_or(defaults::BACKEND_MCCP),
    }
}
