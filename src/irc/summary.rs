//! Burst summaries: the first few events of a kind go out as they come,
//! the rest of a burst is counted and posted as one line when its window
//! closes.
//!
//! Each key (an instance's logins, its logouts, one backend's up/down) has
//! a window that opens with its first event and lasts `window`. Inside it,
//! `allowance` events are posted directly; later ones are held in the
//! window's [`Bucket`]. When the window closes with something held, the
//! bucket becomes one summary line and a new window opens at once with no
//! allowance, so a flood that goes on is one line per window. A window
//! that closes empty is forgotten.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Names kept per bucket (the line shows fewer; the count is exact).
const MAX_NAMES: usize = 64;

/// What a window has held back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bucket {
    /// Events held.
    pub count: usize,
    /// Their user names, if any (the first 64).
    pub names: Vec<String>,
    /// Backend DOWN events held.
    pub downs: u32,
    /// Backend UP events held.
    pub ups: u32,
    /// The last state a held backend event reported (`UP`/`DOWN`).
    pub state: String,
    /// Time of the first held event.
    pub first: Option<time::OffsetDateTime>,
}

impl Bucket {
    /// Records a held event with an optional user name.
    pub fn add(&mut self, name: Option<&str>, at: time::OffsetDateTime) {
        self.count += 1;
        self.first.get_or_insert(at);
        if let Some(n) = name {
            if self.names.len() < MAX_NAMES {
                self.names.push(n.to_string());
            }
        }
    }
}

#[derive(Debug)]
struct Window {
    start: Instant,
    direct: u32,
    allowance: u32,
    bucket: Bucket,
}

/// The summariser, over keys of type `K`.
#[derive(Debug)]
pub struct Summariser<K> {
    window: Duration,
    open: HashMap<K, Window>,
}

impl<K: std::hash::Hash + Eq + Clone> Summariser<K> {
    /// Windows of `window`.
    pub fn new(window: Duration) -> Self {
        Summariser {
            window,
            open: HashMap::new(),
        }
    }

    /// An event for `key`: `None` means post it now; `Some(bucket)` means
    /// it is held and the caller records it in the bucket.
    pub fn offer(&mut self, key: &K, allowance: u32, now: Instant) -> Option<&mut Bucket> {
        let w = self.open.entry(key.clone()).or_insert_with(|| Window {
            start: now,
            direct: 0,
            allowance,
            bucket: Bucket::default(),
        });
        if w.direct < w.allowance {
            w.direct += 1;
            None
        } else {
            Some(&mut w.bucket)
        }
    }

    /// Closes the windows that are over; returns the non-empty buckets
    /// with the length of the window they cover.
    pub fn due(&mut self, now: Instant) -> Vec<(K, Bucket, Duration)> {
        let mut out = Vec::new();
        let window = self.window;
        self.open.retain(|k, w| {
            if now.saturating_duration_since(w.start) < window {
                return true;
            }
            if w.bucket.count == 0 {
                return false;
            }
            out.push((k.clone(), std::mem::take(&mut w.bucket), window));
            // Still busy: the next window starts with no allowance.
            w.start = now;
            w.direct = 0;
            w.allowance = 0;
            true
        });
        out
    }

    /// The time of the next window end, if any window is open.
    pub fn next_due(&self) -> Option<Instant> {
        self.open.values().map(|w| w.start + self.window).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: time::OffsetDateTime = time::OffsetDateTime::UNIX_EPOCH;

    #[test]
    fn burst_of_fifty_is_two_lines() {
        let t = Instant::now();
        let mut s = Summariser::new(Duration::from_secs(10));
        let mut direct = 0;
        for i in 0..50 {
            let at = t + Duration::from_millis(i * 20);
            match s.offer(&"logins", 1, at) {
                None => direct += 1,
                Some(b) => b.add(Some(&format!("p{i}")), T0),
            }
        }
        assert_eq!(direct, 1);
        assert!(s.due(t + Duration::from_secs(9)).is_empty());
        let d = s.due(t + Duration::from_secs(10));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1.count, 49);
        assert_eq!(d[0].1.names[0], "p1");
        // The quiet window after it closes silently, then allowance is back.
        assert!(s.due(t + Duration::from_secs(20)).is_empty());
        assert!(s.next_due().is_none());
        assert!(s.offer(&"logins", 1, t + Duration::from_secs(21)).is_none());
    }

    #[test]
    fn continuing_flood_is_one_line_per_window() {
        let t = Instant::now();
        let mut s = Summariser::new(Duration::from_secs(10));
        let mut lines = 0;
        for sec in 0..60u64 {
            let now = t + Duration::from_secs(sec);
            lines += s.due(now).len();
            for _ in 0..5 {
                match s.offer(&1u8, 1, now) {
                    None => lines += 1,
                    Some(b) => b.add(None, T0),
                }
            }
        }
        // 1 direct + one summary per 10 s window.
        assert!((6..=7).contains(&lines), "{lines}");
    }

    #[test]
    fn keys_are_independent() {
        let t = Instant::now();
        let mut s = Summariser::new(Duration::from_secs(10));
        assert!(s.offer(&"a", 1, t).is_none());
        assert!(s.offer(&"b", 1, t).is_none());
        assert!(s.offer(&"a", 1, t).is_some());
        assert!(s.offer(&"c", 4, t).is_none());
        assert_eq!(s.next_due(), Some(t + Duration::from_secs(10)));
    }
}
