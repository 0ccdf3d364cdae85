//! The metrics endpoint (`[metrics] addr`): `/metrics` (Prometheus text),
//! `/healthz` (200 while the active backend is up, 503 otherwise) and
//! `/livez` (200 while the process serves), over HTTP/1.1 with hyper.
//!
//! Hostile or slow clients are bounded: request heads are capped at
//! [`MAX_HEAD`] bytes and must arrive within [`HEAD_TIMEOUT`], a
//! connection lives at most [`CONN_LIFETIME`], at most [`MAX_CONNS`] are
//! served at once and at most [`MAX_CONNS_PER_IP`] from one address (an
//! IPv6 address grouped by `limits.ipv6_prefix`); more are closed at
//! accept. So one client opening connections in a loop holds at most
//! [`MAX_CONNS_PER_IP`] of them, and the scraper (or a load balancer's
//! `/healthz`) from another address still gets its answer. Each
//! connection is its own task, so a slow one never delays a scrape.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, error, info, warn};

use crate::metrics::metrics;
use crate::state::Shared;

/// Largest request head (request line and headers) accepted; hyper's
/// smallest read buffer.
pub const MAX_HEAD: usize = 8192;
/// Time a client gets to send a complete request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection, keep-alive included.
pub const CONN_LIFETIME: Duration = Duration::from_secs(60);
/// Connections served at once.
pub const MAX_CONNS: usize = 64;
/// Connections served at once to one address (a Prometheus server uses
/// one; `curl` and a health checker a few more).
pub const MAX_CONNS_PER_IP: usize = 8;

/// How long a new process of an upgrade waits for the old one to free
/// the metrics address (it exits within its 2 s bus flush).
const FREE_WITHIN: Duration = Duration::from_secs(30);

/// Binds `addr` once the process before an upgrade has let it go (retried
/// every 50 ms), then [`serve`]s; logs an error if it never comes free.
pub async fn serve_when_free(shared: Arc<Shared>, addr: std::net::SocketAddr) {
    let t0 = tokio::time::Instant::now();
    info!(%addr, "metrics: the address is still the old process's; waiting for it");
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        match TcpListener::bind(addr).await {
            Ok(l) => return serve(shared, l).await,
            Err(e) if t0.elapsed() > FREE_WITHIN => {
                error!(%addr, error = %e, "metrics: cannot listen; no /metrics until a restart");
                return;
            }
            Err(_) => {}
        }
    }
}

/// Serves `/metrics`, `/healthz` and `/livez` on `listener` until shutdown.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    if let Ok(a) = listener.local_addr() {
        info!(addr = %a, "metrics: serving /metrics, /healthz, /livez");
    }
    let slots = Arc::new(Semaphore::new(MAX_CONNS));
    let per_ip = PerIp::default();
    loop {
        // `accept` is cancel-safe: a connection not yet returned stays queued.
        let (stream, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let group = shared.config().limits.ip_group(peer.ip());
        let Some(mine) = per_ip.take(group) else {
            debug!(%peer, "metrics: too many connections from this address; closed");
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "metrics: too many connections; closed");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(|req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(shared, &req).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(stream), svc);
            let shutdown = shared.shutdown.clone();
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = tokio::time::timeout(CONN_LIFETIME, conn) => {
                    if let Ok(Err(e)) = r {
                        debug!(%peer, error = %e, "metrics: connection ended");
                    }
                }
            }
            drop(slot);
            drop(mine);
        });
    }
}

/// Connections open per address group, for [`MAX_CONNS_PER_IP`].
#[derive(Debug, Default, Clone)]
struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One connection counted in [`PerIp`]; uncounted when dropped.
struct PerIpSlot {
    map: PerIp,
    ip: IpAddr,
}

impl PerIp {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Counts stay consistent even if a holder panicked.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more connection from `ip` unless it has
    /// [`MAX_CONNS_PER_IP`] already.
    fn take(&self, ip: IpAddr) -> Option<PerIpSlot> {
        let mut g = self.lock();
        let n = g.entry(ip).or_insert(0);
        if *n >= MAX_CONNS_PER_IP {
            return None;
        }
        *n += 1;
        Some(PerIpSlot {
            map: self.clone(),
            ip,
        })
    }
}

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        let mut g = self.map.lock();
        if let Some(n) = g.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                g.remove(&self.ip);
            }
        }
    }
}

async fn route(shared: Arc<Shared>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => {
            // Reading /proc/self/fd takes ~30 ms with 18,000 descriptors
            // open, and the registry pass grows with the sessions: off the
            // runtime's workers, so no session waits for a scrape.
            let text = tokio::task::spawn_blocking(move || {
                let m = metrics();
                super::scrape(&shared);
                m.encode()
            })
            .await
            .unwrap_or_default();
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        "/healthz" => {
            let pool = shared.pool.borrow();
            let up = pool.view(&pool.active).is_some_and(|v| v.up == Some(true));
            if up {
                text(StatusCode::OK, &format!("ok: {} is up\n", pool.active))
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("unavailable: {} is not up\n", pool.active),
                )
            }
        }
        "/livez" => text(StatusCode::OK, "ok\n"),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_holds_at_most_its_share() {
        let p = PerIp::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let held: Vec<PerIpSlot> = (0..MAX_CONNS_PER_IP).map_while(|_| p.take(a)).collect();
        assert_eq!(held.len(), MAX_CONNS_PER_IP);
        assert!(p.take(a).is_none(), "one more from the same address");
        assert!(p.take(b).is_some(), "another address has its own");
        drop(held);
        assert!(p.take(a).is_some(), "closed connections free their places");
        assert!(
            p.lock().get(&b).is_none(),
            "an address with none is forgotten"
        );
    }
}
