//! A WebSocket frozen and rebuilt over a duplicate of its socket, as an
//! upgrade does it: the message the player had begun and a character the
//! game had begun both finish on the other side.

use std::future::poll_fn;
use std::os::fd::AsFd;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::*;

/// A player's WebSocket over loopback: the client's end, and holdfast's
/// [`WsConn`] in `mode`.
async fn connected(mode: Mode) -> (WebSocketStream<TcpStream>, WsConn) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (server, _) = l.accept().await.unwrap();
    let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    let gate = Gate::new(Io::Plain(server), Vec::new(), MAX_MESSAGE);
    let ws = WebSocketStream::from_raw_socket(gate, Role::Server, Some(ws_config())).await;
    (client, WsConn::new(ws, mode, Duration::from_secs(60)))
}

async fn read_line(conn: &mut WsConn) -> Vec<u8> {
    let mut buf = Vec::new();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        poll_fn(|cx| conn.poll_read(cx, &mut buf)),
    )
    .await;
    assert!(matches!(r, Ok(Ok(n)) if n > 0), "{r:?}");
    buf
}

async fn recv(client: &mut WebSocketStream<TcpStream>) -> Vec<u8> {
    match tokio::time::timeout(Duration::from_secs(5), client.next()).await {
        Ok(Some(Ok(Message::Binary(b)))) => b.to_vec(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_websocket_crosses_with_its_unfinished_message_and_terminal_state() {
    let (mut client, mut conn) = connected(Mode::Terminal).await;

    client
        .send(Message::binary(b"look\n".to_vec()))
        .await
        .unwrap();
    assert_eq!(read_line(&mut conn).await, b"look\r\n");
    // The game's output stops in the middle of a character.
    let e = "é".as_bytes();
    conn.write_all(&[b'c', b'a', b'f', e[0]]).await.unwrap();
    assert_eq!(recv(&mut client).await, b"caf");
    // The player has sent the start of a frame (masked by hand).
    let key = [1u8, 2, 3, 4];
    let payload = b"say hi\n";
    let mut frame = vec![0x82, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    AsyncWriteExt::write_all(client.get_mut(), &frame[..5])
        .await
        .unwrap();
    // The old side reads it and waits for the rest.
    let mut buf = Vec::new();
    let waited = tokio::time::timeout(
        Duration::from_millis(200),
        poll_fn(|cx| conn.poll_read(cx, &mut buf)),
    )
    .await;
    assert!(waited.is_err() && buf.is_empty());
    assert_eq!(conn.ws.get_ref().parked().unwrap(), &frame[..5]);

    let was = conn.freeze().await.unwrap().expect("a WebSocket has state");
    let bytes = serde_json::to_vec(&was).unwrap();
    drop(was);
    let fd = conn.socket().unwrap().try_clone_to_owned().unwrap();
    drop(conn);
    let PlayerWas::Ws(was) = serde_json::from_slice(&bytes).unwrap();
    let tcp = TcpStream::from_std(std::net::TcpStream::from(fd)).unwrap();
    let mut conn = WsConn::resumed(tcp, was, Duration::from_secs(60)).unwrap();
    assert!(conn.socket().unwrap().as_fd().try_clone_to_owned().is_ok());

    AsyncWriteExt::write_all(client.get_mut(), &frame[5..])
        .await
        .unwrap();
    assert_eq!(read_line(&mut conn).await, b"say hi\r\n");
    conn.write_all(&[e[1], b'\r', b'\n']).await.unwrap();
    assert_eq!(recv(&mut client).await, "é\r\n".as_bytes());
}

#[tokio::test]
async fn the_close_frame_says_why_the_session_ended() {
    for (why, code, reason) in [
        (Some(CloseWhy::Quit), 1000, "quit"),
        (Some(CloseWhy::Booted), 1000, "booted"),
        (Some(CloseWhy::Timeout), 4000, "timeout"),
        (Some(CloseWhy::Shutdown), 1001, "shutdown"),
        // Not told: connect again.
        (None, 4001, "reconnect"),
    ] {
        let (mut client, mut conn) = connected(Mode::Telnet).await;
        if let Some(w) = why {
            conn.closing(w);
        }
        conn.shutdown().await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), client.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                assert_eq!((u16::from(f.code), f.reason.as_str()), (code, reason));
            }
            other => panic!("{why:?}: {other:?}"),
        }
    }
}
