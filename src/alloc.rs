//! The allocator's per-thread caches, given back once a crowd has left.
//!
//! jemalloc keeps a cache of freed blocks in each thread (its `tcache`:
//! the 16 KiB game reads come from there, not from the arena's lock). A
//! cache is trimmed only while its thread allocates, so a worker that goes
//! idle when the players leave keeps what it cached at the peak, and with
//! it the partly used pages those blocks sit in: about 1.3 MiB over the
//! soak's workers (docs/benchmarks.md, "What stays after a load").
//!
//! [`give_back_after_crowds`] watches the number of sessions; when it has
//! fallen to three quarters of what it was (a crowd left), every worker
//! drops its cache the next time it parks ([`on_park`], the runtime's park
//! hook), and jemalloc's background thread returns the pages. A worker
//! that is still busy builds a new cache at once; dropping one costs a few
//! tens of microseconds, a few times per crowd.
//!
//! Only with jemalloc as the allocator (the default feature); otherwise
//! every function here does nothing. No `unsafe`: the cache is dropped
//! through `tikv-jemalloc-ctl`'s safe access to `thread.tcache.enabled`.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// How often the number of sessions is looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Rounds of giving back asked for so far; each worker drops its cache
/// once per round.
static ROUND: AtomicU64 = AtomicU64::new(0);

/// Rung at each round, for [`follow_on_this_thread`].
static RANG: Notify = Notify::const_new();

thread_local! {
    /// The last round this thread has done.
    static DONE: Cell<u64> = const { Cell::new(0) };
}

/// The runtime's `on_thread_park` hook: a worker about to sleep drops its
/// cache if a round was asked for since it last did. One atomic load
/// otherwise.
pub fn on_park() {
    let round = ROUND.load(Ordering::Relaxed);
    if round != DONE.with(|d| d.replace(round)) {
        drop_thread_cache();
    }
}

/// Asks every worker to drop its cache, and wakes them so that an idle
/// one does it now: a handful of empty tasks, which the scheduler hands to
/// sleeping workers, each of which parks again afterwards. Call it from
/// inside the runtime.
pub fn give_back() {
    // The measuring build can be told not to, for a before and after.
    #[cfg(feature = "jemalloc-stats")]
    if std::env::var_os("HOLDFAST_NO_GIVE_BACK").is_some() {
        return;
    }
    ROUND.fetch_add(1, Ordering::Relaxed);
    RANG.notify_waiters();
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    for _ in 0..2 * workers {
        tokio::spawn(async {});
    }
}

/// For the thread that runs the process's main future (`block_on`), which
/// is no worker and has no park hook: drops this thread's cache at each
/// round. Poll it beside that future, on that thread; it never ends.
pub async fn follow_on_this_thread() {
    loop {
        // Made before the check, so a round rung in between is not missed.
        let rung = RANG.notified();
        on_park();
        rung.await;
    }
}

/// Runs for the life of the process: [`give_back`] each time `count` (the
/// live sessions) has fallen to three quarters of its highest value since
/// the last time (or since the start).
pub async fn give_back_after_crowds(count: impl Fn() -> usize) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut high = count();
    loop {
        tick.tick().await;
        let now = count();
        high = high.max(now);
        if crowd_left(high, now) {
            give_back();
            high = now;
        }
    }
}

/// A crowd left: the sessions fell from `high` to three quarters of it or
/// fewer.
fn crowd_left(high: usize, now: usize) -> bool {
    now < high && now * 4 <= high * 3
}

#[cfg(all(feature = "tikv-jemallocator", not(feature = "mimalloc")))]
fn drop_thread_cache() {
    use tikv_jemalloc_ctl::{Access, AsName};
    // Off flushes the cache's blocks back to the arena and frees the cache;
    // on starts an empty one.
    let name = b"thread.tcache.enabled\0".name();
    if name.write(false).is_ok() {
        let _ = name.write(true);
    }
}

#[cfg(not(all(feature = "tikv-jemallocator", not(feature = "mimalloc"))))]
fn drop_thread_cache() {}

/// For measuring (feature `jemalloc-stats`): with
/// `HOLDFAST_JEMALLOC_STATS_DIR` set, writes jemalloc's totals and each
/// arena's to `<dir>/<pid>.txt` every second, and its whole report to
/// `<pid>.full` every five.
#[cfg(feature = "jemalloc-stats")]
pub fn spawn_stats_writer() {
    let Some(dir) = std::env::var_os("HOLDFAST_JEMALLOC_STATS_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let pid = std::process::id();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut n = 0u64;
        loop {
            tick.tick().await;
            let text = stats_text();
            let _ = std::fs::write(dir.join(format!("{pid}.txt")), &text);
            // A line a second to find a moment in afterwards.
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{pid}.log")))
            {
                use std::io::Write as _;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let first = text.lines().next().unwrap_or("");
                let all = text.lines().last().unwrap_or("");
                let _ = writeln!(f, "{now} {first} | {all}");
            }
            // Every second, numbered as the `.log` line of that second
            // (from 0): the reader picks the moment from the log.
            #[cfg(feature = "jemalloc-prof")]
            dump_heap_profile(&dir, pid, n);
            if n.is_multiple_of(5) {
                let mut full = Vec::new();
                let _ = tikv_jemalloc_ctl::stats_print::stats_print(&mut full, Default::default());
                let _ = std::fs::write(dir.join(format!("{pid}.full")), full);
            }
            n += 1;
        }
    });
}

/// Writes jemalloc's heap profile to `<dir>/<pid>.<n>.heap` (when the
/// profiler is on: `_RJEM_MALLOC_CONF=prof:true`). The path is leaked: a
/// few dozen bytes a second, in a build for measuring. A
/// sampled allocation takes a page of its own, so the allocator's
/// `active` figure is not to be read from a profiled run.
#[cfg(feature = "jemalloc-prof")]
fn dump_heap_profile(dir: &std::path::Path, pid: u32, n: u64) {
    use tikv_jemalloc_ctl::{Access, AsName};
    let path = format!("{}/{pid}.{n}.heap\0", dir.display());
    let path: &'static str = Box::leak(path.into_boxed_str());
    let _ = b"prof.dump\0".name().write(path);
}

#[cfg(feature = "jemalloc-stats")]
fn stats_text() -> String {
    use std::fmt::Write as _;
    use tikv_jemalloc_ctl::{arenas, epoch, stats, Access, AsName};
    let _ = epoch::advance();
    let mut s = String::new();
    let kib = |v: usize| v / 1024;
    let _ = writeln!(
        s,
        "allocated {} active {} metadata {} resident {} mapped {} retained {} (KiB)",
        kib(stats::allocated::read().unwrap_or(0)),
        kib(stats::active::read().unwrap_or(0)),
        kib(stats::metadata::read().unwrap_or(0)),
        kib(stats::resident::read().unwrap_or(0)),
        kib(stats::mapped::read().unwrap_or(0)),
        kib(stats::retained::read().unwrap_or(0)),
    );
    let narenas = arenas::narenas::read().unwrap_or(0);
    let page = 4096usize;
    for i in (0..narenas as usize).chain([4096]) {
        let get = |f: &str| -> usize {
            let n = format!("stats.arenas.{i}.{f}\0");
            n.as_str().name().read().unwrap_or(0)
        };
        let nthreads: u32 = format!("stats.arenas.{i}.nthreads\0")
            .as_str()
            .name()
            .read()
            .unwrap_or(0);
        let _ = writeln!(
            s,
            "arena {i}: threads {nthreads} tcache {} active {} dirty {} muzzy {} resident {} base {} internal {} small {} large {} (KiB)",
            kib(get("tcache_bytes")),
            kib(get("pactive") * page),
            kib(get("pdirty") * page),
            kib(get("pmuzzy") * page),
            kib(get("resident")),
            kib(get("base")),
            kib(get("internal")),
            kib(get("small.allocated")),
            kib(get("large.allocated")),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crowd_is_a_quarter_gone() {
        assert!(!crowd_left(0, 0));
        assert!(!crowd_left(300, 300));
        assert!(!crowd_left(300, 226));
        assert!(crowd_left(300, 225));
        assert!(crowd_left(300, 0));
        assert!(crowd_left(1, 0));
        assert!(!crowd_left(3, 3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_round_is_done_once_per_thread() {
        let before = ROUND.load(Ordering::Relaxed);
        give_back();
        assert!(ROUND.load(Ordering::Relaxed) > before);
        // This thread drops its cache once, then not again.
        on_park();
        let done = DONE.with(|d| d.get());
        on_park();
        assert_eq!(DONE.with(|d| d.get()), done);
    }
}
