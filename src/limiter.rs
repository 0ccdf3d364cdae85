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
    /// The configured rate and burst, while slowed down.
    base: (f64, f64),
    /// Slowed down by [`RateLimiter::slow_down`] until then.
    slowed_until: Option<Instant>,
    /// The last halving (at most one per [`SLOW_STEP`]).
    slowed_at: Option<Instant>,
}

/// How long a slow-down lasts after the last refusal.
pub const SLOW_FOR: Duration = Duration::from_secs(30);
/// Refusals closer together than this halve the rate once.
const SLOW_STEP: Duration = Duration::from_secs(1);
/// The rate never goes below this (per second).
const SLOW_FLOOR: f64 = 0.5;

impl RateLimiter {
    /// `rate` per second (> 0), `burst` at once (>= 1).
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            inner: Mutex::new(Bucket {
                rate: rate.max(0.001),
                burst,
                next_free: Instant::now(),
                base: (rate.max(0.001), burst),
                slowed_until: None,
                slowed_at: None,
            }),
        }
    }

    /// Changes the rate (on reload); reservations already made stand.
    pub fn set_rate(&self, rate: f64, burst: u32) {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        b.rate = rate.max(0.001);
        b.burst = f64::from(burst.max(1));
        b.base = (b.rate, b.burst);
        b.slowed_until = None;
    }

    /// The game refused a connection for holdfast's address (a re-login
    /// storm meets its per-address limits): no more bursts, and the rate
    /// halves (at most once a second, down to one every two seconds). The
    /// configured rate comes back [`SLOW_FOR`] after the last refusal.
    pub fn slow_down(&self) {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        b.slowed_until = Some(now + SLOW_FOR);
        if b.slowed_at.is_some_and(|t| now < t + SLOW_STEP) {
            return;
        }
        b.slowed_at = Some(now);
        b.rate = (b.rate / 2.0).max(SLOW_FLOOR.min(b.base.0));
        b.burst = 1.0;
        tracing::info!(
            rate = b.rate,
            "the game refused holdfast's address; re-logins slowed down"
        );
    }

    /// Reserves one slot and returns when it may be used (now or later).
    ///
    /// This is the "virtual scheduling" form of a token bucket (GCRA): each
    /// reservation pushes `next_free` on by one interval, and a caller may go
    /// `burst` intervals ahead of it.
    pub fn reserve(&self) -> Instant {
        let mut b = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if b.slowed_until.is_some_and(|t| now >= t) {
            b.slowed_until = None;
            (b.rate, b.burst) = b.base;
        }
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
    async fn refusals_slow_it_down_for_a_while() {
        let l = RateLimiter::new(8.0, 4);
        l.slow_down();
        l.slow_down(); // the same second: halved once
        let now = Instant::now();
        let a = l.reserve();
        let b = l.reserve();
        // No burst, 4 per second.
        assert_eq!(b - a, Duration::from_millis(250), "{:?}", b - a);
        assert!(a.saturating_duration_since(now) <= Duration::from_millis(250));
        tokio::time::advance(SLOW_FOR + Duration::from_secs(2)).await;
        let now = Instant::now();
        let times: Vec<Instant> = (0..4).map(|_| l.reserve()).collect();
        assert!(
            times.iter().all(|t| *t <= now),
            "the burst is back: {:?}",
            times.iter().map(|t| *t - now).collect::<Vec<_>>()
        );
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
