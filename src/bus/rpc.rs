//! Requests over NATS request-reply: `{prefix}.rpc.{instance}.{method}`,
//! and `{prefix}.rpc.all.{method}`, which every instance answers. JSON in
//! (an object, or nothing), JSON out; every reply names its `instance`,
//! and anything wrong is `{"error": "..."}`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_nats::Client;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{rfc3339, BusStats, Subjects, ALL, METHODS, RPC_METHODS, SCHEMA_VERSION};
use crate::state::{Announcement, FailoverRequest, Phase, Shared};

/// How long a reply may wait for the client library (only when it is not
/// connected; the requester has given up by then anyway).
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `failover` waits for the failover manager.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `announce` text, in characters.
pub const MAX_ANNOUNCE: usize = 2000;
/// Sessions listed by `sessions` unless `limit` says otherwise; keeps the
/// reply well under NATS's default 1 MB payload limit.
const DEFAULT_SESSIONS_LIMIT: usize = 1000;

/// Serves requests until `stop`.
pub(super) async fn serve(
    shared: Arc<Shared>,
    client: Client,
    subjects: Subjects,
    stats: Arc<BusStats>,
    stop: CancellationToken,
) {
    let own = client
        .subscribe(subjects.rpc(&subjects.instance, "*"))
        .await;
    let all = client.subscribe(subjects.rpc(ALL, "*")).await;
    let (Ok(own), Ok(all)) = (own, all) else {
        warn!("bus: cannot subscribe for requests; not serving them");
        return;
    };
    // Presence too: `status` names the instances seen there, so that
    // `holdfast status` knows whose answers to wait for. Without the
    // permission, requests are still served.
    let presence = match client.subscribe(subjects.presence()).await {
        Ok(p) => p.boxed(),
        Err(_) => futures::stream::pending().boxed(),
    };
    let requests = futures::stream::select(own, all);
    let mut incoming = futures::stream::select(requests, presence);
    let presence_subject = subjects.presence();
    loop {
        // Both branches are cancel-safe (a token and a stream's `next`).
        let m = tokio::select! {
            _ = stop.cancelled() => break,
            m = incoming.next() => match m {
                Some(m) => m,
                None => break,
            },
        };
        if m.subject.as_str() == presence_subject {
            if let Ok(p) = serde_json::from_slice::<Value>(&m.payload) {
                stats.peers.on_presence(&p, std::time::Instant::now());
            }
            continue;
        }
        let Some(reply) = m.reply.clone() else {
            debug!(subject = %m.subject, "request without a reply subject; ignored");
            continue;
        };
        let method = m.subject.rsplit('.').next().unwrap_or_default();
        let mut out = match refusal(&shared.config().bus.rpc_allow, method) {
            Some(e) => {
                warn!(method, subject = %m.subject, "request refused: not in bus.rpc_allow");
                e
            }
            None => dispatch(&shared, &client, &stats, method, &m.payload).await,
        };
        if let Value::Object(o) = &mut out {
            o.insert("instance".into(), subjects.instance.clone().into());
            o.insert("v".into(), SCHEMA_VERSION.into());
        }
        let body = bytes::Bytes::from(serde_json::to_vec(&out).unwrap_or_default());
        if timeout(REPLY_TIMEOUT, client.publish(reply, body))
            .await
            .is_err()
        {
            debug!(method, "reply not sent: NATS not connected");
        }
    }
}

/// The answer to a request for a known `method` that `bus.rpc_allow`
/// (`allow`) does not list; `None` when it may go ahead (unknown methods
/// go ahead to be told they are unknown).
pub(super) fn refusal(allow: &[String], method: &str) -> Option<Value> {
    if allow.iter().any(|a| a == method) || !RPC_METHODS.contains(&method) {
        return None;
    }
    Some(json!({
        "error": format!("{method} is not allowed on this instance (bus.rpc_allow)"),
        "allowed": allow,
    }))
}

fn error(msg: impl Into<String>) -> Value {
    json!({ "error": msg.into() })
}

/// Parses the request body: nothing, or a JSON object whose keys are all in
/// `allowed`.
fn args(payload: &[u8], allowed: &[&str]) -> Result<Map<String, Value>, Value> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let v: Value = serde_json::from_slice(payload)
        .map_err(|e| error(format!("the request is not valid JSON: {e}")))?;
    let Value::Object(m) = v else {
        return Err(error("the request must be a JSON object"));
    };
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        let known = if allowed.is_empty() {
            "none".to_string()
        } else {
            allowed.join(", ")
        };
        return Err(error(format!(
            "unknown argument {k:?} (arguments: {known})"
        )));
    }
    Ok(m)
}

/// Answers one request.
pub(super) async fn dispatch(
    shared: &Shared,
    client: &Client,
    stats: &BusStats,
    method: &str,
    payload: &[u8],
) -> Value {
    let r = match method {
        "status" => args(payload, &[]).map(|_| status(shared, client, stats)),
        "sessions" => match args(payload, &["limit"]) {
            Ok(a) => sessions(shared, &a),
            Err(e) => Err(e),
        },
        "failover" => match args(payload, &["backend", "force"]) {
            Ok(a) => failover(shared, &a).await,
            Err(e) => Err(e),
        },
        "announce" => match args(payload, &["text", "backend"]) {
            Ok(a) => announce(shared, &a),
            Err(e) => Err(e),
        },
        "upgrade" => args(payload, &[]).and_then(|_| upgrade_request(shared)),
        "reload" => args(payload, &[]).map(|_| match crate::reload::reload(shared) {
            Ok(()) => json!({ "ok": true }),
            Err(e) => json!({ "ok": false, "error": e.to_string() }),
        }),
        other => Err(json!({
            "error": format!("unknown method {other:?}"),
            "methods": METHODS,
        })),
    };
    r.unwrap_or_else(|e| e)
}

/// The `status` reply (also what `holdfast status` prints).
pub(super) fn status(shared: &Shared, client: &Client, stats: &BusStats) -> Value {
    let cfg = shared.config();
    let pool = shared.pool.borrow().clone();
    let (total, logged_in, held) = shared.registry.counts();
    let backends: Vec<Value> = pool
        .backends
        .iter()
        .map(|b| {
            json!({
                "name": b.name,
                "addr": b.addr,
                "up": b.up,
                "state": match b.up { Some(true) => "up", Some(false) => "down", None => "unknown" },
                "since": rfc3339(b.since),
                "since_s": SystemTime::now().duration_since(b.since).unwrap_or_default().as_secs(),
                "reason": b.reason,
                "degraded": b.degraded,
                "active": b.name == pool.active,
            })
        })
        .collect();
    let info = client.server_info();
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "game": cfg.game,
        "started": rfc3339(shared.started()),
        "uptime_s": shared.uptime().as_secs(),
        "active": pool.active,
        "backends": backends,
        "sessions": {
            "total": total,
            "logged_in": logged_in,
            "held": held,
            "paused": shared.registry.paused(),
        },
        "events": {
            // Dropped because the publisher's channel was full.
            "dropped_channel": shared.events.dropped(),
            // Dropped (oldest first) because the outage queue was full.
            "dropped_overflow": get(&stats.overflow),
            "rejected": get(&stats.rejected),
            "queued": get(&stats.queued),
            "published": get(&stats.published),
        },
        "refused": shared.refused.load(Ordering::Relaxed),
        "reload_failures": shared.reload_failures.load(Ordering::Relaxed),
        "upgrades": shared.handover.upgrades.load(Ordering::Relaxed),
        // `bus.cluster`: the cluster's choice and its members, as seen here.
        "cluster": shared.cluster.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        "bus": {
            "connected": stats.connected.load(Ordering::Relaxed),
            "server": format!("{}:{}", info.host, info.port),
            "server_name": info.server_name,
            "connects": get(&stats.connects),
            "jetstream": cfg.bus.jetstream,
            // Instances seen on the presence subject (this one included).
            "peers": stats.peers.names(std::time::Instant::now()),
            "stream": stats.stream.load(Ordering::Relaxed),
        },
    })
}

fn sessions(shared: &Shared, a: &Map<String, Value>) -> Result<Value, Value> {
    let limit = match a.get("limit") {
        None => DEFAULT_SESSIONS_LIMIT,
        Some(v) => v
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| error("limit must be a non-negative integer"))?,
    };
    let publish_ip = shared.config().bus.publish_ip;
    let all = shared.registry.snapshot();
    let list: Vec<Value> = all
        .iter()
        .take(limit)
        .map(|s| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            if publish_ip {
                v["ip"] = s.ip.to_string().into();
            }
            v
        })
        .collect();
    Ok(json!({
        "total": all.len(),
        "truncated": all.len() > list.len(),
        "sessions": list,
    }))
}

async fn failover(shared: &Shared, a: &Map<String, Value>) -> Result<Value, Value> {
    let Some(backend) = a.get("backend").and_then(Value::as_str) else {
        return Err(error(r#"failover needs {"backend": NAME}"#));
    };
    if shared.config().backend(backend).is_none() {
        let names: Vec<String> = shared
            .config()
            .backends
            .iter()
            .map(|b| b.name.clone())
            .collect();
        return Err(error(format!(
            "no backend named {backend:?} (backends: {})",
            names.join(", ")
        )));
    }
    let from = shared.pool.borrow().active.clone();
    let (tx, rx) = oneshot::channel();
    let req = FailoverRequest {
        backend: backend.to_string(),
        reason: "request",
        force: a.get("force").and_then(Value::as_bool).unwrap_or(false),
        reply: tx,
    };
    let sent = timeout(FAILOVER_TIMEOUT, shared.failover_tx.send(req)).await;
    if !matches!(sent, Ok(Ok(()))) {
        return Err(error("the failover manager is not running"));
    }
    match timeout(FAILOVER_TIMEOUT, rx).await {
        Ok(Ok(Ok(()))) => {
            info!(%from, to = backend, "failover requested over the bus");
            let up = shared.pool.borrow().view(backend).and_then(|v| v.up);
            Ok(json!({
                "ok": true,
                "from": from,
                "to": backend,
                "changed": from != backend,
                "to_up": up,
            }))
        }
        Ok(Ok(Err(e))) => Err(error(e)),
        _ => Err(error("the failover manager did not answer")),
    }
}

/// Makes operator text safe to put on a player's screen: line breaks
/// become CR LF, other control characters (escape sequences included) go.
pub fn clean_text(text: &str) -> String {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<String> = text
        .split('\n')
        .map(|l| {
            l.chars()
                .map(|c| if c == '\t' { ' ' } else { c })
                .filter(|c| !c.is_control())
                .collect::<String>()
        })
        .collect();
    lines.join("\r\n").trim().to_string()
}

fn announce(shared: &Shared, a: &Map<String, Value>) -> Result<Value, Value> {
    let Some(raw) = a.get("text").and_then(Value::as_str) else {
        return Err(error(r#"announce needs {"text": "..."}"#));
    };
    let text = clean_text(raw);
    if text.is_empty() {
        return Err(error("announce text is empty"));
    }
    if text.chars().count() > MAX_ANNOUNCE {
        return Err(error(format!(
            "announce text is longer than {MAX_ANNOUNCE} characters"
        )));
    }
    let backend = match a.get("backend") {
        None | Some(Value::Null) => None,
        Some(Value::String(b)) if shared.config().backend(b).is_some() => Some(b.clone()),
        Some(Value::String(b)) => return Err(error(format!("no backend named {b:?}"))),
        Some(_) => return Err(error("backend must be a string")),
    };
    // Who will see it: every session, or those connected to `backend`
    // (a held player is connected to none).
    let targets = shared
        .registry
        .snapshot()
        .iter()
        .filter(|s| match &backend {
            None => true,
            Some(b) => s.backend.as_deref() == Some(b) && s.phase != Phase::Held,
        })
        .count();
    info!(backend = ?backend, sessions = targets, "announcement");
    shared.announce(Announcement {
        text: text.into(),
        backend: backend.clone(),
    });
    Ok(json!({ "ok": true, "sessions": targets, "backend": backend }))
}

/// The bus request `upgrade`: starts one (the outcome is the
/// `proxy.upgrade` event), or says why not.
fn upgrade_request(shared: &Shared) -> Result<serde_json::Value, serde_json::Value> {
    let h = &shared.handover;
    if h.origin().is_none() {
        return Err(serde_json::json!({
            "error": "this process does not know the binary it was started from"
        }));
    }
    if h.request(crate::state::upgrade::Request {
        reason: "request",
        reply: None,
    }) {
        Ok(serde_json::json!({ "ok": true, "started": true }))
    } else {
        Err(serde_json::json!({ "error": "an upgrade is already under way" }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_accepts_nothing_or_known_keys() {
        assert!(args(b"", &[]).unwrap().is_empty());
        assert!(args(b"  \n", &["x"]).unwrap().is_empty());
        assert_eq!(args(br#"{"x":1}"#, &["x"]).unwrap()["x"], 1);
        let e = args(br#"{"y":1}"#, &["x"]).unwrap_err();
        assert!(e["error"]
            .as_str()
            .unwrap()
            .contains("unknown argument \"y\""));
        let e = args(b"[1]", &["x"]).unwrap_err();
        assert!(e["error"].as_str().unwrap().contains("JSON object"));
        let e = args(b"{nope", &["x"]).unwrap_err();
        assert!(e["error"].as_str().unwrap().contains("not valid JSON"));
    }

    #[test]
    fn only_allowed_methods_go_ahead() {
        let allow: Vec<String> = ["status", "sessions"].map(String::from).to_vec();
        assert!(refusal(&allow, "status").is_none());
        assert!(
            refusal(&allow, "frobnicate").is_none(),
            "unknown: told so later"
        );
        for m in ["failover", "announce", "reload", "upgrade"] {
            let e = refusal(&allow, m).expect(m);
            assert!(e["error"].as_str().unwrap().contains("rpc_allow"), "{e}");
            assert_eq!(e["allowed"], serde_json::json!(["status", "sessions"]));
        }
        let all: Vec<String> = RPC_METHODS.iter().map(|m| m.to_string()).collect();
        assert!(refusal(&all, "failover").is_none());
    }

    #[test]
    fn clean_text_keeps_lines_and_drops_controls() {
        assert_eq!(clean_text("a\nb"), "a\r\nb");
        assert_eq!(clean_text("a\r\nb\rc"), "a\r\nb\r\nc");
        assert_eq!(clean_text("\x1b[31mred\x1b[0m\x07"), "[31mred[0m");
        assert_eq!(clean_text("tab\there"), "tab here");
        assert_eq!(clean_text("  \n "), "");
    }
}
