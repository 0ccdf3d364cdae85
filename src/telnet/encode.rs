//! The encoding side: data with IAC doubled, negotiations, subnegotiations
//! and two-byte commands, each appended to a caller's buffer.
//!
//! What these write, [`Parser`](super::Parser) reads back unchanged.

use super::{Verb, IAC, SB, SE};
use memchr::memchr;

/// Appends `data` to `out`, doubling every 0xFF (IAC) byte.
pub fn escape_iac(data: &[u8], out: &mut Vec<u8>) {
    let mut rest = data;
    while let Some(pos) = memchr(IAC, rest) {
        // Copy through the IAC, then add the second one.
        out.extend_from_slice(&rest[..=pos]);
        out.push(IAC);
        rest = &rest[pos + 1..];
    }
    out.extend_from_slice(rest);
}

/// Appends `IAC <verb> <option>` to `out`.
pub fn write_negotiation(verb: Verb, option: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[IAC, verb.byte(), option]);
}

/// Appends `IAC SB <option> <escaped data> IAC SE` to `out`.
///
/// Option 255 is doubled like any other IAC byte inside the subnegotiation,
/// and [`Parser`](super::Parser) reads it back that way.
pub fn write_subnegotiation(option: u8, data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len() + 6);
    out.extend_from_slice(&[IAC, SB]);
    escape_iac(&[option], out);
    escape_iac(data, out);
    out.extend_from_slice(&[IAC, SE]);
}

/// Appends `IAC <cmd>` to `out` (e.g. GA, EOR, NOP).
pub fn write_command(cmd: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[IAC, cmd]);
}
