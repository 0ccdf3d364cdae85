//! How a session's fields are written in its state (see [`super::snapshot`]):
//! large byte strings in the state's binary tail, times as offsets from
//! now, credentials with their password. Plain serde helpers, used by the
//! types that cross an upgrade (the core's parts, a watch, a playback).

use std::time::Duration;

use tokio::time::Instant;

/// Byte strings that go in the state's binary tail rather than in its
/// JSON document (where each byte would be a number). Serialising puts
/// the bytes in the tail of the state being written and writes `[offset,
/// length]`; reading takes them back from the tail of the state being
/// read. Both happen on one thread, inside the snapshot's `write` and
/// [`restore`](super::snapshot::restore), which set the tail up; outside
/// them (a JSON document alone, versions 1 and 2) the bytes are a plain
/// sequence.
pub(crate) mod blob {
    use std::cell::RefCell;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    thread_local! {
        /// The tail of the state being written, if one is.
        static OUT: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
        /// The tail of the state being read, if one is.
        static IN: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
    }

    /// Runs `f` with an empty tail to write into; returns what it wrote.
    pub(in crate::session) fn writing<T>(f: impl FnOnce() -> T) -> (T, Vec<u8>) {
        OUT.with(|o| *o.borrow_mut() = Some(Vec::new()));
        let r = f();
        let tail = OUT.with(|o| o.borrow_mut().take()).unwrap_or_default();
        (r, tail)
    }

    /// Runs `f` with `tail` to read from.
    pub(in crate::session) fn reading<T>(tail: &[u8], f: impl FnOnce() -> T) -> T {
        IN.with(|i| *i.borrow_mut() = Some(tail.to_vec()));
        let r = f();
        IN.with(|i| *i.borrow_mut() = None);
        r
    }

    /// serde `with` for a `Vec<u8>`.
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let at = OUT.with(|o| {
            o.borrow_mut().as_mut().map(|t| {
                let at = t.len();
                t.extend_from_slice(b);
                (at, b.len())
            })
        });
        match at {
            Some(r) => r.serialize(s),
            None => b.serialize(s),
        }
    }

    /// serde `with` for a `Vec<u8>`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        if IN.with(|i| i.borrow().is_none()) {
            return Vec::<u8>::deserialize(d);
        }
        let (at, len) = <(usize, usize)>::deserialize(d)?;
        IN.with(|i| {
            let i = i.borrow();
            let tail = i.as_deref().unwrap_or_default();
            at.checked_add(len)
                .and_then(|end| tail.get(at..end))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| serde::de::Error::custom("a byte string past the tail"))
        })
    }

    /// serde `with` for a `VecDeque<Vec<u8>>` (each one as above).
    pub mod deque {
        use std::collections::VecDeque;

        use serde::{Deserialize, Deserializer, Serialize, Serializer};

        #[derive(Serialize, Deserialize)]
        struct One(#[serde(with = "super")] Vec<u8>);

        #[derive(Serialize)]
        struct OneRef<'a>(#[serde(with = "super")] &'a Vec<u8>);

        /// serde `with`.
        pub fn serialize<S: Serializer>(v: &VecDeque<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(v.iter().map(OneRef))
        }

        /// serde `with`.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<Vec<u8>>, D::Error> {
            Ok(Vec::<One>::deserialize(d)?
                .into_iter()
                .map(|o| o.0)
                .collect())
        }
    }
}

/// A time as microseconds from now (negative: in the past).
pub(super) type Rel = i64;

pub(super) fn rel(t: Instant, now: Instant) -> Rel {
    let us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    match t.checked_duration_since(now) {
        Some(ahead) => us(ahead),
        None => -us(now - t),
    }
}

pub(super) fn abs(r: Rel, now: Instant) -> Instant {
    let d = Duration::from_micros(r.unsigned_abs());
    if r >= 0 {
        now + d
    } else {
        now.checked_sub(d).unwrap_or(now)
    }
}

/// serde for an `Option<Instant>` field: microseconds from now.
pub(crate) mod instant_opt {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use tokio::time::Instant;

    pub fn serialize<S: Serializer>(t: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        t.map(|t| super::rel(t, Instant::now())).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instant>, D::Error> {
        Ok(Option::<i64>::deserialize(d)?.map(|r| super::abs(r, Instant::now())))
    }
}

/// serde for [`Credentials`](crate::login::Credentials): the password is
/// written in the clear (the snapshot buffer is zeroizing and never
/// touches a disk) and read back into a [`Secret`](crate::secret::Secret).
pub(crate) mod creds {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::login::Credentials;
    use crate::secret::Secret;

    #[derive(Serialize)]
    struct Out<'a> {
        verb: &'a str,
        name: &'a str,
        password: &'a str,
    }

    #[derive(Deserialize)]
    struct In {
        verb: String,
        name: String,
        password: String,
    }

    pub fn serialize<S: Serializer>(c: &Credentials, s: S) -> Result<S::Ok, S::Error> {
        Out {
            verb: c.verb,
            name: &c.name,
            password: c.password.expose(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Credentials, D::Error> {
        let i = In::deserialize(d)?;
        let verb = crate::login::login_verb(&i.verb)
            .map(|v| v.as_typed(&i.verb))
            .ok_or_else(|| serde::de::Error::custom(format!("unknown login verb {:?}", i.verb)))?;
        Ok(Credentials {
            verb,
            name: i.name.into(),
            password: Secret::new(i.password),
        })
    }
}
