//! Every key the config file accepts, read off the serde types in
//! `raw.rs` themselves, so a reference written by hand can be checked
//! against them (`tests/docs.rs` does, for `docs/configuration.md`).
//!
//! The trick: `#[derive(Deserialize)]` hands its deserializer the list of a
//! struct's field names (`deserialize_struct(name, FIELDS, ..)`). A
//! deserializer that records those names, and answers every field with a
//! value that leads on into the nested types, walks the whole tree without
//! a line of TOML and without a list kept beside the types.
//!
//! Keys are dotted paths as written in the file: `listen.addrs`,
//! `irc.formats.down`; the fields of an array of tables are
//! `backends[].name`; a table whose keys are free-form (a map, such as
//! `[mssp]`) is `mssp.*`.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde::de::value::{BorrowedStrDeserializer, Error};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::raw::RawConfig;

/// Every key `RawConfig` accepts, sorted (see the module docs for the
/// shape of a key).
pub fn keys() -> Vec<String> {
    let out = RefCell::new(BTreeSet::new());
    let tracer = Tracer {
        path: "",
        out: &out,
        silent: false,
    };
    // The tracer gives every field a value its type accepts (a string
    // field gets "1s", which a duration reads too), so this only fails if
    // a new type in `raw.rs` parses its string itself (an address, say)
    // instead of taking a `Spanned<String>` and parsing it on resolve as
    // the other sections do.
    if let Err(e) = RawConfig::deserialize(tracer) {
        panic!(
            "config::keys cannot walk RawConfig: {e} (keep the raw field a string \
             and parse it when resolving, as the other sections do)"
        );
    }
    out.into_inner().into_iter().collect()
}

/// Parses `text` as a config file as written (unknown keys and values of
/// the wrong type are errors, as for `holdfast check`; the cross-field
/// checks of validation are not run) and returns the keys it sets, in the
/// shape [`keys`] returns.
pub fn keys_in(text: &str) -> Result<BTreeSet<String>, String> {
    toml::from_str::<RawConfig>(text).map_err(|e| e.to_string())?;
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let free: BTreeSet<String> = keys()
        .into_iter()
        .filter_map(|k| k.strip_suffix(".*").map(str::to_string))
        .collect();
    let mut out = BTreeSet::new();
    walk(&table, "", &free, &mut out);
    Ok(out)
}

fn walk(table: &toml::Table, prefix: &str, free: &BTreeSet<String>, out: &mut BTreeSet<String>) {
    for (k, v) in table {
        let path = join(prefix, k);
        if free.contains(&path) {
            out.insert(format!("{path}.*"));
            continue;
        }
        match v {
            toml::Value::Table(t) => walk(t, &path, free, out),
            toml::Value::Array(items) if items.iter().any(toml::Value::is_table) => {
                for item in items {
                    if let toml::Value::Table(t) = item {
                        walk(t, &format!("{path}[]"), free, out);
                    }
                }
            }
            _ => {
                out.insert(path);
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The name `toml`'s `Spanned<T>` asks for: a wrapper, not a table of
/// the file (its fields are positions, its value the key's own).
const SPANNED: &str = "$__serde_spanned_private_Spanned";

/// A deserializer standing at one key of the file.
#[derive(Clone, Copy)]
struct Tracer<'a> {
    path: &'a str,
    out: &'a RefCell<BTreeSet<String>>,
    /// A position inside `Spanned`: not a key.
    silent: bool,
}

impl Tracer<'_> {
    /// A value is read here: this path is a key (an array of values is
    /// one key, not one per element).
    fn leaf(&self) {
        if !self.silent && !self.path.is_empty() {
            let key = self.path.trim_end_matches("[]").to_string();
            self.out.borrow_mut().insert(key);
        }
    }

    /// A sample value this key's type refused: name the key.
    fn at(&self, e: Error) -> Error {
        de::Error::custom(format!("{}: {e}", self.path))
    }
}

macro_rules! leaf {
    ($($method:ident => $visit:ident($($value:expr)?);)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                self.leaf();
                visitor.$visit($($value)?).map_err(|e| self.at(e))
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = Error;

    // A string every string-like type here accepts: a duration reads it as
    // one second, an untagged size as text.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.leaf();
        visitor.visit_str("1s").map_err(|e| self.at(e))
    }

    leaf! {
        deserialize_bool => visit_bool(false);
        deserialize_i8 => visit_i64(1);
        deserialize_i16 => visit_i64(1);
        deserialize_i32 => visit_i64(1);
        deserialize_i64 => visit_i64(1);
        deserialize_u8 => visit_u64(1);
        deserialize_u16 => visit_u64(1);
        deserialize_u32 => visit_u64(1);
        deserialize_u64 => visit_u64(1);
        deserialize_f32 => visit_f64(1.0);
        deserialize_f64 => visit_f64(1.0);
        deserialize_char => visit_char('x');
        deserialize_str => visit_str("1s");
        deserialize_string => visit_str("1s");
        deserialize_identifier => visit_str("1s");
        deserialize_bytes => visit_bytes(b"1s");
        deserialize_byte_buf => visit_bytes(b"1s");
        deserialize_unit => visit_unit();
        deserialize_ignored_any => visit_unit();
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.leaf();
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(One {
            path: format!("{}[]", self.path),
            out: self.out,
            silent: self.silent,
            done: false,
        })
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    // A map (or a struct with a flattened map) has no names to read:
    // its keys are the operator's own.
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if !self.silent {
            let key = format!("{}.*", self.path.trim_end_matches("[]"));
            self.out.borrow_mut().insert(key);
        }
        visitor.visit_map(Fields {
            path: self.path,
            out: self.out,
            silent: true,
            fields: &[],
            next: 0,
            spanned: false,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_map(Fields {
            path: self.path,
            out: self.out,
            silent: self.silent,
            fields,
            next: 0,
            spanned: name == SPANNED,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.leaf();
        let first = variants.first().copied().unwrap_or("");
        visitor
            .visit_enum(BorrowedStrDeserializer::<Error>::new(first))
            .map_err(|e| self.at(e))
    }
}

/// A struct's fields, each answered by a tracer one level down (or, for
/// `Spanned`, the positions silently and the value at the same key).
struct Fields<'a> {
    path: &'a str,
    out: &'a RefCell<BTreeSet<String>>,
    silent: bool,
    fields: &'static [&'static str],
    next: usize,
    spanned: bool,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(field) = self.fields.get(self.next) else {
            return Ok(None);
        };
        seed.deserialize(BorrowedStrDeserializer::<Error>::new(field))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let field = self.fields[self.next];
        self.next += 1;
        if self.spanned {
            let value = field.ends_with("_value");
            return seed.deserialize(Tracer {
                path: self.path,
                out: self.out,
                silent: self.silent || !value,
            });
        }
        let path = join(self.path, field);
        seed.deserialize(Tracer {
            path: &path,
            out: self.out,
            silent: self.silent,
        })
    }
}

/// A sequence of one element, traced at `path[]`.
struct One<'a> {
    path: String,
    out: &'a RefCell<BTreeSet<String>>,
    silent: bool,
    done: bool,
}

impl<'de> SeqAccess<'de> for One<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        seed.deserialize(Tracer {
            path: &self.path,
            out: self.out,
            silent: self.silent,
        })
        .map(Some)
    }
}
