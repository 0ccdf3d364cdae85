//! Stopping mid-feed, as the reader does when MCCP2 starts: the parser
//! consumes exactly up to the event it stopped after, and resumes from
//! there.

use super::*;

/// Feeds `input`, stopping after the first event matching `stop`; returns
/// (consumed, events seen).
fn feed_until(p: &mut Parser, input: &[u8], stop: impl Fn(&Ev) -> bool) -> (usize, Vec<Ev>) {
    let mut evs = Vec::new();
    let n = p.feed(input, |e| {
        let ev = Ev::from_event(&e);
        let go_on = !stop(&ev);
        evs.push(ev);
        go_on
    });
    (n, evs)
}

#[test]
fn stop_after_mccp2_start() {
    let mut s = b"hi\xff\xfb\x56".to_vec();
    let start = s.len();
    s.extend_from_slice(b"\xff\xfa\x56\xff\xf0");
    let zlib_at = s.len();
    s.extend_from_slice(b"\x78\x9c\xff\xff\x00garbage");
    let is_mccp = |e: &Ev| *e == Ev::Sub(opt::MCCP2, vec![]);

    let mut p = Parser::new(64);
    let (n, evs) = feed_until(&mut p, &s, is_mccp);
    assert_eq!(n, zlib_at);
    assert!(p.is_idle());
    assert_eq!(evs.last(), Some(&Ev::Sub(86, vec![])));

    // Same with the SB split across reads (copied path).
    for k in start..zlib_at {
        let mut p = Parser::new(64);
        let (n1, _) = feed_until(&mut p, &s[..k], is_mccp);
        assert_eq!(n1, k);
        let (n2, evs) = feed_until(&mut p, &s[k..], is_mccp);
        assert_eq!(k + n2, zlib_at, "split {k}");
        assert_eq!(evs, vec![Ev::Sub(86, vec![])]);
        assert!(p.is_idle());
    }
}

#[test]
fn stop_resumes_exactly() {
    // Stopping after every single event and resuming from `consumed`
    // yields the same events as one pass.
    let s = rich_sample();
    let mut lenient = s.clone();
    lenient.extend_from_slice(b"\xff\xfa\x18abc\xff\xfb\x01z\xff\xff\xff\xff");
    for input in [&s, &lenient] {
        let want = parse_all(input, 1024);
        for split in 0..=input.len() {
            let mut p = Parser::new(1024);
            let mut got = Vec::new();
            for part in [&input[..split], &input[split..]] {
                let mut pos = 0;
                while pos < part.len() {
                    let (n, evs) = feed_until(&mut p, &part[pos..], |_| true);
                    assert!(n <= part.len() - pos);
                    // Progress is guaranteed unless the event consumed
                    // no bytes of this slice (lenient SB end).
                    assert!(n > 0 || evs.len() == 1);
                    got.extend(evs);
                    pos += n;
                }
            }
            assert_eq!(normalize(got), want, "split {split}");
        }
    }
}

#[test]
fn stop_on_data_leaves_iac_unconsumed() {
    let mut p = Parser::new(8);
    let (n, evs) = feed_until(&mut p, b"abc\xff\xf9", |_| true);
    assert_eq!((n, evs), (3, vec![Ev::Data(b"abc".to_vec())]));
    assert!(p.is_idle());
    let (n, evs) = feed_until(&mut p, b"x\xff\xffyz\xff\xf9", |_| true);
    assert_eq!((n, evs), (1, vec![Ev::Data(b"x".to_vec())]));
    let (n, evs) = feed_until(&mut p, b"\xff\xffyz\xff\xf9", |_| true);
    assert_eq!((n, evs), (4, vec![Ev::Data(b"\xffyz".to_vec())]));
}
