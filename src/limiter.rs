//! A token-bucket rate limiter that hands out start times instead of
//! sleeping, so a waiting session stays responsive (it sleeps in its own
//! `select!` and can still see `QUIT`).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Spreads events to at most `rate` per second with bursts of `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    inner: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    /// When the bucket is next empty-and-refilling: reservations move it on.
    next_free: Instant,
}

impl RateLimiter {
    /// `rate` per second (> 0), `burst` at once (>= 1).
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            inner: Mutex::new(Bucket {
                rate: rate.max(0.001),
                burst,
                next_free: Instant::now(),
            }),
        }
    }

    /// Changes the rate (on reload); reservations already made stand.
    pub fn set_rate(&self, rate: f64, burst: u32) {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        b.rate = rate.max(0.001);
        b.burst = f64::from(burst.max(1));
    }

    /// Reserves one slot and returns when it may be used (now or later).
    ///
    /// This is the "virtual scheduling" form of a token bucket (GCRA): each
    /// reservation pushes `next_free` on by one interval, and a caller may go
    /// `burst` intervals ahead of it.
    pub fn reserve(&self) -> Instant {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / b.rate);
        let slack = interval.mul_f64(b.burst - 1.0);
        let tat = b.next_free.max(now);
        let at = tat.checked_sub(slack).unwrap_or(now).max(now);
        b.next_free = tat + interval;
        at
    }
}

/// A small token bucket for one caller (a session's input, an IP's new
/// connections): `take` says whether one more is allowed now.
#[derive(Debug, Clone, Copy)]
pub struct Bucket1 {
    tokens: f64,
    last: Instant,
}

impl Bucket1 {
    /// A full bucket.
    pub fn new(burst: u32) -> Self {
        Bucket1 {
            tokens: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one, refilling at `rate` per second up to
    /// `burst`. A rate of 0 means no limit.
    pub fn take(&mut self, rate: f64, burst: u32) -> bool {
        if rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * rate).min(f64::from(burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the bucket was last used.
    pub fn last_used(&self) -> Instant {
        self.last
    }

    /// The tokens it holds now (refilled at `rate` up to `burst`), to carry
    /// it over to a new process in an upgrade.
    pub fn tokens_now(&self, rate: f64, burst: u32) -> f64 {
        let dt = self.last.elapsed().as_secs_f64();
        (self.tokens + dt * rate).min(f64::from(burst))
    }

    /// A bucket holding `tokens` now (carried over from an old process).
    pub fn with_tokens(tokens: f64) -> Self {
        Bucket1 {
            tokens: tokens.max(0.0),
            last: Instant::now(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket1_refills() {
        let mut b = Bucket1::new(3);
        assert!((0..3).all(|_| b.take(2.0, 3)));
        assert!(!b.take(2.0, 3));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(b.take(2.0, 3));
        assert!(!b.take(2.0, 3));
        assert!(b.take(0.0, 3), "rate 0 is no limit");
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_carried_over_keeps_its_tokens() {
        let mut b = Bucket1::new(3);
        assert!((0..3).all(|_| b.take(2.0, 3)));
        tokio::time::advance(Duration::from_millis(250)).await;
        let t = b.tokens_now(2.0, 3);
        assert!((t - 0.5).abs() < 1e-9, "{t}");
        let mut c = Bucket1::with_tokens(t);
        assert!(!c.take(2.0, 3), "half a token is none");
        tokio::time::advance(Duration::from_millis(250)).await;
        assert!(c.take(2.0, 3));
    }

    #[test]
    fn burst_then_spaced() {
        let l = RateLimiter::new(10.0, 3);
        let now = Instant::now();
        let times: Vec<Duration> = (0..6)
            .map(|_| l.reserve().saturating_duration_since(now))
            .collect();
        // The first three go at once, the rest 100 ms apart.
        assert!(
            times[..3].iter().all(|t| *t < Duration::from_millis(5)),
            "{times:?}"
        );
        assert!(times[3] >= Duration::from_millis(95), "{times:?}");
        assert!(times[5] >= Duration::from_millis(295), "{times:?}");
        assert!(times[5] < Duration::from_millis(320), "{times:?}");
    }
}
