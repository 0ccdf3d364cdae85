use super::*;
use crate::telnet::memory::{TTYPE_IS, TTYPE_SEND};
use crate::telnet::{IAC, SB, SE};
use proptest::prelude::*;

const DO: Verb = Verb::Do;
const DONT: Verb = Verb::Dont;
const WILL: Verb = Verb::Will;
const WONT: Verb = Verb::Wont;

fn neg(v: Verb, o: u8) -> Vec<u8> {
    let mut b = Vec::new();
    write_negotiation(v, o, &mut b);
    b
}

fn sub(o: u8, d: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    write_subnegotiation(o, d, &mut b);
    b
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// A policy plus the bytes it sent each way since the last `take`.
struct Rig {
    p: Policy,
    to_backend: Vec<u8>,
    to_player: Vec<u8>,
}

impl Rig {
    fn new(player_mccp: bool, backend_mccp: bool) -> Rig {
        Rig {
            p: Policy::new(player_mccp, backend_mccp),
            to_backend: Vec::new(),
            to_player: Vec::new(),
        }
    }
    fn game(&mut self, v: Verb, o: u8) -> &mut Self {
        self.p
            .from_backend(v, o, &mut self.to_backend, &mut self.to_player);
        self
    }
    fn game_sub(&mut self, o: u8, d: &[u8]) -> &mut Self {
        self.p
            .from_backend_sub(o, d, &mut self.to_backend, &mut self.to_player);
        self
    }
    fn player(&mut self, v: Verb, o: u8) -> &mut Self {
        self.p
            .from_player(v, o, &mut self.to_backend, &mut self.to_player);
        self
    }
    fn player_sub(&mut self, o: u8, d: &[u8]) -> &mut Self {
        self.p.from_player_sub(o, d, &mut self.to_backend);
        self
    }
    /// (to backend, to player) since the last call.
    fn take(&mut self) -> (Vec<u8>, Vec<u8>) {
        (
            std::mem::take(&mut self.to_backend),
            std::mem::take(&mut self.to_player),
        )
    }
    /// fakemush's greeting (with --mccp).
    fn greeting(&mut self) -> &mut Self {
        self.game(DO, opt::NAWS)
            .game(DO, opt::TTYPE)
            .game(WILL, opt::EOR_OPT)
            .game(WILL, opt::GMCP)
            .game(WILL, opt::MCCP2)
    }
}

const HELLO: &[u8] = br#"Core.Hello {"client":"test","version":"1"}"#;

/// A session whose player settled the first backend's questions.
fn settled() -> Rig {
    let mut r = Rig::new(true, true);
    r.p.backend_started();
    r.greeting();
    r.take();
    r.player(WILL, opt::NAWS)
        .player_sub(opt::NAWS, &[0, 132, 0, 50])
        .player(WILL, opt::TTYPE)
        .player(DO, opt::EOR_OPT)
        .player(DO, opt::GMCP)
        .player_sub(opt::GMCP, HELLO);
    r.game_sub(opt::TTYPE, &[TTYPE_SEND]);
    r.player_sub(opt::TTYPE, b"\x00TINTIN++");
    r.take();
    r
}

#[test]
fn greet_offers_mccp2_only_when_configured() {
    let mut out = Vec::new();
    Policy::new(true, false).greet(&mut out);
    assert_eq!(out, neg(WILL, opt::MCCP2));
    let mut out = Vec::new();
    Policy::new(false, false).greet(&mut out);
    assert!(out.is_empty());
}

#[test]
fn mssp_is_the_proxys_own_when_enabled() {
    let mut p = Policy::new(false, false).with_mssp(true);
    let mut out = Vec::new();
    p.greet(&mut out);
    assert_eq!(out, neg(WILL, opt::MSSP));
    p.backend_started();
    let (mut to_game, mut to_player) = (Vec::new(), Vec::new());
    // The player's DO is a request for holdfast's answer, not the game's.
    p.from_player(DO, opt::MSSP, &mut to_game, &mut to_player);
    assert!(to_game.is_empty() && to_player.is_empty());
    assert!(p.take_mssp_request());
    assert!(!p.take_mssp_request());
    // The game's offer is accepted by the proxy, once; its answer is kept.
    p.from_backend(WILL, opt::MSSP, &mut to_game, &mut to_player);
    p.from_backend(WILL, opt::MSSP, &mut to_game, &mut to_player);
    assert_eq!(to_game, neg(DO, opt::MSSP));
    p.from_backend_sub(opt::MSSP, b"\x01NAME\x02X", &mut to_game, &mut to_player);
    assert!(to_player.is_empty(), "{to_player:?}");
    assert_eq!(p.take_game_mssp().as_deref(), Some(&b"\x01NAME\x02X"[..]));
    // Without it, MSSP is the game's business, as before.
    let mut p = Policy::new(false, false);
    let mut out = Vec::new();
    p.greet(&mut out);
    assert!(out.is_empty());
}

#[test]
fn first_backend_is_relayed_and_mccp_kept_back() {
    let mut r = Rig::new(true, true);
    r.p.backend_started();
    r.greeting();
    let (b, p) = r.take();
    assert_eq!(
        p,
        cat(&[
            neg(DO, opt::NAWS),
            neg(DO, opt::TTYPE),
            neg(WILL, opt::EOR_OPT),
            neg(WILL, opt::GMCP)
        ]),
        "the game's questions reach the player, its MCCP2 offer does not"
    );
    assert_eq!(b, neg(DO, opt::MCCP2), "the proxy takes the game's MCCP2");

    r.player(WILL, opt::NAWS)
        .player_sub(opt::NAWS, &[0, 132, 0, 50])
        .player(WILL, opt::TTYPE)
        .player(DO, opt::EOR_OPT)
        .player(DO, opt::GMCP)
        .player_sub(opt::GMCP, HELLO);
    let (b, p) = r.take();
    assert!(p.is_empty());
    assert_eq!(
        b,
        cat(&[
            neg(WILL, opt::NAWS),
            sub(opt::NAWS, &[0, 132, 0, 50]),
            neg(WILL, opt::TTYPE),
            neg(DO, opt::EOR_OPT),
            neg(DO, opt::GMCP),
            sub(opt::GMCP, HELLO),
        ])
    );
    r.game_sub(opt::TTYPE, &[TTYPE_SEND]);
    assert_eq!(r.take(), (vec![], sub(opt::TTYPE, &[TTYPE_SEND])));
    r.player_sub(opt::TTYPE, b"\x00TINTIN++");
    assert_eq!(r.take(), (sub(opt::TTYPE, b"\x00TINTIN++"), vec![]));
    // Acknowledgements are not answered again.
    r.game(DO, opt::NAWS).game(WILL, opt::GMCP);
    assert_eq!(r.take(), (vec![], vec![]));
}

#[test]
fn next_backend_is_answered_from_memory() {
    let mut r = settled();
    for _ in 0..2 {
        r.p.backend_started();
        r.greeting();
        let (b, p) = r.take();
        assert!(p.is_empty(), "the player is not asked again: {p:?}");
        assert_eq!(
            b,
            cat(&[
                neg(WILL, opt::NAWS),
                sub(opt::NAWS, &[0, 132, 0, 50]),
                neg(WILL, opt::TTYPE),
                neg(DO, opt::EOR_OPT),
                neg(DO, opt::GMCP),
                sub(opt::GMCP, HELLO),
                neg(DO, opt::MCCP2),
            ])
        );
        r.game_sub(opt::TTYPE, &[TTYPE_SEND]);
        assert_eq!(r.take(), (sub(opt::TTYPE, b"\x00TINTIN++"), vec![]));
        // GMCP both ways goes on as before.
        r.game_sub(opt::GMCP, b"Room.Info {}");
        assert_eq!(r.take(), (vec![], sub(opt::GMCP, b"Room.Info {}")));
        r.player_sub(opt::GMCP, b"Core.Ping");
        assert_eq!(r.take(), (sub(opt::GMCP, b"Core.Ping"), vec![]));
    }
}

#[test]
fn what_the_player_never_agreed_to_is_refused() {
    let mut r = Rig::new(true, false);
    r.p.backend_started();
    r.game(DO, opt::NAWS)
        .game(WILL, opt::MSDP)
        .game(DO, opt::CHARSET);
    r.take();
    r.player(WONT, opt::NAWS).player(DONT, opt::MSDP);
    // (the player never answers about CHARSET)
    assert_eq!(
        r.take().0,
        cat(&[neg(WONT, opt::NAWS), neg(DONT, opt::MSDP)])
    );
    r.p.backend_started();
    r.game(DO, opt::NAWS)
        .game(WILL, opt::MSDP)
        .game(DO, opt::CHARSET)
        .game(WILL, opt::MSSP)
        .game(WILL, opt::MCCP2);
    let (b, p) = r.take();
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(
        b,
        cat(&[
            neg(WONT, opt::NAWS),
            neg(DONT, opt::MSDP),
            neg(WONT, opt::CHARSET),
            neg(DONT, opt::MSSP),
            neg(DONT, opt::MCCP2),
        ])
    );
    // Asked again: refused again (RFC 1143), the player still not asked.
    r.game(DO, opt::NAWS).game(WILL, opt::MCCP2);
    assert_eq!(
        r.take(),
        (cat(&[neg(WONT, opt::NAWS), neg(DONT, opt::MCCP2)]), vec![])
    );
}

#[test]
fn other_compression_is_never_passed_on() {
    let mut r = Rig::new(false, true);
    r.p.backend_started();
    r.game(WILL, COMPRESS1)
        .game(WILL, opt::MCCP3)
        .game(DO, opt::MCCP2)
        .game_sub(opt::MCCP3, b"");
    let (b, p) = r.take();
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(
        b,
        cat(&[
            neg(DONT, COMPRESS1),
            neg(DONT, opt::MCCP3),
            neg(WONT, opt::MCCP2),
        ])
    );
    // The player asking for compression the proxy does not offer.
    r.player(DO, opt::MCCP2)
        .player(DO, opt::MCCP3)
        .player(DO, opt::MCCP2);
    let (b, p) = r.take();
    assert!(b.is_empty());
    assert_eq!(
        p,
        cat(&[
            neg(WONT, opt::MCCP2),
            neg(WONT, opt::MCCP3),
            neg(WONT, opt::MCCP2)
        ])
    );
    assert!(!r.p.player_compressed());
}

#[test]
fn player_mccp_follows_the_players_answer() {
    let mut r = Rig::new(true, true);
    r.p.greet(&mut Vec::new());
    r.p.backend_started();
    r.player(DO, opt::MCCP2);
    assert_eq!(r.take(), (vec![], vec![]), "not the backend's business");
    assert!(r.p.player_compressed());
    assert_eq!(r.p.out.encode(b"").as_ref(), [IAC, SB, opt::MCCP2, IAC, SE]);
    r.player(DONT, opt::MCCP2);
    assert!(!r.p.player_compressed());
}

#[test]
fn backend_switching_an_option_off_is_acknowledged_and_its_data_held_back() {
    let mut r = settled();
    r.game(DONT, opt::NAWS);
    assert_eq!(r.take(), (neg(WONT, opt::NAWS), vec![]));
    r.game(DONT, opt::NAWS);
    assert_eq!(r.take(), (vec![], vec![]), "no second answer");
    r.player_sub(opt::NAWS, &[0, 100, 0, 40]);
    assert_eq!(r.take(), (vec![], vec![]), "NAWS is off with this backend");
    // The next backend gets the newest size.
    r.p.backend_started();
    r.game(DO, opt::NAWS);
    assert_eq!(
        r.take(),
        (
            cat(&[neg(WILL, opt::NAWS), sub(opt::NAWS, &[0, 100, 0, 40])]),
            vec![]
        )
    );
}

#[test]
fn requests_the_player_starts_get_the_backends_answer() {
    let mut r = settled();
    r.p.backend_started();
    r.player(WILL, opt::CHARSET);
    assert_eq!(r.take(), (neg(WILL, opt::CHARSET), vec![]));
    r.game(DO, opt::CHARSET);
    assert_eq!(r.take(), (vec![], neg(DO, opt::CHARSET)));
    r.game_sub(opt::CHARSET, b"\x01;UTF-8;LATIN1");
    assert_eq!(r.take(), (vec![], sub(opt::CHARSET, b"\x01;UTF-8;LATIN1")));
    r.player_sub(opt::CHARSET, b"\x02UTF-8");
    assert_eq!(r.take(), (sub(opt::CHARSET, b"\x02UTF-8"), vec![]));
    // A refusal reaches the player too.
    r.player(DO, opt::MSDP);
    assert_eq!(r.take(), (neg(DO, opt::MSDP), vec![]));
    r.game(WONT, opt::MSDP);
    assert_eq!(r.take(), (vec![], neg(WONT, opt::MSDP)));
    // The backend after that gets the charset from memory.
    r.p.backend_started();
    r.game(DO, opt::CHARSET)
        .game_sub(opt::CHARSET, b"\x01;utf-8");
    assert_eq!(
        r.take(),
        (
            cat(&[neg(WILL, opt::CHARSET), sub(opt::CHARSET, b"\x02UTF-8")]),
            vec![]
        )
    );
}

#[test]
fn what_the_player_said_while_held_answers_the_first_backend() {
    let mut r = Rig::new(false, false);
    r.player(WILL, opt::NAWS)
        .player_sub(opt::NAWS, &[0, 90, 0, 30]);
    r.take(); // (no backend: the session drops these)
    r.p.backend_started();
    r.game(DO, opt::NAWS);
    let (b, p) = r.take();
    assert_eq!(
        b,
        cat(&[neg(WILL, opt::NAWS), sub(opt::NAWS, &[0, 90, 0, 30])])
    );
    assert_eq!(p, neg(DO, opt::NAWS), "the player's offer is accepted");
}

#[test]
fn echo_is_always_relayed() {
    let mut r = settled();
    r.p.backend_started();
    r.game(WILL, opt::ECHO);
    assert_eq!(r.take(), (vec![], neg(WILL, opt::ECHO)));
    r.player(DO, opt::ECHO);
    assert_eq!(r.take(), (neg(DO, opt::ECHO), vec![]));
    r.game(WONT, opt::ECHO);
    assert_eq!(r.take(), (vec![], neg(WONT, opt::ECHO)));
    r.player(DONT, opt::ECHO);
    assert_eq!(r.take(), (neg(DONT, opt::ECHO), vec![]));
}

#[test]
fn ttype_without_a_remembered_answer_asks_the_player() {
    let mut r = Rig::new(false, false);
    r.p.backend_started();
    r.game(DO, opt::TTYPE);
    r.player(WILL, opt::TTYPE);
    r.take(); // the first game never asked SEND
    r.p.backend_started();
    r.game(DO, opt::TTYPE).game_sub(opt::TTYPE, &[TTYPE_SEND]);
    assert_eq!(
        r.take(),
        (neg(WILL, opt::TTYPE), sub(opt::TTYPE, &[TTYPE_SEND]))
    );
    r.player_sub(opt::TTYPE, &[TTYPE_IS, b'X']);
    assert_eq!(r.take(), (sub(opt::TTYPE, &[TTYPE_IS, b'X']), vec![]));
}

fn verb() -> impl Strategy<Value = Verb> {
    prop_oneof![Just(DO), Just(DONT), Just(WILL), Just(WONT)]
}

proptest! {
    /// Whatever a later backend says, the player hears nothing (ECHO
    /// aside), each message gets at most one reply, and no agreement is
    /// ever sent twice without a refusal in between (RFC 1143: no loops).
    #[test]
    fn later_backends_never_loop_or_bother_the_player(
        said in proptest::collection::vec((verb(), 0u8..6), 0..60),
    ) {
        let opts = [opt::NAWS, opt::TTYPE, opt::GMCP, opt::MCCP2, opt::MSDP, COMPRESS1];
        let mut r = settled();
        r.p.backend_started();
        let mut on: std::collections::HashMap<(u8, bool), bool> = Default::default();
        for (v, i) in said {
            let o = opts[i as usize];
            r.game(v, o);
            let (b, p) = r.take();
            prop_assert!(p.is_empty(), "player bothered: {:?}", p);
            if b.is_empty() {
                continue;
            }
            // One negotiation, then only replayed subnegotiations.
            prop_assert!(b.len() >= 3 && b[0] == IAC && b[2] == o, "{:?}", b);
            prop_assert!(b[3..].is_empty() || b[3..5] == [IAC, SB], "{:?}", b);
            let will_axis = matches!(b[1], 251 | 252);
            let yes = matches!(b[1], 251 | 253);
            let was = on.insert((o, will_axis), yes).unwrap_or(false);
            prop_assert!(!(yes && was), "agreed twice: {:?}", b);
        }
    }
}

#[test]
fn options_read_untouched_as_nothing() {
    let mut m = Options::default();
    assert_eq!(m.get(31).player, Said::Nothing);
    m.at(31).player = Said::Yes;
    m.at(255).told_backend = Said::No;
    m.at(0).told_player = Said::Asked;
    assert_eq!(
        (
            m.get(31).player,
            m.get(255).told_backend,
            m.get(0).told_player
        ),
        (Said::Yes, Said::No, Said::Asked)
    );
    assert_eq!(m.get(1), options::Entry::default());
    m.at(31).player = Said::No;
    assert_eq!(m.get(31).player, Said::No);
    assert!(!std::mem::take(&mut m.at(86).awaiting_player));
    m.at(86).awaiting_player = true;
    assert!(std::mem::take(&mut m.at(86).awaiting_player));
    assert!(!m.get(86).awaiting_player);
}

/// An upgrade carries the options as four maps, the shape the previous
/// release wrote: both ways give the same state back.
#[test]
fn options_cross_an_upgrade_in_the_previous_shape() {
    let old = r#"{"player":{"set":[[24,"Yes"],[31,"Nothing"]]},"told_player":{"set":[[86,"Yes"]]},"told_backend":{"set":[[31,"Asked"],[24,"Yes"]]},"awaiting_player":{"set":[[24,true]]}}"#;
    let o: Options = serde_json::from_str(old).expect("previous shape");
    assert_eq!(o.get(24).player, Said::Yes);
    assert_eq!(o.get(24).told_backend, Said::Yes);
    assert!(o.get(24).awaiting_player);
    assert_eq!(o.get(31).told_backend, Said::Asked);
    assert_eq!(o.get(31).player, Said::Nothing);
    assert_eq!(o.get(86).told_player, Said::Yes);
    let again: Options =
        serde_json::from_str(&serde_json::to_string(&o).expect("write")).expect("read");
    for k in 0..=255 {
        assert_eq!(o.get(k), again.get(k), "option {k}");
    }
    let v: serde_json::Value = serde_json::to_value(&o).expect("value");
    for column in ["player", "told_player", "told_backend", "awaiting_player"] {
        assert!(v[column]["set"].is_array(), "{column} in {v}");
    }
}
