use super::*;
use serde_json::json;

fn relay(extra: &str) -> Relay {
    let text = format!(
        "[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:4202\"\n[irc]\nchannels = [\"#c\"]\nsummarize_window = \"10s\"\nvanish_after = \"30s\"\n{extra}"
    );
    let cfg = crate::config::Config::parse(std::path::Path::new("t.toml"), &text).unwrap();
    Relay::new(cfg.irc.as_ref().unwrap())
}

const W: OffsetDateTime = OffsetDateTime::UNIX_EPOCH;

fn ev(kind: &str, fields: Value) -> Value {
    let mut v = json!({"type": kind, "id": "x", "time": "2024-05-01T14:02:11Z",
        "instance": "mymush-1", "game": "My MUSH", "v": 1});
    for (k, x) in fields.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn texts(n: Vec<Notice>) -> Vec<String> {
    n.into_iter().map(|n| n.text).collect()
}

#[test]
fn down_then_up_with_restores() {
    let mut r = relay("");
    let t = Instant::now();
    let d = r.on_event(
        &ev(
            "backend.down",
            json!({"backend": "primary", "addr": "127.0.0.1:4202", "reason": "refused", "held": 2}),
        ),
        t,
        W,
    );
    assert_eq!(
        texts(d),
        vec!["[mymush-1] My MUSH is DOWN (primary 127.0.0.1:4202): 2 players held"]
    );
    let up = ev(
        "backend.up",
        json!({"backend": "primary", "addr": "127.0.0.1:4202", "reason": "probe ok", "down_for_s": 134}),
    );
    assert!(
        r.on_event(&up, t, W).is_empty(),
        "UP waits for its restores"
    );
    let restored = ev(
        "session.restored",
        json!({"session": 1, "user": "Ann", "backend": "primary"}),
    );
    assert!(r.on_event(&restored, t, W).is_empty());
    let u = r.on_event(&restored, t, W);
    assert_eq!(
        texts(u),
        vec!["[mymush-1] My MUSH is UP again (primary 127.0.0.1:4202) after 2m 14s: 2 players restored"]
    );
    assert!(r.tick(t + RESTORE_MAX, W).is_empty());
}

#[test]
fn up_posts_after_quiet_with_partial_count() {
    let mut r = relay("");
    let t = Instant::now();
    r.on_event(
        &ev(
            "backend.down",
            json!({"backend": "p", "addr": "x:1", "held": 3}),
        ),
        t,
        W,
    );
    r.on_event(
        &ev(
            "backend.up",
            json!({"backend": "p", "addr": "x:1", "down_for_s": 5}),
        ),
        t,
        W,
    );
    r.on_event(&ev("session.restored", json!({"user": "A"})), t, W);
    assert!(r.tick(t + Duration::from_secs(1), W).is_empty());
    let u = texts(r.tick(t + RESTORE_QUIET, W));
    assert_eq!(u.len(), 1);
    assert!(
        u[0].ends_with("after 5s: 1 of 3 players restored"),
        "{}",
        u[0]
    );
}

#[test]
fn up_with_nobody_held_is_immediate() {
    let mut r = relay("");
    let t = Instant::now();
    r.on_event(
        &ev(
            "backend.down",
            json!({"backend": "p", "addr": "x:1", "held": 0}),
        ),
        t,
        W,
    );
    let u = texts(r.on_event(
        &ev(
            "backend.up",
            json!({"backend": "p", "addr": "x:1", "down_for_s": 5}),
        ),
        t,
        W,
    ));
    assert_eq!(u.len(), 1);
    assert!(u[0].ends_with("no players restored"), "{}", u[0]);
}

#[test]
fn failover_reload_and_ignored_kinds() {
    let mut r = relay("");
    let t = Instant::now();
    let f = texts(r.on_event(
        &ev(
            "failover",
            json!({"from": "primary", "to": "standby", "reason": "automatic"}),
        ),
        t,
        W,
    ));
    assert_eq!(
        f,
        vec!["[mymush-1] My MUSH failed over from primary to standby (automatic)"]
    );
    let e = texts(r.on_event(
        &ev(
            "config.reloaded",
            json!({"ok": false, "error": "t.toml:3:1: bad\nthing"}),
        ),
        t,
        W,
    ));
    assert_eq!(
        e,
        vec!["[mymush-1] config reload FAILED, old config kept: t.toml:3:1: bad thing"]
    );
    assert!(r
        .on_event(&ev("config.reloaded", json!({"ok": true})), t, W)
        .is_empty());
    // Logins are off by default.
    assert!(r
        .on_event(
            &ev("session.login", json!({"session": 1, "user": "Ann"})),
            t,
            W
        )
        .is_empty());
    assert!(r
        .on_event(&ev("proxy.start", json!({"version": "1"})), t, W)
        .is_empty());
    assert!(r.tick(t + Duration::from_secs(60), W).is_empty());
}

#[test]
fn login_burst_is_summarised() {
    let mut r = relay("post_logins = true");
    let t = Instant::now();
    let mut lines = Vec::new();
    for i in 0..50 {
        lines.extend(texts(r.on_event(
            &ev(
                "session.login",
                json!({"session": i, "user": format!("P{i}")}),
            ),
            t + Duration::from_millis(i * 10),
            W,
        )));
    }
    assert_eq!(lines, vec!["[mymush-1] P0 logged in"]);
    let s = texts(r.tick(t + Duration::from_secs(10), W));
    assert_eq!(s.len(), 1);
    assert!(
        s[0].starts_with("[mymush-1] 49 more logins in 10s: P1, P2,")
            && s[0].ends_with("and 39 others"),
        "{}",
        s[0]
    );
    // A logout without a user (never logged in) is not posted.
    assert!(r
        .on_event(
            &ev("session.close", json!({"session": 9, "reason": "idle"})),
            t,
            W
        )
        .is_empty());
    let l = texts(r.on_event(
        &ev(
            "session.close",
            json!({"session": 1, "user": "P1", "reason": "quit"}),
        ),
        t,
        W,
    ));
    assert_eq!(l, vec!["[mymush-1] P1 logged out"]);
}

#[test]
fn flapping_backend_is_summarised() {
    let mut r = relay("");
    let t = Instant::now();
    let mut lines = Vec::new();
    for i in 0..10u64 {
        let kind = if i % 2 == 0 {
            "backend.down"
        } else {
            "backend.up"
        };
        lines.extend(texts(r.on_event(
            &ev(
                kind,
                json!({"backend": "p", "addr": "x:1", "held": 0, "down_for_s": 1}),
            ),
            t + Duration::from_millis(i * 100),
            W,
        )));
    }
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let s = texts(r.tick(t + Duration::from_secs(10), W));
    assert_eq!(
        s,
        vec!["[mymush-1] p is flapping: 3 down and 3 up in 10s, now UP"]
    );
}

#[test]
fn vanish_and_back() {
    let mut r = relay("");
    let t = Instant::now();
    r.on_bus(true, t);
    let hb = json!({"instance": "mymush-1", "version": "0.1.0", "event": "heartbeat"});
    assert!(r.on_presence(&hb, t, W).is_empty());
    assert!(r.tick(t + Duration::from_secs(29), W).is_empty());
    let v = texts(r.tick(t + Duration::from_secs(30), W));
    assert_eq!(
        v,
        vec!["[mymush-1] holdfast instance vanished: no heartbeat for 30s"]
    );
    assert!(
        r.tick(t + Duration::from_secs(90), W).is_empty(),
        "said once"
    );
    let b = texts(r.on_presence(&hb, t + Duration::from_secs(95), W));
    assert_eq!(b, vec!["[mymush-1] holdfast instance is back after 1m 35s"]);
}

#[test]
fn no_vanish_while_bus_down_or_after_goodbye() {
    let mut r = relay("");
    let t = Instant::now();
    r.on_bus(true, t);
    r.on_presence(&json!({"instance": "a", "event": "hello"}), t, W);
    r.on_presence(&json!({"instance": "b", "event": "hello"}), t, W);
    r.on_presence(&json!({"instance": "b", "event": "goodbye"}), t, W);
    assert_eq!(r.instance_names(), vec!["a"]);
    r.on_bus(false, t + Duration::from_secs(1));
    assert!(r.tick(t + Duration::from_secs(100), W).is_empty());
    r.on_bus(true, t + Duration::from_secs(100));
    assert!(r.tick(t + Duration::from_secs(129), W).is_empty());
    assert_eq!(r.tick(t + Duration::from_secs(130), W).len(), 1);
}

#[test]
fn late_suffix() {
    let r = relay("");
    let t = OffsetDateTime::parse(
        "2024-05-01T14:02:11Z",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(
        r.formats().late("[x] DOWN", t, t),
        "[x] DOWN (at 14:02:11 UTC, posted late)"
    );
}

#[test]
fn first_probe_up_is_silent() {
    let mut r = relay("");
    let t = Instant::now();
    let up = ev(
        "backend.up",
        json!({"backend": "p", "addr": "x:1", "reason": "probe ok"}),
    );
    assert!(r.on_event(&up, t, W).is_empty());
    assert!(r.tick(t + RESTORE_MAX, W).is_empty());
}

#[test]
fn standby_backends_are_not_the_game() {
    let mut r = relay("");
    let t = Instant::now();
    let hb = json!({"type": "presence.heartbeat", "instance": "mymush-1", "active": "primary", "heartbeat_s": 10.0});
    r.on_presence(&hb, t, W);
    let d = texts(r.on_event(&ev("backend.down", json!({"backend": "standby", "addr": "10.0.0.7:4202", "reason": "connection refused", "held": 0})), t, W));
    assert_eq!(
        d,
        vec!["[mymush-1] standby backend standby (10.0.0.7:4202) is down: connection refused"]
    );
    let u = texts(r.on_event(
        &ev(
            "backend.up",
            json!({"backend": "standby", "addr": "10.0.0.7:4202", "down_for_s": 3.0}),
        ),
        t,
        W,
    ));
    assert_eq!(
        u,
        vec!["[mymush-1] standby backend standby (10.0.0.7:4202) is up again"]
    );
    // After a failover the old primary is the standby.
    r.on_event(
        &ev(
            "failover",
            json!({"from": "primary", "to": "standby", "reason": "request"}),
        ),
        t,
        W,
    );
    let d = texts(r.on_event(
        &ev(
            "backend.down",
            json!({"backend": "primary", "addr": "x:1", "reason": "gone", "held": 0}),
        ),
        t,
        W,
    ));
    assert!(
        d[0].starts_with("[mymush-1] standby backend primary"),
        "{d:?}"
    );
    let d = texts(r.on_event(
        &ev(
            "backend.down",
            json!({"backend": "standby", "addr": "x:2", "held": 4}),
        ),
        t,
        W,
    ));
    assert_eq!(
        d,
        vec!["[mymush-1] My MUSH is DOWN (standby x:2): 4 players held"]
    );
}

#[test]
fn presence_types_and_slow_heartbeats() {
    let mut r = relay("");
    let t = Instant::now();
    r.on_bus(true, t);
    let p = |ty: &str| json!({"type": ty, "instance": "slow", "heartbeat_s": 20.0});
    r.on_presence(&p("presence.hello"), t, W);
    // 30 s configured, but 3.5 missed 20 s beats is 70 s.
    assert!(r.tick(t + Duration::from_secs(69), W).is_empty());
    assert_eq!(r.tick(t + Duration::from_secs(70), W).len(), 1);
    r.on_presence(&p("presence.goodbye"), t + Duration::from_secs(71), W);
    assert!(r.instance_names().is_empty());
    assert!(r.tick(t + Duration::from_secs(500), W).is_empty());
}
