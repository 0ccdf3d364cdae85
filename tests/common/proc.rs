//! One way to run a child process in a test (the test game, nats-server,
//! ngircd, the holdfast binary): start it, wait until it is ready without a
//! blind sleep, and kill it on drop.
//!
//! Readiness is a condition, never a fixed delay:
//! - [`Proc::spawn_piped`] + [`Proc::wait_line`]: the child's stdout and
//!   stderr come through pipes; one thread per pipe copies every line into
//!   the child's log file and hands it over a channel. The wait blocks on
//!   that channel (it wakes on the line, not on a timer) and fails at once,
//!   with the child's output, when the child exits first (both pipes close).
//! - [`Proc::spawn`] + [`Proc::wait_until`]: for a ready file the child
//!   writes (the holdfast binary), checked with a short backoff, failing at
//!   once when the child exits first.
//!
//! Ports: every child that can binds port 0 itself and reports the port it
//! got (a ready file, a log line), so there is no window in which another
//! process can take a port picked here. Only ngircd cannot; see
//! [`super::ngircd`] for its retry.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for a child to become ready (generous: the machine is shared).
pub const READY: Duration = Duration::from_secs(20);

/// A running child process, killed (and reaped) on drop.
pub struct Proc {
    child: Option<Child>,
    name: String,
    log: PathBuf,
    lines: Option<mpsc::Receiver<String>>,
}

/// Why a child did not become ready.
#[derive(Debug)]
pub struct NotReady {
    /// Its exit status, if it exited.
    pub status: Option<ExitStatus>,
    /// Everything it printed.
    pub output: String,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let f = File::create(log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        Proc {
            child: Some(child),
            name: name.to_string(),
            log: log.to_owned(),
            lines: None,
        }
    }

    /// Starts `cmd` with stdout and stderr through pipes: every line goes
    /// to `log` and to [`Proc::wait_line`].
    pub fn spawn_piped(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let file = Arc::new(Mutex::new(File::create(log).unwrap()));
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        let (tx, rx) = mpsc::channel();
        let out: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let err: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for pipe in [out, err] {
            let (tx, file) = (tx.clone(), file.clone());
            std::thread::spawn(move || tee(pipe, &file, &tx));
        }
        Proc {
            child: Some(child),
            name: name.to_string(),
            log: log.to_owned(),
            lines: Some(rx),
        }
    }

    /// Everything the child printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits until a line of the child's output (since it started, in
    /// order) gives `Some`; `Err` if the child exits first. Only for
    /// [`Proc::spawn_piped`]; each start can be waited on once.
    pub fn try_wait_line<T>(
        &mut self,
        within: Duration,
        mut f: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, NotReady> {
        let rx = self.lines.take().expect("wait_line needs spawn_piped");
        let until = Instant::now() + within;
        loop {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(v) = f(&line) {
                        return Ok(v);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(NotReady {
                        status: None,
                        output: self.output(),
                    })
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Both pipes closed: it exited. Reap it.
                    let status = self.child.take().and_then(|mut c| c.wait().ok());
                    return Err(NotReady {
                        status,
                        output: self.output(),
                    });
                }
            }
        }
    }

    /// [`Proc::try_wait_line`], panicking with the child's output.
    pub fn wait_line<T>(&mut self, what: &str, f: impl FnMut(&str) -> Option<T>) -> T {
        self.try_wait_line(READY, f)
            .unwrap_or_else(|e| self.not_ready(what, e))
    }

    /// Waits until `f` gives `Some` (e.g. the child wrote its ready file),
    /// checking with a short backoff; panics with the child's output if it
    /// exits first or after [`READY`].
    pub fn wait_until<T>(&mut self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let t0 = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(v) = f() {
                return v;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited || t0.elapsed() > READY {
                let status = self
                    .child
                    .take()
                    .and_then(|mut c| c.try_wait().ok().flatten());
                self.not_ready(
                    what,
                    NotReady {
                        status,
                        output: self.output(),
                    },
                );
            }
            // Not a test's async body: a child starting needs nothing from
            // the test's runtime, so blocking this thread briefly is fine.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    fn not_ready(&self, what: &str, e: NotReady) -> ! {
        match e.status {
            Some(st) => panic!(
                "{} exited ({st}) before {what}; its output:\n{}",
                self.name, e.output
            ),
            None => panic!(
                "{} did not report {what} within {READY:?}; its output:\n{}",
                self.name, e.output
            ),
        }
    }

    /// Sends `sig` (e.g. `"STOP"`, `"HUP"`).
    pub fn signal(&self, sig: &str) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        assert!(send_signal(pid, sig), "kill -{sig} {} failed", self.name);
    }

    /// Sends `sig` and waits up to `within` for the child to exit (on the
    /// exit itself, not by polling); returns its status, `None` if it was
    /// not running. Panics (after SIGKILL) if it does not exit in time.
    pub fn stop(&mut self, sig: &str, within: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let pid = c.id();
        send_signal(pid, sig);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(c.wait());
        });
        match rx.recv_timeout(within) {
            Ok(st) => Some(st.expect("wait for child")),
            Err(_) => {
                send_signal(pid, "CONT");
                send_signal(pid, "KILL");
                let _ = rx.recv();
                panic!("{} did not stop on SIG{sig} within {within:?}", self.name);
            }
        }
    }

    /// SIGKILL (after SIGCONT, so a frozen child dies promptly) and reap.
    /// Does nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            send_signal(c.id(), "CONT");
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Proc {
    /// Waits up to `within` for the child to exit by itself (e.g. the old
    /// process of an upgrade); `None` if it was not running or did not.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let t0 = Instant::now();
        let c = self.child.as_mut()?;
        loop {
            if let Some(st) = c.try_wait().ok().flatten() {
                self.child = None;
                return Some(st);
            }
            if t0.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether `pid` runs (a zombie does not count).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn send_signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Copies `pipe` line by line into `file` and `tx` until it closes.
fn tee(pipe: Box<dyn Read + Send>, file: &Mutex<File>, tx: &mpsc::Sender<String>) {
    let mut r = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if let Ok(mut f) = file.lock() {
                    let _ = f.write_all(&buf);
                    let _ = f.flush();
                }
                let line = String::from_utf8_lossy(&buf);
                // Nobody listens once the child is ready: keep copying.
                let _ = tx.send(line.trim_end().to_string());
            }
        }
    }
}

/// Waits (async, on a tokio timer between checks) until `f` gives `Some`;
/// panics with `what` and `ctx()` after `within`. For conditions in a
/// test's async body (a log line, a game event).
pub async fn until<T>(
    what: &str,
    within: Duration,
    mut f: impl FnMut() -> Option<T>,
    ctx: impl Fn() -> String,
) -> T {
    let t0 = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < within, "{what}; {}", ctx());
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
