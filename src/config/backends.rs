//! `[[backends]]`: the game servers, in order of preference.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::cx::{line_col, positive, ConfigError, Cx};
use super::defaults;
use super::raw::RawBackend;

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

/// Line and column of each backend's `addr` (see
/// [`super::Config::backend_addr_pos`]).
type AddrPositions = Vec<(usize, usize)>;

/// The backends, and where each one's `addr` is written.
pub(super) fn resolve(
    cx: &Cx<'_>,
    raw: Option<Spanned<Vec<RawBackend>>>,
) -> Result<(Vec<Backend>, AddrPositions), ConfigError> {
    let Some(list) = raw else {
        return Err(cx.err(
            None,
            "no [[backends]]: give at least one backend (name and addr)",
        ));
    };
    if list.get_ref().is_empty() {
        return Err(cx.at(&list, "backends is empty: give at least one backend"));
    }
    let mut addr_pos = Vec::new();
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
            connect_timeout: positive(
                cx,
                b.connect_timeout,
                "backends.connect_timeout",
                defaults::CONNECT_TIMEOUT,
            )?,
        });
    }
    Ok((out, addr_pos))
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
