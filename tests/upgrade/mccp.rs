//! A player that takes the proxy's MCCP2 offer (every time it is made)
//! and inflates what comes, for the upgrade tests: a stream that ends
//! mid-way, garbage after it or a plain byte inside it fails the decode
//! or the text checks.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{strip_telnet, WAIT};

const MCCP_START: &[u8] = b"\xff\xfa\x56\xff\xf0";
const MCCP_OFFER: &[u8] = b"\xff\xfb\x56";

pub struct MccpPlayer {
    stream: tokio::net::TcpStream,
    /// Decoded bytes, telnet included.
    plain: Vec<u8>,
    z: Option<flate2::Decompress>,
    /// Compressed streams started and cleanly ended.
    pub started: usize,
    pub ended: usize,
    pub offers_taken: usize,
    /// The first decode error, if any.
    broken: Option<String>,
}

impl MccpPlayer {
    /// Connects and logs in as Alice.
    pub async fn login(addr: SocketAddr) -> MccpPlayer {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut p = MccpPlayer {
            stream,
            plain: Vec::new(),
            z: None,
            started: 0,
            ended: 0,
            offers_taken: 0,
            broken: None,
        };
        p.until("connect").await;
        p.send("connect Alice alicepw").await;
        p.until("Last connect was from").await;
        p
    }

    pub async fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    /// Everything decoded so far, telnet removed.
    pub fn text(&self) -> String {
        strip_telnet(&self.plain)
    }

    fn decode(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.broken.is_none() {
            match &mut self.z {
                // Plain: up to a compression start (never split by the
                // proxy: it sends it at the end of a write).
                None => match data.windows(MCCP_START.len()).position(|w| w == MCCP_START) {
                    Some(i) => {
                        self.plain.extend_from_slice(&data[..i]);
                        data = &data[i + MCCP_START.len()..];
                        self.z = Some(flate2::Decompress::new(true));
                        self.started += 1;
                    }
                    None => {
                        self.plain.extend_from_slice(data);
                        data = &[];
                    }
                },
                Some(z) => {
                    let mut out = vec![0u8; 64 * 1024];
                    let before = (z.total_in(), z.total_out());
                    match z.decompress(data, &mut out, flate2::FlushDecompress::Sync) {
                        Ok(st) => {
                            let used = (z.total_in() - before.0) as usize;
                            let made = (z.total_out() - before.1) as usize;
                            self.plain.extend_from_slice(&out[..made]);
                            data = &data[used..];
                            if st == flate2::Status::StreamEnd {
                                self.z = None;
                                self.ended += 1;
                            }
                        }
                        Err(e) => self.broken = Some(e.to_string()),
                    }
                }
            }
        }
    }

    /// Reads for up to `within` (answering each MCCP2 offer) or until
    /// `needle`, if given, is in the text.
    pub async fn read_for(&mut self, needle: Option<&str>, within: Duration) {
        let t0 = Instant::now();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if needle.is_some_and(|n| self.text().contains(n)) || self.broken.is_some() {
                return;
            }
            let Some(left) = within.checked_sub(t0.elapsed()) else {
                return;
            };
            let n = match tokio::time::timeout(left, self.stream.read(&mut buf)).await {
                Err(_) => return,
                Ok(r) => r.unwrap(),
            };
            assert!(n > 0, "closed; got:\n{}", self.text());
            self.decode(&buf[..n]);
            let offers = self
                .plain
                .windows(MCCP_OFFER.len())
                .filter(|w| *w == MCCP_OFFER)
                .count();
            while self.offers_taken < offers {
                self.offers_taken += 1;
                self.stream.write_all(b"\xff\xfd\x56").await.unwrap();
            }
        }
    }

    /// Reads (answering each MCCP2 offer) until `needle` is in the text;
    /// fails on a stream that does not decode.
    pub async fn until(&mut self, needle: &str) {
        self.read_for(Some(needle), WAIT * 2).await;
        assert!(self.broken.is_none(), "stream broken: {:?}", self.broken);
        assert!(
            self.text().contains(needle),
            "no {needle:?}; got:\n{}",
            self.text()
        );
    }
}
