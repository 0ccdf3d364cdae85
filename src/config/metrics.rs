//! `[metrics]`: where the Prometheus and health endpoint listens (off
//! unless `addr` is set).

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::cx::{ConfigError, Cx};

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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const MIN: &str = "[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:4202\"\n";

    #[test]
    fn off_by_default_and_parsed_when_set() {
        let c = Config::parse(Path::new("t.toml"), MIN).unwrap();
        assert_eq!(c.metrics.addr, None);
        let text = format!("{MIN}[metrics]\naddr = \"127.0.0.1:9201\"\n");
        let c = Config::parse(Path::new("t.toml"), &text).unwrap();
        assert_eq!(c.metrics.addr, Some("127.0.0.1:9201".parse().unwrap()));
    }

    #[test]
    fn a_bad_address_names_its_place() {
        let text = format!("{MIN}[metrics]\naddr = \"localhost\"\n");
        let e = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        assert_eq!((e.line, e.col), (5, 8), "{e}");
        assert!(e.message.contains("invalid metrics address"), "{e}");
        let text = format!("{MIN}[metrics]\nport = 1\n");
        let e = Config::parse(Path::new("t.toml"), &text).unwrap_err();
        assert_eq!(e.line, 5, "{e}");
    }
}
