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

/// Per option state for one axis: one small entry per option ever
/// touched (a session negotiates a handful), all four columns together.
/// Four separate maps per axis cost 192 bytes in every session and up to
/// eight small allocations; this is 24 and one.
///
/// It crosses an upgrade in the shape it always had (four maps, see
/// [`Wire`]), so either side of an upgrade reads the other's.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(from = "Wire", into = "Wire")]
pub(super) struct Options {
    set: Vec<Entry>,
}

/// One option's state on one axis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Entry {
    option: u8,
    /// What the player said (its last WILL/WONT or DO/DONT).
    pub(super) player: Said,
    /// What was last sent to the player on this axis (by the game through
    /// the proxy, or by the proxy).
    pub(super) told_player: Said,
    /// What was last sent to the current backend on the player's behalf.
    pub(super) told_backend: Said,
    /// The backend's question was passed to the player; its answer is due.
    pub(super) awaiting_player: bool,
}

impl Entry {
    fn untouched(self) -> bool {
        Entry {
            option: self.option,
            ..Entry::default()
        } == self
    }
}

impl Options {
    /// Option `o` as it stands (all `Nothing` if never touched).
    pub(super) fn get(&self, o: usize) -> Entry {
        self.set
            .iter()
            .find(|e| usize::from(e.option) == o)
            .copied()
            .unwrap_or_default()
    }

    /// Option `o`, to change it (added if never touched).
    pub(super) fn at(&mut self, o: usize) -> &mut Entry {
        // Option numbers are bytes: every caller indexes with one.
        let option = u8::try_from(o).expect("telnet option numbers fit in a byte");
        let i = match self.set.iter().position(|e| e.option == option) {
            Some(i) => i,
            None => {
                self.set.push(Entry {
                    option,
                    ..Entry::default()
                });
                self.set.len() - 1
            }
        };
        &mut self.set[i]
    }

    /// A new backend connection: nothing told to it, nothing awaited.
    pub(super) fn forget_backend(&mut self) {
        for e in &mut self.set {
            e.told_backend = Said::Nothing;
            e.awaiting_player = false;
        }
        self.prune();
    }

    /// The player's side from `theirs` (a resumed session's new
    /// connection); what was told to the backend stays, nothing awaited.
    pub(super) fn adopt_player_side(&mut self, theirs: &Options) {
        for e in &mut self.set {
            let t = theirs.get(usize::from(e.option));
            e.player = t.player;
            e.told_player = t.told_player;
            e.awaiting_player = false;
        }
        for t in &theirs.set {
            if !self.set.iter().any(|e| e.option == t.option) {
                self.set.push(Entry {
                    awaiting_player: false,
                    told_backend: Said::Nothing,
                    ..*t
                });
            }
        }
        self.prune();
    }

    fn prune(&mut self) {
        self.set.retain(|e| !e.untouched());
    }
}

/// [`Options`] as an upgrade carries it: four maps of option to value.
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    player: OptMap<Said>,
    told_player: OptMap<Said>,
    told_backend: OptMap<Said>,
    awaiting_player: OptMap<bool>,
}

/// The pairs of one column whose value is not the untouched one.
#[derive(serde::Serialize, serde::Deserialize)]
struct OptMap<T> {
    set: Vec<(u8, T)>,
}

impl From<Options> for Wire {
    fn from(o: Options) -> Wire {
        fn column<T: PartialEq + Default>(o: &Options, f: impl Fn(&Entry) -> T) -> OptMap<T> {
            OptMap {
                set: o
                    .set
                    .iter()
                    .map(|e| (e.option, f(e)))
                    .filter(|(_, v)| *v != T::default())
                    .collect(),
            }
        }
        Wire {
            player: column(&o, |e| e.player),
            told_player: column(&o, |e| e.told_player),
            told_backend: column(&o, |e| e.told_backend),
            awaiting_player: column(&o, |e| e.awaiting_player),
        }
    }
}

impl From<Wire> for Options {
    fn from(w: Wire) -> Options {
        let mut o = Options::default();
        for (k, v) in w.player.set {
            o.at(k.into()).player = v;
        }
        for (k, v) in w.told_player.set {
            o.at(k.into()).told_player = v;
        }
        for (k, v) in w.told_backend.set {
            o.at(k.into()).told_backend = v;
        }
        for (k, v) in w.awaiting_player.set {
            o.at(k.into()).awaiting_player = v;
        }
        o.prune();
        o
    }
}
