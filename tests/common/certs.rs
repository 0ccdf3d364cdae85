//! Throw-away certificates for the TLS tests, made with openssl in a
//! test's directory: a test CA (`ca.pem`, `ca.key`) and server
//! certificates for 127.0.0.1 signed by it.

use std::process::{Command, Stdio};

use super::TempDir;

/// The kind of key to make.
#[derive(Clone, Copy)]
pub enum Key {
    /// P-256.
    Ec,
    /// RSA, 2048 bits.
    Rsa,
}

impl Key {
    /// `openssl req` arguments for a new key of this kind.
    fn newkey(self) -> &'static [&'static str] {
        match self {
            Key::Ec => &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
            Key::Rsa => &["-newkey", "rsa:2048"],
        }
    }
}

/// Runs openssl in `dir`.
pub fn openssl(dir: &TempDir, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(&dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(st.success(), "openssl {args:?}");
}

/// Makes a test CA (`ca.pem`) with a `key` key once per directory.
pub fn make_ca(dir: &TempDir, key: Key) {
    if dir.path("ca.pem").exists() {
        return;
    }
    let args = [
        &["req", "-x509"],
        key.newkey(),
        &[
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
    ]
    .concat();
    openssl(dir, &args);
    std::fs::write(
        dir.path("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
}

/// Makes `NAME.pem` and `NAME.key`, a server certificate for 127.0.0.1
/// with a P-256 key, signed by the test CA.
pub fn make_cert(dir: &TempDir, name: &str) {
    make_cert_with(dir, name, Key::Ec);
}

/// [`make_cert`] with a `key` key (and the CA's, if this makes it).
pub fn make_cert_with(dir: &TempDir, name: &str, key: Key) {
    make_ca(dir, key);
    let (pem, csr) = (format!("{name}.pem"), format!("{name}.csr"));
    let keyfile = format!("{name}.key");
    let args = [
        &["req"],
        key.newkey(),
        &[
            "-nodes",
            "-keyout",
            &keyfile,
            "-out",
            &csr,
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat();
    openssl(dir, &args);
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
