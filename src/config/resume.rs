//! `[resume]`: how long a dropped player's game session is kept for them,
//! and how much of the game's output is kept meanwhile.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::cx::{positive_or_off, ConfigError, Cx};
use super::defaults;
use super::raw::OptDur;

/// `[resume]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawResume {
    pub keep: Option<Spanned<OptDur>>,
    pub playback_lines: Option<Spanned<usize>>,
    pub playback_bytes: Option<Spanned<RawSize>>,
}

/// A size: a number of bytes, or a string such as `"256KiB"`, `"1MiB"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    /// Bytes.
    Bytes(u64),
    /// With a unit.
    Text(String),
}

/// `[resume]`: a logged-in player whose connection drops without `QUIT`
/// keeps their game session for `keep`, and gets the game's output of the
/// meantime when they log in again.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// How long a detached session is kept (`None`: detaching is off).
    pub keep: Option<Duration>,
    /// Lines of game output kept for a detached player, at most.
    pub playback_lines: usize,
    /// Bytes of game output kept for a detached player, at most.
    pub playback_bytes: usize,
}

/// Parses `"256KiB"`, `"1 MiB"`, `"512"`, `"64kB"` (k and K both mean 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

pub(super) fn resolve(cx: &Cx<'_>, r: RawResume) -> Result<Resume, ConfigError> {
    let keep = positive_or_off(cx, r.keep, "resume.keep", Some(defaults::RESUME_KEEP))?;
    let playback_lines = match r.playback_lines {
        Some(n) if *n.get_ref() == 0 => {
            return Err(cx.at(&n, "resume.playback_lines must be at least 1"))
        }
        Some(n) => n.into_inner(),
        None => defaults::PLAYBACK_LINES,
    };
    let playback_bytes = match r.playback_bytes {
        None => defaults::PLAYBACK_BYTES,
        Some(s) => {
            let n = match s.get_ref() {
                RawSize::Bytes(n) => Some(*n),
                RawSize::Text(t) => parse_size(t),
            };
            match n {
                Some(n) if (1..=(64 << 20)).contains(&n) => n as usize,
                Some(_) => {
                    return Err(cx.at(&s, "resume.playback_bytes must be between 1 byte and 64MiB"))
                }
                None => {
                    return Err(cx.at(
                        &s,
                        "resume.playback_bytes: expected a size such as \"256KiB\" or \"1MiB\"",
                    ))
                }
            }
        }
    };
    Ok(Resume {
        keep,
        playback_lines,
        playback_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256KiB"), Some(256 * 1024));
        assert_eq!(parse_size("1 MiB"), Some(1 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("64k"), Some(64 * 1024));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("5 parsecs"), None);
    }
}
