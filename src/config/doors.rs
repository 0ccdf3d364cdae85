//! The front doors' settings: `listen.tls_addrs`, `listen.ws_addrs`,
//! `listen.wss_addrs`, `listen.ws_trusted_proxies`, `listen.handshake_timeout`,
//! `[tls]` and `[mssp]`.
//!
//! The certificate and key are read and checked here, while the config is
//! loaded: a missing file, a bad PEM or a key that does not match the
//! certificate is a config error (file:line:col), so `holdfast check`
//! reports it and a reload with a broken pair changes nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_rustls::rustls;
use toml::Spanned;

use super::{ConfigError, Cx};

/// Time between WebSocket pings, by default.
pub const WS_PING_INTERVAL: Duration = Duration::from_secs(30);

/// How long a TLS or WebSocket handshake may take, by default.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[tls]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert_file: Spanned<String>,
    pub key_file: Spanned<String>,
}

/// The `[listen]` keys of the front doors, as written (taken out of
/// `RawListen`).
#[derive(Debug, Default)]
pub struct RawDoorAddrs {
    pub tls_addrs: Option<Spanned<Vec<Spanned<String>>>>,
    pub ws_addrs: Option<Spanned<Vec<Spanned<String>>>>,
    pub wss_addrs: Option<Spanned<Vec<Spanned<String>>>>,
    pub ws_trusted_proxies: Option<Vec<Spanned<String>>>,
    pub handshake_timeout: Option<super::values::Dur>,
    pub ws_ping_interval: Option<super::values::Dur>,
}

/// An IP network, `ADDR/BITS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub bits: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128` or a bare address (all bits).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, b) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match b {
            Some(b) => b.trim().parse().ok().filter(|&n| n <= max)?,
            None => max,
        };
        Some(Cidr { addr, bits })
    }

    /// Whether `ip` is inside (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The loaded certificate chain and key, ready for handshakes.
#[derive(Clone)]
pub struct Tls {
    /// `tls.cert_file`.
    pub cert_file: PathBuf,
    /// `tls.key_file`.
    pub key_file: PathBuf,
    /// The rustls server config built from them (TLS 1.2 and 1.3, ring).
    pub server: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

/// The front doors, resolved.
#[derive(Debug, Clone, Default)]
pub struct Doors {
    /// `listen.tls_addrs`: telnet over TLS.
    pub tls_addrs: Vec<SocketAddr>,
    /// `listen.ws_addrs`: WebSocket (and the web client page).
    pub ws_addrs: Vec<SocketAddr>,
    /// `listen.wss_addrs`: WebSocket over TLS.
    pub wss_addrs: Vec<SocketAddr>,
    /// `listen.ws_trusted_proxies`: peers whose `X-Forwarded-For` is believed.
    pub ws_trusted_proxies: Vec<Cidr>,
    /// `listen.handshake_timeout`: TLS and WebSocket handshakes.
    pub handshake_timeout: Duration,
    /// `listen.ws_ping_interval`: time between pings; a WebSocket player
    /// that sends nothing for a whole interval after one is closed.
    pub ws_ping_interval: Duration,
    /// `[tls]`, loaded.
    pub tls: Option<Tls>,
    /// `[mssp]`: extra MSSP variables, each with one or more values.
    pub mssp: Vec<(String, Vec<String>)>,
    /// When holdfast answers MSSP itself (`[mssp]`, `mssp.enabled`).
    pub mssp_mode: MsspMode,
}

/// When holdfast answers MSSP itself rather than leaving it to the game.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MsspMode {
    /// No `[mssp]` section: once the game offered MSSP (to the probe).
    #[default]
    IfGameOffers,
    /// `[mssp]` is present (`enabled` absent or true): always.
    On,
    /// `[mssp] enabled = false`: never; the game's MSSP passes through.
    Off,
}

fn addrs(
    cx: &Cx<'_>,
    key: &str,
    list: Option<Spanned<Vec<Spanned<String>>>>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    list.get_ref()
        .iter()
        .map(|a| {
            a.get_ref().parse().map_err(|_| {
                cx.at(
                    a,
                    format!(
                        "invalid {key} address {:?}: write it as IP:PORT, e.g. \"0.0.0.0:4203\"",
                        a.get_ref()
                    ),
                )
            })
        })
        .collect()
}

/// Reads and checks the certificate chain and key of `[tls]`.
pub fn load_tls(cx: &Cx<'_>, t: &RawTls) -> Result<Tls, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_path = t.cert_file.get_ref();
    let key_path = t.key_file.get_ref();
    let cert_pem = std::fs::read(cert_path)
        .map_err(|e| cx.at(&t.cert_file, format!("cannot read {cert_path}: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cx.at(&t.cert_file, format!("{cert_path}: bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(cx.at(
            &t.cert_file,
            format!("{cert_path}: no CERTIFICATE in the file"),
        ));
    }
    let key_pem = std::fs::read(key_path)
        .map_err(|e| cx.at(&t.key_file, format!("cannot read {key_path}: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        cx.at(
            &t.key_file,
            format!("{key_path}: no usable private key: {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| cx.at(&t.key_file, format!("TLS setup: {e}")))?
        .with_no_client_auth()
        // Checks that the key belongs to the certificate, too.
        .with_single_cert(certs, key)
        .map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the key does not match the certificate".to_string()
                }
                e => e.to_string(),
            };
            cx.at(&t.key_file, format!("{key_path} and {cert_path}: {why}"))
        })?;
    Ok(Tls {
        cert_file: cert_path.into(),
        key_file: key_path.into(),
        server: Arc::new(server),
    })
}

fn mssp_values(v: &toml::Value) -> Option<Vec<String>> {
    match v {
        toml::Value::String(s) => Some(vec![s.clone()]),
        toml::Value::Integer(i) => Some(vec![i.to_string()]),
        toml::Value::Float(f) => Some(vec![f.to_string()]),
        toml::Value::Boolean(b) => Some(vec![if *b { "1" } else { "0" }.to_string()]),
        toml::Value::Array(a) => a
            .iter()
            .map(|x| {
                mssp_values(x)
                    .filter(|v| v.len() == 1)
                    .map(|mut v| v.remove(0))
            })
            .collect(),
        _ => None,
    }
}

/// Resolves the front doors' keys.
pub fn resolve(
    cx: &Cx<'_>,
    raw: RawDoorAddrs,
    tls: Option<Spanned<RawTls>>,
    mssp: Option<BTreeMap<String, Spanned<toml::Value>>>,
) -> Result<Doors, ConfigError> {
    let need_tls = [&raw.tls_addrs, &raw.wss_addrs]
        .into_iter()
        .flatten()
        .find(|l| !l.get_ref().is_empty());
    let tls = match (tls, need_tls) {
        (Some(t), _) => Some(load_tls(cx, t.get_ref())?),
        (None, Some(l)) => {
            return Err(cx.at(
                l,
                "TLS listeners need a [tls] section with cert_file and key_file",
            ))
        }
        (None, None) => None,
    };
    let mut proxies = Vec::new();
    for p in raw.ws_trusted_proxies.unwrap_or_default() {
        proxies.push(Cidr::parse(p.get_ref()).ok_or_else(|| {
            cx.at(
                &p,
                format!(
                    "invalid network {:?}: write it as ADDR/BITS, e.g. \"10.0.0.0/8\"",
                    p.get_ref()
                ),
            )
        })?);
    }
    let mut vars = Vec::new();
    let mut mssp_mode = match mssp {
        Some(_) => MsspMode::On,
        None => MsspMode::IfGameOffers,
    };
    for (k, v) in mssp.unwrap_or_default() {
        // `enabled` (lower case) is the switch; MSSP's variables are
        // upper case by convention, and `ENABLED` stays one of them.
        if k == "enabled" {
            match v.get_ref() {
                toml::Value::Boolean(true) => {}
                toml::Value::Boolean(false) => mssp_mode = MsspMode::Off,
                _ => return Err(cx.at(&v, "mssp.enabled: write true or false")),
            }
            continue;
        }
        let vals = mssp_values(v.get_ref()).ok_or_else(|| {
            cx.at(
                &v,
                format!("mssp.{k}: give a string, a number or a list of them"),
            )
        })?;
        vars.push((k.to_ascii_uppercase(), vals));
    }
    Ok(Doors {
        tls_addrs: addrs(cx, "listen.tls_addrs", raw.tls_addrs)?,
        ws_addrs: addrs(cx, "listen.ws_addrs", raw.ws_addrs)?,
        wss_addrs: addrs(cx, "listen.wss_addrs", raw.wss_addrs)?,
        ws_trusted_proxies: proxies,
        handshake_timeout: raw
            .handshake_timeout
            .map(|d| d.0)
            .unwrap_or(HANDSHAKE_TIMEOUT),
        ws_ping_interval: raw
            .ws_ping_interval
            .map(|d| d.0)
            .filter(|d| !d.is_zero())
            .unwrap_or(WS_PING_INTERVAL),
        tls,
        mssp: vars,
        mssp_mode,
    })
}

#[cfg(test)]
mod tests {
    use super::{Cidr, MsspMode};

    #[test]
    fn mssp_is_answered_by_default_and_enabled_switches_it() {
        let parse = |extra: &str| {
            crate::config::Config::parse(
                std::path::Path::new("t.toml"),
                &format!("{extra}\n[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n"),
            )
        };
        let mode = |extra: &str| parse(extra).unwrap().doors.mssp_mode;
        assert_eq!(mode(""), MsspMode::IfGameOffers);
        assert_eq!(mode("[mssp]"), MsspMode::On);
        assert_eq!(mode("[mssp]\nenabled = true"), MsspMode::On);
        let off = parse("[mssp]\nenabled = false\nHOSTNAME = \"h\"").unwrap();
        assert_eq!(off.doors.mssp_mode, MsspMode::Off);
        assert_eq!(
            off.doors.mssp,
            vec![("HOSTNAME".to_string(), vec!["h".to_string()])]
        );
        let err = parse("[mssp]\nenabled = \"no\"").unwrap_err().to_string();
        assert!(err.contains("mssp.enabled: write true or false"), "{err}");
    }

    #[test]
    fn cidr() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("nope").is_none());
    }
}
