//! The names of players holdfast is logging back in, shared by every
//! session: the game's announcements about them ("Alice has connected.")
//! are held back while they are here (see `session::busy`).
//!
//! Every session asks [`QuietNames::active`] on every read of game output,
//! so that is one atomic load and no lock; entries expire by themselves
//! and are pruned when names are added.
//!
//! The heartbeat player's announcements are never news (it is holdfast's
//! own probe): its name is held *always* ([`QuietNames::hold_always`]).
//! A session then looks at its output line by line only when a read
//! mentions that name ([`QuietNames::mentions_always`], a search compiled
//! once per name, so a read is scanned at the speed of a SIMD literal
//! search: a `memchr` loop for the name's first letter in either case
//! stopped every few dozen bytes of ordinary text and was 30% of the
//! proxy's CPU in bulk output, issue 25),
//! so the game's "heartbeat has disconnected." is held back even when it
//! arrives before the probe has noticed its connection close.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Entries kept before expired ones are pruned.
const PRUNE_AT: usize = 256;
/// The longest end of a read [`QuietNames::may_begin_always`] looks at.
const MAY_BEGIN_MAX: usize = 256;

/// Player names (lower-cased) and until when they are held.
#[derive(Debug)]
pub struct QuietNames {
    names: Mutex<HashMap<String, Instant>>,
    /// Names held always (lower-cased), and their search.
    always: std::sync::RwLock<Always>,
    /// When the last hold ends, in milliseconds after `base` (0: none).
    until_ms: AtomicU64,
    base: Instant,
}

/// The names held always and one search for all of them (ASCII case
/// ignored); `None` when there are none, or (never seen) the search could
/// not be built, in which case [`mentions`] does it the slow way.
#[derive(Debug, Default)]
struct Always {
    names: Vec<String>,
    search: Option<regex::bytes::Regex>,
}

impl Always {
    fn of(names: Vec<String>) -> Always {
        let pattern = names
            .iter()
            .map(|n| regex::escape(n))
            .collect::<Vec<_>>()
            .join("|");
        let search = (!names.is_empty())
            .then(|| {
                regex::bytes::RegexBuilder::new(&pattern)
                    .case_insensitive(true)
                    .unicode(false)
                    .build()
                    .ok()
            })
            .flatten();
        Always { names, search }
    }
}

impl Default for QuietNames {
    fn default() -> Self {
        QuietNames {
            names: Mutex::default(),
            always: Default::default(),
            until_ms: AtomicU64::new(0),
            base: Instant::now(),
        }
    }
}

impl QuietNames {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds `name` for `for_` from now (or longer, if already held longer).
    pub fn hold(&self, name: &str, for_: Duration) {
        let now = Instant::now();
        let until = now + for_;
        let mut g = self.lock();
        if g.len() >= PRUNE_AT {
            g.retain(|_, t| *t > now);
        }
        let e = g.entry(name.to_lowercase()).or_insert(until);
        *e = (*e).max(until);
        let ms = u64::try_from((until - self.base).as_millis()).unwrap_or(u64::MAX);
        self.until_ms.fetch_max(ms.max(1), Ordering::AcqRel);
    }

    /// Stops holding `name`: its player is leaving the game on purpose
    /// (sent the quit command), so the game's "has disconnected." about
    /// them is news again.
    pub fn release(&self, name: &str) {
        if !self.active() {
            return;
        }
        self.lock().remove(&name.to_lowercase());
    }

    /// Holds `name` from now on (the heartbeat player's); replaces the
    /// name held so before.
    pub fn hold_always(&self, name: &str) {
        let name = name.to_lowercase();
        let mut g = self.always.write().unwrap_or_else(|e| e.into_inner());
        if g.names.len() != 1 || g.names[0] != name {
            *g = Always::of(vec![name]);
        }
    }

    /// Whether `buf` mentions a name held always (ASCII case ignored).
    pub fn mentions_always(&self, buf: &[u8]) -> bool {
        let g = self.always.read().unwrap_or_else(|e| e.into_inner());
        match &g.search {
            Some(s) => s.is_match(buf),
            None => g.names.iter().any(|n| mentions(buf, n.as_bytes())),
        }
    }

    /// Whether `buf` ends in what may be the start of an announcement about
    /// a name held always, cut by the end of the read: after its last
    /// newline, leading blanks and ANSI colour codes, the rest is a
    /// beginning of that name (`heartb`, any case), as every preset's
    /// announcements start with the name. The session then holds that
    /// partial line back for its rest, as it does while any name is held.
    pub fn may_begin_always(&self, buf: &[u8]) -> bool {
        let last = match memchr::memrchr(b'\n', buf) {
            Some(i) => &buf[i + 1..],
            None => buf,
        };
        // Cheap for the usual read, which ends with a newline.
        if last.is_empty() || last.len() > MAY_BEGIN_MAX {
            return false;
        }
        let rest = skip_blanks_and_ansi(last);
        if rest.is_empty() {
            return false;
        }
        let g = self.always.read().unwrap_or_else(|e| e.into_inner());
        g.names
            .iter()
            .any(|n| n.len() > rest.len() && n.as_bytes()[..rest.len()].eq_ignore_ascii_case(rest))
    }

    /// Whether any name may be held now.
    ///
    /// The first call after the last hold has ended empties the map and
    /// gives its table back: otherwise the crowd of a game's restart keeps
    /// its peak (about 24 KiB for 300 players) until the next one, as
    /// expired names are otherwise pruned only when names are added.
    pub fn active(&self) -> bool {
        let until = self.until_ms.load(Ordering::Acquire);
        if until == 0 {
            return false;
        }
        if (self.base.elapsed().as_millis() as u64) < until {
            return true;
        }
        // Ended. One caller wins the exchange and empties the map; a hold
        // made meanwhile either raised `until_ms` first (the exchange
        // fails, nothing is emptied) or raises it after (its name is
        // still in the future and is kept).
        if self
            .until_ms
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let now = Instant::now();
            let mut g = self.lock();
            g.retain(|_, t| *t > now);
            g.shrink_to_fit();
        }
        false
    }

    /// Whether `name` is held now.
    pub fn contains(&self, name: &str) -> bool {
        let lower = name.to_lowercase();
        let always = self.always.read().unwrap_or_else(|e| e.into_inner());
        if always.names.contains(&lower) {
            return true;
        }
        drop(always);
        if !self.active() {
            return false;
        }
        let now = Instant::now();
        self.lock()
            .get(&name.to_lowercase())
            .is_some_and(|t| *t > now)
    }
}

/// `s` without its leading blanks and ANSI escape sequences (`ESC [ ...
/// final`), as an announcement is matched (trimmed, colour removed).
fn skip_blanks_and_ansi(mut s: &[u8]) -> &[u8] {
    loop {
        match s {
            [b' ' | b'\t' | b'\r', rest @ ..] => s = rest,
            [0x1b, b'[', rest @ ..] => match rest.iter().position(|b| (0x40..=0x7e).contains(b)) {
                Some(i) => s = &rest[i + 1..],
                // Cut inside the escape itself: nothing to compare yet.
                None => return &[],
            },
            _ => return s,
        }
    }
}

/// Whether `hay` holds `needle` (lower-case ASCII), any case.
fn mentions(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return false;
    };
    let mut at = 0;
    while let Some(i) = memchr::memchr2(first, first.to_ascii_uppercase(), &hay[at..]) {
        let start = at + i + 1;
        if hay
            .get(start..start + rest.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(rest))
        {
            return true;
        }
        at = start;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_held_always_is_found_in_any_case() {
        let q = QuietNames::default();
        assert!(!q.mentions_always(b"heartbeat has connected."));
        q.hold_always("Heartbeat");
        assert!(q.mentions_always(b"\r\nHEARTBEAT has disconnected.\r\n"));
        assert!(q.mentions_always(b"heartbeat"));
        assert!(!q.mentions_always(b"heartbea"));
        assert!(q.contains("heartBeat") && !q.active());
    }

    /// The compiled search finds what the letter-by-letter scan finds:
    /// any ASCII case, names with characters a pattern would read as
    /// syntax, non-ASCII bytes, a name cut by the end of the read.
    #[test]
    fn the_search_and_the_scan_agree() {
        let hays: [&[u8]; 9] = [
            b"HeArTbEaT has connected.",
            b"heartbea",
            b"the heart beats",
            b"xxhb.probexx",
            b"hbXprobe",
            b"a+b=c",
            b"aab",
            b"caf\xc3\xa9 H\xc3\xa9",
            b"",
        ];
        for name in ["heartbeat", "hb.probe", "a+b", "h\u{e9}"] {
            let q = QuietNames::default();
            q.hold_always(name);
            let lower = name.to_lowercase();
            assert!(
                q.always.read().unwrap().search.is_some(),
                "{name}: no search built"
            );
            for hay in hays {
                assert_eq!(
                    q.mentions_always(hay),
                    mentions(hay, lower.as_bytes()),
                    "{name:?} in {:?}",
                    String::from_utf8_lossy(hay)
                );
            }
            assert!(
                q.mentions_always(format!("x{}y", name.to_uppercase()).as_bytes())
                    || !name.is_ascii()
            );
        }
    }

    #[test]
    fn a_read_that_ends_in_the_start_of_a_name_held_always_is_seen() {
        let q = QuietNames::default();
        assert!(!q.may_begin_always(b"heartb"));
        q.hold_always("heartbeat");
        for yes in [
            &b"heartb"[..],
            b"Alice says, hi\r\nHeart",
            b"hi\r\n  \x1b[1mh",
        ] {
            assert!(q.may_begin_always(yes), "{yes:?}");
        }
        for no in [
            &b"heartb\r\n"[..],
            b"hi\r\n",
            b"hi\r\nhearty",
            // The whole name is `mentions_always`'s.
            b"heartbeat",
            b"hi\r\n\x1b[1",
            b"",
        ] {
            assert!(!q.may_begin_always(no), "{no:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn names_expire() {
        let q = QuietNames::default();
        assert!(!q.active());
        q.hold("Alice", Duration::from_secs(5));
        assert!(q.active());
        assert!(q.contains("alice") && q.contains("ALICE") && !q.contains("Bob"));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!q.contains("Alice"));
        assert!(!q.active());
    }

    /// A restart's crowd of names is given back once the last hold has
    /// ended, without waiting for the next hold to prune it; a hold made
    /// afterwards works as before.
    #[tokio::test(start_paused = true)]
    async fn the_map_is_emptied_when_the_last_hold_ends() {
        let q = QuietNames::default();
        for i in 0..300 {
            q.hold(&format!("player{i}"), Duration::from_secs(5 + i % 3));
        }
        assert!(q.lock().capacity() >= 300);
        tokio::time::advance(Duration::from_secs(6)).await;
        // A third of the names are held for another second.
        assert!(q.active());
        assert_eq!(q.lock().len(), 300);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!q.active());
        assert_eq!(q.lock().capacity(), 0, "the table is given back");
        assert!(!q.active() && !q.contains("player0"));
        q.hold("Alice", Duration::from_secs(5));
        assert!(q.active() && q.contains("alice"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_name_is_shown_again() {
        let q = QuietNames::default();
        q.hold("Alice", Duration::from_secs(10));
        q.hold("Bob", Duration::from_secs(10));
        q.release("ALICE");
        assert!(!q.contains("Alice") && q.contains("Bob"));
    }
}
