//! holdfast's own MSSP (option 70), when it answers MSSP itself (see
//! `front::mssp`): it offers MSSP to the player in the greeting, reports
//! the player's `DO MSSP` instead of passing it on, and asks the game for
//! its MSSP for itself, keeping the answer away from the player.
//!
//! Left to the game (`with_mssp(false)`), option 70 is an option like any
//! other and none of this applies: each hook below returns `false`.

use super::options::{Axis, Said};
use super::Policy;
use crate::telnet::{opt, write_negotiation, Verb};

impl Policy {
    /// holdfast answers MSSP itself: offered in the greeting, the player's
    /// `DO MSSP` reported by [`take_mssp_request`](Self::take_mssp_request), the game's
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
    pub fn take_game_mssp(&mut self) -> Option<Box<[u8]>> {
        self.game_mssp.take()
    }

    /// The greeting's MSSP offer, if holdfast answers MSSP.
    pub(super) fn mssp_greet(&self, to_player: &mut Vec<u8>) {
        if self.mssp {
            write_negotiation(Verb::Will, opt::MSSP, to_player);
        }
    }

    /// The player sent `IAC <verb> MSSP`. True if holdfast's own MSSP
    /// handled it; false if the option is the game's.
    pub(super) fn mssp_from_player(&mut self, verb: Verb, to_player: &mut Vec<u8>) -> bool {
        if !self.mssp {
            return false;
        }
        // holdfast's own MSSP: a DO is a request for its answer.
        self.mssp_asked |= verb == Verb::Do;
        if verb == Verb::Will {
            write_negotiation(Verb::Dont, opt::MSSP, to_player);
        }
        true
    }

    /// The backend sent `IAC <verb> MSSP`. True if holdfast's own MSSP
    /// handled it; false if the option is the game's.
    pub(super) fn mssp_from_backend(&mut self, verb: Verb, to_backend: &mut Vec<u8>) -> bool {
        if !self.mssp {
            return false;
        }
        // The proxy asks the game for its MSSP, for itself.
        let (ax, _) = Axis::of_game(verb);
        let o = opt::MSSP as usize;
        let s = self.axis(ax);
        if verb == Verb::Will && s.get(o).told_backend != Said::Yes {
            s.at(o).told_backend = Said::Yes;
            write_negotiation(Verb::Do, opt::MSSP, to_backend);
        } else if verb == Verb::Do {
            write_negotiation(Verb::Wont, opt::MSSP, to_backend);
        }
        true
    }

    /// The backend sent `IAC SB MSSP <data> IAC SE`. True if it was kept
    /// for holdfast; false if the option is the game's.
    pub(super) fn mssp_from_backend_sub(&mut self, data: &[u8]) -> bool {
        if !self.mssp {
            return false;
        }
        self.game_mssp = Some(data.into());
        true
    }
}
