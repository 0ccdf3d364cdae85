//! Channel commands: `!status [instance]` for everyone; `!failover` and
//! `!announce`, which change things, only for the admins the config names
//! (by `nick!user@host` mask or services account), and for nobody if it
//! names none.
//!
//! Parsing, permission checks and the formatting of answers are plain
//! functions tested here; [`execute`] asks the instances over the bus.

use std::time::Duration;

use serde_json::{json, Value};
use time::OffsetDateTime;

use super::format;
use super::proto::{clean_text, fold, mask_matches};
use crate::config::Irc;

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// `!status` (all instances) or `!status NAME`.
    Status(Option<String>),
    /// `!failover [INSTANCE] BACKEND`.
    Failover {
        /// The instance; may be left out when only one is known.
        instance: Option<String>,
        /// The backend to move to.
        backend: String,
    },
    /// `!announce INSTANCE|all TEXT`.
    Announce {
        /// An instance name or `all`.
        target: String,
        /// What every player is sent.
        text: String,
    },
    /// `!help`.
    Help,
    /// A known command used wrongly: the usage line.
    Usage(&'static str),
}

const USAGE_FAILOVER: &str = "usage: !failover [instance] <backend>";
const USAGE_ANNOUNCE: &str = "usage: !announce <instance|all> <text>";

/// Parses `text`; `None` if it is not one of ours (other bots may share
/// the channel, so unknown `!words` are ignored).
pub fn parse(text: &str) -> Option<Cmd> {
    let mut words = text.split_whitespace();
    let cmd = words.next()?.to_ascii_lowercase();
    let args: Vec<&str> = words.collect();
    Some(match cmd.as_str() {
        "!status" => match args.as_slice() {
            [] => Cmd::Status(None),
            [i, ..] => Cmd::Status(Some(i.to_string())),
        },
        "!failover" => match args.as_slice() {
            [b] => Cmd::Failover {
                instance: None,
                backend: b.to_string(),
            },
            [i, b] => Cmd::Failover {
                instance: Some(i.to_string()),
                backend: b.to_string(),
            },
            _ => Cmd::Usage(USAGE_FAILOVER),
        },
        "!announce" => match args.as_slice() {
            [t, rest @ ..] if !rest.is_empty() => Cmd::Announce {
                target: t.to_string(),
                // Keep the text as typed, minus the command and target.
                text: text
                    .trim_start()
                    .split_once(char::is_whitespace)
                    .map(|(_, r)| r.trim_start())
                    .and_then(|r| r.split_once(char::is_whitespace))
                    .map(|(_, r)| r.trim().to_string())
                    .unwrap_or_default(),
            },
            _ => Cmd::Usage(USAGE_ANNOUNCE),
        },
        "!help" => Cmd::Help,
        _ => return None,
    })
}

/// True if the command changes state.
pub fn is_admin_only(c: &Cmd) -> bool {
    matches!(c, Cmd::Failover { .. } | Cmd::Announce { .. })
}

/// May the sender run commands that change state? `Err` says why not.
pub fn allowed(cfg: &Irc, mask: &str, account: Option<&str>) -> Result<(), &'static str> {
    if cfg.admins.is_empty() && cfg.admin_accounts.is_empty() {
        return Err("commands that change state are disabled (no irc.admins configured)");
    }
    if cfg.admins.iter().any(|m| mask_matches(m, mask)) {
        return Ok(());
    }
    if let Some(a) = account.filter(|a| !a.is_empty() && *a != "*") {
        if cfg.admin_accounts.iter().any(|x| fold(x) == fold(a)) {
            return Ok(());
        }
    }
    Err("you are not allowed to do that")
}

/// The `!help` text.
pub fn help(admin_enabled: bool) -> String {
    let mut s = String::from("holdfast relay: !status [instance] shows backends and players");
    if admin_enabled {
        s.push_str("; admins: !failover [instance] <backend>, !announce <instance|all> <text>");
    }
    s
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => clean_text(s),
        Value::Null => String::new(),
        other => clean_text(&other.to_string()),
    }
}

/// The name of the active backend, however the status spells it.
fn active_name(v: &Value) -> String {
    let a = v
        .get("active")
        .or_else(|| v.get("active_backend"))
        .unwrap_or(&Value::Null);
    match a {
        Value::Object(_) => text(&a["name"]),
        other => text(other),
    }
}

fn since(b: &Value, now: OffsetDateTime) -> Option<String> {
    // `since_s` is counted on the proxy's host: no clock skew.
    if let Some(s) = b["since_s"].as_f64() {
        return Some(format::duration(Duration::from_secs_f64(s.max(0.0))));
    }
    let t = OffsetDateTime::parse(
        b["since"].as_str()?,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()?;
    let d = (now - t).max(time::Duration::ZERO);
    Some(format::duration(Duration::from_secs(
        d.whole_seconds() as u64
    )))
}

/// One line for one instance's `status` answer:
/// `[mymush-1] My MUSH: primary 127.0.0.1:4202 UP (active), standby
/// 10.0.0.7:4202 DOWN for 3m (refused); 12 sessions, 10 logged in, 0 held`.
pub fn status_line(v: &Value, now: OffsetDateTime) -> String {
    let inst = text(&v["instance"]);
    if let Some(e) = v.get("error") {
        return format!("[{inst}] error: {}", text(e));
    }
    let active = active_name(v);
    let mut backends = Vec::new();
    for b in v["backends"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let name = text(&b["name"]);
        let mut s = format!("{name} {}", text(&b["addr"]));
        // `up` is null while the first probe is pending.
        let up = b["up"].as_bool();
        s.push_str(match up {
            Some(true) => " UP",
            Some(false) => " DOWN",
            None => " (not probed yet)",
        });
        if up == Some(false) {
            if let Some(d) = since(b, now) {
                s.push_str(&format!(" for {d}"));
            }
            let r = text(&b["reason"]);
            if !r.is_empty() {
                s.push_str(&format!(" ({r})"));
            }
        }
        if !active.is_empty() && name == active {
            s.push_str(" (active)");
        }
        backends.push(s);
    }
    let ses = &v["sessions"];
    let n = |k: &str| ses[k].as_u64().unwrap_or(0);
    let mut line = format!("[{inst}] {}: ", text(&v["game"]));
    if backends.is_empty() {
        line.push_str("no backends reported");
    } else {
        line.push_str(&backends.join(", "));
    }
    line.push_str(&format!(
        "; {} session{}, {} logged in, {} held",
        n("total"),
        if n("total") == 1 { "" } else { "s" },
        n("logged_in"),
        n("held")
    ));
    line
}

/// What [`execute`] needs.
pub struct Ctx {
    /// The NATS connection.
    pub client: async_nats::Client,
    /// `bus.subject_prefix`.
    pub prefix: String,
    /// How long to wait for answers.
    pub timeout: Duration,
    /// Instances known from presence and events.
    pub known: Vec<String>,
}

/// Runs `cmd` over the bus; returns the lines to answer with.
pub async fn execute(ctx: &Ctx, cmd: Cmd, admin_enabled: bool) -> Vec<String> {
    let now = OffsetDateTime::now_utc();
    if !matches!(cmd, Cmd::Help | Cmd::Usage(_)) && !super::nats::is_up(&ctx.client) {
        return vec!["the bus (NATS) is not reachable right now; try again in a moment".into()];
    }
    let p = &ctx.prefix;
    match cmd {
        Cmd::Help => vec![help(admin_enabled)],
        Cmd::Usage(u) => vec![u.to_string()],
        Cmd::Status(Some(i)) => {
            let r = super::nats::request(
                &ctx.client,
                format!("{p}.rpc.{i}.status"),
                json!({}),
                ctx.timeout,
            )
            .await;
            match r {
                Ok(mut v) => {
                    if v["instance"].is_null() {
                        v["instance"] = json!(i);
                    }
                    vec![status_line(&v, now)]
                }
                Err(e) => vec![format!("[{i}] {e:#}")],
            }
        }
        Cmd::Status(None) => {
            let r = super::nats::gather(
                &ctx.client,
                format!("{p}.rpc.all.status"),
                json!({}),
                ctx.timeout,
                &ctx.known,
            )
            .await;
            let mut answers = match r {
                Ok(a) => a,
                Err(e) => return vec![format!("status request failed: {e:#}")],
            };
            answers.sort_by(|a, b| text(&a["instance"]).cmp(&text(&b["instance"])));
            let mut lines: Vec<String> = answers.iter().map(|v| status_line(v, now)).collect();
            for k in &ctx.known {
                if !answers.iter().any(|v| v["instance"].as_str() == Some(k)) {
                    lines.push(format!("[{k}] no answer"));
                }
            }
            if lines.is_empty() {
                lines.push("no holdfast instance answered on the bus".into());
            }
            lines
        }
        Cmd::Failover { instance, backend } => {
            let inst = match (instance, ctx.known.as_slice()) {
                (Some(i), _) => i,
                (None, [only]) => only.clone(),
                (None, []) => {
                    return vec!["no instance known yet; name it: ".to_string() + USAGE_FAILOVER]
                }
                (None, _) => {
                    return vec![format!(
                        "several instances ({}); name one: {USAGE_FAILOVER}",
                        ctx.known.join(", ")
                    )]
                }
            };
            let r = super::nats::request(
                &ctx.client,
                format!("{p}.rpc.{inst}.failover"),
                json!({ "backend": backend }),
                ctx.timeout,
            )
            .await;
            match r {
                Ok(v) if v.get("error").is_some() => {
                    vec![format!("[{inst}] failover refused: {}", text(&v["error"]))]
                }
                Ok(v) if v["changed"] == Value::Bool(false) => {
                    vec![format!("[{inst}] {backend} is already the active backend")]
                }
                Ok(v) if v["to_up"] == Value::Bool(false) => vec![format!(
                    "[{inst}] failover to {backend} done, but {backend} is DOWN: players stay held until it is up"
                )],
                Ok(_) => vec![format!("[{inst}] failover to {backend} requested")],
                Err(e) => vec![format!("[{inst}] failover failed: {e:#}")],
            }
        }
        Cmd::Announce { target, text: t } => {
            let payload = json!({ "text": t });
            if target == "all" {
                let r = super::nats::gather(
                    &ctx.client,
                    format!("{p}.rpc.all.announce"),
                    payload,
                    ctx.timeout,
                    &ctx.known,
                )
                .await;
                match r {
                    Ok(a) => {
                        let ok = a.iter().filter(|v| v.get("error").is_none()).count();
                        vec![format!(
                            "announced on {ok} of {} instance(s) that answered",
                            a.len()
                        )]
                    }
                    Err(e) => vec![format!("announce failed: {e:#}")],
                }
            } else {
                let r = super::nats::request(
                    &ctx.client,
                    format!("{p}.rpc.{target}.announce"),
                    payload,
                    ctx.timeout,
                )
                .await;
                match r {
                    Ok(v) if v.get("error").is_some() => {
                        vec![format!(
                            "[{target}] announce refused: {}",
                            text(&v["error"])
                        )]
                    }
                    Ok(v) => match v["sessions"].as_u64() {
                        Some(n) => vec![format!("[{target}] announced to {}", format::players(n))],
                        None => vec![format!("[{target}] announced")],
                    },
                    Err(e) => vec![format!("[{target}] announce failed: {e:#}")],
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn irc(extra: &str) -> Irc {
        let text = format!(
            "[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:4202\"\n[irc]\nchannels = [\"#c\"]\n{extra}"
        );
        crate::config::Config::parse(std::path::Path::new("t.toml"), &text)
            .unwrap()
            .irc
            .unwrap()
    }

    #[test]
    fn parses() {
        assert_eq!(parse("!status"), Some(Cmd::Status(None)));
        assert_eq!(
            parse("!STATUS mymush-1"),
            Some(Cmd::Status(Some("mymush-1".into())))
        );
        assert_eq!(
            parse("!failover standby"),
            Some(Cmd::Failover {
                instance: None,
                backend: "standby".into()
            })
        );
        assert_eq!(
            parse("!failover m1 standby"),
            Some(Cmd::Failover {
                instance: Some("m1".into()),
                backend: "standby".into()
            })
        );
        assert_eq!(parse("!failover"), Some(Cmd::Usage(USAGE_FAILOVER)));
        assert_eq!(
            parse("!announce all  Back in  5 minutes! "),
            Some(Cmd::Announce {
                target: "all".into(),
                text: "Back in  5 minutes!".into()
            })
        );
        assert_eq!(parse("!announce all"), Some(Cmd::Usage(USAGE_ANNOUNCE)));
        assert_eq!(parse("!help"), Some(Cmd::Help));
        assert_eq!(parse("!weather"), None);
        assert_eq!(parse("status"), None);
    }

    #[test]
    fn permissions() {
        let none = irc("");
        assert!(allowed(&none, "a!b@c", Some("acct"))
            .unwrap_err()
            .contains("disabled"));
        let c = irc("admins = [\"*!*@staff.example.org\"]\nadmin_accounts = [\"Wiz\"]");
        assert!(allowed(&c, "ann!a@staff.example.org", None).is_ok());
        assert!(allowed(&c, "ann!a@evil.example.org", None).is_err());
        assert!(allowed(&c, "eve!e@evil.example.org", Some("wiz")).is_ok());
        assert!(allowed(&c, "eve!e@evil.example.org", Some("*")).is_err());
        assert!(is_admin_only(&Cmd::Announce {
            target: "all".into(),
            text: "x".into()
        }));
        assert!(!is_admin_only(&Cmd::Status(None)));
    }

    #[test]
    fn status_lines() {
        let now = OffsetDateTime::parse(
            "2024-05-01T14:05:11Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let v = json!({
            "instance": "mymush-1", "game": "My MUSH", "active": "primary",
            "backends": [
                {"name": "primary", "addr": "127.0.0.1:4202", "up": true, "since": "2024-05-01T10:00:00Z"},
                {"name": "standby", "addr": "10.0.0.7:4202", "up": false, "since_s": 180, "reason": "connection refused"}
            ],
            "sessions": {"total": 12, "logged_in": 10, "held": 0}
        });
        assert_eq!(
            status_line(&v, now),
            "[mymush-1] My MUSH: primary 127.0.0.1:4202 UP (active), standby 10.0.0.7:4202 DOWN for 3m (connection refused); 12 sessions, 10 logged in, 0 held"
        );
        let e = json!({"instance": "x", "error": "boom\nbang"});
        assert_eq!(status_line(&e, now), "[x] error: boom bang");
        let odd = json!({"instance": "y", "game": "G", "active": {"name": "b"}, "backends": [{"name": "b", "addr": "h:1", "up": true}, {"name": "c", "addr": "h:2", "up": null}], "sessions": {"total": 1}});
        assert_eq!(
            status_line(&odd, now),
            "[y] G: b h:1 UP (active), c h:2 (not probed yet); 1 session, 0 logged in, 0 held"
        );
    }
}
