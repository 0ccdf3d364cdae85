//! The WebSocket door's HTTP side: read the request, serve the web client
//! page at `/`, or upgrade (subprotocol chosen as mudstandards.org names
//! them, `X-Forwarded-For` believed only from `listen.ws_trusted_proxies`)
//! and hand the frames to tungstenite.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Run;
use crate::config::Cidr;
use crate::listener::admit;
use crate::session;
use crate::state::Shared;
use crate::transport::gate::Gate;
use crate::transport::stream::Io;
use crate::transport::wsconn::{ws_config, Mode, WsConn, MAX_MESSAGE};

/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// Most headers in a request.
const MAX_HEADERS: usize = 48;

/// The web client, shipped in the binary.
pub const PAGE: &str = include_str!("webclient.html");

/// The page with the configured notices' fixed beginnings filled in, so
/// it can show them distinctly.
pub fn page(cfg: &crate::config::Config) -> String {
    let n = &cfg.notices;
    let mut prefixes = vec!["[holdfast]".to_string()];
    for t in [
        &n.offline,
        &n.online,
        &n.held_input,
        &n.queued_input,
        &n.relogin_failed,
        &n.failover,
        &n.max_hold,
        &n.stopping,
        &n.login_timeout,
        &n.line_too_long,
        &n.flood,
        &n.connecting,
    ] {
        let t = t.replace("{game}", &cfg.game);
        let fixed = t.split('{').next().unwrap_or("").trim_end();
        // A short fixed part would mark ordinary game lines.
        if fixed.chars().count() >= 8 && !prefixes.iter().any(|p| fixed.starts_with(p.as_str())) {
            prefixes.push(fixed.to_string());
        }
    }
    let json = serde_json::to_string(&prefixes).unwrap_or_else(|_| "[]".into());
    // `</` cannot end the script from inside a JSON string.
    let json = json.replace("</", "<\\/");
    // The login verbs holdfast recognises, so the page masks every one
    // of them (and keeps none in its history).
    let verbs = serde_json::to_string(&crate::login::login_words()).unwrap_or_else(|_| "[]".into());
    PAGE.replace("/*NOTICES*/[\"[holdfast]\"]", &json)
        .replace("/*LOGIN_VERBS*/[\"connect\"]", &verbs)
}

/// The parts of the request that matter.
struct Head {
    path: String,
    upgrade: bool,
    key: Option<String>,
    version_ok: bool,
    protocols: Vec<String>,
    forwarded: Vec<String>,
}

fn parse_head(b: &[u8]) -> Option<(Head, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(b).ok()? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    if req.method != Some("GET") {
        return Some((
            Head {
                path: String::new(),
                upgrade: false,
                key: None,
                version_ok: false,
                protocols: Vec::new(),
                forwarded: Vec::new(),
            },
            used,
        ));
    }
    let mut h = Head {
        path: req.path.unwrap_or("/").to_string(),
        upgrade: false,
        key: None,
        version_ok: false,
        protocols: Vec::new(),
        forwarded: Vec::new(),
    };
    for hd in req.headers.iter() {
        let v = String::from_utf8_lossy(hd.value).trim().to_string();
        let name = hd.name.to_ascii_lowercase();
        match name.as_str() {
            "upgrade" => h.upgrade |= v.eq_ignore_ascii_case("websocket"),
            "sec-websocket-key" => h.key = Some(v),
            "sec-websocket-version" => h.version_ok = v == "13",
            "sec-websocket-protocol" => h
                .protocols
                .extend(v.split(',').map(|p| p.trim().to_string())),
            "x-forwarded-for" => h
                .forwarded
                .extend(v.split(',').map(|p| p.trim().to_string())),
            _ => {}
        }
    }
    Some((h, used))
}

/// The client's address: the socket's, or from `X-Forwarded-For` (right
/// to left, the first hop that is not a trusted proxy) when the socket's
/// peer is a trusted proxy.
fn real_ip(peer: IpAddr, forwarded: &[String], trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut ip = peer;
    for hop in forwarded.iter().rev() {
        let Ok(h) = hop.parse::<IpAddr>() else {
            break;
        };
        ip = h;
        if !is_trusted(h) {
            break;
        }
    }
    ip
}

async fn respond(io: &mut Io, status: &str, ctype: &str, body: &str) {
    respond_with(io, status, "", ctype, body).await
}

/// [`respond`] with `extra` header lines (each ending in CRLF).
async fn respond_with(io: &mut Io, status: &str, extra: &str, ctype: &str, body: &str) {
    let r = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Type: {ctype}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = io.write_all(r.as_bytes()).await;
    let _ = io.flush().await;
    let _ = io.shutdown().await;
}

/// Reads the request on a WebSocket door and either serves the page (then
/// `None`) or upgrades: the session to run. `id` is the session's id when
/// it was admitted at accept (not through a trusted proxy).
pub(super) async fn upgrade(
    shared: &Arc<Shared>,
    mut io: Io,
    peer: SocketAddr,
    local: SocketAddr,
    id: Option<u64>,
    stop: &CancellationToken,
) -> Option<Run> {
    let mut buf = Vec::with_capacity(1024);
    let (head, used) = loop {
        if let Some(r) = parse_head(&buf) {
            break r;
        }
        if buf.len() >= MAX_HEAD {
            respond(
                &mut io,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
            return None;
        }
        let mut chunk = [0u8; 1024];
        // An upgrade began before the request was complete: this process
        // will not serve it; the client is told to come back in a second
        // (the new process accepts by then, or this one again if the
        // upgrade failed). Cancel-safe: a read that loses reads nothing.
        let n = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                debug!(%peer, "WebSocket request not finished when an upgrade began: 503");
                respond_with(
                    &mut io,
                    "503 Service Unavailable",
                    "Retry-After: 1\r\n",
                    "text/plain",
                    "holdfast is upgrading; connect again\n",
                )
                .await;
                return None;
            }
            r = io.read(&mut chunk) => r.ok()?,
        };
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if httparse::Request::new(&mut [httparse::EMPTY_HEADER; MAX_HEADERS])
            .parse(&buf)
            .is_err()
        {
            respond(&mut io, "400 Bad Request", "text/plain", "bad request\n").await;
            return None;
        }
    };
    if !head.upgrade {
        let path = head.path.split(['?', '#']).next().unwrap_or("");
        match path {
            "/" | "/index.html" => {
                let page = page(&shared.config());
                respond(&mut io, "200 OK", "text/html; charset=utf-8", &page).await;
            }
            "" => {
                respond(
                    &mut io,
                    "405 Method Not Allowed",
                    "text/plain",
                    "GET only\n",
                )
                .await
            }
            _ => respond(&mut io, "404 Not Found", "text/plain", "not found\n").await,
        }
        return None;
    }
    let Some(key) = head.key.filter(|_| head.version_ok) else {
        respond(
            &mut io,
            "400 Bad Request",
            "text/plain",
            "WebSocket version 13 with a key, please\n",
        )
        .await;
        return None;
    };
    let cfg = shared.config();
    let ip = real_ip(
        crate::clientip::peer_ip(&peer),
        &head.forwarded,
        &cfg.doors.ws_trusted_proxies,
    );
    let real = SocketAddr::new(ip, peer.port());
    let id = match id {
        Some(id) => id,
        None => match admit(shared, real) {
            Ok(id) => id,
            Err(notice) => {
                respond(&mut io, "503 Service Unavailable", "text/plain", &notice).await;
                return None;
            }
        },
    };
    let offered: Vec<&str> = head.protocols.iter().map(|s| s.as_str()).collect();
    let mode = Mode::choose(&offered);
    let mut resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    if let Some(p) = mode.protocol() {
        resp.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    resp.push_str("\r\n");
    if io.write_all(resp.as_bytes()).await.is_err() || io.flush().await.is_err() {
        shared.registry.remove(id);
        return None;
    }
    let rest = buf.split_off(used);
    let gate = Gate::new(io, rest, MAX_MESSAGE);
    let ws = WebSocketStream::from_raw_socket(gate, Role::Server, Some(ws_config())).await;
    debug!(%peer, %real, ?mode, "WebSocket upgraded");
    info!(peer = %real, protocol = mode.protocol().unwrap_or("none"), "WebSocket session");
    Some(Box::pin(session::run(
        shared.clone(),
        id,
        WsConn::new(ws, mode, cfg.doors.ws_ping_interval),
        real,
        local,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let t = vec![Cidr::parse("10.0.0.0/8").unwrap()];
        let f = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(real_ip(ip("1.2.3.4"), &f(&["6.6.6.6"]), &t), ip("1.2.3.4"));
        assert_eq!(
            real_ip(ip("10.0.0.1"), &f(&["6.6.6.6", "5.5.5.5"]), &t),
            ip("5.5.5.5")
        );
        assert_eq!(
            real_ip(ip("10.0.0.1"), &f(&["5.5.5.5", "10.0.0.2"]), &t),
            ip("5.5.5.5")
        );
        assert_eq!(real_ip(ip("10.0.0.1"), &f(&["junk"]), &t), ip("10.0.0.1"));
        assert_eq!(real_ip(ip("10.0.0.1"), &[], &t), ip("10.0.0.1"));
    }

    #[test]
    fn the_page_knows_the_notices() {
        let cfg = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            "game = \"Foo\"\n[notices]\noffline = \"*** Foo is down </script>\"\n\
             [[backends]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let p = page(&cfg);
        assert!(
            p.contains(r#"const NOTICES = ["[holdfast]","*** Foo is down <\/script>""#),
            "{}",
            &p[p.find("NOTICES").unwrap()..][..200]
        );
        assert!(
            p.contains(
                r#"const LOGIN_VERBS = ["connect","connec","conne","conn","con","co","ch","cd","create","creat","crea","cre","cr"];"#
            ),
            "{}",
            &p[p.find("LOGIN_VERBS").unwrap()..][..120]
        );
        assert!(
            !PAGE.contains("http://") && !PAGE.contains("https://"),
            "no CDN"
        );
    }

    #[test]
    fn request_heads() {
        let input: &[u8] = b"GET /?x HTTP/1.1\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key: k\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a, telnet.mudstandards.org\r\n\r\nrest";
        let (h, n) = parse_head(input).unwrap();
        assert!(h.upgrade && h.version_ok);
        assert_eq!(h.path, "/?x");
        assert_eq!(h.protocols, vec!["a", "telnet.mudstandards.org"]);
        assert_eq!(&input[n..], b"rest");
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: x\r\n").is_none());
    }
}
