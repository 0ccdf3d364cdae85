//! The `{name}` template grammar shared by player notices (`[notices]`)
//! and IRC lines (`[irc.formats]`), and the placeholders each template may
//! use. A leaf module: `config` checks templates with it when a file is
//! loaded, `irc::format` renders with it, and neither imports the other.
//!
//! Grammar: `{name}` is a placeholder (`name` is ASCII letters, digits and
//! `_`); `{{` and `}}` are literal braces.

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Part>);

/// One piece of a [`Template`].
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Text copied as is.
    Lit(String),
    /// A placeholder's name.
    Var(String),
}

impl Template {
    /// Parses `text`: `{name}` is a placeholder, `{{` and `}}` are braces.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut it = text.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '{' if it.peek() == Some(&'{') => {
                    it.next();
                    lit.push('{');
                }
                '}' if it.peek() == Some(&'}') => {
                    it.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match it.next() {
                            Some('}') => break,
                            Some(c) if is_name_char(c) => name.push(c),
                            _ => return Err(format!("unclosed or invalid placeholder {{{name}")),
                        }
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(name));
                }
                '}' => return Err("a lone } (write }} for a brace)".into()),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template(parts))
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Part] {
        &self.0
    }

    /// The placeholders used, in order (with repeats).
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Lit(_) => None,
        })
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The error for placeholder `{var}` in template `what`, which knows only
/// `known`.
fn unknown(what: &str, var: &str, known: &[&str]) -> String {
    format!(
        "{what}: unknown placeholder {{{var}}}; this one knows {}",
        known
            .iter()
            .map(|n| format!("{{{n}}}"))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Checks a template in the full grammar: it parses and uses only
/// placeholders from `known`. `what` names it in the error
/// (`irc.formats.down`).
pub fn check(what: &str, text: &str, known: &[&str]) -> Result<Template, String> {
    let t = Template::parse(text).map_err(|e| format!("{what}: {e}"))?;
    if let Some(v) = t.vars().find(|v| !known.contains(v)) {
        return Err(unknown(what, v, known));
    }
    Ok(t)
}

/// Checks a player notice. Notices are filled in by plain replacement of
/// the known `{name}`s, and any other brace is shown as written, so only
/// `{word}` tokens are checked here: a brace in ASCII art stays legal, a
/// misspelt `{gmae}` is an error.
pub fn check_notice(what: &str, text: &str, known: &[&str]) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !is_name_char(c))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('}') {
            let name = &after[..name_len];
            if !known.contains(&name) {
                return Err(unknown(what, name, known));
            }
        }
        rest = after;
    }
    Ok(())
}

/// Placeholders of every player notice, by `[notices]` key: what the proxy
/// fills in where that notice is sent (`{game}` everywhere; `{backend}`
/// where one is involved; `{downtime}` where an outage has a length).
pub const NOTICES: &[(&str, &[&str])] = &[
    ("offline", &["game", "backend"]),
    ("online", &["game", "backend", "downtime"]),
    ("held_input", &["game"]),
    ("queued_input", &["game"]),
    ("relogin_failed", &["game", "backend"]),
    ("failover", &["game", "backend"]),
    ("max_hold", &["game", "downtime"]),
    ("stopping", &["game"]),
    ("full", &["game"]),
    ("per_ip", &["game"]),
    ("login_timeout", &["game"]),
    ("line_too_long", &["game"]),
    ("flood", &["game"]),
    ("connecting", &["game", "backend"]),
    ("resumed", &["game", "missed", "away"]),
    ("upgraded", &["game"]),
    ("busy", &["game", "backend"]),
    ("upgrade_reconnect", &["game"]),
    ("paused", &["game", "backend"]),
    ("resume_waiting", &["game"]),
];

/// Colour and style placeholders every IRC template may use (the relay
/// turns them into mIRC codes, or into nothing).
pub const IRC_STYLES: &[&str] = &["bold", "red", "green", "yellow", "orange", "grey", "reset"];

/// Placeholders every IRC template may use.
pub const IRC_COMMON: &[&str] = &["instance", "game", "time"];

/// Every IRC template kind: its `[irc.formats]` key, its default, and the
/// placeholders it may use besides [`IRC_COMMON`] and [`IRC_STYLES`].
pub const IRC_KINDS: &[(&str, &str, &[&str])] = &[
    (
        "down",
        "[{instance}] {game} is {red}{bold}DOWN{reset} ({backend} {addr}): {players} held",
        &["backend", "addr", "reason", "held", "players"],
    ),
    (
        "up",
        "[{instance}] {game} is {green}{bold}UP{reset} again ({backend} {addr}) after {downtime}: {players} restored",
        &["backend", "addr", "reason", "downtime", "restored", "players"],
    ),
    (
        "standby_down",
        "[{instance}] standby backend {backend} ({addr}) is {orange}down{reset}: {reason}",
        &["backend", "addr", "reason"],
    ),
    (
        "standby_up",
        "[{instance}] standby backend {backend} ({addr}) is {green}up{reset} again",
        &["backend", "addr", "reason"],
    ),
    (
        "failover",
        "[{instance}] {game} {orange}{bold}failed over{reset} from {from} to {to} ({why})",
        &["from", "to", "reason", "why"],
    ),
    (
        "reload_failed",
        "[{instance}] config reload {red}FAILED{reset}, old config kept: {error}",
        &["error"],
    ),
    (
        "vanished",
        "[{instance}] holdfast instance {red}vanished{reset}: no heartbeat for {silence}",
        &["silence", "last_seen"],
    ),
    (
        "back",
        "[{instance}] holdfast instance is {green}back{reset} after {gone_for}",
        &["gone_for"],
    ),
    ("login", "[{instance}] {user} logged in", &["user"]),
    ("logout", "[{instance}] {user} logged out", &["user", "reason"]),
    (
        "logins_summary",
        "[{instance}] {count} more logins in {window}: {names}",
        &["count", "window", "names"],
    ),
    (
        "logouts_summary",
        "[{instance}] {count} more logouts in {window}: {names}",
        &["count", "window", "names"],
    ),
    (
        "flapping",
        "[{instance}] {backend} is {orange}flapping{reset}: {downs} down and {ups} up in {window}, now {state}",
        &["backend", "downs", "ups", "window", "state"],
    ),
    (
        "late",
        "{line} {grey}(at {time}, posted late){reset}",
        &["line"],
    ),
];

/// Checks the template for `[irc.formats]` key `kind`: it parses and uses
/// only placeholders that kind knows. The error names the allowed ones.
pub fn check_irc(kind: &str, text: &str) -> Result<(), String> {
    let Some((_, _, extra)) = IRC_KINDS.iter().find(|(k, _, _)| *k == kind) else {
        return Err(format!("unknown format {kind:?}"));
    };
    let known: Vec<&str> = IRC_COMMON
        .iter()
        .chain(extra.iter())
        .chain(IRC_STYLES)
        .copied()
        .collect();
    check(&format!("irc.formats.{kind}"), text, &known).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_braces_and_vars() {
        let t = Template::parse("{{{user}}} joined {game}").unwrap();
        assert_eq!(
            t.parts(),
            &[
                Part::Lit("{".into()),
                Part::Var("user".into()),
                Part::Lit("} joined ".into()),
                Part::Var("game".into()),
            ]
        );
        assert!(Template::parse("{held").is_err());
        assert!(Template::parse("a } b").is_err());
    }

    #[test]
    fn irc_defaults_are_valid() {
        for (k, d, _) in IRC_KINDS {
            check_irc(k, d).unwrap_or_else(|e| panic!("{k}: {e}"));
        }
    }

    #[test]
    fn check_irc_rejects_unknown_and_broken() {
        let e = check_irc("down", "{helds} held").unwrap_err();
        assert!(e.contains("{helds}") && e.contains("{held}"), "{e}");
        assert!(check_irc("down", "{held").is_err());
        assert!(check_irc("down", "a } b").is_err());
        assert!(check_irc("nope", "x").is_err());
        assert!(check_irc("up", "{red}{downtime}{reset}").is_ok());
    }

    #[test]
    fn notices_check_words_only() {
        let known = &["game", "backend"];
        assert!(check_notice("notices.offline", "{game} on {backend}", known).is_ok());
        // Braces that are not a `{word}` are shown as written.
        assert!(check_notice("n", "}-{ {} { x } {game", known).is_ok());
        let e = check_notice("notices.offline", "{gmae} is down", known).unwrap_err();
        assert_eq!(
            e,
            "notices.offline: unknown placeholder {gmae}; this one knows {game} {backend}"
        );
        // `{{game}}` still contains the token `{game}`, which is known.
        assert!(check_notice("n", "{{game}}", known).is_ok());
    }
}
