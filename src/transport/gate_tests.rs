//! The gate cut at every byte: units released whole and alone, and a new
//! tungstenite over the parked bytes reading on where the old one stopped.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::*;
use crate::transport::wsconn::{ws_config, MAX_MESSAGE};

/// A socket that hands out its chunks (`None`: not ready, once), then is
/// not ready for ever; writes go nowhere.
#[derive(Default)]
struct Script(VecDeque<Option<Vec<u8>>>);

impl Script {
    fn of(chunks: &[&[u8]]) -> Script {
        let mut q = VecDeque::new();
        for c in chunks {
            q.push_back(Some(c.to_vec()));
            q.push_back(None);
        }
        Script(q)
    }
}

impl AsyncRead for Script {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let q = &mut self.get_mut().0;
        match q.pop_front() {
            Some(Some(b)) if b.is_empty() => Poll::Pending,
            Some(Some(mut b)) => {
                let n = out.remaining().min(b.len());
                out.put_slice(&b[..n]);
                if n < b.len() {
                    q.push_front(Some(b.split_off(n)));
                }
                Poll::Ready(Ok(()))
            }
            Some(None) | None => Poll::Pending,
        }
    }
}

impl AsyncWrite for Script {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame as a client sends it: masked unless `mask` is `None`.
fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xFFFF => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, opcode, payload, Some(KEY))
}

/// Units of every kind, and the messages tungstenite makes of them.
fn units() -> (Vec<Vec<u8>>, Vec<Message>) {
    let long = "x".repeat(300);
    let mut fragmented = masked(false, 2, b"say fr");
    fragmented.extend(masked(true, 9, b"mid"));
    fragmented.extend(masked(false, 0, b"ag"));
    fragmented.extend(masked(false, 0, b""));
    fragmented.extend(masked(true, 0, b"ment\r\n"));
    let units = vec![
        masked(true, 2, b"look\r\n"),
        masked(true, 1, long.as_bytes()),
        masked(true, 9, b"ping"),
        fragmented,
        masked(true, 10, b""),
        masked(true, 1, "é\r\n".as_bytes()),
        masked(true, 2, b""),
    ];
    let msgs = vec![
        Message::binary(b"look\r\n".to_vec()),
        Message::text(long),
        Message::Ping(b"ping".to_vec().into()),
        Message::Ping(b"mid".to_vec().into()),
        Message::binary(b"say fragment\r\n".to_vec()),
        Message::Pong(Vec::new().into()),
        Message::text("é\r\n"),
        Message::binary(Vec::new()),
    ];
    (units, msgs)
}

fn cx() -> Context<'static> {
    Context::from_waker(futures::task::noop_waker_ref())
}

/// Reads the gate until it is not ready: each read, in order.
fn drain_gate<S: AsyncRead + Unpin>(g: &mut Gate<S>) -> io::Result<Vec<Vec<u8>>> {
    let mut reads = Vec::new();
    let mut space = vec![0u8; 128 * 1024];
    loop {
        let mut rb = ReadBuf::new(&mut space);
        match Pin::new(&mut *g).poll_read(&mut cx(), &mut rb) {
            Poll::Pending => return Ok(reads),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return Ok(reads),
            Poll::Ready(Ok(())) => reads.push(rb.filled().to_vec()),
        }
    }
}

/// Reads tungstenite until it is not ready.
fn drain_ws<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
) -> Result<Vec<Message>, WsError> {
    let mut got = Vec::new();
    loop {
        match Pin::new(&mut *ws).poll_next(&mut cx()) {
            Poll::Pending | Poll::Ready(None) => return Ok(got),
            Poll::Ready(Some(Err(e))) => return Err(e),
            Poll::Ready(Some(Ok(m))) => got.push(m),
        }
    }
}

fn ws_over(g: Gate<Script>) -> WebSocketStream<Gate<Script>> {
    use futures::FutureExt;
    WebSocketStream::from_raw_socket(g, Role::Server, Some(ws_config()))
        .now_or_never()
        .unwrap()
}

#[test]
fn units_go_whole_and_alone_wherever_the_bytes_are_cut() {
    let (units, _) = units();
    let all: Vec<u8> = units.concat();
    let ends: Vec<usize> = units
        .iter()
        .scan(0, |at, u| {
            *at += u.len();
            Some(*at)
        })
        .collect();
    for cut in 0..=all.len() {
        let mut g = Gate::new(Script::of(&[&all[..cut]]), Vec::new(), MAX_MESSAGE);
        let first = drain_gate(&mut g).unwrap();
        let released: usize = first.iter().map(Vec::len).sum();
        let whole = ends
            .iter()
            .copied()
            .filter(|&e| e <= cut)
            .max()
            .unwrap_or(0);
        assert_eq!(released, whole, "cut at {cut}");
        assert_eq!(g.parked().unwrap(), &all[whole..cut], "cut at {cut}");
        g.inner = Script::of(&[&all[cut..]]);
        let second = drain_gate(&mut g).unwrap();
        assert_eq!(g.parked().unwrap(), b"");
        // Each read lies within one unit, and together they are the stream.
        let mut at = 0;
        for r in first.iter().chain(&second) {
            let unit_end = ends.iter().copied().find(|&e| e > at).unwrap();
            assert!(
                at + r.len() <= unit_end,
                "a read crossed a unit at cut {cut}"
            );
            assert_eq!(&all[at..at + r.len()], r.as_slice());
            at += r.len();
        }
        assert_eq!(at, all.len());
    }
}

#[test]
fn a_new_tungstenite_over_the_parked_bytes_reads_on_wherever_the_old_stopped() {
    let (units, msgs) = units();
    let all: Vec<u8> = units.concat();
    for cut in 0..=all.len() {
        let mut old = ws_over(Gate::new(
            Script::of(&[&all[..cut]]),
            Vec::new(),
            MAX_MESSAGE,
        ));
        let mut got = drain_ws(&mut old).unwrap();
        let parked = old.get_ref().parked().expect("parked").to_vec();
        drop(old);
        let mut new = ws_over(Gate::new(Script::of(&[&all[cut..]]), parked, MAX_MESSAGE));
        got.extend(drain_ws(&mut new).unwrap());
        assert_eq!(got, msgs, "cut at {cut}");
    }
}

#[test]
fn the_largest_message_passes_with_a_64_bit_length_and_bytes_split_anywhere() {
    let big = vec![b'a'; MAX_MESSAGE];
    let f = masked(true, 2, &big);
    assert_eq!(f[1] & 0x7F, 127);
    for cut in [1, 2, 9, 13, 14, 15, 4096, f.len() - 1] {
        let mut old = ws_over(Gate::new(Script::of(&[&f[..cut]]), Vec::new(), MAX_MESSAGE));
        assert!(drain_ws(&mut old).unwrap().is_empty());
        let parked = old.get_ref().parked().unwrap().to_vec();
        assert_eq!(parked.len(), cut);
        let mut new = ws_over(Gate::new(Script::of(&[&f[cut..]]), parked, MAX_MESSAGE));
        assert_eq!(
            drain_ws(&mut new).unwrap(),
            vec![Message::binary(big.clone())]
        );
    }
}

fn too_big(e: io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<TooBig>())
}

#[test]
fn oversize_frames_messages_and_header_floods_are_refused_without_buffering() {
    // A frame longer than the largest message: refused on its header.
    let mut head = masked(true, 2, b"");
    head[1] = 0x80 | 127;
    head.splice(2..2, ((MAX_MESSAGE + 1) as u64).to_be_bytes());
    let mut g = Gate::new(Script::of(&[&head]), Vec::new(), MAX_MESSAGE);
    assert!(too_big(drain_gate(&mut g).unwrap_err()));
    assert!(g.parked().is_none() && g.buf.capacity() == 0);
    // Fragments adding up to more than the largest message.
    let half = vec![b'a'; MAX_MESSAGE / 2 + 1];
    let mut two = masked(false, 2, &half);
    two.extend(masked(true, 0, &half));
    let mut g = Gate::new(Script::of(&[&two]), Vec::new(), MAX_MESSAGE);
    assert!(too_big(drain_gate(&mut g).unwrap_err()));
    // Endless empty fragments: no payload, but the unit grows; refused
    // once it passes the cap, having held at most the cap and a read.
    let mut flood = masked(false, 2, b"");
    let empty = masked(false, 0, b"");
    while flood.len() <= unit_cap(MAX_MESSAGE) + 4096 {
        flood.extend_from_slice(&empty);
    }
    let mut g = Gate::new(Script::default(), Vec::new(), MAX_MESSAGE);
    let mut refused = false;
    for c in flood.chunks(1000) {
        g.inner = Script::of(&[c]);
        match drain_gate(&mut g) {
            Ok(r) => assert!(r.is_empty()),
            Err(e) => {
                assert!(too_big(e));
                refused = true;
                break;
            }
        }
        assert!(g.buf.len() <= unit_cap(MAX_MESSAGE) + 4096);
    }
    assert!(refused);
}

#[test]
fn frames_tungstenite_refuses_pass_for_it_to_refuse() {
    // Unmasked.
    let f = frame(true, 2, b"look\r\n", None);
    let mut ws = ws_over(Gate::new(Script::of(&[&f]), Vec::new(), MAX_MESSAGE));
    assert!(matches!(
        drain_ws(&mut ws),
        Err(WsError::Protocol(ProtocolError::UnmaskedFrameFromClient))
    ));
    // A continuation with nothing to continue, after a good message.
    let mut f = masked(true, 1, b"ok");
    f.extend(masked(true, 0, b"x"));
    let mut ws = ws_over(Gate::new(Script::of(&[&f]), Vec::new(), MAX_MESSAGE));
    assert!(matches!(
        drain_ws(&mut ws),
        Err(WsError::Protocol(ProtocolError::UnexpectedContinueFrame))
    ));
    // A fragmented ping, a reserved opcode.
    for f in [masked(false, 9, b""), masked(true, 3, b"")] {
        let mut ws = ws_over(Gate::new(Script::of(&[&f]), Vec::new(), MAX_MESSAGE));
        assert!(matches!(drain_ws(&mut ws), Err(WsError::Protocol(_))));
    }
}

#[test]
fn at_the_end_of_the_stream_even_a_partial_unit_passes() {
    let mut f = masked(true, 2, b"look\r\n");
    let cut = f.len() + 3;
    f.extend(masked(true, 2, b"unfinished"));
    let mut g = Gate::new(
        EndAfter(Script(VecDeque::from([Some(f[..cut].to_vec())]))),
        Vec::new(),
        MAX_MESSAGE,
    );
    let reads = drain_gate(&mut g).unwrap();
    assert_eq!(reads.concat(), &f[..cut]);
    assert!(g.parked().is_none(), "ended");
}

/// A socket that ends after its script.
struct EndAfter(Script);

impl AsyncRead for EndAfter {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let s = &mut self.get_mut().0;
        if s.0.is_empty() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(s).poll_read(cx, out)
    }
}

#[tokio::test]
async fn writes_are_taken_whole_and_what_is_left_can_cross() {
    use futures::{Sink, SinkExt, StreamExt};
    use tokio::io::AsyncReadExt;
    let (ours, mut theirs) = tokio::io::duplex(1024);
    let gate = Gate::new(ours, Vec::new(), MAX_MESSAGE);
    let mut ws = WebSocketStream::from_raw_socket(gate, Role::Server, Some(ws_config())).await;
    // Far more than the pipe holds: taken at once, flushed in part.
    let big = vec![b'x'; 10_000];
    futures::future::poll_fn(|cx| Pin::new(&mut ws).poll_ready(cx))
        .await
        .unwrap();
    Pin::new(&mut ws)
        .start_send(Message::binary(big.clone()))
        .unwrap();
    let flushed = futures::FutureExt::now_or_never(ws.flush());
    assert!(flushed.is_none(), "the reader is slow: the flush waits");
    let left = ws.get_ref().unsent().to_vec();
    assert_eq!(ws.get_ref().taken(), 10_004, "a header and the payload");
    assert_eq!(ws.get_ref().sent(), 1024);
    assert_eq!(left.len(), 10_004 - 1024);
    // A new gate (another process) goes on with what was left.
    let mut head = vec![0u8; 1024];
    theirs.read_exact(&mut head).await.unwrap();
    let (ours2, theirs2) = tokio::io::duplex(64 * 1024);
    let gate2 = Gate::new(ours2, Vec::new(), MAX_MESSAGE).with_unsent(left);
    let mut ws2 = WebSocketStream::from_raw_socket(gate2, Role::Server, Some(ws_config())).await;
    ws2.flush().await.unwrap();
    assert!(ws2.get_ref().unsent().is_empty());
    drop(ws2);
    // The client reads the message whole, from the two halves.
    let mut rest = Vec::new();
    let mut theirs2 = theirs2;
    theirs2.read_to_end(&mut rest).await.unwrap();
    head.extend_from_slice(&rest);
    let joined = Script::of(&[&head]);
    let mut client = WebSocketStream::from_raw_socket(joined, Role::Client, None).await;
    match client.next().await {
        Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], &big[..]),
        other => panic!("{other:?}"),
    }
}
