//! A TLS server connection that holds no buffer while its player is idle.
//!
//! rustls's buffered `ServerConnection` (what `tokio-rustls` wraps) keeps a
//! 4 KiB receive buffer for the life of a connection (it sizes it back to
//! 4 KiB before every read, never to nothing): the largest part of an idle
//! TLS session, 4 of its 10.4 KiB. rustls's unbuffered API leaves the buffers to the
//! caller, so here a read goes to a stack chunk, whole records are
//! decrypted from it, and only the bytes of a record not complete yet
//! stay on the heap (`incoming`, freed once the record is whole). Output
//! is encrypted into a stack chunk too; only what the socket did not take
//! is kept (`outgoing`, freed once sent).
//!
//! Bounded: rustls refuses a record longer than TLS allows as soon as its
//! header arrives, and a handshake message over 64 KiB; `MAX_INCOMING` is
//! a backstop above both. At most one write's ciphertext (`WRITE_CHUNK`
//! and its records' overhead) waits for the socket: a write is pending
//! until it went.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use rustls::server::{ServerConfig, UnbufferedServerConnection};
use rustls::unbuffered::{EncryptError, WriteTraffic};

use super::tls_round::{drive, Data};

/// Bytes read from the socket per call: one record of the largest size
/// rustls accepts (16 KiB of payload, 2 KiB of expansion, a header), so a
/// record that arrives whole is never copied to the heap.
const READ_CHUNK: usize = 16 * 1024 + 2048 + 5;
/// Records encrypted per write, at most: as much as tokio-rustls let
/// rustls buffer (64 KiB), in one system call.
const WRITE_RECORDS: usize = 4;
/// Plaintext encrypted per write, at most.
const WRITE_CHUNK: usize = WRITE_RECORDS * 16 * 1024;
/// Room for a record's header, padding and tag (and a key update before
/// it) besides its payload.
const RECORD_ROOM: usize = 256;
/// Most bytes kept of records or a handshake message not complete yet.
const MAX_INCOMING: usize = 0xffff + READ_CHUNK;

/// Telnet (or a WebSocket) over TLS, server side.
pub struct TlsConn {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Bytes of records not complete yet (empty, no capacity, between
    /// records).
    incoming: Vec<u8>,
    /// Decrypted bytes a reader had no room for, from `plain_at` on.
    plain: Vec<u8>,
    plain_at: usize,
    /// TLS bytes the socket has not taken yet, from `out_at` on.
    outgoing: Vec<u8>,
    out_at: usize,
    /// The socket said end of stream.
    eof: bool,
    /// The client sent close_notify.
    peer_closed: bool,
    /// close_notify is queued.
    closing: bool,
    /// Any byte went to the client.
    sent_any: bool,
    /// The connection failed (sticky, as rustls's own state is).
    failed: Option<rustls::Error>,
}

impl TlsConn {
    /// A connection for `tcp` under `config`, before its handshake.
    pub fn new(config: Arc<ServerConfig>, tcp: TcpStream) -> Result<Self, rustls::Error> {
        Ok(TlsConn {
            tcp,
            conn: UnbufferedServerConnection::new(config)?,
            incoming: Vec::new(),
            plain: Vec::new(),
            plain_at: 0,
            outgoing: Vec::new(),
            out_at: 0,
            eof: false,
            peer_closed: false,
            closing: false,
            sent_any: false,
            failed: None,
        })
    }

    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Whether any byte went to the client yet (none does before the
    /// ClientHello is complete).
    pub fn sent_any(&self) -> bool {
        self.sent_any
    }

    /// Runs the handshake to its end.
    pub async fn handshake(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_handshake(cx)).await
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send(cx))?;
            self.check()?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TLS handshake: end of stream",
                )));
            }
            ready!(self.poll_fill(cx, None))?;
        }
    }

    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.clone())),
            None => Ok(()),
        }
    }

    /// Writes `outgoing` to the socket until it is all gone.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_at < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.out_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent_any = true;
            self.out_at += n;
        }
        self.outgoing = Vec::new();
        self.out_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads what the socket has and processes it: decrypted bytes go to
    /// `sink` (or `plain`), handshake output to `outgoing`. Ready when
    /// something was read (or at the end of the stream).
    fn poll_fill(
        &mut self,
        cx: &mut Context<'_>,
        sink: Option<&mut Vec<u8>>,
    ) -> Poll<io::Result<()>> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut rb = ReadBuf::new(&mut chunk);
        ready!(Pin::new(&mut self.tcp).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        if n == 0 {
            self.eof = true;
            return Poll::Ready(Ok(()));
        }
        if self.incoming.is_empty() {
            // The usual case: whole records, decrypted from the stack.
            let used = self.process(Some(&mut chunk[..n]), sink);
            self.incoming.extend_from_slice(&chunk[used..n]);
        } else {
            if self.incoming.len() + n > MAX_INCOMING {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS: too many bytes without a whole record",
                )));
            }
            self.incoming.extend_from_slice(&chunk[..n]);
            let used = self.process(None, sink);
            self.incoming.drain(..used);
            if self.incoming.is_empty() {
                self.incoming = Vec::new();
            }
        }
        if self.failed.is_some() {
            // Last gasp: the alert, if the socket takes it now.
            let _ = self.poll_send(cx);
        }
        self.check()?;
        Poll::Ready(Ok(()))
    }

    /// Processes `buf` (or `incoming` when `None`) until rustls needs
    /// more bytes, decrypting to `sink` (or `plain`); how many bytes of it
    /// were used (to discard from its front). On an error, its alert (if
    /// any) is queued to send and the error kept in `failed`.
    fn process(&mut self, buf: Option<&mut [u8]>, sink: Option<&mut Vec<u8>>) -> usize {
        let buf = match buf {
            Some(b) => b,
            None => &mut self.incoming[..],
        };
        let plain = match sink {
            Some(s) => s,
            None => &mut self.plain,
        };
        let r = drive(
            &mut self.conn,
            buf,
            &mut self.outgoing,
            plain,
            &mut self.peer_closed,
            None,
        );
        self.settle(r)
    }

    /// The bytes a round of [`drive`] used; on an error the error is kept:
    /// the connection is over (its alert, if rustls made one, is in
    /// `outgoing`).
    fn settle(&mut self, r: Result<usize, (usize, rustls::Error)>) -> usize {
        r.unwrap_or_else(|(used, e)| {
            self.failed.get_or_insert(e);
            used
        })
    }

    /// Moves decrypted bytes to `dst` (at most `max`); how many.
    fn take_plain(&mut self, max: usize, dst: impl FnOnce(&[u8])) -> usize {
        let avail = &self.plain[self.plain_at..];
        let n = avail.len().min(max);
        dst(&avail[..n]);
        self.plain_at += n;
        if self.plain_at == self.plain.len() {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
        n
    }

    /// Ready once decrypted bytes came (to `sink`, else to `plain`), or
    /// at the end of the stream.
    fn poll_plain(
        &mut self,
        cx: &mut Context<'_>,
        mut sink: Option<&mut Vec<u8>>,
    ) -> Poll<io::Result<()>> {
        let start = sink.as_ref().map_or(0, |s| s.len());
        loop {
            let got = match &sink {
                Some(s) => s.len() > start,
                None => self.plain_at < self.plain.len(),
            };
            if got || self.peer_closed {
                return Poll::Ready(Ok(()));
            }
            self.check()?;
            if self.eof {
                // As rustls says it: the stream was cut, not closed.
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                )));
            }
            // What rustls answered to the last bytes (a key update, an
            // alert) goes first; a full socket does not hold up reading.
            if let Poll::Ready(Err(e)) = self.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            ready!(self.poll_fill(cx, sink.as_deref_mut()))?;
        }
    }

    /// Runs rustls until it may send application data, then `f` with it.
    fn with_traffic<T>(
        &mut self,
        f: impl FnOnce(&mut WriteTraffic<'_, Data>) -> T,
    ) -> io::Result<T> {
        self.check()?;
        let mut f = Some(f);
        let mut out = None;
        let r = drive(
            &mut self.conn,
            &mut self.incoming[..],
            &mut self.outgoing,
            &mut self.plain,
            &mut self.peer_closed,
            Some(&mut |w| {
                if let Some(f) = f.take() {
                    out = Some(f(w));
                }
            }),
        );
        // `incoming` holds only bytes of records not complete yet, so
        // this uses none of them, but the rule is the same.
        let used = self.settle(r);
        self.incoming.drain(..used);
        self.check()?;
        out.ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "TLS: not ready for data"))
    }
}

impl TlsConn {
    /// Waits for decrypted bytes and appends them to `buf`; `Ok(0)` after
    /// the client's close_notify.
    pub fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut Vec<u8>,
    ) -> Poll<io::Result<usize>> {
        if self.plain_at < self.plain.len() {
            return Poll::Ready(Ok(self.take_plain(usize::MAX, |b| buf.extend_from_slice(b))));
        }
        let start = buf.len();
        ready!(self.poll_plain(cx, Some(buf)))?;
        Poll::Ready(Ok(buf.len() - start))
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_plain(cx, None))?;
        let room = buf.remaining();
        this.take_plain(room, |b| buf.put_slice(b));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TlsConn {
    /// Takes up to `WRITE_CHUNK` of `data`, encrypted at once; pending
    /// only while the last write's bytes wait for the socket (nothing
    /// taken).
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        ready!(this.poll_send(cx))?;
        if this.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let take = data.len().min(WRITE_CHUNK);
        let mut chunk = [0u8; WRITE_CHUNK + WRITE_RECORDS * RECORD_ROOM];
        let n = this
            .with_traffic(|w| w.encrypt(&data[..take], &mut chunk))?
            .map_err(|e| match e {
                EncryptError::EncryptExhausted => io::Error::other("TLS: keys exhausted"),
                e => io::Error::other(e.to_string()),
            })?;
        // Anything rustls queued before (a key update) goes first.
        if this.outgoing.is_empty() {
            let sent = match Pin::new(&mut this.tcp).poll_write(cx, &chunk[..n]) {
                Poll::Ready(Ok(s)) => s,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => 0,
            };
            if sent > 0 {
                this.sent_any = true;
            }
            this.outgoing.extend_from_slice(&chunk[sent..n]);
        } else {
            this.outgoing.extend_from_slice(&chunk[..n]);
            // Already registered if the socket is full; or it goes now.
            let _ = this.poll_send(cx)?;
        }
        if this.outgoing.is_empty() {
            this.outgoing = Vec::new();
        }
        Poll::Ready(Ok(take))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    /// close_notify, then the socket's write side.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing && this.failed.is_none() {
            this.closing = true;
            let mut note = [0u8; RECORD_ROOM];
            if let Ok(Ok(n)) = this.with_traffic(|w| w.queue_close_notify(&mut note)) {
                this.outgoing.extend_from_slice(&note[..n]);
            }
        }
        ready!(this.poll_send(cx))?;
        Poll::Ready(match ready!(Pin::new(&mut this.tcp).poll_shutdown(cx)) {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        })
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
