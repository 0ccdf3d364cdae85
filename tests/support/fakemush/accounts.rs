//! Accounts that change while the game runs, as the real servers change
//! them: `@password` (Evennia: `password`), `create <name> <password>` at
//! the connect screen, and guest logins that make a fresh guest character.
//! Kept beside the configured accounts (`Config::users`, fixed at start),
//! which are accounts `0..n`; these are `n..`. With `--accounts FILE`
//! password changes and created characters are written to FILE and read
//! back at start, as a real game keeps them in its database across a
//! restart (guests are not: the servers destroy them on disconnect).
//!
//! Texts, from each server's source:
//! - `@password` TinyMUSH/TinyMUX: `Password changed.` / `Sorry.`
//!   (TinyMUSH player.c:445-472, TinyMUX player.cpp:1074-1079); PennMUSH
//!   `You have changed your password.` / `The old password that you
//!   entered was incorrect.` (player.c:633-640); Evennia `password <old> =
//!   <new>`: `Password changed.` / `The specified old password isn't
//!   correct.` (commands/default/account.py CmdPassword).
//! - guests: any name starting with "guest" makes a fresh `Guest<n>`, the
//!   lowest free number, whatever the password (TinyMUX net.cpp:2218-2262,
//!   TinyMUSH netcommon.c:2307 and mguests.c:250; PennMUSH picks a free
//!   guest character, bsd.c:5483); Evennia only for `connect guest`
//!   (commands/default/unloggedin.py), names Guest1.. (GUEST_LIST).
//! - `create`: logs the new character in (TinyMUX net.cpp:2494, TinyMUSH
//!   netcommon.c:2485, PennMUSH bsd.c:4490); Evennia makes the account and
//!   says to connect (unloggedin.py CmdUnconnectedCreate).

use crate::commands::{split_word, Cmd};
use crate::game::{send_line, Flavor, Game, State, User};
use crate::jlog::V;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Accounts made while running, and passwords changed.
struct Extra {
    /// Accounts `n..` (leaked: a test game makes a handful).
    users: Vec<&'static User>,
    /// Destroyed (a guest that disconnected).
    gone: Vec<bool>,
    /// New passwords by account.
    pass: BTreeMap<usize, String>,
}

static EXTRA: Mutex<Extra> = Mutex::new(Extra {
    users: Vec::new(),
    gone: Vec::new(),
    pass: BTreeMap::new(),
});
static FILE: OnceLock<String> = OnceLock::new();

fn extra() -> MutexGuard<'static, Extra> {
    EXTRA.lock().unwrap_or_else(|e| e.into_inner())
}

/// `--accounts FILE`: applies what FILE says to `users` (new passwords,
/// created characters) and appends later changes to it.
pub fn load(path: &str, users: &mut Vec<User>) -> Result<(), String> {
    let _ = FILE.set(path.to_string());
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {path}: {e}")),
    };
    for line in text.lines() {
        let Some((name, pass)) = line.split_once('\t') else {
            continue;
        };
        match users.iter_mut().find(|u| u.name.eq_ignore_ascii_case(name)) {
            Some(u) => u.pass = pass.to_string(),
            None => users.push(User {
                name: name.to_string(),
                pass: pass.to_string(),
                wizard: false,
            }),
        }
    }
    Ok(())
}

fn remember(name: &str, pass: &str) {
    if let Some(path) = FILE.get() {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{name}\t{pass}");
        }
    }
}

impl Game {
    /// Account `p`, configured or made while running.
    pub(crate) fn user(&self, p: usize) -> &User {
        let n = self.cfg.users.len();
        if p < n {
            return &self.cfg.users[p];
        }
        extra().users[p - n]
    }

    /// An account made while running, by name (not a destroyed guest).
    pub(crate) fn find_extra(&self, name: &str) -> Option<usize> {
        let x = extra();
        x.users
            .iter()
            .enumerate()
            .position(|(i, u)| !x.gone[i] && u.name.eq_ignore_ascii_case(name))
            .map(|i| i + self.cfg.users.len())
    }

    /// Whether `pass` is account `p`'s password now.
    pub(crate) fn password_ok(&self, p: usize, pass: &str) -> bool {
        let changed = extra().pass.get(&p).cloned();
        match changed {
            Some(now) => now == pass,
            None => self.user(p).pass == pass,
        }
    }

    /// A guest login (see the module doc): a fresh guest character.
    pub(crate) fn guest_login(&self, name: &str, pass: &str) -> Option<usize> {
        let name = name.trim().to_ascii_lowercase();
        let guest = match self.cfg.flavor {
            Flavor::Plain => false,
            Flavor::Evennia => name == "guest" && pass.is_empty(),
            _ => name.starts_with("guest"),
        };
        if !guest {
            return None;
        }
        let n = (1..)
            .find(|n| {
                let g = format!("Guest{n}");
                self.cfg
                    .users
                    .iter()
                    .all(|u| !u.name.eq_ignore_ascii_case(&g))
                    && self.find_extra(&g).is_none()
            })
            .unwrap_or(1);
        let user: &'static User = Box::leak(Box::new(User {
            name: format!("Guest{n}"),
            pass: String::new(),
            wizard: false,
        }));
        let mut x = extra();
        x.users.push(user);
        x.gone.push(false);
        Some(self.cfg.users.len() + x.users.len() - 1)
    }

    /// Account `p` disconnected: a guest is destroyed.
    pub(crate) fn guest_gone(&self, p: usize) {
        let n = self.cfg.users.len();
        if p >= n && self.user(p).name.starts_with("Guest") {
            extra().gone[p - n] = true;
        }
    }

    /// `create <name> <password>` at the connect screen.
    pub(crate) fn do_create(&self, st: &mut State, c: &Cmd) {
        let (name, pass) = split_word(c.rest);
        let (name, pass) = (name.trim(), pass.trim());
        if name.is_empty() || pass.is_empty() || pass.contains(' ') {
            return send_line(c.tx, "Usage: create <name> <password>");
        }
        let fl = self.cfg.flavor;
        if self.find_user(name).is_some() || name.to_ascii_lowercase().starts_with("guest") {
            let msg = match fl {
                Flavor::PennMush => "There is already a player with that name.".to_string(),
                Flavor::Evennia => {
                    format!("Sorry, there is already an account with the name '{name}'.")
                }
                _ => "That name is not allowed.".to_string(),
            };
            return send_line(c.tx, &msg);
        }
        let user: &'static User = Box::leak(Box::new(User {
            name: name.to_string(),
            pass: pass.to_string(),
            wizard: false,
        }));
        {
            let mut x = extra();
            x.users.push(user);
            x.gone.push(false);
        }
        remember(name, pass);
        self.log
            .ev("create", &[("conn", V::N(c.id)), ("user", V::S(name))]);
        if fl == Flavor::Evennia {
            send_line(
                c.tx,
                &format!("A new account '{name}' was created. Welcome!"),
            );
            send_line(c.tx, "");
            send_line(
                c.tx,
                &format!("You can now log with the command 'connect {name} <your password>'."),
            );
            return;
        }
        // The new character is logged in, as by `connect`.
        let rest = format!("\"{name}\" {pass}");
        let login = Cmd {
            id: c.id,
            tx: c.tx,
            full: c.full,
            lw: "connect",
            rest: &rest,
        };
        self.do_connect(st, &login);
    }

    /// `@password <old>=<new>` (Evennia: `password <old> = <new>`).
    pub(crate) fn do_password(&self, c: &Cmd, me: usize) {
        let fl = self.cfg.flavor;
        let Some((old, new)) = c.rest.split_once('=') else {
            let usage = match fl {
                Flavor::Evennia => "Usage: password <oldpass> = <newpass>",
                _ => "Usage: @password <old password>=<new password>",
            };
            return send_line(c.tx, usage);
        };
        let (old, new) = (old.trim(), new.trim());
        if !self.password_ok(me, old) || new.is_empty() {
            let msg = match fl {
                Flavor::PennMush => "The old password that you entered was incorrect.",
                Flavor::Evennia => "The specified old password isn't correct.",
                _ => "Sorry.",
            };
            return send_line(c.tx, msg);
        }
        extra().pass.insert(me, new.to_string());
        let name = self.user(me).name.clone();
        remember(&name, new);
        self.log
            .ev("password", &[("conn", V::N(c.id)), ("user", V::S(&name))]);
        send_line(
            c.tx,
            match fl {
                Flavor::PennMush => "You have changed your password.",
                _ => "Password changed.",
            },
        );
    }
}
