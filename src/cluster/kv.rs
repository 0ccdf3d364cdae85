//! The cluster's key-value bucket (`holdfast_cluster_<name>`) and what its
//! keys hold.
//!
//! | key | value | written |
//! | --- | --- | --- |
//! | `active` | [`Active`]: the backend every instance uses | created once, then only by compare-and-set on its revision (the *term*) |
//! | `member.<instance>` | [`Member`]: the instance's lease renewal, its probes' view, the term it follows | by that instance, every `lease / 3` and at once when its view or term changes |
//!
//! Every call has a timeout shorter than the lease, so an unreachable
//! server is noticed in time for the instance to fence itself.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::kv::{CreateErrorKind, Store, UpdateErrorKind};
use async_nats::jetstream::stream::{Config as StreamConfig, DiscardPolicy, StorageType};
use async_nats::jetstream::Context;
use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::timeout;
use tracing::{info, warn};

pub use crate::state::cluster::Active;

/// The key that holds the active backend.
pub const ACTIVE: &str = "active";

/// Revisions of `active` kept (for `nats kv history`; only the last counts).
const HISTORY: i64 = 10;

/// The bucket of cluster `name`.
pub fn bucket_name(name: &str) -> String {
    format!("holdfast_cluster_{name}")
}

/// The key of instance `instance`: characters a key cannot hold become `_`.
pub fn member_key(instance: &str) -> String {
    let safe: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("member.{safe}")
}

/// The value of `member.<instance>`: one lease renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `bus.instance`.
    pub instance: String,
    /// The term this instance follows (it has moved its sessions to that
    /// term's backend).
    pub term: u64,
    /// Each backend as this instance's probe sees it: up, down, or not
    /// known yet (`null`).
    pub backends: BTreeMap<String, Option<bool>>,
    /// When it was written (RFC 3339), for people; liveness is measured
    /// by each reader's own clock (see `lease.rs`).
    pub time: String,
    /// The process that writes it: random at its start, carried over an
    /// upgrade (empty from an older holdfast). Two processes renewing one
    /// key are two instances with the same `bus.instance` (`join.rs`).
    #[serde(default)]
    pub boot: String,
    /// Its `[[backends]]` names in preference order (empty from an older
    /// holdfast): instances must agree on it (`join.rs`).
    #[serde(default)]
    pub order: Vec<String>,
}

/// What a compare-and-set on `active` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cas {
    /// Written: the new term.
    Won(u64),
    /// Someone else wrote first (or the key already existed).
    Lost,
}

/// The bucket, with the timeout of every call.
pub struct Kv {
    store: Store,
    op_timeout: Duration,
    replicas: usize,
}

type Res<T> = Result<T, String>;

async fn within<T, E: std::fmt::Display>(
    d: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Res<T> {
    match timeout(d, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: no answer within {}",
            humantime::format_duration(d)
        )),
    }
}

impl Kv {
    /// Opens the bucket, creating it if it does not exist with the first
    /// replica count of `replicas` the JetStream cluster takes
    /// ([`crate::bus::replica_candidates`]). An existing bucket with fewer
    /// copies than the first count is given more if the cluster can (a
    /// bucket made with one copy by an older holdfast behind
    /// `no_advertise` nodes, say).
    pub async fn open(
        js: &Context,
        name: &str,
        replicas: &[usize],
        op_timeout: Duration,
    ) -> Res<Kv> {
        let bucket = bucket_name(name);
        let store = match within(op_timeout, "open the bucket", js.get_key_value(&bucket)).await {
            Ok(s) => s,
            Err(_) => {
                // The stream a bucket is, made by hand: the client's own
                // `create_key_value` first reads the account info, which
                // it cannot parse from nats-server 2.9.
                let cfg = StreamConfig {
                    name: format!("KV_{bucket}"),
                    description: Some(format!(
                        "holdfast cluster {name}: the active backend and the members' leases"
                    )),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: HISTORY,
                    storage: StorageType::File,
                    allow_rollup: true,
                    deny_delete: true,
                    deny_purge: false,
                    // Reads go to the stream's leader: they see the last
                    // write, and a hung follower cannot stall them.
                    allow_direct: false,
                    discard: DiscardPolicy::New,
                    ..Default::default()
                };
                // Another instance may create it at the same moment: then
                // it exists, and opening it works.
                let made = crate::bus::create_with_replicas(replicas, &cfg.name, |n| {
                    within(
                        op_timeout,
                        "create the bucket",
                        js.get_or_create_stream(StreamConfig {
                            num_replicas: n,
                            ..cfg.clone()
                        }),
                    )
                })
                .await;
                match within(op_timeout, "open the bucket", js.get_key_value(&bucket)).await {
                    Ok(s) => s,
                    Err(e) => return Err(made.err().unwrap_or(e)),
                }
            }
        };
        let mut kv = Kv {
            replicas: store.stream.cached_info().config.num_replicas.max(1),
            store,
            op_timeout,
        };
        if let Some(&want) = replicas.first() {
            if kv.replicas < want {
                kv.more_replicas(js, want).await;
            }
        }
        Ok(kv)
    }

    /// Asks for `want` copies of an existing bucket; keeps what it has if
    /// the cluster cannot (with a warning).
    async fn more_replicas(&mut self, js: &Context, want: usize) {
        let mut cfg = self.store.stream.cached_info().config.clone();
        let name = cfg.name.clone();
        cfg.num_replicas = want;
        match within(
            self.op_timeout,
            "add copies of the bucket",
            js.update_stream(cfg),
        )
        .await
        {
            Ok(info) => {
                info!(stream = %name, from = self.replicas, to = info.config.num_replicas, "cluster: the bucket has more copies now");
                self.replicas = info.config.num_replicas.max(1);
            }
            Err(e) => {
                warn!(stream = %name, replicas = self.replicas, wanted = want, error = %e, "cluster: the bucket keeps fewer copies than wanted");
            }
        }
    }

    /// How many copies of the bucket JetStream keeps.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// `active` and its revision (the term), if it exists.
    pub async fn active(&self) -> Res<Option<(Active, u64)>> {
        let e = within(self.op_timeout, "read active", self.store.entry(ACTIVE)).await?;
        let Some(e) = e else { return Ok(None) };
        if e.value.is_empty() {
            return Ok(None);
        }
        let a = serde_json::from_slice(&e.value).map_err(|e| format!("active: {e}"))?;
        Ok(Some((a, e.revision)))
    }

    /// Writes `a` if `active` is still at `revision` (0: if it does not
    /// exist yet).
    pub async fn cas_active(&self, a: &Active, revision: u64) -> Res<Cas> {
        let body = Bytes::from(serde_json::to_vec(a).map_err(|e| e.to_string())?);
        if revision == 0 {
            return match timeout(self.op_timeout, self.store.create(ACTIVE, body)).await {
                Ok(Ok(rev)) => Ok(Cas::Won(rev)),
                Ok(Err(e)) if e.kind() == CreateErrorKind::AlreadyExists => Ok(Cas::Lost),
                Ok(Err(e)) => Err(format!("create active: {e}")),
                Err(_) => Err("create active: no answer".into()),
            };
        }
        match timeout(self.op_timeout, self.store.update(ACTIVE, body, revision)).await {
            Ok(Ok(rev)) => Ok(Cas::Won(rev)),
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(Cas::Lost),
            Ok(Err(e)) => Err(format!("update active: {e}")),
            Err(_) => Err("update active: no answer".into()),
        }
    }

    /// Renews this instance's lease (stores its member value).
    pub async fn renew(&self, m: &Member) -> Res<u64> {
        let body = Bytes::from(serde_json::to_vec(m).map_err(|e| e.to_string())?);
        within(
            self.op_timeout,
            "renew the lease",
            self.store.put(member_key(&m.instance), body),
        )
        .await
    }

    /// Every member's value and revision.
    pub async fn members(&self) -> Res<Vec<(Member, u64)>> {
        // The stream's subjects, not `keys()`: that makes a consumer on
        // every call, which a loaded cluster answers too slowly.
        let prefix = self.store.prefix.clone();
        let subjects: Vec<String> = within(self.op_timeout, "list members", async {
            let mut info = self
                .store
                .stream
                .info_with_subjects(format!("{prefix}member.>"))
                .await?;
            let mut out = Vec::new();
            while let Some(r) = info.next().await {
                out.push(r?.0);
            }
            Ok::<_, async_nats::jetstream::stream::InfoError>(out)
        })
        .await?;
        let keys: Vec<String> = subjects
            .iter()
            .filter_map(|s| s.strip_prefix(&prefix).map(String::from))
            .collect();
        let mut out = Vec::new();
        for k in keys.into_iter().filter(|k| k.starts_with("member.")) {
            let e = within(self.op_timeout, "read a member", self.store.entry(k)).await?;
            let Some(e) = e else { continue };
            if let Ok(m) = serde_json::from_slice::<Member>(&e.value) {
                out.push((m, e.revision));
            }
        }
        Ok(out)
    }

    /// Removes a member's key: this instance leaving, or one whose lease
    /// ran out long ago.
    pub async fn remove(&self, instance: &str) -> Res<()> {
        within(
            self.op_timeout,
            "remove a member",
            self.store.purge(member_key(instance)),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_keys_are_valid_keys() {
        assert_eq!(member_key("mush-1"), "member.mush-1");
        assert_eq!(member_key("a:b/é"), "member.a_b__");
        assert_eq!(bucket_name("prod"), "holdfast_cluster_prod");
    }
}
