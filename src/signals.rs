//! The signals holdfast handles: SIGHUP reloads, SIGUSR2 upgrades,
//! SIGTERM and SIGINT stop. The new process of an upgrade installs them
//! first and holds them until the handover's commit ([`hold_signals`]).

use tokio_util::sync::CancellationToken;
use tracing::info;

/// The signals holdfast handles. Made at the process's start: from then
/// on tokio's handlers are installed and a signal is kept until read, so
/// none of them can end the process by its default action.
pub struct Signals {
    hup: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (at the process's start).
    pub fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }
}

/// Signals held back during a handover, carried out after its commit.
#[derive(Default)]
pub struct Held {
    /// A SIGHUP came: reload once.
    pub reload: bool,
    /// A SIGTERM or SIGINT came: stop.
    pub stop: bool,
}

/// How the new process of an upgrade tells `hold_signals` that the
/// handover is over.
#[derive(Default, Clone)]
pub struct HoldUntil(std::sync::Arc<tokio::sync::Notify>);

impl HoldUntil {
    /// The handover is over (committed): the held signals are carried out.
    pub fn done(&self) {
        self.0.notify_one();
    }
}

/// The new process of an upgrade, until the commit: nothing it owns can
/// reload, upgrade or stop yet, and the old process still serves. A
/// SIGHUP or SIGTERM/SIGINT is kept for after the commit; a SIGUSR2 is
/// refused (an upgrade is under way). Each says so in the log. Returns
/// the signals and what was kept once `until` is done.
pub async fn hold_signals(mut s: Signals, until: HoldUntil) -> (Signals, Held) {
    let mut held = Held::default();
    loop {
        tokio::select! {
            // A signal that is already there is taken before the end of
            // the handover is. (One the runtime has not read yet when the
            // commit comes, on a starved machine, is carried out after it
            // as any other: a reload, a stop, or an upgrade.)
            biased;
            _ = s.hup.recv() => {
                info!("SIGHUP during a handover: the reload waits for its commit");
                held.reload = true;
            }
            _ = s.usr2.recv() => info!("SIGUSR2 ignored: an upgrade is already under way"),
            _ = s.term.recv() => {
                info!("SIGTERM during a handover: stopping after its commit");
                held.stop = true;
            }
            _ = s.int.recv() => {
                info!("SIGINT during a handover: stopping after its commit");
                held.stop = true;
            }
            _ = until.0.notified() => break,
        }
    }
    (s, held)
}

/// HUP reloads, USR2 upgrades, TERM and INT stop. tokio's own signal
/// streams run on the runtime we already have, with no extra thread.
/// What a handover held back is carried out first.
pub fn spawn_signals(
    shared: std::sync::Arc<crate::state::Shared>,
    sd: CancellationToken,
    mut s: Signals,
    held: Held,
) {
    if held.reload {
        info!("reloading the config (SIGHUP held during the handover)");
        let _ = crate::reload::reload(&shared);
    }
    if held.stop {
        info!("stopping (signal held during the handover)");
        sd.cancel();
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = s.hup.recv() => {
                    info!("SIGHUP: reloading the config");
                    let _ = crate::reload::reload(&shared);
                }
                _ = s.usr2.recv() => {
                    let req = crate::upgrade::Request { reason: "sigusr2", reply: None };
                    if shared.handover.request(req) {
                        info!("SIGUSR2: upgrading");
                    } else {
                        info!("SIGUSR2 ignored: an upgrade is already under way");
                    }
                }
                _ = s.term.recv() => { info!("SIGTERM"); sd.cancel(); break }
                _ = s.int.recv() => { info!("SIGINT"); sd.cancel(); break }
            }
        }
    });
}
