//! Connections to a backend: TCP (with keepalive and nodelay) or a Unix
//! socket, behind one stream type.

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
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

    /// [`try_read_buf`](Self::try_read_buf) that also notes a drained
    /// socket; see [`try_read_drain`].
    pub fn try_read_drain(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            BackendStream::Tcp(s) => try_read_drain(s, buf),
            BackendStream::Unix(s) => drain_read(
                buf,
                |f| s.try_io(Interest::READABLE, f),
                |b| s.try_read_buf(b),
            ),
        }
    }
}

/// Reads what is there into the spare capacity of `buf`, without waiting,
/// like `try_read_buf`; a read that leaves room in `buf` has emptied the
/// socket's receive queue, so it also clears the stream's readiness. That
/// saves the next read, which would only say `WouldBlock`: one system call
/// per message of interactive traffic, on each side. Data arriving
/// meanwhile sets the readiness again (tokio compares event ticks), and
/// end of stream stays visible (tokio never clears the read-closed state).
pub fn try_read_drain(s: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    drain_read(
        buf,
        |f| s.try_io(Interest::READABLE, f),
        |b| s.try_read_buf(b),
    )
}

fn drain_read(
    buf: &mut Vec<u8>,
    try_io: impl FnOnce(&mut dyn FnMut() -> io::Result<usize>) -> io::Result<usize>,
    mut read: impl FnMut(&mut Vec<u8>) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut got = 0;
    let r = try_io(&mut || {
        let n = read(buf)?;
        if n > 0 && buf.len() < buf.capacity() {
            got = n;
            // Short read: report "would block" so the readiness is cleared.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        r => r,
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

/// The kind of a backend connection crossing an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SockKind {
    /// TCP.
    Tcp,
    /// A Unix socket.
    Unix,
}

/// A duplicate of a backend connection crossing an upgrade, to be sent.
#[derive(Debug)]
pub struct Sock {
    /// Its kind.
    pub kind: SockKind,
    /// The close-on-exec duplicate.
    pub fd: std::os::fd::OwnedFd,
}

/// A close-on-exec duplicate of `s`.
pub fn dup(s: &BackendStream) -> std::io::Result<Sock> {
    Ok(match s {
        BackendStream::Tcp(t) => Sock {
            kind: SockKind::Tcp,
            fd: t.as_fd().try_clone_to_owned()?,
        },
        BackendStream::Unix(u) => Sock {
            kind: SockKind::Unix,
            fd: u.as_fd().try_clone_to_owned()?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Guards the test against hanging; asserts nothing about speed.
    const GUARD: Duration = Duration::from_secs(10);

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    async fn read_ready(s: &TcpStream) {
        tokio::time::timeout(GUARD, poll_fn(|cx| s.poll_read_ready(cx)))
            .await
            .expect("readiness came")
            .unwrap();
    }

    #[tokio::test]
    async fn drained_reads_still_see_new_data_and_eof() {
        let (mut w, r) = pair().await;
        w.write_all(b"hello").await.unwrap();
        read_ready(&r).await;
        let mut buf = Vec::with_capacity(64);
        assert_eq!(try_read_drain(&r, &mut buf).unwrap(), 5);
        assert_eq!(buf, b"hello");
        // The short read cleared the readiness: nothing more to read yet.
        let mut more = Vec::with_capacity(64);
        assert_eq!(
            try_read_drain(&r, &mut more).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // New data wakes the reader again.
        w.write_all(b"again").await.unwrap();
        read_ready(&r).await;
        assert_eq!(try_read_drain(&r, &mut more).unwrap(), 5);
        // Data and EOF together: the short read must not hide the EOF.
        w.write_all(b"bye").await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        read_ready(&r).await;
        let mut last = Vec::with_capacity(64);
        let n = try_read_drain(&r, &mut last).unwrap();
        assert!(n > 0);
        loop {
            read_ready(&r).await;
            let mut b = Vec::with_capacity(64);
            match try_read_drain(&r, &mut b) {
                Ok(0) => break,
                Ok(_) => last.extend_from_slice(&b),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(last, b"bye");
    }

    #[tokio::test]
    async fn full_reads_leave_the_rest_readable() {
        let (mut w, r) = pair().await;
        w.write_all(&[7u8; 100]).await.unwrap();
        let mut got = 0;
        while got < 100 {
            read_ready(&r).await;
            // A buffer it fills: the socket may hold more, so it stays ready.
            let mut buf = Vec::with_capacity(10);
            match try_read_drain(&r, &mut buf) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, 100);
    }
}
