//! What a session's loop waits on, each as a poll that keeps nothing of
//! its own in the task (an idle session's memory is mostly its task, see
//! `sizes_tests`): the game's socket, the core's timer, and its slot on
//! the upgrade roll (an ask, or news for every session). Also the read of
//! the game's output once it is readable.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::Poll;

use tokio::time::{sleep_until, Instant, Sleep};

use crate::backend::connect::BackendStream;
use crate::state::upgrade::Wake;

/// Bytes read from the game per read call, at most. Bulk output (a long
/// `@dump`, a map) then costs a sixteenth of the system calls and wake-ups
/// it did at 32 KiB. The buffer lives for one read and its write (so a
/// player who stops reading holds at most this much, for at most
/// `limits.write_timeout`), and only the bytes read are ever touched.
const BACKEND_READ: usize = 512 * 1024;
/// Bytes read from the game first. A line or a screen of interactive
/// output fits, and a buffer this small comes from the allocator's
/// per-thread cache; one of [`BACKEND_READ`] costs a trip to the arena
/// (taken and given back on every read).
const BACKEND_FIRST_READ: usize = 16 * 1024;

/// The session's timer, set to `t`: one `Sleep`, boxed, kept and reset in
/// place while the session has a deadline (not a new one on every turn of
/// the loop, and no room for one in the task of a session without).
pub(super) fn set_timer(timer: &mut Option<Pin<Box<Sleep>>>, t: Option<Instant>) {
    match (t, timer.as_mut()) {
        (None, _) => *timer = None,
        (Some(t), Some(s)) => {
            if s.deadline() != t {
                s.as_mut().reset(t);
            }
        }
        (Some(t), None) => *timer = Some(Box::pin(sleep_until(t))),
    }
}

/// The timer fired (never, without one).
pub(super) fn timer_due<'a>(
    timer: &'a mut Option<Pin<Box<Sleep>>>,
) -> impl std::future::Future<Output = ()> + 'a {
    poll_fn(move |cx| match timer.as_mut() {
        Some(s) => s.as_mut().poll(cx),
        None => Poll::Pending,
    })
}

/// What wakes a session on the roll: an upgrade's ask or news for every
/// session ([`Wake`]); never, off the roll. Cancel-safe.
pub(super) fn next_wake(
    freeze: &mut Option<crate::state::upgrade::Enlisted>,
) -> impl Future<Output = Wake> + '_ {
    poll_fn(move |cx| match freeze.as_mut() {
        Some(f) => f.poll_wake(cx),
        None => Poll::Pending,
    })
}

/// An upgrade's ask to this session, while it is on the roll; never
/// otherwise. Cancel-safe, as [`Enlisted::asked`](crate::state::upgrade::Enlisted::asked) is,
/// and a poll with nothing of its own to keep.
pub(super) fn next_ask(
    freeze: &mut Option<crate::state::upgrade::Enlisted>,
) -> impl std::future::Future<Output = Option<crate::state::upgrade::Ask>> + '_ {
    poll_fn(move |cx| match freeze.as_mut() {
        Some(f) => f.poll_asked(cx),
        None => Poll::Pending,
    })
}

pub(super) fn game_readable(
    g: &Option<BackendStream>,
) -> impl std::future::Future<Output = io::Result<()>> + '_ {
    poll_fn(move |cx| match g {
        Some(s) => s.poll_read_ready(cx),
        None => Poll::Pending,
    })
}

/// Reads what the game sent into `buf`: [`BACKEND_FIRST_READ`] bytes, and
/// only when those filled it (bulk output) up to [`BACKEND_READ`] more.
pub(super) fn read_game(g: &BackendStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve_exact(BACKEND_FIRST_READ);
    let n = g.try_read_drain(buf)?;
    if n == 0 || buf.len() < buf.capacity() {
        return Ok(n);
    }
    buf.reserve_exact(BACKEND_READ - buf.len());
    // What was read goes first; an end of stream or an error after it
    // shows on the next turn (the readiness stays set).
    let _ = g.try_read_drain(buf);
    Ok(buf.len())
}
