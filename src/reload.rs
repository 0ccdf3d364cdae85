//! Reloading the configuration (SIGHUP, or the bus `reload` request):
//! re-read, validate, swap. An invalid file changes nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::events::Event;
use crate::state::Shared;

/// Re-reads the config file. On success the new config is live at once
/// (sessions read it as they go; the failover manager moves everyone if the
/// preferred backend changed). On error nothing changes.
pub fn reload(shared: &Shared) -> Result<(), ConfigError> {
    let old = shared.config();
    match Config::load(&old.path) {
        Ok(new) => {
            for w in &new.warnings {
                warn!("{w}");
            }
            if new.listen.addrs != old.listen.addrs {
                warn!("listen.addrs changed: the listeners are kept until a restart");
            }
            if new.doors.tls_addrs != old.doors.tls_addrs
                || new.doors.ws_addrs != old.doors.ws_addrs
                || new.doors.wss_addrs != old.doors.wss_addrs
            {
                warn!("listen.tls_addrs, ws_addrs or wss_addrs changed: the listeners are kept until a restart");
            }
            if let Some(t) = &new.doors.tls {
                // Re-read just now: new handshakes use this pair.
                info!(cert = %t.cert_file.display(), key = %t.key_file.display(), "TLS certificate loaded");
            }
            if new.bus.servers != old.bus.servers || new.bus.instance != old.bus.instance {
                warn!("bus servers or instance changed: they take effect on restart");
            }
            info!(file = %old.path.display(), backends = new.backends.len(), preferred = %new.preferred().name, "config reloaded");
            // The failover manager will not move players onto a preferred
            // backend that is down (see backend::pool): say so here too.
            let pref = new.preferred();
            let refused = pref.name != old.preferred().name
                && old.backend(&shared.pool.borrow().active).is_some()
                && new.backend(&shared.pool.borrow().active).is_some()
                && shared
                    .pool
                    .borrow()
                    .refuses_move_to(&pref.name, &pref.addr.to_string());
            let failover = refused.then(|| {
                format!(
                    "not moved: the new preferred backend {:?} is down",
                    pref.name
                )
            });
            shared.config.send_replace(Arc::new(new));
            shared.events.emit(
                Event::new("config.reloaded")
                    .with("ok", true)
                    .with_opt("failover", failover),
            );
            Ok(())
        }
        Err(e) => {
            error!(error = %e, "config reload failed; keeping the running config");
            shared.reload_failures.fetch_add(1, Ordering::Relaxed);
            shared.events.emit(
                Event::new("config.reloaded")
                    .with("ok", false)
                    .with("error", e.to_string()),
            );
            Err(e)
        }
    }
}
