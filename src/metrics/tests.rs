//! The metrics' counters, gauges and pool watcher, without a server.

use super::*;
fn pool(active: &str, ups: &[(&str, Option<bool>)], epoch: u64) -> PoolSeen {
    PoolSeen {
        backends: ups.iter().map(|(n, up)| (n.to_string(), *up)).collect(),
        epoch,
        active_down: ups.iter().any(|(n, up)| *n == active && *up == Some(false)),
    }
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
}

#[test]
fn pool_changes_become_transitions_failovers_and_outages() {
    let m = Metrics::new();
    // First results are states, not transitions.
    m.pool_changed(&pool("a", &[("a", None), ("b", None)], 0));
    m.pool_changed(&pool("a", &[("a", Some(true)), ("b", Some(true))], 0));
    let t = m.encode();
    assert!(
        t.contains("holdfast_backend_transitions_total{backend=\"a\",to=\"down\"} 0"),
        "{t}"
    );
    assert_eq!(
        line(&t, "holdfast_backend_up{backend=\"a\"}"),
        "holdfast_backend_up{backend=\"a\"} 1"
    );
    // a goes down: one transition, an outage starts.
    m.pool_changed(&pool("a", &[("a", Some(false)), ("b", Some(true))], 0));
    m.pool_changed(&pool("a", &[("a", Some(false)), ("b", Some(true))], 0));
    let t = m.encode();
    assert!(
        t.contains("holdfast_backend_transitions_total{backend=\"a\",to=\"down\"} 1"),
        "{t}"
    );
    assert!(
        t.contains("holdfast_outage_duration_seconds_count 0"),
        "{t}"
    );
    // Failover to b ends the outage.
    m.pool_changed(&pool("b", &[("a", Some(false)), ("b", Some(true))], 1));
    let t = m.encode();
    assert!(t.contains("holdfast_failovers_total 1"), "{t}");
    assert!(
        t.contains("holdfast_outage_duration_seconds_count 1"),
        "{t}"
    );
    assert!(t.contains("holdfast_backend_up{backend=\"a\"} 0"), "{t}");
}

#[test]
fn hot_path_counters_and_labels() {
    let m = Metrics::new();
    m.bytes(Direction::ToPlayer, 100);
    m.bytes(Direction::ToPlayer, 23);
    m.bytes(Direction::FromPlayer, 7);
    m.relogin(ReloginResult::Timeout, Duration::from_millis(1500));
    m.refused(RefusedReason::PerIp);
    m.connection("127.0.0.1:4201");
    let t = m.encode();
    for want in [
        "holdfast_bytes_total{direction=\"to_player\"} 123",
        "holdfast_bytes_total{direction=\"from_player\"} 7",
        "holdfast_relogins_total{result=\"timeout\"} 1",
        "holdfast_relogins_total{result=\"ok\"} 0",
        "holdfast_relogin_duration_seconds_count 1",
        "holdfast_connections_refused_total{reason=\"per_ip\"} 1",
        "holdfast_connections_total{listener=\"127.0.0.1:4201\"} 1",
    ] {
        assert!(t.contains(want), "{want} missing from\n{t}");
    }
}
