//! A player over any way in (TLS, WebSocket): everything received kept,
//! telnet removed in `text`, with the same `expect` helpers as the plain
//! client in `common`.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::common::{strip_telnet_partial, TempDir, WAIT};

/// One way of carrying the player's bytes.
pub trait Wire {
    /// The next bytes from the proxy; `None` when closed.
    fn recv(&mut self) -> impl Future<Output = Option<Vec<u8>>>;
    /// Sends bytes (a line, with its CRLF).
    fn send_bytes(&mut self, b: &[u8]) -> impl Future<Output = ()>;
}

/// Telnet over TLS.
pub struct TlsWire(pub tokio_rustls::client::TlsStream<TcpStream>);

impl Wire for TlsWire {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        match self.0.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(buf)
            }
        }
    }
    async fn send_bytes(&mut self, b: &[u8]) {
        self.0.write_all(b).await.expect("send over TLS");
        self.0.flush().await.expect("flush TLS");
    }
}

/// Plain telnet over TCP.
pub struct PlainWire(pub TcpStream);

impl Wire for PlainWire {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65536];
        match self.0.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(buf)
            }
        }
    }
    async fn send_bytes(&mut self, b: &[u8]) {
        self.0.write_all(b).await.expect("send over TCP");
    }
}

/// A player's connection over a [`Wire`].
pub struct Conn<W> {
    pub w: W,
    pub raw: Vec<u8>,
    pub text: String,
    stripped: usize,
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

    pub async fn send(&mut self, line: &str) {
        self.w.send_bytes(format!("{line}\r\n").as_bytes()).await;
    }

    async fn read_some(&mut self, until: Instant) {
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.w.recv()).await {
            Ok(None) => self.closed = true,
            Ok(Some(b)) => {
                self.raw.extend_from_slice(&b);
                let (plain, used) = strip_telnet_partial(&self.raw[self.stripped..]);
                self.stripped += used;
                self.text.push_str(&String::from_utf8_lossy(&plain));
            }
            Err(_) => {}
        }
    }

    pub async fn expect_within(&mut self, needle: &str, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            if let Some(i) = self.text[self.pos..].find(needle) {
                let seen = self.text[self.pos..self.pos + i + needle.len()].to_string();
                self.pos += i + needle.len();
                return seen;
            }
            if self.closed || Instant::now() >= until {
                panic!(
                    "did not see {needle:?} within {within:?} (closed: {}); after last match:\n{}",
                    self.closed,
                    &self.text[self.pos..]
                );
            }
            self.read_some(until).await;
        }
    }

    pub async fn expect(&mut self, needle: &str) -> String {
        self.expect_within(needle, WAIT).await
    }

    pub async fn expect_open_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.closed {
            self.read_some(until).await;
        }
        assert!(!self.closed, "connection closed; text:\n{}", self.text);
    }

    pub async fn expect_closed(&mut self) {
        let until = Instant::now() + WAIT;
        while !self.closed {
            assert!(
                Instant::now() < until,
                "not closed:\n{}",
                &self.text[self.pos..]
            );
            self.read_some(until).await;
        }
    }

    /// Logs in as `user` on the connect screen and waits until the proxy
    /// knows it.
    pub async fn login(&mut self, user: &str, pass: &str) {
        self.expect("connect").await;
        self.send(&format!("connect {user} {pass}")).await;
        self.expect("Last connect was from").await;
        self.send("think login-settled").await;
        self.expect("login-settled").await;
    }
}

/// Runs openssl in `dir`.
pub fn openssl(dir: &TempDir, args: &[&str]) {
    let st = std::process::Command::new("openssl")
        .args(args)
        .current_dir(&dir.0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(st.success(), "openssl {args:?}");
}

/// Makes a test CA (`ca.pem`) once per directory.
pub fn make_ca(dir: &TempDir) {
    if dir.path("ca.pem").exists() {
        return;
    }
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=holdfast test CA",
        ],
    );
    std::fs::write(
        dir.path("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
}

/// Makes `NAME.pem` and `NAME.key`, a server certificate for 127.0.0.1
/// signed by the test CA.
pub fn make_cert(dir: &TempDir, name: &str) {
    make_ca(dir);
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let pem = format!("{name}.pem");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// The DER of the first certificate in a PEM file.
pub fn cert_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// A rustls client config that trusts the test CA in `dir`.
pub fn client_config(dir: &TempDir) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(dir.path("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Connects with TLS to `addr` from `from` (a loopback address); returns
/// the stream and the certificate the proxy presented.
pub async fn tls_connect(
    dir: &TempDir,
    addr: std::net::SocketAddr,
    from: &str,
) -> (TlsWire, Vec<u8>) {
    try_tls_connect(dir, addr, from)
        .await
        .expect("TLS handshake")
}

/// [`tls_connect`], `None` if the handshake fails.
pub async fn try_tls_connect(
    dir: &TempDir,
    addr: std::net::SocketAddr,
    from: &str,
) -> Option<(TlsWire, Vec<u8>)> {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let tcp = sock.connect(addr).await.expect("connect to proxy");
    tcp.set_nodelay(true).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let s = tokio_rustls::TlsConnector::from(client_config(dir))
        .connect(name, tcp)
        .await
        .ok()?;
    let cert = s.get_ref().1.peer_certificates()?[0].to_vec();
    Some((TlsWire(s), cert))
}

/// A WebSocket player; `text` sends text frames, else binary.
pub struct WsWire<S = TcpStream> {
    pub ws: tokio_tungstenite::WebSocketStream<S>,
    pub text: bool,
    /// The close frame the proxy sent, if any: (code, reason).
    pub closed_with: Option<(u16, String)>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Wire for WsWire<S> {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            match self.ws.next().await? {
                Ok(Message::Binary(b)) => return Some(b.to_vec()),
                Ok(Message::Text(t)) => return Some(t.as_bytes().to_vec()),
                Ok(Message::Close(f)) => {
                    self.closed_with = f.map(|f| (u16::from(f.code), f.reason.to_string()));
                    return None;
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }
    async fn send_bytes(&mut self, b: &[u8]) {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let m = if self.text {
            Message::text(String::from_utf8(b.to_vec()).unwrap())
        } else {
            Message::binary(b.to_vec())
        };
        self.ws.send(m).await.expect("send over WebSocket");
    }
}

/// Opens a WebSocket to `addr` from `from`, offering `protocols` and
/// sending `headers`; returns the socket and the subprotocol chosen.
pub async fn ws_connect(
    addr: std::net::SocketAddr,
    from: &str,
    protocols: &[&str],
    headers: &[(&str, &str)],
) -> (
    tokio_tungstenite::WebSocketStream<TcpStream>,
    Option<String>,
) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let tcp = sock.connect(addr).await.expect("connect to proxy");
    tcp.set_nodelay(true).unwrap();
    let mut req = format!("ws://{addr}/").into_client_request().unwrap();
    if !protocols.is_empty() {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            protocols.join(", ").parse().unwrap(),
        );
    }
    for (k, v) in headers {
        let name: tokio_tungstenite::tungstenite::http::HeaderName = k.parse().unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("WebSocket handshake");
    let proto = resp
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().unwrap().to_string());
    (ws, proto)
}

/// A WebSocket player, as a [`Conn`].
pub async fn ws_player(
    addr: std::net::SocketAddr,
    from: &str,
    protocols: &[&str],
    headers: &[(&str, &str)],
) -> (Conn<WsWire>, Option<String>) {
    let (ws, proto) = ws_connect(addr, from, protocols, headers).await;
    let text = proto.is_none();
    (
        Conn::new(WsWire {
            ws,
            text,
            closed_with: None,
        }),
        proto,
    )
}

/// A WebSocket player over TLS (`wss_addrs`), on the telnet subprotocol.
pub async fn wss_player(
    dir: &TempDir,
    addr: std::net::SocketAddr,
) -> Conn<WsWire<tokio_rustls::client::TlsStream<TcpStream>>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let (TlsWire(tls), _) = tls_connect(dir, addr, "127.0.0.1").await;
    let mut req = format!("wss://{addr}/").into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "telnet.mudstandards.org".parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::client_async(req, tls)
        .await
        .expect("WebSocket handshake over TLS");
    Conn::new(WsWire {
        ws,
        text: false,
        closed_with: None,
    })
}
