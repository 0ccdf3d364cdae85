//! The `holdfast` command: arguments, logging, signals, then the library.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use holdfast::config::{BackendAddr, Config};
use holdfast::Proxy;

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
    let cli = Cli::parse();
    if let Command::Check { config } = &cli.command {
        return check(config);
    }
    init_tracing(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async move {
        let r = match cli.command {
            Command::Run { config, ready_file } => run(&config, ready_file).await,
            Command::Irc { config } => match load(&config) {
                Ok(cfg) => irc(cfg).await,
                Err(c) => return c,
            },
            Command::Status { config, json } => match load(&config) {
                Ok(cfg) => holdfast::bus::status_command(&cfg, json).await,
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
    })
}

async fn run(path: &Path, ready_file: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            anyhow::bail!("invalid config");
        }
    };
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let listeners = Proxy::bind(&cfg).await?;
    let doors = Proxy::bind_doors(&cfg).await?;
    let shutdown = CancellationToken::new();
    let proxy = Proxy::new(cfg, shutdown.clone());
    let shared = proxy.shared();
    if let Some(f) = ready_file {
        let addrs: String = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| format!("{a}\n"))
            .chain(doors.iter().filter_map(|b| {
                let a = b.listener.local_addr().ok()?;
                Some(format!("{} {a}\n", b.door.as_str()))
            }))
            .collect();
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, addrs)?;
        std::fs::rename(&tmp, &f)?;
    }
    // tokio's own signal streams: they run on the runtime we already have,
    // with no extra thread, and HUP/TERM/INT are all we need.
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let sd = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reloading the config");
                    let _ = holdfast::reload::reload(&shared);
                }
                _ = term.recv() => { info!("SIGTERM"); sd.cancel(); break }
                _ = int.recv() => { info!("SIGINT"); sd.cancel(); break }
            }
        }
    });
    proxy.run_with_doors(listeners, doors).await
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
