//! What waits to be posted, and how fast it may go.
//!
//! The [`Outbox`] outlives IRC connections: notices produced while IRC is
//! unreachable wait in it (bounded) and go out, marked late with their
//! time, once the relay is back in its channels. Replies to commands go in
//! a separate, small lane that is served first and emptied when the
//! connection drops (a reply to a question nobody can see any more is
//! noise). The [`RateLimit`] token bucket paces every line the relay sends,
//! so a backlog never trips the server's flood protection.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How important a notice is when the outbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Prio {
    /// Logins, logouts and their summaries: dropped first.
    Low,
    /// DOWN, UP, failover, reload failures, vanished/back.
    High,
}

/// A line for the channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The text, already formatted (no time suffix yet).
    pub text: String,
    /// Drop order when full.
    pub prio: Prio,
    /// When it happened (the event's own time), shown if posted late.
    pub time: time::OffsetDateTime,
}

/// A notice waiting, with when it entered the outbox.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The notice.
    pub notice: Notice,
    /// When it was queued.
    pub since: Instant,
    /// Queued while the relay was not in its channels.
    pub offline: bool,
}

/// A reply to a command, for one target (channel or nick).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Channel or nick.
    pub target: String,
    /// The text.
    pub text: String,
}

/// The queue of notices and replies.
#[derive(Debug)]
pub struct Outbox {
    notices: VecDeque<Queued>,
    replies: VecDeque<Reply>,
    cap: usize,
    /// Notices dropped because the outbox was full, not yet reported.
    pub dropped: u64,
}

/// Replies kept at most; a command's answer beyond this is cut.
pub const MAX_REPLIES: usize = 20;

/// A notice that waited longer than this is posted with its time.
pub const LATE_AFTER: Duration = Duration::from_secs(30);

impl Outbox {
    /// An outbox holding at most `cap` notices.
    pub fn new(cap: usize) -> Outbox {
        Outbox {
            notices: VecDeque::new(),
            replies: VecDeque::new(),
            cap: cap.max(1),
            dropped: 0,
        }
    }

    /// Queues a notice. When full, the oldest low-priority notice makes
    /// room; if there is none, the oldest notice of all, unless the new one
    /// is itself low-priority, which is then dropped. Drops are counted.
    pub fn push(&mut self, notice: Notice, now: Instant, offline: bool) {
        if self.notices.len() >= self.cap {
            if let Some(i) = self.notices.iter().position(|q| q.notice.prio == Prio::Low) {
                self.notices.remove(i);
            } else if notice.prio == Prio::Low {
                self.dropped += 1;
                return;
            } else {
                self.notices.pop_front();
            }
            self.dropped += 1;
        }
        self.notices.push_back(Queued {
            notice,
            since: now,
            offline,
        });
    }

    /// Queues a reply (dropped beyond [`MAX_REPLIES`]).
    pub fn reply(&mut self, r: Reply) {
        if self.replies.len() < MAX_REPLIES {
            self.replies.push_back(r);
        }
    }

    /// The next thing to send: replies first.
    pub fn pop(&mut self) -> Option<Next> {
        if let Some(r) = self.replies.pop_front() {
            return Some(Next::Reply(r));
        }
        self.notices.pop_front().map(Next::Notice)
    }

    /// Puts a notice back at the front (it could not be sent after all).
    pub fn unpop(&mut self, q: Queued) {
        self.notices.push_front(q);
    }

    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.notices.is_empty() && self.replies.is_empty()
    }

    /// Notices waiting.
    pub fn len(&self) -> usize {
        self.notices.len()
    }

    /// Forgets the replies (the connection they answered is gone).
    pub fn clear_replies(&mut self) {
        self.replies.clear();
    }
}

/// What [`Outbox::pop`] returns.
#[derive(Debug)]
pub enum Next {
    /// A notice for every channel.
    Notice(Queued),
    /// A reply for one target.
    Reply(Reply),
}

impl Queued {
    /// True if it should carry its time: it waited for a connection,
    /// waited long here, or the event itself is old (the proxy's own bus
    /// queue held it through a NATS outage).
    pub fn is_late(&self, now: Instant, wall: time::OffsetDateTime) -> bool {
        self.offline
            || now.saturating_duration_since(self.since) >= LATE_AFTER
            || wall - self.notice.time >= LATE_AFTER
    }
}

/// A token bucket: `rate` lines a second, `burst` at once.
#[derive(Debug, Clone)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket.
    pub fn new(rate: f64, burst: u32, now: Instant) -> RateLimit {
        RateLimit {
            rate: rate.max(0.01),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.last = now;
    }

    /// When the next line may go (now or later).
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(text: &str, prio: Prio) -> Notice {
        Notice {
            text: text.into(),
            prio,
            time: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn texts(o: &mut Outbox) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(x) = o.pop() {
            match x {
                Next::Notice(q) => v.push(q.notice.text),
                Next::Reply(r) => v.push(format!("reply:{}", r.text)),
            }
        }
        v
    }

    #[test]
    fn full_outbox_drops_low_first() {
        let t = Instant::now();
        let mut o = Outbox::new(3);
        o.push(n("down1", Prio::High), t, true);
        o.push(n("login", Prio::Low), t, true);
        o.push(n("up1", Prio::High), t, true);
        o.push(n("down2", Prio::High), t, true);
        assert_eq!(o.dropped, 1);
        o.push(n("login2", Prio::Low), t, true);
        assert_eq!(o.dropped, 2);
        o.push(n("up2", Prio::High), t, true);
        assert_eq!(o.dropped, 3);
        assert_eq!(texts(&mut o), vec!["up1", "down2", "up2"]);
    }

    #[test]
    fn replies_first_and_cleared() {
        let t = Instant::now();
        let mut o = Outbox::new(10);
        o.push(n("down", Prio::High), t, false);
        o.reply(Reply {
            target: "#c".into(),
            text: "status".into(),
        });
        assert_eq!(texts(&mut o), vec!["reply:status", "down"]);
        for i in 0..MAX_REPLIES + 5 {
            o.reply(Reply {
                target: "#c".into(),
                text: i.to_string(),
            });
        }
        o.clear_replies();
        assert!(o.is_empty());
    }

    #[test]
    fn late_marking() {
        let t = Instant::now();
        let wall = time::OffsetDateTime::now_utc();
        let mut q = Queued {
            notice: n("x", Prio::High),
            since: t,
            offline: false,
        };
        q.notice.time = wall;
        assert!(!q.is_late(t + Duration::from_secs(1), wall));
        assert!(q.is_late(t + LATE_AFTER, wall));
        assert!(q.is_late(t, wall + LATE_AFTER), "an old event is late");
        let q = Queued { offline: true, ..q };
        assert!(q.is_late(t, wall));
    }

    #[test]
    fn rate_limit_paces() {
        let t = Instant::now();
        let mut r = RateLimit::new(2.0, 3, t);
        assert!(r.try_take(t) && r.try_take(t) && r.try_take(t));
        assert!(!r.try_take(t));
        assert_eq!(r.ready_at(t), t + Duration::from_millis(500));
        assert!(r.try_take(t + Duration::from_millis(500)));
        // Refill is capped at the burst.
        let later = t + Duration::from_secs(100);
        assert!((0..3).all(|_| r.try_take(later)));
        assert!(!r.try_take(later));
    }
}
