//! The merged configuration tree: every value remembers where it came from, so an error about it
//! can name the file and line, the environment variable or the dynamic key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use toml::de::{DeTable, DeValue};

use super::error::{ConfigError, ErrorKind};

/// Where a configuration value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// A TOML file (or embedded document), 1-based line and column.
    File {
        /// The file's path (or the embedded document's name).
        path: Arc<Path>,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
    },
    /// An environment variable.
    Env {
        /// The variable's name.
        var: Arc<str>,
    },
    /// A key of a dynamic source (etcd, ...).
    Dynamic {
        /// The source's name, e.g. `etcd`.
        source: Arc<str>,
        /// The key in that source.
        key: Arc<str>,
        /// Line and column inside the key's value, when the value is a TOML document.
        position: Option<(usize, usize)>,
    },
    /// A built-in default (no value was given anywhere).
    Default,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Line 0: the file as a whole (it could not be read).
            Location::File { path, line: 0, .. } => write!(f, "{}", path.display()),
            Location::File { path, line, column } => {
                write!(f, "{}:{line}:{column}", path.display())
            }
            Location::Env { var } => write!(f, "environment variable {var}"),
            Location::Dynamic {
                source,
                key,
                position: None,
            } => write!(f, "{source} key {key}"),
            Location::Dynamic {
                source,
                key,
                position: Some((line, column)),
            } => {
                write!(f, "{source} key {key}:{line}:{column}")
            }
            Location::Default => f.write_str("built-in default"),
        }
    }
}

/// A node of the tree: a value and its origin.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) value: Value,
    pub(crate) origin: Location,
    /// The key naming this node came from an environment variable or a dynamic path, so it was
    /// spelled without knowing whether the real key uses `-` or `_`; struct deserialization
    /// matches it against field names loosely.
    pub(crate) loose_key: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum Value {
    /// `raw`: text from an environment variable or a dynamic key, typed only when a section asks
    /// for a number or a boolean.
    String {
        s: String,
        raw: bool,
    },
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(BTreeMap<String, Node>),
}

impl Value {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Value::String { .. } => "string",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Boolean(_) => "boolean",
            Value::Datetime(_) => "datetime",
            Value::Array(_) => "array",
            Value::Table(_) => "table",
        }
    }
}

/// Case-insensitive, `-` and `_` alike: how a loosely spelled key is matched.
pub(crate) fn normalize(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

impl Node {
    pub(crate) fn empty_table(origin: Location) -> Node {
        Node {
            value: Value::Table(BTreeMap::new()),
            origin,
            loose_key: false,
        }
    }

    /// Structural equality, ignoring origins: used to notify only sections that changed.
    pub(crate) fn same(&self, other: &Node) -> bool {
        match (&self.value, &other.value) {
            (Value::String { s: a, .. }, Value::String { s: b, .. }) => a == b,
            (Value::Integer(a), Value::Integer(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Boolean(a), Value::Boolean(b)) => a == b,
            (Value::Datetime(a), Value::Datetime(b)) => a == b,
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y))
            }
            (Value::Table(a), Value::Table(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, va), (kb, vb))| ka == kb && va.same(vb))
            }
            _ => false,
        }
    }

    pub(crate) fn as_table(&self) -> Option<&BTreeMap<String, Node>> {
        match &self.value {
            Value::Table(t) => Some(t),
            _ => None,
        }
    }

    /// Finds the child named `key`: exactly, or loosely when the stored key was loosely spelled.
    pub(crate) fn child(&self, key: &str) -> Option<&Node> {
        let table = self.as_table()?;
        if let Some(n) = table.get(key) {
            return Some(n);
        }
        let want = normalize(key);
        table
            .iter()
            .find(|(k, n)| n.loose_key && normalize(k) == want)
            .map(|(_, n)| n)
    }

    /// Follows a dotted path (`redis.main`); the empty path is the root.
    pub(crate) fn lookup(&self, path: &str) -> Option<&Node> {
        split_path(path).try_fold(self, |node, seg| node.child(seg))
    }

    /// Follows a dotted path in which a number indexes an array (`scenarios.0.steps.1`).
    pub(crate) fn lookup_indexed(&self, path: &str) -> Option<&Node> {
        split_path(path).try_fold(self, |node, seg| {
            match (&node.value, seg.parse::<usize>()) {
                (Value::Array(items), Ok(i)) => items.get(i),
                _ => node.child(seg),
            }
        })
    }

    /// Merges `overlay` into `self`: tables merge key by key, anything else replaces. A table
    /// replaced by a scalar (or the reverse) is an error: a silent drop of a whole section is how
    /// configuration goes wrong without anybody noticing.
    pub(crate) fn merge(
        &mut self,
        overlay: Node,
        path: &mut Vec<String>,
    ) -> Result<(), ConfigError> {
        match (&mut self.value, overlay.value) {
            (Value::Table(base), Value::Table(over)) => {
                for (key, child) in over {
                    let existing = find_key(base, &key, child.loose_key);
                    path.push(existing.clone().unwrap_or_else(|| key.clone()));
                    match existing.and_then(|k| base.get_mut(&k)) {
                        Some(slot) => slot.merge(child, path)?,
                        None => {
                            base.insert(key, child);
                        }
                    }
                    path.pop();
                }
                Ok(())
            }
            (Value::Table(_), other) => Err(ConfigError::new(
                Some(overlay.origin),
                join(path),
                ErrorKind::TypeChange {
                    from: "table",
                    to: other.type_name(),
                    previous: self.origin.clone(),
                },
            )),
            (mine, Value::Table(_)) => Err(ConfigError::new(
                Some(overlay.origin),
                join(path),
                ErrorKind::TypeChange {
                    from: mine.type_name(),
                    to: "table",
                    previous: self.origin.clone(),
                },
            )),
            (_, value) => {
                self.value = value;
                self.origin = overlay.origin;
                Ok(())
            }
        }
    }
}

fn find_key(table: &BTreeMap<String, Node>, key: &str, loose: bool) -> Option<String> {
    if table.contains_key(key) {
        return Some(key.to_owned());
    }
    let want = normalize(key);
    table
        .iter()
        .find(|(k, n)| (loose || n.loose_key) && normalize(k) == want)
        .map(|(k, _)| k.clone())
}

pub(crate) fn split_path(path: &str) -> impl Iterator<Item = &str> {
    path.split(['.', '/']).filter(|s| !s.is_empty())
}

pub(crate) fn join(path: &[String]) -> String {
    path.join(".")
}

/// Wraps `leaf` in tables so that it sits at `segments` (all keys loose).
pub(crate) fn nest(segments: &[String], leaf: Node) -> Node {
    segments.iter().rev().fold(leaf, |child, seg| {
        let origin = child.origin.clone();
        let mut table = BTreeMap::new();
        table.insert(
            seg.clone(),
            Node {
                loose_key: true,
                ..child
            },
        );
        Node {
            value: Value::Table(table),
            origin,
            loose_key: false,
        }
    })
}

/// A value given as text (environment variable, dynamic key). Text that starts like a TOML
/// array or inline table is parsed as TOML; anything else stays text, typed on demand.
pub(crate) fn raw_value(text: &str, origin: &Location) -> Result<Node, ConfigError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let parsed = DeValue::parse(text).map_err(|e| {
            ConfigError::new(
                Some(origin.clone()),
                String::new(),
                ErrorKind::Syntax(e.message().to_owned()),
            )
        })?;
        let ctx = Ctx {
            text,
            origin: origin.clone(),
        };
        return Ok(ctx.convert(parsed.into_inner(), 0));
    }
    Ok(Node {
        value: Value::String {
            s: text.to_owned(),
            raw: true,
        },
        origin: origin.clone(),
        loose_key: false,
    })
}

/// Parses a TOML document. `origin` says what the document is (a file, a dynamic key); line
/// and column are filled in per value.
pub(crate) fn parse_document(text: &str, origin: Location) -> Result<Node, ConfigError> {
    let ctx = Ctx { text, origin };
    let doc = DeTable::parse(text).map_err(|e| {
        let at = e
            .span()
            .map(|s| ctx.at(s.start))
            .unwrap_or_else(|| ctx.at(0));
        ConfigError::new(
            Some(at),
            String::new(),
            ErrorKind::Syntax(e.message().trim().to_owned()),
        )
    })?;
    let origin = ctx.at(0);
    Ok(Node {
        value: Value::Table(ctx.table(doc.into_inner())),
        origin,
        loose_key: false,
    })
}

struct Ctx<'a> {
    text: &'a str,
    origin: Location,
}

impl Ctx<'_> {
    fn at(&self, offset: usize) -> Location {
        let (line, column) = line_col(self.text, offset);
        match &self.origin {
            Location::File { path, .. } => Location::File {
                path: path.clone(),
                line,
                column,
            },
            Location::Dynamic { source, key, .. } => Location::Dynamic {
                source: source.clone(),
                key: key.clone(),
                position: Some((line, column)),
            },
            other => other.clone(),
        }
    }

    fn table(&self, table: DeTable<'_>) -> BTreeMap<String, Node> {
        table
            .into_iter()
            .map(|(k, v)| {
                let offset = k.span().start;
                (
                    k.into_inner().into_owned(),
                    self.convert(v.into_inner(), offset),
                )
            })
            .collect()
    }

    fn convert(&self, value: DeValue<'_>, offset: usize) -> Node {
        let value = match value {
            DeValue::String(s) => Value::String {
                s: s.into_owned(),
                raw: false,
            },
            // The parser has validated the digits; out-of-range values (> i64::MAX) are the only
            // failure, and TOML itself forbids them.
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Value::Integer(n),
                Err(_) => Value::String {
                    s: i.to_string(),
                    raw: true,
                },
            },
            DeValue::Float(f) => match f.as_str().parse::<f64>() {
                Ok(x) => Value::Float(x),
                Err(_) => Value::String {
                    s: f.to_string(),
                    raw: true,
                },
            },
            DeValue::Boolean(b) => Value::Boolean(b),
            DeValue::Datetime(d) => Value::Datetime(d.to_string()),
            DeValue::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(|item| {
                        let at = item.span().start;
                        self.convert(item.into_inner(), at)
                    })
                    .collect(),
            ),
            DeValue::Table(t) => Value::Table(self.table(t)),
        };
        Node {
            value,
            origin: self.at(offset),
            loose_key: false,
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Node {
        let origin = Location::File {
            path: Arc::from(Path::new("t.toml")),
            line: 0,
            column: 0,
        };
        parse_document(text, origin).unwrap()
    }

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let n = file("a = 1\n[redis.main]\n  pool-size = 4\n");
        let leaf = n.lookup("redis.main.pool-size").unwrap();
        assert_eq!(leaf.origin.to_string(), "t.toml:3:3");
    }

    #[test]
    fn merge_replaces_scalars_and_merges_tables() {
        let mut base = file("[a]\nx = 1\ny = 2\n");
        let over = file("[a]\ny = 3\nz = 4\n");
        base.merge(over, &mut Vec::new()).unwrap();
        let a = base.lookup("a").unwrap().as_table().unwrap();
        assert_eq!(a.len(), 3);
        assert!(matches!(a["y"].value, Value::Integer(3)));
    }

    #[test]
    fn merge_refuses_table_to_scalar() {
        let mut base = file("[a]\nx = 1\n");
        let over = file("a = 5\n");
        let err = base.merge(over, &mut Vec::new()).unwrap_err();
        assert_eq!(err.key(), "a");
        assert!(err.to_string().contains("table"), "{err}");
    }

    #[test]
    fn loose_keys_match_existing_spellings() {
        let mut base = file("[redis.main]\npool-size = 1\n");
        let origin = Location::Env {
            var: Arc::from("X"),
        };
        let leaf = raw_value("9", &origin).unwrap();
        let over = nest(&["REDIS".into(), "MAIN".into(), "POOL_SIZE".into()], leaf);
        base.merge(over, &mut Vec::new()).unwrap();
        let t = base.lookup("redis.main").unwrap().as_table().unwrap();
        assert_eq!(t.len(), 1, "{t:?}");
        assert!(matches!(&t["pool-size"].value, Value::String { s, raw: true } if s == "9"));
    }

    #[test]
    fn raw_text_that_looks_like_toml_is_parsed() {
        let origin = Location::Env {
            var: Arc::from("X"),
        };
        let n = raw_value("[\"a\", \"b\"]", &origin).unwrap();
        assert!(matches!(n.value, Value::Array(ref v) if v.len() == 2));
        assert!(raw_value("[unclosed", &origin).is_err());
    }

    #[test]
    fn sameness_ignores_origins() {
        let a = file("x = 1\n");
        let b = file("\n\nx = 1\n");
        assert!(a.same(&b));
        assert!(!a.same(&file("x = 2\n")));
    }
}
