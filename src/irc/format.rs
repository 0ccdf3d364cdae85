//! Message templates: the defaults, `[irc.formats]` overrides, the
//! placeholders each one may use, optional mIRC colours, and the small
//! helpers (durations, player counts, name lists) that make lines short
//! and readable.
//!
//! Templates are checked when the config is loaded ([`check`]), so a typo
//! such as `{helds}` is a config error with its line, not a silent gap in
//! a line posted at 3 a.m.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::IrcFormats;

/// Colour and style placeholders every template may use; they expand to
/// mIRC control codes with `colors = true` and to nothing otherwise.
const STYLES: &[(&str, &str)] = &[
    ("bold", "\x02"),
    ("red", "\x0304"),
    ("green", "\x0303"),
    ("yellow", "\x0308"),
    ("orange", "\x0307"),
    ("grey", "\x0314"),
    ("reset", "\x0f"),
];

/// Every template kind: its `[irc.formats]` key, its default, and the
/// placeholders it may use besides `instance`, `game`, `time` and the styles.
pub const KINDS: &[(&str, &str, &[&str])] = &[
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

/// Placeholders every template may use.
const COMMON: &[&str] = &["instance", "game", "time"];

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Part>);

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
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
                            Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
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

    fn vars(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Fills in the placeholders from `vars` (already cleaned) and the
    /// styles.
    pub fn render(&self, vars: &Vars, colors: bool) -> String {
        let mut s = String::new();
        for p in &self.0 {
            match p {
                Part::Lit(l) => s.push_str(l),
                Part::Var(v) => {
                    if let Some((_, code)) = STYLES.iter().find(|(n, _)| n == v) {
                        if colors {
                            s.push_str(code);
                        }
                    } else if let Some(val) = vars.get(v.as_str()) {
                        s.push_str(val);
                    }
                }
            }
        }
        if !colors {
            // Squeeze spaces a removed style may have left doubled.
            s = s
                .split(' ')
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
        }
        s
    }
}

/// Placeholder values for one line.
pub type Vars = HashMap<&'static str, String>;

/// Checks the template for `[irc.formats]` key `kind`: it parses and uses
/// only placeholders that kind knows. The error names the allowed ones.
pub fn check(kind: &str, text: &str) -> Result<(), String> {
    let Some((_, _, extra)) = KINDS.iter().find(|(k, _, _)| *k == kind) else {
        return Err(format!("unknown format {kind:?}"));
    };
    let t = Template::parse(text).map_err(|e| format!("irc.formats.{kind}: {e}"))?;
    for v in t.vars() {
        let known =
            COMMON.contains(&v) || extra.contains(&v) || STYLES.iter().any(|(n, _)| *n == v);
        if !known {
            let mut all: Vec<&str> = COMMON.iter().chain(extra.iter()).copied().collect();
            all.extend(STYLES.iter().map(|(n, _)| *n));
            return Err(format!(
                "irc.formats.{kind}: unknown placeholder {{{v}}}; this format knows {}",
                all.iter()
                    .map(|n| format!("{{{n}}}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
    }
    Ok(())
}

/// The templates the relay posts with.
#[derive(Debug, Clone)]
pub struct Formats {
    by_kind: HashMap<&'static str, Template>,
    /// Expand colour placeholders.
    pub colors: bool,
}

impl Formats {
    /// Defaults overridden by `[irc.formats]` (already checked at load).
    pub fn new(f: &IrcFormats, colors: bool) -> Formats {
        let over = |k: &str| -> Option<&String> {
            match k {
                "down" => f.down.as_ref(),
                "up" => f.up.as_ref(),
                "standby_down" => f.standby_down.as_ref(),
                "standby_up" => f.standby_up.as_ref(),
                "failover" => f.failover.as_ref(),
                "reload_failed" => f.reload_failed.as_ref(),
                "vanished" => f.vanished.as_ref(),
                "back" => f.back.as_ref(),
                "login" => f.login.as_ref(),
                "logout" => f.logout.as_ref(),
                "logins_summary" => f.logins_summary.as_ref(),
                "logouts_summary" => f.logouts_summary.as_ref(),
                "flapping" => f.flapping.as_ref(),
                "late" => f.late.as_ref(),
                _ => None,
            }
        };
        let by_kind = KINDS
            .iter()
            .map(|(k, dflt, _)| {
                let t = over(k)
                    .and_then(|s| Template::parse(s).ok())
                    // The defaults are tested to parse (`defaults_are_valid`).
                    .unwrap_or_else(|| Template::parse(dflt).expect("default template"));
                (*k, t)
            })
            .collect();
        Formats { by_kind, colors }
    }

    /// The `late` template around `line`, which happened at `time`.
    pub fn late(
        &self,
        line: &str,
        time: time::OffsetDateTime,
        wall: time::OffsetDateTime,
    ) -> String {
        let mut v = Vars::new();
        v.insert("line", line.to_string());
        v.insert("time", clock(time, wall));
        self.render("late", &v)
    }

    /// Renders template `kind` with `vars`.
    pub fn render(&self, kind: &str, vars: &Vars) -> String {
        match self.by_kind.get(kind) {
            Some(t) => t.render(vars, self.colors),
            None => String::new(),
        }
    }
}

/// A short human duration: `0.6s`, `45s`, `3m 12s`, `2h 5m`, `3d 4h`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        // A quick restart should not read "after 0s".
        0..=9 if d.subsec_millis() >= 100 => {
            format!("{:.1}s", (d.as_millis() / 100) as f64 / 10.0)
        }
        0..=59 => format!("{s}s"),
        60..=3599 => two(s / 60, "m", s % 60, "s"),
        3600..=86_399 => two(s / 3600, "h", s % 3600 / 60, "m"),
        _ => two(s / 86_400, "d", s % 86_400 / 3600, "h"),
    }
}

fn two(a: u64, ua: &str, b: u64, ub: &str) -> String {
    if b == 0 {
        format!("{a}{ua}")
    } else {
        format!("{a}{ua} {b}{ub}")
    }
}

/// `no players`, `1 player`, `12 players`.
pub fn players(n: u64) -> String {
    match n {
        0 => "no players".into(),
        1 => "1 player".into(),
        n => format!("{n} players"),
    }
}

/// `a, b, c and 12 others`: at most `show` names.
pub fn names(list: &[String], total: usize, show: usize) -> String {
    let shown: Vec<&str> = list.iter().take(show).map(String::as_str).collect();
    let rest = total.saturating_sub(shown.len());
    let mut s = shown.join(", ");
    if rest > 0 {
        if s.is_empty() {
            s = format!("{rest} players");
        } else {
            s.push_str(&format!(
                " and {rest} other{}",
                if rest == 1 { "" } else { "s" }
            ));
        }
    }
    s
}

/// Clock time for lines: `14:02:11 UTC`, with the date if it is not today.
pub fn clock(t: time::OffsetDateTime, now: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let hms = format!("{:02}:{:02}:{:02} UTC", t.hour(), t.minute(), t.second());
    if t.date() == now.to_offset(time::UtcOffset::UTC).date() {
        hms
    } else {
        format!("{} {hms}", t.date())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&'static str, &str)]) -> Vars {
        kv.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        for (k, d, _) in KINDS {
            check(k, d).unwrap_or_else(|e| panic!("{k}: {e}"));
        }
    }

    #[test]
    fn spec_example_line() {
        let f = Formats::new(&IrcFormats::default(), false);
        let v = vars(&[
            ("instance", "mymush-1"),
            ("game", "My MUSH"),
            ("backend", "primary"),
            ("addr", "127.0.0.1:4202"),
            ("players", "12 players"),
        ]);
        assert_eq!(
            f.render("down", &v),
            "[mymush-1] My MUSH is DOWN (primary 127.0.0.1:4202): 12 players held"
        );
        let c = Formats::new(&IrcFormats::default(), true).render("down", &v);
        assert!(c.contains("\x0304\x02DOWN\x0f"), "{c:?}");
    }

    #[test]
    fn overrides_and_braces() {
        let f = IrcFormats {
            login: Some("{{{user}}} joined {game}".into()),
            ..Default::default()
        };
        let f = Formats::new(&f, false);
        let v = vars(&[("user", "Ann"), ("game", "G")]);
        assert_eq!(f.render("login", &v), "{Ann} joined G");
    }

    #[test]
    fn check_rejects_unknown_and_broken() {
        let e = check("down", "{helds} held").unwrap_err();
        assert!(e.contains("{helds}") && e.contains("{held}"), "{e}");
        assert!(check("down", "{held").is_err());
        assert!(check("down", "a } b").is_err());
        assert!(check("nope", "x").is_err());
        assert!(check("up", "{red}{downtime}{reset}").is_ok());
    }

    #[test]
    fn helpers() {
        assert_eq!(duration(Duration::from_secs(5)), "5s");
        assert_eq!(duration(Duration::from_millis(640)), "0.6s");
        assert_eq!(duration(Duration::from_millis(50)), "0s");
        assert_eq!(duration(Duration::from_millis(12_700)), "12s");
        assert_eq!(duration(Duration::from_secs(192)), "3m 12s");
        assert_eq!(duration(Duration::from_secs(7200)), "2h");
        assert_eq!(duration(Duration::from_secs(90_000)), "1d 1h");
        assert_eq!(players(0), "no players");
        assert_eq!(players(1), "1 player");
        assert_eq!(players(7), "7 players");
        let l: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(names(&l, 3, 5), "a, b, c");
        assert_eq!(names(&l, 14, 2), "a, b and 12 others");
        assert_eq!(names(&[], 4, 2), "4 players");
        let rfc = &time::format_description::well_known::Rfc3339;
        let t = time::OffsetDateTime::parse("2024-05-01T14:02:11Z", rfc).unwrap();
        assert_eq!(clock(t, t), "14:02:11 UTC");
        let next = time::OffsetDateTime::parse("2024-05-02T00:00:01Z", rfc).unwrap();
        assert_eq!(clock(t, next), "2024-05-01 14:02:11 UTC");
    }
}
