//! Passing sockets between processes in safe Rust: `SCM_RIGHTS` through
//! rustix's `sendmsg`/`recvmsg`, which hand back [`OwnedFd`]s.
//!
//! The upgrade socket is a `SOCK_SEQPACKET` socketpair, so each message
//! keeps its bounds and its descriptors arrive with it. Every descriptor
//! here is close-on-exec: the pair is created with `SOCK_CLOEXEC` and
//! received descriptors with `MSG_CMSG_CLOEXEC`. The one exception, on
//! purpose, is the new process's end of the pair, which `std::process`
//! places on the child's stdin (see [`super::old`]).
//!
//! Received descriptors are checked ([`kind`]) before use; a message whose
//! descriptors were cut short (`MSG_CTRUNC`) is an error, and anything
//! unexpected is closed by dropping its `OwnedFd`.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::net::{
    recvmsg, sendmsg, socketpair, sockopt, AddressFamily, RecvAncillaryBuffer,
    RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketFlags, SocketType,
};

/// Descriptors sent per message. Linux allows 253 (`SCM_MAX_FD`); staying
/// well below leaves room for other kernels' limits.
pub const MAX_FDS: usize = 200;
/// Data bytes per message: well under the default socket buffer, so one
/// message always fits.
pub const MAX_DATA: usize = 60 * 1024;

/// A private, close-on-exec `SOCK_SEQPACKET` Unix socket pair.
pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Sets both send and receive timeouts of a blocking socket.
pub fn set_timeout(sock: BorrowedFd<'_>, t: Duration) -> io::Result<()> {
    let t = Some(t.max(Duration::from_millis(1)));
    sockopt::set_socket_timeout(sock, sockopt::Timeout::Recv, t)?;
    sockopt::set_socket_timeout(sock, sockopt::Timeout::Send, t)?;
    Ok(())
}

/// Sends one message: `data` (at most [`MAX_DATA`] bytes) with `fds` (at
/// most [`MAX_FDS`]) attached.
pub fn send(sock: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    send_parts(sock, &[data], fds)
}

/// [`send`] with the message's bytes in parts (one message, no copy to
/// put them together).
pub fn send_parts(sock: BorrowedFd<'_>, parts: &[&[u8]], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > MAX_DATA || fds.len() > MAX_FDS || len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "upgrade message too large or empty",
        ));
    }
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other(
            "descriptors do not fit the control buffer",
        ));
    }
    let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    loop {
        match sendmsg(sock, &slices, &mut control, SendFlags::NOSIGNAL) {
            Ok(n) if n == len => return Ok(()),
            Ok(_) => return Err(io::Error::other("upgrade message sent in part")),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message into `buf` (cleared first; at most [`MAX_DATA`]
/// bytes) and the descriptors that came with it. `Ok(None)` is the end of
/// the stream (the other process closed its end or exited).
pub fn recv(sock: BorrowedFd<'_>, buf: &mut Vec<u8>) -> io::Result<Option<Vec<OwnedFd>>> {
    // Not cleared first: a buffer used before is zeroed only past what it
    // held (the message overwrites the rest, and is cut to its length).
    buf.resize(MAX_DATA, 0);
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let r = loop {
        match recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            r => break r?,
        }
    };
    // Take the descriptors first, so that they are closed on any error.
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    if r.flags.contains(ReturnFlags::CTRUNC) || r.flags.contains(ReturnFlags::TRUNC) {
        return Err(io::Error::other("upgrade message truncated"));
    }
    buf.truncate(r.bytes);
    if r.bytes == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some(fds))
}

/// What a received descriptor turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A listening TCP socket.
    TcpListener,
    /// A connected TCP socket.
    TcpStream,
    /// A connected Unix stream socket.
    UnixStream,
    /// Anything else (a file, a pipe, a datagram socket...).
    Other,
}

/// Finds out what `fd` is: a socket of which type (`SO_TYPE`, which
/// anything else refuses with `ENOTSOCK`), family (`SO_DOMAIN`),
/// listening or not (`SO_ACCEPTCONN`). Three calls a descriptor: an
/// upgrade checks twenty thousand of them while players wait.
pub fn kind(fd: impl AsFd) -> Kind {
    let fd = fd.as_fd();
    if sockopt::socket_type(fd).ok() != Some(SocketType::STREAM) {
        return Kind::Other;
    }
    let listening = sockopt::socket_acceptconn(fd).unwrap_or(false);
    match (sockopt::socket_domain(fd), listening) {
        (Ok(AddressFamily::INET | AddressFamily::INET6), true) => Kind::TcpListener,
        (Ok(AddressFamily::INET | AddressFamily::INET6), false) => Kind::TcpStream,
        (Ok(AddressFamily::UNIX), false) => Kind::UnixStream,
        _ => Kind::Other,
    }
}

/// Whether `fd` is a `SOCK_SEQPACKET` Unix socket (the upgrade channel).
pub fn is_upgrade_socket(fd: impl AsFd) -> bool {
    let fd = fd.as_fd();
    sockopt::socket_type(fd).ok() == Some(SocketType::SEQPACKET)
        && sockopt::socket_domain(fd).ok() == Some(AddressFamily::UNIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;

    #[test]
    fn sockets_cross_and_are_recognised() {
        let (a, b) = pair().unwrap();
        set_timeout(b.as_fd(), Duration::from_secs(5)).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (u1, _u2) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        send(
            a.as_fd(),
            b"hello",
            &[l.as_fd(), c.as_fd(), u1.as_fd(), file.as_fd()],
        )
        .unwrap();
        let mut buf = Vec::new();
        let fds = recv(b.as_fd(), &mut buf).unwrap().unwrap();
        assert_eq!(buf, b"hello");
        let kinds: Vec<Kind> = fds.iter().map(kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::TcpListener,
                Kind::TcpStream,
                Kind::UnixStream,
                Kind::Other
            ]
        );
        // Received descriptors are close-on-exec.
        for fd in &fds {
            let fl = rustix::io::fcntl_getfd(fd).unwrap();
            assert!(fl.contains(rustix::io::FdFlags::CLOEXEC));
        }
        // The received listener is the same socket.
        let l2 = TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(l2.local_addr().unwrap(), l.local_addr().unwrap());
        assert!(is_upgrade_socket(&a));
        assert!(!is_upgrade_socket(&c));
    }

    #[test]
    fn many_descriptors_go_in_batches_and_the_end_is_seen() {
        let (a, b) = pair().unwrap();
        set_timeout(b.as_fd(), Duration::from_secs(5)).unwrap();
        let socks: Vec<UnixStream> = (0..450).map(|_| UnixStream::pair().unwrap().0).collect();
        let fds: Vec<BorrowedFd> = socks.iter().map(|s| s.as_fd()).collect();
        assert!(send(a.as_fd(), b"x", &fds).is_err());
        for chunk in fds.chunks(MAX_FDS) {
            send(a.as_fd(), b"x", chunk).unwrap();
        }
        drop(a);
        let mut got = 0;
        let mut buf = Vec::new();
        while let Some(fds) = recv(b.as_fd(), &mut buf).unwrap() {
            assert!(fds.iter().all(|f| kind(f) == Kind::UnixStream));
            got += fds.len();
        }
        assert_eq!(got, 450);
    }
}
