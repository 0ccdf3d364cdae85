//! `TlsConn` against rustls's own client over loopback: both protocol
//! versions, output larger than a record, a record in one-byte pieces,
//! both ways of closing, hostile records, and no buffer held while idle.

use std::io::Write as _;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

use super::*;
// Trusts any certificate (the tests are about the connection, not PKI)
// but checks the handshake's signatures: the IRC client's `tls_insecure`.
use crate::irc::transport::NoVerify;

/// A self-signed certificate and its key (made by `openssl`, as the
/// integration tests make theirs), once per test process.
fn server_config() -> Arc<ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    static PAIR: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    let (cert, key) = PAIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("hf-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let st = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "k.pem",
                "-out",
                "c.pem",
            ])
            .current_dir(&dir)
            .output()
            .expect("openssl runs");
        assert!(st.status.success(), "{st:?}");
        let pair = (
            std::fs::read(dir.join("c.pem")).unwrap(),
            std::fs::read(dir.join("k.pem")).unwrap(),
        );
        let _ = std::fs::remove_dir_all(&dir);
        pair
    });
    let certs = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    Arc::new(cfg)
}

fn client_config(version: &'static rustls::SupportedProtocolVersion) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[version])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        .with_no_client_auth();
    Arc::new(cfg)
}

fn name() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap()
}

/// A connected pair: the server's `TlsConn` after its handshake, and a
/// rustls client.
async fn pair(
    version: &'static rustls::SupportedProtocolVersion,
) -> (TlsConn, tokio_rustls::client::TlsStream<TcpStream>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tokio_rustls::TlsConnector::from(client_config(version))
            .connect(name(), tcp)
            .await
            .unwrap()
    });
    let (tcp, _) = l.accept().await.unwrap();
    let mut server = TlsConn::new(server_config(), tcp).unwrap();
    server.handshake().await.unwrap();
    (server, client.await.unwrap())
}

/// Reads from the server until `n` bytes came; what came.
async fn server_reads(s: &mut TlsConn, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        let k = std::future::poll_fn(|cx| s.poll_read_into(cx, &mut got))
            .await
            .unwrap();
        assert!(k > 0, "end of stream after {} bytes", got.len());
    }
    got
}

fn holds_nothing(s: &TlsConn) {
    assert_eq!(s.incoming.capacity(), 0, "receive buffer");
    assert_eq!(s.outgoing.capacity(), 0, "send buffer");
    assert_eq!(s.plain.capacity(), 0, "plaintext buffer");
}

async fn both_ways(version: &'static rustls::SupportedProtocolVersion) {
    let (mut s, mut c) = pair(version).await;
    holds_nothing(&s);
    c.write_all(b"connect Alice alicepw\r\n").await.unwrap();
    c.flush().await.unwrap();
    assert_eq!(server_reads(&mut s, 23).await, b"connect Alice alicepw\r\n");
    holds_nothing(&s);

    // More than a record, and more than the socket takes at once: the
    // writer waits, then everything arrives in order.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let reader = tokio::spawn(async move {
        let mut got = vec![0u8; 3_000_000];
        c.read_exact(&mut got).await.unwrap();
        (c, got)
    });
    s.write_all(&big).await.unwrap();
    s.flush().await.unwrap();
    let (mut c, got) = reader.await.unwrap();
    assert!(got == big, "the output arrived whole and in order");
    holds_nothing(&s);

    // The server closes: close_notify, then a clean end for the client.
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    // The client closes too: a clean end for the server.
    c.shutdown().await.unwrap();
    let mut buf = Vec::new();
    let n = std::future::poll_fn(|cx| s.poll_read_into(cx, &mut buf))
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn tls13_carries_both_ways_and_holds_nothing_idle() {
    both_ways(&rustls::version::TLS13).await;
}

#[tokio::test]
async fn tls12_carries_both_ways_and_holds_nothing_idle() {
    both_ways(&rustls::version::TLS12).await;
}

/// A handshake and a record that come one byte at a time (a rustls
/// client without I/O makes the bytes): the part of a record is kept,
/// and freed once it is whole.
#[tokio::test]
async fn records_in_one_byte_pieces() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let mut cc =
            rustls::ClientConnection::new(client_config(&rustls::version::TLS13), name()).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        while cc.is_handshaking() {
            let mut out = Vec::new();
            cc.write_tls(&mut out).unwrap();
            for b in out {
                tcp.write_all(&[b]).await.unwrap();
            }
            if cc.is_handshaking() {
                let n = tcp.read(&mut buf).await.unwrap();
                assert!(n > 0);
                cc.read_tls(&mut &buf[..n]).unwrap();
                cc.process_new_packets().unwrap();
            }
        }
        cc.writer().write_all(b"look\r\n").unwrap();
        let mut out = Vec::new();
        while cc.wants_write() {
            cc.write_tls(&mut out).unwrap();
        }
        for b in out {
            tcp.write_all(&[b]).await.unwrap();
            tokio::task::yield_now().await;
        }
        // The end of the stream without close_notify (a FIN: the tickets
        // the server sent are unread, so a close would be a reset).
        tcp.shutdown().await.unwrap();
        tcp
    });
    let (tcp, _) = l.accept().await.unwrap();
    let mut s = TlsConn::new(server_config(), tcp).unwrap();
    s.handshake().await.unwrap();
    assert_eq!(server_reads(&mut s, 6).await, b"look\r\n");
    holds_nothing(&s);
    let _tcp = client.await.unwrap();
    // Cut without close_notify: an error, not a clean end.
    let mut buf = Vec::new();
    let r = std::future::poll_fn(|cx| s.poll_read_into(cx, &mut buf)).await;
    assert_eq!(r.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
}

/// A record header longer than TLS allows ends the connection at once,
/// whatever follows; so does a record of the largest size that does not
/// decrypt. Nothing is kept of either.
#[tokio::test]
async fn hostile_records_end_the_connection() {
    for header in [
        [0x17, 0x03, 0x03, 0xff, 0xff],
        [0x17, 0x03, 0x03, 0x47, 0x00],
    ] {
        let (mut s, c) = pair(&rustls::version::TLS13).await;
        let (mut tcp, _) = c.into_inner();
        let writer = tokio::spawn(async move {
            tcp.write_all(&header).await.unwrap();
            // Until the proxy closes (or 1 MiB, which it must not keep).
            for _ in 0..256 {
                if tcp.write_all(&[0x41; 4096]).await.is_err() {
                    break;
                }
            }
            tcp
        });
        let mut buf = Vec::new();
        let r = std::future::poll_fn(|cx| s.poll_read_into(cx, &mut buf)).await;
        assert_eq!(
            r.unwrap_err().kind(),
            io::ErrorKind::InvalidData,
            "{header:?}"
        );
        assert!(buf.is_empty());
        assert!(s.incoming.len() <= MAX_INCOMING);
        drop(s);
        drop(writer.await.unwrap());
    }
}

/// A client that stops mid-handshake is an error, not a session.
#[tokio::test]
async fn a_handshake_cut_short_fails() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let client = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        // The first bytes of a ClientHello's record, then the end.
        tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .unwrap();
        tcp.shutdown().await.unwrap();
        tcp
    });
    let (tcp, _) = l.accept().await.unwrap();
    let mut s = TlsConn::new(server_config(), tcp).unwrap();
    let e = s.handshake().await.unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert!(!s.sent_any());
    drop(client.await.unwrap());
}
