//! serde `Deserializer` over the configuration tree.
//!
//! Why not `toml::from_str`: values come from three layers (file, environment, dynamic source),
//! and an error must name where the offending value came from and its full key path. Walking our
//! own tree gives both. It also lets us:
//! - reject unknown keys in every struct (with a "did you mean" hint), whether or not the struct
//!   says `deny_unknown_fields`;
//! - type text from environment variables and dynamic keys on demand (`"16"` for a `usize`);
//! - match loosely spelled keys (`POOL_SIZE`) to field names (`pool-size`).

use std::fmt;

use serde::de::{self, IntoDeserializer, Visitor};

use super::error::{ConfigError, ErrorKind};
use super::tree::{Location, Node, Value, normalize};

/// An error raised while deserializing; the innermost node that sees it pins the location.
#[derive(Debug)]
pub(crate) struct DeError(Box<DeDetails>);

#[derive(Debug)]
struct DeDetails {
    kind: ErrorKind,
    location: Option<Location>,
    path: Option<String>,
}

impl DeError {
    fn new(kind: ErrorKind) -> Self {
        DeError(Box::new(DeDetails {
            kind,
            location: None,
            path: None,
        }))
    }
}

impl DeError {
    fn at(mut self, node: &Node, path: &str) -> Self {
        if self.0.location.is_none() {
            self.0.location = Some(node.origin.clone());
            self.0.path = Some(path.to_owned());
        }
        self
    }

    pub(crate) fn into_config_error(
        self,
        default_location: impl FnOnce() -> Location,
    ) -> ConfigError {
        let d = *self.0;
        ConfigError::new(
            Some(d.location.unwrap_or_else(default_location)),
            d.path.unwrap_or_default(),
            d.kind,
        )
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.kind {
            ErrorKind::Invalid(m) => f.write_str(m),
            other => write!(f, "{other:?}"),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(ErrorKind::Invalid(msg.to_string()))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(ErrorKind::UnknownKey { suggestion: None }).suggest(field, expected)
    }
}

impl DeError {
    fn suggest(mut self, field: &str, expected: &'static [&'static str]) -> Self {
        self.0.kind = ErrorKind::UnknownKey {
            suggestion: closest(field, expected),
        };
        self
    }
}

/// The closest candidate by edit distance, if it is close enough to be a typo.
fn closest(word: &str, candidates: &'static [&'static str]) -> Option<&'static str> {
    let word = normalize(word);
    candidates
        .iter()
        .map(|c| (levenshtein(&word, &normalize(c)), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn child_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// Deserializes one node. `path` is its dotted key path, for error messages.
pub(crate) struct NodeDe<'a> {
    pub(crate) node: &'a Node,
    pub(crate) path: String,
}

impl NodeDe<'_> {
    fn fail<T>(&self, msg: String) -> Result<T, DeError> {
        Err(DeError::new(ErrorKind::Invalid(msg)).at(self.node, &self.path))
    }

    fn raw(&self) -> Option<&str> {
        match &self.node.value {
            Value::String { s, raw: true } => Some(s.trim()),
            _ => None,
        }
    }
}

macro_rules! raw_number {
    ($($method:ident => $visit:ident as $ty:ty, $what:literal;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            if let Some(text) = self.raw() {
                return match text.replace('_', "").parse::<$ty>() {
                    Ok(n) => visitor.$visit(n).map_err(|e: DeError| e.at(self.node, &self.path)),
                    Err(_) => self.fail(format!("invalid value: expected {}, found {:?}", $what, text)),
                };
            }
            self.deserialize_any(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::String { s, .. } | Value::Datetime(s) => visitor.visit_str(s),
            Value::Integer(i) => visitor.visit_i64(*i),
            Value::Float(x) => visitor.visit_f64(*x),
            Value::Boolean(b) => visitor.visit_bool(*b),
            Value::Array(items) => visitor.visit_seq(SeqDe::new(items, &self.path)),
            Value::Table(t) => visitor.visit_map(MapDe::new(t, &self.path, None)),
        };
        result.map_err(|e: DeError| e.at(self.node, &self.path))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if let Some(text) = self.raw() {
            let b = match text.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => {
                    return self.fail(format!("invalid value: expected a boolean, found {text:?}"));
                }
            };
            return visitor
                .visit_bool(b)
                .map_err(|e: DeError| e.at(self.node, &self.path));
        }
        self.deserialize_any(visitor)
    }

    raw_number! {
        deserialize_i8 => visit_i64 as i64, "an integer";
        deserialize_i16 => visit_i64 as i64, "an integer";
        deserialize_i32 => visit_i64 as i64, "an integer";
        deserialize_i64 => visit_i64 as i64, "an integer";
        deserialize_u8 => visit_u64 as u64, "a non-negative integer";
        deserialize_u16 => visit_u64 as u64, "a non-negative integer";
        deserialize_u32 => visit_u64 as u64, "a non-negative integer";
        deserialize_u64 => visit_u64 as u64, "a non-negative integer";
        deserialize_f32 => visit_f64 as f64, "a number";
        deserialize_f64 => visit_f64 as f64, "a number";
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // A key that is present is `Some`; an absent key never reaches the deserializer.
        let (node, path) = (self.node, self.path.clone());
        visitor
            .visit_some(self)
            .map_err(|e: DeError| e.at(node, &path))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let (node, path) = (self.node, self.path.clone());
        visitor
            .visit_newtype_struct(self)
            .map_err(|e: DeError| e.at(node, &path))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if let Some(text) = self.raw() {
            // `a,b,c` from an environment variable is a list of three.
            let items: Vec<Node> = text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Node {
                    value: Value::String {
                        s: s.to_owned(),
                        raw: true,
                    },
                    origin: self.node.origin.clone(),
                    loose_key: false,
                })
                .collect();
            return visitor
                .visit_seq(SeqDe::new(&items, &self.path))
                .map_err(|e: DeError| e.at(self.node, &self.path));
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let Value::Table(table) = &self.node.value else {
            return self.deserialize_any(visitor);
        };
        // Unknown keys are refused in every section: a typo must not silently fall back to a
        // default.
        for (key, node) in table {
            if resolve(key, node, Some(fields)).is_none() {
                let err =
                    DeError::new(ErrorKind::UnknownKey { suggestion: None }).suggest(key, fields);
                let shown = if node.loose_key {
                    normalize(key)
                } else {
                    key.clone()
                };
                return Err(err.at(node, &child_path(&self.path, &shown)));
            }
        }
        visitor
            .visit_map(MapDe::new(table, &self.path, Some(fields)))
            .map_err(|e: DeError| e.at(self.node, &self.path))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let result = match &self.node.value {
            Value::String { s, .. } => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Table(t) if t.len() == 1 => {
                let (key, node) = t.iter().next().expect("one entry");
                visitor.visit_enum(EnumDe {
                    key,
                    node: NodeDe {
                        node,
                        path: child_path(&self.path, key),
                    },
                })
            }
            other => {
                return self.fail(format!(
                    "invalid type: {}, expected a string or a table with one key",
                    other.type_name()
                ));
            }
        };
        result.map_err(|e: DeError| e.at(self.node, &self.path))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char str string bytes byte_buf unit unit_struct identifier
    }
}

/// The name a key takes for a struct with `fields` (or a map, when `fields` is `None`).
fn resolve<'k>(
    key: &'k str,
    node: &Node,
    fields: Option<&'static [&'static str]>,
) -> Option<std::borrow::Cow<'k, str>> {
    use std::borrow::Cow;
    match fields {
        None if node.loose_key => Some(Cow::Owned(normalize(key))),
        None => Some(Cow::Borrowed(key)),
        Some(fields) if fields.contains(&key) => Some(Cow::Borrowed(key)),
        Some(fields) if node.loose_key => {
            let want = normalize(key);
            fields
                .iter()
                .find(|f| normalize(f) == want)
                .map(|f| Cow::Borrowed(*f))
        }
        Some(_) => None,
    }
}

struct SeqDe<'a> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
    path: &'a str,
}

impl<'a> SeqDe<'a> {
    fn new(items: &'a [Node], path: &'a str) -> Self {
        SeqDe {
            items: items.iter(),
            index: 0,
            path,
        }
    }
}

impl<'de> de::SeqAccess<'de> for SeqDe<'_> {
    type Error = DeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{}]", self.path, self.index);
        self.index += 1;
        // Errors raised after the node was read (a `with` helper rejecting the text) still
        // belong to this node.
        seed.deserialize(NodeDe {
            node,
            path: path.clone(),
        })
        .map(Some)
        .map_err(|e| e.at(node, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'a> {
    entries: std::collections::btree_map::Iter<'a, String, Node>,
    fields: Option<&'static [&'static str]>,
    path: &'a str,
    pending: Option<(&'a Node, String)>,
}

impl<'a> MapDe<'a> {
    fn new(
        table: &'a std::collections::BTreeMap<String, Node>,
        path: &'a str,
        fields: Option<&'static [&'static str]>,
    ) -> Self {
        MapDe {
            entries: table.iter(),
            fields,
            path,
            pending: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for MapDe<'_> {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, node)) = self.entries.next() else {
            return Ok(None);
        };
        // `deserialize_struct` has checked every key already, so `resolve` succeeds here.
        let name = resolve(key, node, self.fields).unwrap_or(std::borrow::Cow::Borrowed(key));
        let path = child_path(self.path, &name);
        let value = seed
            .deserialize(de::value::StrDeserializer::<DeError>::new(&name))
            .map_err(|e: DeError| e.at(node, &path))?;
        self.pending = Some((node, path));
        Ok(Some(value))
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        let (node, path) = self
            .pending
            .take()
            .expect("next_value_seed called before next_key_seed");
        seed.deserialize(NodeDe {
            node,
            path: path.clone(),
        })
        .map_err(|e| e.at(node, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct EnumDe<'a> {
    key: &'a str,
    node: NodeDe<'a>,
}

impl<'de, 'a> de::EnumAccess<'de> for EnumDe<'a> {
    type Error = DeError;
    type Variant = NodeDe<'a>;

    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, NodeDe<'a>), DeError> {
        let v = seed.deserialize(de::value::StrDeserializer::<DeError>::new(self.key))?;
        Ok((v, self.node))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDe<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        self.fail("invalid type: table, expected a unit variant".to_owned())
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, DeError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use serde::Deserialize;

    use super::*;
    use crate::config::tree::parse_document;

    fn load<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, String> {
        let origin = Location::File {
            path: Arc::from(Path::new("t.toml")),
            line: 0,
            column: 0,
        };
        let root = parse_document(text, origin).unwrap();
        T::deserialize(NodeDe {
            node: &root,
            path: String::new(),
        })
        .map_err(|e| e.into_config_error(|| Location::Default).to_string())
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    struct Pool {
        pool_size: u16,
        #[serde(default)]
        nodes: Vec<String>,
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        Standalone,
        Cluster { replicas: bool },
    }

    #[test]
    fn reads_structs_enums_and_lists() {
        let p: Pool =
            load("pool-size = 4\nnodes = [\"a\"]\nmode = { cluster = { replicas = true } }\n")
                .unwrap();
        assert_eq!(
            p,
            Pool {
                pool_size: 4,
                nodes: vec!["a".into()],
                mode: Some(Mode::Cluster { replicas: true })
            }
        );
        let p: Pool = load("pool-size = 4\nmode = \"standalone\"\n").unwrap();
        assert_eq!(p.mode, Some(Mode::Standalone));
    }

    #[test]
    fn unknown_key_names_position_and_suggests() {
        let e = load::<Pool>("pool-size = 4\npool-sise = 5\n").unwrap_err();
        assert_eq!(
            e,
            "t.toml:2:1: pool-sise: unknown key; did you mean \"pool-size\"?"
        );
    }

    #[test]
    fn wrong_type_names_position_and_key() {
        let e = load::<Pool>("pool-size = \"many\"\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:1:1: pool-size: invalid type: string \"many\""),
            "{e}"
        );
        let e = load::<Pool>("pool-size = 70000\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:1:1: pool-size: invalid value: integer `70000`"),
            "{e}"
        );
        let e = load::<Pool>("pool-size = 1\nnodes = [\"a\", 3]\n").unwrap_err();
        assert!(
            e.starts_with("t.toml:2:15: nodes[1]: invalid type: integer `3`"),
            "{e}"
        );
    }

    #[test]
    fn missing_key_names_the_table() {
        let e = load::<Pool>("nodes = []\n").unwrap_err();
        assert!(e.contains("missing field `pool-size`"), "{e}");
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        assert_eq!(closest("rte", &["rate", "duration"]), Some("rate"));
        assert_eq!(closest("completely-else", &["rate", "duration"]), None);
    }
}
