//! `[limits]` and `[telnet]`: protection against abuse and slow players,
//! and the telnet options holdfast itself offers.

use std::net::{IpAddr, Ipv6Addr};
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
    /// IPv6 players whose addresses share this many leading bits count as
    /// one address for the per-IP limits (`listen.max_per_ip`,
    /// `conn_rate_per_ip`): an ISP hands a household a whole /64, so
    /// counting each of its addresses apart would give one player
    /// 2^64 allowances.
    pub ipv6_prefix: u8,
}

impl Limits {
    /// The address `ip`'s per-IP allowance is kept under: an IPv4 address
    /// itself (an IPv4-mapped IPv6 address as IPv4), an IPv6 address cut
    /// to its first [`ipv6_prefix`](Self::ipv6_prefix) bits.
    pub fn ip_group(&self, ip: IpAddr) -> IpAddr {
        ip_group(ip, self.ipv6_prefix)
    }

    /// [`ip_group`](Self::ip_group) with `prefix` for `ipv6_prefix` (for
    /// counts grouped under an earlier config).
    pub fn group_by(ip: IpAddr, prefix: u8) -> IpAddr {
        ip_group(ip, prefix)
    }
}

/// `ip` as its per-IP limits see it, IPv6 cut to `prefix` bits (see
/// [`Limits::ip_group`]).
fn ip_group(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6);
                let mask = match prefix.min(128) {
                    0 => 0,
                    p => u128::MAX << (128 - u32::from(p)),
                };
                IpAddr::V6(Ipv6Addr::from(bits & mask))
            }
        },
    }
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
        ipv6_prefix: match l.ipv6_prefix {
            None => defaults::IPV6_PREFIX,
            Some(p) => u8::try_from(*p.get_ref())
                .ok()
                .filter(|v| (1..=128).contains(v))
                .ok_or_else(|| {
                    cx.at(
                        &p,
                        "limits.ipv6_prefix must be a prefix length from 1 to 128 (64: one household's network)",
                    )
                })?,
        },
    })
}

pub(super) fn resolve_telnet(t: RawTelnet) -> Telnet {
    Telnet {
        mccp: t.mccp.unwrap_or(defaults::PLAYER_MCCP),
        backend_mccp: t.backend_mccp.unwrap_or(defaults::BACKEND_MCCP),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::Path;

    use super::ip_group;
    use crate::config::Config;

    const MIN: &str = "[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:4202\"\n";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_players_are_grouped_by_prefix() {
        let a = ip("2001:db8:1:2:aaaa::1");
        let b = ip("2001:db8:1:2:ffff:1:2:3");
        let other = ip("2001:db8:1:3::1");
        assert_eq!(ip_group(a, 64), ip("2001:db8:1:2::"));
        assert_eq!(ip_group(a, 64), ip_group(b, 64), "one /64, one allowance");
        assert_ne!(
            ip_group(a, 64),
            ip_group(other, 64),
            "the next /64 is apart"
        );
        assert_eq!(ip_group(a, 48), ip_group(other, 48));
        assert_eq!(ip_group(a, 128), a, "/128: every address apart");
        assert_eq!(ip_group(ip("2001:db8::1"), 1), ip("::"));
    }

    #[test]
    fn ipv4_is_never_grouped() {
        assert_eq!(ip_group(ip("192.0.2.7"), 64), ip("192.0.2.7"));
        assert_eq!(ip_group(ip("192.0.2.7"), 1), ip("192.0.2.7"));
        // An IPv4 player on a dual-stack socket is the IPv4 address.
        assert_eq!(ip_group(ip("::ffff:192.0.2.7"), 64), ip("192.0.2.7"));
    }

    #[test]
    fn ipv6_prefix_defaults_to_64_and_is_checked() {
        let c = Config::parse(Path::new("t.toml"), MIN).unwrap();
        assert_eq!(c.limits.ipv6_prefix, 64);
        let c = Config::parse(
            Path::new("t.toml"),
            &format!("{MIN}[limits]\nipv6_prefix = 56\n"),
        )
        .unwrap();
        assert_eq!(c.limits.ipv6_prefix, 56);
        for bad in ["0", "129", "-1"] {
            let e = Config::parse(
                Path::new("t.toml"),
                &format!("{MIN}[limits]\nipv6_prefix = {bad}\n"),
            )
            .unwrap_err();
            assert_eq!((e.line, e.col), (5, 15), "{e}");
            assert!(e.message.contains("limits.ipv6_prefix"), "{e}");
        }
    }
}
