//! Telnet framing for the proxy.
//!
//! MUSH/MUD servers speak line-oriented text over TCP with telnet (RFC 854)
//! commands mixed in: option negotiation (`IAC WILL/WONT/DO/DONT <opt>`),
//! subnegotiation (`IAC SB <opt> ... IAC SE`, used by NAWS, TTYPE, GMCP, MSDP,
//! MSSP, MCCP...), and two-byte commands such as `IAC GA` / `IAC EOR` that
//! mark prompts. A literal 0xFF byte in the data is sent doubled (`IAC IAC`).
//!
//! The proxy has to see these sequences for three reasons: to answer or
//! replay negotiations when a player reattaches to a preserved session, to
//! know when it may inject its own bytes without splitting a sequence in two
//! ([`Parser::is_idle`]), and to notice where MCCP compression starts
//! (`IAC SB 86 IAC SE`, after which the byte stream is zlib, see [`mccp`]).
//!
//! * [`Parser`] is an incremental, allocation-bounded state machine that
//!   turns raw bytes into [`TelnetEvent`]s. Reads can be split at any byte.
//!   Plain text is handed out as slices of the caller's buffer, so the common
//!   case (a read with no IAC in it) costs one `memchr` and no copy.
//! * [`escape_iac`], [`write_negotiation`], [`write_subnegotiation`] and
//!   [`write_command`] are the encoding side.
//! * [`mccp`] inflates/deflates MCCP2/MCCP3 zlib streams.
//! * [`Inbound`] decodes a backend's bytes (MCCP2 undone) into events;
//!   [`Outbound`] encodes the player's stream (the proxy's own MCCP2).
//! * [`Policy`] decides who answers each negotiation: the player once, the
//!   proxy for every later backend, from [`memory::Memory`].
//!
//! # Layout
//!
//! | module | its one job |
//! | --- | --- |
//! | `parser` | bytes in, [`TelnetEvent`]s out (no I/O, subnegotiations capped) |
//! | `encode` | IAC escaping, negotiations, subnegotiations, commands out |
//! | `mccp` | MCCP2/MCCP3 zlib streams, inflation bounded per call |
//! | `inbound` | a backend's bytes, MCCP2 undone, into events |
//! | `outbound` | the player's stream, with the proxy's own MCCP2 |
//! | `policy` | who answers each negotiation |
//! | `policy/options` | what each side said, per option and axis |
//! | `policy/mssp` | holdfast's own MSSP, when it answers that itself |
//! | `memory` | the player's answers, replayed to later backends |

mod encode;
mod inbound;
pub mod mccp;
pub mod memory;
mod outbound;
mod parser;
mod policy;

pub use encode::{escape_iac, write_command, write_negotiation, write_subnegotiation};
pub use inbound::Inbound;
pub use outbound::Outbound;
pub use parser::*;
pub use policy::{Policy, COMPRESS1};

/// "Interpret As Command": introduces every telnet command; doubled in data.
pub const IAC: u8 = 255;
/// Asks the peer to stop performing an option.
pub const DONT: u8 = 254;
/// Asks the peer to perform an option.
pub const DO: u8 = 253;
/// Refuses (or stops) performing an option.
pub const WONT: u8 = 252;
/// Offers (or agrees) to perform an option.
pub const WILL: u8 = 251;
/// Starts a subnegotiation: `IAC SB <option> <payload> IAC SE`.
pub const SB: u8 = 250;
/// Go Ahead: MUDs send it after a prompt that has no trailing newline.
pub const GA: u8 = 249;
/// Ends a subnegotiation.
pub const SE: u8 = 240;
/// No operation; sometimes used as a keep-alive.
pub const NOP: u8 = 241;
/// End Of Record: prompt marker once the EOR option is agreed.
pub const EOR: u8 = 239;
/// Are You There.
pub const AYT: u8 = 246;

/// Telnet option numbers used by MUD clients and servers.
pub mod opt {
    /// Echo (RFC 857); servers use it to hide password input.
    pub const ECHO: u8 = 1;
    /// Suppress Go Ahead (RFC 858).
    pub const SGA: u8 = 3;
    /// Terminal type (RFC 1091); also carries MTTS flags.
    pub const TTYPE: u8 = 24;
    /// End Of Record option (RFC 885): enables `IAC EOR` prompt markers.
    pub const EOR_OPT: u8 = 25;
    /// Negotiate About Window Size (RFC 1073).
    pub const NAWS: u8 = 31;
    /// Linemode (RFC 1184).
    pub const LINEMODE: u8 = 34;
    /// Charset (RFC 2066).
    pub const CHARSET: u8 = 42;
    /// MUD Server Data Protocol.
    pub const MSDP: u8 = 69;
    /// MUD Server Status Protocol.
    pub const MSSP: u8 = 70;
    /// MUD Client Compression Protocol v2 (server to client zlib).
    pub const MCCP2: u8 = 86;
    /// MUD Client Compression Protocol v3 (client to server zlib).
    pub const MCCP3: u8 = 87;
    /// Generic MUD Communication Protocol (JSON over subnegotiation).
    pub const GMCP: u8 = 201;
}
