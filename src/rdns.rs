//! Reverse DNS for PennMUSH's `IP^HOSTNAME` header, off the session's path.
//!
//! A session asks for its player's name as soon as it starts
//! ([`Resolver::prefetch`]); the lookup runs on the blocking pool with a
//! short timeout and lands in a small cache. When the session connects to
//! the game it takes whatever is cached ([`Resolver::cached`]) and never
//! waits: a slow resolver means the game sees the IP as the host name.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one reverse lookup may take.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an answer (or a failure) is kept.
pub const CACHE_TTL: Duration = Duration::from_secs(600);
/// Entries kept at most; the cache is cleared when full (simple and bounded).
pub const CACHE_MAX: usize = 10_000;

/// Cached answers: the name (if any) and when it was looked up.
type Cache = HashMap<IpAddr, (Option<String>, Instant)>;

/// A reverse-DNS cache.
#[derive(Default, Clone)]
pub struct Resolver {
    cache: Arc<Mutex<Cache>>,
}

impl Resolver {
    /// The cached name of `ip`, if a lookup finished and found one.
    pub fn cached(&self, ip: IpAddr) -> Option<String> {
        let g = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match g.get(&ip) {
            Some((name, at)) if at.elapsed() < CACHE_TTL => name.clone(),
            _ => None,
        }
    }

    /// Starts a lookup of `ip` in the background unless one is cached.
    pub fn prefetch(&self, ip: IpAddr) {
        {
            let mut g = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, at)) = g.get(&ip) {
                if at.elapsed() < CACHE_TTL {
                    return;
                }
            }
            if g.len() >= CACHE_MAX {
                g.clear();
            }
            // Mark it as in flight (no name yet) so concurrent sessions from
            // one address start one lookup.
            g.insert(ip, (None, Instant::now()));
        }
        let cache = self.cache.clone();
        tokio::spawn(async move {
            let lookup = tokio::task::spawn_blocking(move || dns_lookup::lookup_addr(&ip).ok());
            let name = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
                Ok(Ok(Some(n))) if n != ip.to_string() && valid_host(&n) => Some(n),
                _ => None,
            };
            cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(ip, (name, Instant::now()));
        });
    }
}

/// A name safe to put in the header: letters, digits, dots and dashes only
/// (a hostile PTR record must not inject a `^` or a newline).
fn valid_host(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_hostile_names() {
        assert!(valid_host("player.example.org"));
        assert!(!valid_host("evil^1.2.3.4\r\n"));
        assert!(!valid_host(""));
    }

    #[tokio::test]
    async fn loopback_resolves_without_blocking() {
        let r = Resolver::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(r.cached(ip), None, "nothing before a lookup");
        r.prefetch(ip);
        let t0 = Instant::now();
        while r.cached(ip).is_none() && t0.elapsed() < LOOKUP_TIMEOUT * 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // /etc/hosts names 127.0.0.1 on every Debian machine.
        assert_eq!(r.cached(ip).as_deref(), Some("localhost"));
    }
}
