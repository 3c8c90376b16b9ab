//! YAML plumbing: the untyped [`Node`] tree, `${VAR}` substitution, and a serde deserializer
//! over `Node` that records every unknown key instead of stopping at the first.
//!
//! Parsing happens in two steps so that `config check` can list every problem at once:
//! serde-saphyr turns the text into a `Node` tree, then [`from_node`] feeds the tree to the
//! raw `#[serde(deny_unknown_fields)]` structs of each component. Unknown keys are reported
//! with their full path (and a near match, or a "not supported by mop yet" note for OBI keys
//! mop does not implement) and then skipped, so the rest of the file is still checked.

use std::{cell::RefCell, fmt};

use serde::{
    Deserialize, Deserializer, Serialize, Serializer,
    de::{self, IntoDeserializer as _, MapAccess, SeqAccess, Visitor},
    ser::{SerializeMap as _, SerializeSeq as _},
};

use super::{error::ConfigError, keys};

/// An untyped YAML value with mapping order preserved.
///
/// Raw component structs keep their leaves as `Node` so that one parser per setting can read
/// both the YAML value and the string of the environment variable that overrides it.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Node {
    /// `~`, `null` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer scalar.
    Int(i128),
    /// A floating point scalar.
    Float(f64),
    /// A string scalar (quoted, or plain and not a number/boolean/null).
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping; keys are scalars turned into strings.
    Map(Vec<(String, Node)>),
}

impl Node {
    /// The value as it would be written in a flow-style YAML, for error messages.
    pub(super) fn display(&self) -> String {
        let mut out = String::new();
        self.write_flow(&mut out);
        if out.len() > 120 {
            let mut cut = 117;
            while !out.is_char_boundary(cut) {
                cut -= 1;
            }
            out.truncate(cut);
            out.push_str("...");
        }
        out
    }

    /// What kind of value this is, for "expected X, found Y" messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a number",
            Self::Str(_) => "a string",
            Self::Seq(_) => "a list",
            Self::Map(_) => "a mapping",
        }
    }

    /// The text of a scalar, as a string (numbers and booleans are spelled out).
    pub(super) fn scalar_text(&self) -> Option<String> {
        match self {
            Self::Bool(b) => Some(b.to_string()),
            Self::Int(i) => Some(i.to_string()),
            Self::Float(x) => Some(x.to_string()),
            Self::Str(s) => Some(s.clone()),
            Self::Null | Self::Seq(_) | Self::Map(_) => None,
        }
    }

    fn write_flow(&self, out: &mut String) {
        match self {
            Self::Null => out.push_str("null"),
            Self::Seq(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_flow(out);
                }
                out.push(']');
            }
            Self::Map(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(k);
                    out.push_str(": ");
                    v.write_flow(out);
                }
                out.push('}');
            }
            scalar => out.push_str(&scalar.scalar_text().unwrap_or_default()),
        }
    }
}

/// Parses YAML text into a [`Node`]; an empty document is an empty mapping.
pub(super) fn parse(text: &str) -> Result<Node, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Node::Map(Vec::new()));
    }
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.with_snippet = false;
    let node: Node =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| ConfigError::Yaml {
            message: e.to_string().trim_end().to_owned(),
        })?;
    Ok(match node {
        Node::Null => Node::Map(Vec::new()),
        other => other,
    })
}

/// Replaces `${VAR}`, `${env:VAR}` and `${VAR:-default}` in the file text, as OBI does;
/// `$${VAR}` stays literally `${VAR}`.
pub(super) fn substitute_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("${") {
        let escaped = pos > 0 && rest.as_bytes()[pos - 1] == b'$';
        let Some(end) = rest[pos..].find('}').map(|e| pos + e) else {
            break;
        };
        let inner = &rest[pos + 2..end];
        let inner_body = inner.strip_prefix("env:").unwrap_or(inner);
        let (name, default) = match inner_body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (inner_body, None),
        };
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            out.push_str(&rest[..pos + 2]);
            rest = &rest[pos + 2..];
            continue;
        }
        if escaped {
            out.push_str(&rest[..pos - 1]);
            out.push_str(&rest[pos..=end]);
        } else {
            out.push_str(&rest[..pos]);
            let value = env(name).filter(|v| !v.is_empty());
            out.push_str(
                &value
                    .or_else(|| default.map(str::to_owned))
                    .unwrap_or_default(),
            );
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(Node::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Int(v.into()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        i128::try_from(v)
            .map(Node::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(Node::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Node>()? {
            let key = key
                .scalar_text()
                .ok_or_else(|| de::Error::custom("mapping keys must be scalars"))?;
            entries.push((key, map.next_value()?));
        }
        Ok(Node::Map(entries))
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::Int(i) => match i64::try_from(*i) {
                Ok(i) => s.serialize_i64(i),
                Err(_) => s.serialize_i128(*i),
            },
            Self::Float(x) => s.serialize_f64(*x),
            Self::Str(v) => s.serialize_str(v),
            Self::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// Deserializes a raw component struct from a node, recording problems in `errors` and
/// carrying on; returns `None` only when the tree is too malformed to walk at all.
pub(super) fn from_node<T: de::DeserializeOwned>(
    node: &Node,
    path: &str,
    errors: &RefCell<Vec<ConfigError>>,
) -> Option<T> {
    match T::deserialize(NodeDe {
        node,
        path: path.to_owned(),
        errors,
    }) {
        Ok(value) => Some(value),
        Err(e) => {
            errors.borrow_mut().push(ConfigError::Yaml { message: e.0 });
            None
        }
    }
}

/// The error type of [`NodeDe`]; only used for problems it cannot record and skip.
#[derive(Debug)]
pub(super) struct DeError(String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self(msg.to_string())
    }
}

/// A serde deserializer over a [`Node`] that tracks the key path and records errors.
struct NodeDe<'a> {
    node: &'a Node,
    path: String,
    errors: &'a RefCell<Vec<ConfigError>>,
}

impl<'a> NodeDe<'a> {
    fn child(&self, node: &'a Node, path: String) -> Self {
        Self {
            node,
            path,
            errors: self.errors,
        }
    }

    fn wrong_type(&self, expected: &str) {
        self.errors.borrow_mut().push(ConfigError::WrongType {
            origin: super::error::Origin::Key(self.path.clone()),
            expected: expected.to_owned(),
            found: format!("{} `{}`", self.node.kind(), self.node.display()),
        });
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

static EMPTY_ENTRIES: Vec<(String, Node)> = Vec::new();
static EMPTY_ITEMS: Vec<Node> = Vec::new();

impl<'de> Deserializer<'de> for NodeDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node {
            Node::Null => visitor.visit_unit(),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Int(i) => visitor.visit_i128(*i),
            Node::Float(x) => visitor.visit_f64(*x),
            Node::Str(s) => visitor.visit_str(s),
            Node::Seq(items) => visitor.visit_seq(Seq {
                items: items.iter(),
                index: 0,
                de: &self,
            }),
            Node::Map(entries) => visitor.visit_map(Map {
                entries: entries.iter(),
                value: None,
                de: &self,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node {
            Node::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let items = match self.node {
            Node::Seq(items) => items,
            Node::Null => &EMPTY_ITEMS,
            _ => {
                self.wrong_type("a list");
                &EMPTY_ITEMS
            }
        };
        visitor.visit_seq(Seq {
            items: items.iter(),
            index: 0,
            de: &self,
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let entries = match self.node {
            Node::Map(entries) => entries,
            Node::Null => &EMPTY_ENTRIES,
            _ => {
                self.wrong_type("a mapping");
                &EMPTY_ENTRIES
            }
        };
        visitor.visit_map(Map {
            entries: entries.iter(),
            value: None,
            de: &self,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let entries: &[(String, Node)] = match self.node {
            Node::Map(entries) => entries,
            Node::Null => &[],
            _ => {
                self.wrong_type("a mapping");
                &[]
            }
        };
        let mut known = Vec::with_capacity(entries.len());
        for entry in entries {
            if fields.contains(&entry.0.as_str()) {
                known.push(entry);
            } else {
                self.errors
                    .borrow_mut()
                    .push(keys::unknown_key(&join(&self.path, &entry.0), fields));
            }
        }
        visitor.visit_map(Map {
            entries: known.into_iter(),
            value: None,
            de: &self,
        })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct enum identifier ignored_any
    }
}

struct Seq<'a, 'b, I> {
    items: I,
    index: usize,
    de: &'b NodeDe<'a>,
}

impl<'de, 'a, I: Iterator<Item = &'a Node>> SeqAccess<'de> for Seq<'a, '_, I> {
    type Error = DeError;

    fn next_element_seed<T: de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{}]", self.de.path, self.index);
        self.index += 1;
        seed.deserialize(self.de.child(item, path)).map(Some)
    }
}

struct Map<'a, 'b, I> {
    entries: I,
    value: Option<(&'a Node, String)>,
    de: &'b NodeDe<'a>,
}

impl<'de, 'a, I: Iterator<Item = &'a (String, Node)>> MapAccess<'de> for Map<'a, '_, I> {
    type Error = DeError;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((value, join(&self.de.path, key)));
        seed.deserialize(key.as_str().into_deserializer()).map(Some)
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, DeError> {
        let (node, path) = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("value without key"))?;
        seed.deserialize(self.de.child(node, path))
    }
}

/// Builds a mapping node from `(key, value)` pairs, leaving out `None` values; used by the
/// printers of each component.
pub(super) fn map<'k>(entries: impl IntoIterator<Item = (&'k str, Option<Node>)>) -> Node {
    Node::Map(
        entries
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect(),
    )
}

/// A string node.
pub(super) fn text(value: impl Into<String>) -> Node {
    Node::Str(value.into())
}

/// For raw struct fields where an explicit `null` must differ from an absent key
/// (`default_exclude_instrument:` empties the list, leaving it out keeps the default).
pub(super) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d).map(|v| Some(v.unwrap_or_default()))
}
