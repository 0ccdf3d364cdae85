//! Connections to a backend: TCP (with keepalive and nodelay) or a Unix
//! socket, behind one stream type.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::config::BackendAddr;

/// TCP keepalive: idle time before the first probe, and probe spacing.
/// Held players sit idle for a long time; keepalive notices a vanished NAT
/// entry or peer long before a write would.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Spacing of keepalive probes after the first.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// Unanswered keepalive probes before the kernel gives up.
pub const KEEPALIVE_RETRIES: u32 = 4;

/// Sets nodelay and keepalive on a TCP stream (either side of the proxy).
pub fn tune_tcp(s: &TcpStream) {
    // Both are best effort: a socket that refuses them still works.
    let _ = s.set_nodelay(true);
    let ka = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    let _ = SockRef::from(s).set_tcp_keepalive(&ka);
}

/// A connection to a backend.
#[derive(Debug)]
pub enum BackendStream {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a Unix socket.
    Unix(UnixStream),
}

impl BackendStream {
    /// Waits until the stream is readable (cancel-safe).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            BackendStream::Tcp(s) => s.readable().await,
            BackendStream::Unix(s) => s.readable().await,
        }
    }

    /// Polls for read readiness (cancel-safe; for one task's `select!`:
    /// only the last waker given is woken).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            BackendStream::Tcp(s) => s.poll_read_ready(cx),
            BackendStream::Unix(s) => s.poll_read_ready(cx),
        }
    }

    /// Reads what is there into the spare capacity of `buf`, without waiting.
    pub fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            BackendStream::Tcp(s) => s.try_read_buf(buf),
            BackendStream::Unix(s) => s.try_read_buf(buf),
        }
    }
}

/// Connects to `addr` within `timeout`.
pub async fn connect(addr: &BackendAddr, timeout: Duration) -> io::Result<BackendStream> {
    let fut = async {
        match addr {
            BackendAddr::Tcp(a) => {
                let s = TcpStream::connect(a.as_str()).await?;
                tune_tcp(&s);
                Ok(BackendStream::Tcp(s))
            }
            BackendAddr::Unix(p) => Ok(BackendStream::Unix(UnixStream::connect(p).await?)),
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {timeout:?}"),
        )),
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
