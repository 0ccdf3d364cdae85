//! The outbox: the bounded FIFO that holds events from the moment they are
//! stamped until NATS confirmed them, through any outage. Full, it drops the
//! oldest and counts them.

use std::collections::VecDeque;

use async_nats::Subject;
use bytes::Bytes;

/// An outbox this small keeps its capacity.
const SHRINK_FLOOR: usize = 64;

/// One message ready to go.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Where it goes.
    pub subject: Subject,
    /// The JSON body.
    pub payload: Bytes,
    /// The event id (`Nats-Msg-Id` through JetStream); `None` for presence.
    pub id: Option<String>,
}

/// The bounded FIFO that holds events until the server confirmed them. Its
/// front `inflight` entries have been sent and await confirmation.
#[derive(Debug)]
pub struct Outbox {
    items: VecDeque<Outgoing>,
    pub(super) cap: usize,
    inflight: usize,
    dropped: u64,
}

impl Outbox {
    /// An empty outbox holding at most `cap` messages.
    pub fn new(cap: usize) -> Self {
        Outbox {
            items: VecDeque::new(),
            cap: cap.max(1),
            inflight: 0,
            dropped: 0,
        }
    }

    /// Appends `m`; when full, drops the oldest first. Returns true if one
    /// was dropped.
    pub fn push(&mut self, m: Outgoing) -> bool {
        let mut dropped = false;
        if self.items.len() >= self.cap {
            self.items.pop_front();
            // If the dropped one was in flight, its confirmation now covers
            // one entry fewer.
            self.inflight = self.inflight.saturating_sub(1);
            self.dropped += 1;
            dropped = true;
        }
        self.items.push_back(m);
        dropped
    }

    /// Marks the first `n` entries as sent.
    pub(super) fn send(&mut self, n: usize) -> impl Iterator<Item = &Outgoing> {
        self.inflight = n.min(self.items.len());
        self.items.iter().take(self.inflight)
    }

    /// The server confirmed what is in flight: remove it. Returns how many.
    pub fn confirm(&mut self) -> usize {
        let n = self.inflight;
        self.items.drain(..n);
        self.inflight = 0;
        // What an outage piled up goes back once it has drained.
        if self.items.capacity() > SHRINK_FLOOR && self.items.len() * 4 < self.items.capacity() {
            self.items
                .shrink_to((self.items.len() * 2).max(SHRINK_FLOOR));
        }
        n
    }

    /// What was in flight will be sent again.
    pub fn unsend(&mut self) {
        self.inflight = 0;
    }

    /// Drops entry `i` (one the server will never accept). Only while
    /// nothing is in flight.
    pub(super) fn remove(&mut self, i: usize) {
        debug_assert_eq!(self.inflight, 0);
        self.items.remove(i);
    }

    /// Messages waiting (in flight included).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Messages dropped by overflow so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::Subject;
    use bytes::Bytes;

    fn msg(n: u32) -> Outgoing {
        Outgoing {
            subject: Subject::from("s"),
            payload: Bytes::from(n.to_string()),
            id: None,
        }
    }

    fn contents(o: &Outbox) -> Vec<String> {
        o.items
            .iter()
            .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn overflow_drops_the_oldest_and_counts() {
        let mut o = Outbox::new(3);
        for i in 1..=5 {
            o.push(msg(i));
        }
        assert_eq!(contents(&o), ["3", "4", "5"]);
        assert_eq!(o.dropped(), 2);
    }

    #[test]
    fn confirm_removes_only_what_was_in_flight() {
        let mut o = Outbox::new(10);
        for i in 1..=4 {
            o.push(msg(i));
        }
        assert_eq!(o.send(2).count(), 2);
        o.push(msg(5));
        assert_eq!(o.confirm(), 2);
        assert_eq!(contents(&o), ["3", "4", "5"]);
        // Unsent means sent again from the front, in order.
        o.send(10).count();
        o.unsend();
        assert_eq!(o.send(1).next().unwrap().payload, "3");
    }

    #[test]
    fn an_outage_s_pile_goes_back_once_confirmed() {
        let mut o = Outbox::new(10_000);
        for i in 1..=5_000 {
            o.push(msg(i));
        }
        assert!(o.items.capacity() >= 5_000);
        o.send(4_990).count();
        assert_eq!(o.confirm(), 4_990);
        assert_eq!(o.len(), 10);
        assert!(o.items.capacity() <= 2 * SHRINK_FLOOR);
        // Still in order.
        assert_eq!(contents(&o)[0], "4991");
    }

    #[test]
    fn overflow_while_in_flight_shrinks_the_confirmation() {
        let mut o = Outbox::new(3);
        for i in 1..=3 {
            o.push(msg(i));
        }
        o.send(2).count();
        o.push(msg(4)); // drops "1", which was in flight
        assert_eq!(o.confirm(), 1); // only "2" is confirmed
        assert_eq!(contents(&o), ["3", "4"]);
    }
}
