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

use super::memory::Memory;
use super::outbound::Outbound;
use super::{opt, write_negotiation, write_subnegotiation, Verb};

/// MCCP v1 ("COMPRESS"), obsolete; refused so it can never be passed on.
pub const COMPRESS1: u8 = 85;

/// Which side of the connection performs an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Axis {
    /// The player's side performs it (NAWS, TTYPE): the player says
    /// WILL/WONT, the game DO/DONT.
    Player,
    /// The game's side performs it (EOR, GMCP, MCCP2, ECHO): the game says
    /// WILL/WONT, the player DO/DONT.
    Game,
}

impl Axis {
    /// The axis and yes/no of a verb sent by the player (or by the proxy
    /// on the player's behalf).
    fn of_player(v: Verb) -> (Axis, bool) {
        match v {
            Verb::Will => (Axis::Player, true),
            Verb::Wont => (Axis::Player, false),
            Verb::Do => (Axis::Game, true),
            Verb::Dont => (Axis::Game, false),
        }
    }

    /// The axis and yes/no of a verb sent by the game (or by the proxy in
    /// the game's place).
    fn of_game(v: Verb) -> (Axis, bool) {
        match v {
            Verb::Do => (Axis::Player, true),
            Verb::Dont => (Axis::Player, false),
            Verb::Will => (Axis::Game, true),
            Verb::Wont => (Axis::Game, false),
        }
    }

    /// The verb the player's side uses on this axis.
    fn player_verb(self, yes: bool) -> Verb {
        match (self, yes) {
            (Axis::Player, true) => Verb::Will,
            (Axis::Player, false) => Verb::Wont,
            (Axis::Game, true) => Verb::Do,
            (Axis::Game, false) => Verb::Dont,
        }
    }

    /// The verb the game's side uses on this axis.
    fn game_verb(self, yes: bool) -> Verb {
        match (self, yes) {
            (Axis::Player, true) => Verb::Do,
            (Axis::Player, false) => Verb::Dont,
            (Axis::Game, true) => Verb::Will,
            (Axis::Game, false) => Verb::Wont,
        }
    }
}

/// One side's word on one option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
enum Said {
    /// Nothing yet.
    #[default]
    Nothing,
    /// No (WONT / DONT).
    No,
    /// Yes (WILL / DO) and settled.
    Yes,
    /// Yes asked for, answer pending (toward the backend only).
    Asked,
}

impl Said {
    fn from(yes: bool) -> Said {
        if yes {
            Said::Yes
        } else {
            Said::No
        }
    }
}

/// Per option state for one axis.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Options {
    /// What the player said (its last WILL/WONT or DO/DONT).
    player: OptMap<Said>,
    /// What was last sent to the player on this axis (by the game through
    /// the proxy, or by the proxy).
    told_player: OptMap<Said>,
    /// What was last sent to the current backend on the player's behalf.
    told_backend: OptMap<Said>,
    /// The backend's question was passed to the player; its answer is due.
    awaiting_player: OptMap<bool>,
}

/// A value per option number, indexed like a `[T; 256]` but holding only
/// the options that were ever touched (a session negotiates a handful).
/// Eight full arrays cost 2 KiB in every session, most of an idle one.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct OptMap<T: 'static> {
    set: Vec<(u8, T)>,
}

impl<T> Default for OptMap<T> {
    fn default() -> Self {
        OptMap { set: Vec::new() }
    }
}

/// What an option nobody touched reads as.
trait Untouched: Clone + 'static {
    const NONE: &'static Self;
}

impl Untouched for Said {
    const NONE: &'static Said = &Said::Nothing;
}

impl Untouched for bool {
    const NONE: &'static bool = &false;
}

impl<T: Untouched> std::ops::Index<usize> for OptMap<T> {
    type Output = T;
    fn index(&self, o: usize) -> &T {
        self.set
            .iter()
            .find(|(k, _)| usize::from(*k) == o)
            .map_or(T::NONE, |(_, v)| v)
    }
}

impl<T: Untouched> std::ops::IndexMut<usize> for OptMap<T> {
    fn index_mut(&mut self, o: usize) -> &mut T {
        // Option numbers are bytes: every caller indexes with one.
        let k = u8::try_from(o).expect("telnet option numbers fit in a byte");
        let i = match self.set.iter().position(|(x, _)| *x == k) {
            Some(i) => i,
            None => {
                self.set.push((k, T::NONE.clone()));
                self.set.len() - 1
            }
        };
        &mut self.set[i].1
    }
}

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
    backends_seen: u64,
    /// TTYPE questions answered on the current backend connection.
    ttype_asked: usize,
    /// The player's output encoder (MCCP2). Its zlib stream cannot be
    /// written out: an upgrade ends it first and offers MCCP2 again.
    #[serde(skip)]
    pub out: Outbound,
    /// holdfast answers MSSP itself (see `front::mssp`).
    mssp: bool,
    /// The player asked for MSSP (`IAC DO MSSP`) since the last look.
    mssp_asked: bool,
    /// The game's MSSP answer, not yet looked at.
    game_mssp: Option<Vec<u8>>,
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

    /// holdfast answers MSSP itself: offered in the greeting, the player's
    /// `DO MSSP` reported by [`take_mssp`](Self::take_mssp), the game's
    /// offer accepted by the proxy and its answer kept for the proxy, not
    /// passed to the player.
    pub fn with_mssp(mut self, on: bool) -> Self {
        self.mssp = on;
        self
    }

    /// Whether the player asked for MSSP since the last call.
    pub fn take_mssp_request(&mut self) -> bool {
        std::mem::take(&mut self.mssp_asked)
    }

    /// The game's MSSP answer, if one came since the last call.
    pub fn take_game_mssp(&mut self) -> Option<Vec<u8>> {
        self.game_mssp.take()
    }

    fn axis(&mut self, a: Axis) -> &mut Options {
        &mut self.axes[a as usize]
    }

    /// What to send the player when the session starts: the MCCP2 offer.
    pub fn greet(&mut self, to_player: &mut Vec<u8>) {
        if self.player_mccp {
            write_negotiation(Verb::Will, opt::MCCP2, to_player);
            self.axis(Axis::Game).told_player[opt::MCCP2 as usize] = Said::Yes;
        }
        if self.mssp {
            write_negotiation(Verb::Will, opt::MSSP, to_player);
        }
    }

    /// The player's MCCP2 stream was ended (its zlib state cannot cross to
    /// a new process): offer MCCP2 again, so a player who had it gets a
    /// fresh stream once it answers `IAC DO 86`.
    pub fn reoffer_mccp(&mut self, to_player: &mut Vec<u8>) {
        if !self.player_mccp {
            return;
        }
        self.axis(Axis::Game).player[opt::MCCP2 as usize] = Said::Nothing;
        write_negotiation(Verb::Will, opt::MCCP2, to_player);
        self.axis(Axis::Game).told_player[opt::MCCP2 as usize] = Said::Yes;
    }

    /// A new backend connection starts: nothing is agreed with it yet.
    pub fn backend_started(&mut self) {
        self.backends_seen += 1;
        self.first_backend = self.backends_seen == 1;
        self.ttype_asked = 0;
        for a in &mut self.axes {
            a.told_backend = OptMap::default();
            a.awaiting_player = OptMap::default();
        }
    }

    /// A resumed session: the game connection (and what was agreed with
    /// it) stays this policy's, the player's side comes from `new`, the
    /// policy of the connection the player came back on. Returns what the
    /// game should hear now: the new window size if the game takes NAWS.
    pub fn adopt_player_side(&mut self, new: Policy) -> Vec<u8> {
        for (mine, theirs) in self.axes.iter_mut().zip(new.axes) {
            mine.player = theirs.player;
            mine.told_player = theirs.told_player;
            mine.awaiting_player = OptMap::default();
        }
        self.memory = new.memory;
        self.out = new.out;
        self.player_mccp = new.player_mccp;
        let mut to_backend = Vec::new();
        if self.axes[Axis::Player as usize].told_backend[opt::NAWS as usize] == Said::Yes {
            self.memory.on_agreed(opt::NAWS, &mut to_backend);
        }
        to_backend
    }

    /// True if holdfast agreed to MCCP2 from the current backend (the only
    /// case in which its compressed stream is inflated).
    pub fn backend_mccp_agreed(&self) -> bool {
        self.axes[Axis::Game as usize].told_backend[opt::MCCP2 as usize] == Said::Yes
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
        if option == opt::MSSP && self.mssp {
            // holdfast's own MSSP: a DO is a request for its answer.
            self.mssp_asked |= verb == Verb::Do;
            if verb == Verb::Will {
                write_negotiation(Verb::Dont, option, to_player);
            }
            return;
        }
        if matches!(option, opt::MCCP2 | opt::MCCP3 | COMPRESS1) {
            if (ax, option) == (Axis::Game, opt::MCCP2) && self.player_mccp {
                if yes {
                    self.out.start();
                } else {
                    self.out.stop();
                }
                self.axis(ax).player[o] = Said::from(yes);
            } else if yes {
                // Never offered: refused (every time, as RFC 1143 wants).
                self.axis(ax).told_player[o] = Said::No;
                write_negotiation(ax.game_verb(false), option, to_player);
            }
            return;
        }
        let s = self.axis(ax);
        s.player[o] = Said::from(yes);
        if option == opt::ECHO || std::mem::take(&mut s.awaiting_player[o]) {
            // An answer to the backend's question (or ECHO, always relayed).
            s.told_backend[o] = Said::from(yes);
            write_negotiation(verb, option, to_backend);
            return;
        }
        match (s.told_backend[o], yes) {
            (Said::Yes | Said::Asked, true) | (Said::No | Said::Nothing, false) => {}
            (Said::No | Said::Nothing, true) => {
                s.told_backend[o] = Said::Asked;
                write_negotiation(verb, option, to_backend);
            }
            (Said::Yes | Said::Asked, false) => {
                s.told_backend[o] = Said::No;
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
            self.axes[Axis::Player as usize].told_backend[o],
            self.axes[Axis::Game as usize].told_backend[o],
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
        if option == opt::MSSP && self.mssp {
            // The proxy asks the game for its MSSP, for itself.
            let s = self.axis(ax);
            if verb == Verb::Will && s.told_backend[o] != Said::Yes {
                s.told_backend[o] = Said::Yes;
                write_negotiation(Verb::Do, option, to_backend);
            } else if verb == Verb::Do {
                write_negotiation(Verb::Wont, option, to_backend);
            }
            return;
        }
        if matches!(option, opt::MCCP2 | opt::MCCP3 | COMPRESS1) {
            let accept = yes && self.backend_mccp && (ax, option) == (Axis::Game, opt::MCCP2);
            let s = self.axis(ax);
            let on = s.told_backend[o] == Said::Yes;
            // Refusals are repeated, agreements never (RFC 1143).
            if (yes && !(accept && on)) || (!yes && on) {
                s.told_backend[o] = Said::from(accept);
                write_negotiation(ax.player_verb(accept), option, to_backend);
            }
            return;
        }
        if option == opt::ECHO {
            let s = self.axis(ax);
            s.told_player[o] = Said::from(yes);
            s.awaiting_player[o] = true;
            write_negotiation(verb, option, to_player);
            return;
        }
        let first = self.first_backend;
        let s = &mut self.axes[ax as usize];
        match (s.told_backend[o], yes) {
            // The answer to a request the player started.
            (Said::Asked, _) => {
                s.told_backend[o] = Said::from(yes);
                if s.player[o] == Said::Yes && s.told_player[o] != Said::from(yes) {
                    s.told_player[o] = Said::from(yes);
                    write_negotiation(verb, option, to_player);
                }
            }
            // Already so: an acknowledgement, not a question.
            (Said::Yes, true) => {}
            // The backend turns it off: acknowledge; the player is not
            // bothered (its data for the option is held back from now on).
            (Said::Yes, false) => {
                s.told_backend[o] = Said::No;
                write_negotiation(ax.player_verb(false), option, to_backend);
            }
            (Said::No | Said::Nothing, false) => {
                s.told_backend[o] = Said::No;
                if std::mem::take(&mut s.awaiting_player[o]) && s.told_player[o] == Said::Yes {
                    // It withdrew a question the player has not answered.
                    s.told_player[o] = Said::No;
                    write_negotiation(verb, option, to_player);
                }
            }
            // A question.
            (Said::No | Said::Nothing, true) => match s.player[o] {
                Said::Yes => {
                    s.told_backend[o] = Said::Yes;
                    write_negotiation(ax.player_verb(true), option, to_backend);
                    if s.told_player[o] != Said::Yes {
                        // The player's own earlier offer, agreed at last.
                        s.told_player[o] = Said::Yes;
                        write_negotiation(verb, option, to_player);
                    }
                    self.memory.on_agreed(option, to_backend);
                }
                Said::Nothing | Said::Asked if first => {
                    s.awaiting_player[o] = true;
                    s.told_player[o] = Said::Yes;
                    write_negotiation(verb, option, to_player);
                }
                Said::No | Said::Nothing | Said::Asked => {
                    s.told_backend[o] = Said::No;
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
        if option == opt::MSSP && self.mssp {
            self.game_mssp = Some(data.to_vec());
            return;
        }
        let o = option as usize;
        let agreed = self.axes.iter().any(|a| a.told_backend[o] == Said::Yes);
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

#[cfg(test)]
mod tests;
