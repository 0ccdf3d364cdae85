//! Who answers which telnet negotiation: the proxy owns the telnet layer.
//!
//! Telnet options are agreed per connection, and a player's connection
//! outlives many backend connections. [`Policy`] keeps both sides apart:
//!
//! * **The player's side** is settled once. On the session's first backend
//!   connection the game's questions are passed to the player and the
//!   player's answers to the game (the proxy watches and remembers them,
//!   see [`Memory`]).
//! * **Each later backend connection** (restart, failover) is answered by
//!   the proxy on the player's behalf: what the player agreed to is agreed
//!   again and its data replayed (NAWS, TTYPE, CHARSET, GMCP hello); what
//!   the player refused or was never asked about is refused. The player
//!   sees none of it.
//! * **Compression** is never passed through. MCCP2 (option 86) from the
//!   game is accepted or refused by the proxy alone and undone by
//!   [`super::Inbound`]; the proxy offers its own MCCP2 to the player
//!   ([`super::Outbound`]). MCCP v1 (85) and MCCP3 (87) are refused both
//!   ways.
//! * **ECHO** is a mode the game switches (password prompts), not a
//!   capability: it is always passed through, both ways.
//!
//! Requests the player starts (e.g. a later `IAC WILL NAWS`) go to the
//! current backend and its answer back to the player. Per option and
//! direction the proxy tracks what it told each side, so no answer is
//! ever sent twice for one question (RFC 1143's loop rule).
//!
//! Bytes in, bytes out: every method appends what to send to each side to
//! caller-owned buffers (plain bytes; the session compresses for the player).
//!
//! Beside this file: `options` keeps what each side said per option,
//! `mssp` is holdfast's own MSSP when it answers that itself.

use super::memory::Memory;
use super::outbound::Outbound;
use super::{opt, write_negotiation, write_subnegotiation, Verb};
use options::{Axis, Options, Said};

/// MCCP v1 ("COMPRESS"), obsolete; refused so it can never be passed on.
pub const COMPRESS1: u8 = 85;

/// Telnet state of one session: the player's side, the current backend's
/// side, the player's remembered answers and the player's output stream.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    axes: [Options; 2],
    memory: Memory,
    /// Accept MCCP2 from backends.
    backend_mccp: bool,
    /// Offer MCCP2 to the player.
    player_mccp: bool,
    /// The current backend connection is the session's first: questions
    /// nobody answered yet go to the player.
    first_backend: bool,
    backends_seen: u32,
    /// TTYPE questions answered on the current backend connection.
    ttype_asked: u32,
    /// The player's output encoder (MCCP2). Its zlib stream cannot be
    /// written out: an upgrade ends it first and offers MCCP2 again.
    #[serde(skip)]
    pub out: Outbound,
    /// holdfast answers MSSP itself (see `front::mssp` and `mssp.rs` here).
    mssp: bool,
    /// The player asked for MSSP (`IAC DO MSSP`) since the last look.
    mssp_asked: bool,
    /// The game's MSSP answer, not yet looked at.
    /// (`Box<[u8]>`: 16 bytes in every session instead of 24.)
    game_mssp: Option<Box<[u8]>>,
}

impl Policy {
    /// A session's policy: `player_mccp` offers MCCP2 to the player,
    /// `backend_mccp` accepts it from backends.
    pub fn new(player_mccp: bool, backend_mccp: bool) -> Self {
        Policy {
            axes: [Options::default(), Options::default()],
            memory: Memory::default(),
            backend_mccp,
            player_mccp,
            first_backend: false,
            backends_seen: 0,
            ttype_asked: 0,
            out: Outbound::default(),
            mssp: false,
            mssp_asked: false,
            game_mssp: None,
        }
    }

    fn axis(&mut self, a: Axis) -> &mut Options {
        &mut self.axes[a as usize]
    }

    /// What to send the player when the session starts: the MCCP2 offer.
    pub fn greet(&mut self, to_player: &mut Vec<u8>) {
        if self.player_mccp {
            write_negotiation(Verb::Will, opt::MCCP2, to_player);
            self.axis(Axis::Game).at(opt::MCCP2 as usize).told_player = Said::Yes;
        }
        self.mssp_greet(to_player);
    }

    /// The player's MCCP2 stream was ended (its zlib state cannot cross to
    /// a new process): offer MCCP2 again, so a player who had it gets a
    /// fresh stream once it answers `IAC DO 86`.
    pub fn reoffer_mccp(&mut self, to_player: &mut Vec<u8>) {
        if !self.player_mccp {
            return;
        }
        self.axis(Axis::Game).at(opt::MCCP2 as usize).player = Said::Nothing;
        write_negotiation(Verb::Will, opt::MCCP2, to_player);
        self.axis(Axis::Game).at(opt::MCCP2 as usize).told_player = Said::Yes;
    }

    /// A new backend connection starts: nothing is agreed with it yet.
    pub fn backend_started(&mut self) {
        self.backends_seen = self.backends_seen.saturating_add(1);
        self.first_backend = self.backends_seen == 1;
        self.ttype_asked = 0;
        for a in &mut self.axes {
            a.forget_backend();
        }
    }

    /// A resumed session: the game connection (and what was agreed with
    /// it) stays this policy's, the player's side comes from `new`, the
    /// policy of the connection the player came back on. Returns what the
    /// game should hear now: the new window size if the game takes NAWS.
    pub fn adopt_player_side(&mut self, new: Policy) -> Vec<u8> {
        for (mine, theirs) in self.axes.iter_mut().zip(new.axes) {
            mine.adopt_player_side(&theirs);
        }
        self.memory = new.memory;
        self.out = new.out;
        self.player_mccp = new.player_mccp;
        let mut to_backend = Vec::new();
        if self.axes[Axis::Player as usize]
            .get(opt::NAWS as usize)
            .told_backend
            == Said::Yes
        {
            self.memory.on_agreed(opt::NAWS, &mut to_backend);
        }
        to_backend
    }

    /// True if holdfast agreed to MCCP2 from the current backend (the only
    /// case in which its compressed stream is inflated).
    pub fn backend_mccp_agreed(&self) -> bool {
        self.axes[Axis::Game as usize]
            .get(opt::MCCP2 as usize)
            .told_backend
            == Said::Yes
    }

    /// True if the player's stream to the proxy is compressed (or about to).
    pub fn player_compressed(&self) -> bool {
        self.out.compressing()
    }

    // ----- from the player ---------------------------------------------

    /// The player sent `IAC <verb> <option>`.
    pub fn from_player(
        &mut self,
        verb: Verb,
        option: u8,
        to_backend: &mut Vec<u8>,
        to_player: &mut Vec<u8>,
    ) {
        let (ax, yes) = Axis::of_player(verb);
        let o = option as usize;
        if option == opt::MSSP && self.mssp_from_player(verb, to_player) {
            return;
        }
        if matches!(option, opt::MCCP2 | opt::MCCP3 | COMPRESS1) {
            if (ax, option) == (Axis::Game, opt::MCCP2) && self.player_mccp {
                if yes {
                    self.out.start();
                } else {
                    self.out.stop();
                }
                self.axis(ax).at(o).player = Said::from(yes);
            } else if yes {
                // Never offered: refused (every time, as RFC 1143 wants).
                self.axis(ax).at(o).told_player = Said::No;
                write_negotiation(ax.game_verb(false), option, to_player);
            }
            return;
        }
        let s = self.axis(ax);
        s.at(o).player = Said::from(yes);
        if option == opt::ECHO || std::mem::take(&mut s.at(o).awaiting_player) {
            // An answer to the backend's question (or ECHO, always relayed).
            s.at(o).told_backend = Said::from(yes);
            write_negotiation(verb, option, to_backend);
            return;
        }
        match (s.get(o).told_backend, yes) {
            (Said::Yes | Said::Asked, true) | (Said::No | Said::Nothing, false) => {}
            (Said::No | Said::Nothing, true) => {
                s.at(o).told_backend = Said::Asked;
                write_negotiation(verb, option, to_backend);
            }
            (Said::Yes | Said::Asked, false) => {
                s.at(o).told_backend = Said::No;
                write_negotiation(verb, option, to_backend);
            }
        }
    }

    /// The player sent `IAC SB <option> <data> IAC SE`: remembered, and
    /// passed on unless the current backend has refused the option.
    pub fn from_player_sub(&mut self, option: u8, data: &[u8], to_backend: &mut Vec<u8>) {
        if matches!(option, opt::MCCP2 | opt::MCCP3 | COMPRESS1) {
            return;
        }
        self.memory.record(option, data);
        let o = option as usize;
        let on = |s: Said| matches!(s, Said::Yes | Said::Asked);
        let (p, g) = (
            self.axes[Axis::Player as usize].get(o).told_backend,
            self.axes[Axis::Game as usize].get(o).told_backend,
        );
        let refused = !on(p) && !on(g) && (p == Said::No || g == Said::No);
        if !refused {
            write_subnegotiation(option, data, to_backend);
        }
    }

    // ----- from the backend --------------------------------------------

    /// The backend sent `IAC <verb> <option>`.
    pub fn from_backend(
        &mut self,
        verb: Verb,
        option: u8,
        to_backend: &mut Vec<u8>,
        to_player: &mut Vec<u8>,
    ) {
        let (ax, yes) = Axis::of_game(verb);
        let o = option as usize;
        if option == opt::MSSP && self.mssp_from_backend(verb, to_backend) {
            return;
        }
        if matches!(option, opt::MCCP2 | opt::MCCP3 | COMPRESS1) {
            let accept = yes && self.backend_mccp && (ax, option) == (Axis::Game, opt::MCCP2);
            let s = self.axis(ax);
            let on = s.get(o).told_backend == Said::Yes;
            // Refusals are repeated, agreements never (RFC 1143).
            if (yes && !(accept && on)) || (!yes && on) {
                s.at(o).told_backend = Said::from(accept);
                write_negotiation(ax.player_verb(accept), option, to_backend);
            }
            return;
        }
        if option == opt::ECHO {
            let s = self.axis(ax);
            s.at(o).told_player = Said::from(yes);
            s.at(o).awaiting_player = true;
            write_negotiation(verb, option, to_player);
            return;
        }
        let first = self.first_backend;
        let s = &mut self.axes[ax as usize];
        match (s.get(o).told_backend, yes) {
            // The answer to a request the player started.
            (Said::Asked, _) => {
                s.at(o).told_backend = Said::from(yes);
                if s.get(o).player == Said::Yes && s.get(o).told_player != Said::from(yes) {
                    s.at(o).told_player = Said::from(yes);
                    write_negotiation(verb, option, to_player);
                }
            }
            // Already so: an acknowledgement, not a question.
            (Said::Yes, true) => {}
            // The backend turns it off: acknowledge; the player is not
            // bothered (its data for the option is held back from now on).
            (Said::Yes, false) => {
                s.at(o).told_backend = Said::No;
                write_negotiation(ax.player_verb(false), option, to_backend);
            }
            (Said::No | Said::Nothing, false) => {
                s.at(o).told_backend = Said::No;
                if std::mem::take(&mut s.at(o).awaiting_player) && s.get(o).told_player == Said::Yes
                {
                    // It withdrew a question the player has not answered.
                    s.at(o).told_player = Said::No;
                    write_negotiation(verb, option, to_player);
                }
            }
            // A question.
            (Said::No | Said::Nothing, true) => match s.get(o).player {
                Said::Yes => {
                    s.at(o).told_backend = Said::Yes;
                    write_negotiation(ax.player_verb(true), option, to_backend);
                    if s.get(o).told_player != Said::Yes {
                        // The player's own earlier offer, agreed at last.
                        s.at(o).told_player = Said::Yes;
                        write_negotiation(verb, option, to_player);
                    }
                    self.memory.on_agreed(option, to_backend);
                }
                Said::Nothing | Said::Asked if first => {
                    s.at(o).awaiting_player = true;
                    s.at(o).told_player = Said::Yes;
                    write_negotiation(verb, option, to_player);
                }
                Said::No | Said::Nothing | Said::Asked => {
                    s.at(o).told_backend = Said::No;
                    write_negotiation(ax.player_verb(false), option, to_backend);
                }
            },
        }
    }

    /// The backend sent `IAC SB <option> <data> IAC SE` (never the MCCP2
    /// start: [`super::Inbound`] consumes it). Questions the player already
    /// answered are answered here; the rest goes to the player.
    pub fn from_backend_sub(
        &mut self,
        option: u8,
        data: &[u8],
        to_backend: &mut Vec<u8>,
        to_player: &mut Vec<u8>,
    ) {
        if matches!(option, opt::MCCP2 | opt::MCCP3 | COMPRESS1) {
            return;
        }
        if option == opt::MSSP && self.mssp_from_backend_sub(data) {
            return;
        }
        let o = option as usize;
        let agreed = self.axes.iter().any(|a| a.get(o).told_backend == Said::Yes);
        if !self.first_backend
            && agreed
            && self
                .memory
                .answer(option, data, &mut self.ttype_asked, to_backend)
        {
            return;
        }
        write_subnegotiation(option, data, to_player);
    }
}

mod mssp;
mod options;
#[cfg(test)]
mod tests;
