//! Values in the file that are checked on their own as they are read:
//! durations (`"500ms"`, `"off"`), the server flavor, the client-IP mode.
//! A bad one fails inside its own `Deserialize`, which makes `toml` attach
//! its line and column.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// A duration written as a string (`"500ms"`, `"2s"`, `"5m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(de::Error::custom)
    }
}

/// A duration that may also be `"off"` (or `"never"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptDur(pub Option<Duration>);

impl<'de> Deserialize<'de> for OptDur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim() {
            "off" | "never" | "none" => Ok(OptDur(None)),
            other => parse_duration(other)
                .map(|d| OptDur(Some(d)))
                .map_err(de::Error::custom),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        format!("invalid duration {s:?} ({e}); write it like \"500ms\", \"2s\" or \"5m\"")
    })
}

/// `flavor = "..."`: which game server family the templates are preset for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// TinyMUSH 3 / 4 (the default).
    #[default]
    Tinymush,
    /// TeenyMUSH (Perl; `@remotehostname`).
    Teenymush,
    /// PennMUSH.
    Pennmush,
    /// TinyMUX.
    Tinymux,
    /// Evennia (Python; no `think`).
    Evennia,
    /// Nothing preset beyond the TinyMUSH defaults; set `[templates]`.
    Custom,
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::Tinymush => "tinymush",
            Flavor::Teenymush => "teenymush",
            Flavor::Pennmush => "pennmush",
            Flavor::Tinymux => "tinymux",
            Flavor::Evennia => "evennia",
            Flavor::Custom => "custom",
        })
    }
}

/// `client_ip.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientIpMode {
    /// Send `client_ip.command` (e.g. `@remotehost {ip}`) as the first line.
    Command,
    /// HAProxy PROXY protocol version 1 (text).
    ProxyV1,
    /// HAProxy PROXY protocol version 2 (binary).
    ProxyV2,
    /// PennMUSH's Unix-socket `IP^HOSTNAME` first line.
    Pennmush,
    /// Send nothing.
    None,
}

impl fmt::Display for ClientIpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientIpMode::Command => "command",
            ClientIpMode::ProxyV1 => "proxy-v1",
            ClientIpMode::ProxyV2 => "proxy-v2",
            ClientIpMode::Pennmush => "pennmush",
            ClientIpMode::None => "none",
        })
    }
}
