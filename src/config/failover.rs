//! `[failover]`: when all players move to another backend on their own.

use std::time::Duration;

use super::defaults;
use super::raw::RawFailover;

/// `[failover]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    /// Automatic failover once the active backend is down this long.
    pub after: Option<Duration>,
    /// Move back to the preferred backend when it returns.
    pub failback: bool,
}

/// `after = "0s"` is allowed: fail over as soon as the probe says down.
pub(super) fn resolve(f: RawFailover) -> Failover {
    Failover {
        after: f
            .after
            .map(|d| d.0)
            .unwrap_or(Some(defaults::FAILOVER_AFTER)),
        failback: f.failback.unwrap_or(false),
    }
}
