//! `[metrics]`: where the Prometheus and health endpoint listens (off
//! unless `addr` is set).

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Cx};

/// `[metrics]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    addr: Option<Spanned<String>>,
}

/// `[metrics]`, resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    /// `/metrics`, `/healthz` and `/livez` are served here; `None`: off.
    pub addr: Option<SocketAddr>,
}

pub(super) fn resolve(cx: &Cx<'_>, raw: RawMetrics) -> Result<Metrics, ConfigError> {
    let addr = match raw.addr {
        None => None,
        Some(a) => Some(a.get_ref().parse().map_err(|_| {
            cx.at(
                &a,
                format!(
                    "invalid metrics address {:?}: write it as IP:PORT, e.g. \"127.0.0.1:9201\"",
                    a.get_ref()
                ),
            )
        })?),
    };
    Ok(Metrics { addr })
}
