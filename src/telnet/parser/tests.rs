use super::super::{
    escape_iac, opt, write_command, write_negotiation, write_subnegotiation, EOR, GA, NOP,
};
use super::*;
use proptest::prelude::*;

/// Owned copy of an event, so tests can collect them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Data(Vec<u8>),
    Command(u8),
    Neg(Verb, u8),
    Sub(u8, Vec<u8>),
}

impl Ev {
    fn from_event(e: &TelnetEvent<'_>) -> Ev {
        match *e {
            TelnetEvent::Data(d) => Ev::Data(d.to_vec()),
            TelnetEvent::Command(c) => Ev::Command(c),
            TelnetEvent::Negotiation { verb, option } => Ev::Neg(verb, option),
            TelnetEvent::Subnegotiation { option, data } => Ev::Sub(option, data.to_vec()),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Ev::Data(d) => escape_iac(d, out),
            Ev::Command(c) => write_command(*c, out),
            Ev::Neg(v, o) => write_negotiation(*v, *o, out),
            Ev::Sub(o, d) => write_subnegotiation(*o, d, out),
        }
    }
}

/// Merges adjacent Data events, which the parser may split arbitrarily.
fn normalize(evs: Vec<Ev>) -> Vec<Ev> {
    let mut out: Vec<Ev> = Vec::new();
    for e in evs {
        if let (Ev::Data(d), Some(Ev::Data(prev))) = (&e, out.last_mut()) {
            prev.extend_from_slice(d);
            continue;
        }
        out.push(e);
    }
    out
}

fn parse_chunks(p: &mut Parser, chunks: &[&[u8]]) -> Vec<Ev> {
    let mut evs = Vec::new();
    for c in chunks {
        let n = p.feed(c, |e| {
            evs.push(Ev::from_event(&e));
            true
        });
        assert_eq!(n, c.len());
    }
    evs
}

fn parse_all(input: &[u8], cap: usize) -> Vec<Ev> {
    normalize(parse_chunks(&mut Parser::new(cap), &[input]))
}

fn rich_sample() -> Vec<u8> {
    let mut s = Vec::new();
    s.extend_from_slice(b"Welcome to the MUSH!\r\n");
    write_negotiation(Verb::Will, opt::EOR_OPT, &mut s);
    write_negotiation(Verb::Do, opt::NAWS, &mut s);
    escape_iac(b"bin\xffary \xff\xff data\r\n", &mut s);
    write_subnegotiation(opt::NAWS, &[0, 80, 0xff, 24], &mut s);
    write_subnegotiation(opt::GMCP, b"Core.Hello {\"client\":\"x\"}", &mut s);
    s.extend_from_slice(b"> ");
    write_command(GA, &mut s);
    s.extend_from_slice(b"prompt2>");
    write_command(EOR, &mut s);
    write_command(NOP, &mut s);
    write_negotiation(Verb::Wont, opt::ECHO, &mut s);
    write_negotiation(Verb::Dont, 255, &mut s);
    write_subnegotiation(opt::TTYPE, &[], &mut s);
    write_subnegotiation(255, b"x", &mut s);
    s.extend_from_slice(b"tail\n");
    s
}

fn rich_expected() -> Vec<Ev> {
    vec![
        Ev::Data(b"Welcome to the MUSH!\r\n".to_vec()),
        Ev::Neg(Verb::Will, opt::EOR_OPT),
        Ev::Neg(Verb::Do, opt::NAWS),
        Ev::Data(b"bin\xffary \xff\xff data\r\n".to_vec()),
        Ev::Sub(opt::NAWS, vec![0, 80, 0xff, 24]),
        Ev::Sub(opt::GMCP, b"Core.Hello {\"client\":\"x\"}".to_vec()),
        Ev::Data(b"> ".to_vec()),
        Ev::Command(GA),
        Ev::Data(b"prompt2>".to_vec()),
        Ev::Command(EOR),
        Ev::Command(NOP),
        Ev::Neg(Verb::Wont, opt::ECHO),
        Ev::Neg(Verb::Dont, 255),
        Ev::Sub(opt::TTYPE, vec![]),
        Ev::Sub(255, b"x".to_vec()),
        Ev::Data(b"tail\n".to_vec()),
    ]
}

#[test]
fn rich_sample_unsplit() {
    assert_eq!(parse_all(&rich_sample(), 1024), rich_expected());
}

#[test]
fn split_at_every_position() {
    let s = rich_sample();
    let expected = rich_expected();
    for k in 0..=s.len() {
        let mut p = Parser::new(1024);
        let evs = normalize(parse_chunks(&mut p, &[&s[..k], &s[k..]]));
        assert_eq!(evs, expected, "split at {k}");
        assert!(p.is_idle());
    }
    // Two split points, and byte-at-a-time.
    for a in 0..=s.len() {
        for b in a..=s.len() {
            let mut p = Parser::new(1024);
            let evs = normalize(parse_chunks(&mut p, &[&s[..a], &s[a..b], &s[b..]]));
            assert_eq!(evs, expected, "split at {a},{b}");
        }
    }
    let bytes: Vec<&[u8]> = s.chunks(1).collect();
    assert_eq!(
        normalize(parse_chunks(&mut Parser::new(1024), &bytes)),
        expected
    );
}

#[test]
fn plain_chunk_is_one_borrowed_slice() {
    let input = b"hello world\r\nmore text\n";
    let mut p = Parser::new(16);
    let mut calls = 0;
    let n = p.feed(input, |e| {
        calls += 1;
        match e {
            TelnetEvent::Data(d) => assert_eq!(d.as_ptr(), input.as_ptr()),
            other => panic!("unexpected {other:?}"),
        }
        true
    });
    assert_eq!((n, calls), (input.len(), 1));
    assert!(p.is_idle());
}

#[test]
fn escaped_iac_data_is_not_copied() {
    // Data after IAC IAC borrows from the input, starting at the second IAC.
    let input = b"ab\xff\xffcd";
    let mut ptrs = Vec::new();
    Parser::new(0).feed(input, |e| {
        if let TelnetEvent::Data(d) = e {
            ptrs.push((d.as_ptr() as usize - input.as_ptr() as usize, d.len()));
        }
        true
    });
    assert_eq!(ptrs, vec![(0, 2), (3, 3)]);
}

#[test]
fn escape_round_trip() {
    let data: Vec<u8> = (0..=255u8).chain([255, 255, 255, 0, 255]).collect();
    let mut enc = Vec::new();
    escape_iac(&data, &mut enc);
    assert_eq!(
        enc.len(),
        data.len() + data.iter().filter(|&&b| b == IAC).count()
    );
    assert_eq!(parse_all(&enc, 0), vec![Ev::Data(data.clone())]);
    // And the other way: parse then escape gives back the wire bytes.
    let mut re = Vec::new();
    Parser::new(0).feed(&enc, |e| {
        if let TelnetEvent::Data(d) = e {
            escape_iac(d, &mut re);
        }
        true
    });
    assert_eq!(re, enc);
    let mut e2 = Vec::new();
    escape_iac(b"no iac here", &mut e2);
    assert_eq!(e2, b"no iac here");
}

#[test]
fn encoders() {
    let mut out = Vec::new();
    write_negotiation(Verb::Will, opt::GMCP, &mut out);
    write_command(GA, &mut out);
    write_subnegotiation(opt::NAWS, &[0, 80, 255, 24], &mut out);
    assert_eq!(
        out,
        [255, 251, 201, 255, 249, 255, 250, 31, 0, 80, 255, 255, 24, 255, 240]
    );
    for b in 0..=255u8 {
        assert_eq!(
            Verb::from_byte(b).map(Verb::byte),
            Some(b).filter(|_| (251..=254).contains(&b))
        );
    }
}

#[test]
fn truncated_subneg_across_feeds() {
    let mut p = Parser::new(64);
    let mut evs = Vec::new();
    for chunk in [
        &b"x\xff\xfa\xc9Core."[..],
        b"Ping",
        b" 1\xff",
        b"\xff2\xff",
        b"\xf0y",
    ] {
        p.feed(chunk, |e| {
            evs.push(Ev::from_event(&e));
            true
        });
        if !chunk.ends_with(b"\xf0y") {
            assert!(!p.is_idle());
        }
    }
    assert!(p.is_idle());
    assert_eq!(
        evs,
        vec![
            Ev::Data(b"x".to_vec()),
            Ev::Sub(opt::GMCP, b"Core.Ping 1\xff2".to_vec()),
            Ev::Data(b"y".to_vec()),
        ]
    );
}

#[test]
fn overlong_subneg_dropped_and_resyncs() {
    let mut s = Vec::new();
    s.extend_from_slice(b"before");
    write_subnegotiation(opt::GMCP, &[b'a'; 100], &mut s);
    s.extend_from_slice(b"after\xff\xff!");
    write_subnegotiation(opt::GMCP, &[b'b'; 10], &mut s);
    // Escaped IACs count as one byte each toward the cap.
    write_subnegotiation(opt::MSDP, &[255; 10], &mut s);
    write_subnegotiation(opt::MSDP, &[255; 11], &mut s);
    s.extend_from_slice(b"end");
    let expected = vec![
        // The dropped SB leaves no trace, so the data around it merges.
        Ev::Data(b"beforeafter\xff!".to_vec()),
        Ev::Sub(opt::GMCP, vec![b'b'; 10]),
        Ev::Sub(opt::MSDP, vec![255; 10]),
        Ev::Data(b"end".to_vec()),
    ];
    for k in 0..=s.len() {
        let mut p = Parser::new(10);
        let evs = normalize(parse_chunks(&mut p, &[&s[..k], &s[k..]]));
        assert_eq!(evs, expected, "split at {k}");
        assert_eq!(p.dropped_subnegs(), 2);
        assert!(p.sb_buf.capacity() <= 10);
    }
}

#[test]
fn cap_bounds_allocation() {
    let mut p = Parser::new(1000);
    let mut s = vec![IAC, SB, opt::GMCP];
    s.extend(std::iter::repeat_n(b'z', 5000));
    for c in s.chunks(7) {
        p.feed(c, |_| true);
        assert!(p.sb_buf.capacity() <= 1000);
    }
    let mut got = None;
    p.feed(&[IAC, SE, b'k'], |e| {
        got = Some(Ev::from_event(&e));
        true
    });
    assert_eq!(got, Some(Ev::Data(b"k".to_vec())));
    assert_eq!(p.dropped_subnegs(), 1);
}

#[test]
fn lenient_iac_inside_subneg() {
    // IAC WILL inside SB ends the SB, then the negotiation is processed.
    let s = b"\xff\xfa\x18\x01abc\xff\xfb\x01rest\xff\xfa\x45x\xff\xf9\xff\xfa\x46\xff\xfa\x45q\xff\xf0";
    let expected = vec![
        Ev::Sub(24, b"\x01abc".to_vec()),
        Ev::Neg(Verb::Will, 1),
        Ev::Data(b"rest".to_vec()),
        Ev::Sub(69, b"x".to_vec()),
        Ev::Command(GA),
        Ev::Sub(70, vec![]),
        Ev::Sub(69, b"q".to_vec()),
    ];
    for k in 0..=s.len() {
        let mut p = Parser::new(64);
        assert_eq!(
            normalize(parse_chunks(&mut p, &[&s[..k], &s[k..]])),
            expected,
            "split {k}"
        );
        assert!(p.is_idle());
    }
}

#[test]
fn odd_sequences() {
    // Unknown command bytes, stray SE, SB with no option byte.
    assert_eq!(
        parse_all(b"\xff\x07a\xff\xf0b\xff\xfa\xff\xf9c", 8),
        vec![
            Ev::Command(7),
            Ev::Data(b"a".to_vec()),
            Ev::Command(SE),
            Ev::Data(b"b".to_vec()),
            Ev::Command(GA),
            Ev::Data(b"c".to_vec()),
        ]
    );
    // CR/LF/NUL are data.
    assert_eq!(
        parse_all(b"a\r\0\r\nb", 8),
        vec![Ev::Data(b"a\r\0\r\nb".to_vec())]
    );
    // Over-long SB ended leniently by another command is still dropped.
    let mut p = Parser::new(2);
    let evs = parse_chunks(&mut p, &[b"\xff\xfa\x01abcdef\xff\xf9z"]);
    assert_eq!(evs, vec![Ev::Command(GA), Ev::Data(b"z".to_vec())]);
    assert_eq!(p.dropped_subnegs(), 1);
    // Zero cap: empty subnegotiations still pass.
    assert_eq!(
        parse_all(b"\xff\xfa\x56\xff\xf0", 0),
        vec![Ev::Sub(86, vec![])]
    );
}

#[test]
fn is_idle_tracks_sequences() {
    let mut p = Parser::new(8);
    for (chunk, idle) in [
        (&b"abc"[..], true),
        (b"\xff", false),
        (b"\xfb", false),
        (b"\x01", true),
        (b"\xff\xfa", false),
        (b"\x1f", false),
        (b"xy\xff", false),
        (b"\xf0", true),
        (b"\xff", false),
        (b"\xff", true),
    ] {
        p.feed(chunk, |_| true);
        assert_eq!(p.is_idle(), idle, "after {chunk:?}");
    }
}

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

fn arb_event() -> impl Strategy<Value = Ev> {
    let verb = prop_oneof![
        Just(Verb::Will),
        Just(Verb::Wont),
        Just(Verb::Do),
        Just(Verb::Dont)
    ];
    // Commands that the parser reports as Command: not a verb, SB or IAC.
    let cmd = any::<u8>().prop_filter("plain command", |c| {
        Verb::from_byte(*c).is_none() && *c != SB && *c != IAC
    });
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(prop_oneof![Just(IAC), Just(SE), Just(b'a')], 0..20),
    ];
    prop_oneof![
        bytes
            .clone()
            .prop_filter("non-empty", |d| !d.is_empty())
            .prop_map(Ev::Data),
        cmd.prop_map(Ev::Command),
        (verb, any::<u8>()).prop_map(|(v, o)| Ev::Neg(v, o)),
        (any::<u8>(), bytes).prop_map(|(o, d)| Ev::Sub(o, d)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn garbage_never_panics(
        data in proptest::collection::vec(any::<u8>(), 0..300),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        cap in 0usize..40,
        stop_every in 0usize..5,
    ) {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(data.len() + 1)).collect();
        cuts.push(0);
        cuts.push(data.len());
        cuts.sort_unstable();
        let mut p = Parser::new(cap);
        let mut count = 0usize;
        for w in cuts.windows(2) {
            let chunk = &data[w[0]..w[1]];
            let n = p.feed(chunk, |e| {
                if let TelnetEvent::Subnegotiation { data, .. } = e {
                    assert!(data.len() <= cap);
                }
                if let TelnetEvent::Data(d) = e {
                    assert!(!d.is_empty());
                }
                count += 1;
                stop_every == 0 || !count.is_multiple_of(stop_every)
            });
            prop_assert!(n <= chunk.len());
            if stop_every == 0 {
                prop_assert_eq!(n, chunk.len());
            }
        }
        // Unsplit and split parses agree on the same garbage.
        let whole = parse_all(&data, cap);
        let mut p = Parser::new(cap);
        let mut chunks: Vec<&[u8]> = Vec::new();
        for w in cuts.windows(2) {
            chunks.push(&data[w[0]..w[1]]);
        }
        prop_assert_eq!(normalize(parse_chunks(&mut p, &chunks)), whole);
    }

    #[test]
    fn encode_then_parse_round_trips(
        evs in proptest::collection::vec(arb_event(), 0..30),
        split in any::<prop::sample::Index>(),
    ) {
        let mut wire = Vec::new();
        for e in &evs {
            e.encode(&mut wire);
        }
        let want = normalize(evs);
        prop_assert_eq!(&parse_all(&wire, 64), &want);
        let k = split.index(wire.len() + 1);
        let mut p = Parser::new(64);
        prop_assert_eq!(&normalize(parse_chunks(&mut p, &[&wire[..k], &wire[k..]])), &want);
        prop_assert!(p.is_idle());
        prop_assert_eq!(p.dropped_subnegs(), 0);
    }
}
