//! Errors with positions: [`ConfigError`] (`FILE:LINE:COL: message`), the
//! context that builds them from TOML spans, and the helpers every section
//! uses (secrets, regexes, durations that must not be zero).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use toml::Spanned;

use super::values::{Dur, OptDur};
use crate::secret::Secret;

/// A configuration error, printed as `FILE:LINE:COL: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Context for building errors with positions.
pub(super) struct Cx<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    /// Set when a secret was written in the file itself.
    pub(super) inline_secret: std::cell::Cell<bool>,
}

impl Cx<'_> {
    pub(super) fn err(
        &self,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, col) = match span {
            Some(s) => line_col(self.text, s.start),
            None => (1, 1),
        };
        ConfigError {
            file: self.path.to_owned(),
            line,
            col,
            message: message.into(),
        }
    }

    pub(super) fn at<T>(&self, s: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.err(Some(s.span()), message)
    }
}

/// 1-based line and column (in characters) of byte offset `pos`.
pub(super) fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = pos.min(text.len());
    let before = &text[..text.floor_char_boundary(pos)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

/// Resolves a secret given inline, through an environment variable or in a
/// file; `key` (`heartbeat.password`) names it in errors.
pub(super) fn secret(
    cx: &Cx<'_>,
    key: &str,
    inline: Option<String>,
    env: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(var) = env {
        // The keys that also have a `_file` form.
        let or_file = if ["heartbeat.password", "bus.password", "bus.nkey_seed"].contains(&key) {
            format!(", or use {key}_file")
        } else {
            String::new()
        };
        return match std::env::var(var.get_ref()) {
            Ok(v) => Ok(Some(Secret::new(v))),
            Err(_) => Err(cx.at(
                &var,
                format!(
                    "{key}_env: environment variable {} is not set (export it{or_file})",
                    var.get_ref()
                ),
            )),
        };
    }
    if let Some(f) = file {
        return match std::fs::read_to_string(f.get_ref()) {
            Ok(v) => Ok(Some(Secret::new(v.trim_end_matches(['\r', '\n'])))),
            Err(e) => Err(cx.at(&f, format!("{key}_file: cannot read {}: {e}", f.get_ref()))),
        };
    }
    if inline.is_some() {
        cx.inline_secret.set(true);
    }
    Ok(inline.map(Secret::new))
}

/// Compiles `templates.login_success`/`login_failure` as written, or the
/// flavor's preset when the key is absent.
pub(super) fn regexes(
    cx: &Cx<'_>,
    over: Option<Vec<Spanned<String>>>,
    preset: &[&str],
) -> Result<Vec<Regex>, ConfigError> {
    match over {
        Some(list) => list
            .iter()
            .map(|s| Regex::new(s.get_ref()).map_err(|e| cx.at(s, format!("invalid regex: {e}"))))
            .collect(),
        // The presets are literals checked by a unit test.
        None => Ok(preset
            .iter()
            .map(|p| Regex::new(p).expect("preset regex"))
            .collect()),
    }
}

/// A duration where zero makes no sense (a timeout, an interval): `key`
/// names it in the error.
pub(super) fn positive(
    cx: &Cx<'_>,
    v: Option<Spanned<Dur>>,
    key: &str,
    dflt: Duration,
) -> Result<Duration, ConfigError> {
    at_least(cx, v, key, dflt, Duration::from_nanos(1))
}

/// A duration of at least `min` (which is above zero).
pub(super) fn at_least(
    cx: &Cx<'_>,
    v: Option<Spanned<Dur>>,
    key: &str,
    dflt: Duration,
    min: Duration,
) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(dflt),
        Some(s) if s.get_ref().0.is_zero() => {
            Err(cx.at(&s, format!("{key} cannot be 0: it must be above zero")))
        }
        Some(s) if s.get_ref().0 < min => Err(cx.at(
            &s,
            format!("{key} must be at least {}", humantime::format_duration(min)),
        )),
        Some(s) => Ok(s.get_ref().0),
    }
}

/// A duration that may be `"off"`, where zero makes no sense (`"off"` is
/// how to turn it off).
pub(super) fn positive_or_off(
    cx: &Cx<'_>,
    v: Option<Spanned<OptDur>>,
    key: &str,
    dflt: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    match v {
        None => Ok(dflt),
        Some(s) if s.get_ref().0.is_some_and(|d| d.is_zero()) => Err(cx.at(
            &s,
            format!("{key} cannot be 0: it must be above zero (\"off\" turns it off)"),
        )),
        Some(s) => Ok(s.get_ref().0),
    }
}
