//! Telling supervisors where holdfast is: the `--ready-file` and systemd's
//! `NOTIFY_SOCKET` (`Type=notify`). After an upgrade the new process does
//! both, so a supervisor follows the new pid.

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Writes the ready file: the bound listen addresses, one a line, then
/// `pid <pid>`; written to a temporary file and renamed, so a reader
/// never sees half of it.
pub fn write_ready_file(path: &Path, addrs: &[SocketAddr]) -> io::Result<()> {
    let lines: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    write_ready_lines(path, &lines)
}

/// [`write_ready_file`] with lines given as text (front doors add
/// `tls ADDR`, `ws ADDR`, `wss ADDR` after the plain addresses).
pub fn write_ready_lines(path: &Path, lines: &[String]) -> io::Result<()> {
    let mut text: String = lines.iter().map(|a| format!("{a}\n")).collect();
    text.push_str(&format!("pid {}\n", std::process::id()));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Sends `state` (e.g. `READY=1`) to systemd if `NOTIFY_SOCKET` is set.
/// An abstract socket is written `@name`. Returns whether it was sent.
pub fn sd_notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))?;
    }
    Ok(true)
}

/// The new process after an upgrade: systemd follows its pid, and it is
/// ready.
pub fn sd_upgraded() -> io::Result<bool> {
    sd_notify(&format!("MAINPID={}\nREADY=1\n", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_file_has_addresses_and_pid() {
        let dir = std::env::temp_dir().join(format!("hf-ready-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("ready");
        write_ready_file(&f, &["127.0.0.1:4201".parse().unwrap()]).unwrap();
        let t = std::fs::read_to_string(&f).unwrap();
        assert_eq!(t, format!("127.0.0.1:4201\npid {}\n", std::process::id()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
