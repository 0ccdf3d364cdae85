//! Snapshot → restore round trips of the session core: the restored core
//! carries on exactly where the old one stopped, mid-line, mid telnet
//! sequence, held with queued lines, mid re-login.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tokio::time::{advance, Instant};

use super::action::{Action, Actions, Ctx};
use super::core::Core;
use super::snapshot::{
    restore, resume_bytes, snapshot, snapshot_detached, DetachedWas, SnapError, MAGIC,
};
use crate::config::Config;
use crate::state::{BackendView, Phase, PoolState};

const CFG: &str = r#"
game = "Test MUSH"
[[backends]]
name = "a"
addr = "127.0.0.1:1"
[client_ip]
mode = "none"
[heartbeat]
interval = "1s"
timeout = "1s"
[relogin]
jitter = "0s"
[outage]
queue_input = true
[notices]
offline = "OFFLINE"
online = "ONLINE"
queued_input = "QUEUED"
"#;

struct T {
    core: Core,
    cfg: Config,
    pool: PoolState,
}

impl T {
    fn new() -> T {
        let cfg = Config::parse(Path::new("t.toml"), CFG).unwrap();
        let peer = "127.0.0.9:5000".parse().unwrap();
        let local = "127.0.0.1:4201".parse().unwrap();
        let pool = PoolState {
            active: "a".into(),
            backends: vec![BackendView {
                name: "a".into(),
                addr: String::new(),
                up: Some(true),
                since: SystemTime::now(),
                reason: String::new(),
                degraded: None,
            }],
            epoch: 0,
            fenced: false,
        };
        let mut t = T {
            core: Core::new(7, peer, local, &cfg, 0),
            cfg,
            pool,
        };
        t.step(|c, ctx, p, o| c.start(ctx, p, o));
        t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
        // The connect screen: lines typed from now on go straight through.
        t.game(b"Welcome to the test game.\r\n");
        t
    }

    fn step(&mut self, f: impl FnOnce(&mut Core, &mut Ctx, &PoolState, &mut Actions)) -> Actions {
        let now = Instant::now();
        let mut slot = move || now;
        let mut ctx = Ctx {
            cfg: &self.cfg,
            now,
            relogin_slot: &mut slot,
            quiet: None,
            hold_tail: None,
        };
        let mut out = Vec::new();
        f(&mut self.core, &mut ctx, &self.pool, &mut out);
        out
    }

    /// Bytes from the player; a login is answered as the driver does when
    /// no detached session has that name.
    fn player(&mut self, b: &[u8]) -> Actions {
        let first = self.step(|c, ctx, _, o| c.player_data(ctx, b, o));
        let mut out = Vec::new();
        for a in first {
            match a {
                Action::TryResume { line, .. } => {
                    out.extend(self.step(|c, ctx, _, o| c.resume_refused(ctx, &line, o)));
                    out.extend(self.step(|c, ctx, _, o| c.resume_settled(ctx, o)));
                }
                a => out.push(a),
            }
        }
        out
    }

    fn game(&mut self, b: &[u8]) -> Actions {
        self.step(|c, ctx, p, o| {
            if c.game_passthrough(b) {
                o.push(Action::Player(b.to_vec()));
            } else {
                assert_eq!(c.game_data(ctx, b, p, o), b.len());
            }
        })
    }

    fn logged_in() -> T {
        let mut t = T::new();
        t.player(b"connect Alice pw\n");
        let out = t.game(b"Welcome!\r\n");
        let marker = game_bytes(&out);
        let nonce = String::from_utf8_lossy(&marker)
            .trim_start_matches("think ")
            .trim_end()
            .to_string();
        t.game(format!("{nonce}\r\n").as_bytes());
        assert_eq!(t.core.user(), Some("Alice"));
        t
    }

    /// Writes the core out, reads it back in its place, and checks that
    /// writing the restored core out again gives the same bytes.
    fn cross(&mut self) {
        let bytes = snapshot(&self.core, false, None, &[]).unwrap();
        let back = restore(&bytes, &self.cfg).unwrap();
        assert!(!back.mccp_was_on);
        self.core = back.core;
        let again = snapshot(&self.core, false, None, &[]).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&again)
        );
    }
}

fn bytes_of(a: &[Action], game: bool) -> Vec<u8> {
    a.iter()
        .flat_map(|a| match a {
            Action::Player(b) | Action::Notice(b) if !game => b.clone(),
            Action::Game(b) if game => b.to_vec(),
            _ => Vec::new(),
        })
        .collect()
}

fn game_bytes(a: &[Action]) -> Vec<u8> {
    bytes_of(a, true)
}

fn player_bytes(a: &[Action]) -> Vec<u8> {
    bytes_of(a, false)
}

#[tokio::test(start_paused = true)]
async fn logged_in_session_crosses_with_its_credentials() {
    let mut t = T::logged_in();
    t.cross();
    assert_eq!(t.core.user(), Some("Alice"));
    assert_eq!(t.core.phase(), Phase::Relaying);
    assert!(t.core.has_game());
    assert_eq!(t.core.backend(), Some("a"));
    let out = t.player(b"say hi\n");
    assert_eq!(game_bytes(&out), b"say hi\r\n");
    // The credentials came along: a crash and a re-login use them.
    t.step(|c, _, _, o| c.game_closed(o));
    t.step(|c, ctx, p, o| c.alive(ctx, false, p, o));
    assert_eq!(t.core.phase(), Phase::Held);
    t.cross();
    let d = t.core.next_deadline(&t.cfg).expect("a re-login timer");
    advance(d.saturating_duration_since(Instant::now())).await;
    let out = t.step(|c, ctx, p, o| c.timer(ctx, p, o));
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Connect(b) if b == "a")));
    let out = t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    let login = String::from_utf8_lossy(&game_bytes(&out)).into_owned();
    assert!(login.starts_with("connect Alice pw\r\nthink "), "{login:?}");
}

#[tokio::test(start_paused = true)]
async fn partial_line_and_telnet_sequence_from_the_player_cross() {
    let mut t = T::logged_in();
    // Half a line, then half a NAWS subnegotiation (IAC SB 31 0 80 ...).
    t.player(b"say hel\xff\xfa\x1f\x00\x50");
    t.cross();
    let out = t.player(b"\x00\x18\xff\xf0lo there\r\n");
    let to_game = game_bytes(&out);
    assert!(
        to_game.ends_with(b"say hello there\r\n"),
        "{:?}",
        String::from_utf8_lossy(&to_game)
    );
    // The whole NAWS went to the game (unchanged), none of it as text.
    assert!(to_game.starts_with(b"\xff\xfa\x1f\x00\x50\x00\x18\xff\xf0"));
}

#[tokio::test(start_paused = true)]
async fn game_parser_position_crosses() {
    let mut t = T::logged_in();
    // The game's IAC GA split after the IAC, and an unterminated prompt.
    let out = t.game(b"line one\r\nprompt>\xff");
    let mut seen = player_bytes(&out);
    t.cross();
    let out = t.game(b"\xf9more\r\n");
    seen.extend(player_bytes(&out));
    assert_eq!(seen, b"line one\r\nprompt>\xff\xf9more\r\n");
}

#[tokio::test(start_paused = true)]
async fn held_queue_and_timers_cross() {
    let mut t = T::logged_in();
    t.step(|c, _, _, o| c.game_closed(o));
    t.step(|c, ctx, p, o| c.alive(ctx, false, p, o));
    let out = t.player(b"say one\nsay two\nsay thr");
    assert_eq!(player_bytes(&out), b"QUEUED\r\nQUEUED\r\n");
    let before = t.core.next_deadline(&t.cfg);
    t.cross();
    assert_eq!(t.core.queued(), 2);
    assert_eq!(t.core.next_deadline(&t.cfg), before);
    t.player(b"ee\n");
    assert_eq!(t.core.queued(), 3);
    advance(Duration::from_secs(60)).await;
    t.step(|c, ctx, p, o| c.timer(ctx, p, o));
    let out = t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    let login = String::from_utf8_lossy(&game_bytes(&out)).into_owned();
    let nonce = login.lines().nth(1).unwrap().trim_start_matches("think ");
    // Mid re-login: the MOTD is hidden, a partial line held back.
    let motd = t.game(b"MOTD line\r\npartial");
    assert!(player_bytes(&motd).is_empty());
    assert_eq!(t.core.phase(), Phase::Relogin);
    let nonce = nonce.to_string();
    t.cross();
    assert_eq!(t.core.phase(), Phase::Relogin);
    let out = t.game(format!(" line\r\n{nonce}\r\n").as_bytes());
    assert_eq!(player_bytes(&out), b"ONLINE\r\n");
    assert_eq!(game_bytes(&out), b"say one\r\nsay two\r\nsay three\r\n");
    assert_eq!(t.core.phase(), Phase::Relaying);
}

#[tokio::test(start_paused = true)]
async fn not_logged_in_session_crosses_with_its_login_watch() {
    let mut t = T::new();
    t.player(b"connect Bob secret\n");
    t.cross();
    let out = t.game(b"Welcome, Bob!\r\n");
    let marker = String::from_utf8_lossy(&game_bytes(&out)).into_owned();
    let nonce = marker.trim_start_matches("think ").trim_end().to_string();
    assert!(!nonce.is_empty());
    t.cross();
    t.game(format!("{nonce}\r\n").as_bytes());
    assert_eq!(t.core.user(), Some("Bob"));
}

#[tokio::test(start_paused = true)]
async fn mccp_player_stream_must_end_first_and_is_offered_again() {
    let mut t = T::logged_in();
    // The player takes the proxy's MCCP2 offer.
    t.player(b"\xff\xfd\x56");
    assert!(t.core.telnet.out.compressing());
    assert!(matches!(
        snapshot(&t.core, false, None, &[]),
        Err(SnapError::PlayerCompressed(7))
    ));
    let _ = t.core.telnet.out.encode(b"hello");
    t.core.telnet.out.stop();
    let _ = t.core.telnet.out.encode(b"");
    let bytes = snapshot(&t.core, true, None, &[]).unwrap();
    let mut back = restore(&bytes, &t.cfg).unwrap();
    assert!(back.mccp_was_on);
    let v = resume_bytes(&mut back.core, true, "UPGRADED");
    assert_eq!(v, b"\xff\xfb\x56UPGRADED\r\n");
    // The player says yes again: a new stream starts.
    t.core = back.core;
    t.player(b"\xff\xfd\x56");
    assert!(t.core.telnet.out.compressing());
}

/// The JSON document of a version-3 state.
fn doc_of(bytes: &[u8]) -> String {
    assert_eq!(&bytes[..4], MAGIC);
    let len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    String::from_utf8(bytes[8..8 + len].to_vec()).unwrap()
}

/// A version-3 state around `doc` and `tail`.
fn wrap(doc: &str, tail: &[u8]) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&(doc.len() as u32).to_be_bytes());
    v.extend_from_slice(doc.as_bytes());
    v.extend_from_slice(tail);
    v
}

#[tokio::test(start_paused = true)]
async fn other_versions_and_garbage_are_refused() {
    let t = T::logged_in();
    let bytes = snapshot(&t.core, false, None, &[]).unwrap();
    let doc = doc_of(&bytes);
    let s = wrap(&doc.replacen("\"v\":3", "\"v\":99", 1), &[]);
    assert!(matches!(restore(&s, &t.cfg), Err(SnapError::Version(99))));
    // Versions 1 and 2 (the JSON document alone) are read.
    for v in ["1", "2"] {
        let s = doc.replacen("\"v\":3", &format!("\"v\":{v}"), 1);
        let back = restore(s.as_bytes(), &t.cfg).unwrap();
        assert!(back.player.is_none() && back.core.user() == t.core.user());
    }
    // ... but not as version 3 without its framing, nor 3 framed as 2.
    assert!(restore(doc.as_bytes(), &t.cfg).is_err());
    let s = wrap(&doc.replacen("\"v\":3", "\"v\":2", 1), &[]);
    assert!(matches!(restore(&s, &t.cfg), Err(SnapError::Version(2))));
    assert!(matches!(
        restore(b"{\"v\":2}", &t.cfg),
        Err(SnapError::Decode(_))
    ));
    assert!(restore(&bytes[..6], &t.cfg).is_err());
    // A decode error never quotes the snapshot (it holds the password).
    let s = wrap(
        &doc.replacen("\"epoch\":0", "\"epoch\":\"alicepw\"", 1),
        &[],
    );
    let e = restore(&s, &t.cfg).err().expect("a bad field");
    assert!(!e.to_string().contains("alicepw"), "{e}");
}

/// A detached session's full playback and a slow write's unsent output
/// cross as bytes in the tail (a byte a byte, not a JSON number each),
/// and come back as they were; a reference past the tail is refused.
#[tokio::test(start_paused = true)]
async fn the_playback_and_unsent_output_cross_as_bytes() {
    let t = T::logged_in();
    let mut pb = super::playback::Playback::new(100_000, 256 * 1024);
    let line: Vec<u8> = (0..78)
        .map(|i| b'!' + (i % 90) as u8)
        .chain(*b"\r\n")
        .collect();
    for _ in 0..(300 * 1024 / line.len()) {
        pb.record(&line);
    }
    pb.record(b"a partial \xff\xff line");
    let want = pb.bytes();
    assert!(want > 250 * 1024, "{want}");
    let d = DetachedWas {
        away_ms: 5,
        left_ms: 60_000,
        playback: pb,
        why: None,
        told_down: true,
    };
    let bytes = snapshot_detached(&t.core, &d).unwrap();
    // Before version 3 each byte was a JSON number.
    let json_alone = serde_json::to_vec(&d.playback).unwrap().len();
    assert!(json_alone > 3 * want, "{json_alone}");
    println!(
        "playback of {want} bytes: state {} bytes (JSON alone: {json_alone})",
        bytes.len()
    );
    assert!(
        bytes.len() < want + 64 * 1024,
        "{} bytes for {want} of playback",
        bytes.len()
    );
    let back = restore(&bytes, &t.cfg).unwrap();
    let got = back.detached.expect("detached").playback;
    assert_eq!(got.bytes(), want);
    assert_eq!(got.into_bytes(), d.playback.into_bytes());
    let unsent: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let bytes = snapshot(&t.core, false, None, &unsent).unwrap();
    assert!(bytes.len() < unsent.len() + 8 * 1024);
    assert_eq!(restore(&bytes, &t.cfg).unwrap().unsent, unsent);
    // A reference past the tail.
    let doc = doc_of(&bytes);
    let cut = wrap(&doc, &unsent[..10]);
    assert!(matches!(restore(&cut, &t.cfg), Err(SnapError::Decode(_))));
}

#[tokio::test(start_paused = true)]
async fn a_connect_given_up_for_an_upgrade_crosses_and_is_made_at_once() {
    let cfg = Config::parse(Path::new("t.toml"), CFG).unwrap();
    let mut t = T::new();
    // A fresh session whose first connect is still under way when the
    // upgrade asks: the driver drops it, the core still waits for it.
    t.core = Core::new(
        8,
        "127.0.0.9:5001".parse().unwrap(),
        t.core.local.get(),
        &cfg,
        0,
    );
    let out = t.step(|c, ctx, p, o| c.start(ctx, p, o));
    assert!(out.iter().any(|a| matches!(a, Action::Connect(_))));
    t.cross();
    assert!(t.core.connect_pending());
    // A line typed meanwhile waits for the game, as during any connect.
    let out = t.player(b"connect Alice pw\n");
    assert!(game_bytes(&out).is_empty(), "queued until connected");
    assert!(player_bytes(&out).is_empty(), "no notice: {out:?}");
    let out = t.step(|c, ctx, p, o| c.connect_again(ctx, p, o));
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::Connect(b) if b == "a")),
        "{out:?}"
    );
    t.step(|c, ctx, _, o| c.connected(ctx, "a", None, o));
    assert!(!t.core.connect_pending());
    // The queued login goes once the connect screen came, once.
    let out = t.game(b"Welcome to the test game.\r\n");
    assert_eq!(game_bytes(&out), b"connect Alice pw\r\n");
}

#[tokio::test(start_paused = true)]
async fn a_connect_given_up_while_the_game_went_down_holds_the_session() {
    let mut t = T::new();
    t.core = Core::new(
        9,
        "127.0.0.9:5002".parse().unwrap(),
        t.core.local.get(),
        &t.cfg,
        0,
    );
    t.step(|c, ctx, p, o| c.start(ctx, p, o));
    t.cross();
    t.pool.backends[0].up = Some(false);
    let out = t.step(|c, ctx, p, o| c.connect_again(ctx, p, o));
    assert!(!out.iter().any(|a| matches!(a, Action::Connect(_))));
    assert!(!t.core.connect_pending());
    assert_eq!(t.core.phase(), Phase::Held);
    // Back up: the pool brings it back as any held session.
    t.pool.backends[0].up = Some(true);
    t.step(|c, ctx, p, o| c.pool(ctx, p, o));
    let d = t.core.next_deadline(&t.cfg).expect("a paced try");
    advance(d.saturating_duration_since(Instant::now())).await;
    let out = t.step(|c, ctx, p, o| c.timer(ctx, p, o));
    assert!(
        out.iter().any(|a| matches!(a, Action::Connect(_))),
        "{out:?}"
    );
}
