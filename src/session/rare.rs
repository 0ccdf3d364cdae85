//! What only some sessions have, some of the time: a hold, a re-login
//! being timed, lines typed meanwhile, a lazy connect, a refusal being
//! backed off, a login checked for a resume, a pause, a flood. A relaying
//! session has none of it, and neither has a new one waiting at the
//! connect screen, so it is one boxed part of [`Core`](super::Core)
//! (issue 25: every idle session's task keeps the core inline), made on the
//! first write and dropped once everything in it is back to empty
//! ([`Rare::is_empty`]). (A lazy connect's screen and the login deadline
//! stay in the core: every silent player on the connect screen has them.)

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::input::Item;
use super::playback::Playback;
use crate::login::Credentials;

/// The rarely used part of a session's state (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Rare {
    /// When the current hold began.
    pub held_since: Option<Instant>,
    /// When to try connecting again (held), and whether that time already
    /// went through the re-login pacer.
    pub relogin_at: Option<(Instant, bool)>,
    /// Lines typed while held or during a re-login, with their time.
    pub queue: VecDeque<(Instant, Vec<u8>)>,
    /// Lines dropped for flooding since the player was last warned.
    pub flood_drops: u32,
    /// Retrying after the game refused holdfast's address.
    pub busy: Option<Busy>,
    /// The cached connect screen a lazy session's player has, kept for the
    /// next try when the game refused the connection it opened.
    pub screen_shown: Option<Arc<[u8]>>,
    /// Player input that came in the same read after a login the driver
    /// is checking against detached sessions (`Action::TryResume`): it
    /// goes on, in order, once that is settled (`Core::resume_settled`),
    /// in whichever session the login ends up in. Always empty between
    /// steps, so it is not part of a snapshot.
    pub after_login: Vec<Item>,
    /// A login of this name (resume key) may take a detached session over:
    /// the next such login sent to the game is checked (`Core::resume_verify`).
    pub verify: Option<String>,
    /// When that login went to the game.
    pub verify_started: Option<Instant>,
    /// The game accepted it; the driver is taking the session over.
    pub verified: Option<Box<Verified>>,
    /// Paused by the cluster: the game connection is kept, nothing is
    /// relayed (see [`super::pause`]).
    pub paused: Option<Box<Pause>>,
}

impl Rare {
    /// Nothing in use: what a session without the box reads.
    pub const EMPTY: Rare = Rare {
        held_since: None,
        relogin_at: None,
        queue: VecDeque::new(),
        flood_drops: 0,
        busy: None,
        screen_shown: None,
        after_login: Vec::new(),
        verify: None,
        verify_started: None,
        verified: None,
        paused: None,
    };

    /// Whether everything is back to empty (the box can go).
    pub fn is_empty(&self) -> bool {
        let Rare {
            held_since,
            relogin_at,
            queue,
            flood_drops,
            busy,
            screen_shown,
            after_login,
            verify,
            verify_started,
            verified,
            paused,
        } = self;
        held_since.is_none()
            && relogin_at.is_none()
            && queue.is_empty()
            && *flood_drops == 0
            && busy.is_none()
            && screen_shown.is_none()
            && after_login.is_empty()
            && verify.is_none()
            && verify_started.is_none()
            && verified.is_none()
            && paused.is_none()
    }
}

/// A session retrying a connection the game refused for holdfast's
/// address (see [`super::busy`]).
#[derive(Debug)]
pub(super) struct Busy {
    /// Refusals in a row.
    pub tries: u32,
    /// The player was told.
    pub told: bool,
}

/// A paused session's state (plain data: it crosses an upgrade; see
/// [`super::pause`]).
#[derive(Debug)]
pub(super) struct Pause {
    /// When the pause began.
    pub since: Instant,
    /// The game's output meanwhile, for the player.
    pub kept: Playback,
}

/// A login the game accepted while a detached session of that name was
/// kept: what the driver needs to take it over, or to carry on with it as
/// an ordinary login (see [`super::resume`](mod@super::resume)).
#[derive(Debug)]
pub(super) struct Verified {
    /// The credentials the game accepted.
    pub creds: Credentials,
    /// The game's hidden answer (shown only if nothing is taken over).
    pub held: Vec<u8>,
    /// How long the game took to accept it.
    pub took: Duration,
}
