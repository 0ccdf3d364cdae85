//! MSSP (telnet option 70, and the plain-text `MSSP-REQUEST`), answered by
//! holdfast itself so crawlers get an answer while the game is down.
//!
//! holdfast answers when `[mssp]` is in the config, or, without it, once
//! the game offered MSSP to the probe (`backend::mssp`); `[mssp] enabled =
//! false` leaves MSSP to the game. The answer merges, later winning: the
//! game's last MSSP answer (asked by the probe, or by a session on its
//! player's behalf) less what only held for the game's own port (`PORT`,
//! `SSL`, `TLS`, `WEBSOCKET`), then what only holdfast knows: `PLAYERS`
//! (sessions logged in: never the probe), `UPTIME` (when the proxy
//! started), `PORT` (the first player port), `TLS` and `SSL` (the TLS
//! port: Mudlet offers the switch on either), `WEBSOCKET`, then `[mssp]`.
//! `NAME` is `game` unless the game or `[mssp]` gives one.

use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::backend::mssp as game;
use crate::config::{Config, MsspMode};
use crate::state::Shared;
use crate::telnet::{opt, write_subnegotiation};
use crate::transport::Door;

pub use crate::backend::mssp::{parse, Vars, MSSP_VAL, MSSP_VAR};

/// What a session's core asks its driver to do about MSSP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The player sent `IAC DO MSSP`: answer with the subnegotiation.
    Telnet,
    /// The player typed `MSSP-REQUEST` before logging in: answer in text.
    Text,
    /// The game sent its MSSP subnegotiation (payload): remember it.
    GameSaid(Vec<u8>),
}

/// When the proxy first started (Unix seconds; an upgrade does not reset it).
static STARTED: OnceLock<u64> = OnceLock::new();
/// The ports of the bound front doors.
static PORTS: Mutex<Vec<(Door, u16)>> = Mutex::new(Vec::new());
/// The first bound player (telnet) port.
static PLAYER_PORT: OnceLock<u16> = OnceLock::new();

/// Variables that name the game's own ports, which players cannot reach
/// behind holdfast (a PennMUSH behind it says `PORT=4311`, its internal
/// port): holdfast's own ports replace them.
const GAME_PORT_VARS: [&str; 4] = ["PORT", "SSL", "TLS", "WEBSOCKET"];

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Records the proxy's first start, UNIX seconds (carried over
/// upgrades; the first call wins).
pub fn mark_start(unix: u64) {
    STARTED.get_or_init(|| unix);
}

/// Records a bound front door's port.
pub fn door_bound(door: Door, port: u16) {
    PORTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((door, port));
}

/// Records a bound player (telnet) port; the first one is `PORT`.
pub fn player_port_bound(port: u16) {
    PLAYER_PORT.get_or_init(|| port);
}

/// Whether holdfast answers MSSP now (rather than leaving it to the game).
pub fn answers(cfg: &Config) -> bool {
    match cfg.doors.mssp_mode {
        MsspMode::On => true,
        MsspMode::Off => false,
        MsspMode::IfGameOffers => game::game_offers(),
    }
}

/// Remembers the game's answer.
pub fn game_said(data: &[u8]) {
    game::game_said(data);
}

fn set(vars: &mut Vars, k: &str, v: Vec<String>) {
    match vars.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(k)) {
        Some(e) => e.1 = v,
        None => vars.push((k.to_string(), v)),
    }
}

/// The merged variables, now.
pub fn variables(shared: &Shared) -> Vars {
    let cfg = shared.config();
    let (_, logged_in, _) = shared.registry.counts();
    let ports = PORTS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    merge(
        &cfg,
        game::game_vars(),
        logged_in,
        *STARTED.get_or_init(now),
        PLAYER_PORT.get().copied(),
        &ports,
    )
}

/// [`variables`] from its parts.
fn merge(
    cfg: &Config,
    mut vars: Vars,
    logged_in: usize,
    started: u64,
    player_port: Option<u16>,
    ports: &[(Door, u16)],
) -> Vars {
    vars.retain(|(k, _)| !GAME_PORT_VARS.iter().any(|p| k.eq_ignore_ascii_case(p)));
    if !vars.iter().any(|(k, _)| k.eq_ignore_ascii_case("NAME")) {
        vars.insert(0, ("NAME".into(), vec![cfg.game.clone()]));
    }
    set(&mut vars, "PLAYERS", vec![logged_in.to_string()]);
    set(&mut vars, "UPTIME", vec![started.to_string()]);
    if let Some(p) = player_port {
        set(&mut vars, "PORT", vec![p.to_string()]);
    }
    let port = |door| ports.iter().find(|(d, _)| *d == door).map(|(_, p)| *p);
    if let Some(p) = port(Door::Tls) {
        set(&mut vars, "TLS", vec![p.to_string()]);
        set(&mut vars, "SSL", vec![p.to_string()]);
    }
    if let Some(p) = port(Door::Ws) {
        set(&mut vars, "WEBSOCKET", vec![p.to_string()]);
    }
    for (k, v) in &cfg.doors.mssp {
        set(&mut vars, k, v.clone());
    }
    vars
}

fn clean(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(c, '\0' | '\u{1}' | '\u{2}' | '\t' | '\r' | '\n'))
        .collect()
}

/// `IAC SB MSSP ... IAC SE`.
pub fn telnet_answer(vars: &Vars) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, vs) in vars {
        data.push(MSSP_VAR);
        data.extend_from_slice(clean(k).as_bytes());
        for v in vs {
            data.push(MSSP_VAL);
            data.extend_from_slice(clean(v).as_bytes());
        }
    }
    let mut out = Vec::new();
    write_subnegotiation(opt::MSSP, &data, &mut out);
    out
}

/// The plain-text answer to `MSSP-REQUEST`.
pub fn text_answer(vars: &Vars) -> Vec<u8> {
    let mut s = String::from("\r\nMSSP-REPLY-START\r\n");
    for (k, vs) in vars {
        s.push_str(&clean(k));
        for v in vs {
            s.push('\t');
            s.push_str(&clean(v));
        }
        s.push_str("\r\n");
    }
    s.push_str("MSSP-REPLY-END\r\n");
    s.into_bytes()
}

/// Whether a line typed on the connect screen is the plain-text request.
pub fn is_text_request(line: &[u8]) -> bool {
    line.trim_ascii().eq_ignore_ascii_case(b"MSSP-REQUEST")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_encode_round_trip() {
        let vars: Vars = vec![
            ("NAME".into(), vec!["Foo".into()]),
            ("CODEBASE".into(), vec!["A".into(), "B".into()]),
        ];
        let t = telnet_answer(&vars);
        assert_eq!(&t[..3], &[255, 250, 70]);
        assert_eq!(parse(&t[3..t.len() - 2]), vars);
        let text = String::from_utf8(text_answer(&vars)).unwrap();
        assert_eq!(
            text,
            "\r\nMSSP-REPLY-START\r\nNAME\tFoo\r\nCODEBASE\tA\tB\r\nMSSP-REPLY-END\r\n"
        );
        assert!(is_text_request(b" mssp-request "));
        assert!(!is_text_request(b"say MSSP-REQUEST"));
    }

    #[test]
    fn holdfasts_ports_replace_the_games() {
        let cfg = Config::parse(
            std::path::Path::new("t.toml"),
            "game = \"Foo\"\n[mssp]\nCONTACT = \"a@b\"\n\
             [[backends]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let game: Vars = vec![
            ("NAME".into(), vec!["Penn".into()]),
            ("PLAYERS".into(), vec!["3".into()]),
            ("PORT".into(), vec!["4311".into()]),
            ("SSL".into(), vec!["4312".into()]),
        ];
        let v = merge(&cfg, game, 2, 7, Some(4201), &[(Door::Tls, 4203)]);
        let get = |k: &str| v.iter().find(|(n, _)| n == k).map(|(_, v)| v.join("|"));
        assert_eq!(get("NAME").as_deref(), Some("Penn"));
        assert_eq!(get("PLAYERS").as_deref(), Some("2"));
        assert_eq!(get("PORT").as_deref(), Some("4201"));
        assert_eq!(get("TLS").as_deref(), Some("4203"));
        assert_eq!(get("SSL").as_deref(), Some("4203"));
        assert_eq!(get("UPTIME").as_deref(), Some("7"));
        assert_eq!(get("CONTACT").as_deref(), Some("a@b"));
        // Without a TLS listener the game's private SSL port is not said.
        let v = merge(
            &cfg,
            vec![("SSL".into(), vec!["4312".into()])],
            0,
            7,
            None,
            &[],
        );
        assert!(!v.iter().any(|(k, _)| k == "SSL" || k == "PORT"), "{v:?}");
    }
}
