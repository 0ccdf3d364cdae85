//! Fuzzes `holdfast::telnet::Parser`: arbitrary bytes, parsed whole and split
//! at fuzzer-chosen points, must give the same events; and re-encoding what
//! was parsed must parse back to the same events.
#![no_main]

use holdfast::telnet::{
    escape_iac, write_command, write_negotiation, write_subnegotiation, Parser, TelnetEvent, Verb,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Data(Vec<u8>),
    Command(u8),
    Neg(Verb, u8),
    Sub(u8, Vec<u8>),
}

/// Appends an owned copy of `e`, checking the event invariants. Adjacent
/// Data events are merged because where data gets split is not part of the
/// contract.
fn record(evs: &mut Vec<Ev>, e: TelnetEvent<'_>, cap: usize) {
    match e {
        TelnetEvent::Data(d) => {
            assert!(!d.is_empty(), "empty Data event");
            if let Some(Ev::Data(prev)) = evs.last_mut() {
                prev.extend_from_slice(d);
            } else {
                evs.push(Ev::Data(d.to_vec()));
            }
        }
        TelnetEvent::Command(c) => evs.push(Ev::Command(c)),
        TelnetEvent::Negotiation { verb, option } => evs.push(Ev::Neg(verb, option)),
        TelnetEvent::Subnegotiation { option, data } => {
            assert!(data.len() <= cap, "subnegotiation over the cap");
            evs.push(Ev::Sub(option, data.to_vec()));
        }
    }
}

/// Parses `chunks` in order with a fresh parser.
fn parse(cap: usize, chunks: &[&[u8]]) -> (Vec<Ev>, bool, u64) {
    let mut p = Parser::new(cap);
    let mut evs: Vec<Ev> = Vec::new();
    for chunk in chunks {
        let n = p.feed(chunk, |e| {
            record(&mut evs, e, cap);
            true
        });
        assert_eq!(n, chunk.len(), "consumed less than fed without a stop");
    }
    (evs, p.is_idle(), p.dropped_subnegs())
}

/// Feeds `input`, stopping after every event and resuming at the returned
/// offset: must see the same events as one uninterrupted pass.
fn parse_stopping(cap: usize, input: &[u8]) -> Vec<Ev> {
    let mut p = Parser::new(cap);
    let mut evs: Vec<Ev> = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        let mut seen = 0;
        let n = p.feed(&input[pos..], |e| {
            seen += 1;
            record(&mut evs, e, cap);
            false
        });
        assert!(n <= input.len() - pos);
        // Zero bytes consumed is only allowed if an event came out (a
        // subnegotiation ended by a command byte that is then reprocessed).
        assert!(n > 0 || seen == 1, "no progress");
        pos += n;
    }
    evs
}

fn encode(evs: &[Ev]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in evs {
        match e {
            Ev::Data(d) => escape_iac(d, &mut out),
            Ev::Command(c) => write_command(*c, &mut out),
            Ev::Neg(v, o) => write_negotiation(*v, *o, &mut out),
            Ev::Sub(o, d) => write_subnegotiation(*o, d, &mut out),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // Header: cap selector and two split points; the rest is the stream.
    if data.len() < 3 {
        return;
    }
    let cap = usize::from(data[0] % 64);
    let input = &data[3..];
    let a = usize::from(data[1]) * input.len() / 255;
    let b = a + usize::from(data[2]) * (input.len() - a) / 255;

    let whole = parse(cap, &[input]);
    let split = parse(cap, &[&input[..a], &input[a..b], &input[b..]]);
    assert_eq!(whole, split, "split at {a},{b} changed the result");
    assert_eq!(
        whole.0,
        parse_stopping(cap, input),
        "stop/resume changed the result"
    );

    // Canonical re-encoding parses back to the same events.
    let wire = encode(&whole.0);
    let again = parse(cap, &[&wire]);
    assert_eq!(again.0, whole.0, "re-encoded stream parsed differently");
    assert!(again.1, "re-encoded stream left parser mid-sequence");
});
