//! The publisher's last act: after `stop`, deliver what is queued (and the
//! presence goodbye) for at most [`STOP_DEADLINE`].

use std::time::Duration;

use async_nats::{Event as NatsEvent, Subject};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{next_ack, Publisher, UNCONNECTED_GRACE};
use crate::bus::outbox::Outgoing;
use crate::bus::presence::{self, Kind};
use crate::bus::STOP_DEADLINE;
use crate::events::Event;

impl Publisher {
    /// After `stop`: take the last events (`proxy.stop` among them), add
    /// the presence goodbye and deliver what we can before the deadline.
    pub(super) async fn finish(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        mut conn_rx: mpsc::Receiver<NatsEvent>,
    ) {
        while let Ok(ev) = rx.try_recv() {
            self.enqueue(&ev);
        }
        let bye = presence::message(
            Kind::Goodbye,
            &self.shared,
            &self.subjects,
            &self.stats,
            &mut self.presence_ids,
        );
        self.push(Outgoing {
            subject: Subject::from(self.subjects.presence()),
            payload: bye,
            id: None,
        });
        // Hello and heartbeats are pointless now; the goodbye is queued.
        self.hello_pending = false;
        let deadline = Instant::now() + STOP_DEADLINE;
        // In the middle of an outage, waiting the whole deadline would only
        // delay the exit; a reconnect that is about to happen gets a moment.
        let give_up_unconnected = Instant::now() + UNCONNECTED_GRACE;
        while !self.outbox.is_empty() && Instant::now() < deadline {
            if !self.connected() && Instant::now() >= give_up_unconnected {
                break;
            }
            self.heartbeat_pending = false;
            self.pump().await;
            let wake = self
                .wake_at()
                .min(deadline)
                .min(Instant::now() + Duration::from_millis(50));
            tokio::select! {
                Some(ev) = conn_rx.recv() => {
                    self.on_conn_event(ev);
                    self.hello_pending = false;
                }
                Some(m) = next_ack(&mut self.acks) => self.on_ack(&m.payload),
                Some(n) = self.js_rx.recv() => self.on_js(n),
                _ = tokio::time::sleep_until(wake) => self.on_timer().await,
            }
        }
        if self.outbox.is_empty() {
            debug!("bus: everything published");
        } else if !self.connected_once {
            // No NATS ever answered: said once at start already.
            info!(
                left = self.outbox.len(),
                "bus: no NATS server answered; events not published"
            );
        } else {
            warn!(
                left = self.outbox.len(),
                "bus: NATS unreachable at shutdown; events not published"
            );
        }
    }
}
