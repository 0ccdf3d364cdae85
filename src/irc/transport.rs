//! The byte stream to the IRC server: plain TCP or TLS.
//!
//! TLS is rustls with the ring provider (the stack async-nats already
//! builds, so the binary carries one TLS implementation and the build
//! needs no C toolchain). Trust comes from the system's roots
//! (rustls-native-certs: what the operator's `update-ca-certificates`
//! manages, unlike a root list frozen into the binary) or from
//! `tls_ca_file` for a private network's CA or a self-signed server.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tracing::warn;

use crate::config::Irc;

/// How long a TCP connect plus TLS handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Anything the relay can read lines from and write lines to.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Connects to `cfg.server`, with TLS if configured.
pub async fn connect(cfg: &Irc) -> anyhow::Result<Box<dyn Io>> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(cfg))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {} timed out", cfg.server))?
}

async fn connect_inner(cfg: &Irc) -> anyhow::Result<Box<dyn Io>> {
    let tcp = TcpStream::connect(&cfg.server)
        .await
        .with_context(|| format!("cannot connect to {}", cfg.server))?;
    let _ = tcp.set_nodelay(true);
    if !cfg.tls {
        return Ok(Box::new(tcp));
    }
    let host = host_of(&cfg.server);
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .with_context(|| format!("{host:?} is not a valid TLS server name"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(cfg)?));
    let tls = connector
        .connect(name, tcp)
        .await
        .with_context(|| format!("TLS handshake with {} failed", cfg.server))?;
    Ok(Box::new(tls))
}

/// The host part of `host:port` (`[::1]:6697` gives `::1`).
pub fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map(|(h, _)| h).unwrap_or(server);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn tls_config(cfg: &Irc) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS set-up")?;
    if cfg.tls_insecure {
        warn!(server = %cfg.server, "irc.tls_insecure: the server's certificate is not checked");
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = &cfg.tls_ca_file {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect())
            .with_context(|| format!("cannot read certificates from {}", path.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        anyhow::ensure!(added > 0, "no usable certificate in {}", path.display());
    } else {
        let native = rustls_native_certs::load_native_certs();
        for e in &native.errors {
            warn!(err = %e, "while loading the system's CA certificates");
        }
        roots.add_parsable_certificates(native.certs);
        anyhow::ensure!(
            !roots.is_empty(),
            "no CA certificates found on this system; install ca-certificates or set irc.tls_ca_file"
        );
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `tls_insecure`: accepts any certificate but still checks the handshake
/// signatures (so the session is encrypted, just not authenticated).
#[derive(Debug)]
pub(crate) struct NoVerify(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("irc.libera.chat:6697"), "irc.libera.chat");
        assert_eq!(host_of("[::1]:6697"), "::1");
        assert_eq!(host_of("127.0.0.1:6667"), "127.0.0.1");
    }
}
