//! Message templates: the defaults, `[irc.formats]` overrides, the
//! placeholders each one may use, optional mIRC colours, and the small
//! helpers (durations, player counts, name lists) that make lines short
//! and readable.
//!
//! Templates are checked when the config is loaded
//! ([`crate::template::check_irc`]), so a typo
//! such as `{helds}` is a config error with its line, not a silent gap in
//! a line posted at 3 a.m.

use std::collections::HashMap;
use std::time::Duration;

use crate::config::IrcFormats;
use crate::template::{Part, Template};

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

/// Every template kind with its default and placeholders (the table lives
/// in the leaf module [`crate::template`], where the config checks
/// templates against it).
pub use crate::template::IRC_KINDS as KINDS;

/// Fills in `t`'s placeholders from `vars` (already cleaned) and the
/// styles.
fn render(t: &Template, vars: &Vars, colors: bool) -> String {
    let mut s = String::new();
    for p in t.parts() {
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

/// Placeholder values for one line.
pub type Vars = HashMap<&'static str, String>;

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
            Some(t) => render(t, vars, self.colors),
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
    fn every_style_has_a_code() {
        let names: Vec<&str> = STYLES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, crate::template::IRC_STYLES);
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
