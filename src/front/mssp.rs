//! MSSP (telnet option 70, and the plain-text `MSSP-REQUEST`), answered by
//! holdfast itself so crawlers get an answer while the game is down.
//!
//! The answer merges, later winning: the game's last MSSP answer (seen by
//! any session, which asks the game on the player's behalf), `[mssp]`, and
//! what only holdfast knows: `PLAYERS` (sessions logged in), `UPTIME`
//! (when the proxy started), `TLS` and `WEBSOCKET` (holdfast's ports).
//! `NAME` is `game` unless the game or `[mssp]` gives one. holdfast
//! answers MSSP when the config has an `[mssp]` section (it may be empty);
//! without one the game's MSSP passes through as before.

use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Door;
use crate::state::Shared;
use crate::telnet::{opt, write_subnegotiation};

/// Marks a variable name in the MSSP subnegotiation.
pub const MSSP_VAR: u8 = 1;
/// Marks a value.
pub const MSSP_VAL: u8 = 2;

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

/// MSSP variables, each with one or more values.
pub type Vars = Vec<(String, Vec<String>)>;

/// The game's last answer. Process-wide, like the game itself: any
/// session's copy is the game's.
static GAME: Mutex<Vars> = Mutex::new(Vec::new());
/// When the proxy first started (Unix seconds; an upgrade does not reset it).
static STARTED: OnceLock<u64> = OnceLock::new();
/// The ports of the bound front doors.
static PORTS: Mutex<Vec<(Door, u16)>> = Mutex::new(Vec::new());

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

/// Parses an MSSP subnegotiation payload.
pub fn parse(data: &[u8]) -> Vars {
    let mut vars: Vars = Vec::new();
    let mut cur: Option<(u8, Vec<u8>)> = None;
    let push = |kind: u8, b: Vec<u8>, vars: &mut Vars| {
        let s = String::from_utf8_lossy(&b).into_owned();
        match kind {
            MSSP_VAR => vars.push((s, Vec::new())),
            _ => {
                if let Some(v) = vars.last_mut() {
                    v.1.push(s)
                }
            }
        }
    };
    for &b in data {
        if b == MSSP_VAR || b == MSSP_VAL {
            if let Some((k, s)) = cur.take() {
                push(k, s, &mut vars);
            }
            cur = Some((b, Vec::new()));
        } else if let Some((_, s)) = cur.as_mut() {
            s.push(b);
        }
    }
    if let Some((k, s)) = cur {
        push(k, s, &mut vars);
    }
    vars.retain(|(k, _)| !k.is_empty());
    vars
}

/// Remembers the game's answer.
pub fn game_said(data: &[u8]) {
    let vars = parse(data);
    if !vars.is_empty() {
        *GAME.lock().unwrap_or_else(|e| e.into_inner()) = vars;
    }
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
    let mut vars = GAME.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if !vars.iter().any(|(k, _)| k.eq_ignore_ascii_case("NAME")) {
        vars.insert(0, ("NAME".into(), vec![cfg.game.clone()]));
    }
    let (_, logged_in, _) = shared.registry.counts();
    set(&mut vars, "PLAYERS", vec![logged_in.to_string()]);
    set(
        &mut vars,
        "UPTIME",
        vec![STARTED.get_or_init(now).to_string()],
    );
    let ports = PORTS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (door, name) in [(Door::Tls, "TLS"), (Door::Ws, "WEBSOCKET")] {
        if let Some((_, p)) = ports.iter().find(|(d, _)| *d == door) {
            set(&mut vars, name, vec![p.to_string()]);
        }
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
}
