//! Fuzzes the proxy's telnet layer as a session drives it: arbitrary bytes
//! from arbitrary backends (decoded by `Inbound`, MCCP2 included) and from
//! the player, through `Policy`, out through the player's `Outbound`.
//!
//! Invariants: nothing panics; the player never sees compression it did
//! not get from the proxy (no `IAC WILL 85/86/87` beyond the proxy's own
//! offer, no `IAC SB 86` except the proxy's start); and the player's wire
//! stream, inflated, is exactly the plain stream the session wrote.
#![no_main]

use holdfast::telnet::mccp::{Inflater, Progress};
use holdfast::telnet::{opt, Inbound, Parser, Policy, TelnetEvent, Verb, COMPRESS1};
use libfuzzer_sys::fuzz_target;

const MCCP2_START: [u8; 5] = [255, 250, opt::MCCP2, 255, 240];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut policy = Policy::new(flags & 1 != 0, flags & 2 != 0);
    let mut inbound = Inbound::new(256);
    let mut player_parser = Parser::new(256);
    // What the session writes to the player, before and after encoding.
    let mut plain = Vec::new();
    let mut wire = Vec::new();
    let mut greet = Vec::new();
    policy.greet(&mut greet);
    wire.extend_from_slice(&greet);
    plain.extend_from_slice(&greet);

    // Frames: [kind][len][bytes]; kind 0-3 backend, 4-6 player, 7 new backend.
    while let [kind, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        let mut to_backend = Vec::new();
        let mut to_player = Vec::new();
        match kind % 8 {
            0..=3 => {
                let r = inbound.feed(chunk, |ev| match ev {
                    TelnetEvent::Data(d) => holdfast::telnet::escape_iac(d, &mut to_player),
                    TelnetEvent::Command(c) => holdfast::telnet::write_command(c, &mut to_player),
                    TelnetEvent::Negotiation { verb, option } => {
                        policy.from_backend(verb, option, &mut to_backend, &mut to_player)
                    }
                    TelnetEvent::Subnegotiation { option, data } => {
                        policy.from_backend_sub(option, data, &mut to_backend, &mut to_player)
                    }
                });
                if r.is_err() {
                    // The session drops such a backend; so do we.
                    inbound = Inbound::new(256);
                    policy.backend_started();
                }
            }
            4..=6 => {
                player_parser.feed(chunk, |ev| {
                    match ev {
                        TelnetEvent::Negotiation { verb, option } => {
                            policy.from_player(verb, option, &mut to_backend, &mut to_player)
                        }
                        TelnetEvent::Subnegotiation { option, data } => {
                            policy.from_player_sub(option, data, &mut to_backend)
                        }
                        _ => {}
                    }
                    true
                });
            }
            _ => {
                inbound = Inbound::new(256);
                policy.backend_started();
            }
        }
        // The player never hears of the game's compression.
        let mut p = Parser::new(1 << 16);
        p.feed(&to_player, |ev| {
            match ev {
                TelnetEvent::Negotiation { verb: Verb::Will, option } => {
                    assert!(![opt::MCCP2, opt::MCCP3, COMPRESS1].contains(&option))
                }
                TelnetEvent::Subnegotiation { option, .. } => {
                    assert!(![opt::MCCP2, opt::MCCP3, COMPRESS1].contains(&option))
                }
                _ => {}
            }
            true
        });
        // A pending start puts the proxy's marker after this chunk.
        let starting = policy.out.has_pending() && policy.out.compressing();
        wire.extend_from_slice(&policy.out.encode(&to_player));
        plain.extend_from_slice(&to_player);
        if starting {
            plain.extend_from_slice(&MCCP2_START);
        }
    }

    // Undo the proxy's MCCP2 the way a client does and compare.
    let mut decoded = Vec::new();
    let mut parser = Parser::new(1 << 16);
    let mut inflater: Option<Inflater> = None;
    let mut pos = 0;
    loop {
        if let Some(inf) = &mut inflater {
            let mut out = Vec::new();
            let p = inf
                .decompress(&wire[pos..], &mut out, 1 << 20)
                .expect("the proxy's own zlib stream is valid");
            parser.feed(&out, |_| true);
            decoded.extend_from_slice(&out);
            match p {
                Progress::NeedInput => break,
                Progress::OutputFull(n) => pos += n,
                Progress::StreamEnd(n) => {
                    pos += n;
                    inflater = None;
                }
            }
        } else {
            if pos == wire.len() {
                break;
            }
            let mut start = false;
            let n = parser.feed(&wire[pos..], |ev| {
                if matches!(ev, TelnetEvent::Subnegotiation { option: opt::MCCP2, .. }) {
                    start = true;
                    return false;
                }
                true
            });
            decoded.extend_from_slice(&wire[pos..pos + n]);
            pos += n;
            if start && parser.is_idle() {
                inflater = Some(Inflater::new());
            }
        }
    }
    assert_eq!(decoded, plain, "the player's stream decodes to what was written");
});
