//! `[resume]`: how long a dropped player's game session is kept for them,
//! how much of the game's output is kept meanwhile, and which logins are
//! never kept (the flavor's guests and `resume.never`).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::cx::{positive_or_off, ConfigError, Cx};
use super::defaults;
use super::values::OptDur;

/// `[resume]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawResume {
    pub keep: Option<Spanned<OptDur>>,
    pub playback_lines: Option<Spanned<usize>>,
    pub playback_bytes: Option<Spanned<RawSize>>,
    pub never: Option<Vec<Spanned<String>>>,
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
    /// Login names never detached nor resumed (guest and shared logins):
    /// the flavor's guest patterns, then `resume.never`. Lower-case globs.
    pub never: Vec<String>,
}

impl Resume {
    /// Whether the login `name` is a guest or shared one, never kept for
    /// its player nor resumed.
    pub fn never_resumes(&self, name: &str) -> bool {
        let name = name.trim().to_lowercase();
        self.never.iter().any(|p| glob_match(p, &name))
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of
/// characters and `?` for one (both already lower-cased by the caller).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative wildcard matching with one backtrack point: linear in
    // practice, never exponential.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == '*')
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

pub(super) fn resolve(cx: &Cx<'_>, r: RawResume, guests: &[&str]) -> Result<Resume, ConfigError> {
    let mut never: Vec<String> = guests.iter().map(|g| g.to_string()).collect();
    for p in r.never.into_iter().flatten() {
        let text = p.get_ref().trim();
        if text.is_empty() {
            return Err(cx.at(&p, "resume.never: a pattern may not be empty"));
        }
        if text.chars().all(|c| c == '*') {
            return Err(cx.at(
                &p,
                "resume.never: this pattern matches every login; to turn resuming off use resume.keep = \"off\"",
            ));
        }
        if text.chars().any(|c| c.is_control() || c == '"') {
            return Err(cx.at(
                &p,
                "resume.never: a pattern is a login name with * and ? wildcards (no quotes or control characters)",
            ));
        }
        never.push(text.to_lowercase());
    }
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
        never,
    })
}

#[cfg(test)]
mod tests {
    use super::{glob_match, parse_size};

    #[test]
    fn globs() {
        assert!(glob_match("guest*", "guest"));
        assert!(glob_match("guest*", "guest12"));
        assert!(!glob_match("guest*", "aguest"));
        assert!(glob_match("*bot", "helperbot"));
        assert!(glob_match("g?est", "gyest"));
        assert!(!glob_match("g?est", "gest"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("shared account", "shared account"));
    }

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
