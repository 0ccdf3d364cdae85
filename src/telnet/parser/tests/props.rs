//! Properties over generated input: garbage never panics and parses the
//! same split or whole; encoded events parse back to themselves.

use proptest::prelude::*;

use super::*;

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
