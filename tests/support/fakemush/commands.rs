//! Command processing: everything a connection can type, before and after
//! login. Runs synchronously under the game lock.

use crate::game::{send_announcement, send_line};
use crate::game::{Flavor, Game, Out, State};
use crate::jlog::V;
use crate::telnet::{self, GA, IAC, OPT_GMCP};
use std::borrow::Cow;
use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::UnboundedSender;

/// Splits off the first whitespace-delimited word; the rest is left-trimmed.
pub fn split_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

fn is_connect_word(lw: &str) -> bool {
    (lw.len() >= 2 && "connect".starts_with(lw)) || lw == "ch" || lw == "cd"
}

/// For a connect line, the same line with the password replaced by `***`.
pub fn redact_connect(line: &str) -> Option<String> {
    let t = line.trim_start();
    let (cmd, rest) = split_word(t);
    if !is_connect_word(&cmd.to_ascii_lowercase()) || rest.is_empty() {
        return None;
    }
    let (name, after) = if let Some(q) = rest.strip_prefix('"') {
        match q.find('"') {
            Some(i) => (&rest[..i + 2], &rest[i + 2..]),
            None => (rest, ""),
        }
    } else {
        split_word(rest)
    };
    if after.trim().is_empty() {
        return None;
    }
    Some(format!("{cmd} {name} ***"))
}

/// Candidate (name, password) splits of the arguments of `connect`.
fn connect_candidates(rest: &str) -> Vec<(String, String)> {
    let rest = rest.trim();
    if let Some(q) = rest.strip_prefix('"') {
        return match q.find('"') {
            Some(i) => vec![(q[..i].to_string(), q[i + 1..].trim().to_string())],
            None => vec![(q.to_string(), String::new())],
        };
    }
    let (first, pass) = split_word(rest);
    let mut v = vec![(first.to_string(), pass.trim().to_string())];
    let words: Vec<&str> = rest.split_whitespace().collect();
    if words.len() > 2 {
        let (last, names) = words.split_last().unwrap_or((&"", &[]));
        v.push((names.join(" "), last.to_string()));
    }
    v
}

pub fn ctime_now() -> String {
    const WD: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    // civil_from_days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        WD[(days + 4).rem_euclid(7) as usize],
        MON[(m - 1) as usize],
        d,
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        y
    )
}

pub struct Cmd<'a> {
    pub id: u64,
    pub tx: &'a UnboundedSender<Out>,
    pub full: &'a str,
    pub lw: &'a str,
    pub rest: &'a str,
}

impl Game {
    pub fn handle_line(&self, id: u64, line: &str) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(s) = st.sess.get_mut(&id) else {
            return;
        };
        s.last = Instant::now();
        let logged: Cow<str> = match redact_connect(line) {
            Some(r) => Cow::Owned(r),
            None => Cow::Borrowed(line),
        };
        let user = s.player.map_or(V::Null, |p| V::S(&self.user(p).name));
        self.log.ev(
            "line",
            &[("conn", V::N(id)), ("user", user), ("line", V::S(&logged))],
        );
        let full = line.trim_start();
        if full.trim_end().is_empty() {
            return;
        }
        let (word, rest) = split_word(full);
        let lw = word.to_ascii_lowercase();
        match lw.as_str() {
            "outputprefix" => {
                s.prefix = (!rest.is_empty()).then(|| rest.to_string());
                return;
            }
            "outputsuffix" => {
                s.suffix = (!rest.is_empty()).then(|| rest.to_string());
                return;
            }
            "idle" if self.cfg.flavor.is_mush() => return,
            _ => {}
        }
        let tx = s.tx.clone();
        let suffix = s.suffix.clone();
        if let Some(p) = &s.prefix {
            send_line(&tx, p);
        }
        let c = Cmd {
            id,
            tx: &tx,
            full,
            lw: &lw,
            rest,
        };
        if s.player.is_none() {
            self.prelogin(st, &c);
        } else {
            self.command(st, &c);
        }
        if let Some(x) = &suffix {
            send_line(&tx, x);
        }
    }

    fn not_available(&self, c: &Cmd) {
        send_line(
            c.tx,
            &format!(
                "Command '{}' is not available. Type \"help\" for help.",
                c.full.trim_end()
            ),
        );
    }

    fn prelogin(&self, st: &mut State, c: &Cmd) {
        let fl = self.cfg.flavor;
        if is_connect_word(c.lw) {
            return self.do_connect(st, c);
        }
        let (word, _) = split_word(c.full);
        match c.lw {
            "quit" if self.cfg.limits.quit_case.quits(word, false) => self.quit(c),
            "who" => self.who(st, c),
            w if w.len() >= 2 && "create".starts_with(w) && fl != Flavor::Plain => {
                self.do_create(st, c)
            }
            "@remotehost" if fl.is_mush() => self.remotehost(st, c),
            _ if fl == Flavor::Evennia => self.not_available(c),
            _ => {
                let _ = c.tx.send(Out::Bytes(self.connect_screen().into_bytes()));
            }
        }
    }

    fn quit(&self, c: &Cmd) {
        let msg = if self.cfg.flavor == Flavor::Evennia {
            "Good bye! Disconnecting..."
        } else {
            "Goodbye. Come back soon!"
        };
        send_line(c.tx, msg);
        let _ = c.tx.send(Out::Close("quit"));
    }

    pub(crate) fn do_connect(&self, st: &mut State, c: &Cmd) {
        let ip = st.sess.get(&c.id).and_then(|s| s.ip);
        if let Some(ip) = ip {
            let lim = &self.cfg.limits;
            if let Some(wait) = st.tracker.fail_throttled(lim, ip) {
                self.log.ev("login_throttled", &[("conn", V::N(c.id))]);
                send_line(
                    c.tx,
                    &format!("Too many failed login attempts from your address.  Please wait {wait} seconds and try again."),
                );
                return;
            }
        }
        let cands = connect_candidates(c.rest);
        let mut name_exists = false;
        let mut found = cands
            .first()
            .and_then(|(name, pass)| self.guest_login(name, pass));
        for (name, pass) in cands.iter().filter(|_| found.is_none()) {
            if let Some(u) = self.find_user(name) {
                name_exists = true;
                if self.password_ok(u, pass) {
                    found = Some(u);
                    break;
                }
            }
        }
        let Some(p) = found else {
            let tried = cands.first().map(|c| c.0.as_str()).unwrap_or("");
            self.log.ev(
                "login_failed",
                &[("conn", V::N(c.id)), ("user", V::S(tried))],
            );
            if let Some(ip) = ip {
                st.tracker.record_fail(&self.cfg.limits, ip);
            }
            let msg = match self.cfg.flavor {
                Flavor::PennMush if name_exists => "That is not the correct password.",
                Flavor::PennMush => "There is no player with that name.",
                Flavor::Evennia => "Username and/or password is incorrect.",
                _ => "Either that player does not exist, or has a different password.",
            };
            send_line(c.tx, msg);
            return;
        };
        let name = self.uname(p).to_string();
        let host = match st.sess.get_mut(&c.id) {
            Some(s) => {
                s.player = Some(p);
                s.host.clone()
            }
            None => return,
        };
        self.log.ev(
            "login",
            &[
                ("conn", V::N(c.id)),
                ("user", V::S(&name)),
                ("host", V::S(&host)),
            ],
        );
        if self.cfg.flavor == Flavor::Evennia {
            send_line(c.tx, &format!("You become {name}."));
        } else {
            send_line(c.tx, &format!("*** MOTD: {}", self.cfg.motd));
            send_line(
                c.tx,
                &format!("Last connect was from {host} on {}.", ctime_now()),
            );
        }
        self.look(st, c);
        let msg = format!("{name} has connected.");
        for (oid, o) in &st.sess {
            if *oid != c.id && o.player.is_some() {
                send_announcement(&o.tx, &msg, self.cfg.split_announce, self.cfg.split_at);
            }
        }
    }

    fn look(&self, st: &State, c: &Cmd) {
        let me = st.sess.get(&c.id).and_then(|s| s.player);
        let mut out = String::new();
        if self.cfg.flavor == Flavor::Evennia {
            out.push_str("Limbo\r\n");
        } else {
            out.push_str("Limbo(#0R)\r\n");
        }
        out.push_str("A featureless grey void. This is the FakeMUSH test room.\r\nContents:\r\n");
        let mut seen: Vec<usize> = Vec::new();
        for p in st.sess.values().filter_map(|s| s.player) {
            if Some(p) != me && !seen.contains(&p) {
                seen.push(p);
                out.push_str(self.uname(p));
                out.push_str("\r\n");
            }
        }
        let _ = c.tx.send(Out::Bytes(out.into_bytes()));
    }

    fn who(&self, st: &State, c: &Cmd) {
        let now = Instant::now();
        let mut out = format!(
            "{:<20} {:>6} {:>4}  {}\r\n",
            "Player Name", "On For", "Idle", "Host"
        );
        let mut n = 0;
        for s in st.sess.values() {
            let Some(p) = s.player else { continue };
            n += 1;
            let on = now.duration_since(s.since).as_secs();
            let idle = now.duration_since(s.last).as_secs();
            let idle = match idle {
                0..=59 => format!("{idle}s"),
                60..=3599 => format!("{}m", idle / 60),
                _ => format!("{}h", idle / 3600),
            };
            out.push_str(&format!(
                "{:<20} {:>6} {:>4}  {}\r\n",
                self.uname(p),
                format!("{:02}:{:02}", on / 3600, on % 3600 / 60),
                idle,
                s.host
            ));
        }
        out.push_str(&format!(
            "{n} Player{} logged in.\r\n",
            if n == 1 { "" } else { "s" }
        ));
        let _ = c.tx.send(Out::Bytes(out.into_bytes()));
    }

    fn remotehost(&self, st: &mut State, c: &Cmd) {
        let arg = split_word(c.rest).0;
        let Some(s) = st.sess.get_mut(&c.id) else {
            return;
        };
        let why = if s.player.is_some() {
            Some("after_login")
        } else if !s.trusted {
            Some("untrusted")
        } else if s.remotehost_used {
            Some("again")
        } else if arg.parse::<IpAddr>().is_err() {
            Some("invalid")
        } else {
            None
        };
        match why {
            Some(why) => {
                self.log.ev(
                    "remotehost_denied",
                    &[("conn", V::N(c.id)), ("ip", V::S(arg)), ("why", V::S(why))],
                );
                send_line(c.tx, "Permission denied.");
            }
            None => {
                let ip = arg
                    .parse::<IpAddr>()
                    .map(|i| i.to_string())
                    .unwrap_or_default();
                self.log
                    .ev("remotehost", &[("conn", V::N(c.id)), ("ip", V::S(&ip))]);
                s.host = ip;
                s.remotehost_used = true;
            }
        }
    }

    fn command(&self, st: &mut State, c: &Cmd) {
        let fl = self.cfg.flavor;
        let me = match st.sess.get(&c.id).and_then(|s| s.player) {
            Some(p) => p,
            None => return,
        };
        if let Some(t) = c.full.strip_prefix('"') {
            return self.say(st, c, me, t);
        }
        if let Some(t) = c.full.strip_prefix(':') {
            return self.pose(st, me, &format!(" {t}"));
        }
        if let Some(t) = c.full.strip_prefix(';') {
            return self.pose(st, me, t);
        }
        let (word, rest) = split_word(c.full);
        // PennMUSH compares the whole line with "QUIT".
        let word = if rest.is_empty() { word } else { "" };
        match c.lw {
            "quit" if self.cfg.limits.quit_case.quits(word, true) => self.quit(c),
            "who" => self.who(st, c),
            "logout" if fl.is_mush() => {
                let name = self.uname(me).to_string();
                if let Some(s) = st.sess.get_mut(&c.id) {
                    s.player = None;
                }
                self.log.ev("logout", &[("conn", V::N(c.id))]);
                let msg = format!("{name} has disconnected.");
                for o in st.sess.values().filter(|o| o.player.is_some()) {
                    send_line(&o.tx, &msg);
                }
                let _ = c.tx.send(Out::Bytes(self.connect_screen().into_bytes()));
            }
            "say" => self.say(st, c, me, c.rest),
            "pose" | "emote" => self.pose(st, me, &format!(" {}", c.rest)),
            "look" | "l" => self.look(st, c),
            "help" => send_line(
                c.tx,
                "Commands: say, pose, look, WHO, QUIT, think, @boot, @shutdown, echo, spam, prompt, gmcp",
            ),
            "think" if fl.is_mush() => {
                let out = self.eval(st, c.id, c.rest, 0);
                send_line(c.tx, &out);
            }
            "@boot" if fl != Flavor::Plain => self.boot(st, c, me),
            "@password" if fl.is_mush() => self.do_password(c, me),
            "password" if fl == Flavor::Evennia => self.do_password(c, me),
            "@remotehost" if fl.is_mush() => self.remotehost(st, c),
            "@shutdown" => {
                if !self.user(me).wizard {
                    return send_line(c.tx, "Permission denied.");
                }
                let by = self.uname(me);
                self.stopping
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                self.log.ev("shutdown", &[("by", V::S(by))]);
                let msg = format!("GAME: Shutdown by {by}");
                for s in st.sess.values() {
                    send_line(&s.tx, &msg);
                    let _ = s.tx.send(Out::Close("shutdown"));
                }
                self.shutdown.notify_one();
            }
            "spam" => match c.rest.trim().parse::<u64>() {
                Ok(n) => {
                    let _ = c.tx.send(Out::Spam(n));
                }
                Err(_) => send_line(c.tx, "Usage: spam <bytes>"),
            },
            "bomb" => match c.rest.trim().parse::<u64>() {
                Ok(n) => {
                    let _ = c.tx.send(Out::Bomb(n));
                }
                Err(_) => send_line(c.tx, "Usage: bomb <bytes>"),
            },
            "echo" => send_line(c.tx, c.rest),
            // `later <ms> <text>`: <text> comes back after <ms> (at most a
            // minute), on this connection if it is still open.
            "later" => {
                let mut it = c.rest.splitn(2, ' ');
                match (it.next().and_then(|m| m.parse::<u64>().ok()), it.next()) {
                    (Some(ms), Some(text)) if ms <= 60_000 => {
                        let tx = c.tx.clone();
                        let text = text.to_string();
                        tokio::spawn(async move {
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                            send_line(&tx, &text);
                        });
                    }
                    _ => send_line(c.tx, "Usage: later <ms> <text>"),
                }
            }
            // Password-style echo off and on (the web client masks its input).
            "echooff" => {
                let _ = c.tx.send(Out::Bytes(vec![IAC, telnet::WILL, 1]));
                send_line(c.tx, "Echo is off.");
            }
            "echoon" => {
                let _ = c.tx.send(Out::Bytes(vec![IAC, telnet::WONT, 1]));
                send_line(c.tx, "Echo is on.");
            }
            "prompt" => {
                let _ = c.tx.send(Out::Bytes(vec![b'>', b' ', IAC, GA]));
            }
            // `bare <text>`: <text> with neither newline nor GA (a prompt
            // as some servers write it).
            "bare" => {
                let _ = c.tx.send(Out::Bytes(c.rest.as_bytes().to_vec()));
            }
            // `bareclose <text>`: <text> with no newline, then the
            // connection closes (a game's last words cut short).
            "bareclose" => {
                let _ = c.tx.send(Out::Bytes(c.rest.as_bytes().to_vec()));
                let _ = c.tx.send(Out::Close("bareclose"));
            }
            "gmcp" => {
                let pkt = telnet::subneg(OPT_GMCP, c.rest.as_bytes());
                let _ = c.tx.send(Out::Bytes(pkt));
            }
            _ if fl == Flavor::Evennia => self.not_available(c),
            _ => send_line(c.tx, "Huh?  (Type \"help\" for help.)"),
        }
    }

    fn say(&self, st: &State, c: &Cmd, me: usize, text: &str) {
        send_line(c.tx, &format!("You say, \"{text}\""));
        let msg = format!("{} says, \"{text}\"", self.uname(me));
        for (oid, o) in &st.sess {
            if *oid != c.id && o.player.is_some() {
                send_line(&o.tx, &msg);
            }
        }
    }

    fn pose(&self, st: &State, me: usize, text: &str) {
        let msg = format!("{}{text}", self.uname(me));
        for o in st.sess.values().filter(|o| o.player.is_some()) {
            send_line(&o.tx, &msg);
        }
    }

    fn boot(&self, st: &mut State, c: &Cmd, me: usize) {
        if !self.user(me).wizard {
            return send_line(c.tx, "Permission denied.");
        }
        let target = self.find_user(c.rest);
        let victims: Vec<u64> = st
            .sess
            .iter()
            .filter(|(_, s)| target.is_some() && s.player == target)
            .map(|(id, _)| *id)
            .collect();
        let Some(t) = target.filter(|_| !victims.is_empty()) else {
            return send_line(c.tx, "That player is not connected.");
        };
        send_line(c.tx, &format!("You booted {} off!", self.uname(t)));
        let msg = format!("You have been booted off the game by {}.", self.uname(me));
        for v in victims {
            if let Some(s) = st.sess.get(&v) {
                send_line(&s.tx, &msg);
                let _ = s.tx.send(Out::Close("boot"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction() {
        assert_eq!(
            redact_connect("connect Alice secret").as_deref(),
            Some("connect Alice ***")
        );
        assert_eq!(
            redact_connect("CO \"Big Bob\" pw 2").as_deref(),
            Some("CO \"Big Bob\" ***")
        );
        assert_eq!(redact_connect("connect Alice"), None);
        assert_eq!(redact_connect("say connect a b"), None);
    }

    #[test]
    fn candidates() {
        assert_eq!(
            connect_candidates("\"Big Bob\" pw2"),
            vec![("Big Bob".to_string(), "pw2".to_string())]
        );
        assert_eq!(connect_candidates("Big Bob pw2").len(), 2);
    }

    #[test]
    fn ctime_shape() {
        let s = ctime_now();
        assert_eq!(s.len(), 24, "{s}");
    }
}
