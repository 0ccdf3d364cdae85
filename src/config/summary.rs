//! `holdfast check`'s short human summary of a valid config.

use std::time::Duration;

use super::{ClientIpMode, Config};

/// A short human summary of `cfg`, as `holdfast check` prints it.
pub fn summary(cfg: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let d = |d: Option<Duration>| {
        d.map(|d| humantime::format_duration(d).to_string())
            .unwrap_or_else(|| "off".into())
    };
    let _ = writeln!(s, "{}: ok", cfg.path.display());
    let _ = writeln!(s, "  game:      {} (flavor {})", cfg.game, cfg.flavor);
    let addrs: Vec<String> = cfg.listen.addrs.iter().map(|a| a.to_string()).collect();
    let _ = writeln!(
        s,
        "  listen:    {} (max {} sessions, {} per IP, login timeout {}{})",
        addrs.join(", "),
        cfg.listen.max_sessions,
        cfg.listen.max_per_ip,
        d(cfg.listen.login_timeout),
        if cfg.listen.lazy_connect {
            ", lazy connect"
        } else {
            ""
        }
    );
    let dd = &cfg.doors;
    let doors: Vec<String> = (dd.tls_addrs.iter().map(|a| format!("tls {a}")))
        .chain(dd.ws_addrs.iter().map(|a| format!("ws {a}")))
        .chain(dd.wss_addrs.iter().map(|a| format!("wss {a}")))
        .collect();
    if !doors.is_empty() {
        let _ = writeln!(s, "  doors:     {}", doors.join(", "));
    }
    if let Some(t) = &dd.tls {
        let _ = writeln!(
            s,
            "  tls:       {} with {} (the key matches)",
            t.cert_file.display(),
            t.key_file.display()
        );
    }
    let mssp = match dd.mssp_mode {
        super::MsspMode::On => "answered by holdfast",
        super::MsspMode::IfGameOffers => "answered by holdfast once the game offers it",
        super::MsspMode::Off => "left to the game (mssp.enabled = false)",
    };
    let _ = writeln!(s, "  mssp:      {mssp} ({} variables set)", dd.mssp.len());
    for (i, b) in cfg.backends.iter().enumerate() {
        let role = if i == 0 { " (preferred)" } else { "" };
        let _ = writeln!(s, "  backend:   {} {}{}", b.name, b.addr, role);
    }
    let hb = &cfg.heartbeat;
    let _ = writeln!(
        s,
        "  heartbeat: {} every {}, timeout {}, fall {}, rise {}",
        hb.user
            .as_deref()
            .map(|u| format!("as {u}"))
            .unwrap_or_else(|| "connect-only".into()),
        d(Some(hb.interval)),
        d(Some(hb.timeout)),
        hb.fall,
        hb.rise
    );
    let _ = writeln!(
        s,
        "  failover:  after {}, failback {}",
        d(cfg.failover.after),
        if cfg.failover.failback { "on" } else { "off" }
    );
    let ip = match cfg.client_ip.mode {
        ClientIpMode::Command => format!("command {:?}", cfg.client_ip.command),
        // TinyMUSH and TinyMUX have no way at all to learn it.
        ClientIpMode::None => "none: the game sees every player at holdfast's address \
             (site locks, failed-login records and per-address limits apply to all of them)"
            .to_string(),
        m => m.to_string(),
    };
    let _ = writeln!(s, "  client ip: {ip}");
    if cfg.bus.servers.is_empty() {
        let _ = writeln!(s, "  bus:       none (running alone)");
    } else {
        let _ = writeln!(
            s,
            "  bus:       {} (prefix {}, instance {})",
            cfg.bus.servers.join(", "),
            cfg.bus.subject_prefix,
            cfg.bus.instance
        );
    }
    if let Some(c) = &cfg.bus.cluster {
        let _ = writeln!(
            s,
            "  cluster:   {} of {} instances (a failover needs {}), lease {}",
            c.name,
            c.size,
            c.size / 2 + 1,
            humantime::format_duration(c.lease)
        );
    }
    if let Some(irc) = &cfg.irc {
        let _ = writeln!(
            s,
            "  irc:       {} as {} in {}",
            irc.server,
            irc.nick,
            irc.channels.join(" ")
        );
    }
    s
}
