//! The publisher's reactions to its connection: NATS connection events
//! and the JetStream stream check that follows each (re)connection.

use std::sync::atomic::Ordering;

use async_nats::Event as NatsEvent;
use tracing::{debug, info, warn};

use super::{Js, JsNote, Publisher};
use crate::bus::jetstream::{self, EnsureError};

impl Publisher {
    /// A connection event from the client.
    pub(super) fn on_conn_event(&mut self, ev: NatsEvent) {
        match ev {
            NatsEvent::Connected => {
                self.stats.connects.fetch_add(1, Ordering::Relaxed);
                let info = self.client.server_info();
                // The client does not say which listed server it reached;
                // with one listed, that is the one (the server's own idea of
                // its address is often 0.0.0.0).
                let servers = &self.shared.config().bus.servers;
                let url = match servers.as_slice() {
                    [one] => one.clone(),
                    _ => format!("nats://{}:{}", info.host, info.port),
                };
                info!(
                    server_name = %info.server_name,
                    queued = self.outbox.len(),
                    "bus: connected to {url}"
                );
                self.hello_pending = true;
                // A batch in flight on a connection that was lost goes again
                // on the new one. `Disconnected` already did that when it
                // came first; a `Connected` that arrives with no
                // `Disconnected` since the last one is either the first
                // connection's own event reaching us after we already
                // published on it (resending would only duplicate) or a
                // replacement we were not told about (resend to be safe).
                if self.connected_once && !self.disconnected_since {
                    self.inflight = None;
                    self.outbox.unsend();
                }
                self.connected_once = true;
                self.disconnected_since = false;
                self.retry_at = None;
                self.ack_misses = 0;
                self.start_ensure();
            }
            NatsEvent::Disconnected => {
                warn!(
                    queued = self.outbox.len(),
                    "bus lost NATS; events wait in the queue"
                );
                self.outage_logged = true;
                self.disconnected_since = true;
                self.inflight = None;
                self.outbox.unsend();
            }
            NatsEvent::ClientError(e) => {
                // Every failed reconnect attempt lands here: warn once per
                // outage, the rest at debug.
                if self.outage_logged {
                    debug!(error = %e, "NATS connection attempt failed");
                } else if !self.connected_once && nobody_there(&e) {
                    // Running without NATS is a supported way to run (the
                    // sample config does, on a fresh machine): say so once,
                    // plainly, and keep trying in the background.
                    self.outage_logged = true;
                    let servers = self.shared.config().bus.servers.join(", ");
                    info!(error = %e, "bus: no NATS server at {servers} yet; events wait in the queue until one answers");
                } else {
                    self.outage_logged = true;
                    let servers = self.shared.config().bus.servers.join(",");
                    warn!(error = %e, %servers, "cannot reach NATS; events wait in the queue");
                }
            }
            NatsEvent::ServerError(e) => {
                let msg = e.to_string();
                if self.confirm
                    && msg.contains("Permissions Violation")
                    && msg.contains(self.ack_subject.as_str())
                {
                    // Without our inbox we cannot get confirmations; plain
                    // NATS delivery (at most once) is still better than a
                    // queue that never drains.
                    self.confirm = false;
                    self.inflight = None;
                    self.outbox.unsend();
                    warn!(error = %e, "no permission for the publisher's _INBOX subject: events are sent without confirmation");
                } else {
                    warn!(error = %e, "NATS server error");
                }
            }
            NatsEvent::LameDuckMode => info!("NATS server is entering lame duck mode"),
            NatsEvent::SlowConsumer(sid) => warn!(sid, "NATS slow consumer"),
            NatsEvent::Draining | NatsEvent::Closed => debug!(event = %ev, "NATS"),
        }
    }

    /// After a (re)connection with `bus.jetstream`: check the stream in
    /// the background; batches wait for the answer.
    pub(super) fn start_ensure(&mut self) {
        if self.js.is_none() {
            return;
        }
        self.js_gen += 1;
        self.js_state = Js::Checking;
        let (gen, client, tx) = (self.js_gen, self.client.clone(), self.js_tx.clone());
        let bus = self.shared.config().bus.clone();
        tokio::spawn(async move {
            let r = jetstream::ensure_stream(&client, &bus).await;
            let _ = tx.send(JsNote::Ensured(gen, r)).await;
        });
    }

    /// A report from a JetStream helper task.
    pub(super) fn on_js(&mut self, n: JsNote) {
        self.on_js_note(n);
        let on = self.js_state == Js::Stream;
        self.stats.stream.store(on, Ordering::Relaxed);
    }

    fn on_js_note(&mut self, n: JsNote) {
        match n {
            JsNote::Ensured(gen, _) if gen != self.js_gen => {}
            JsNote::Ensured(_, Ok(e)) => {
                self.js_state = Js::Stream;
                if self.js_unavailable_logged {
                    self.js_unavailable_logged = false;
                    info!("bus: the JetStream stream is usable again");
                }
                let stream = &self.shared.config().bus.stream;
                if e.created {
                    info!(%stream, replicas = e.replicas, "bus: created the JetStream stream for events");
                } else {
                    debug!(%stream, "bus: events go to the JetStream stream");
                }
            }
            JsNote::Ensured(_, Err(EnsureError::Unavailable(e))) => {
                self.js_state = Js::Plain;
                if !self.js_unavailable_logged {
                    self.js_unavailable_logged = true;
                    warn!(error = %e, "bus.jetstream is on but NATS has no JetStream: events are published without it");
                }
            }
            JsNote::Ensured(_, Err(EnsureError::Other(e))) => {
                // Plain publishing keeps events flowing; the next
                // reconnection tries the stream again.
                self.js_state = Js::Plain;
                self.js_retry = Some(tokio::time::Instant::now() + super::JS_RETRY);
                if !self.js_unavailable_logged {
                    self.js_unavailable_logged = true;
                    warn!(error = %e, "bus: cannot use the JetStream stream yet; events are published without it meanwhile");
                } else {
                    debug!(error = %e, "bus: JetStream stream still not usable");
                }
            }
            JsNote::Acked(a) => {
                if self.inflight.as_ref().map(|f| f.marker) != Some(a.marker) {
                    return; // a batch abandoned on an older connection
                }
                match a.result {
                    Ok(duplicates) => {
                        if duplicates > 0 {
                            debug!(
                                duplicates,
                                "bus: the stream already had some of a resent batch"
                            );
                        }
                        self.confirmed();
                    }
                    Err(e) => {
                        // Send again shortly: the message ids make sure the
                        // stream keeps one copy.
                        warn!(error = %e, queued = self.outbox.len(), "JetStream did not store events; retrying");
                        self.inflight = None;
                        self.outbox.unsend();
                        self.retry_at = Some(tokio::time::Instant::now() + super::RETRY_PAUSE);
                        if e.contains("no responders") {
                            // The stream went away: make it again.
                            self.start_ensure();
                        } else {
                            // Acks that keep timing out on one connection:
                            // every second time, try a fresh one (as with
                            // markers).
                            self.ack_misses += 1;
                            if self.ack_misses.is_multiple_of(2) {
                                warn!("NATS server stopped answering; reconnecting");
                                let c = self.client.clone();
                                tokio::spawn(async move {
                                    let _ = tokio::time::timeout(
                                        super::HANDOFF_TIMEOUT,
                                        c.force_reconnect(),
                                    )
                                    .await;
                                });
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A failed connection attempt that only says no server answered (refused,
/// timed out, no such host), as opposed to one that found a server and was
/// turned away (authorization, TLS), which the operator must hear about.
/// async-nats reports the kind only as text (`ConnectErrorKind`'s Display).
fn nobody_there(e: &async_nats::ClientError) -> bool {
    let s = e.to_string();
    ["IO error", "timed out", "DNS error"]
        .iter()
        .any(|k| s.ends_with(k))
}
