//! Every backend's probe handle, by backend name: the probes' registry.
//! The pool starts and replaces probes; sessions ask one for an immediate
//! check or the cached connect screen; an upgrade parks them all.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::health::ProbeHandle;

/// The running probes, by backend name.
#[derive(Debug, Default)]
pub struct Probes {
    inner: Mutex<HashMap<String, ProbeHandle>>,
}

impl Probes {
    /// The map itself, to start, replace or stop probes (the pool).
    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, ProbeHandle>> {
        // A panic while holding this lock would be a bug elsewhere; the
        // handles stay usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The probe of backend `name`.
    pub fn get(&self, name: &str) -> Option<ProbeHandle> {
        self.lock().get(name).cloned()
    }

    /// Every probe, in no order.
    pub fn all(&self) -> Vec<ProbeHandle> {
        self.lock().values().cloned().collect()
    }
}
