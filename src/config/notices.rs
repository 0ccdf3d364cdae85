//! `[notices]`: the texts holdfast itself sends to players, with their
//! defaults. Each may use the placeholders listed for it in
//! [`crate::template::NOTICES`]; a misspelt one is an error with its
//! position, not a `{gmae}` shown to every player during an outage.

use toml::Spanned;

use super::cx::{ConfigError, Cx};
use super::raw::RawNotices;
use crate::template;

/// `[notices]`: texts sent to players; `{game}`, `{backend}`, `{downtime}`
/// where [`crate::template::NOTICES`] allows them.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct Notices {
    pub offline: String,
    pub online: String,
    pub held_input: String,
    pub queued_input: String,
    pub relogin_failed: String,
    pub failover: String,
    pub max_hold: String,
    pub stopping: String,
    pub full: String,
    pub per_ip: String,
    pub login_timeout: String,
    pub line_too_long: String,
    pub flood: String,
    pub connecting: String,
    pub resumed: String,
    /// Sent after an upgrade handed the session to a new process (empty:
    /// nothing).
    pub upgraded: String,
    /// Sent once when the game refused holdfast's address (a per-address
    /// limit) and holdfast tries again.
    pub busy: String,
    /// Sent to a TLS player (`tls_addrs`, `wss_addrs`) when an upgrade closes its
    /// connection (which cannot cross): its game session is kept for it to
    /// resume when it logs in again.
    pub upgrade_reconnect: String,
    /// Sent when a cluster member lost its lease and pauses the session
    /// (`bus.cluster`): the game connection is kept, nothing is relayed
    /// until the lease is back.
    pub paused: String,
    /// Sent when a player logs in to resume a detached session while the
    /// game is down: the game itself checks the login when it is back.
    pub resume_waiting: String,
}

pub(super) fn resolve(cx: &Cx<'_>, n: RawNotices) -> Result<Notices, ConfigError> {
    let text = |key: &str, v: Option<Spanned<String>>, dflt: &str| -> Result<String, ConfigError> {
        let Some(v) = v else {
            return Ok(dflt.to_string());
        };
        // Every key has a row: a unit test walks them all.
        let known = template::NOTICES
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, known)| *known)
            .unwrap_or(&[]);
        template::check_notice(&format!("notices.{key}"), v.get_ref(), known)
            .map_err(|e| cx.at(&v, e))?;
        Ok(v.into_inner())
    };
    Ok(Notices {
        offline: text(
            "offline",
            n.offline,
            "[holdfast] {game} is down. Your connection is being held; you will be logged back in when it returns.",
        )?,
        online: text(
            "online",
            n.online,
            "[holdfast] {game} is back (down for {downtime}). You have been logged back in.",
        )?,
        held_input: text(
            "held_input",
            n.held_input,
            "[holdfast] {game} is down; that was not sent. Type QUIT to leave.",
        )?,
        queued_input: text(
            "queued_input",
            n.queued_input,
            "[holdfast] {game} is down; queued, it will be sent when you are logged back in.",
        )?,
        relogin_failed: text(
            "relogin_failed",
            n.relogin_failed,
            "[holdfast] {game} is back, but logging you back in failed. Please log in by hand.",
        )?,
        failover: text(
            "failover",
            n.failover,
            "[holdfast] Moving you to {backend}; you will be logged back in.",
        )?,
        max_hold: text(
            "max_hold",
            n.max_hold,
            "[holdfast] {game} has been down for {downtime}; giving up. Please reconnect later.",
        )?,
        stopping: text(
            "stopping",
            n.stopping,
            "[holdfast] The proxy for {game} is stopping. Please reconnect in a moment.",
        )?,
        full: text(
            "full",
            n.full,
            "[holdfast] {game} is full right now. Please try again later.",
        )?,
        per_ip: text(
            "per_ip",
            n.per_ip,
            "[holdfast] Too many connections from your address.",
        )?,
        login_timeout: text(
            "login_timeout",
            n.login_timeout,
            "[holdfast] You did not log in in time. Goodbye.",
        )?,
        line_too_long: text(
            "line_too_long",
            n.line_too_long,
            "[holdfast] That line was too long and has been cut.",
        )?,
        flood: text(
            "flood",
            n.flood,
            "[holdfast] You are sending too fast; slow down or you will be disconnected.",
        )?,
        connecting: text(
            "connecting",
            n.connecting,
            "[holdfast] {game} is down right now. Hold on: you will get its connect screen when it is back.",
        )?,
        resumed: text(
            "resumed",
            n.resumed,
            "[holdfast] Welcome back. Your session was kept while you were away ({away}); {missed} line(s) follow.",
        )?,
        upgraded: text("upgraded", n.upgraded, "")?,
        busy: text(
            "busy",
            n.busy,
            "[holdfast] {game} is busy; holdfast will connect you in a moment.",
        )?,
        upgrade_reconnect: text(
            "upgrade_reconnect",
            n.upgrade_reconnect,
            "[holdfast] {game} is moving to a new version of its proxy: connect again and log in as before to carry on where you left off.",
        )?,
        paused: text(
            "paused",
            n.paused,
            "[holdfast] {game} is paused for a moment: you stay logged in, what you type is kept and sent when it goes on.",
        )?,
        resume_waiting: text(
            "resume_waiting",
            n.resume_waiting,
            "[holdfast] {game} is down; your login will be checked when it is back.",
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every default passes its own check, so every key has a row in
    /// `template::NOTICES` with the placeholders its default uses.
    #[test]
    fn defaults_pass_their_check() {
        let cx = Cx {
            path: std::path::Path::new("t.toml"),
            text: "",
            inline_secret: std::cell::Cell::new(false),
        };
        let d = resolve(&cx, RawNotices::default()).unwrap();
        for (key, text) in [
            ("offline", &d.offline),
            ("online", &d.online),
            ("held_input", &d.held_input),
            ("queued_input", &d.queued_input),
            ("relogin_failed", &d.relogin_failed),
            ("failover", &d.failover),
            ("max_hold", &d.max_hold),
            ("stopping", &d.stopping),
            ("full", &d.full),
            ("per_ip", &d.per_ip),
            ("login_timeout", &d.login_timeout),
            ("line_too_long", &d.line_too_long),
            ("flood", &d.flood),
            ("connecting", &d.connecting),
            ("resumed", &d.resumed),
            ("upgraded", &d.upgraded),
            ("busy", &d.busy),
            ("upgrade_reconnect", &d.upgrade_reconnect),
            ("paused", &d.paused),
            ("resume_waiting", &d.resume_waiting),
        ] {
            let (_, known) = template::NOTICES
                .iter()
                .find(|(k, _)| *k == key)
                .unwrap_or_else(|| panic!("no row for notices.{key}"));
            template::check_notice(key, text, known).unwrap();
        }
        assert_eq!(template::NOTICES.len(), 20);
    }
}
