//! `[client_ip]`: how the player's real address reaches the game.

use super::backends::{Backend, BackendAddr};
use super::cx::{ConfigError, Cx};
use super::flavor::Preset;
use super::raw::{ClientIpMode, Flavor, RawClientIp};

/// `[client_ip]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientIp {
    /// How the player's address reaches the game.
    pub mode: ClientIpMode,
    /// The command template for `mode = "command"` (`{ip}`).
    pub command: String,
    /// The command's first word, lower-cased: player lines starting with it
    /// are dropped so nobody can spoof an address.
    pub command_word: String,
    /// Reverse-resolve the player's IP for the PennMUSH header.
    pub reverse_dns: bool,
}

pub(super) fn resolve(
    cx: &Cx<'_>,
    c: RawClientIp,
    flavor: Flavor,
    preset: &Preset,
    backends: &[Backend],
) -> Result<ClientIp, ConfigError> {
    // PennMUSH only learns a player's address through its Unix
    // socket's header; on TCP it has no way at all.
    let all_unix = backends
        .iter()
        .all(|b| matches!(b.addr, BackendAddr::Unix(_)));
    let default_mode = if flavor == Flavor::Pennmush && all_unix {
        ClientIpMode::Pennmush
    } else {
        preset.client_ip
    };
    let mode = c.mode.unwrap_or(default_mode);
    let command = match &c.command {
        Some(s) => {
            if !s.get_ref().contains("{ip}") {
                return Err(cx.at(s, "client_ip.command must contain {ip}"));
            }
            s.get_ref().clone()
        }
        None => preset.client_ip_command.to_string(),
    };
    let command_word = command
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    Ok(ClientIp {
        mode,
        command,
        command_word,
        reverse_dns: c.reverse_dns.unwrap_or(false),
    })
}
