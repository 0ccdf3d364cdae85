//! The upgrade's messages and documents over a real socketpair.

use super::*;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn head() -> Head {
    Head {
        format: FORMAT,
        from_version: "0.0.1".into(),
        upgrades: 2,
        next_id: 9,
        active: "a".into(),
        epoch: 3,
        backends: Vec::new(),
        listeners: Vec::new(),
        conn_rate: Vec::new(),
        cluster: None,
        started: Some(1_700_000_000),
        probes: Vec::new(),
    }
}

fn expect_doc(n: Next) -> Zeroizing<Vec<u8>> {
    match n {
        Next::Doc(d) => d,
        _ => panic!("expected a document"),
    }
}

#[test]
fn the_head_then_a_large_batch_and_its_descriptors_cross() {
    let (a, b) = fds::pair().unwrap();
    fds::set_timeout(b.as_fd(), Duration::from_secs(5)).unwrap();
    let states: Vec<Vec<u8>> = (0..300u32)
        .map(|i| format!("state {i} {}", "x".repeat(500)).into_bytes())
        .collect();
    let sessions = states
        .iter()
        .enumerate()
        .map(|(i, s)| SessionHead {
            id: i as u64,
            connected: 0,
            detached: false,
            game: None,
            len: s.len(),
        })
        .collect();
    let batch = Batch {
        sessions,
        cluster: None,
    };
    let refs: Vec<&[u8]> = states.iter().map(|s| s.as_slice()).collect();
    let d = doc(&batch, &refs);
    let socks: Vec<UnixStream> = (0..300).map(|_| UnixStream::pair().unwrap().0).collect();
    let fd_refs: Vec<BorrowedFd> = socks.iter().map(|s| s.as_fd()).collect();
    let t = std::thread::spawn(move || {
        let h = read_head(&expect_doc(recv_next(b.as_fd()).unwrap())).unwrap();
        let d = expect_doc(recv_next(b.as_fd()).unwrap());
        let (batch, states) = read_batch(&d).unwrap();
        let states: Vec<Vec<u8>> = states.iter().map(|s| s.to_vec()).collect();
        let fds = recv_fds(b.as_fd(), batch.fd_count()).unwrap();
        let commit = matches!(recv_next(b.as_fd()).unwrap(), Next::Commit);
        let gone = matches!(recv_next(b.as_fd()).unwrap(), Next::Gone);
        (h, states, fds.len(), commit, gone)
    });
    send_doc(a.as_fd(), &doc(&head(), &[])).unwrap();
    send_doc(a.as_fd(), &d).unwrap();
    send_fds(a.as_fd(), &fd_refs).unwrap();
    send_commit(a.as_fd()).unwrap();
    drop(a);
    let (h2, s2, n, commit, gone) = t.join().unwrap();
    assert_eq!(h2.next_id, 9);
    assert_eq!(n, 300);
    assert_eq!(s2.len(), 300);
    assert_eq!(s2[299].as_slice(), states[299].as_slice());
    assert!(commit && gone);
}

#[test]
fn a_head_of_another_format_is_refused() {
    let mut h = head();
    h.format = FORMAT + 1;
    let e = read_head(&doc(&h, &[])).unwrap_err();
    assert!(e.to_string().contains("handover format"), "{e}");
    h.format = OLDEST_FORMAT - 1;
    assert!(read_head(&doc(&h, &[])).is_err());
    // The format before this one is read.
    h.format = OLDEST_FORMAT;
    assert_eq!(read_head(&doc(&h, &[])).unwrap().format, OLDEST_FORMAT);
    // A batch is not a head.
    assert!(read_head(&doc(&Batch::default(), &[])).is_err());
}

#[test]
fn control_messages_and_the_other_side_leaving() {
    let (a, b) = fds::pair().unwrap();
    send_hello(a.as_fd(), "1.2.3").unwrap();
    send_error(a.as_fd(), "config.toml:3:1: bad").unwrap();
    send_ready(a.as_fd()).unwrap();
    send_took(a.as_fd(), 5).unwrap();
    send_commit(a.as_fd()).unwrap();
    drop(a);
    assert!(
        matches!(recv_msg(b.as_fd()).unwrap(), Some(Msg::Hello { version }) if version == "1.2.3")
    );
    assert!(matches!(recv_msg(b.as_fd()).unwrap(), Some(Msg::Error(e)) if e.contains(":3:1")));
    assert!(matches!(recv_msg(b.as_fd()).unwrap(), Some(Msg::Ready)));
    assert!(matches!(
        recv_msg(b.as_fd()).unwrap(),
        Some(Msg::Took { sessions: 5 })
    ));
    assert!(matches!(recv_msg(b.as_fd()).unwrap(), Some(Msg::Commit)));
    assert!(recv_msg(b.as_fd()).unwrap().is_none());
}

#[test]
fn a_short_batch_or_too_few_descriptors_is_an_error() {
    let (a, b) = fds::pair().unwrap();
    fds::set_timeout(b.as_fd(), Duration::from_secs(5)).unwrap();
    let batch = Batch {
        sessions: vec![SessionHead {
            id: 1,
            connected: 0,
            detached: false,
            game: Some(GameFd::Tcp),
            len: 2,
        }],
        cluster: None,
    };
    assert!(read_batch(&doc(&batch, &[b"{"])).is_err());
    let s = UnixStream::pair().unwrap().0;
    send_fds(a.as_fd(), &[s.as_fd()]).unwrap();
    drop(a);
    assert!(recv_fds(b.as_fd(), batch.fd_count()).is_err());
}
