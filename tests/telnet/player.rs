//! A scripted MUD client for the telnet tests: answers negotiations the
//! way real clients do (NAWS, TTYPE, GMCP, EOR, MCCP2), undoes MCCP2 with
//! its own zlib (flate2, independent of the proxy's code) and keeps
//! everything it saw, so tests can assert on the wire, the decoded telnet
//! stream, the negotiations and the text.

use std::time::Instant;

use flate2::{Decompress, FlushDecompress, Status};
use holdfast::telnet::{self, opt, Parser, TelnetEvent, Verb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{strip_telnet, Expect, WAIT};

/// What the client says yes to.
#[derive(Clone)]
pub struct Caps {
    /// Window size reported when asked for NAWS; `None` refuses NAWS.
    pub naws: Option<(u16, u16)>,
    /// Terminal type; `None` refuses TTYPE.
    pub ttype: Option<&'static str>,
    /// GMCP `Core.Hello` payload; `None` refuses GMCP.
    pub gmcp_hello: Option<&'static str>,
    /// Accept MCCP2.
    pub mccp: bool,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            naws: Some((132, 50)),
            ttype: Some("TESTCLIENT"),
            gmcp_hello: Some(r#"Core.Hello {"client":"testclient","version":"1.0"}"#),
            mccp: true,
        }
    }
}

/// One thing received, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    Neg(Verb, u8),
    Sub(u8, Vec<u8>),
    Cmd(u8),
}

pub struct Player {
    stream: TcpStream,
    caps: Caps,
    parser: Parser,
    zlib: Option<Decompress>,
    /// Bytes as they came off the socket.
    pub wire: Vec<u8>,
    /// The telnet stream with MCCP2 undone (what the client "sees").
    pub plain: Vec<u8>,
    /// Negotiations, subnegotiations and commands received.
    pub got: Vec<Got>,
    /// Data with telnet removed.
    pub text: String,
    pos: usize,
    /// Compressed streams started / ended.
    pub mccp_starts: usize,
    pub mccp_ends: usize,
    pub closed: bool,
}

impl Player {
    pub async fn connect(addr: std::net::SocketAddr, caps: Caps) -> Player {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        Player {
            stream,
            caps,
            parser: Parser::new(64 * 1024),
            zlib: None,
            wire: Vec::new(),
            plain: Vec::new(),
            got: Vec::new(),
            text: String::new(),
            pos: 0,
            mccp_starts: 0,
            mccp_ends: 0,
            closed: false,
        }
    }

    pub async fn send_raw(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.expect("send to proxy");
    }

    pub async fn send_gmcp(&mut self, msg: &str) {
        let mut b = Vec::new();
        telnet::write_subnegotiation(opt::GMCP, msg.as_bytes(), &mut b);
        self.send_raw(&b).await;
    }

    /// How many times `g` was received.
    pub fn count(&self, g: &Got) -> usize {
        self.got.iter().filter(|x| *x == g).count()
    }

    /// Undoes MCCP2, parses, collects; returns what to answer.
    fn decode(&mut self, mut data: &[u8]) -> Vec<u8> {
        let mut reply = Vec::new();
        loop {
            if let Some(z) = &mut self.zlib {
                let mut out = vec![0u8; 64 * 1024];
                let (in0, out0) = (z.total_in(), z.total_out());
                let st = z
                    .decompress(data, &mut out, FlushDecompress::Sync)
                    .unwrap_or_else(|e| panic!("the player got a corrupt zlib stream: {e}"));
                let used = (z.total_in() - in0) as usize;
                let made = (z.total_out() - out0) as usize;
                data = &data[used..];
                self.take_plain(&out[..made], &mut reply);
                if st == Status::StreamEnd {
                    self.zlib = None;
                    self.mccp_ends += 1;
                    continue;
                }
                if data.is_empty() && made < out.len() {
                    return reply;
                }
                assert!(used > 0 || made > 0, "zlib made no progress");
            } else {
                if data.is_empty() {
                    return reply;
                }
                let n = self.take_plain_until_mccp(data, &mut reply);
                data = &data[n..];
            }
        }
    }

    /// Parses uncompressed wire bytes; stops after an MCCP2 start.
    fn take_plain_until_mccp(&mut self, data: &[u8], reply: &mut Vec<u8>) -> usize {
        let mut evs = Vec::new();
        let mut start = false;
        let n = self.parser.feed(data, |ev| {
            if matches!(
                ev,
                TelnetEvent::Subnegotiation {
                    option: opt::MCCP2,
                    ..
                }
            ) {
                start = true;
                return false;
            }
            evs.push(owned(&ev));
            true
        });
        self.plain.extend_from_slice(&data[..n]);
        for e in evs {
            self.handle(e, reply);
        }
        if start {
            assert!(
                self.caps.mccp,
                "compression started though the client refused MCCP2"
            );
            self.got.push(Got::Sub(opt::MCCP2, Vec::new()));
            self.mccp_starts += 1;
            self.zlib = Some(Decompress::new(true));
        }
        n
    }

    fn take_plain(&mut self, data: &[u8], reply: &mut Vec<u8>) {
        self.plain.extend_from_slice(data);
        let mut evs = Vec::new();
        self.parser.feed(data, |ev| {
            evs.push(owned(&ev));
            true
        });
        for e in evs {
            self.handle(e, reply);
        }
    }

    fn handle(&mut self, e: Ev, reply: &mut Vec<u8>) {
        match e {
            Ev::Data(d) => {
                self.text.push_str(&String::from_utf8_lossy(&d));
            }
            Ev::Got(g) => {
                let first = self.count(&g) == 0;
                self.got.push(g.clone());
                match g {
                    Got::Neg(v, o) if first => self.answer(v, o, reply),
                    Got::Sub(opt::TTYPE, d) if d == [1] => {
                        let t = self.caps.ttype.unwrap_or("UNKNOWN");
                        let mut p = vec![0u8];
                        p.extend_from_slice(t.as_bytes());
                        telnet::write_subnegotiation(opt::TTYPE, &p, reply);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Answers a question once, like a client that tracks option state.
    fn answer(&self, v: Verb, o: u8, reply: &mut Vec<u8>) {
        let c = &self.caps;
        match v {
            Verb::Do => {
                let yes = match o {
                    opt::NAWS => c.naws.is_some(),
                    opt::TTYPE => c.ttype.is_some(),
                    _ => false,
                };
                telnet::write_negotiation(if yes { Verb::Will } else { Verb::Wont }, o, reply);
                if let (opt::NAWS, Some((w, h))) = (o, c.naws) {
                    let mut d = w.to_be_bytes().to_vec();
                    d.extend_from_slice(&h.to_be_bytes());
                    telnet::write_subnegotiation(opt::NAWS, &d, reply);
                }
            }
            Verb::Will => {
                let yes = match o {
                    opt::EOR_OPT => true,
                    opt::GMCP => c.gmcp_hello.is_some(),
                    opt::MCCP2 => c.mccp,
                    _ => false,
                };
                telnet::write_negotiation(if yes { Verb::Do } else { Verb::Dont }, o, reply);
                if let (opt::GMCP, Some(h)) = (o, c.gmcp_hello) {
                    telnet::write_subnegotiation(opt::GMCP, h.as_bytes(), reply);
                }
            }
            Verb::Wont | Verb::Dont => {}
        }
    }

    /// Waits until the decoded telnet stream satisfies `pred`.
    pub async fn expect_plain(&mut self, what: &str, pred: impl Fn(&[u8]) -> bool) {
        let until = Instant::now() + WAIT;
        while !pred(&self.plain) {
            if self.closed || Instant::now() >= until {
                panic!(
                    "never saw {what}; stream ends with {:?}",
                    strip_telnet(&self.plain[self.plain.len().saturating_sub(200)..])
                );
            }
            self.read_some(until).await;
        }
    }

    /// Waits until `g` has been received `n` times.
    pub async fn expect_got(&mut self, g: Got, n: usize) {
        let until = Instant::now() + WAIT;
        while self.count(&g) < n {
            if self.closed || Instant::now() >= until {
                panic!("never got {g:?} x{n}; got {:?}", self.got);
            }
            self.read_some(until).await;
        }
    }

    /// Connects and logs in as `user`.
    pub async fn login(addr: std::net::SocketAddr, caps: Caps, user: &str, pw: &str) -> Player {
        let mut p = Player::connect(addr, caps).await;
        p.expect("connect <name> <password>").await;
        p.send(&format!("connect {user} {pw}")).await;
        p.expect("Last connect was from").await;
        p
    }
}

impl Expect for Player {
    fn text(&self) -> &str {
        &self.text
    }

    fn pos_mut(&mut self) -> &mut usize {
        &mut self.pos
    }

    fn is_closed(&self) -> bool {
        self.closed
    }

    /// Reads once (until `until`); answers what needs answering.
    async fn read_some(&mut self, until: Instant) {
        let mut buf = [0u8; 16384];
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
            Ok(Ok(n)) => {
                self.wire.extend_from_slice(&buf[..n]);
                let reply = self.decode(&buf[..n]);
                if !reply.is_empty() {
                    self.send_raw(&reply).await;
                }
            }
            Err(_) => {}
        }
    }

    async fn send(&mut self, line: &str) {
        let mut b = Vec::new();
        telnet::escape_iac(line.as_bytes(), &mut b);
        b.extend_from_slice(b"\r\n");
        self.send_raw(&b).await;
    }
}

enum Ev {
    Data(Vec<u8>),
    Got(Got),
}

fn owned(e: &TelnetEvent<'_>) -> Ev {
    match e {
        TelnetEvent::Data(d) => Ev::Data(d.to_vec()),
        TelnetEvent::Command(c) => Ev::Got(Got::Cmd(*c)),
        TelnetEvent::Negotiation { verb, option } => Ev::Got(Got::Neg(*verb, *option)),
        TelnetEvent::Subnegotiation { option, data } => Ev::Got(Got::Sub(*option, data.to_vec())),
    }
}
