use super::*;
use regex::Regex;

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

#[test]
fn empty_marker_needs_login_success() {
    // Bug 5: with no marker and no login_success pattern nothing can
    // confirm a login, so every login would wait for its timeout.
    let e = parse(&format!("{MIN}[templates]\nmarker = \"\"\n")).unwrap_err();
    assert_eq!((e.line, e.col), (5, 10), "{e}");
    assert!(e.message.contains("templates.marker is empty"), "{e}");
    let e = parse(&format!(
        "flavor = \"tinymux\"\n{MIN}[templates]\nlogin_success = []\nmarker = \"\"\n"
    ))
    .unwrap_err();
    assert_eq!((e.line, e.col), (7, 10), "{e}");
    // A success pattern confirms instead: from the flavor (Evennia's
    // "You become") or given here.
    let c = parse(&format!(
        "flavor = \"evennia\"\n{MIN}[templates]\nmarker = \"\"\n"
    ))
    .unwrap();
    assert!(c.templates.marker.is_empty());
    let c = parse(&format!(
        "{MIN}[templates]\nmarker = \"\"\nlogin_success = [\"^Welcome back\"]\n"
    ))
    .unwrap();
    assert!(c.templates.marker.is_empty());
    // A marker that is not empty still needs its nonce.
    let e = parse(&format!("{MIN}[templates]\nmarker = \"think hi\"\n")).unwrap_err();
    assert!(e.message.contains("{nonce}"), "{e}");
}

#[test]
fn bus_url_with_credentials_is_rejected() {
    // Bug 11: these URLs are logged and printed by `check`.
    for url in [
        "nats://user:pw@127.0.0.1:4222",
        "nats://s3cr3ttoken@127.0.0.1:4222",
        "tls://u:p@host:4222/",
        "u:p@host:4222",
    ] {
        let e = parse(&format!(
            "{MIN}[bus]\nservers = [\"nats://ok:4222\", \"{url}\"]\n"
        ))
        .unwrap_err();
        assert_eq!((e.line, e.col), (5, 30), "{url}: {e}");
        assert!(e.message.contains("bus.password_env"), "{e}");
        assert!(
            !e.message.contains(url),
            "the error repeats the secret: {e}"
        );
    }
    // An @ after the host is a path, not credentials.
    assert!(parse(&format!("{MIN}[bus]\nservers = [\"nats://h:4222\"]\n")).is_ok());
}

#[test]
fn notices_placeholders_are_checked() {
    let e = parse(&format!("{MIN}[notices]\noffline = \"{{gmae}} is down\"\n")).unwrap_err();
    assert_eq!((e.line, e.col), (5, 11), "{e}");
    assert!(
        e.message.contains(
            "notices.offline: unknown placeholder {gmae}; this one knows {game} {backend}"
        ),
        "{e}"
    );
    // {downtime} only where an outage has a length.
    let e = parse(&format!(
        "{MIN}[notices]\nheld_input = \"down for {{downtime}}\"\n"
    ))
    .unwrap_err();
    assert!(e.message.contains("{downtime}"), "{e}");
    let c = parse(&format!(
        "{MIN}[notices]\nonline = \"{{game}} back after {{downtime}} on {{backend}} }}:-{{\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.notices.online,
        "{game} back after {downtime} on {backend} }:-{"
    );
}

#[test]
fn zero_durations_are_rejected() {
    let cases: &[(&str, &str, (usize, usize), &str)] = &[
        (
            "heartbeat",
            "interval = \"0s\"",
            (5, 12),
            "heartbeat.interval cannot be 0",
        ),
        (
            "heartbeat",
            "interval = \"10ms\"",
            (5, 12),
            "heartbeat.interval must be at least 100ms",
        ),
        (
            "heartbeat",
            "timeout = \"0ms\"",
            (5, 11),
            "heartbeat.timeout cannot be 0",
        ),
        (
            "listen",
            "login_timeout = \"0s\"",
            (5, 17),
            "\"off\" turns it off",
        ),
        (
            "outage",
            "max_hold = \"0s\"",
            (5, 12),
            "outage.max_hold cannot be 0",
        ),
        (
            "outage",
            "queue_max_age = \"0s\"",
            (5, 17),
            "outage.queue_max_age cannot be 0",
        ),
        (
            "relogin",
            "timeout = \"0s\"",
            (5, 11),
            "relogin.timeout cannot be 0",
        ),
        (
            "templates",
            "login_confirm_timeout = \"0s\"",
            (5, 25),
            "templates.login_confirm_timeout",
        ),
        (
            "limits",
            "write_timeout = \"0s\"",
            (5, 17),
            "limits.write_timeout cannot be 0",
        ),
        (
            "bus",
            "request_timeout = \"0s\"",
            (5, 19),
            "bus.request_timeout cannot be 0",
        ),
        (
            "bus",
            "presence_interval = \"0s\"",
            (5, 21),
            "bus.presence_interval cannot be 0",
        ),
        (
            "irc",
            "vanish_after = \"0s\"",
            (5, 16),
            "irc.vanish_after cannot be 0",
        ),
    ];
    for (section, line, pos, msg) in cases {
        let e = parse(&format!("{MIN}[{section}]\n{line}\n")).unwrap_err();
        assert_eq!((e.line, e.col), *pos, "{line}: {e}");
        assert!(e.message.contains(msg), "{line}: {e}");
    }
    let e =
        parse("[[backends]]\nname = \"a\"\naddr = \"127.0.0.1:4202\"\nconnect_timeout = \"0s\"\n")
            .unwrap_err();
    assert_eq!((e.line, e.col), (4, 19), "{e}");
    // Zero where it means something: no jitter, fail over at once; and
    // "off" stays the way to turn a limit off.
    let c = parse(&format!(
        "{MIN}[relogin]\njitter = \"0ms\"\n[failover]\nafter = \"0s\"\n[listen]\nlogin_timeout = \"off\"\n"
    ))
    .unwrap();
    assert_eq!(c.relogin.jitter, std::time::Duration::ZERO);
    assert_eq!(c.failover.after, Some(std::time::Duration::ZERO));
    assert_eq!(c.listen.login_timeout, None);
}

#[test]
fn bus_cluster_keys() {
    let bus = "[bus]\nservers = [\"nats://a:4222\"]\njetstream = true\n";
    let c = parse(&format!("{MIN}{bus}cluster = \"mush\"\ncluster_size = 3\n")).unwrap();
    let cl = c.bus.cluster.expect("a cluster");
    assert_eq!(
        (cl.name.as_str(), cl.size, cl.lease),
        ("mush", 3, DEFAULT_LEASE)
    );
    let c = parse(&format!(
        "{MIN}{bus}cluster = \"mush\"\ncluster_size = 1\nlease = \"2s\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.bus.cluster.unwrap().lease,
        std::time::Duration::from_secs(2)
    );
    assert_eq!(parse(&format!("{MIN}{bus}")).unwrap().bus.cluster, None);
    // Each mistake names the key's line and column.
    let e = parse(&format!("{MIN}{bus}cluster = \"mush\"\n")).unwrap_err();
    assert_eq!((e.line, e.col), (7, 11), "{e}");
    assert!(e.message.contains("bus.cluster_size"), "{e}");
    let e = parse(&format!("{MIN}{bus}cluster = \"mush\"\ncluster_size = 0\n")).unwrap_err();
    assert_eq!((e.line, e.col), (8, 16), "{e}");
    let e = parse(&format!("{MIN}{bus}cluster_size = 3\n")).unwrap_err();
    assert!(e.message.contains("needs bus.cluster"), "{e}");
    let e = parse(&format!("{MIN}{bus}lease = \"2s\"\n")).unwrap_err();
    assert!(e.message.contains("needs bus.cluster"), "{e}");
    let e = parse(&format!("{MIN}{bus}cluster = \"a.b\"\ncluster_size = 3\n")).unwrap_err();
    assert!(e.message.contains("letters, digits"), "{e}");
    let e = parse(&format!(
        "{MIN}{bus}cluster = \"mush\"\ncluster_size = 3\nlease = \"10ms\"\n"
    ))
    .unwrap_err();
    assert_eq!((e.line, e.col), (9, 9), "{e}");
    let e = parse(&format!(
        "{MIN}[bus]\nservers = [\"nats://a:4222\"]\ncluster = \"mush\"\ncluster_size = 3\n"
    ))
    .unwrap_err();
    assert!(e.message.contains("bus.jetstream = true"), "{e}");
}

#[test]
fn resume_never_adds_to_the_flavor_guests_and_errors_have_positions() {
    let c = parse(&format!("{MIN}[resume]\nnever = [\"Shared*\", \"bot?\"]\n")).unwrap();
    for (name, never) in [
        ("guest", true),
        ("Guest7", true),
        ("sharedroom", true),
        ("bot1", true),
        ("bot12", false),
        ("Alice", false),
    ] {
        assert_eq!(c.resume.never_resumes(name), never, "{name}");
    }
    let c = parse(&format!("flavor = \"custom\"\n{MIN}")).unwrap();
    assert!(!c.resume.never_resumes("guest"), "custom names no guests");
    let e = parse(&format!("{MIN}[resume]\nnever = [\"ok\", \"\"]\n")).unwrap_err();
    assert_eq!((e.line, e.col), (5, 16), "{e}");
    assert!(e.message.contains("resume.never"), "{e}");
    let e = parse(&format!("{MIN}[resume]\nnever = [\"**\"]\n")).unwrap_err();
    assert!(e.to_string().contains("resume.keep"), "{e}");
}
