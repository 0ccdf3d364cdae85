//! The accept loops an upgrade stops and hands over: telnet and the front
//! doors, with duplicates of their listening sockets so that they can be
//! stopped, sent to the new process, or started again when it fails.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::front::{Bound, Door};
use crate::state::Shared;

/// The accept loops (telnet and the front doors), and duplicates of their
/// listening sockets so they can be stopped, handed over, or started
/// again.
pub struct Acceptors {
    pub(super) fds: Vec<(Option<Door>, OwnedFd)>,
    tasks: Vec<JoinHandle<()>>,
}

fn serve(shared: &Arc<Shared>, door: Option<Door>, l: TcpListener) -> JoinHandle<()> {
    match door {
        None => tokio::spawn(crate::listener::serve(shared.clone(), l)),
        Some(door) => tokio::spawn(crate::front::serve(
            shared.clone(),
            Bound { door, listener: l },
        )),
    }
}

impl Acceptors {
    /// Starts an accept loop on each listener and front door.
    pub fn start(
        shared: &Arc<Shared>,
        listeners: Vec<TcpListener>,
        doors: Vec<Bound>,
    ) -> std::io::Result<Acceptors> {
        let all: Vec<(Option<Door>, TcpListener)> = listeners
            .into_iter()
            .map(|l| (None, l))
            .chain(doors.into_iter().map(|b| (Some(b.door), b.listener)))
            .collect();
        let mut fds = Vec::with_capacity(all.len());
        for (d, l) in &all {
            fds.push((*d, l.as_fd().try_clone_to_owned()?));
        }
        let tasks = all.into_iter().map(|(d, l)| serve(shared, d, l)).collect();
        Ok(Acceptors { fds, tasks })
    }

    /// Stops accepting (new connections wait in the kernel's queue).
    pub async fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }

    /// Accepts again, after a failed upgrade.
    pub(super) fn restart(&mut self, shared: &Arc<Shared>) {
        if !self.tasks.is_empty() {
            return;
        }
        for (door, fd) in &self.fds {
            let l = fd
                .try_clone()
                .map(std::net::TcpListener::from)
                .and_then(TcpListener::from_std);
            match l {
                Ok(l) => self.tasks.push(serve(shared, *door, l)),
                Err(e) => warn!(error = %e, "cannot accept again on a listener"),
            }
        }
    }

    /// Waits for every accept loop to end (at shutdown).
    pub async fn join(&mut self) {
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}
