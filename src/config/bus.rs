//! `[bus]`: the NATS connection (servers, subjects, credentials, TLS).
//! No servers: no bus, the proxy runs alone.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::cx::{at_least, positive, secret, ConfigError, Cx};
use super::defaults;
use super::raw::RawBus;
use crate::secret::Secret;

/// `[bus]`: the NATS connection. No servers: no bus.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct Bus {
    pub servers: Vec<String>,
    pub subject_prefix: String,
    pub instance: String,
    pub publish_ip: bool,
    pub queue_size: usize,
    pub presence_interval: Duration,
    pub request_timeout: Duration,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub nkey_seed: Option<Secret>,
    pub credentials_file: Option<PathBuf>,
    pub tls: bool,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// `bus.jetstream`: store events in a JetStream stream.
    pub jetstream: bool,
    /// `bus.stream` (default [`DEFAULT_STREAM`]).
    pub stream: String,
    /// `bus.stream_max_age` (default [`DEFAULT_STREAM_MAX_AGE`]).
    pub stream_max_age: Duration,
    /// `bus.replicas`: copies of the events stream and the cluster's
    /// bucket. `None` (the default): 3 when the server is in a cluster
    /// (1 if the cluster cannot hold 3), else 1.
    pub replicas: Option<usize>,
    /// `bus.rpc_allow`: the request methods answered (default: read-only).
    pub rpc_allow: Vec<String>,
    /// `bus.cluster` with `bus.cluster_size` and `bus.lease`: several
    /// instances agree on the active backend (see `crate::cluster`).
    pub cluster: Option<Cluster>,
}

/// `bus.cluster`, `bus.cluster_size`, `bus.lease`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// `bus.cluster`: the cluster's name (its key-value bucket is
    /// `holdfast_cluster_<name>`).
    pub name: String,
    /// `bus.cluster_size`: how many instances the cluster has; a failover
    /// needs a majority of them.
    pub size: usize,
    /// `bus.lease` (default [`DEFAULT_LEASE`]): an instance that could not
    /// renew its membership for this long holds its players.
    pub lease: Duration,
}

/// `bus.lease` when not set.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// The shortest `bus.lease`: renewals go every third of it, and each has to
/// reach a JetStream cluster and back.
pub const MIN_LEASE: Duration = Duration::from_millis(500);

/// The most copies JetStream keeps of a stream (`bus.replicas`).
pub const MAX_REPLICAS: usize = 5;

/// `bus.stream` when not set.
pub const DEFAULT_STREAM: &str = "HOLDFAST_EVENTS";
/// `bus.stream_max_age` when not set: a week of events.
pub const DEFAULT_STREAM_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The names `bus.rpc_allow` may list: every request method, including
/// `upgrade`.
pub const RPC_METHODS: &[&str] = &[
    "status", "sessions", "failover", "announce", "reload", "upgrade",
];

/// `bus.rpc_allow` when not set: the read-only requests.
pub const DEFAULT_RPC_ALLOW: &[&str] = &["status", "sessions"];

/// True if `name` can name a stream (or a consumer): no spaces, dots,
/// slashes or wildcards.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
}

/// A cluster name: what a bucket name allows after `holdfast_cluster_`.
fn valid_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn cluster(cx: &Cx<'_>, b: &mut RawBus, jetstream: bool) -> Result<Option<Cluster>, ConfigError> {
    let lease = b.lease.take();
    let size = b.cluster_size.take();
    let Some(name) = b.cluster.take() else {
        if let Some(s) = &size {
            return Err(cx.at(s, "bus.cluster_size needs bus.cluster (the cluster's name)"));
        }
        if let Some(l) = &lease {
            return Err(cx.at(l, "bus.lease needs bus.cluster (the cluster's name)"));
        }
        return Ok(None);
    };
    if !valid_cluster_name(name.get_ref()) {
        return Err(cx.at(
            &name,
            "bus.cluster must be letters, digits, '-' or '_' (at most 64)",
        ));
    }
    if !jetstream {
        return Err(cx.at(
            &name,
            "bus.cluster needs bus.jetstream = true (the instances agree through a JetStream key-value bucket)",
        ));
    }
    if b.servers.as_ref().is_none_or(|s| s.is_empty()) {
        return Err(cx.at(
            &name,
            "bus.cluster needs bus.servers (the NATS servers the instances share)",
        ));
    }
    let size = match size {
        None => {
            return Err(cx.at(
                &name,
                "bus.cluster needs bus.cluster_size (how many instances front the game; a failover needs a majority of them)",
            ))
        }
        Some(s) if *s.get_ref() < 1 => {
            return Err(cx.at(&s, "bus.cluster_size must be at least 1"))
        }
        Some(s) => *s.get_ref() as usize,
    };
    Ok(Some(Cluster {
        name: name.into_inner(),
        size,
        lease: at_least(cx, lease, "bus.lease", DEFAULT_LEASE, MIN_LEASE)?,
    }))
}

pub(super) fn resolve(cx: &Cx<'_>, mut b: RawBus) -> Result<Bus, ConfigError> {
    let jetstream = b.jetstream.unwrap_or(false);
    let cluster = cluster(cx, &mut b, jetstream)?;
    let replicas =
        match b.replicas.take() {
            None => None,
            Some(r) if !jetstream => return Err(cx.at(
                &r,
                "bus.replicas needs bus.jetstream = true (it counts copies of JetStream streams)",
            )),
            Some(r) if !(1..=MAX_REPLICAS as i64).contains(r.get_ref()) => {
                return Err(cx.at(
                    &r,
                    format!("bus.replicas must be 1 to {MAX_REPLICAS} (JetStream's limit)"),
                ))
            }
            Some(r) => Some(*r.get_ref() as usize),
        };
    let mut servers = Vec::new();
    for s in b.servers.unwrap_or_default() {
        if has_credentials(s.get_ref()) {
            return Err(cx.at(
                &s,
                "bus.servers: a server URL must not carry a user, password or token (logs and `holdfast check` print these URLs); give bus.user with bus.password_env or bus.password_file, or bus.token_env, instead",
            ));
        }
        if s.get_ref().parse::<async_nats::ServerAddr>().is_err() {
            return Err(cx.at(
                &s,
                format!(
                    "bus.servers: {:?} is not a NATS server URL (nats://host:port or tls://host:port)",
                    s.get_ref()
                ),
            ));
        }
        servers.push(s.into_inner());
    }
    // Files the client reads when it starts: a typo should fail
    // `holdfast check`, not silently leave the proxy without its bus.
    let file = |f: Option<Spanned<String>>, key: &str| -> Result<Option<PathBuf>, ConfigError> {
        match f {
            None => Ok(None),
            Some(f) => match std::fs::metadata(f.get_ref()) {
                Ok(m) if m.is_file() => Ok(Some(PathBuf::from(f.into_inner()))),
                Ok(_) => Err(cx.at(&f, format!("bus.{key}: {} is not a file", f.get_ref()))),
                Err(e) => Err(cx.at(&f, format!("bus.{key}: cannot read {}: {e}", f.get_ref()))),
            },
        }
    };
    if b.tls_cert_file.is_some() != b.tls_key_file.is_some() {
        let at = b.tls_cert_file.as_ref().or(b.tls_key_file.as_ref());
        return Err(cx.err(
            at.map(|s| s.span()),
            "bus.tls_cert_file and bus.tls_key_file go together (client certificate)",
        ));
    }
    let subject_prefix = match b.subject_prefix {
        Some(p) if !valid_subject_token_path(p.get_ref()) => {
            return Err(cx.at(
                &p,
                "bus.subject_prefix must be dot-separated tokens without spaces or wildcards",
            ))
        }
        Some(p) => p.into_inner(),
        None => defaults::SUBJECT_PREFIX.to_string(),
    };
    let instance = match b.instance {
        Some(i) if i.get_ref().is_empty() || i.get_ref().contains(['.', ' ', '*', '>']) => {
            return Err(cx.at(
                &i,
                "bus.instance must be one subject token (no dots, spaces or wildcards)",
            ))
        }
        Some(i) => i.into_inner(),
        None => default_instance().replace(['.', ' ', '*', '>'], "-"),
    };
    Ok(Bus {
        servers,
        subject_prefix,
        instance,
        publish_ip: b.publish_ip.unwrap_or(false),
        queue_size: b.queue_size.unwrap_or(defaults::BUS_QUEUE).max(1),
        presence_interval: positive(
            cx,
            b.presence_interval,
            "bus.presence_interval",
            defaults::PRESENCE_INTERVAL,
        )?,
        request_timeout: positive(
            cx,
            b.request_timeout,
            "bus.request_timeout",
            defaults::REQUEST_TIMEOUT,
        )?,
        user: b.user,
        password: secret(
            cx,
            "bus.password",
            b.password,
            b.password_env,
            b.password_file,
        )?,
        token: secret(cx, "bus.token", b.token, b.token_env, None)?,
        nkey_seed: secret(
            cx,
            "bus.nkey_seed",
            b.nkey_seed,
            b.nkey_seed_env,
            b.nkey_seed_file,
        )?,
        credentials_file: file(b.credentials_file, "credentials_file")?,
        tls: b.tls.unwrap_or(false),
        tls_ca_file: file(b.tls_ca_file, "tls_ca_file")?,
        tls_cert_file: file(b.tls_cert_file, "tls_cert_file")?,
        tls_key_file: file(b.tls_key_file, "tls_key_file")?,
        jetstream,
        cluster,
        stream: match b.stream {
            Some(n) if !valid_stream_name(n.get_ref()) => {
                return Err(cx.at(
                    &n,
                    "bus.stream must be a name without spaces, dots, slashes or wildcards",
                ))
            }
            Some(n) => n.into_inner(),
            None => DEFAULT_STREAM.to_string(),
        },
        stream_max_age: positive(
            cx,
            b.stream_max_age,
            "bus.stream_max_age",
            DEFAULT_STREAM_MAX_AGE,
        )?,
        replicas,
        rpc_allow: match b.rpc_allow {
            None => DEFAULT_RPC_ALLOW.iter().map(|m| m.to_string()).collect(),
            Some(v) => {
                if let Some(m) = v
                    .iter()
                    .find(|m| !RPC_METHODS.contains(&m.get_ref().as_str()))
                {
                    return Err(cx.at(
                        m,
                        format!(
                            "bus.rpc_allow: unknown method {:?} (methods: {})",
                            m.get_ref(),
                            RPC_METHODS.join(", ")
                        ),
                    ));
                }
                v.into_iter().map(Spanned::into_inner).collect()
            }
        },
    })
}

/// A server URL with a user, password or token in it (`nats://u:p@host`,
/// `nats://token@host`): rejected, because these URLs are logged and
/// printed, and a secret belongs in `password_env` / `password_file`.
fn has_credentials(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.contains('@')
}

fn valid_subject_token_path(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|t| {
            !t.is_empty() && !t.contains(|c: char| c.is_whitespace() || c == '*' || c == '>')
        })
}

fn default_instance() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "holdfast".to_string())
}
