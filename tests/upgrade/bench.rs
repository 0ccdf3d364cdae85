//! What the upgrade benches share: players pinging through a handover to
//! measure the longest relay stall, and the handover's own log lines.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::common::{Client, Expect};

/// Logged-in players each typing `think ping-…` in a loop, every round
/// trip within `within`; the longest one counts once [`Pingers::measure`]
/// is called.
pub struct Pingers {
    within: Duration,
    stop: Arc<AtomicBool>,
    measure: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<(Duration, u64)>>,
}

impl Pingers {
    pub fn new(within: Duration) -> Pingers {
        Pingers {
            within,
            stop: Arc::new(AtomicBool::new(false)),
            measure: Arc::new(AtomicBool::new(false)),
            tasks: Vec::new(),
        }
    }

    /// Starts pinging with `c` (logged in).
    pub fn add(&mut self, mut c: Client) {
        let i = self.tasks.len();
        let (stop, measure, within) = (self.stop.clone(), self.measure.clone(), self.within);
        self.tasks.push(tokio::spawn(async move {
            let (mut worst, mut k) = (Duration::ZERO, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let counts = measure.load(Ordering::Relaxed);
                c.send(&format!("think ping-{i}-{k}")).await;
                c.expect_within(&format!("ping-{i}-{k}\r\n"), within).await;
                if counts {
                    worst = worst.max(t.elapsed());
                    k += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (worst, k)
        }));
    }

    /// From now on the round trips count.
    pub fn measure(&self) {
        self.measure.store(true, Ordering::Relaxed);
    }

    /// Stops them; the longest round trip counted and how many counted.
    pub async fn stop(self) -> (Duration, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut worst, mut pings) = (Duration::ZERO, 0);
        for p in self.tasks {
            let (w, k) = p.await.unwrap();
            worst = worst.max(w);
            pings += k;
        }
        (worst, pings)
    }
}

/// Prints the proxy's log lines about the handover's steps and times.
pub fn print_handover_lines(logs: &str) {
    for l in logs.lines().filter(|l| {
        l.contains("handover timings")
            || l.contains("handed over; stopping")
            || l.contains("upgrade: took everything over")
    }) {
        println!("{l}");
    }
}
