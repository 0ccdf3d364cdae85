//! `[templates]`: how holdfast talks to the game on a player's behalf
//! (probe, login, marker, quit, and the lines that prove a login worked or
//! failed), preset by the flavor and overridable key by key.

use std::time::Duration;

use regex::Regex;
use toml::Spanned;

use super::cx::{positive, regexes, ConfigError, Cx};
use super::defaults;
use super::flavor::{Preset, QuitMatch};
use super::raw::RawTemplates;

/// `[templates]`, resolved from the flavor preset and overrides.
#[derive(Debug, Clone)]
pub struct Templates {
    /// Heartbeat probe command (`{nonce}`).
    pub probe: String,
    /// The heartbeat's login confirmation that also reads the game's
    /// process identity (its start time), which follows `{nonce}` on the
    /// answer line; empty: the flavor has none (see `backend::coverage`).
    pub identity: String,
    /// Login command (`{verb}`, `{name}`, `{password}`).
    pub login: String,
    /// Marker command after a login (`{nonce}`); empty: no marker (only
    /// allowed when `login_success` patterns can confirm a login instead).
    pub marker: String,
    /// The quit command.
    pub quit: String,
    /// How the game matches `quit` at its connect screen.
    pub quit_connect: QuitMatch,
    /// How the game matches `quit` once the player is logged in.
    pub quit_logged_in: QuitMatch,
    /// Lines that prove a login worked.
    pub login_success: Vec<Regex>,
    /// Lines that prove a login failed (including [`Templates::refused`]).
    pub login_failure: Vec<Regex>,
    /// Lines with which the game refuses or throttles a connection or login
    /// because of a per-address limit (holdfast's address): retry later.
    pub refused: Vec<Regex>,
    /// The game's connect/disconnect announcements; each regex has a `name`
    /// group naming the player.
    pub announcements: Vec<Regex>,
    /// How long after connecting the game may take to show its connect
    /// screen (PennMUSH waits ~2 s for telnet negotiation).
    pub banner_wait: Duration,
    /// How long a first login may take to be confirmed.
    pub login_confirm_timeout: Duration,
    /// Before logging in on a new connection (heartbeat, re-login), send the
    /// marker until its nonce comes back: for games that answer it before
    /// login and drop input sent too early (Evennia). Set by the flavor.
    pub sync: bool,
    /// `connect <name>` without a password is a login
    /// (`templates.passwordless`, preset by the flavor).
    pub passwordless: bool,
    /// `create <name> <password>` logs in (`templates.create_logs_in`,
    /// preset by the flavor); the player is logged back in with `connect`.
    pub create_logs_in: bool,
}

pub(super) fn resolve(
    cx: &Cx<'_>,
    t: RawTemplates,
    preset: &Preset,
) -> Result<Templates, ConfigError> {
    let need_nonce = |s: &Spanned<String>, what: &str| -> Result<(), ConfigError> {
        if s.get_ref().contains("{nonce}") {
            Ok(())
        } else {
            Err(cx.at(s, format!("templates.{what} must contain {{nonce}}")))
        }
    };
    let probe = match t.probe {
        None => preset.probe.to_string(),
        Some(s) => {
            need_nonce(&s, "probe")?;
            s.into_inner()
        }
    };
    let identity = match t.identity {
        None => preset.identity.to_string(),
        Some(s) if s.get_ref().is_empty() => String::new(),
        Some(s) => {
            need_nonce(&s, "identity")?;
            s.into_inner()
        }
    };
    let login = match t.login {
        Some(s) if !s.get_ref().contains("{name}") || !s.get_ref().contains("{password}") => {
            return Err(cx.at(&s, "templates.login must contain {name} and {password}"))
        }
        Some(s) => s.into_inner(),
        None => preset.login.to_string(),
    };
    for r in t.announcements.iter().flatten() {
        if !r.get_ref().contains("(?P<name>") && !r.get_ref().contains("(?<name>") {
            return Err(cx.at(
                r,
                "templates.announcements: each regex needs a (?P<name>...) group",
            ));
        }
    }
    let login_success = regexes(cx, t.login_success, preset.login_success)?;
    let marker = match t.marker {
        None => preset.marker.to_string(),
        // Without a marker only a `login_success` line can confirm a
        // login; with neither, every login would wait for its timeout.
        Some(s) if s.get_ref().is_empty() && login_success.is_empty() => {
            return Err(cx.at(
                &s,
                "templates.marker is empty and there are no templates.login_success patterns: nothing could confirm a login; give a marker with {nonce} (e.g. \"think {nonce}\") or login_success patterns",
            ))
        }
        Some(s) if s.get_ref().is_empty() => String::new(),
        Some(s) => {
            need_nonce(&s, "marker")?;
            s.into_inner()
        }
    };
    Ok(Templates {
        probe,
        identity,
        login,
        marker,
        quit: t.quit.unwrap_or_else(|| preset.quit.to_string()),
        quit_connect: t.quit_connect.unwrap_or(preset.quit_connect),
        quit_logged_in: t.quit_logged_in.unwrap_or(preset.quit_logged_in),
        login_success,
        login_failure: regexes(cx, t.login_failure, preset.login_failure)?,
        refused: regexes(cx, t.refused, preset.refused)?,
        announcements: regexes(cx, t.announcements, preset.announcements)?,
        banner_wait: positive(
            cx,
            t.banner_wait,
            "templates.banner_wait",
            preset.banner_wait,
        )?,
        login_confirm_timeout: positive(
            cx,
            t.login_confirm_timeout,
            "templates.login_confirm_timeout",
            defaults::LOGIN_CONFIRM_TIMEOUT,
        )?,
        sync: preset.sync,
        passwordless: t.passwordless.unwrap_or(preset.passwordless),
        create_logs_in: t.create_logs_in.unwrap_or(preset.create_logs_in),
    })
}
