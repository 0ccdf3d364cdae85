//! `[listen]`: where players connect, and how many may.

use std::net::SocketAddr;
use std::time::Duration;

use super::cx::{positive_or_off, ConfigError, Cx};
use super::defaults;
use super::raw::RawListen;

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
    /// Detached sessions kept at once; the oldest ends first.
    pub max_detached: usize,
    /// A new player gets the connect screen the heartbeat saw; the game
    /// connection opens with the player's first line. Default: on for
    /// TinyMUX and TinyMUSH when the game sees every player at holdfast's
    /// address (`client_ip.mode = "none"`), whose per-address limits count
    /// players waiting at the connect screen.
    pub lazy_connect: bool,
}

pub(super) fn resolve(cx: &Cx<'_>, l: RawListen) -> Result<Listen, ConfigError> {
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
    Ok(Listen {
        addrs,
        max_sessions: l.max_sessions.unwrap_or(defaults::MAX_SESSIONS),
        max_per_ip: l.max_per_ip.unwrap_or(defaults::MAX_PER_IP),
        max_detached: l.max_detached.unwrap_or(defaults::MAX_DETACHED),
        // Settled in `config::resolve`, which knows the flavor.
        lazy_connect: l.lazy_connect.unwrap_or(false),
        login_timeout: positive_or_off(
            cx,
            l.login_timeout,
            "listen.login_timeout",
            Some(defaults::LOGIN_TIMEOUT),
        )?,
    })
}
