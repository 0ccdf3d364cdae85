//! The `holdfast` command: arguments, logging, signals, then the library.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use holdfast::config::{BackendAddr, Config};
use holdfast::signals::{hold_signals, spawn_signals, Held, HoldUntil, Signals};
use holdfast::upgrade::{self, Origin};
use holdfast::Proxy;

// The allocator: jemalloc (default feature `tikv-jemallocator`) returns
// memory after a load where glibc's keeps its peak; `--no-default-features`
// gives glibc's, `--features mimalloc` mimalloc (figures: docs/allocator.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(all(feature = "tikv-jemallocator", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Connection-preserving proxy for MUSH/MUD/MOO game servers.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Log format on stderr (filter with RUST_LOG, e.g. RUST_LOG=holdfast=debug).
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        /// Config file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        /// Write the bound listen addresses to this file once accepting
        /// (one per line), for supervisors and tests.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Validate the config file and print a summary.
    Check {
        /// Config file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Run the IRC relay: bus events to IRC channels.
    Irc {
        /// Config file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Ask running instances over the bus and print their state.
    Status {
        /// Config file.
        #[arg(short, long, default_value = "config.toml")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // async-nats logs every failed reconnect attempt at info; the bus
        // reports outages itself, once.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    // Where this binary was started from, before anything can replace it:
    // an upgrade starts that path again.
    let origin = Origin::capture().ok();
    let cli = Cli::parse();
    if let Command::Check { config } = &cli.command {
        return check(config);
    }
    init_tracing(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // A worker about to sleep gives its allocator cache back once a
        // crowd has left (holdfast::alloc).
        .on_thread_park(holdfast::alloc::on_park)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        #[cfg(feature = "jemalloc-stats")]
        holdfast::alloc::spawn_stats_writer();
        // This thread runs the future below (an upgrade's handover among
        // it), not tasks: it gives its allocator cache back on its own.
        tokio::select! {
            c = main_future(cli, origin) => c,
            () = holdfast::alloc::follow_on_this_thread() => unreachable!("it never ends"),
        }
    })
}

/// What the command does, on the runtime.
async fn main_future(cli: Cli, origin: Option<Origin>) -> ExitCode {
    let r = match cli.command {
        Command::Run { config, ready_file } => run(&config, ready_file, origin).await,
        Command::Irc { config } => match load(&config) {
            Ok(cfg) => irc(cfg).await,
            Err(c) => return c,
        },
        Command::Status { config, json } => match load(&config) {
            // A command's answer, not a daemon's log: one plain line.
            Ok(cfg) => match holdfast::bus::status_command(&cfg, json).await {
                Ok(()) => return ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("holdfast status: {e}");
                    return ExitCode::from(1);
                }
            },
            Err(c) => return c,
        },
        Command::Check { .. } => unreachable!("handled above"),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(
    path: &Path,
    ready_file: Option<PathBuf>,
    origin: Option<Origin>,
) -> anyhow::Result<()> {
    // Signals first: once the ready file names this pid, a SIGUSR2 must
    // find its handler (the default action ends the process); and a new
    // process of an upgrade has them before the first byte of the
    // handover (until its commit they are held, see `hold_signals`).
    let signals = Signals::install()?;
    // Started by an upgrade: stdin is the old process's socket.
    let incoming = if upgrade::new::is_upgrade() {
        Some(upgrade::new::Incoming::take()?)
    } else {
        None
    };
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            if let Some(inc) = &incoming {
                inc.refuse(&format!("the new config does not validate: {e}"));
            }
            anyhow::bail!("invalid config");
        }
    };
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    raise_nofile(&cfg);
    if let Some(inc) = incoming {
        let until = HoldUntil::default();
        let held = tokio::spawn(hold_signals(signals, until.clone()));
        return run_upgraded(inc, cfg, ready_file, origin, (until, held)).await;
    }
    let listeners = Proxy::bind(&cfg).await?;
    let doors = Proxy::bind_doors(&cfg).await?;
    let shutdown = CancellationToken::new();
    let proxy = Proxy::new(cfg, shutdown.clone());
    let shared = proxy.shared();
    if let Some(o) = origin {
        shared.handover.set_origin(o);
    }
    spawn_signals(shared, shutdown, signals, Held::default());
    if let Some(f) = ready_file {
        upgrade::notify::write_ready_lines(&f, &ready_lines(&listeners, &doors))?;
    }
    let _ = upgrade::notify::sd_notify("READY=1\n");
    proxy.run_with_doors(listeners, doors).await
}

/// The new process of an upgrade: take everything over, a batch at a
/// time, and start nothing before the old process's commit (see
/// `holdfast::upgrade`): until then the old process alone owns every
/// session, and any failure here ends this process (exit 1) while the old
/// one, whose frozen sessions nothing touched, kills it and carries on.
async fn run_upgraded(
    inc: upgrade::new::Incoming,
    cfg: Config,
    ready_file: Option<PathBuf>,
    origin: Option<Origin>,
    (until, held): (HoldUntil, tokio::task::JoinHandle<(Signals, Held)>),
) -> anyhow::Result<()> {
    use upgrade::new::Step;
    let refuse = |e: String| {
        inc.refuse(&e);
        anyhow::anyhow!(e)
    };
    inc.hello()?;
    let cfg = std::sync::Arc::new(cfg);
    let (head, inherited) = inc.receive_head().await.map_err(refuse)?;
    let mut listeners = Vec::new();
    let mut doors = Vec::new();
    let mut have = Vec::new();
    for (door, l) in inherited {
        have.push((door, l.local_addr()?));
        let l = tokio::net::TcpListener::from_std(l)?;
        match door {
            None => listeners.push(l),
            Some(door) => doors.push(holdfast::front::Bound { door, listener: l }),
        }
    }
    // Addresses new in the config are bound; inherited ones are kept
    // (a config with port 0 matches the inherited port).
    let covered = |door, a: &std::net::SocketAddr| {
        have.iter()
            .any(|(d, h)| *d == door && (h == a || (a.port() == 0 && h.ip() == a.ip())))
    };
    for a in &cfg.listen.addrs {
        if !covered(None, a) {
            listeners.push(holdfast::bind_addr(*a).map_err(|e| refuse(e.to_string()))?);
        }
    }
    for (door, a) in holdfast::front::addrs(&cfg) {
        if !covered(Some(door), &a) {
            let listener = holdfast::bind_addr(a).map_err(|e| refuse(e.to_string()))?;
            doors.push(holdfast::front::Bound { door, listener });
        }
    }
    let shutdown = CancellationToken::new();
    let mut proxy = Proxy::new((*cfg).clone(), shutdown.clone());
    let shared = proxy.shared();
    if let Some(o) = origin {
        shared.handover.set_origin(o);
    }
    upgrade::new::adopt(&shared, &head);
    // The probes run from the first session on (a boot during the
    // handover is judged like any other).
    proxy.start_probes(inc.take_probes(&head));
    inc.ready().await.map_err(refuse)?;
    let t0 = std::time::Instant::now();
    let (mut n, mut batches) = (0, 0);
    // Registered but not started: nothing is read or written before the
    // commit.
    let mut taken = Vec::new();
    // A batch read and checked, to be registered and confirmed.
    let mut pending = None;
    loop {
        // The next batch is read and checked on a blocking thread while
        // this one is registered here (two cores at work, not one after
        // the other); it is confirmed only once registered, as before.
        let next = inc.next(&cfg);
        if let Some(sessions) = pending.take() {
            let sessions: Vec<upgrade::new::Taken> = sessions;
            let k = sessions.len();
            let ready =
                upgrade::new::prepare(&shared, sessions).map_err(|e| refuse(e.to_string()))?;
            taken.extend(ready);
            inc.took(k).await.map_err(refuse)?;
            n += k;
            batches += 1;
        }
        match next.await.map_err(refuse)? {
            Step::Batch(sessions) => pending = Some(sessions),
            Step::Cluster(c) => {
                upgrade::new::adopt_cluster(&shared, c);
                inc.took(0).await.map_err(refuse)?;
            }
            Step::Commit => break,
            Step::Gone => {
                // It kills this process before it thaws anything, so,
                // alive, this process owns what it took.
                tracing::warn!(
                    sessions = n,
                    "upgrade: the old process went away before its commit; carrying on with what it handed over"
                );
                break;
            }
        }
    }
    upgrade::new::start(&shared, taken);
    // The old process is going: its socket has done its job.
    drop(inc);
    info!(
        sessions = n,
        batches,
        from = %head.from_version,
        took_ms = t0.elapsed().as_millis() as u64,
        "upgrade: took everything over"
    );
    holdfast::metrics::metrics().upgrade("ok");
    shared.events.emit(
        holdfast::events::Event::new("proxy.upgrade")
            .with("ok", true)
            .with("from_version", head.from_version.as_str())
            .with("to_version", env!("CARGO_PKG_VERSION"))
            .with("sessions", n as u64),
    );
    until.done();
    let (signals, was_held) = held.await?;
    spawn_signals(shared, shutdown, signals, was_held);
    if let Some(f) = ready_file {
        upgrade::notify::write_ready_lines(&f, &ready_lines(&listeners, &doors))?;
    }
    if let Err(e) = upgrade::notify::sd_upgraded() {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    proxy.run_with_doors(listeners, doors).await
}

/// The ready file's address lines: telnet listeners, then each front
/// door's as `door addr`.
fn ready_lines(
    listeners: &[tokio::net::TcpListener],
    doors: &[holdfast::front::Bound],
) -> Vec<String> {
    listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.to_string())
        .chain(doors.iter().filter_map(|b| {
            let a = b.listener.local_addr().ok()?;
            Some(format!("{} {a}", b.door.as_str()))
        }))
        .collect()
}

/// Descriptors a session can hold at once: the player's socket and the
/// game's.
const FDS_PER_SESSION: u64 = 2;
/// Descriptors besides the sessions: stdio, the runtime, listeners, one or
/// two per backend probe, the bus, DNS look-ups, and slack for accepts that
/// are refused with a notice.
const FDS_BESIDES_SESSIONS: u64 = 64;

/// Raises the soft open-file limit to the hard one (the soft default, often
/// 1024, would cap the proxy at a few hundred players), and warns when even
/// that cannot hold `listen.max_sessions`.
fn raise_nofile(cfg: &Config) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let mut soft = lim.current;
    if lim.current != lim.maximum {
        let want = Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        match setrlimit(Resource::Nofile, want) {
            Ok(()) => soft = lim.maximum,
            Err(e) => warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
    let need = (cfg.listen.max_sessions as u64)
        .saturating_mul(FDS_PER_SESSION)
        .saturating_add(FDS_BESIDES_SESSIONS + 2 * cfg.backends.len() as u64);
    match soft {
        // None: unlimited.
        Some(have) if have < need => warn!(
            "the open-file limit ({have}) cannot hold listen.max_sessions = {} (about {need} files: two per session): raise LimitNOFILE= in the systemd unit (or ulimit -n), or lower max_sessions",
            cfg.listen.max_sessions
        ),
        _ => debug!(limit = ?soft, need, "open-file limit"),
    }
}

/// `holdfast irc`: the relay, stopped by SIGTERM or SIGINT.
async fn irc(cfg: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = CancellationToken::new();
    let sd = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM"),
            _ = int.recv() => info!("SIGINT"),
        }
        sd.cancel();
    });
    holdfast::irc::run(cfg, shutdown).await
}

fn check(path: &Path) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let mut problems = 0;
    for (b, pos) in cfg.backends.iter().zip(&cfg.backend_addr_pos) {
        if let BackendAddr::Unix(p) = &b.addr {
            use std::os::unix::fs::FileTypeExt;
            let msg = match std::fs::metadata(p) {
                Err(e) => Some(format!(
                    "socket {} does not exist or cannot be read: {e}",
                    p.display()
                )),
                Ok(m) if !m.file_type().is_socket() => {
                    Some(format!("{} is not a Unix socket", p.display()))
                }
                Ok(_) => None,
            };
            if let Some(m) = msg {
                println!("{}:{}:{}: {m}", path.display(), pos.0, pos.1);
                problems += 1;
            }
        }
    }
    if problems > 0 {
        return ExitCode::from(1);
    }
    print!("{}", holdfast::config::summary(&cfg));
    for w in &cfg.warnings {
        println!("warning: {w}");
    }
    ExitCode::SUCCESS
}
