//! Handing a batch over: to the client with a marker after it, or to
//! JetStream with each event's id.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::time::{timeout, Instant};
use tracing::{debug, warn};

use super::{
    marker_token, Inflight, Js, JsNote, Publisher, ACK_TIMEOUT, BATCH, HANDOFF_TIMEOUT, RETRY_PAUSE,
};
use crate::bus::jetstream::{self, BatchAck};
use crate::bus::outbox::Outgoing;

impl Publisher {
    /// Hands the front of the outbox and a marker to the client (or the
    /// batch to JetStream).
    pub(super) async fn send_batch(&mut self) {
        self.next_marker += 1;
        let marker = self.next_marker;
        let batch: Vec<Outgoing> = self.outbox.send(BATCH).cloned().collect();
        if let (Js::Stream, Some(js)) = (self.js_state, &self.js) {
            let sent = timeout(HANDOFF_TIMEOUT, jetstream::send_batch(js, &batch)).await;
            match sent {
                Ok(Ok(acks)) => {
                    let tx = self.js_tx.clone();
                    tokio::spawn(async move {
                        let result = acks.await;
                        let _ = tx.send(JsNote::Acked(BatchAck { marker, result })).await;
                    });
                    // Each ack has its own timeout (API_TIMEOUT); this one
                    // only catches a helper task that never reports.
                    self.inflight = Some(Inflight {
                        marker,
                        token: Bytes::new(),
                        deadline: Instant::now() + ACK_TIMEOUT + jetstream::API_TIMEOUT,
                    });
                }
                Ok(Err((i, e))) => self.handoff_failed(i, &batch, e, false),
                Err(_) => self.handoff_failed(batch.len(), &batch, "timed out".into(), false),
            }
            return;
        }
        let token = marker_token(marker);
        let client = self.client.clone();
        let ack_subject = self.ack_subject.clone();
        let confirm = self.confirm;
        let marker_payload = token.clone();
        let handoff = async {
            for (i, m) in batch.iter().enumerate() {
                if let Err(e) = client.publish(m.subject.clone(), m.payload.clone()).await {
                    return Err((i, e));
                }
            }
            if !confirm {
                return Ok(());
            }
            client
                .publish(ack_subject, marker_payload)
                .await
                .map_err(|e| (batch.len(), e))
        };
        match timeout(HANDOFF_TIMEOUT, handoff).await {
            Ok(Ok(())) if self.confirm => {
                self.inflight = Some(Inflight {
                    marker,
                    token,
                    deadline: Instant::now() + ACK_TIMEOUT,
                });
            }
            Ok(Ok(())) => {
                // No confirmations possible: handed over counts as sent.
                self.confirmed();
            }
            Ok(Err((i, e))) => {
                use async_nats::client::PublishErrorKind as K;
                let fatal = matches!(e.kind(), K::MaxPayloadExceeded | K::InvalidSubject);
                self.handoff_failed(i, &batch, e.to_string(), fatal);
            }
            Err(_) => self.handoff_failed(batch.len(), &batch, "timed out".into(), false),
        }
    }

    /// Handing message `i` of `batch` over failed: drop it if the server
    /// will never take it (`fatal`), else retry the batch shortly.
    fn handoff_failed(&mut self, i: usize, batch: &[Outgoing], e: String, fatal: bool) {
        self.outbox.unsend();
        let fatal = fatal || e.contains("maximum payload");
        if fatal && i < batch.len() {
            // Those before it go again with the next batch (duplicates
            // are fine).
            warn!(error = %e, subject = %batch[i].subject, "event rejected; dropped");
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            self.outbox.remove(i);
        } else {
            debug!(error = %e, "bus hand-off failed; retrying");
            self.retry_at = Some(Instant::now() + RETRY_PAUSE);
        }
    }
}
