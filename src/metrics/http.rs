//! The metrics endpoint (`[metrics] addr`): `/metrics` (Prometheus text),
//! `/healthz` (200 while the active backend is up, 503 otherwise) and
//! `/livez` (200 while the process serves), over HTTP/1.1 with hyper.
//!
//! Hostile or slow clients are bounded: request heads are capped at
//! [`MAX_HEAD`] bytes and must arrive within [`HEAD_TIMEOUT`], a
//! connection lives at most [`CONN_LIFETIME`], and at most
//! [`MAX_CONNS`] are served at once (more are closed at accept). Each
//! connection is its own task, so a slow one never delays a scrape.

use std::convert::Infallible;
use std::sync::Arc;
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

use super::metrics;
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
        });
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
                m.refresh(&shared);
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
