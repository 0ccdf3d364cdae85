//! The parser's tests, by concept in `tests/`, and what they share: an
//! owned copy of each event, a rich sample with what it parses to, and
//! ways to feed bytes whole or in chunks.

use super::super::{
    escape_iac, opt, write_command, write_negotiation, write_subnegotiation, EOR, GA, NOP,
};
use super::*;

mod parsing;
mod props;
mod stop;

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
