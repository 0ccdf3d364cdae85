//! holdfast: a connection-preserving, high-availability proxy for MUSH, MUD
//! and MOO game servers.
//!
//! Players connect to holdfast instead of the game. When the game crashes,
//! restarts or moves, their connections stay open: holdfast tells them the
//! game is down, logs them back in when it returns (or when a standby takes
//! over), and announces every up, down and failover on a NATS bus, from
//! where `holdfast irc` posts it to IRC.
//!
//! # Layout
//!
//! | module | its one job |
//! | --- | --- |
//! | `alloc` | the allocator's per-thread caches, given back once a crowd has left |
//! | `config` | TOML types, defaults, validation with file:line:col errors (one file per section) |
//! | `template` | the `{name}` template grammar and each template's placeholders, shared by `config` (checks) and `irc` (renders); imports nothing |
//! | `reload` | SIGHUP: re-read, validate, swap; keep the old config on error |
//! | `listener` | accept loop: limits, backoff on accept errors, spawn sessions |
//! | `front` | the TLS and WebSocket doors: handshakes, the web client page |
//! | `transport` | a player's connection as a session sees it: TCP, TLS, WebSocket (its gate, the terminal adapter), what crosses an upgrade |
//! | `session` | one player: relaying, held, re-login, resume, pause (a core without I/O and its driver); holdfast's MSSP answer |
//! | `telnet` | telnet parser (bytes in, events out, no I/O), MCCP streams, the negotiation policy that answers new backends for the player |
//! | `login` | `connect` line capture, login/marker templates, nonces, quit detection per flavor |
//! | `clientip` | the player's real address: `@remotehost`, PROXY v1/v2, PennMUSH |
//! | `backend::connect` | TCP / Unix connections to a backend |
//! | `backend::health` | one heartbeat probe task per backend: up, down, degraded (`round`: one probe) |
//! | `backend::probes` | a probe's handle, and every probe's handle by backend name |
//! | `backend::coverage` | quit, boot or crash: the probe's coverage of the game process and its judgement, no I/O |
//! | `backend::handover` | the probes' connections and coverage across an upgrade |
//! | `backend::degraded` | the probe's degraded state (rejected login, refused address), no I/O |
//! | `backend::mssp` | the game's own MSSP: whether it offers it, its last answer, the probe's telnet answers |
//! | `backend::probe` | the probe's connection (connect screen, login, nonce) and its typed errors |
//! | `pool` | preference order, active backend, failover decisions |
//! | `cluster` | `bus.cluster`: many instances agree on the active backend (JetStream KV, leases, quorum, fencing) |
//! | `state` | the handles the tasks share: config, pool view, session registry, detached sessions, the sessions' side of an upgrade, the cluster's view |
//! | `limiter` | token bucket that spreads re-logins out (slowed by the game's refusals) |
//! | `quiet` | names being logged back in, whose announcements are held back |
//! | `events` | event values and the never-blocking sink sessions emit into |
//! | `bus` | NATS: event publisher with an outage queue (and the JetStream events stream), requests gated by `rpc_allow`, presence, `holdfast status` |
//! | `irc` | the IRC relay (`holdfast irc`) |
//! | `rdns` | reverse DNS for PennMUSH's header, cached, never waited for |
//! | `secret` | passwords that never print and are wiped on drop |
//! | `upgrade` | `SIGUSR2`: hand every socket and session to a new binary |
//! | `signals` | SIGHUP reloads, SIGUSR2 upgrades, SIGTERM/SIGINT stop; held during a handover |
//! | `metrics` | Prometheus series and the API that counts (plain values only) |
//! | `ops` | `/metrics` `/healthz` `/livez`, and the gauges read from the shared state at a scrape |
//!
//! # Layers
//!
//! Every module imports only modules of lower layers; `lib.rs` and
//! `main.rs` wire them. `scripts/module_cycles.py` checks it (in CI), so
//! an import that runs back up, and with it an import circle, fails the
//! build. A service owns its state and hands out a small handle (the
//! probes' `backend::Probes`, the registry, the detach index, the sessions'
//! side of an upgrade); the handles the tasks share live in `state`, above
//! the probes and below everything that uses them.
//!
//! 1. `alloc`, `secret`, `template`, `events`, `limiter`, `quiet`, `rdns`, `telnet` — plain leaves: nothing of holdfast
//! 2. `config` — the file, checked
//! 3. `login`, `clientip`, `metrics` — templates, addresses, counters
//! 4. `backend` — connections to the game, the probes and their handles
//! 5. `state` — the shared handles
//! 6. `reload`, `pool` — a new config; which backend is active
//! 7. `bus` — NATS events and requests
//! 8. `cluster`, `irc`, `ops` — what runs on the bus or beside it
//! 9. `transport` — a player's connection
//! 10. `session` — one player
//! 11. `listener` — accepting players
//! 12. `front` — the TLS and WebSocket doors
//! 13. `upgrade` — handing everything to a new process
//! 14. `signals` — what SIGHUP, SIGUSR2, SIGTERM and SIGINT do
//!
//! The library's entry point is [`Proxy`]: build it from a [`config::Config`],
//! hand it already-bound listeners (tests bind `127.0.0.1:0`), and cancel its
//! shutdown token to stop it.

#![forbid(unsafe_code)]
// The API docs are written for holdfast's developers and read with
// `cargo doc --document-private-items`, where links to private items
// resolve: they name the module or constant a reader goes to next.
#![allow(rustdoc::private_intra_doc_links)]
#![warn(missing_docs)]

pub mod alloc;
pub mod backend;
pub mod bus;
pub mod clientip;
pub mod cluster;
pub mod config;
pub mod events;
pub mod front;
pub mod irc;
pub mod limiter;
pub mod listener;
pub mod login;
pub mod metrics;
pub mod ops;
pub mod pool;
pub mod quiet;
pub mod rdns;
pub mod reload;
pub mod secret;
pub mod session;
pub mod signals;
pub mod state;
pub mod telnet;
pub mod template;
pub mod transport;
pub mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use config::Config;
use events::{Event, EventSink};
use state::Shared;

/// How long shutdown waits for sessions to say goodbye before giving up.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Capacity of the channel from sessions to the bus publisher. The
/// publisher's own queue (`bus.queue_size`) absorbs NATS outages; this only
/// has to absorb bursts between the publisher's wake-ups.
pub const EVENT_CHANNEL: usize = 4096;

/// A proxy instance, ready to run.
pub struct Proxy {
    shared: Arc<Shared>,
    events_rx: Option<mpsc::Receiver<Event>>,
    failover_rx: mpsc::Receiver<state::FailoverRequest>,
    /// The probes, once started ([`Proxy::start_probes`]).
    reports: Option<pool::Reports>,
}

impl Proxy {
    /// Builds a proxy for `config`; it stops when `shutdown` is cancelled.
    pub fn new(config: Config, shutdown: CancellationToken) -> Proxy {
        let (sink, events_rx) = if config.bus.servers.is_empty() {
            (EventSink::disabled(), None)
        } else {
            let (tx, rx) = mpsc::channel(EVENT_CHANNEL);
            (EventSink::new(tx), Some(rx))
        };
        let (failover_tx, failover_rx) = mpsc::channel(16);
        let shared = Arc::new(Shared::new(config, sink, failover_tx, shutdown));
        Proxy {
            shared,
            events_rx,
            failover_rx,
            reports: None,
        }
    }

    /// Starts the heartbeat probes now (else [`Proxy::run`] does, before it
    /// accepts anyone), from what an older process handed over in an
    /// upgrade: they must run before the first session does, to judge
    /// whether a closed game connection was a boot or a crash.
    pub fn start_probes(
        &mut self,
        inherited: std::collections::HashMap<String, backend::handover::Inherit>,
    ) {
        if self.reports.is_none() {
            self.reports = Some(pool::start_probes(&self.shared, inherited));
        }
    }

    /// The shared state (for reloads and requests).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Binds every `listen.addrs` entry.
    ///
    /// `[::]` on a host without IPv6 (a kernel booted with
    /// `ipv6.disable=1`, some containers) is skipped with a warning when
    /// another address is listed, so a config that lists both families
    /// (the sample, the package's) runs everywhere; any other failure to
    /// bind is an error.
    pub async fn bind(config: &Config) -> anyhow::Result<Vec<TcpListener>> {
        let mut out = Vec::new();
        let many = config.listen.addrs.len() > 1;
        for a in &config.listen.addrs {
            match bind_one(*a) {
                Ok(l) => out.push(l),
                Err(e) if many && a.ip() == std::net::Ipv6Addr::UNSPECIFIED && no_ipv6(&e) => {
                    warn!(addr = %a, error = %e, "this host has no IPv6; not listening on it");
                }
                Err(e) => anyhow::bail!("cannot listen on {a}: {e}"),
            }
        }
        if out.is_empty() && many {
            anyhow::bail!("no listen address could be bound");
        }
        Ok(out)
    }

    /// Binds every front-door address (`listen.tls_addrs`, `ws_addrs`,
    /// `wss_addrs`).
    pub async fn bind_doors(config: &Config) -> anyhow::Result<Vec<front::Bound>> {
        let mut out = Vec::new();
        for (door, a) in front::addrs(config) {
            let listener = bind_one(a)
                .map_err(|e| anyhow::anyhow!("cannot listen on {a} ({}): {e}", door.as_str()))?;
            out.push(front::Bound { door, listener });
        }
        Ok(out)
    }

    /// Runs until the shutdown token is cancelled, then tells every player,
    /// closes the sessions and returns.
    pub async fn run(self, listeners: Vec<TcpListener>) -> anyhow::Result<()> {
        self.run_with_doors(listeners, Vec::new()).await
    }

    /// [`run`](Self::run), with front-door listeners too.
    pub async fn run_with_doors(
        self,
        listeners: Vec<TcpListener>,
        doors: Vec<front::Bound>,
    ) -> anyhow::Result<()> {
        let shared = self.shared;
        let cfg = shared.config();
        // Changing `metrics.addr` needs a restart: the endpoint lives as
        // long as the proxy.
        // After an upgrade the old process may still hold the address for
        // a moment (it flushes its last events before it exits): bind it
        // once it is free rather than fail a process that has just taken
        // every player over.
        let upgraded = shared
            .handover
            .upgrades
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0;
        let metrics_listener = match cfg.metrics.addr {
            Some(a) => match TcpListener::bind(a).await {
                Ok(l) => Some(l),
                Err(e) if upgraded && e.kind() == std::io::ErrorKind::AddrInUse => {
                    tokio::spawn(ops::http::serve_when_free(shared.clone(), a));
                    None
                }
                Err(e) => anyhow::bail!("cannot listen on metrics address {a}: {e}"),
            },
            None => None,
        };
        front::mssp::mark_start(shared.started_unix());
        // Sessions hear of pool changes and the stop through their slot on
        // the upgrade roll, rung from here.
        tokio::spawn(shared.clone().ring_on_news());
        // What start-up (or an upgrade's handover) left in the allocator's
        // caches goes back now; and again once a crowd has left.
        alloc::give_back();
        let s = shared.clone();
        tokio::spawn(alloc::give_back_after_crowds(move || s.registry.live()));
        // The bus outlives the sessions so their last events (and
        // `proxy.stop`) are still published; it has its own stop signal.
        let bus_stop = CancellationToken::new();
        let bus_task = self
            .events_rx
            .map(|rx| tokio::spawn(bus::run(shared.clone(), rx, bus_stop.clone())));
        if bus_task.is_none() {
            info!("bus: none (bus.servers is empty); running alone");
        }
        // `bus.cluster`: moves go through the cluster (restart to change it).
        let (cluster_tx, cluster_task) = match &cfg.bus.cluster {
            Some(_) => {
                let (tx, rx) = mpsc::channel(16);
                (
                    Some(tx),
                    Some(tokio::spawn(cluster::run(shared.clone(), rx))),
                )
            }
            None => (None, None),
        };
        // Probes before players: a player's game connection made after the
        // probe's is covered by it (see `backend::coverage`).
        let reports = match self.reports {
            Some(r) => r,
            None => pool::start_probes(&shared, Default::default()),
        };
        let pool_task = tokio::spawn(pool::run(
            shared.clone(),
            self.failover_rx,
            cluster_tx,
            reports,
        ));
        if let Some(l) = metrics_listener {
            tokio::spawn(ops::http::serve(shared.clone(), l));
        }
        if cfg.metrics.addr.is_some() {
            let s = shared.clone();
            tokio::spawn(ops::follow_pool(s));
        }
        shared
            .events
            .emit(Event::new("proxy.start").with("version", env!("CARGO_PKG_VERSION")));
        for l in &listeners {
            if let Ok(a) = l.local_addr() {
                front::mssp::player_port_bound(a.port());
                info!(addr = %a, "listening");
            }
        }
        for b in &doors {
            if let Ok(a) = b.listener.local_addr() {
                info!(addr = %a, door = b.door.as_str(), "listening");
            }
        }
        let mut acceptors = upgrade::acceptors::Acceptors::start(&shared, listeners, doors)?;
        info!(game = %cfg.game, backends = cfg.backends.len(), preferred = %cfg.preferred().name, "holdfast running");
        let mut upgrades = shared.handover.take_requests();
        let mut cluster_task = cluster_task;
        // The cluster's start-up checks may refuse this instance (another
        // process with its `bus.instance`, another backend order): it stops
        // as for a shutdown and says why.
        let mut refused: Option<cluster::Refused> = None;
        loop {
            let next = async {
                match upgrades.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            // Cancel-safe: a `JoinHandle` polled again goes on waiting.
            let cluster_done = async {
                match cluster_task.as_mut() {
                    Some(t) => t.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shared.shutdown.cancelled() => break,
                r = cluster_done => {
                    cluster_task = None;
                    if let Ok(Err(e)) = r {
                        refused = Some(e);
                        shared.shutdown.cancel();
                        break;
                    }
                }
                Some(req) = next => {
                    if upgrade::old::run(&shared, &mut acceptors, req).await {
                        // The new process owns every socket now: no
                        // goodbye to anyone, no quit to the game. This
                        // process no longer follows or confirms a cluster
                        // term for sessions it does not own (the new one
                        // renews the lease it carried at once). Events
                        // of the last moments still go out (bounded: the
                        // players are already the new process's).
                        if let Some(t) = &cluster_task {
                            t.abort();
                        }
                        bus_stop.cancel();
                        if let Some(t) = bus_task {
                            let _ = tokio::time::timeout(UPGRADE_BUS_FLUSH, t).await;
                        }
                        return Ok(());
                    }
                }
            }
        }
        info!("stopping");
        acceptors.join().await;
        shared.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, shared.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                left = shared.tracker.len(),
                "sessions did not finish in time"
            );
        }
        let _ = pool_task.await;
        if let Some(t) = cluster_task {
            // It removes this instance's lease key (bounded by its timeouts).
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
        shared
            .events
            .emit(Event::new("proxy.stop").with("version", env!("CARGO_PKG_VERSION")));
        bus_stop.cancel();
        if let Some(t) = bus_task {
            // The publisher flushes what it can within its own deadline.
            let _ = t.await;
        }
        info!("stopped");
        match refused {
            Some(e) => Err(anyhow::anyhow!("bus.cluster refused this instance: {e}")),
            None => Ok(()),
        }
    }
}

/// How long an old process that handed everything over still gives its
/// bus publisher to send what it has.
const UPGRADE_BUS_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// Binds `addr` as [`Proxy::bind`] does.
pub fn bind_addr(addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    bind_one(addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}

/// Whether binding failed because the host has no IPv6 at all.
fn no_ipv6(e: &std::io::Error) -> bool {
    // EAFNOSUPPORT: no IPv6 sockets at all; EADDRNOTAVAIL: IPv6 sockets,
    // but no IPv6 address (disable_ipv6 on every interface).
    use rustix::io::Errno;
    matches!(
        Errno::from_io_error(e),
        Some(Errno::AFNOSUPPORT | Errno::ADDRNOTAVAIL)
    )
}

/// Binds a listener with SO_REUSEADDR (a restarted proxy must not wait for
/// TIME_WAIT) and, for IPv6, IPV6_V6ONLY so `[::]` and `0.0.0.0` can both
/// be listed.
fn bind_one(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    TcpListener::from_std(sock.into())
}
