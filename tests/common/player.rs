//! A player's connection in the tests, and the helpers every test player
//! shares ([`Expect`]): wait for a text after the last match, read for a
//! while, see the connection close or stay open, log in. [`Conn`] carries
//! the bytes over any [`Wire`]: plain TCP here ([`Client`]), TLS and
//! WebSocket in `tests/doors/conn.rs`. The scripted MUD client
//! (`tests/telnet/player.rs`) has the same helpers over its own decoding.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::{strip_telnet_partial, WAIT};

/// A player's connection whose received text can be waited on.
pub trait Expect {
    /// Everything received so far, telnet removed.
    fn text(&self) -> &str;
    /// Where in [`Expect::text`] the last match ended.
    fn pos_mut(&mut self) -> &mut usize;
    /// Whether the other side has closed the connection.
    fn is_closed(&self) -> bool;
    /// Reads once, waiting until `until` at the latest; notes a close.
    async fn read_some(&mut self, until: Instant);
    /// Sends `line` and its CRLF.
    async fn send(&mut self, line: &str);

    /// Waits up to `within` for `needle` after the last match; returns the
    /// text between.
    async fn expect_within(&mut self, needle: &str, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            let pos = *self.pos_mut();
            if let Some(i) = self.text()[pos..].find(needle) {
                let seen = self.text()[pos..pos + i + needle.len()].to_string();
                *self.pos_mut() += i + needle.len();
                return seen;
            }
            if self.is_closed() || Instant::now() >= until {
                panic!(
                    "did not see {needle:?} within {within:?} (closed: {}); after last match:\n{}",
                    self.is_closed(),
                    &self.text()[pos..]
                );
            }
            self.read_some(until).await;
        }
    }

    /// [`Expect::expect_within`] the usual wait.
    async fn expect(&mut self, needle: &str) -> String {
        self.expect_within(needle, WAIT).await
    }

    /// Reads for `d` and returns whatever new text arrived (not consumed).
    async fn collect_for(&mut self, d: Duration) -> String {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.is_closed() {
            self.read_some(until).await;
        }
        let pos = *self.pos_mut();
        self.text()[pos..].to_string()
    }

    /// Waits for the proxy to close the connection.
    async fn expect_closed(&mut self) {
        let until = Instant::now() + WAIT;
        while !self.is_closed() {
            let pos = *self.pos_mut();
            assert!(
                Instant::now() < until,
                "connection not closed; text:\n{}",
                &self.text()[pos..]
            );
            self.read_some(until).await;
        }
    }

    /// Asserts the connection stays open for `d`.
    async fn expect_open_for(&mut self, d: Duration) {
        self.collect_for(d).await;
        assert!(
            !self.is_closed(),
            "connection closed; text:\n{}",
            self.text()
        );
    }

    /// After a login line was typed: waits for the game's answer, then
    /// until the proxy knows the login. The proxy confirms a login with a
    /// marker it sends right after the game's first answer; a command sent
    /// now is answered after that marker, so once its answer is here the
    /// proxy knows the login.
    async fn logged_in(&mut self) {
        self.expect("Last connect was from").await;
        self.send("think login-settled").await;
        self.expect("login-settled").await;
    }

    /// Logs in as `user` on the connect screen and waits until the proxy
    /// knows it.
    async fn login(&mut self, user: &str, pass: &str) {
        self.expect("connect").await;
        self.send(&format!("connect {user} {pass}")).await;
        self.logged_in().await;
    }
}

/// One way of carrying the player's bytes.
pub trait Wire {
    /// The next bytes from the proxy; `None` when closed.
    fn recv(&mut self) -> impl Future<Output = Option<Vec<u8>>>;
    /// Sends bytes (a line, with its CRLF).
    fn send_bytes(&mut self, b: &[u8]) -> impl Future<Output = ()>;
}

/// The next bytes of a byte stream; `None` when it closed or failed.
pub async fn read_chunk(r: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 65536];
    match r.read(&mut buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
    }
}

/// Plain telnet over TCP.
pub struct PlainWire(pub TcpStream);

impl Wire for PlainWire {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        read_chunk(&mut self.0).await
    }
    async fn send_bytes(&mut self, b: &[u8]) {
        self.0.write_all(b).await.expect("send to proxy");
    }
}

/// A player's connection over a [`Wire`], with everything received kept
/// (telnet removed in `text`, raw in `raw`).
pub struct Conn<W> {
    pub w: W,
    pub raw: Vec<u8>,
    pub text: String,
    /// How much of `raw` has been turned into `text` (a telnet sequence cut
    /// by a read waits for the next one).
    stripped: usize,
    /// Position in `text` up to which `expect` has matched.
    pub pos: usize,
    pub closed: bool,
}

impl<W: Wire> Conn<W> {
    pub fn new(w: W) -> Self {
        Conn {
            w,
            raw: Vec::new(),
            text: String::new(),
            stripped: 0,
            pos: 0,
            closed: false,
        }
    }

    /// Sends bytes as they are.
    pub async fn send_raw(&mut self, b: &[u8]) {
        self.w.send_bytes(b).await;
    }
}

impl<W: Wire> Expect for Conn<W> {
    fn text(&self) -> &str {
        &self.text
    }

    fn pos_mut(&mut self) -> &mut usize {
        &mut self.pos
    }

    fn is_closed(&self) -> bool {
        self.closed
    }

    async fn read_some(&mut self, until: Instant) {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.w.recv()).await {
            Ok(None) => self.closed = true,
            Ok(Some(b)) => {
                self.raw.extend_from_slice(&b);
                // Only the new bytes: re-stripping everything on every read
                // made tests with lots of output quadratic.
                let (plain, used) = strip_telnet_partial(&self.raw[self.stripped..]);
                self.stripped += used;
                self.text.push_str(&String::from_utf8_lossy(&plain));
            }
            Err(_) => {}
        }
    }

    async fn send(&mut self, line: &str) {
        self.w.send_bytes(format!("{line}\r\n").as_bytes()).await;
    }
}

/// A player over plain TCP.
pub type Client = Conn<PlainWire>;

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Self::connect_from(addr, "127.0.0.1").await
    }

    /// Connects from a chosen loopback address (e.g. 127.0.0.2).
    pub async fn connect_from(addr: SocketAddr, from: &str) -> Client {
        Self::connect_bound(addr, from.parse().expect("an IP address")).await
    }

    /// Connects from a chosen local address of either family (e.g. an
    /// IPv6 address added to `lo` in a test's network namespace).
    pub async fn connect_bound(addr: SocketAddr, from: std::net::IpAddr) -> Client {
        let sock = match from {
            std::net::IpAddr::V4(_) => TcpSocket::new_v4(),
            std::net::IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .unwrap();
        sock.bind(SocketAddr::new(from, 0)).unwrap();
        Conn::new(PlainWire(
            sock.connect(addr).await.expect("connect to proxy"),
        ))
    }

    /// The TCP connection.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.w.0
    }

    /// Connects through the proxy and logs in as `user`.
    pub async fn login(addr: SocketAddr, user: &str, pass: &str) -> Client {
        Self::login_with(addr, &format!("connect {user} {pass}")).await
    }

    /// Connects through the proxy, types `line` at the connect screen (a
    /// login [`Client::login`] does not type) and waits until the proxy
    /// knows the login.
    pub async fn login_with(addr: SocketAddr, line: &str) -> Client {
        let mut c = Client::connect(addr).await;
        c.expect("connect").await;
        c.send(line).await;
        c.logged_in().await;
        c
    }

    /// Resets the connection (SO_LINGER 0: an RST, as a dropped mobile
    /// link or a crashed client gives).
    pub fn reset(self) {
        socket2::SockRef::from(&self.w.0)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
}
