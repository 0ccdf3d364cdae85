//! Bytes in, events out: the sample in one piece and split everywhere,
//! borrowed data, IAC escapes, subnegotiations cut short or too long, odd
//! sequences, and when the parser is idle.

use super::*;

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
fn a_long_subneg_split_across_reads_is_not_kept() {
    // Split, so it is collected in the buffer rather than lent.
    let mut p = Parser::new(8192);
    let mut s = vec![IAC, SB, opt::GMCP];
    s.extend(std::iter::repeat_n(b'g', 4000));
    s.extend([IAC, SE]);
    let evs = normalize(parse_chunks(&mut p, &[&s[..100], &s[100..]]));
    assert_eq!(evs.len(), 1);
    assert!(matches!(&evs[0], Ev::Sub(o, d) if *o == opt::GMCP && d.len() == 4000));
    assert_eq!(p.sb_buf.capacity(), 0, "nothing kept after it ended");
    assert!(p.sb_buf.0.is_none());
    // Split again: collected again.
    let evs = parse_chunks(&mut p, &[&[IAC, SB, opt::GMCP, b'a'], &[b'b', IAC, SE]]);
    assert_eq!(normalize(evs), vec![Ev::Sub(opt::GMCP, b"ab".to_vec())]);
    assert!(p.sb_buf.0.is_none());
    // A parser in the middle of one crosses an upgrade with its bytes.
    p.feed(&[IAC, SB, opt::GMCP, b'x', b'y'], |_| true);
    let back: Parser = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
    assert_eq!(back.sb_buf.as_slice(), b"xy");
    let empty: Parser =
        serde_json::from_str(&serde_json::to_string(&Parser::new(64)).unwrap()).unwrap();
    assert!(empty.sb_buf.0.is_none());
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
