//! What goes on the wire: event ids and the JSON body of an event with its
//! common fields.

use bytes::Bytes;
use serde_json::{Map, Value};

use super::{rfc3339, SCHEMA_VERSION};
use crate::events::Event;
use crate::secret::Secret;

/// Unique ids: `{run}-{n}`, a random per-process prefix and a sequence
/// number, so ids never repeat across restarts and instances. Events get
/// consecutive numbers in emission order, so a consumer that sees a gap
/// knows the outage queue overflowed; presence messages number on their
/// own (`{run}-p{n}`) and leave no gaps in the events.
#[derive(Debug)]
pub struct IdGen {
    run: u64,
    tag: &'static str,
    seq: u64,
}

impl IdGen {
    /// A generator with a fresh random prefix.
    pub fn new() -> Self {
        IdGen {
            run: rand::random(),
            tag: "",
            seq: 0,
        }
    }

    /// A generator with the same prefix numbering separately under `tag`.
    pub fn sibling(&self, tag: &'static str) -> Self {
        IdGen {
            run: self.run,
            tag,
            seq: 0,
        }
    }

    /// The next id.
    pub fn next_id(&mut self) -> String {
        self.seq += 1;
        format!("{:016x}-{}{}", self.run, self.tag, self.seq)
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

/// The common fields every bus message carries.
#[derive(Debug, Clone)]
pub struct Common<'a> {
    /// `bus.instance`.
    pub instance: &'a str,
    /// `game`.
    pub game: &'a str,
    /// `bus.publish_ip`.
    pub publish_ip: bool,
    /// Configured secrets, blanked from string fields should one ever slip
    /// into an event (a config error message quoting a value, say).
    pub secrets: &'a [&'a Secret],
}

/// The JSON body of `ev`: its fields, then the common fields (which win
/// over an event field of the same name).
pub fn encode(ev: &Event, common: &Common<'_>, id: String) -> Bytes {
    let mut m: Map<String, Value> = ev.fields.clone();
    if !common.publish_ip {
        m.remove("ip");
    }
    for v in m.values_mut() {
        scrub(v, common.secrets);
    }
    m.insert("type".into(), ev.kind.into());
    m.insert("id".into(), id.into());
    m.insert("time".into(), rfc3339(ev.time).into());
    m.insert("instance".into(), common.instance.into());
    m.insert("game".into(), common.game.into());
    m.insert("v".into(), SCHEMA_VERSION.into());
    // Serialising a Map of plain values cannot fail.
    Bytes::from(serde_json::to_vec(&Value::Object(m)).unwrap_or_default())
}

/// Replaces every configured secret inside string values with `***`.
fn scrub(v: &mut Value, secrets: &[&Secret]) {
    match v {
        Value::String(s) => {
            for sec in secrets {
                // Very short secrets would blank innocent text; they are
                // not worth protecting this way anyway.
                if sec.expose().len() >= 4 && s.contains(sec.expose()) {
                    *s = s.replace(sec.expose(), "***");
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| scrub(x, secrets)),
        Value::Object(o) => o.values_mut().for_each(|x| scrub(x, secrets)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_ordered() {
        let mut a = IdGen::new();
        let mut b = IdGen::new();
        let (a1, a2, b1) = (a.next_id(), a.next_id(), b.next_id());
        assert_ne!(a1, a2);
        assert_ne!(a1, b1);
        assert!(a1.ends_with("-1") && a2.ends_with("-2"));
        let mut p = a.sibling("p");
        assert_eq!(p.next_id(), format!("{}p1", &a1[..a1.len() - 1]));
    }

    #[test]
    fn encode_adds_common_fields_hides_ip_and_secrets() {
        let pw = Secret::new("hunter22");
        let secrets = [&pw];
        let common = Common {
            instance: "i1",
            game: "G",
            publish_ip: false,
            secrets: &secrets,
        };
        let ev = Event::new("config.reloaded")
            .with("ok", false)
            .with("error", "bad value hunter22 here")
            .with("ip", "10.0.0.1")
            .with("type", "spoofed");
        let v: Value = serde_json::from_slice(&encode(&ev, &common, "x-1".into())).unwrap();
        assert_eq!(v["type"], "config.reloaded");
        assert_eq!(v["id"], "x-1");
        assert_eq!(v["instance"], "i1");
        assert_eq!(v["game"], "G");
        assert_eq!(v["v"], SCHEMA_VERSION);
        assert_eq!(v["error"], "bad value *** here");
        assert!(v.get("ip").is_none());
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        let with_ip = Common {
            publish_ip: true,
            ..common
        };
        let v: Value = serde_json::from_slice(&encode(&ev, &with_ip, "x-2".into())).unwrap();
        assert_eq!(v["ip"], "10.0.0.1");
    }
}
