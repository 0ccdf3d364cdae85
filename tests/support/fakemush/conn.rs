//! One task per connection: reads input (telnet-parsed), runs commands, and
//! writes everything queued on the connection's channel, in order.

use crate::game::{Game, Out};
use crate::jlog::V;
use crate::limits::{Refusal, PREAUTH_MSG};
use crate::telnet::{self, Event, Parser};
use crate::telnet::{IAC, OPT_EOR, OPT_GMCP, OPT_MCCP2, OPT_NAWS, OPT_TTYPE};
use flate2::write::ZlibEncoder;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

pub enum Peer {
    Tcp(std::net::SocketAddr),
    Unix,
}

const SPAM_LINE: usize = 80;
const SPAM_CHUNK: usize = 819 * SPAM_LINE;

fn spam_buf() -> &'static [u8] {
    static BUF: OnceLock<Vec<u8>> = OnceLock::new();
    BUF.get_or_init(|| {
        let mut v = Vec::with_capacity(SPAM_CHUNK);
        for i in 0..SPAM_CHUNK / SPAM_LINE {
            for j in 0..SPAM_LINE - 2 {
                v.push(b'!' + ((i * 7 + j) % 94) as u8);
            }
            v.extend_from_slice(b"\r\n");
        }
        v
    })
}

struct Writer<W> {
    w: W,
    z: Option<ZlibEncoder<Vec<u8>>>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    async fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        match &mut self.z {
            Some(z) => {
                z.write_all(data)?;
                z.flush()?; // Z_SYNC_FLUSH
                self.w.write_all(z.get_ref()).await?;
                z.get_mut().clear();
                Ok(())
            }
            None => self.w.write_all(data).await,
        }
    }

    async fn out(&mut self, o: Out) -> std::io::Result<()> {
        match o {
            Out::Bytes(b) => self.put(&b).await,
            Out::Split(a, pause, b) => {
                self.put(&a).await?;
                self.w.flush().await?;
                tokio::time::sleep(pause).await;
                self.put(&b).await
            }
            Out::StartMccp => {
                if self.z.is_none() {
                    self.w
                        .write_all(&[IAC, telnet::SB, OPT_MCCP2, IAC, telnet::SE])
                        .await?;
                    self.z = Some(ZlibEncoder::new(
                        Vec::with_capacity(16 * 1024),
                        flate2::Compression::default(),
                    ));
                }
                Ok(())
            }
            Out::Bomb(mut n) => {
                if self.z.is_none() {
                    self.w
                        .write_all(&[IAC, telnet::SB, OPT_MCCP2, IAC, telnet::SE])
                        .await?;
                    self.z = Some(ZlibEncoder::new(
                        Vec::with_capacity(16 * 1024),
                        flate2::Compression::best(),
                    ));
                }
                let buf = spam_buf();
                while n >= SPAM_CHUNK as u64 {
                    self.put(buf).await?;
                    n -= SPAM_CHUNK as u64;
                }
                Ok(())
            }
            Out::Spam(mut n) => {
                let buf = spam_buf();
                while n >= SPAM_CHUNK as u64 {
                    self.put(buf).await?;
                    n -= SPAM_CHUNK as u64;
                }
                let n = n as usize;
                let full = n / SPAM_LINE * SPAM_LINE;
                let mut tail = buf[..full].to_vec();
                match n - full {
                    0 => {}
                    1 => tail.push(b'\n'),
                    t => {
                        tail.extend_from_slice(&buf[full..full + t - 2]);
                        tail.extend_from_slice(b"\r\n");
                    }
                }
                self.put(&tail).await
            }
            Out::Close(_) => Ok(()),
        }
    }

    async fn finish(&mut self) -> std::io::Result<()> {
        if let Some(z) = &mut self.z {
            z.try_finish()?;
            self.w.write_all(z.get_ref()).await?;
            z.get_mut().clear();
        }
        self.w.flush().await?;
        self.w.shutdown().await
    }
}

/// Telnet option negotiation state (only what is needed to avoid loops).
struct Neg {
    asked: [bool; 256],   // we sent DO
    offered: [bool; 256], // we sent WILL
    refused_him: [bool; 256],
    refused_us: [bool; 256],
    ttype_sent: bool,
    mccp_on: bool,
}

/// Reads the optional PennMUSH-style `IP^HOSTNAME\r\n` header (100 ms window).
/// Returns (host, leftover bytes), or None on EOF.
async fn read_header<R: AsyncRead + Unpin>(
    game: &Game,
    id: u64,
    rd: &mut R,
    deadline: Instant,
) -> Option<(Option<String>, Vec<u8>)> {
    let mut pending = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        if let Some(pos) = pending.iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&pending[..pos]).trim().to_string();
            if let Some((ip, host)) = line.split_once('^') {
                game.log.ev(
                    "header",
                    &[("conn", V::N(id)), ("ip", V::S(ip)), ("host", V::S(host))],
                );
                pending.drain(..=pos);
                let h = if ip.is_empty() { host } else { ip };
                return Some((Some(h.to_string()), pending));
            }
            return Some((None, pending));
        }
        if pending.len() > 1024 {
            return Some((None, pending));
        }
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Err(_) => return Some((None, pending)),
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            Ok(Ok(n)) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

pub async fn handle<S>(game: Arc<Game>, stream: S, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    game.live_tasks.fetch_add(1, Ordering::SeqCst);
    run(&game, stream, peer).await;
    game.live_tasks.fetch_sub(1, Ordering::SeqCst);
}

async fn run<S>(game: &Arc<Game>, stream: S, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let start = Instant::now();
    let id = game.next_conn_id();
    let (peer_str, trusted, mut host, is_unix) = match &peer {
        Peer::Tcp(a) => (
            a.to_string(),
            game.is_trusted(a.ip()),
            a.ip().to_string(),
            false,
        ),
        Peer::Unix => (
            "unix".to_string(),
            game.is_trusted(std::net::Ipv4Addr::LOCALHOST.into()),
            "localhost".to_string(),
            true,
        ),
    };
    game.log
        .ev("conn", &[("conn", V::N(id)), ("peer", V::S(&peer_str))]);
    let (mut rd, wr) = tokio::io::split(stream);
    let mut pending = Vec::new();
    if is_unix && game.cfg.penn_header {
        match read_header(game, id, &mut rd, start + Duration::from_millis(100)).await {
            None => {
                game.log
                    .ev("close", &[("conn", V::N(id)), ("why", V::S("eof"))]);
                return;
            }
            Some((h, rest)) => {
                if let Some(h) = h {
                    host = h;
                }
                pending = rest;
            }
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let ip = match &peer {
        Peer::Tcp(a) => Some(a.ip()),
        Peer::Unix => None,
    };
    if let Err(r) = game.register(id, tx.clone(), trusted, host, ip) {
        let why = match r {
            Refusal::Preauth => {
                let mut w = wr;
                let _ = w.write_all(format!("{PREAUTH_MSG}\r\n").as_bytes()).await;
                let _ = w.shutdown().await;
                "preauth"
            }
            Refusal::Rate => "rate",
        };
        game.log
            .ev("refused", &[("conn", V::N(id)), ("why", V::S(why))]);
        return;
    }
    let telnet_on = game.cfg.flavor.telnet();
    let mut neg = Neg {
        asked: [false; 256],
        offered: [false; 256],
        refused_him: [false; 256],
        refused_us: [false; 256],
        ttype_sent: false,
        mccp_on: false,
    };
    if telnet_on {
        neg.asked[OPT_NAWS as usize] = true;
        neg.asked[OPT_TTYPE as usize] = true;
        neg.offered[OPT_EOR as usize] = true;
        neg.offered[OPT_GMCP as usize] = true;
        neg.offered[OPT_MCCP2 as usize] = game.cfg.mccp;
    }
    let mut parser = Parser::new();
    let mut events = Vec::new();
    let mut w = Writer { w: wr, z: None };
    let mut buf = vec![0u8; 16 * 1024];
    parser.feed(&pending, &mut events);
    drop(pending);
    for e in events.drain(..) {
        input_event(game, id, &tx, &mut neg, e);
    }
    let why = loop {
        tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(Out::Close(why)) => break why,
                Some(o) => {
                    let spam = matches!(o, Out::Spam(_));
                    if w.out(o).await.is_err() {
                        break "eof";
                    }
                    if spam {
                        // Every byte is with the kernel (tests wait for it).
                        game.log.ev("spam_done", &[("conn", V::N(id))]);
                    }
                }
                None => break "eof",
            },
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => break "eof",
                Ok(n) => {
                    parser.feed(&buf[..n], &mut events);
                    for e in events.drain(..) {
                        input_event(game, id, &tx, &mut neg, e);
                    }
                }
            },
        }
    };
    game.disconnect(id, why);
    drop(tx);
    drop(rx);
    let _ = tokio::time::timeout(Duration::from_millis(500), w.finish()).await;
    if why != "eof" {
        // Lingering close: drain what the peer still sends so the kernel
        // does not answer with RST and destroy the data we just wrote.
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while let Ok(n) = rd.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

fn input_event(game: &Game, id: u64, tx: &mpsc::UnboundedSender<Out>, neg: &mut Neg, e: Event) {
    let telnet_on = game.cfg.flavor.telnet();
    let send = |v: Vec<u8>| {
        let _ = tx.send(Out::Bytes(v));
    };
    if telnet_on && crate::mssp::input(game, id, tx, &e) {
        return;
    }
    match e {
        Event::Line(l) => game.input(id, &l),
        Event::Will(o) => {
            let ou = o as usize;
            if telnet_on && (o == OPT_NAWS || o == OPT_TTYPE) {
                if !neg.asked[ou] {
                    neg.asked[ou] = true;
                    send(vec![IAC, telnet::DO, o]);
                }
                if o == OPT_TTYPE && !neg.ttype_sent {
                    neg.ttype_sent = true;
                    send(telnet::subneg(OPT_TTYPE, &[telnet::TTYPE_SEND]));
                }
            } else if !neg.refused_him[ou] {
                neg.refused_him[ou] = true;
                send(vec![IAC, telnet::DONT, o]);
            }
        }
        // The player agreeing to `echooff` (the game echoes, i.e. hides).
        Event::Do(1) => {}
        // MSSP (with --mssp): the game's own status, PLAYERS deliberately
        // wrong so a test can tell whose value it sees.
        Event::Do(70) if game.cfg.mssp => {
            let mut v = vec![IAC, telnet::SB, 70];
            for (k, val) in [
                ("NAME", "FakeMUSH"),
                ("CODEBASE", "fakemush 1.0"),
                ("PLAYERS", "999"),
            ] {
                v.push(1);
                v.extend_from_slice(k.as_bytes());
                v.push(2);
                v.extend_from_slice(val.as_bytes());
            }
            v.extend_from_slice(&[IAC, telnet::SE]);
            send(v);
        }
        Event::Do(o) => {
            let ou = o as usize;
            let ok =
                telnet_on && (o == OPT_EOR || o == OPT_GMCP || (o == OPT_MCCP2 && game.cfg.mccp));
            if ok {
                if !neg.offered[ou] {
                    neg.offered[ou] = true;
                    send(vec![IAC, telnet::WILL, o]);
                }
                if o == OPT_MCCP2 && !neg.mccp_on {
                    neg.mccp_on = true;
                    let _ = tx.send(Out::StartMccp);
                }
            } else if !neg.refused_us[ou] {
                neg.refused_us[ou] = true;
                send(vec![IAC, telnet::WONT, o]);
            }
        }
        Event::Wont(_) | Event::Dont(_) => {}
        Event::Sub(o, data) if telnet_on => match o {
            OPT_NAWS if data.len() >= 4 => {
                let w = u32::from(u16::from_be_bytes([data[0], data[1]]));
                let h = u32::from(u16::from_be_bytes([data[2], data[3]]));
                game.naws(id, w, h);
            }
            OPT_TTYPE if data.first() == Some(&telnet::TTYPE_IS) => {
                game.ttype(id, &String::from_utf8_lossy(&data[1..]));
            }
            OPT_GMCP => {
                let d = String::from_utf8_lossy(&data);
                game.gmcp(id, &d);
                if d == "Core.Ping" || d.starts_with("Core.Ping ") {
                    send(telnet::subneg(OPT_GMCP, b"Core.Ping"));
                }
            }
            _ => {}
        },
        Event::Sub(..) => {}
    }
}
