//! The ways in besides plain TCP, as [`Wire`]s for `common`'s [`Conn`]
//! (TLS, WebSocket, WebSocket over TLS), trusting the test CA of
//! `common::certs`.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::common::player::read_chunk;
use crate::common::{Conn, TempDir, Wire};

/// Telnet over TLS.
pub struct TlsWire(pub tokio_rustls::client::TlsStream<TcpStream>);

impl Wire for TlsWire {
    async fn recv(&mut self) -> Option<Vec<u8>> {
        read_chunk(&mut self.0).await
    }
    async fn send_bytes(&mut self, b: &[u8]) {
        self.0.write_all(b).await.expect("send over TLS");
        self.0.flush().await.expect("flush TLS");
    }
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
