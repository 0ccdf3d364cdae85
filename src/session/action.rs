//! What the session core is given for one step ([`Ctx`]) and what it asks
//! the driver to do ([`Action`]): the whole interface between the
//! [`Core`](super::Core) and the sockets.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use zeroize::Zeroizing;

use super::End;
use crate::config::Config;
use crate::events::Event;
use crate::login::Credentials;

/// What the core needs from the world for one step.
pub struct Ctx<'a> {
    /// The live configuration.
    pub cfg: &'a Config,
    /// The time of the event.
    pub now: Instant,
    /// Reserves the next re-login slot (shared pacing plus jitter). Tests
    /// pass a closure that returns `now`.
    pub relogin_slot: &'a mut dyn FnMut() -> Instant,
    /// Whether the game's connect/disconnect announcements about this
    /// player name are held back (holdfast is logging that player back in:
    /// see [`Action::Quiet`]). `None`: nobody is being restored.
    pub quiet: Option<&'a dyn Fn(&str) -> bool>,
    /// While lines are checked (`quiet`): whether a line cut by the end of
    /// a read may still become an announcement, so it waits for its rest
    /// ([`super::core::Tail`]). `None`: any may. The driver's says yes
    /// while names are being restored, and for a piece that names or
    /// begins the name held always (the heartbeat's): a game's output
    /// checked only to join a piece that came before must not keep every
    /// later read waiting.
    pub hold_tail: Option<&'a HoldTail<'a>>,
}

/// See [`Ctx::hold_tail`]: whether a piece of a line may still become an
/// announcement.
pub type HoldTail<'a> = dyn Fn(&[u8]) -> bool + 'a;

/// Something the driver must do, in the order pushed.
#[derive(Debug)]
pub enum Action {
    /// Bytes for the player (telnet-escaped, before the player's MCCP2):
    /// the game's output.
    Player(Vec<u8>),
    /// A notice of holdfast's own for the player (not kept for a player
    /// who is away: see [`super::detach`]).
    Notice(Vec<u8>),
    /// The player typed a login while not logged in: if a detached session
    /// of that name exists, call [`Core::resume_verify`](super::Core::resume_verify) with the line (the
    /// game is asked), else [`Core::resume_refused`](super::Core::resume_refused).
    TryResume {
        /// The login.
        creds: Credentials,
        /// The line as typed (it holds the password: wiped on drop).
        line: Zeroizing<Vec<u8>>,
    },
    /// The game accepted a login that may take a detached session over
    /// (see [`Core::resume_verify`](super::Core::resume_verify)): take the most recent live one of that
    /// name over (then [`Core::resumed_with`](super::Core::resumed_with)), or, with none left, call
    /// [`Core::verified_unclaimed`](super::Core::verified_unclaimed).
    Resume,
    /// Bytes for the game connection (may hold a password: wiped on drop).
    Game(Zeroizing<Vec<u8>>),
    /// Open a connection to this backend, then call [`Core::connected`](super::Core::connected) or
    /// [`Core::connect_failed`](super::Core::connect_failed).
    Connect(String),
    /// Ask the backend's heartbeat whether the game is alive, counting only
    /// an answer from a probe connection older than `since`; then call
    /// [`Core::alive`](super::Core::alive).
    AskAlive {
        /// The backend.
        backend: String,
        /// When the session's connection to it was made.
        since: Instant,
    },
    /// End the game connection cleanly: send `quit`, discard the game's
    /// goodbye, close.
    Leave {
        /// The game's quit command line.
        quit: Vec<u8>,
    },
    /// Drop the game connection without a word (the game is gone).
    DropGame,
    /// MSSP for the player, or the game's MSSP to remember (holdfast
    /// answers MSSP itself: `front::mssp`).
    Mssp(super::mssp::Request),
    /// A bus event.
    Emit(Event),
    /// The game refused a connection or login for a per-address limit
    /// (holdfast's address): slow the shared re-login pacer down.
    Refused,
    /// Hold back the game's announcements about player `name` from every
    /// session for `for_` (it is being logged back in).
    Quiet {
        /// The player's name (the session's own string).
        name: Arc<str>,
        /// For how long from now.
        for_: Duration,
    },
    /// The game's connect screen as this connection showed it (telnet
    /// removed), for the connect-screen cache of lazy connect.
    ScreenSeen {
        /// The backend that showed it.
        backend: String,
        /// The screen's text.
        text: Arc<[u8]>,
    },
    /// A lazy session's game connection showed a connect screen other
    /// than the cached copy its player got: the game's screen changed, the
    /// copy is out of date (the probe drops it: see
    /// `ProbeHandle::screen_changed`).
    ScreenChanged {
        /// The backend whose screen changed.
        backend: String,
        /// The copy the player got.
        shown: Arc<[u8]>,
    },
    /// End the session.
    Close(End),
}

/// The pushed actions of one step.
pub type Actions = Vec<Action>;
