//! `holdfast status`: ask every instance over the bus
//! (`{prefix}.rpc.all.status`) and print what they answer.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::Duration;

use async_nats::{Client, ConnectErrorKind, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::time::{timeout_at, Instant};

use super::{connect_options, server_addrs, Subjects, ALL};
use crate::config::Config;

/// Once every instance seen in presence has answered, replies still
/// arriving this soon are taken too (an instance that started a moment
/// ago may not be in anyone's presence list yet).
const STRAGGLERS: Duration = Duration::from_millis(100);

/// `holdfast status [--json]`: prints a table (or the replies as a JSON
/// array). Fails if NATS cannot be reached or no instance answers within
/// `bus.request_timeout`. Its errors are one plain sentence, meant for
/// stderr as they are.
pub async fn status_command(cfg: &Config, json: bool) -> anyhow::Result<()> {
    if cfg.bus.servers.is_empty() {
        anyhow::bail!("no bus configured ([bus] servers is empty): nothing to ask");
    }
    let servers = server_addrs(&cfg.bus)?;
    let opts = connect_options(&cfg.bus, "holdfast status")
        .await?
        .connection_timeout(cfg.bus.request_timeout);
    let client = match opts.connect(servers).await {
        Ok(c) => c,
        Err(e) => anyhow::bail!(
            "cannot reach NATS at {}: {}",
            cfg.bus.servers.join(", "),
            plain_cause(&e, cfg.bus.request_timeout)
        ),
    };
    let replies = ask_all(
        &client,
        &Subjects::new(&cfg.bus),
        "status",
        Bytes::new(),
        cfg.bus.request_timeout,
    )
    .await?;
    let none = replies.is_empty();
    if json {
        println!("{}", serde_json::to_string_pretty(&replies)?);
    }
    if none {
        anyhow::bail!(
            "no instance answered on {} within {}",
            Subjects::new(&cfg.bus).rpc(ALL, "status"),
            humantime::format_duration(cfg.bus.request_timeout)
        );
    }
    if !json {
        print!("{}", render_table(&replies));
    }
    Ok(())
}

/// Why the connection failed, in a few words (the client's own errors
/// repeat their cause: "IO error: Connection refused: Connection refused").
fn plain_cause(e: &async_nats::ConnectError, wait: Duration) -> String {
    match e.kind() {
        ConnectErrorKind::TimedOut => {
            format!("no answer within {}", humantime::format_duration(wait))
        }
        ConnectErrorKind::AuthorizationViolation => {
            "authorization violation (check the [bus] credentials)".into()
        }
        _ => {
            let mut inner: &dyn std::error::Error = e;
            while let Some(s) = inner.source() {
                inner = s;
            }
            match inner.downcast_ref::<std::io::Error>() {
                Some(io) => io.kind().to_string(),
                None => inner.to_string(),
            }
        }
    }
}

/// Sends `method` to every instance and collects the replies, sorted by
/// instance name. It stops waiting once every instance any reply names as
/// seen in presence (its `bus.peers`) has answered (and [`STRAGGLERS`] more),
/// at once when nobody listens, and otherwise after `wait`.
pub async fn ask_all(
    client: &Client,
    subjects: &Subjects,
    method: &str,
    payload: Bytes,
    wait: Duration,
) -> anyhow::Result<Vec<Value>> {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await?;
    client
        .publish_with_reply(subjects.rpc(ALL, method), inbox, payload)
        .await?;
    client.flush().await?;
    let mut deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut settled = false;
    while let Ok(Some(m)) = timeout_at(deadline, sub.next()).await {
        // A status message is the server's, not an instance's: "no
        // responders" means nobody subscribes to the subject at all.
        if let Some(code) = m.status {
            if code == StatusCode::NO_RESPONDERS && out.is_empty() {
                break;
            }
            continue;
        }
        match serde_json::from_slice::<Value>(&m.payload) {
            Ok(v) => out.push(v),
            Err(e) => tracing::debug!(error = %e, "a reply that is not JSON; ignored"),
        }
        if !settled && all_answered(&out) {
            settled = true;
            deadline = deadline.min(Instant::now() + STRAGGLERS);
        }
    }
    out.sort_by(|a, b| {
        a["instance"]
            .as_str()
            .unwrap_or_default()
            .cmp(b["instance"].as_str().unwrap_or_default())
    });
    Ok(out)
}

/// True when every reply lists the instances it saw in presence
/// (`bus.peers`) and each of those has answered.
fn all_answered(replies: &[Value]) -> bool {
    let answered: BTreeSet<&str> = replies
        .iter()
        .filter_map(|r| r["instance"].as_str())
        .collect();
    let mut expected = BTreeSet::new();
    for r in replies {
        let Some(peers) = r["bus"]["peers"].as_array() else {
            return false; // an older version: no telling who else exists
        };
        expected.extend(peers.iter().filter_map(Value::as_str));
    }
    !answered.is_empty() && expected.is_subset(&answered)
}

fn ago(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// The version, and the upgrades (`SIGUSR2`) the instance went through
/// since it was started, if any.
fn version(r: &Value) -> String {
    let v = r["version"].as_str().unwrap_or_default();
    match r["upgrades"].as_u64().unwrap_or(0) {
        0 => v.to_string(),
        1 => format!("{v} (1 upgrade)"),
        n => format!("{v} ({n} upgrades)"),
    }
}

/// The held sessions, and the paused ones if any (`3 (2 paused)`).
fn held(sessions: &Value) -> String {
    let held = match &sessions["held"] {
        Value::Null => "-".to_string(),
        v => v.to_string(),
    };
    match sessions["paused"].as_u64() {
        Some(n) if n > 0 => format!("{held} ({n} paused)"),
        _ => held,
    }
}

/// The human table `holdfast status` prints for `status` replies.
pub fn render_table(replies: &[Value]) -> String {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    let mut rows = vec![[
        "INSTANCE".to_string(),
        "GAME".into(),
        "VERSION".into(),
        "UPTIME".into(),
        "ACTIVE".into(),
        "SESSIONS".into(),
        "LOGGED IN".into(),
        "HELD".into(),
        "BUS QUEUE".into(),
        "DROPPED".into(),
    ]];
    for r in replies {
        if let Some(e) = r.get("error") {
            rows.push([
                s(&r["instance"]),
                format!("error: {}", s(e)),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            continue;
        }
        let ev = &r["events"];
        let dropped = ev["dropped_channel"].as_u64().unwrap_or(0)
            + ev["dropped_overflow"].as_u64().unwrap_or(0);
        rows.push([
            s(&r["instance"]),
            s(&r["game"]),
            version(r),
            ago(r["uptime_s"].as_u64().unwrap_or(0)),
            s(&r["active"]),
            s(&r["sessions"]["total"]),
            s(&r["sessions"]["logged_in"]),
            held(&r["sessions"]),
            s(&ev["queued"]),
            dropped.to_string(),
        ]);
    }
    let mut widths = [0usize; 10];
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |row: &[String; 10]| {
        let mut l = String::new();
        for (i, (c, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{c:<w$}");
        }
        l.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&rows[0]));
    for (row, r) in rows[1..].iter().zip(replies) {
        let _ = writeln!(out, "{}", line(row));
        let backends = r["backends"].as_array().cloned().unwrap_or_default();
        let bw = backends
            .iter()
            .map(|b| s(&b["name"]).chars().count())
            .max()
            .unwrap_or(0);
        let aw = backends
            .iter()
            .map(|b| s(&b["addr"]).chars().count())
            .max()
            .unwrap_or(0);
        for b in &backends {
            let mark = if b["active"] == true { "*" } else { " " };
            let state = s(&b["state"]);
            let mut l = format!(
                "  {mark} {:<bw$}  {:<aw$}  {:<7}  since {} ({} ago)",
                s(&b["name"]),
                s(&b["addr"]),
                state,
                s(&b["since"]),
                ago(b["since_s"].as_u64().unwrap_or(0)),
            );
            if state != "up" {
                let _ = write!(l, "  {}", s(&b["reason"]));
            } else if b["degraded"].is_string() {
                let _ = write!(l, "  probe degraded: {}", s(&b["degraded"]));
            }
            let _ = writeln!(out, "{l}");
        }
        let bus = &r["bus"];
        if bus.is_object() && bus["connected"] == false {
            let _ = writeln!(out, "    bus: not connected");
        }
        if r["cluster"].is_object() {
            cluster_lines(&mut out, &r["cluster"]);
        }
    }
    out
}

/// `bus.cluster`: the cluster's choice and term, then each member as this
/// instance sees it (its term, its lease's age, what its probes see).
fn cluster_lines(out: &mut String, c: &Value) {
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    };
    let mut l = format!(
        "    cluster {}: active {}, term {} (by {}), {} of {} needed to fail over, lease {}s",
        s(&c["name"]),
        s(&c["active"]),
        s(&c["term"]),
        s(&c["proposer"]),
        c["size"].as_u64().map_or(0, |n| n / 2 + 1),
        s(&c["size"]),
        s(&c["lease_s"]),
    );
    if let Some(r) = c["replicas"].as_u64() {
        let _ = write!(
            l,
            ", {r} cop{} of its bucket",
            if r == 1 { "y" } else { "ies" }
        );
    }
    if c["fenced"] == true {
        l.push_str("  FENCED: relaying nothing");
    }
    if c["problem"].is_string() {
        let _ = write!(l, "  ({})", s(&c["problem"]));
    }
    let _ = writeln!(out, "{l}");
    let members = c["members"].as_array().cloned().unwrap_or_default();
    let w = members
        .iter()
        .map(|m| s(&m["instance"]).chars().count())
        .max()
        .unwrap_or(0);
    for m in &members {
        let view: Vec<String> = m["backends"]
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        let st = match v {
                            Value::Bool(true) => "up",
                            Value::Bool(false) => "down",
                            _ => "unknown",
                        };
                        format!("{k} {st}")
                    })
                    .collect()
            })
            .unwrap_or_default();
        let alive = if m["alive"] == true {
            ""
        } else {
            " (lease ran out)"
        };
        let _ = writeln!(
            out,
            "      {:<w$}  term {}  renewed {}s ago{alive}  sees {}",
            s(&m["instance"]),
            s(&m["term"]),
            s(&m["lease_age_s"]),
            view.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answered_once_every_peer_has() {
        let a = json!({"instance": "a", "bus": {"peers": ["a", "b"]}});
        let b = json!({"instance": "b", "bus": {"peers": ["b"]}});
        assert!(!all_answered(&[]));
        assert!(!all_answered(std::slice::from_ref(&a)), "b is missing");
        assert!(all_answered(&[a.clone(), b.clone()]));
        assert!(
            all_answered(std::slice::from_ref(&b)),
            "b knows nobody else"
        );
        let old = json!({"instance": "c"});
        assert!(!all_answered(&[a, b, old]), "an old version: wait");
    }

    #[test]
    fn table_shows_the_cluster() {
        let r = json!({
            "instance": "a", "game": "G", "version": "0.1.0", "uptime_s": 5, "active": "b0",
            "backends": [], "sessions": {}, "events": {}, "bus": {"connected": true},
            "cluster": {"name": "prod", "size": 3, "lease_s": 10.0, "term": 7, "active": "b0",
                "proposer": "b", "fenced": true, "problem": null, "members": [
                    {"instance": "a", "term": 7, "alive": true, "lease_age_s": 0.4,
                     "backends": {"b0": true, "b1": false}},
                    {"instance": "cc", "term": 5, "alive": false, "lease_age_s": 31.0,
                     "backends": {"b0": null}},
            ]},
        });
        let t = render_table(&[r]);
        assert!(
            t.contains("cluster prod: active b0, term 7 (by b), 2 of 3 needed to fail over, lease 10.0s  FENCED"),
            "{t}"
        );
        assert!(
            t.contains("a   term 7  renewed 0.4s ago  sees b0 up, b1 down"),
            "{t}"
        );
        assert!(
            t.contains("cc  term 5  renewed 31.0s ago (lease ran out)  sees b0 unknown"),
            "{t}"
        );
    }

    #[test]
    fn the_version_says_how_many_upgrades() {
        assert_eq!(
            version(&json!({"version": "0.1.0", "upgrades": 0})),
            "0.1.0"
        );
        assert_eq!(version(&json!({"version": "0.1.0"})), "0.1.0");
        assert_eq!(held(&json!({"held": 2, "paused": 0})), "2");
        assert_eq!(held(&json!({"held": 0, "paused": 3})), "0 (3 paused)");
        assert_eq!(held(&json!({"held": 1})), "1");
        assert_eq!(
            version(&json!({"version": "0.2.0", "upgrades": 3})),
            "0.2.0 (3 upgrades)"
        );
        assert_eq!(
            version(&json!({"version": "0.2.0", "upgrades": 1})),
            "0.2.0 (1 upgrade)"
        );
    }

    #[test]
    fn table_lists_instances_and_backends() {
        let r = json!({
            "instance": "mush-1", "game": "My MUSH", "version": "0.1.0", "uptime_s": 3725,
            "active": "primary",
            "backends": [
                {"name": "primary", "addr": "127.0.0.1:4202", "state": "up", "active": true,
                 "since": "2026-01-01T00:00:00.000Z", "since_s": 60, "reason": "probe ok"},
                {"name": "standby", "addr": "10.0.0.7:4202", "state": "down", "active": false,
                 "since": "2026-01-01T00:00:00.000Z", "since_s": 5, "reason": "connection refused"},
            ],
            "sessions": {"total": 12, "logged_in": 10, "held": 0},
            "events": {"dropped_channel": 1, "dropped_overflow": 2, "queued": 0},
            "bus": {"connected": true},
        });
        let t = render_table(&[r, json!({"instance": "mush-2", "error": "boom"})]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("INSTANCE  GAME"), "{t}");
        assert!(lines[1].starts_with("mush-1"), "{t}");
        assert!(
            lines[1].contains("1h 2m 5s") && lines[1].contains(" 12 "),
            "{t}"
        );
        assert!(lines[1].trim_end().ends_with('3'), "{t}");
        assert!(lines[2].contains("* primary  127.0.0.1:4202  up"), "{t}");
        assert!(
            lines[3].contains("standby") && lines[3].ends_with("connection refused"),
            "{t}"
        );
        assert!(
            lines[4].starts_with("mush-2") && lines[4].contains("error: boom"),
            "{t}"
        );
    }
}
