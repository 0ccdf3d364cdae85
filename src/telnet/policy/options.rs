//! What each side said about each option: the bookkeeping [`Policy`]
//! decides from, per axis (which side performs the option) and per option.
//!
//! Plain data, serialised with the session (a handover carries it over).
//!
//! [`Policy`]: super::Policy

use super::super::Verb;

/// Which side of the connection performs an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Axis {
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
    pub(super) fn of_player(v: Verb) -> (Axis, bool) {
        match v {
            Verb::Will => (Axis::Player, true),
            Verb::Wont => (Axis::Player, false),
            Verb::Do => (Axis::Game, true),
            Verb::Dont => (Axis::Game, false),
        }
    }

    /// The axis and yes/no of a verb sent by the game (or by the proxy in
    /// the game's place).
    pub(super) fn of_game(v: Verb) -> (Axis, bool) {
        match v {
            Verb::Do => (Axis::Player, true),
            Verb::Dont => (Axis::Player, false),
            Verb::Will => (Axis::Game, true),
            Verb::Wont => (Axis::Game, false),
        }
    }

    /// The verb the player's side uses on this axis.
    pub(super) fn player_verb(self, yes: bool) -> Verb {
        match (self, yes) {
            (Axis::Player, true) => Verb::Will,
            (Axis::Player, false) => Verb::Wont,
            (Axis::Game, true) => Verb::Do,
            (Axis::Game, false) => Verb::Dont,
        }
    }

    /// The verb the game's side uses on this axis.
    pub(super) fn game_verb(self, yes: bool) -> Verb {
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
pub(super) enum Said {
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
    pub(super) fn from(yes: bool) -> Said {
        if yes {
            Said::Yes
        } else {
            Said::No
        }
    }
}

/// Per option state for one axis.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct Options {
    /// What the player said (its last WILL/WONT or DO/DONT).
    pub(super) player: OptMap<Said>,
    /// What was last sent to the player on this axis (by the game through
    /// the proxy, or by the proxy).
    pub(super) told_player: OptMap<Said>,
    /// What was last sent to the current backend on the player's behalf.
    pub(super) told_backend: OptMap<Said>,
    /// The backend's question was passed to the player; its answer is due.
    pub(super) awaiting_player: OptMap<bool>,
}

/// A value per option number, indexed like a `[T; 256]` but holding only
/// the options that were ever touched (a session negotiates a handful).
/// Eight full arrays cost 2 KiB in every session, most of an idle one.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct OptMap<T: 'static> {
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
