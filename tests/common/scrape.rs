//! The proxy's `/metrics` as a scraper reads it.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The whole `/metrics` text served at `addr`.
pub async fn metrics_text(addr: SocketAddr) -> String {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(super::WAIT, c.read_to_string(&mut body))
        .await
        .expect("metrics answered")
        .unwrap();
    body
}

/// One series (name and labels, as printed) served at `addr` (`None`:
/// absent).
pub async fn series(addr: SocketAddr, series: &str) -> Option<f64> {
    let prefix = format!("{series} ");
    metrics_text(addr)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}
