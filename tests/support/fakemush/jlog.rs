//! Append-only JSON-lines event log, one `write` per line (flushed per line).
//! Every line carries `us`, the wall-clock time in microseconds since the
//! Unix epoch, so logs of several games can be merged in order (the soak
//! test checks cross-backend ordering this way).

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

pub enum V<'a> {
    S(&'a str),
    N(u64),
    Null,
}

pub struct Logger {
    file: Option<Mutex<File>>,
}

pub fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Logger {
    pub fn open(path: Option<&str>) -> std::io::Result<Logger> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => None,
        };
        Ok(Logger { file })
    }

    /// Writes `{"t":KIND,"us":MICROS,k:v,...}`.
    pub fn ev(&self, kind: &str, fields: &[(&str, V)]) {
        let Some(file) = &self.file else { return };
        let mut rest = String::with_capacity(64);
        for (k, v) in fields {
            rest.push(',');
            escape_into(&mut rest, k);
            rest.push(':');
            match v {
                V::S(s) => escape_into(&mut rest, s),
                V::N(n) => rest.push_str(&n.to_string()),
                V::Null => rest.push_str("null"),
            }
        }
        rest.push_str("}\n");
        let mut line = String::with_capacity(rest.len() + 48);
        line.push_str("{\"t\":");
        escape_into(&mut line, kind);
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        // Stamped under the lock, so `us` follows file order (barring clock steps).
        let us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        line.push_str(",\"us\":");
        line.push_str(&us.to_string());
        line.push_str(&rest);
        let _ = f.write_all(line.as_bytes());
        let _ = f.flush();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes() {
        let mut s = String::new();
        super::escape_into(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
