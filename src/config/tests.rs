use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("t.toml"), text)
}

const MIN: &str = "[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:4202\"\n";

#[test]
fn minimal_defaults() {
    let c = parse(MIN).unwrap();
    assert_eq!(c.backends.len(), 1);
    assert_eq!(c.listen.max_per_ip, defaults::MAX_PER_IP);
    assert_eq!(c.heartbeat.interval, defaults::HB_INTERVAL);
    // TinyMUSH has no way to learn a client's address.
    assert_eq!(c.client_ip.mode, ClientIpMode::None);
    assert!(c.bus.servers.is_empty());
}

#[test]
fn preset_regexes_compile() {
    for f in [
        Flavor::Tinymush,
        Flavor::Teenymush,
        Flavor::Pennmush,
        Flavor::Tinymux,
        Flavor::Evennia,
        Flavor::Custom,
    ] {
        let p = flavor::preset(f);
        for r in p
            .login_success
            .iter()
            .chain(p.login_failure)
            .chain(p.refused)
            .chain(p.announcements)
        {
            Regex::new(r).unwrap();
        }
    }
}

#[test]
fn unknown_key_has_position() {
    let e = parse(&format!("{MIN}bogus = 1\n")).unwrap_err();
    // Top-level unknown key on line 4.
    assert_eq!((e.line, e.col), (4, 1), "{e}");
    assert!(e.message.contains("bogus"), "{e}");
    let e = parse(&format!("[listen]\nmax_sesions = 3\n{MIN}")).unwrap_err();
    assert_eq!((e.line, e.col), (2, 1), "{e}");
}

#[test]
fn bad_duration_has_position() {
    let e = parse(&format!("{MIN}[heartbeat]\ninterval = \"2 parsecs\"\n")).unwrap_err();
    assert_eq!((e.line, e.col), (5, 12), "{e}");
    assert!(e.message.contains("invalid duration"), "{e}");
}

#[test]
fn empty_and_missing_backends() {
    let e = parse("game = \"x\"\nbackends = []\n").unwrap_err();
    assert_eq!((e.line, e.col), (2, 12), "{e}");
    let e = parse("game = \"x\"\n").unwrap_err();
    assert!(e.message.contains("backends"), "{e}");
}

#[test]
fn duplicate_backend_name() {
    let e = parse(&format!(
        "{MIN}[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:1\"\n"
    ))
    .unwrap_err();
    assert_eq!((e.line, e.col), (5, 8), "{e}");
    assert!(e.message.contains("duplicate"), "{e}");
}

#[test]
fn failover_off_and_unix() {
    let c = parse(
        "[[backends]]\nname = \"p\"\naddr = \"unix:/tmp/x.sock\"\n[failover]\nafter = \"off\"\n",
    )
    .unwrap();
    assert_eq!(c.failover.after, None);
    assert_eq!(c.backends[0].addr, BackendAddr::Unix("/tmp/x.sock".into()));
    assert_eq!(c.backend_addr_pos, vec![(3, 8)]);
}

#[test]
fn error_display_format() {
    let e = parse("x = [").unwrap_err();
    let s = e.to_string();
    assert!(s.starts_with("t.toml:1:"), "{s}");
}

#[test]
fn password_env_missing() {
    let e = parse(&format!(
        "{MIN}[heartbeat]\nuser = \"hb\"\npassword_env = \"HOLDFAST_TEST_NOPE_XYZ\"\n"
    ))
    .unwrap_err();
    assert_eq!((e.line, e.col), (6, 16), "{e}");
}

#[test]
fn irc_section() {
    let c = parse(&format!(
        "{MIN}[irc]\nchannels = [\"#a\"]\nsasl_password = \"pw\"\n[irc.formats]\ndown = \"{{instance}} down: {{players}} held\"\n"
    ))
    .unwrap();
    let i = c.irc.unwrap();
    assert_eq!(i.server, defaults::IRC_SERVER);
    assert_eq!(
        i.sasl_user.as_deref(),
        Some("holdfast"),
        "SASL account defaults to the nick"
    );
    assert_eq!(i.reconnect_max, defaults::IRC_RECONNECT_MAX);
    assert_eq!(
        i.formats.down.as_deref(),
        Some("{instance} down: {players} held")
    );
    assert!(parse(MIN).unwrap().irc.is_none());
}

#[test]
fn irc_errors_have_positions() {
    let e = parse(&format!(
        "{MIN}[irc]\n[irc.formats]\nup = \"UP after {{downtim}}\"\n"
    ))
    .unwrap_err();
    assert_eq!((e.line, e.col), (6, 6), "{e}");
    assert!(e.message.contains("unknown placeholder {downtim}"), "{e}");
    let e = parse(&format!("{MIN}[irc]\nrate = 0.0\n")).unwrap_err();
    assert_eq!((e.line, e.col), (5, 8), "{e}");
    let e = parse(&format!("{MIN}[irc]\nchannels = [\"nohash\"]\n")).unwrap_err();
    assert!(e.message.contains("must start with #"), "{e}");
    let e = parse(&format!("{MIN}[irc]\nreconect_max = \"5s\"\n")).unwrap_err();
    assert_eq!((e.line, e.col), (5, 1), "{e}");
}

#[test]
fn bus_server_must_be_a_nats_url() {
    let e = parse(&format!(
        "{MIN}[bus]\nservers = [\"nats://ok:4222\", \"nats://bad host\"]\n"
    ))
    .unwrap_err();
    assert_eq!((e.line, e.col), (5, 30), "{e}");
    assert!(e.message.contains("not a NATS server URL"), "{e}");
    let c = parse(&format!(
        "{MIN}[bus]\nservers = [\"nats://a:4222\", \"tls://b:4222\", \"c:4222\"]\n"
    ))
    .unwrap();
    assert_eq!(c.bus.servers.len(), 3);
}

#[test]
fn bus_tls_files_are_checked() {
    let e = parse(&format!("{MIN}[bus]\ntls_cert_file = \"Cargo.toml\"\n")).unwrap_err();
    assert!(e.message.contains("go together"), "{e}");
    let e = parse(&format!(
        "{MIN}[bus]\ntls_ca_file = \"/nonexistent/ca.pem\"\n"
    ))
    .unwrap_err();
    assert_eq!(e.line, 5, "{e}");
    assert!(e.message.contains("cannot read"), "{e}");
}

#[test]
fn telnet_section() {
    let c = parse(MIN).unwrap();
    assert!(c.telnet.mccp && !c.telnet.backend_mccp, "{:?}", c.telnet);
    let c = parse(&format!(
        "{MIN}[telnet]\nmccp = false\nbackend_mccp = true\n"
    ))
    .unwrap();
    assert!(!c.telnet.mccp && c.telnet.backend_mccp, "{:?}", c.telnet);
    let e = parse(&format!("{MIN}[telnet]\nmccp2 = true\n")).unwrap_err();
    assert_eq!((e.line, e.col), (5, 1), "{e}");
}
