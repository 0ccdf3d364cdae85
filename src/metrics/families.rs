//! Every series' name, help text, labels and buckets, registered once
//! when the process's [`Metrics`] are made. Kept apart from the API the
//! proxy calls (`mod.rs`) so that what a scrape shows can be read in one
//! place.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::{process, Metrics, RefusedReason, Seen, STATES};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StateL {
    pub(super) state: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BackendL {
    pub(super) backend: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TransitionL {
    pub(super) backend: String,
    pub(super) to: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ListenerL {
    pub(super) listener: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonL {
    pub(super) reason: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultL {
    pub(super) result: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ProbeL {
    pub(super) backend: String,
    pub(super) result: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DirectionL {
    pub(super) direction: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ClusterL {
    pub(super) cluster: String,
}
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VersionL {
    pub(super) version: String,
}

fn probe_histogram() -> Histogram {
    // 1 ms .. ~33 s: a local game answers in a millisecond, a loaded one
    // in seconds, and the timeout is the upper end.
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Metrics {
    pub(super) fn new() -> Metrics {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("holdfast");
        let sessions = Family::<StateL, Gauge>::default();
        r.register("sessions", "Player sessions by state", sessions.clone());
        let backend_up = Family::<BackendL, Gauge>::default();
        r.register(
            "backend_up",
            "1 while the backend's probe says it is up, 0 while down",
            backend_up.clone(),
        );
        let transitions = Family::<TransitionL, Counter>::default();
        r.register(
            "backend_transitions",
            "Backend up/down changes, by backend and new state",
            transitions.clone(),
        );
        let failovers = Counter::default();
        r.register(
            "failovers",
            "Times the active backend changed",
            failovers.clone(),
        );
        let connections = Family::<ListenerL, Counter>::default();
        r.register(
            "connections",
            "Player connections accepted, by listener",
            connections.clone(),
        );
        let refused = Family::<ReasonL, Counter>::default();
        r.register(
            "connections_refused",
            "Player connections refused, by reason",
            refused.clone(),
        );
        let relogins = Family::<ResultL, Counter>::default();
        r.register(
            "relogins",
            "Re-logins after an outage or failover, by result",
            relogins.clone(),
        );
        // 10 ms .. ~40 min.
        let relogin_duration = Histogram::new([
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ]);
        r.register_with_unit(
            "relogin_duration",
            "Time from reconnecting to the game's login confirmation",
            Unit::Seconds,
            relogin_duration.clone(),
        );
        // 1 s .. 6 h: a restart, a crash, a night.
        let outage_duration = Histogram::new([
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
        ]);
        r.register_with_unit(
            "outage_duration",
            "Time the players were without a game (active backend down until one is up)",
            Unit::Seconds,
            outage_duration.clone(),
        );
        let probe_duration =
            Family::<BackendL, Histogram>::new_with_constructor(probe_histogram as fn() -> _);
        r.register_with_unit(
            "probe_duration",
            "Heartbeat probe round trips, by backend",
            Unit::Seconds,
            probe_duration.clone(),
        );
        let probes = Family::<ProbeL, Counter>::default();
        r.register(
            "probes",
            "Heartbeat probes, by backend and result",
            probes.clone(),
        );
        let bytes = Family::<DirectionL, Counter>::default();
        r.register(
            "bytes",
            "Bytes relayed, by direction seen from the player",
            bytes.clone(),
        );
        let dir = |d: &str| {
            bytes
                .get_or_create(&DirectionL {
                    direction: d.to_string(),
                })
                .clone()
        };
        let (to_player, from_player) = (dir("to_player"), dir("from_player"));
        let bus_queue = Gauge::default();
        r.register(
            "bus_queue_events",
            "Events waiting for NATS in the outage queue",
            bus_queue.clone(),
        );
        let bus_dropped = Counter::default();
        r.register(
            "bus_events_dropped",
            "Events never published: channel full, queue overflow or refused by the server",
            bus_dropped.clone(),
        );
        let upgrades = Family::<ResultL, Counter>::default();
        r.register(
            "upgrades",
            "Hand-overs to a new process, by result",
            upgrades.clone(),
        );
        let resumes = Counter::default();
        r.register(
            "resumes",
            "Players who came back to a detached session",
            resumes.clone(),
        );
        let game_refusals = Counter::default();
        r.register(
            "game_refusals",
            "Connections and re-logins the game refused for holdfast's address (retried)",
            game_refusals.clone(),
        );
        // `bus.cluster` only: set at each scrape from the cluster task's
        // view; a family with no series is left out of the scrape.
        let cluster_term = Family::<ClusterL, Gauge>::default();
        r.register(
            "cluster_term",
            "The cluster term this instance follows (the revision of the active key)",
            cluster_term.clone(),
        );
        let cluster_fenced = Family::<ClusterL, Gauge>::default();
        r.register(
            "cluster_fenced",
            "1 while this instance holds its players for the cluster (no lease, or waiting for the others to follow a new term)",
            cluster_fenced.clone(),
        );
        let cluster_members_alive = Family::<ClusterL, Gauge>::default();
        r.register(
            "cluster_members_alive",
            "Members whose lease runs, as this instance sees them (itself included)",
            cluster_members_alive.clone(),
        );
        let build_info = Family::<VersionL, Gauge>::default();
        build_info
            .get_or_create(&VersionL {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        r.register("build_info", "The running version (always 1)", build_info);
        // Every state and result is in the first scrape, at zero.
        for s in STATES {
            let _ = sessions.get_or_create(&StateL {
                state: s.to_string(),
            });
        }
        for res in ["ok", "failed", "timeout"] {
            let _ = relogins.get_or_create(&ResultL {
                result: res.to_string(),
            });
        }
        for r in [
            RefusedReason::Full,
            RefusedReason::PerIp,
            RefusedReason::Unauthenticated,
            RefusedReason::Rate,
        ] {
            let _ = refused.get_or_create(&ReasonL {
                reason: r.label().to_string(),
            });
        }
        let process = process::ProcessMetrics::register(&mut root);
        Metrics {
            registry: root,
            sessions,
            backend_up,
            transitions,
            failovers,
            connections,
            refused,
            relogins,
            relogin_duration,
            outage_duration,
            probe_duration,
            probes,
            to_player,
            from_player,
            bus_queue,
            bus_dropped,
            upgrades,
            resumes,
            game_refusals,
            cluster_term,
            cluster_fenced,
            cluster_members_alive,
            process,
            seen: Mutex::new(Seen::default()),
        }
    }
}
