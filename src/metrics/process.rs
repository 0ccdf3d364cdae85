//! The process's own figures, read from /proc/self at scrape time under
//! the names Prometheus's client libraries use (`process_*`, no
//! `holdfast_` prefix, so stock dashboards and alerts work).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// Linux reports CPU time in clock ticks; every Linux platform Rust
/// targets uses 100 per second (`getconf CLK_TCK`).
const TICKS_PER_SEC: f64 = 100.0;

pub(super) struct ProcessMetrics {
    rss: Gauge,
    fds: Gauge,
    threads: Gauge,
    cpu: Counter<f64, AtomicU64>,
    /// CPU seconds already counted.
    cpu_seen: Mutex<f64>,
}

impl ProcessMetrics {
    pub(super) fn register(r: &mut Registry) -> ProcessMetrics {
        let r = r.sub_registry_with_prefix("process");
        let m = ProcessMetrics {
            rss: Gauge::default(),
            fds: Gauge::default(),
            threads: Gauge::default(),
            cpu: Counter::default(),
            cpu_seen: Mutex::new(0.0),
        };
        r.register_with_unit(
            "resident_memory",
            "Resident set size",
            Unit::Bytes,
            m.rss.clone(),
        );
        r.register("open_fds", "Open file descriptors", m.fds.clone());
        r.register("threads", "OS threads", m.threads.clone());
        r.register_with_unit(
            "cpu",
            "User and system CPU time",
            Unit::Seconds,
            m.cpu.clone(),
        );
        m
    }

    pub(super) fn refresh(&self) {
        if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
            for l in s.lines() {
                let num = |l: &str| -> i64 {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                if l.starts_with("VmRSS:") {
                    self.rss.set(num(l) * 1024);
                } else if l.starts_with("Threads:") {
                    self.threads.set(num(l));
                }
            }
        }
        if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
            self.fds.set(d.count() as i64);
        }
        if let Some(cpu) = cpu_seconds() {
            let mut seen = self.cpu_seen.lock().unwrap_or_else(|e| e.into_inner());
            if cpu > *seen {
                self.cpu.inc_by(cpu - *seen);
                *seen = cpu;
            }
        }
    }
}

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; fields resume after its ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}
