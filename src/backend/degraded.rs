//! The probe's degraded state, without I/O: fed what each probe found
//! (with the time), it says when the probe becomes degraded or healthy
//! again, when to repeat the warning, and whether to hold the heartbeat
//! login back after a rejection. See `health` for what "degraded" means.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Heartbeat;
use crate::secret::Secret;

/// While the probe is degraded, its warning is logged again this often.
pub const DEGRADED_WARN_EVERY: Duration = Duration::from_secs(300);
/// A rejected heartbeat login is tried again after this long.
pub const LOGIN_RETRY: Duration = Duration::from_secs(300);
/// Probes in a row in which only the connect screen answered (the
/// heartbeat player's `think` did not) before the probe is degraded.
pub const STUCK_DEGRADED_AFTER: u32 = 3;

/// The game is alive; how much of the probe worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alive {
    /// The logged-in probe answered.
    Answered,
    /// No heartbeat user: the connect screen came.
    ConnectOnly,
    /// The login is held back after a rejection: the connect screen came.
    LoginHeld,
    /// Only the connect screen came; the login or its `think` did not
    /// answer (why).
    Screen(String),
    /// The heartbeat login was rejected with this line.
    Rejected(String),
    /// The game refused holdfast's address with this line.
    Refused(String),
}

/// What to do after [`Degraded::note`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// Report the probe degraded, with this reason.
    pub degraded: Option<String>,
    /// Report the probe healthy again.
    pub healthy: bool,
    /// Log the (current) degraded warning now.
    pub warn: bool,
}

/// A rejected login, not tried again before `until` with the same settings.
struct LoginBlock {
    until: Instant,
    user: Option<String>,
    password: Option<Secret>,
}

/// The degraded state of one probe.
#[derive(Default)]
pub struct Degraded {
    reason: Option<String>,
    warned_at: Option<Instant>,
    stuck: u32,
    login_block: Option<LoginBlock>,
}

impl Degraded {
    /// Why the probe is degraded, if it is.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// Takes what a probe that found the game alive saw at `now`.
    pub fn note(&mut self, alive: Alive, hb: &Heartbeat, now: Instant) -> Step {
        let next = match alive {
            Alive::Answered | Alive::ConnectOnly => {
                self.stuck = 0;
                None
            }
            Alive::LoginHeld => self.reason.clone(),
            Alive::Screen(why) => {
                self.stuck += 1;
                if self.stuck >= STUCK_DEGRADED_AFTER {
                    Some(format!(
                        "heartbeat player does not answer ({why}); only the connect screen shows the game is up"
                    ))
                } else {
                    self.reason.clone()
                }
            }
            Alive::Rejected(line) => {
                self.login_block = Some(LoginBlock {
                    until: now + LOGIN_RETRY,
                    user: hb.user.clone(),
                    password: hb.password.clone(),
                });
                Some(format!(
                    "heartbeat login rejected ({line}): check heartbeat.user and its password; quit and crash cannot be told apart"
                ))
            }
            Alive::Refused(line) => Some(format!(
                "the game refuses holdfast's address ({line}): raise its per-address limits"
            )),
        };
        let mut step = Step::default();
        match next {
            None => {
                if self.reason.take().is_some() {
                    self.warned_at = None;
                    step.healthy = true;
                }
            }
            Some(reason) => {
                let changed = self.reason.as_deref() != Some(reason.as_str());
                let due = self
                    .warned_at
                    .is_none_or(|t| now.duration_since(t) >= DEGRADED_WARN_EVERY);
                if changed || due {
                    step.warn = true;
                    self.warned_at = Some(now);
                }
                if changed {
                    step.degraded = Some(reason.clone());
                }
                self.reason = Some(reason);
            }
        }
        step
    }

    /// Whether the heartbeat login is held back at `now` after a
    /// rejection: until [`LOGIN_RETRY`] has passed or the heartbeat user or
    /// password changed.
    pub fn login_held(&mut self, hb: &Heartbeat, now: Instant) -> bool {
        match &self.login_block {
            Some(b) if now < b.until && b.user == hb.user && b.password == hb.password => true,
            Some(_) => {
                self.login_block = None;
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(pw: &str) -> Heartbeat {
        Heartbeat {
            user: Some("heartbeat".into()),
            password: Some(Secret::new(pw)),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            fall: 2,
            rise: 1,
        }
    }

    #[test]
    fn rejected_login_warns_again_every_five_minutes_until_fixed() {
        let mut d = Degraded::default();
        let t0 = Instant::now();
        let s = d.note(Alive::Rejected("nope".into()), &hb("bad"), t0);
        assert!(s.warn && s.degraded.is_some() && !s.healthy);
        // Held back: the next probes only look at the connect screen.
        for i in 1..150 {
            let now = t0 + Duration::from_secs(2 * i);
            assert!(d.login_held(&hb("bad"), now));
            let s = d.note(Alive::LoginHeld, &hb("bad"), now);
            assert_eq!(s.degraded, None, "reported once");
            assert!(!s.warn, "warned again after {}s", 2 * i);
        }
        let later = t0 + DEGRADED_WARN_EVERY;
        let s = d.note(Alive::LoginHeld, &hb("bad"), later);
        assert!(s.warn);
        // Tried again after LOGIN_RETRY, at once with a new password.
        assert!(!d.login_held(&hb("bad"), t0 + LOGIN_RETRY));
        d.note(Alive::Rejected("nope".into()), &hb("bad"), later);
        assert!(d.login_held(&hb("bad"), later));
        assert!(!d.login_held(&hb("good"), later));
        let s = d.note(Alive::Answered, &hb("good"), later);
        assert!(s.healthy && !s.warn && s.degraded.is_none());
        assert_eq!(d.reason(), None);
    }

    #[test]
    fn a_heartbeat_that_never_answers_degrades_after_three_probes() {
        let mut d = Degraded::default();
        let t0 = Instant::now();
        for i in 1..STUCK_DEGRADED_AFTER {
            let s = d.note(Alive::Screen("slow".into()), &hb("x"), t0);
            assert_eq!(s, Step::default(), "probe {i}");
        }
        let s = d.note(Alive::Screen("slow".into()), &hb("x"), t0);
        assert!(s.degraded.is_some() && s.warn);
        // One answer ends it, and the count starts over.
        assert!(d.note(Alive::Answered, &hb("x"), t0).healthy);
        let s = d.note(Alive::Screen("slow".into()), &hb("x"), t0);
        assert_eq!(s, Step::default());
    }
}
