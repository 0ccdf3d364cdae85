//! A tiny MUSH softcode evaluator for `think`: `[func(args)]` substitutions
//! with a handful of functions; all other text is printed literally.

use std::sync::OnceLock;

use crate::game::{Flavor, Game, State};

const MAX_DEPTH: u32 = 16;

/// This process's start, as `starttime()` (ctime) and `startsecs()` (UNIX
/// seconds) give it: fixed for the life of the process, as a real game's
/// first start is (`@restart` and `@shutdown/reboot` keep it).
static START: OnceLock<(String, u64)> = OnceLock::new();

/// Fixes the start time (called once, when the game starts).
pub fn mark_start() -> &'static (String, u64) {
    START.get_or_init(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        (crate::commands::ctime_now(), secs)
    })
}

/// Index of the matching close for each open bracket (`open`/`close`), in one pass.
fn matches(s: &[u8], open: u8, close: u8) -> Vec<Option<usize>> {
    let mut m = vec![None; s.len()];
    let mut stack = Vec::new();
    for (i, &b) in s.iter().enumerate() {
        match b {
            _ if b == open => stack.push(i),
            _ if b == close => {
                if let Some(o) = stack.pop() {
                    m[o] = Some(i);
                }
            }
            _ => {}
        }
    }
    m
}

/// Splits on commas not nested in () or [].
fn split_args(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b',' if depth <= 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

impl Game {
    /// Evaluates text: `[...]` groups are evaluated, everything else is literal.
    pub fn eval(&self, st: &State, me: u64, s: &str, depth: u32) -> String {
        if depth > MAX_DEPTH {
            return s.to_string();
        }
        let b = s.as_bytes();
        let m = matches(b, b'[', b']');
        let mut out = String::with_capacity(s.len());
        let (mut i, mut lit) = (0, 0);
        while i < b.len() {
            if let (b'[', Some(j)) = (b[i], m[i]) {
                out.push_str(&s[lit..i]);
                out.push_str(&self.eval_expr(st, me, &s[i + 1..j], depth + 1));
                i = j + 1;
                lit = i;
            } else {
                i += 1;
            }
        }
        out.push_str(&s[lit..]);
        out
    }

    /// Evaluates an expression: a leading `name(args)` is a function call.
    fn eval_expr(&self, st: &State, me: u64, s: &str, depth: u32) -> String {
        if depth > MAX_DEPTH {
            return s.to_string();
        }
        let t = s.trim_start();
        let name_len = t
            .bytes()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
            .count();
        if name_len > 0 && t.as_bytes().get(name_len) == Some(&b'(') {
            let m = matches(t.as_bytes(), b'(', b')');
            if let Some(close) = m[name_len] {
                let name = t[..name_len].to_ascii_lowercase();
                let args: Vec<String> = split_args(&t[name_len + 1..close])
                    .into_iter()
                    .map(|a| self.eval_expr(st, me, a, depth + 1))
                    .collect();
                let mut r = self.call(st, me, &name, &args);
                r.push_str(&self.eval(st, me, &t[close + 1..], depth + 1));
                return r;
            }
        }
        self.eval(st, me, s, depth + 1)
    }

    fn call(&self, st: &State, me: u64, name: &str, args: &[String]) -> String {
        let fl = self.cfg.flavor;
        let nargs = |n: usize| {
            format!(
                "#-1 FUNCTION ({}) EXPECTS {n} ARGUMENT{}",
                name.to_ascii_uppercase(),
                if n == 1 { "" } else { "S" }
            )
        };
        let check = |who: &str, pass: &str| -> String {
            match self.player_of(st, me, who) {
                Some(p) if self.password_ok(p, pass) => "1".into(),
                _ => "0".into(),
            }
        };
        match name {
            "password" if fl == Flavor::TinyMush => {
                if args.len() != 2 {
                    return nargs(2);
                }
                check(&args[0], &args[1])
            }
            "checkpass" if fl == Flavor::PennMush => {
                if args.len() != 2 {
                    return nargs(2);
                }
                let wiz = st
                    .sess
                    .get(&me)
                    .and_then(|s| s.player)
                    .is_some_and(|p| self.user(p).wizard);
                if !wiz {
                    return "#-1 PERMISSION DENIED".into();
                }
                check(&args[0], &args[1])
            }
            "host" | "width" | "height" => {
                if args.len() != 1 {
                    return nargs(1);
                }
                match self.session_of(st, me, &args[0]) {
                    Ok(id) => match st.sess.get(&id) {
                        Some(s) => match name {
                            "host" => s.host.clone(),
                            "width" => s.width.to_string(),
                            _ => s.height.to_string(),
                        },
                        None => "#-1 NOT CONNECTED".into(),
                    },
                    Err(e) => e.into(),
                }
            }
            "num" | "name" => {
                if args.len() != 1 {
                    return nargs(1);
                }
                match self.player_of(st, me, &args[0]) {
                    Some(p) if name == "num" => format!("#{}", p + 1),
                    Some(p) => self.user(p).name.clone(),
                    None => "#-1 NO MATCH".into(),
                }
            }
            // TinyMUSH `starttime()` (ctime of `mushstate.start_time`),
            // PennMUSH `starttime()` (`globals.first_start_time`).
            "starttime" if fl.is_mush() => mark_start().0.clone(),
            // TinyMUX `startsecs()`; the tinymush flavor stands for both.
            "startsecs" if fl == Flavor::TinyMush => mark_start().1.to_string(),
            _ => format!("#-1 FUNCTION ({}) NOT FOUND", name.to_ascii_uppercase()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn split() {
        assert_eq!(
            super::split_args("a,[b,c],d(e,f)"),
            vec!["a", "[b,c]", "d(e,f)"]
        );
    }
}
